//! The data-path nodes `kp4-nat4` and `kp6-nat6`: a thin shell around
//! [`crate::dataplane::Worker::process`]. Per frame: turn buffer indices
//! into packets, run the worker's batched pipeline, then set next nodes,
//! error codes, counters and traces, and hand the frame on with VPP's
//! vectorised enqueue. Nothing is allocated per packet.

use super::buffer::BufferRef;
use super::counters::{POD_PACKETS, VIP_EXISTING, VIP_FIRST, VIP_NO_POD, VIP_UNTRACKED};
use super::reg::Registration;
use super::route::NodeIndices;
use super::state::{global, FrameScratch};
use super::text::{format_append, va_arg_u64, VaList};
use super::{fns, sys};
use crate::dataplane::{
    Batch, Capture, DropReason, FlowOutcome, HoldTicket, Released, ReplyVerdict, Verdict, MAX_BATCH,
};
use crate::nat::{L4Checksum, NatError};
use crate::packet::{self, IpFamily};
use core::ffi::c_char;

/// Next nodes, in registration order (the same for every kp node).
const NEXT_DROP: u16 = 0;
const NEXT_IP4: u16 = 1;
const NEXT_IP6: u16 = 2;

/// The lookup node for packets of family `v6`.
#[inline(always)]
fn lookup(v6: bool) -> u16 {
    if v6 {
        NEXT_IP6
    } else {
        NEXT_IP4
    }
}

/// Node error counters; drops set `b->error` to one of these.
#[derive(Clone, Copy)]
#[repr(u16)]
enum Error {
    Translated,
    Untracked,
    Truncated,
    SplitHeaders,
    Malformed,
    Fragment,
    Protocol,
    ZeroUdpChecksum6,
    NoVip,
    NoPod,
    Rejected,
    NatUnsupported,
    NatFailed,
    PortsExhausted,
    ChecksumChain,
    HoldFull,
}

/// A node's error counters, as VPP takes them.
struct ErrorDescs<const N: usize>([sys::vlib_error_desc_t; N]);
// SAFETY: immutable records pointing at static strings.
unsafe impl<const N: usize> Sync for ErrorDescs<N> {}

const fn desc(
    name: &'static core::ffi::CStr,
    d: &'static core::ffi::CStr,
    severity: u32,
) -> sys::vlib_error_desc_t {
    sys::vlib_error_desc_t { name: name.as_ptr(), desc: d.as_ptr(), severity, stats_entry_index: 0 }
}
const INFO: u32 = 2;
const ERROR: u32 = 0;

static ERRORS: ErrorDescs<16> = ErrorDescs([
    desc(c"translated", c"packets translated to a pod", INFO),
    desc(c"untracked", c"forwarded without a flow entry (bucket full)", INFO),
    desc(c"truncated", c"truncated packet", ERROR),
    desc(c"split-headers", c"headers not in the first buffer", ERROR),
    desc(c"malformed", c"malformed IP or transport header", ERROR),
    desc(c"fragment", c"IP fragment whose first fragment did not come in time", ERROR),
    desc(c"protocol", c"not TCP or UDP", ERROR),
    desc(c"udp6-zero-checksum", c"IPv6 UDP with zero checksum", ERROR),
    desc(c"no-vip", c"no VIP for this protocol and port", ERROR),
    desc(c"no-pod", c"no pod takes new flows (dropped)", ERROR),
    desc(c"rejected", c"no pod: rejected (RST/ICMP sent)", INFO),
    desc(c"nat-unsupported", c"cannot cross families (ICMP type, headers inside a fragment)", ERROR),
    desc(c"nat-failed", c"translation failed", ERROR),
    desc(c"nat64-ports-exhausted", c"nat64: no source port free for a new flow", ERROR),
    desc(c"udp-no-checksum-chain", c"IPv4 UDP without checksum to IPv6, in a buffer chain", ERROR),
    desc(c"fragment-hold-full", c"IP fragment before its first one: no room to hold it", ERROR),
]);

fn error_of(reason: DropReason) -> Error {
    match reason {
        DropReason::Packet(packet::Error::Truncated) => Error::Truncated,
        DropReason::Packet(packet::Error::SplitHeaders) => Error::SplitHeaders,
        DropReason::Packet(packet::Error::Malformed) => Error::Malformed,
        DropReason::Packet(packet::Error::Fragment) => Error::Fragment,
        DropReason::Packet(packet::Error::UnsupportedProtocol) => Error::Protocol,
        DropReason::Packet(packet::Error::ZeroUdpChecksumV6) => Error::ZeroUdpChecksum6,
        DropReason::NoVip => Error::NoVip,
        DropReason::NoPod => Error::NoPod,
        DropReason::Nat(NatError::TranslationNotSupported) => Error::NatUnsupported,
        DropReason::Nat(NatError::PortsExhausted) => Error::PortsExhausted,
        DropReason::Nat(NatError::ChecksumNeedsWholeDatagram) => Error::ChecksumChain,
        DropReason::Nat(_) => Error::NatFailed,
        DropReason::HoldFull => Error::HoldFull,
    }
}

// ---------------------------------------------------------------- trace

/// What a trace records: copies, so it stays meaningful after the VIP or
/// pod is gone.
#[repr(C)]
#[derive(Clone, Copy)]
struct Trace {
    vip: u32,
    pod: u32,
    /// 0 hit, 1 new flow, 2 untracked, 3 dropped.
    outcome: u8,
    error: u8,
    family: u8,
    _pad: u8,
    pod_port: u16,
    orig_port: u16,
    pod_addr: [u8; 16],
    orig_addr: [u8; 16],
}

impl Trace {
    /// A record with no addresses yet (they are filled where known).
    fn new(vip: u32, pod: u32, outcome: u8, error: u8) -> Trace {
        Trace {
            vip,
            pod,
            outcome,
            error,
            family: 4,
            _pad: 0,
            pod_port: 0,
            orig_port: 0,
            pod_addr: [0; 16],
            orig_addr: [0; 16],
        }
    }
}

fn addr_text(family: u8, a: &[u8; 16]) -> String {
    if family == 4 {
        std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string()
    } else {
        std::net::Ipv6Addr::from(*a).to_string()
    }
}

