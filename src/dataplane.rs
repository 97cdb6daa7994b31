//! The data plane without VPP: the control-plane [`Controller`] that turns
//! the configuration into published [`Dataplane`] snapshots, and the
//! per-thread [`Worker`] that runs the per-packet path over a batch.
//!
//! The VPP node is a thin shell around [`Worker::process`]: it hands over a
//! frame's packets as a [`Batch`] and turns the [`Verdict`]s into next
//! nodes and counters. Benchmarks and tests drive the same code directly.

use crate::config::MAX_POD_INDICES;
use crate::config::{Config, ConfigError, FlowConf, PodTarget, Protocol, VipKey, VipSpec};
use crate::flowtable::{FlowKey, FlowTable, Hit, OutOfMemory};
use crate::maglev::{self, Table};
use crate::nat::{self, Endpoint, L4Checksum, NatError, NatType, Rewrite};
use crate::packet::{self, IpFamily, Parsed};
use crate::refcount::RefCounts;
use crate::reverse::{Original, ReverseTable};
use crate::snapshot::{Reader, SnapshotCell};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

/// Largest batch a worker processes at once (VPP's frame size).
pub const MAX_BATCH: usize = 256;

/// Buckets a worker sweeps per batch, so references held by dead entries
/// are released even in buckets no new flow visits. Kept small (it costs
/// 2-3 clocks a packet at 32): while deleted pods drain, kp's periodic
/// upkeep sweeps a larger slice of every table as well.
pub const SWEEP_PER_BATCH: u32 = 8;

/// The lifecycle of a pod index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    /// Unused index.
    Free,
    /// Configured: takes new flows (if its weight is above 0).
    Active,
    /// Deleted: keeps its established flows until they go idle.
    Draining,
    /// Deleted with `flush`, or its VIP was deleted: its flows end now.
    Flushed,
}

impl PodState {
    /// Whether existing flows may still use the pod.
    #[inline(always)]
    pub fn serves_flows(self) -> bool {
        matches!(self, PodState::Active | PodState::Draining)
    }
}

/// A pod as workers see it: where to send its flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodRuntime {
    pub vip: u32,
    /// Pod address and the VIP's target port.
    pub endpoint: Endpoint,
    pub state: PodState,
}

/// What the IPv4 fast lane needs of a pod, in one 16-byte record: the
/// VIP whose flows it serves (`NO_VIP` unless it serves flows and is
/// IPv4), and where to send them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(16))]
pub struct FastPodV4 {
    pub vip: u32,
    pub addr: [u8; 4],
    pub port: u16,
}

impl FastPodV4 {
    fn of(p: &PodRuntime) -> FastPodV4 {
        let e = &p.endpoint;
        let serving = p.state.serves_flows() && e.family == IpFamily::V4;
        FastPodV4 {
            vip: if serving { p.vip } else { NO_VIP },
            addr: [e.addr[0], e.addr[1], e.addr[2], e.addr[3]],
            port: e.port,
        }
    }
}

/// A VIP as workers see it.
#[derive(Debug, Clone)]
pub struct VipRuntime {
    pub key: VipKey,
    pub nat: NatType,
    pub target_port: u16,
    pub node_port: u16,
    pub table: Arc<Table>,
}

/// Where a packet entered kp: through a VIP prefix's FIB entry, or as
/// NodePort traffic to one of the node's own addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// Index of a VIP prefix in [`Dataplane::prefixes`].
    Prefix(u32),
    NodePort,
}

/// One immutable, published state of the data plane.
#[derive(Clone)]
pub struct Dataplane {
    pub flow: FlowConf,
    /// Reply state, shared by all workers (see [`crate::reverse`]).
    pub reverse: Arc<ReverseTable>,
    /// By VIP index; `None` for a free index.
    pub vips: Vec<Option<VipRuntime>>,
    /// By pod index.
    pub pods: Vec<PodRuntime>,
    /// By pod index: `pods` as the IPv4 fast lane reads them.
    pub fast_v4: Vec<FastPodV4>,
    /// By capture prefix index: the VIPs (protocol, port, VIP index) that
    /// share the prefix. Few per prefix, so a scan is fastest.
    pub prefixes: Vec<Vec<(Protocol, u16, u32)>>,
    /// Sorted (node_port, protocol, VIP index) for NodePort traffic.
    pub node_ports: Vec<(u16, Protocol, u32)>,
}

impl Dataplane {
    /// The VIP serving a packet, given how it was captured.
    #[inline]
    pub fn classify(&self, capture: Capture, protocol: u8, dst_port: u16) -> Option<u32> {
        match capture {
            Capture::Prefix(i) => self
                .prefixes
                .get(i as usize)?
                .iter()
                .find(|(proto, port, _)| *port == dst_port && proto.serves(protocol))
                .map(|&(_, _, v)| v),
            Capture::NodePort => {
                let start = self.node_ports.partition_point(|&(p, _, _)| p < dst_port);
                self.node_ports[start..]
                    .iter()
                    .take_while(|&&(p, _, _)| p == dst_port)
                    .find(|(_, proto, _)| proto.serves(protocol))
                    .map(|&(_, _, v)| v)
            }
        }
    }

    #[inline(always)]
    pub fn pod_serves(&self, pod: u32) -> bool {
        self.pods.get(pod as usize).is_some_and(|p| p.state.serves_flows())
    }
}

