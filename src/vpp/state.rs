//! kp's per-process state on the VPP side, in one place: the control
//! plane behind its lock, each thread's [`WorkerCell`], and the functions
//! that bring VPP in line with the control plane (FIB capture, counters,
//! pod routes, NodePort features). Below the node, API and CLI modules,
//! which all reach the state through here.

use super::barrier::BarrierHeld;
use super::counters::{POD_PACKETS, VIP_EXISTING, VIP_FIRST, VIP_NO_POD, VIP_UNTRACKED};
use super::feature::{set_icmp_out_feature, set_nodeport_feature};
use super::sys;
use crate::config::{ConfigError, FlowChange};
use crate::control::{Applied, Change, DataPathView, FlowTableStats, Kp, VipCounters};
use crate::dataplane::{DropReason, ReplyVerdict, Verdict, Worker, MAX_BATCH};
use core::cell::UnsafeCell;
use parking_lot::Mutex;
use std::sync::OnceLock;

/// State shared by the callbacks.
pub struct Global {
    pub kp: Mutex<Kp>,
    pub workers: Box<[WorkerCell]>,
}

/// A worker's state, and the per-frame arrays its nodes fill (kept here
/// so a frame starts without initialising or copying kilobytes). Its own
/// thread uses it inside its nodes; the main thread only while the
/// workers are parked ([`BarrierHeld`]).
pub struct WorkerCell {
    worker: UnsafeCell<Worker>,
    frame: UnsafeCell<Box<FrameScratch>>,
}
// SAFETY: see the type's comment: never accessed by two threads at once.
unsafe impl Sync for WorkerCell {}

impl WorkerCell {
    fn new(worker: Worker) -> WorkerCell {
        WorkerCell { worker: UnsafeCell::new(worker), frame: UnsafeCell::new(FrameScratch::new()) }
    }

    /// The worker, changed by the main thread while workers are parked
    /// (the `&mut` token keeps two such borrows apart).
    pub fn parked_mut<'b>(&'b self, _: &'b mut BarrierHeld) -> &'b mut Worker {
        // SAFETY: no worker runs while the token lives, and the token is
        // borrowed mutably for as long as the result: nothing else
        // touches this worker meanwhile.
        unsafe { &mut *self.worker.get() }
    }

    /// The worker, read by the main thread while workers are parked.
    pub fn parked<'b>(&'b self, _: &'b BarrierHeld) -> &'b Worker {
        // SAFETY: no worker runs while the token lives; main-thread
        // writers need the token mutably, which this borrow excludes.
        unsafe { &*self.worker.get() }
    }

    /// The worker and its frame arrays, for its own thread's node.
    ///
    /// # Safety
    /// The caller is the owning thread inside one of its kp nodes, and
    /// keeps the result no longer than the node call.
    #[allow(clippy::mut_from_ref)] // exclusivity is the caller's contract
    pub unsafe fn own_thread(&self) -> (&mut Worker, &mut FrameScratch) {
        // SAFETY: exclusive by the contract above; two distinct cells.
        unsafe { (&mut *self.worker.get(), &mut *self.frame.get()) }
    }
}

static GLOBAL: OnceLock<Global> = OnceLock::new();

pub fn global() -> Option<&'static Global> {
    GLOBAL.get()
}

/// Creates the state for `n_threads` threads (kp's init function).
pub fn init(n_threads: usize) -> Result<&'static Global, String> {
    // Workers must never stall on a table's first touches (see crate::mem).
    crate::mem::prefault_hot_tables(true);
    let mut kp = Kp::new(n_threads);
    // Counters live in VPP's fixed-size stats segment, which aborts VPP
    // when it runs out: changes that might not fit are refused instead.
    kp.controller.set_index_room(Box::new(super::counters::room_for));
    let workers = (0..n_threads)
        .map(|t| kp.controller.worker(t).map(WorkerCell::new))
        .collect::<Result<Box<[_]>, _>>()
        .map_err(|e| format!("cannot allocate flow tables ({} bytes per thread)", e.bytes))?;
    GLOBAL.set(Global { kp: Mutex::new(kp), workers }).map_err(|_| "kp initialised twice".to_string())?;
    Ok(GLOBAL.get().expect("just set"))
}