unsafe extern "C" fn format_kp_trace(s: *mut u8, args: *mut sys::va_list) -> *mut u8 {
    // SAFETY: VPP calls format(s, "%U", fn, vm, node, trace_data).
    unsafe {
        let ap = args.cast::<VaList>();
        let _vm = va_arg_u64(ap);
        let _node = va_arg_u64(ap);
        let t = (va_arg_u64(ap) as *const Trace).read_unaligned();
        let dst = format!("{}:{}", addr_text(t.family, &t.orig_addr), t.orig_port);
        let text = if t.outcome == 8 {
            format!("kp: held fragment released: vip {} -> pod {}, translated", t.vip, t.pod)
        } else if t.outcome == 9 {
            "kp: held fragment given up (its first fragment did not come)".to_string()
        } else if t.outcome == 10 {
            "kp: fragment before its first one: held".to_string()
        } else if t.outcome == 11 {
            format!("kp: VPP's own ICMP error about a request of vip {}: translated for the client", t.vip)
        } else if t.outcome == 4 {
            format!("kp reply: translated back to vip {}", t.vip)
        } else if t.outcome == 5 {
            "kp reply: not a kp flow, passed on".to_string()
        } else if t.outcome == 7 {
            "kp reply: no live nat46/nat64 flow at this address, dropped".to_string()
        } else if t.outcome == 6 {
            format!(
                "kp: vip {} has no pod: rejected (a TCP reset or ICMP port unreachable to the sender)",
                t.vip
            )
        } else if t.outcome == 3 {
            let name = core::ffi::CStr::from_ptr(ERRORS.0[usize::from(t.error)].name).to_string_lossy();
            format!("kp: to {dst}: dropped ({name})")
        } else {
            let what = ["existing flow", "new flow", "new flow, untracked"][usize::from(t.outcome)];
            format!(
                "kp: vip {} {dst} -> pod {} {}:{} ({what}), translated",
                t.vip,
                t.pod,
                addr_text(t.family, &t.pod_addr),
                t.pod_port
            )
        };
        format_append(s, &text)
    }
}

// ---------------------------------------------------------------- node

/// A frame's buffers as the worker sees them, and their next nodes. The
/// node's kind is part of the type, so what depends on it is settled at
/// compile time: `NODEPORT` for packets to the node's own addresses (the
/// NodePort nodes) rather than captured by a VIP prefix's FIB entry; `V6`
/// for the node's family; `XLAT` for a VIP node of nat46/nat64 VIPs (the
/// two pick which of a pod's tracked next hops it uses).
struct FrameBatch<'a, const NODEPORT: bool, const V6: bool, const XLAT: bool> {
    vm: *mut sys::vlib_main_t,
    bufs: &'a [*mut sys::vlib_buffer_t],
    nexts: &'a mut [u16; MAX_BATCH],
    /// The frame's buffer indices.
    from: *mut u32,
    /// The pods' tracked next hops.
    hops: super::route::NextHops,
    n: usize,
    /// This node (the owner of the fragments it holds).
    node_index: u32,
    /// Each packet's next is its next feature (`feature_nexts`).
    on_arc: bool,
    /// The node traces (`node_traces`).
    tracing: bool,
}

impl<'a, const NODEPORT: bool, const V6: bool, const XLAT: bool> FrameBatch<'a, NODEPORT, V6, XLAT> {
    /// The buffers of a frame (their pointers written into `bufs`), and
    /// the frame's vector of buffer indices (which the enqueue takes back).
    ///
    /// # Safety
    /// `vm` and `frame` are the node function's own arguments.
    #[inline(always)]
    unsafe fn from_frame(
        vm: *mut sys::vlib_main_t,
        node: *mut sys::vlib_node_runtime_t,
        frame: *mut sys::vlib_frame_t,
        bufs: &'a mut [*mut sys::vlib_buffer_t; MAX_BATCH],
        nexts: &'a mut [u16; MAX_BATCH],
    ) -> (Self, *mut u32) {
        // SAFETY: VPP's frame layout: `n_vectors` u32 buffer indices at
        // `vector_offset`, each a buffer handed to this node.
        unsafe {
            let n = usize::from((*frame).n_vectors).min(MAX_BATCH);
            let from = frame.cast::<u8>().add(usize::from((*frame).vector_offset)).cast::<u32>();
            for (i, b) in bufs[..n].iter_mut().enumerate() {
                *b = BufferRef::pointer(vm, *from.add(i));
            }
            let hops = super::route::NextHops::get();
            let node_index = (*node).node_index;
            let tracing = node_traces(node);
            (
                FrameBatch { vm, bufs: &bufs[..n], nexts, from, hops, n, node_index, on_arc: false, tracing },
                from,
            )
        }
    }

    /// Packet `i`'s buffer.
    #[inline(always)]
    fn buffer(&self, i: usize) -> BufferRef<'_> {
        // SAFETY: every pointer in `bufs` is a buffer of this node call's
        // frame (`from_frame`), and a view is made of one at a time.
        unsafe { BufferRef::from_raw(self.bufs[i]) }
    }

    /// Each buffer's next feature on its arc (and the buffer moved on in
    /// it), for nodes that are features.
    ///
    /// # Safety
    /// The frame's buffers are on a feature arc; main or worker thread in
    /// a node function (the feature-config heap is re-read per frame: it
    /// can move under the barrier).
    #[inline(always)]
    unsafe fn feature_nexts(&mut self) {
        // SAFETY: per the contract.
        unsafe {
            let heap = (*fns().feature_main()).shared_feature_config_heap;
            for (next, &b) in self.nexts.iter_mut().zip(self.bufs) {
                *next = BufferRef::from_raw(b).take_feature_next(heap);
            }
        }
        self.on_arc = true;
    }

    /// Leaves held packets out of the frame's vectors (they are the
    /// worker's now): the number of packets left to enqueue.
    fn without_held(&mut self, held: impl Fn(usize) -> bool) -> usize {
        let mut kept = 0;
        for i in 0..self.n {
            if !held(i) {
                // SAFETY: `from` has `n` entries (`from_frame`); kept <= i.
                unsafe { *self.from.add(kept) = *self.from.add(i) };
                self.nexts[kept] = self.nexts[i];
                kept += 1;
            }
        }
        kept
    }

    /// Whether packet `i` is IPv6 (by its version nibble).
    fn packet_v6(&mut self, i: usize) -> bool {
        Batch::packet(self, i).first().is_some_and(|b| b >> 4 == 6)
    }

    /// Whether packet `i` is to be traced: only while the node traces
    /// (checked once per frame, in `tracing`) and the buffer says so.
    #[inline(always)]
    fn traced(&self, i: usize, tracing: bool) -> bool {
        tracing && self.buffer(i).is_traced()
    }
}