/// Control-plane state of one pod index.
#[derive(Debug, Clone, Copy)]
struct PodSlot {
    vip: u32,
    addr: IpAddr,
    /// The VIP's target port (kept: it outlives a deleted VIP).
    target_port: u16,
    state: PodState,
    /// Generation of the snapshot that stopped new flows to it.
    removed_at: u64,
}

/// Owns the configuration and everything derived from it; runs on the
/// main thread (in VPP: under the worker barrier).
pub struct Controller {
    config: Config,
    vip_index: BTreeMap<VipKey, u32>,
    free_vips: Vec<u32>,
    n_vips: u32,
    /// VIP prefix -> capture prefix index.
    prefix_index: BTreeMap<crate::config::IpPrefix, u32>,
    free_prefixes: Vec<u32>,
    pods: Vec<PodSlot>,
    pod_index: HashMap<(u32, IpAddr), u32>,
    free_pods: Vec<u32>,
    /// Pod indices that may be in use at once ([`MAX_POD_INDICES`]; lower in
    /// tests).
    pod_limit: usize,
    tables: HashMap<u32, Arc<Table>>,
    /// Deleted VIP indices and the generation that deleted them, waiting
    /// for their pods to be freed before reuse.
    retired_vips: Vec<(u32, u64)>,
    /// Pod and VIP indices freed since the last `take_freed` (their
    /// counters must start from zero when reused).
    freed_pods: Vec<u32>,
    freed_vips: Vec<u32>,
    cell: Arc<SnapshotCell<Dataplane>>,
    refs: Arc<RefCounts>,
    reverse: Arc<ReverseTable>,
    n_threads: usize,
}

/// The shared reply table for `flow`: as many slots as all workers' flow
/// tables together.
fn reverse_table(flow: &FlowConf, n_threads: usize) -> Result<ReverseTable, ConfigError> {
    let buckets = (flow.buckets as usize * n_threads.max(1)).next_power_of_two().min(1 << 26) as u32;
    ReverseTable::new(buckets).ok_or(ConfigError::OutOfMemory { bytes: buckets as u64 * 320 })
}

impl Controller {
    /// A controller for `n_threads` data-plane threads.
    pub fn new(n_threads: usize) -> Controller {
        let config = Config::default();
        let reverse = Arc::new(reverse_table(&config.flow, n_threads).expect("default reply table"));
        let initial = Dataplane {
            flow: config.flow,
            reverse: Arc::clone(&reverse),
            vips: Vec::new(),
            pods: Vec::new(),
            fast_v4: Vec::new(),
            prefixes: Vec::new(),
            node_ports: Vec::new(),
        };
        Controller {
            config,
            vip_index: BTreeMap::new(),
            free_vips: Vec::new(),
            n_vips: 0,
            prefix_index: BTreeMap::new(),
            free_prefixes: Vec::new(),
            pods: Vec::new(),
            pod_index: HashMap::new(),
            free_pods: Vec::new(),
            pod_limit: MAX_POD_INDICES as usize,
            tables: HashMap::new(),
            retired_vips: Vec::new(),
            freed_pods: Vec::new(),
            freed_vips: Vec::new(),
            cell: Arc::new(SnapshotCell::new(initial, n_threads)),
            refs: Arc::new(RefCounts::new(n_threads)),
            reverse,
            n_threads,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn cell(&self) -> &Arc<SnapshotCell<Dataplane>> {
        &self.cell
    }

    pub fn refs(&self) -> &Arc<RefCounts> {
        &self.refs
    }

    /// A worker for data-plane thread `thread`.
    pub fn worker(&self, thread: usize) -> Result<Worker, OutOfMemory> {
        Worker::new(thread, &self.cell, &self.refs)
    }

    pub fn vip_index(&self, key: &VipKey) -> Option<u32> {
        self.vip_index.get(key).copied()
    }

    pub fn prefix_index(&self, prefix: &crate::config::IpPrefix) -> Option<u32> {
        self.prefix_index.get(prefix).copied()
    }

    /// The pod index of `addr` on a VIP, while it exists (also draining).
    pub fn pod_index(&self, vip: u32, addr: &IpAddr) -> Option<u32> {
        self.pod_index.get(&(vip, *addr)).copied()
    }

    /// Every pod index in use (configured or still draining) and its
    /// address.
    pub fn live_pods(&self) -> impl Iterator<Item = (u32, IpAddr)> + '_ {
        self.pods
            .iter()
            .enumerate()
            .filter(|(_, p)| p.state != PodState::Free)
            .map(|(i, p)| (i as u32, p.addr))
    }

    /// Pods still held by flows after their deletion.
    pub fn draining_pods(&self) -> impl Iterator<Item = (u32, IpAddr, PodState)> + '_ {
        self.pods
            .iter()
            .filter(|p| matches!(p.state, PodState::Draining | PodState::Flushed))
            .map(|p| (p.vip, p.addr, p.state))
    }

    /// Pod and VIP indices freed since the last call.
    pub fn take_freed(&mut self) -> (Vec<u32>, Vec<u32>) {
        (core::mem::take(&mut self.freed_pods), core::mem::take(&mut self.freed_vips))
    }

    /// How many VIP and pod indices are in use or were (sizes for
    /// per-index counters).
    pub fn index_bounds(&self) -> (u32, u32) {
        (self.n_vips, self.pods.len() as u32)
    }