/// Resizes every worker's flow table to `flow` now.
pub fn adopt_flow(g: &Global, held: &mut BarrierHeld) -> Result<(), ConfigError> {
    // SAFETY: the main thread's vlib_main_t (the barrier is held).
    let now = unsafe { super::time::ticks(super::fns().vlib_get_main_not_inline()) };
    for cell in g.workers.iter() {
        cell.parked_mut(held)
            .adopt_flow_conf(now)
            .map_err(|e| ConfigError::OutOfMemory { bytes: e.bytes as u64 })?;
    }
    Ok(())
}

/// What a change needs before it is applied: an IPv6 VIP's flows need
/// the flow tables' IPv6 key arrays, allocated here on the main thread
/// (faulted in: a worker must not stall on first touches). On failure the
/// change is refused and nothing configured changes.
pub fn prepare_change(g: &Global, change: &Change, held: &mut BarrierHeld) -> Result<(), ConfigError> {
    let Change::AddVip(spec) = change else { return Ok(()) };
    if spec.key.prefix.family() != crate::packet::IpFamily::V6 {
        return Ok(());
    }
    for cell in g.workers.iter() {
        cell.parked_mut(held)
            .reserve_ipv6_keys()
            .map_err(|e| ConfigError::OutOfMemory { bytes: e.bytes as u64 })?;
    }
    Ok(())
}

/// Applies `kp conf` and sizes the flow tables; on failure nothing changes.
pub fn apply_conf(g: &Global, change: FlowChange, held: &mut BarrierHeld) -> Result<(), String> {
    g.kp.lock().apply_conf(change, |_| adopt_flow(g, held)).map_err(|e| e.to_string())
}

/// Per-thread arrays a kp node fills for each frame, kept between frames
/// (in a [`WorkerCell`]): filled for the frame's packets only,
/// never initialised or copied as a whole.
pub struct FrameScratch {
    pub bufs: [*mut sys::vlib_buffer_t; MAX_BATCH],
    pub verdicts: [Verdict; MAX_BATCH],
    pub replies: [ReplyVerdict; MAX_BATCH],
    /// Next node per packet; VPP's enqueue reads whole 64-entry blocks.
    pub nexts: [u16; MAX_BATCH],
    /// Held fragments a node sends on: buffer indices and next nodes.
    pub held_from: [u32; MAX_BATCH],
    pub held_nexts: [u16; MAX_BATCH],
}

// SAFETY: the buffer pointers are scratch, written and read by one thread
// inside one node call; nothing points into them between calls.
unsafe impl Send for FrameScratch {}

impl FrameScratch {
    pub fn new() -> Box<FrameScratch> {
        Box::new(FrameScratch {
            bufs: [core::ptr::null_mut(); MAX_BATCH],
            verdicts: [Verdict::Drop(DropReason::NoVip); MAX_BATCH],
            replies: [ReplyVerdict::NotKp; MAX_BATCH],
            nexts: [0; MAX_BATCH],
            held_from: [0; MAX_BATCH],
            held_nexts: [0; MAX_BATCH],
        })
    }
}

/// Brings VPP in line with a change: FIB capture entries for VIP prefixes
/// that appeared or went, and per-index counters sized, and zeroed for
/// indices that were freed (so a reused index starts from 0).
pub fn sync_vpp(kp: &mut Kp, applied: &Applied, held: &BarrierHeld) {
    use super::fib::Capture;
    for (prefix, capture) in &applied.prefixes_added {
        let kind = if kp.prefix_translates(prefix) { Capture::XlatVip } else { Capture::Vip };
        super::fib::add(prefix, kind, *capture, held);
    }
    for (prefix, _) in &applied.prefixes_removed {
        super::fib::remove(prefix, held);
    }
    let want = kp.wanted_xlat_captures();
    let have = core::mem::take(&mut kp.interfaces.xlat_captures);
    for gone in have.difference(&want) {
        super::fib::remove(gone, held);
    }
    for new in want.difference(&have) {
        super::fib::add(new, Capture::XlatReply, 0, held);
    }
    kp.interfaces.xlat_captures = want;
    let vips = [&VIP_EXISTING, &VIP_FIRST, &VIP_UNTRACKED, &VIP_NO_POD];
    let (freed_pods, freed_vips) = kp.controller.take_freed();
    let (n_vips, n_pods) = kp.controller.index_bounds();
    for c in vips {
        freed_vips.iter().for_each(|&v| c.zero(v, held));
        // (Index 0 at least: the nodes take each thread's row before they
        // know whether any packet will count on it, and a row exists only
        // once something was validated — a VIP that never had a pod
        // would otherwise meet a null row.)
        c.validate(n_vips.saturating_sub(1), held);
    }
    freed_pods.iter().for_each(|&p| POD_PACKETS.zero(p, held));
    POD_PACKETS.validate(n_pods.saturating_sub(1), held);
    super::route::sync(kp.controller.live_pods(), held);
    sync_interface_features(kp, held);
}