/// The calling thread's worker and frame arrays, for as long as the node
/// call borrows its `vm`. kp has them per thread once initialised; should
/// it not, callers pass the frame on (or drop it), never leak it.
///
/// # Safety
/// Called from a kp node function with its own `vm`.
#[inline(always)]
#[allow(clippy::mut_from_ref)] // `vm` bounds the lifetime; exclusivity is the contract's
unsafe fn this_thread(vm: &sys::vlib_main_t) -> Option<(&mut crate::dataplane::Worker, &mut FrameScratch)> {
    let thread = usize::from(vm.thread_index);
    // SAFETY: this thread's own worker, used only inside this node call
    // (the result lives no longer than the borrow of `vm`).
    global().and_then(|g| g.workers.get(thread)).map(|cell| unsafe { cell.own_thread() })
}

/// A frame that reached a kp node before kp had its per-thread state
/// (never, once initialised): feature nodes pass it on, others drop it.
///
/// # Safety
/// The node function's own arguments.
#[cold]
unsafe fn without_worker(
    vm: *mut sys::vlib_main_t,
    node: *mut sys::vlib_node_runtime_t,
    frame: *mut sys::vlib_frame_t,
    feature: bool,
) -> sys::uword {
    let mut bufs = [core::ptr::null_mut(); MAX_BATCH];
    let mut nexts = [NEXT_DROP; MAX_BATCH];
    // SAFETY: per the contract.
    unsafe {
        let (mut batch, from) =
            FrameBatch::<false, false, false>::from_frame(vm, node, frame, &mut bufs, &mut nexts);
        if feature {
            batch.feature_nexts();
        }
        let n = batch.n;
        enqueue(vm, node, from, &mut nexts, n);
        n as sys::uword
    }
}

/// A held buffer as a frame whose start a translation across families may
/// move (into its headroom, or on).
struct HeldFrame<'a>(BufferRef<'a>);

impl crate::xlat::Frame for HeldFrame<'_> {
    fn bytes(&mut self) -> &mut [u8] {
        self.0.data_mut()
    }

    fn move_start(&mut self, delta: isize) -> bool {
        self.0.move_start(delta)
    }

    fn family_changed(&mut self, to: IpFamily) {
        let v6 = to == IpFamily::V6;
        let l4 = if v6 { packet::ipv6::HEADER_LEN } else { packet::ipv4::MIN_HEADER_LEN };
        self.0.set_family(v6, l4 as i16);
    }
}

/// Hands on the fragments this node held that the worker has released
/// since (their first fragment came: `decide` translates them and gives
/// their next node) or given up (`decide` gives their next node too), in
/// a second enqueue. Each is traced if its buffer is.
///
/// # Safety
/// The node function's own arguments and this thread's worker; the
/// released handles are buffers this node held.
#[inline(always)]
unsafe fn send_released(
    vm: *mut sys::vlib_main_t,
    node: *mut sys::vlib_node_runtime_t,
    worker: &mut crate::dataplane::Worker,
    from: &mut [u32; MAX_BATCH],
    nexts: &mut [u16; MAX_BATCH],
    mut decide: impl FnMut(BufferRef<'_>, &Released) -> u16,
) {
    const { assert!(crate::fragment::HOLD_CAPACITY <= MAX_BATCH) };
    let mut k = 0;
    // SAFETY: per the contract: every handle is a buffer this thread holds.
    unsafe {
        let owner = (*node).node_index;
        let tracing = node_traces(node);
        worker.take_released(owner, |r| {
            let b = BufferRef::pointer(vm, r.ticket.handle);
            nexts[k] = decide(BufferRef::from_raw(b), &r);
            from[k] = r.ticket.handle;
            k += 1;
            if tracing && BufferRef::from_raw(b).is_traced() {
                let (vip, pod, outcome) = match r.to {
                    Some(t) => (t.vip, t.pod, 8),
                    None => (u32::MAX, u32::MAX, 9),
                };
                add_trace(vm, node, b, Trace::new(vip, pod, outcome, 0));
            }
        });
        if k > 0 {
            enqueue(vm, node, from.as_mut_ptr(), nexts, k);
        }
    }
}

/// Hands the frame's buffers on to their next nodes (VPP's vectorised
/// `vlib_buffer_enqueue_to_next`).
///
/// # Safety
/// The node function's own arguments; `nexts` has an entry per buffer.
#[inline(always)]
unsafe fn enqueue(
    vm: *mut sys::vlib_main_t,
    node: *mut sys::vlib_node_runtime_t,
    from: *mut u32,
    nexts: &mut [u16; MAX_BATCH],
    n: usize,
) {
    // SAFETY: the exported function table, filled at VPP init; both arrays
    // hold at least `n` rounded up to 64 entries (frame vectors and
    // MAX_BATCH-sized next arrays).
    unsafe {
        let f = (*fns().vlib_buffer_func_main()).buffer_enqueue_to_next_fn.expect("VPP sets it at init");
        f(vm, node, from, nexts.as_mut_ptr(), n as sys::uword);
    }
}

/// The next node of a packet translated to `pod` (IPv6 if `out_v6`):
/// straight to the pod's tracked forwarding where there is one (its
/// adjacency set in the buffer), else a fresh lookup.
#[inline(always)]
fn to_pod<const NODEPORT: bool, const V6: bool, const XLAT: bool>(
    hops: &super::route::NextHops,
    mut b: BufferRef<'_>,
    pod: u32,
    out_v6: bool,
) -> u16 {
    // A VIP node's stacked hops are for its own NAT type's pods (a packet
    // of another type can only be one left over from before a change: it
    // takes the lookup).
    let stacked_here = NODEPORT || out_v6 == (V6 ^ XLAT);
    match hops.of(pod, NODEPORT, V6, out_v6).filter(|_| stacked_here) {
        Some((to, adj)) => {
            b.set_adj_index_tx(adj);
            to
        }
        None => lookup(out_v6),
    }
}

impl<const NODEPORT: bool, const V6: bool, const XLAT: bool> Batch for FrameBatch<'_, NODEPORT, V6, XLAT> {
    /// Straight to the pod's tracked forwarding where there is one (its
    /// adjacency in the buffer, the stacked next node); else a fresh
    /// lookup. Done here, while the buffer's metadata is in cache.
    #[inline(always)]
    fn translated(&mut self, i: usize, pod: u32, out: IpFamily) {
        if i >= self.n {
            return;
        }
        self.nexts[i] = to_pod::<NODEPORT, V6, XLAT>(&self.hops, self.buffer(i), pod, out == IpFamily::V6);
    }

    fn hold(&mut self, i: usize) -> Option<HoldTicket> {
        // Off an arc a packet given up is dropped; on one it goes on to
        // its next feature untouched (it may not be kp's).
        if i >= self.n {
            return None;
        }
        let tag = if self.on_arc { self.nexts[i] } else { NEXT_DROP };
        // SAFETY: `from` has `n` entries.
        let handle = unsafe { *self.from.add(i) };
        Some(HoldTicket { handle, owner: self.node_index, tag })
    }

    fn owner(&self) -> u32 {
        self.node_index
    }

    fn move_start(&mut self, i: usize, delta: isize) -> bool {
        i < self.n && self.buffer(i).move_start(delta)
    }

    #[inline(always)]
    fn advance(&mut self, i: usize, by: usize) -> Option<&mut [u8]> {
        if i >= self.n {
            return None;
        }
        // SAFETY: a buffer of this frame (`from_frame`); the slice borrows
        // the batch mutably, as in `packet`.
        unsafe { BufferRef::from_raw(self.bufs[i]) }.advance(by)
    }

    fn family_changed(&mut self, i: usize, to: IpFamily) {
        if i < self.n {
            let v6 = to == IpFamily::V6;
            let l4 = if v6 { packet::ipv6::HEADER_LEN } else { packet::ipv4::MIN_HEADER_LEN };
            self.buffer(i).set_family(v6, l4 as i16);
        }
    }

    fn len(&self) -> usize {
        self.n
    }

    fn tracing(&self) -> bool {
        self.tracing
    }

    #[inline(always)]
    fn packet(&mut self, i: usize) -> &mut [u8] {
        // SAFETY: a buffer of this frame (`from_frame`); the slice borrows
        // the batch mutably, so no other view of the buffer exists while
        // it lives.
        unsafe { BufferRef::from_raw(self.bufs[i]) }.into_data()
    }

    fn reframe(&mut self, i: usize, grow: usize, len: usize) -> bool {
        i < self.n && self.buffer(i).reframe(grow, len)
    }

    #[inline(always)]
    fn chain_len(&self, i: usize) -> Option<usize> {
        let b = self.buffer(i);
        b.next_buffer()?;
        // SAFETY: this node call's own `vm` (`from_frame`). A chain that
        // will not add up is given its first buffer's length: its headers
        // then look truncated, and it is dropped as such.
        unsafe { b.chain_length_in(self.vm) }
    }

    #[inline(always)]
    fn capture(&self, i: usize) -> Capture {
        if NODEPORT {
            return Capture::NodePort;
        }
        // ip4/6-lookup set the TX adjacency to our DPO's index.
        Capture::Prefix(self.buffer(i).adj_index_tx())
    }

    /// A VIP or NodePort node of one family is fed by that family's
    /// lookup or local arc alone.
    #[inline(always)]
    fn family(&self) -> Option<IpFamily> {
        Some(if V6 { IpFamily::V6 } else { IpFamily::V4 })
    }

    #[inline(always)]
    fn prefetch_meta(&self, i: usize) {
        if let Some(&b) = self.bufs.get(i) {
            crate::mem::prefetch_ptr(b);
        }
    }

    #[inline(always)]
    fn prefetch_data(&self, i: usize) {
        if i < self.n {
            crate::mem::prefetch_ptr(self.buffer(i).data_start());
        }
    }

    #[inline(always)]
    fn l4_checksum(&self, i: usize) -> L4Checksum {
        if self.buffer(i).l4_checksum_offloaded() {
            L4Checksum::Partial
        } else {
            L4Checksum::Full
        }
    }
}