    pub fn set_flow(&mut self, buckets: Option<u32>, timeout: Option<u32>) -> Result<(), ConfigError> {
        let mut next = self.config.clone();
        next.set_flow(buckets, timeout)?;
        if next.flow.buckets != self.config.flow.buckets {
            // Flow tables start empty at a new size; so does reply state.
            self.reverse = Arc::new(reverse_table(&next.flow, self.n_threads)?);
        }
        self.config.flow = next.flow;
        self.publish();
        Ok(())
    }

    /// Adds a VIP; returns its index.
    pub fn add_vip(&mut self, spec: &VipSpec) -> Result<u32, ConfigError> {
        self.config.add_vip(spec)?;
        let idx = self.free_vips.pop().unwrap_or_else(|| {
            self.n_vips += 1;
            self.n_vips - 1
        });
        self.vip_index.insert(spec.key, idx);
        if !self.prefix_index.contains_key(&spec.key.prefix) {
            let p = self.free_prefixes.pop().unwrap_or(self.prefix_index.len() as u32);
            self.prefix_index.insert(spec.key.prefix, p);
        }
        self.rebuild_table(idx, &spec.key);
        self.publish();
        Ok(idx)
    }

    /// Deletes a VIP: its pods are flushed (their flows end) and freed once
    /// no flow references them.
    pub fn del_vip(&mut self, key: &VipKey) -> Result<(), ConfigError> {
        let vip = self.config.del_vip(key)?;
        let idx = self.vip_index.remove(key).expect("configured VIP has an index");
        for addr in vip.pods.keys() {
            if let Some(&p) = self.pod_index.get(&(idx, *addr)) {
                self.pods[p as usize].state = PodState::Flushed;
            }
        }
        self.tables.remove(&idx);
        if !self.config.vips.keys().any(|k| k.prefix == key.prefix) {
            if let Some(p) = self.prefix_index.remove(&key.prefix) {
                self.free_prefixes.push(p);
            }
        }
        // The VIP index is reused only after garbage collection has freed
        // its pods, so stale flow entries can never point into a new VIP.
        let g = self.publish();
        for p in self.pods.iter_mut().filter(|p| p.vip == idx && p.state == PodState::Flushed) {
            p.removed_at = g;
        }
        self.retired_vips.push((idx, g));
        Ok(())
    }

    /// Adds pods (or updates weights) on every VIP the target selects.
    pub fn add_pods(&mut self, t: &PodTarget, pods: &[(IpAddr, u32)]) -> Result<(), ConfigError> {
        // Refused before anything changes if the new pod indices might not
        // fit (counting every address as new on every VIP it lands on).
        let in_use = self.pods.len() - self.free_pods.len();
        let most_new = self.config.targets(t)?.len().saturating_mul(pods.len());
        if in_use.saturating_add(most_new) > self.pod_limit {
            return Err(ConfigError::TooManyPods { max: self.pod_limit as u32 });
        }
        let keys = self.config.add_pods(t, pods)?;
        for k in &keys {
            let vip = self.vip_index[k];
            for &(addr, _) in pods {
                match self.pod_index.get(&(vip, addr)) {
                    // Re-added while draining: its flows carry on.
                    Some(&p) => self.pods[p as usize].state = PodState::Active,
                    None => {
                        let target_port = self.config.vips[k].target_port;
                        let slot = PodSlot { vip, addr, target_port, state: PodState::Active, removed_at: 0 };
                        let p = match self.free_pods.pop() {
                            Some(p) => {
                                self.pods[p as usize] = slot;
                                p
                            }
                            None => {
                                self.pods.push(slot);
                                (self.pods.len() - 1) as u32
                            }
                        };
                        self.pod_index.insert((vip, addr), p);
                    }
                }
            }
            self.rebuild_table(vip, k);
        }
        self.publish();
        Ok(())
    }

    /// Deletes pods: new flows avoid them at once; established flows keep
    /// them until idle, or end now with `flush`.
    pub fn del_pods(&mut self, t: &PodTarget, pods: &[IpAddr], flush: bool) -> Result<(), ConfigError> {
        // With flush, a pod already deleted (draining) can still have its
        // flows ended; everything is checked before anything changes.
        let keys = self.config.targets(t)?;
        let draining = |c: &Controller, k: &VipKey, a: &IpAddr| {
            flush
                && c.vip_index
                    .get(k)
                    .and_then(|v| c.pod_index.get(&(*v, *a)))
                    .is_some_and(|&p| c.pods[p as usize].state == PodState::Draining)
        };
        if pods.is_empty() {
            return Err(ConfigError::NoPods);
        }
        for k in &keys {
            for a in pods {
                if !self.config.vips[k].pods.contains_key(a) && !draining(self, k, a) {
                    return Err(ConfigError::UnknownPod { pod: *a, vip: *k });
                }
            }
        }
        let mut changed = Vec::new();
        for k in &keys {
            let vip = self.vip_index[k];
            for addr in pods {
                self.config.remove_pod(k, addr);
                let p = self.pod_index[&(vip, *addr)];
                self.pods[p as usize].state = if flush { PodState::Flushed } else { PodState::Draining };
                changed.push(p);
            }
            self.rebuild_table(vip, k);
        }
        let g = self.publish();
        for p in changed {
            self.pods[p as usize].removed_at = g;
        }
        Ok(())
    }