/// Per-interface features follow the configuration: NodePort capture
/// while any VIP has a NodePort, the output translation of VPP's own ICMP
/// errors while any nat44/nat66 VIP exists; on every interface then
/// (interfaces created since are picked up at the next change or
/// upkeep), off everywhere otherwise.
fn sync_interface_features(kp: &mut Kp, held: &BarrierHeld) {
    let existing = existing_interfaces();
    let want = kp.wants_nodeport();
    sync_feature(want, &existing, &mut kp.interfaces.nodeport, |sw, on| set_nodeport_feature(sw, on, held));
    let want = kp.wants_icmp_out();
    sync_feature(want, &existing, &mut kp.interfaces.icmp_out, |sw, on| set_icmp_out_feature(sw, on, held));
}

fn sync_feature(
    want: bool,
    existing: &[u32],
    enabled: &mut std::collections::BTreeSet<u32>,
    mut set: impl FnMut(u32, bool) -> Result<(), i32>,
) {
    if !want {
        for sw in core::mem::take(enabled) {
            let _ = set(sw, false);
        }
        return;
    }
    for &sw in existing {
        if !enabled.contains(&sw) && set(sw, true).is_ok() {
            enabled.insert(sw);
        }
    }
}

/// Whether a per-interface feature is wanted on an interface that lacks
/// it (one created since the last change). Main thread; needs no barrier.
pub fn features_missing(kp: &Kp) -> bool {
    let (nodeport, icmp) = (kp.wants_nodeport(), kp.wants_icmp_out());
    (nodeport || icmp)
        && existing_interfaces().iter().any(|sw| {
            (nodeport && !kp.interfaces.nodeport.contains(sw))
                || (icmp && !kp.interfaces.icmp_out.contains(sw))
        })
}

/// The interfaces that exist. Main thread.
fn existing_interfaces() -> Vec<u32> {
    // Interfaces are numbered densely from 0 (with holes for deleted
    // ones); stop after a long run of unknown indices.
    let (mut found, mut sw, mut misses) = (Vec::new(), 0u32, 0);
    while misses < 64 {
        if super::text::sw_if_index_name(sw).is_some() {
            misses = 0;
            found.push(sw);
        } else {
            misses += 1;
        }
        sw += 1;
    }
    found
}

/// `show` data from the workers, read while they are parked.
pub struct WorkersView<'a> {
    g: &'a Global,
    vm: *mut sys::vlib_main_t,
    held: &'a BarrierHeld<'a>,
}

impl<'a> WorkersView<'a> {
    pub fn new(g: &'a Global, held: &'a BarrierHeld<'a>) -> Self {
        // SAFETY: exported; the main thread's vlib_main_t (the token says
        // this is the main thread).
        WorkersView { g, vm: unsafe { super::fns().vlib_get_main_not_inline() }, held }
    }
}

impl DataPathView for WorkersView<'_> {
    fn flow_tables(&self) -> Vec<FlowTableStats> {
        self.g
            .workers
            .iter()
            .enumerate()
            .map(|(thread, cell)| {
                let w = cell.parked(self.held);
                // SAFETY: the main thread's vlib_main_t.
                let now = unsafe { crate::vpp::time::ticks(self.vm) };
                let t = w.flows();
                FlowTableStats {
                    thread,
                    buckets: t.n_buckets(),
                    capacity: t.capacity(),
                    live: t.live_entries(now),
                    ipv6_key_bytes: t.ipv6_key_bytes(),
                    old_table: w.flows_in_old_table(now),
                }
            })
            .collect()
    }

    fn vip_counters(&self, vip: u32) -> VipCounters {
        super::counters::vip_counters(vip)
    }

    fn pod_packets(&self, pod: u32) -> u64 {
        POD_PACKETS.sum(pod)
    }

    fn now(&self) -> u32 {
        // SAFETY: the main thread's own vlib_main_t.
        unsafe { crate::vpp::time::ticks(self.vm) }
    }
}