/// The VIP and NodePort nodes: the frame through the worker's pipeline,
/// then next nodes, drop reasons, counters and traces, and one enqueue.
///
/// # Safety
/// VPP's node-function contract: `vm`, `node` and `frame` are the calling
/// thread's, as VPP passes them to a node function.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // parallel per-packet arrays
unsafe fn node_fn<const NODEPORT: bool, const V6: bool, const XLAT: bool>(
    vm: *mut sys::vlib_main_t,
    node: *mut sys::vlib_node_runtime_t,
    frame: *mut sys::vlib_frame_t,
) -> sys::uword {
    // SAFETY: the node function's own arguments, VPP's buffers and this
    // thread's worker (see the helpers' contracts).
    unsafe {
        let thread = usize::from((*vm).thread_index);
        let Some((worker, scratch)) = this_thread(&*vm) else {
            return without_worker(vm, node, frame, NODEPORT);
        };
        let FrameScratch { bufs, verdicts, nexts, held_from, held_nexts, .. } = scratch;
        let (mut batch, from) = FrameBatch::<NODEPORT, V6, XLAT>::from_frame(vm, node, frame, bufs, nexts);
        let n = batch.n;
        // On the ip4/6-local arc, what is not NodePort traffic goes on to
        // the next feature: each packet's next starts as its next feature.
        if NODEPORT {
            batch.feature_nexts();
        }
        let now = super::time::ticks(vm);
        worker.process(&mut batch, now, verdicts);

        let errors = (*node).errors;
        let (mut not_translated, mut untracked, mut rejected, mut held) = (0u64, 0u64, 0u64, 0u64);
        let existing = VIP_EXISTING.row(thread);
        let (mut run_vip, mut run_len) = (u32::MAX, 0u64);
        let pod_packets = POD_PACKETS.row(thread);
        for i in 0..n {
            match verdicts[i] {
                Verdict::Forward { vip, pod, outcome } => {
                    // (Its next node was set as it was translated.)
                    match outcome {
                        // Runs of one VIP add up in a register: no chain of
                        // read-modify-writes on one counter per packet.
                        FlowOutcome::Hit if vip == run_vip => run_len += 1,
                        FlowOutcome::Hit => {
                            if run_len > 0 {
                                *existing.add(run_vip as usize) += run_len;
                            }
                            (run_vip, run_len) = (vip, 1);
                        }
                        FlowOutcome::New => VIP_FIRST.add(thread, vip, 1),
                        FlowOutcome::Untracked => {
                            untracked += 1;
                            VIP_UNTRACKED.add(thread, vip, 1);
                        }
                    }
                    *pod_packets.add(pod as usize) += 1;
                }
                Verdict::Reject { vip } => {
                    // The packet is now the answer to its sender.
                    rejected += 1;
                    batch.nexts[i] = lookup(V6);
                    VIP_NO_POD.add(thread, vip, 1);
                }
                Verdict::Drop(DropReason::NoVip | DropReason::Packet(_)) if NODEPORT => {
                    // Not NodePort traffic: ping, other ports, control
                    // protocols carry on untouched (to the next feature,
                    // already in `nexts`).
                    not_translated += 1;
                }
                Verdict::Held => held += 1,
                Verdict::Drop(reason) => {
                    not_translated += 1;
                    batch.nexts[i] = NEXT_DROP;
                    batch.buffer(i).set_error(*errors.add(error_of(reason) as usize));
                    if reason == DropReason::NoPod {
                        if let Some(v) = worker.batch_vip(i) {
                            VIP_NO_POD.add(thread, v, 1);
                        }
                    }
                }
            }
        }
        if run_len > 0 {
            *existing.add(run_vip as usize) += run_len;
        }
        if batch.tracing {
            trace_frame(vm, node, &batch, worker, verdicts);
        }
        // Non-drop outcomes are counted here; drops by the drop node.
        let counters = (*vm).error_counters;
        *counters.add(usize::from(*errors.add(Error::Translated as usize))) +=
            n as u64 - not_translated - rejected - held;
        *counters.add(usize::from(*errors.add(Error::Rejected as usize))) += rejected;
        *counters.add(usize::from(*errors.add(Error::Untracked as usize))) += untracked;
        let out = if held == 0 { n } else { batch.without_held(|i| verdicts[i] == Verdict::Held) };
        enqueue(vm, node, from, batch.nexts, out);
        let hops = batch.hops;
        send_released(vm, node, worker, held_from, held_nexts, |b, r| {
            let mut held = HeldFrame(b);
            match r.to {
                Some(t) if r.apply(&mut held) => {
                    *counters.add(usize::from(*errors.add(Error::Translated as usize))) += 1;
                    *existing.add(t.vip as usize) += 1;
                    *pod_packets.add(t.pod as usize) += 1;
                    to_pod::<NODEPORT, V6, XLAT>(&hops, held.0, t.pod, r.out_family() == IpFamily::V6)
                }
                _ => {
                    if r.ticket.tag == NEXT_DROP {
                        held.0.set_error(*errors.add(Error::Fragment as usize));
                    }
                    r.ticket.tag
                }
            }
        });
        n as sys::uword
    }
}