    /// Frees deleted pods that nothing can reference any more (the rule in
    /// [`crate::refcount`]), and VIP indices whose pods are all gone.
    /// Returns how many pods were freed.
    pub fn collect_garbage(&mut self) -> usize {
        let mut freed = 0;
        for i in 0..self.pods.len() {
            let p = self.pods[i];
            let deleted = matches!(p.state, PodState::Draining | PodState::Flushed);
            if deleted && self.cell.quiescent_since(p.removed_at) && self.refs.sum(i as u32) == 0 {
                self.pods[i].state = PodState::Free;
                self.pod_index.remove(&(p.vip, p.addr));
                self.free_pods.push(i as u32);
                self.freed_pods.push(i as u32);
                freed += 1;
            }
        }
        let pods = &self.pods;
        let mut reusable = Vec::new();
        self.retired_vips.retain(|&(v, g)| {
            let done =
                self.cell.quiescent_since(g) && !pods.iter().any(|p| p.vip == v && p.state != PodState::Free);
            if done {
                reusable.push(v);
            }
            !done
        });
        self.freed_vips.extend(&reusable);
        self.free_vips.extend(reusable);
        if freed > 0 {
            self.publish();
        }
        freed
    }

    fn rebuild_table(&mut self, vip: u32, key: &VipKey) {
        let v = &self.config.vips[key];
        let backends: Vec<maglev::Backend> = v
            .pods
            .iter()
            .map(|(addr, &weight)| maglev::Backend {
                addr: addr_bytes(addr),
                weight,
                id: self.pod_index[&(vip, *addr)],
            })
            .collect();
        self.tables.insert(vip, Arc::new(Table::build(&backends, v.new_len)));
    }

    /// Builds and publishes the snapshot; returns its generation.
    fn publish(&mut self) -> u64 {
        let mut vips: Vec<Option<VipRuntime>> = vec![None; self.n_vips as usize];
        let mut prefixes = vec![Vec::new(); self.prefix_index.len() + self.free_prefixes.len()];
        let mut node_ports = Vec::new();
        for (key, &idx) in &self.vip_index {
            let v = &self.config.vips[key];
            vips[idx as usize] = Some(VipRuntime {
                key: *key,
                nat: v.nat,
                target_port: v.target_port,
                node_port: v.node_port,
                table: Arc::clone(&self.tables[&idx]),
            });
            prefixes[self.prefix_index[&key.prefix] as usize].push((key.protocol, key.port, idx));
            if v.node_port != 0 {
                node_ports.push((v.node_port, key.protocol, idx));
            }
        }
        node_ports.sort_unstable();
        let pods: Vec<PodRuntime> = self
            .pods
            .iter()
            .map(|p| PodRuntime { vip: p.vip, endpoint: endpoint(&p.addr, p.target_port), state: p.state })
            .collect();
        let fast_v4 = pods.iter().map(FastPodV4::of).collect();
        let reverse = Arc::clone(&self.reverse);
        self.cell.publish(Dataplane {
            flow: self.config.flow,
            reverse,
            vips,
            pods,
            fast_v4,
            prefixes,
            node_ports,
        })
    }
}

fn addr_bytes(a: &IpAddr) -> [u8; 16] {
    let mut b = [0u8; 16];
    match a {
        IpAddr::V4(v4) => b[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => b = v6.octets(),
    }
    b
}

fn endpoint(a: &IpAddr, port: u16) -> Endpoint {
    match a {
        IpAddr::V4(v4) => Endpoint::v4(v4.octets(), port),
        IpAddr::V6(v6) => Endpoint::v6(v6.octets(), port),
    }
}

/// What happened to a flow's packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowOutcome {
    /// Packet of an established flow.
    Hit,
    /// First packet of a new flow, now in the flow table.
    New,
    /// New flow that could not be inserted (bucket full): forwarded anyway.
    Untracked,
}

/// Why a packet was dropped; one node error counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    Packet(packet::Error),
    /// Captured traffic with no VIP for its protocol and port.
    NoVip,
    /// The VIP has no pod taking new flows.
    NoPod,
    Nat(NatError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forward { vip: u32, pod: u32, outcome: FlowOutcome },
    Drop(DropReason),
}

/// A batch of packets as the worker needs them. The VPP node implements
/// it over a frame's buffers; benches and tests over byte vectors.
pub trait Batch {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The packet, from its IP header on.
    fn packet(&mut self, i: usize) -> &mut [u8];
    fn capture(&self, i: usize) -> Capture;
    /// How the TCP/UDP checksum field is used (offload).
    fn l4_checksum(&self, _i: usize) -> L4Checksum {
        L4Checksum::Full
    }
    /// Packet `i` was translated towards `pod` (and will be forwarded): a
    /// chance to act on it while it is in cache.
    fn translated(&mut self, _i: usize, _pod: u32) {}
    /// Hints that packet `i`'s metadata will be read soon (out of range:
    /// nothing).
    fn prefetch_meta(&self, _i: usize) {}
    /// Hints that packet `i`'s first bytes will be read soon (its metadata
    /// was hinted earlier; out of range: nothing).
    fn prefetch_data(&self, _i: usize) {}
}

/// Packets between the start (pass 1) and the end (pass 2) of a packet's
/// fast path in [`Worker::process`]: enough for its bucket to arrive from
/// memory meanwhile (a DRAM miss here costs some 300 clocks), few enough
/// not to queue more misses than the core can have in flight. Measured in
/// VPP at 1M flows (clocks/packet, median of 5): 12 -> 90, 20 -> 92,
/// 24 -> 85, 28 -> 87, 32 -> 85; at 64K flows 24 is as good as 12.
const PIPELINE: usize = 24;

/// Bucket prefetches are issued this many at a time, back to back: the
/// misses then overlap in the memory system instead of each one holding
/// up the core's retirement on its own. Measured in VPP at 1M flows
/// (clocks/packet, PIPELINE 12): 1 -> 102, 4 -> 92, 6 -> 93, 8 -> 94.
const PREFETCH_GROUP: usize = 4;

/// How far ahead pass 1 hints packet metadata and packet bytes (VPP's
/// usual distances: metadata twice as far as the data it locates).
const PREFETCH_META_AHEAD: usize = 8;
const PREFETCH_DATA_AHEAD: usize = 4;

/// Per-batch scratch space, kept between batches so nothing is allocated
/// per packet.
struct Scratch {
    parsed: [Parsed; MAX_BATCH],
    lane: [Lane; MAX_BATCH],
    vip: [u32; MAX_BATCH],
    keys: [FlowKey; MAX_BATCH],
    hashes: [u64; MAX_BATCH],
    ids: [u128; MAX_BATCH],
}

/// How pass 1 parsed a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// IPv4 without options, TCP or UDP: key from the header bytes,
    /// `Scratch::parsed` not filled.
    FastV4,
    /// Fully parsed into `Scratch::parsed`, key in `Scratch::keys`.
    General,
    /// Translated in pass 2.
    Done,
}

/// One data-plane thread: its flow table, snapshot reader and scratch.
pub struct Worker {
    thread: usize,
    flows: FlowTable,
    reader: Reader<Dataplane>,
    cell: Arc<SnapshotCell<Dataplane>>,
    refs: Arc<RefCounts>,
    scratch: Box<Scratch>,
    sweep_at: u32,
}

const NO_VIP: u32 = u32::MAX;

impl Worker {
    pub fn new(
        thread: usize,
        cell: &Arc<SnapshotCell<Dataplane>>,
        refs: &Arc<RefCounts>,
    ) -> Result<Worker, OutOfMemory> {
        let flow = cell.load().flow;
        let blank = Parsed::default();
        Ok(Worker {
            thread,
            flows: FlowTable::new(flow.buckets, flow.timeout)?,
            reader: cell.reader(thread),
            cell: Arc::clone(cell),
            refs: Arc::clone(refs),
            scratch: Box::new(Scratch {
                parsed: [blank; MAX_BATCH],
                lane: [Lane::General; MAX_BATCH],
                vip: [NO_VIP; MAX_BATCH],
                keys: [FlowKey::default(); MAX_BATCH],
                hashes: [0; MAX_BATCH],
                ids: [0; MAX_BATCH],
            }),
            sweep_at: 0,
        })
    }

    /// Takes a new flow-table size or timeout now (from the main thread
    /// before workers start, or under the barrier); otherwise the worker
    /// notices the change at its next batch.
    pub fn adopt_flow_conf(&mut self, flow: FlowConf) -> Result<(), OutOfMemory> {
        if flow.buckets != self.flows.n_buckets() {
            let old = core::mem::replace(&mut self.flows, FlowTable::new(flow.buckets, flow.timeout)?);
            release_all(&old, self.thread, &self.refs);
        }
        self.flows.set_timeout(flow.timeout);
        Ok(())
    }

    /// The VIP packet `i` of the last batch was classified to.
    pub fn batch_vip(&self, i: usize) -> Option<u32> {
        self.scratch.vip.get(i).copied().filter(|&v| v != NO_VIP)
    }

    /// The original destination (family 4 or 6, address, port) of packet
    /// `i` of the last batch, if it parsed, as it was before translation.
    pub fn batch_original_dst(&self, i: usize) -> Option<(u8, [u8; 16], u16)> {
        self.batch_vip(i)?;
        let k = match self.scratch.lane[i] {
            // Fast-lane keys were never built; the id is the 5-tuple.
            Lane::FastV4 | Lane::Done => FlowKey::from_compact(self.scratch.ids[i]),
            Lane::General => self.scratch.keys[i],
        };
        let (dst, port) = k.original_dst();
        Some((k.family(), dst, port))
    }