/// Adds a kp record to each traced packet of the frame: VIP, pod and
/// outcome, or the drop reason. (Packets the NodePort node passes on are
/// not kp's and get none.)
///
/// # Safety
/// The node function's own `vm`, `node` and batch.
#[cold]
unsafe fn trace_frame<const NODEPORT: bool, const V6: bool, const XLAT: bool>(
    vm: *mut sys::vlib_main_t,
    node: *mut sys::vlib_node_runtime_t,
    batch: &FrameBatch<'_, NODEPORT, V6, XLAT>,
    worker: &crate::dataplane::Worker,
    verdicts: &[Verdict],
) {
    for (i, v) in verdicts.iter().enumerate().take(batch.n) {
        // SAFETY: packets of this frame; the node's own arguments.
        unsafe {
            if !batch.traced(i, true) {
                continue;
            }
            let b = batch.bufs[i];
            match *v {
                Verdict::Forward { vip, pod, outcome } => {
                    trace(vm, node, b, worker, i, vip, pod, outcome as u8, 0)
                }
                Verdict::Reject { vip } => trace(vm, node, b, worker, i, vip, u32::MAX, 6, 0),
                Verdict::Drop(DropReason::NoVip | DropReason::Packet(_)) if NODEPORT => {}
                Verdict::Drop(reason) => {
                    trace(vm, node, b, worker, i, u32::MAX, u32::MAX, 3, error_of(reason) as u8)
                }
                Verdict::Held => add_trace(vm, node, b, Trace::new(u32::MAX, u32::MAX, 10, 0)),
            }
        }
    }
}

/// Records packet `i`'s trace: VIP, pod (address and port, copied so the
/// trace outlives them), outcome or drop reason, original destination.
///
/// # Safety
/// The node function's own `vm` and `node`, and `b` one of its buffers,
/// packet `i` of the batch `worker` just processed.
#[allow(clippy::too_many_arguments)]
#[cold]
unsafe fn trace(
    vm: *mut sys::vlib_main_t,
    node: *mut sys::vlib_node_runtime_t,
    b: *mut sys::vlib_buffer_t,
    worker: &crate::dataplane::Worker,
    i: usize,
    vip: u32,
    pod: u32,
    outcome: u8,
    error: u8,
) {
    let dp = worker.snapshot();
    let mut t = Trace::new(vip, pod, outcome, error);
    if let Some(p) = dp.pods.get(pod as usize) {
        t.pod_addr = p.endpoint.addr;
        t.pod_port = p.endpoint.port;
    }
    if let Some((family, dst, port)) = worker.batch_original_dst(i) {
        t.family = family;
        t.orig_addr = dst;
        t.orig_port = port;
    }
    // SAFETY: the node function's own arguments and buffer.
    unsafe { add_trace(vm, node, b, t) }
}

/// Records `t` as buffer `b`'s trace at this node.
///
/// # Safety
/// The node function's own `vm`, `node` and one of its buffers.
unsafe fn add_trace(
    vm: *mut sys::vlib_main_t,
    node: *mut sys::vlib_node_runtime_t,
    b: *mut sys::vlib_buffer_t,
    t: Trace,
) {
    // SAFETY: exported; returns room for the record in the trace buffer.
    unsafe {
        let p = fns().vlib_add_trace(vm, node, b, core::mem::size_of::<Trace>() as u32);
        p.cast::<Trace>().write_unaligned(t);
    }
}

/// Whether the node traces this frame: per-buffer trace flags matter only
/// then.
///
/// # Safety
/// The node function's own `node`.
#[inline(always)]
unsafe fn node_traces(node: *mut sys::vlib_node_runtime_t) -> bool {
    // SAFETY: per the contract.
    unsafe { (*node).flags & sys::KP_VLIB_NODE_FLAG_TRACE as u16 != 0 }
}

type NodeFn = unsafe extern "C" fn(
    *mut sys::vlib_main_t,
    *mut sys::vlib_node_runtime_t,
    *mut sys::vlib_frame_t,
) -> sys::uword;

/// A node function for VPP around a (monomorphised) node body. The VIP
/// nodes share one body for IPv4 and IPv6 (the family is in the packet;
/// the node's own family picks the pod next hops stacked on it); NodePort
/// nodes differ only in how packets are captured.
macro_rules! extern_node {
    ($name:ident => $body:expr) => {
        unsafe extern "C" fn $name(
            vm: *mut sys::vlib_main_t,
            node: *mut sys::vlib_node_runtime_t,
            frame: *mut sys::vlib_frame_t,
        ) -> sys::uword {
            // SAFETY: VPP's node-function contract.
            unsafe { $body(vm, node, frame) }
        }
    };
}
extern_node!(kp4_vip_node => node_fn::<false, false, false>);
extern_node!(kp6_vip_node => node_fn::<false, true, false>);
extern_node!(kp4_xlat_node => node_fn::<false, false, true>);
extern_node!(kp6_xlat_node => node_fn::<false, true, true>);
extern_node!(kp4_nodeport_node => node_fn::<true, false, false>);
extern_node!(kp6_nodeport_node => node_fn::<true, true, false>);