    /// The snapshot the last batch ran with.
    pub fn snapshot(&self) -> &Dataplane {
        self.reader.cached()
    }

    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    /// Runs the per-packet path over `batch` (at most [`MAX_BATCH`]
    /// packets): parse, classify, flow lookup (batched, prefetched), Maglev
    /// on a miss, insert, DNAT. `now` is the current tick (seconds, >= 1).
    /// Writes `verdicts[i]` for every packet `i` of the batch (callers may
    /// reuse the array without clearing it).
    // Several parallel per-packet arrays are indexed by packet number.
    #[allow(clippy::needless_range_loop)]
    pub fn process<B: Batch>(&mut self, batch: &mut B, now: u32, verdicts: &mut [Verdict]) {
        let n = batch.len().min(MAX_BATCH);
        // One length check here spares one per packet below.
        let verdicts = &mut verdicts[..n];
        let Worker { thread, flows, reader, cell, refs, scratch, sweep_at } = self;
        let thread = *thread;
        let dp = reader.enter(cell);

        // A changed `kp conf` reaches the worker here, between batches.
        if dp.flow.buckets != flows.n_buckets() {
            if let Ok(t) = FlowTable::new(dp.flow.buckets, dp.flow.timeout) {
                let old = core::mem::replace(flows, t);
                release_all(&old, thread, refs);
            }
        } else if dp.flow.timeout != flows.timeout() {
            flows.set_timeout(dp.flow.timeout);
        }

        // Pass 1: parse, classify, hash, prefetch the bucket. IPv4 without
        // options takes the fast lane: its id and hash come straight from
        // the header bytes, and `scratch.parsed` and `scratch.keys` are
        // filled only if it needs the general path later.
        //
        // Pass 2: read buckets, prefetch the keys of candidates that need
        // confirming. A fast-lane hit on a live IPv4 pod is finished here:
        // its id is the whole key, so the candidate is the flow.
        //
        // The two run as a software pipeline: packet `j` starts (pass 1)
        // while packet `j - PIPELINE` finishes (pass 2). A bucket has the
        // time of PIPELINE packets to arrive from memory, and waiting for
        // memory overlaps with work on other packets instead of stalling a
        // pass that does nothing else.
        let (mut last_class, mut last_vip) = (u64::MAX, NO_VIP);
        // Packets left for pass 3.
        let mut pending = 0usize;
        // Hashes of the packets whose buckets are prefetched next.
        let mut group = [0u64; PREFETCH_GROUP];
        for j in 0..n + PIPELINE {
            if j < n {
                let i = j;
                batch.prefetch_meta(i + PREFETCH_META_AHEAD);
                batch.prefetch_data(i + PREFETCH_DATA_AHEAD);
                let capture = batch.capture(i);
                let pkt = batch.packet(i);
                let started = 'pass1: {
                    let (v, id, hash) = match packet::parse_v4_fast(pkt) {
                        Some(f) => {
                            // Packets of a frame mostly go to one Service: the last
                            // answer is reused when capture, protocol and port match.
                            let class = class_key(capture, &f);
                            let v = if class == last_class {
                                last_vip
                            } else {
                                last_class = class;
                                last_vip = dp.classify(capture, f.protocol, f.dst_port()).unwrap_or(NO_VIP);
                                last_vip
                            };
                            if v == NO_VIP {
                                verdicts[i] = Verdict::Drop(DropReason::NoVip);
                                break 'pass1 None;
                            }
                            scratch.lane[i] = Lane::FastV4;
                            let (id, hash) = FlowKey::v4_id_hash(&f);
                            (v, id, hash)
                        }
                        None => {
                            let p = &mut scratch.parsed[i];
                            if let Err(e) = packet::parse_into(pkt, p) {
                                verdicts[i] = Verdict::Drop(DropReason::Packet(e));
                                break 'pass1 None;
                            }
                            let Some(v) = dp.classify(capture, p.protocol, p.dst_port) else {
                                verdicts[i] = Verdict::Drop(DropReason::NoVip);
                                break 'pass1 None;
                            };
                            scratch.lane[i] = Lane::General;
                            let key = FlowKey::new(v, p);
                            scratch.keys[i] = key;
                            let hash = key.hash();
                            (v, key.compact(hash), hash)
                        }
                    };
                    Some((v, id, hash))
                };
                match started {
                    Some((v, id, hash)) => {
                        scratch.vip[i] = v;
                        scratch.hashes[i] = hash;
                        scratch.ids[i] = id;
                        group[i % PREFETCH_GROUP] = hash;
                    }
                    // Dropped in pass 1; its verdict is written.
                    None => scratch.vip[i] = NO_VIP,
                }
            }
            // Bucket prefetches go out in groups (see PREFETCH_GROUP). A
            // slot left over from an earlier group (a dropped packet, or
            // the frame's last, partial group) only repeats a prefetch.
            if j < n && (j % PREFETCH_GROUP == PREFETCH_GROUP - 1 || j == n - 1) {
                for &hash in &group {
                    flows.prefetch_bucket(hash);
                }
            }
            'pass2: {
                if j < PIPELINE {
                    break 'pass2;
                }
                let i = j - PIPELINE;
                let v = scratch.vip[i];
                if v == NO_VIP {
                    break 'pass2;
                }
                // (For IPv6 this also prefetches the candidates' keys for
                // pass 3.)
                let cands = flows.candidates(scratch.hashes[i], scratch.ids[i], now);
                if scratch.lane[i] == Lane::FastV4 && cands != 0 {
                    let hit = flows.whole_key_hit(scratch.hashes[i], cands, now);
                    if let Some((pod, to)) = hit.and_then(|h| Some((h.pod, dp.fast_v4.get(h.pod as usize)?)))
                    {
                        // The entry keeps no VIP index: its pod must serve
                        // this VIP (and be IPv4, and not flushed).
                        if to.vip == v {
                            let l4 = batch.l4_checksum(i);
                            let protocol = FlowKey::id_protocol(scratch.ids[i]);
                            verdicts[i] = match nat::dnat_v4(batch.packet(i), protocol, to.addr, to.port, l4)
                            {
                                Ok(()) => {
                                    batch.translated(i, pod);
                                    Verdict::Forward { vip: v, pod, outcome: FlowOutcome::Hit }
                                }
                                Err(e) => Verdict::Drop(DropReason::Nat(e)),
                            };
                            scratch.lane[i] = Lane::Done;
                            break 'pass2;
                        }
                    }
                }
                pending += 1;
            }
        }
        if pending == 0 {
            // Every packet was finished (or dropped) above: no pass 3
            // (returning here, rather than wrapping pass 3 in a branch,
            // keeps the pipeline's code tighter: 290 vs 294 instructions
            // per packet in VPP).
            *sweep_at = sweep(flows, *sweep_at, SWEEP_PER_BATCH, now, &dp, thread, refs);
            return;
        }
        // Pass 3: everything else goes the general way: confirm, Maglev
        // for new flows and flushed pods, insert, rewrite.
        for i in 0..n {
            let v = scratch.vip[i];
            if v == NO_VIP || scratch.lane[i] == Lane::Done {
                continue;
            }
            if scratch.lane[i] == Lane::FastV4 {
                // The fast lane skipped the full parse; do it now (it
                // succeeds: `parse_v4_fast` only takes what it accepts).
                if let Err(e) = packet::parse_into(batch.packet(i), &mut scratch.parsed[i]) {
                    verdicts[i] = Verdict::Drop(DropReason::Packet(e));
                    continue;
                }
                scratch.keys[i] = FlowKey::new(v, &scratch.parsed[i]);
            }
            let (key, hash, id) = (&scratch.keys[i], scratch.hashes[i], scratch.ids[i]);
            // Probe again: an earlier packet of this batch may have just
            // inserted this very flow.
            let cands = flows.candidates(hash, id, now);
            let hit = flows.resolve(key, hash, id, cands, now);
            verdicts[i] =
                general(batch, i, &scratch.parsed[i], v, key, hash, hit, flows, &dp, thread, refs, now);
        }

        *sweep_at = sweep(flows, *sweep_at, SWEEP_PER_BATCH, now, &dp, thread, refs);
    }

    /// Sweeps up to `buckets` buckets of the flow table, going on from
    /// where the last sweep stopped, releasing what dead entries hold. The
    /// data path sweeps a little per batch; this is for when no packets
    /// come (from the main thread, with this worker parked).
    pub fn sweep_idle(&mut self, buckets: u32, now: u32) {
        let Worker { thread, flows, reader, cell, refs, sweep_at, .. } = self;
        let thread = *thread;
        // The latest snapshot, as the worker's next batch would see it (an
        // empty batch, as far as the reader's bookkeeping goes).
        let dp = reader.enter(cell);
        *sweep_at = sweep(flows, *sweep_at, buckets, now, &dp, thread, refs);
    }

    /// The reply path: for each packet of `batch` that is a reply of a kp
    /// flow (from any worker), sets its source back to what the client sent
    /// to. Anything else is left exactly as it was.
    #[allow(clippy::needless_range_loop)] // parallel per-packet arrays
    pub fn process_replies<B: Batch>(&mut self, batch: &mut B, verdicts: &mut [ReplyVerdict]) {
        let n = batch.len().min(MAX_BATCH);
        let dp = self.reader.enter(&self.cell);
        let scratch = &mut self.scratch;
        for i in 0..n {
            scratch.vip[i] = NO_VIP;
            let p = &mut scratch.parsed[i];
            if packet::parse_into(batch.packet(i), p).is_err() {
                verdicts[i] = ReplyVerdict::NotKp;
                continue;
            }
            scratch.keys[i] = FlowKey::new(0, p);
            scratch.hashes[i] = scratch.keys[i].hash();
            dp.reverse.prefetch(scratch.hashes[i]);
            scratch.vip[i] = 0;
        }
        for i in 0..n {
            if scratch.vip[i] == NO_VIP {
                continue;
            }
            verdicts[i] = match dp.reverse.lookup(&scratch.keys[i]) {
                None => ReplyVerdict::NotKp,
                Some(o) => {
                    let from = Endpoint { family: scratch.parsed[i].family, addr: o.addr, port: o.port };
                    let l4 = batch.l4_checksum(i);
                    match nat::rewrite_src(batch.packet(i), &scratch.parsed[i], &from, l4) {
                        Ok(()) => ReplyVerdict::Translated { vip: o.vip },
                        Err(_) => ReplyVerdict::NotKp,
                    }
                }
            };
        }
    }
}

/// The per-packet path for everything but an established IPv4 fast-lane
/// flow: Maglev for new flows (and flows whose pod was flushed), insert,
/// reply state, and the rewrite for any family.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn general<B: Batch>(
    batch: &mut B,
    i: usize,
    parsed: &Parsed,
    v: u32,
    key: &FlowKey,
    hash: u64,
    hit: Option<Hit>,
    flows: &mut FlowTable,
    dp: &Dataplane,
    thread: usize,
    refs: &RefCounts,
    now: u32,
) -> Verdict {
    let reverse = &dp.reverse;
    let (pod, outcome) = match hit {
        // IPv4 entries keep no VIP index: a pod of another VIP (the address
        // now belongs to a different Service) makes the entry stale.
        Some(Hit { pod, .. }) if dp.pod_serves(pod) && dp.pods[pod as usize].vip == v => {
            (pod, FlowOutcome::Hit)
        }
        stale_or_miss => {
            let vip = dp.vips[v as usize].as_ref().expect("classified VIPs exist");
            // The Maglev choice must not depend on node-local indices, so
            // ECMP peers pick the same pod.
            let Some(pod) = vip.table.lookup(tuple_hash(parsed)) else {
                if let Some(h) = stale_or_miss {
                    forget(flows.remove(h.slot), thread, refs, dp);
                }
                return Verdict::Drop(DropReason::NoPod);
            };
            let original = Original { addr: parsed.dst, port: parsed.dst_port, vip: v };
            let to = &dp.pods[pod as usize].endpoint;
            // The entry the flow had (its pod was flushed: it moves on) or
            // the one it displaces; no entry at all if its bucket is full.
            let replaced = match stale_or_miss {
                Some(h) => Some(Some((flows.repoint(h.slot, pod, now), *key))),
                None => flows.insert(key, hash, pod, now).ok().map(|(_, evicted)| evicted),
            };
            match replaced {
                Some(old) => {
                    forget(old, thread, refs, dp);
                    refs.add(thread, pod, 1);
                    reverse.insert(&key.reply_key(&to.addr, to.port), original);
                    (pod, FlowOutcome::New)
                }
                // Untracked: replies of this flow pass as they are.
                None => (pod, FlowOutcome::Untracked),
            }
        }
    };
    let to = dp.pods[pod as usize].endpoint;
    let l4 = batch.l4_checksum(i);
    let done = if to.family == parsed.family {
        nat::rewrite_dst(batch.packet(i), parsed, &to, l4)
    } else {
        // nat46/nat64: header translation goes through the general entry
        // point (which refuses it for now).
        nat::apply(batch.packet(i), parsed, &Rewrite::dnat(to), l4)
    };
    match done {
        Ok(()) => {
            batch.translated(i, pod);
            Verdict::Forward { vip: v, pod, outcome }
        }
        Err(e) => Verdict::Drop(DropReason::Nat(e)),
    }
}