const KP4_NAT4_FN: NodeFn = kp4_vip_node;
const KP6_NAT6_FN: NodeFn = kp6_vip_node;

/// The reply nodes, one body for both kinds:
/// - `FEATURE` (`kp-nat4-in2out`, `kp-nat6-in2out`): an interface feature
///   on ip4-unicast / ip6-unicast. Replies of kp flows get their source
///   translated back; every other packet continues to the next feature
///   (VPP's `vnet_feature_next`, inline in VPP, done here).
/// - not `FEATURE` (`kp4-nat64-reply`, `kp6-nat46-reply`): what reaches
///   kp's nat64 source addresses and nat46 prefix (captured in the FIB,
///   from any interface). Anything that is not a live flow's reply is
///   dropped (nothing else owns these addresses).
///
/// A reply now of the other family (nat46/nat64) goes to that family's
/// lookup.
///
/// # Safety
/// VPP's node-function contract, as for `node_fn`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // parallel per-packet arrays
unsafe fn reply_node<const FEATURE: bool>(
    vm: *mut sys::vlib_main_t,
    node: *mut sys::vlib_node_runtime_t,
    frame: *mut sys::vlib_frame_t,
) -> sys::uword {
    // SAFETY: as in `node_fn`.
    unsafe {
        let Some((worker, scratch)) = this_thread(&*vm) else {
            return without_worker(vm, node, frame, FEATURE);
        };
        let FrameScratch { bufs, replies: verdicts, nexts, held_from, held_nexts, .. } = scratch;
        let (mut batch, from) = FrameBatch::<false, false, false>::from_frame(vm, node, frame, bufs, nexts);
        let n = batch.n;
        if FEATURE {
            batch.feature_nexts();
        }
        worker.process_replies(&mut batch, super::time::ticks(vm), verdicts);
        let errors = (*node).errors;
        let (mut translated, mut held) = (0u64, 0u64);
        let tracing = node_traces(node);
        for i in 0..n {
            let vip = match verdicts[i] {
                ReplyVerdict::Translated { vip } => {
                    // (Off the arc, a same-family reply takes its lookup;
                    // for these addresses it cannot happen.)
                    if !FEATURE {
                        batch.nexts[i] = lookup(batch.packet_v6(i));
                    }
                    vip
                }
                ReplyVerdict::TranslatedTo { vip, v6 } => {
                    batch.nexts[i] = lookup(v6);
                    vip
                }
                ReplyVerdict::NotKp => {
                    if !FEATURE {
                        batch.nexts[i] = NEXT_DROP;
                        batch.buffer(i).set_error(*errors.add(REPLY_NO_FLOW));
                    }
                    u32::MAX
                }
                ReplyVerdict::Held => {
                    held += 1;
                    if batch.traced(i, tracing) {
                        add_trace(vm, node, batch.bufs[i], Trace::new(u32::MAX, u32::MAX, 10, 0));
                    }
                    continue;
                }
            };
            translated += u64::from(vip != u32::MAX);
            if batch.traced(i, tracing) {
                let outcome = match (vip == u32::MAX, FEATURE) {
                    (false, _) => 4,
                    (true, true) => 5,
                    (true, false) => 7,
                };
                add_trace(vm, node, batch.bufs[i], Trace::new(vip, u32::MAX, outcome, 0));
            }
        }
        let counters = (*vm).error_counters;
        *counters.add(usize::from(*errors.add(REPLY_TRANSLATED))) += translated;
        if FEATURE {
            *counters.add(usize::from(*errors.add(REPLY_OTHER))) += n as u64 - translated - held;
        }
        let out = if held == 0 { n } else { batch.without_held(|i| verdicts[i] == ReplyVerdict::Held) };
        enqueue(vm, node, from, batch.nexts, out);
        // Released: a translated reply goes on as one (its next feature,
        // or off the arc its lookup); given up: untouched to its next
        // feature, or off the arc dropped.
        // A reply now of the other family takes that family's lookup.
        send_released(vm, node, worker, held_from, held_nexts, |b, r| {
            let mut held = HeldFrame(b);
            if r.apply(&mut held) {
                *counters.add(usize::from(*errors.add(REPLY_TRANSLATED))) += 1;
                let out = r.out_family();
                return if FEATURE && out == r.family { r.ticket.tag } else { lookup(out == IpFamily::V6) };
            }
            if FEATURE {
                *counters.add(usize::from(*errors.add(REPLY_OTHER))) += 1;
            } else {
                held.0.set_error(*errors.add(REPLY_NO_FLOW));
            }
            r.ticket.tag
        });
        n as sys::uword
    }
}

extern_node!(kp_in2out_node => reply_node::<true>);

extern_node!(kp_xlat_reply_node => reply_node::<false>);

/// VPP's own ICMP errors on an output arc (from `ip4/6-icmp-error`, as
/// `ip4/6-rewrite` sends them when a packet is too big for its egress
/// link or its TTL runs out), as a batch for the reply path: each starts
/// after its L2 header.
struct LocalErrors<'a> {
    bufs: &'a [*mut sys::vlib_buffer_t],
    picked: &'a [u16],
}

impl Batch for LocalErrors<'_> {
    fn len(&self) -> usize {
        self.picked.len()
    }

    fn packet(&mut self, i: usize) -> &mut [u8] {
        // SAFETY: a buffer of this node call's frame; one view at a time.
        let b = unsafe { BufferRef::from_raw(self.bufs[usize::from(self.picked[i])]) };
        let rewrite = b.rewrite_length();
        let data = b.into_data();
        let at = rewrite.min(data.len());
        &mut data[at..]
    }

    fn capture(&self, _i: usize) -> Capture {
        Capture::Prefix(0)
    }
}