/// What the reply path did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyVerdict {
    /// A reply of a kp flow; its source is now the Service's.
    Translated { vip: u32 },
    /// Not a kp reply: untouched.
    NotKp,
}

/// A flow entry went away: drop its pod reference and its reply state.
#[inline(always)]
fn forget(entry: Option<(u32, FlowKey)>, thread: usize, refs: &RefCounts, dp: &Dataplane) {
    if let Some((pod, key)) = entry {
        refs.add(thread, pod, -1);
        if let Some(p) = dp.pods.get(pod as usize) {
            dp.reverse.remove(&key.reply_key(&p.endpoint.addr, p.endpoint.port));
        }
    }
}

/// Sweeps `count` buckets from `from`: entries expired or of pods that no
/// longer serve flows go, with their references and reply state. Returns
/// where the next sweep starts.
fn sweep(
    flows: &mut FlowTable,
    from: u32,
    count: u32,
    now: u32,
    dp: &Dataplane,
    thread: usize,
    refs: &RefCounts,
) -> u32 {
    flows.sweep(from, count, now, |p| !dp.pod_serves(p), |p, k| forget(Some((p, *k)), thread, refs, dp))
}

fn release_all(t: &FlowTable, thread: usize, refs: &RefCounts) {
    t.for_each_live(0, |pod| refs.add(thread, pod, -1));
}

/// What [`Dataplane::classify`] depends on for a fast-lane packet, packed
/// (never `u64::MAX`; the port in wire order: it is only compared).
#[inline(always)]
fn class_key(capture: Capture, f: &packet::V4Fast) -> u64 {
    let capture = match capture {
        Capture::Prefix(i) => u64::from(i),
        Capture::NodePort => 1 << 32,
    };
    let p = f.ports.to_ne_bytes();
    capture | (u64::from(f.protocol) << 40) | (u64::from(u16::from_ne_bytes([p[2], p[3]])) << 48)
}

/// Hash of the 5-tuple alone (no node-local index), for Maglev.
#[inline]
fn tuple_hash(p: &Parsed) -> u32 {
    (FlowKey::new(0, p).hash() >> 32) as u32
}

/// A batch of owned packets: for tests, benches and tools.
#[derive(Debug, Clone, Default)]
pub struct VecBatch {
    pub packets: Vec<Vec<u8>>,
    pub captures: Vec<Capture>,
}

impl VecBatch {
    pub fn push(&mut self, packet: Vec<u8>, capture: Capture) {
        self.packets.push(packet);
        self.captures.push(capture);
    }
}

impl Batch for VecBatch {
    fn len(&self) -> usize {
        self.packets.len()
    }
    fn packet(&mut self, i: usize) -> &mut [u8] {
        &mut self.packets[i]
    }
    fn capture(&self, i: usize) -> Capture {
        self.captures[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Protocol;

    #[test]
    fn pods_beyond_the_index_limit_are_refused_and_nothing_changes() {
        let mut ctl = Controller::new(1);
        ctl.pod_limit = 3;
        let key = VipKey { prefix: "10.96.0.10/32".parse().unwrap(), protocol: Protocol::Any, port: 80 };
        ctl.add_vip(&VipSpec { key, target_port: 8080, node_port: 0, nat: None, new_len: None }).unwrap();
        let target = PodTarget { prefix: key.prefix, protocol: None, port: None };
        let pod = |i: u8| (IpAddr::from([10, 1, 0, i]), 1);
        ctl.add_pods(&target, &[pod(1), pod(2)]).unwrap();
        let before = ctl.config().clone();
        assert_eq!(ctl.add_pods(&target, &[pod(3), pod(4)]), Err(ConfigError::TooManyPods { max: 3 }));
        assert_eq!(ctl.config(), &before);
        assert_eq!(ctl.live_pods().count(), 2);
        // One more fits.
        ctl.add_pods(&target, &[pod(3)]).unwrap();
        assert_eq!(ctl.live_pods().count(), 3);
    }
}