/// `kp4-icmp-out`/`kp6-icmp-out`, on the ip4-output/ip6-output arcs of
/// every interface while nat44/nat66 VIPs exist: when VPP itself refuses
/// a request kp translated (too big for the pod's link, TTL expired), its
/// ICMP error goes to the client quoting what kp made of the request (to
/// the pod); the client's stack would match it to no socket, and Path MTU
/// Discovery through a Service would fail. Such errors are translated as
/// the pods' own are: the quote becomes what the client sent (to the VIP
/// or NodePort), every checksum follows. Only packets VPP made itself are
/// looked at: for the rest this node costs a flag test.
///
/// # Safety
/// VPP's node-function contract, as for `node_fn`.
#[allow(clippy::needless_range_loop)] // parallel per-packet arrays
unsafe fn icmp_out_node<const V6: bool>(
    vm: *mut sys::vlib_main_t,
    node: *mut sys::vlib_node_runtime_t,
    frame: *mut sys::vlib_frame_t,
) -> sys::uword {
    // SAFETY: as in `node_fn`.
    unsafe {
        let Some((worker, scratch)) = this_thread(&*vm) else {
            return without_worker(vm, node, frame, true);
        };
        let FrameScratch { bufs, replies: verdicts, nexts, held_nexts: picked, .. } = scratch;
        let (mut batch, from) = FrameBatch::<false, false, false>::from_frame(vm, node, frame, bufs, nexts);
        let n = batch.n;
        batch.feature_nexts();
        let mut k = 0;
        for i in 0..n {
            let b = batch.buffer(i);
            if b.locally_originated() {
                let rewrite = b.rewrite_length();
                let ip = b.into_data().get(rewrite..).unwrap_or(&[]);
                let icmp = if V6 {
                    ip.len() > 40 && ip[0] >> 4 == 6 && ip[6] == packet::proto::ICMPV6
                } else {
                    ip.len() > 20 && ip[0] >> 4 == 4 && ip[9] == packet::proto::ICMP
                };
                if icmp {
                    picked[k] = i as u16;
                    k += 1;
                }
            }
        }
        if k > 0 {
            let mut errors_batch = LocalErrors { bufs: batch.bufs, picked: &picked[..k] };
            worker.process_replies(&mut errors_batch, super::time::ticks(vm), verdicts);
            let errors = (*node).errors;
            let tracing = node_traces(node);
            let mut translated = 0u64;
            for j in 0..k {
                let i = usize::from(picked[j]);
                let vip = match verdicts[j] {
                    ReplyVerdict::Translated { vip } => vip,
                    // (Only the nat46/nat64 capture nodes see errors
                    // that change family; one here is not passed on.)
                    ReplyVerdict::TranslatedTo { .. } => {
                        batch.nexts[i] = NEXT_DROP;
                        batch.buffer(i).set_error(*errors.add(ICMP_OUT_CROSS_FAMILY));
                        continue;
                    }
                    ReplyVerdict::NotKp | ReplyVerdict::Held => continue,
                };
                translated += 1;
                if batch.traced(i, tracing) {
                    add_trace(vm, node, batch.bufs[i], Trace::new(vip, u32::MAX, 11, 0));
                }
            }
            let counters = (*vm).error_counters;
            *counters.add(usize::from(*errors.add(ICMP_OUT_TRANSLATED))) += translated;
        }
        enqueue(vm, node, from, batch.nexts, n);
        n as sys::uword
    }
}

extern_node!(kp4_icmp_out_node => icmp_out_node::<false>);

extern_node!(kp6_icmp_out_node => icmp_out_node::<true>);

const ICMP_OUT_TRANSLATED: usize = 0;
const ICMP_OUT_CROSS_FAMILY: usize = 1;
static ICMP_OUT_ERRORS: ErrorDescs<2> = ErrorDescs([
    desc(c"icmp-translated", c"VPP's own ICMP errors about kp flows, translated for the client", INFO),
    desc(
        c"icmp-cross-family",
        c"VPP's own ICMP error of a nat46/nat64 flow on an output arc (dropped)",
        ERROR,
    ),
]);

const REPLY_TRANSLATED: usize = 0;
const REPLY_OTHER: usize = 1;
const REPLY_NO_FLOW: usize = 2;
/// The reply features count the first two; the nat46/nat64 reply nodes
/// all three.
static REPLY_ERRORS: ErrorDescs<3> = ErrorDescs([
    desc(c"reply-translated", c"replies translated back to the Service", INFO),
    desc(c"not-kp", c"packets that are not kp replies (passed on)", INFO),
    desc(c"no-flow", c"to a nat46/nat64 address of no live flow", ERROR),
]);

/// A node registration followed by its next-node names.
#[repr(C)]
pub struct NodeReg<const N: usize> {
    reg: sys::vlib_node_registration_t,
    next: [*const c_char; N],
}

const fn node_reg(
    name: &'static core::ffi::CStr,
    f: unsafe extern "C" fn(
        *mut sys::vlib_main_t,
        *mut sys::vlib_node_runtime_t,
        *mut sys::vlib_frame_t,
    ) -> sys::uword,
) -> NodeReg<3> {
    NodeReg {
        reg: sys::vlib_node_registration_t {
            function: Some(f),
            node_fn_registrations: core::ptr::null_mut(),
            name: name.as_ptr(),
            sibling_of: core::ptr::null(),
            index: 0,
            type_: sys::KP_VLIB_NODE_TYPE_INTERNAL,
            error_strings: core::ptr::null(),
            error_counters: ERRORS.0.as_ptr(),
            format_buffer: core::ptr::null_mut(),
            unformat_buffer: core::ptr::null_mut(),
            format_trace: Some(format_kp_trace),
            unformat_trace: core::ptr::null_mut(),
            validate_frame: core::ptr::null_mut(),
            runtime_data: core::ptr::null_mut(),
            process_log2_n_stack_bytes: 0,
            runtime_data_bytes: 0,
            state: 0,
            flags: sys::KP_VLIB_NODE_FLAG_TRACE_SUPPORTED as u16,
            protocol_hint: 0,
            vector_size: 4,
            aux_size: 0,
            scalar_size: 0,
            n_errors: ERRORS.0.len() as u16,
            n_next_nodes: 3,
            next_registration: core::ptr::null_mut(),
        },
        // NEXT_DROP, NEXT_IP4, NEXT_IP6.
        next: [c"error-drop".as_ptr(), c"ip4-lookup".as_ptr(), c"ip6-lookup".as_ptr()],
    }
}

pub static KP4_NAT4: Registration<NodeReg<3>> = Registration::new(node_reg(c"kp4-nat4", KP4_NAT4_FN));
pub static KP6_NAT6: Registration<NodeReg<3>> = Registration::new(node_reg(c"kp6-nat6", KP6_NAT6_FN));
pub static KP4_NAT6: Registration<NodeReg<3>> = Registration::new(node_reg(c"kp4-nat6", kp4_xlat_node));
pub static KP6_NAT4: Registration<NodeReg<3>> = Registration::new(node_reg(c"kp6-nat4", kp6_xlat_node));

/// A node with its own error counters: the first `n_errors` of `errors`.
const fn reg_with_errors<const N: usize>(
    name: &'static core::ffi::CStr,
    f: unsafe extern "C" fn(
        *mut sys::vlib_main_t,
        *mut sys::vlib_node_runtime_t,
        *mut sys::vlib_frame_t,
    ) -> sys::uword,
    errors: &'static ErrorDescs<N>,
    n_errors: u16,
) -> NodeReg<3> {
    let mut r = node_reg(name, f);
    r.reg.error_counters = errors.0.as_ptr();
    r.reg.n_errors = n_errors;
    // (Feature arcs add their own next nodes after these.)
    r
}

pub static KP4_NODEPORT: Registration<NodeReg<3>> =
    Registration::new(node_reg(c"kp4-nodeport", kp4_nodeport_node));
pub static KP6_NODEPORT: Registration<NodeReg<3>> =
    Registration::new(node_reg(c"kp6-nodeport", kp6_nodeport_node));

pub static KP_NAT4_IN2OUT: Registration<NodeReg<3>> =
    Registration::new(reg_with_errors(c"kp-nat4-in2out", kp_in2out_node, &REPLY_ERRORS, 2));
pub static KP_NAT6_IN2OUT: Registration<NodeReg<3>> =
    Registration::new(reg_with_errors(c"kp-nat6-in2out", kp_in2out_node, &REPLY_ERRORS, 2));
pub static KP4_NAT64_REPLY: Registration<NodeReg<3>> =
    Registration::new(reg_with_errors(c"kp4-nat64-reply", kp_xlat_reply_node, &REPLY_ERRORS, 3));
pub static KP6_NAT46_REPLY: Registration<NodeReg<3>> =
    Registration::new(reg_with_errors(c"kp6-nat46-reply", kp_xlat_reply_node, &REPLY_ERRORS, 3));

pub static KP4_ICMP_OUT: Registration<NodeReg<3>> =
    Registration::new(reg_with_errors(c"kp4-icmp-out", kp4_icmp_out_node, &ICMP_OUT_ERRORS, 2));
pub static KP6_ICMP_OUT: Registration<NodeReg<3>> =
    Registration::new(reg_with_errors(c"kp6-icmp-out", kp6_icmp_out_node, &ICMP_OUT_ERRORS, 2));

struct Names([*const c_char; 2]);
// SAFETY: pointers to static strings.
unsafe impl Sync for Names {}
static BEFORE_IP4_LOOKUP: Names = Names([c"ip4-lookup".as_ptr(), core::ptr::null()]);
static BEFORE_IP6_LOOKUP: Names = Names([c"ip6-lookup".as_ptr(), core::ptr::null()]);

const fn feature(
    arc: &'static core::ffi::CStr,
    node: &'static core::ffi::CStr,
    before: &'static Names,
) -> sys::vnet_feature_registration_t {
    sys::vnet_feature_registration_t {
        next: core::ptr::null_mut(),
        next_in_arc: core::ptr::null_mut(),
        arc_name: arc.as_ptr() as *mut c_char,
        node_name: node.as_ptr() as *mut c_char,
        feature_index_ptr: core::ptr::null_mut(),
        feature_index: 0,
        runs_before: before.0.as_ptr() as *mut *mut c_char,
        runs_after: core::ptr::null_mut(),
        enable_disable_cb: core::ptr::null_mut(),
    }
}

static FEATURE4: Registration<sys::vnet_feature_registration_t> =
    Registration::new(feature(c"ip4-unicast", c"kp-nat4-in2out", &BEFORE_IP4_LOOKUP));
static FEATURE6: Registration<sys::vnet_feature_registration_t> =
    Registration::new(feature(c"ip6-unicast", c"kp-nat6-in2out", &BEFORE_IP6_LOOKUP));
static NO_ORDER: Names = Names([core::ptr::null(), core::ptr::null()]);
static NODEPORT4: Registration<sys::vnet_feature_registration_t> =
    Registration::new(feature(c"ip4-local", c"kp4-nodeport", &NO_ORDER));
static NODEPORT6: Registration<sys::vnet_feature_registration_t> =
    Registration::new(feature(c"ip6-local", c"kp6-nodeport", &NO_ORDER));
static ICMP_OUT4: Registration<sys::vnet_feature_registration_t> =
    Registration::new(feature(c"ip4-output", c"kp4-icmp-out", &NO_ORDER));
static ICMP_OUT6: Registration<sys::vnet_feature_registration_t> =
    Registration::new(feature(c"ip6-output", c"kp6-icmp-out", &NO_ORDER));

/// Graph node indices of the VIP and NodePort nodes of each family (VPP
/// writes them into the registrations when it registers the nodes).
pub fn node_indices() -> NodeIndices {
    let index = |r: &Registration<NodeReg<3>>| {
        // SAFETY: reading a field VPP wrote at registration, main thread.
        unsafe { (*r.get()).reg.index }
    };
    NodeIndices {
        vip: [[index(&KP4_NAT4), index(&KP4_NAT6)], [index(&KP6_NAT4), index(&KP6_NAT6)]],
        nodeport: [index(&KP4_NODEPORT), index(&KP6_NODEPORT)],
    }
}

/// Links the nodes into VPP's registration list (constructor time).
///
/// # Safety
/// Called once, from kp's constructor, with VPP's global main.
pub unsafe fn register_nodes(vgm: *mut sys::vlib_global_main_t) {
    let nodes = [
        &KP4_NAT4,
        &KP6_NAT6,
        &KP4_NAT6,
        &KP6_NAT4,
        &KP4_NODEPORT,
        &KP6_NODEPORT,
        &KP_NAT4_IN2OUT,
        &KP_NAT6_IN2OUT,
        &KP4_NAT64_REPLY,
        &KP6_NAT46_REPLY,
        &KP4_ICMP_OUT,
        &KP6_ICMP_OUT,
    ];
    for n in nodes {
        // SAFETY: per the contract; the records are static and writable.
        unsafe {
            let r = n.get().cast::<sys::vlib_node_registration_t>();
            (*r).next_registration = (*vgm).node_registrations.cast();
            (*vgm).node_registrations = r.cast();
        }
    }
    // SAFETY: VNET_FEATURE_INIT's constructor: link onto feature_main.
    unsafe {
        let fm = fns().feature_main();
        for f in [&FEATURE4, &FEATURE6, &NODEPORT4, &NODEPORT6, &ICMP_OUT4, &ICMP_OUT6] {
            (*f.get()).next = (*fm).next_feature;
            (*fm).next_feature = f.get();
        }
    }
}
