//! The data plane without VPP: the control-plane [`Controller`] that turns
//! the configuration into published [`Dataplane`] snapshots (in
//! `controller`), the per-thread [`Worker`] that runs the per-packet path
//! over a batch (in `worker`), and what the two share (here).
//!
//! The VPP node is a thin shell around [`Worker::process`]: it hands over a
//! frame's packets as a [`Batch`] and turns the [`Verdict`]s into next
//! nodes and counters. Benchmarks and tests drive the same code directly.

mod controller;
mod worker;

pub use crate::fragment::{HoldTicket, Released};
pub use controller::Controller;
pub use worker::{Worker, DRAIN_PER_BATCH, REJECTS_PER_TICK, SWEEP_PER_BATCH};

use crate::config::{FlowConf, Protocol, VipKey};
use crate::maglev::Table;
use crate::nat::{Endpoint, L4Checksum, NatError, NatType};
use crate::nat64::PortPool;
use crate::packet::{self, IpFamily};
use crate::reverse::Replies;
use crate::xlat::{self, Rfc6052Prefix};
use std::sync::Arc;

/// Largest batch a worker processes at once (VPP's frame size).
pub const MAX_BATCH: usize = 256;

/// "No VIP": a pod that serves no flows in [`FastPodV4`], a packet that
/// was not classified.
pub(crate) const NO_VIP: u32 = u32::MAX;

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
    /// New flows to a VIP without pods get a TCP reset / ICMP port
    /// unreachable (else they are dropped silently).
    pub reject: bool,
    /// Bumped by every flow-table resize; a worker that has not taken the
    /// current generation resizes its table at its next batch.
    pub flow_gen: u64,
    /// Reply state, shared by all workers (see [`crate::reverse`]).
    pub reverse: Replies,
    /// Where nat46 embeds IPv4 clients in IPv6.
    pub nat46_prefix: Rfc6052Prefix,
    /// nat64 source bindings, shared by all workers (see
    /// [`crate::nat64`]); `None` without source addresses.
    pub nat64: Option<Arc<PortPool>>,
    /// Whether any VIP is IPv6 (its flows need the flow tables' key
    /// arrays, see [`crate::flowtable::FlowTable::add_keys`]).
    pub ipv6_vips: bool,
    /// By VIP index; `None` for a free index.
    pub vips: Vec<Option<VipRuntime>>,
    /// By pod index.
    pub pods: Vec<PodRuntime>,
    /// By pod index: `pods` as the IPv4 fast lane reads them.
    pub fast_v4: Vec<FastPodV4>,
    /// By capture prefix index: the VIPs (protocol, port, VIP index) that
    /// share the prefix. Few per prefix, so a scan is fastest.
    pub prefixes: Vec<Vec<(Protocol, u16, u32)>>,
    /// Sorted (node_port, VIP family, protocol, VIP index) for NodePort
    /// traffic (a dual-stack Service has one node port for both families).
    pub node_ports: Vec<(u16, IpFamily, Protocol, u32)>,
}

impl Dataplane {
    /// The VIP serving a packet, given how it was captured.
    #[inline]
    pub fn classify(&self, capture: Capture, family: IpFamily, protocol: u8, dst_port: u16) -> Option<u32> {
        match capture {
            Capture::Prefix(i) => self
                .prefixes
                .get(i as usize)?
                .iter()
                .find(|(proto, port, _)| *port == dst_port && proto.serves(protocol))
                .map(|&(_, _, v)| v),
            Capture::NodePort => {
                let start = self.node_ports.partition_point(|&(p, _, _, _)| p < dst_port);
                self.node_ports[start..]
                    .iter()
                    .take_while(|&&(p, _, _, _)| p == dst_port)
                    .find(|&&(_, f, proto, _)| f == family && proto.serves(protocol))
                    .map(|&(_, _, _, v)| v)
            }
        }
    }

    #[inline(always)]
    pub fn pod_serves(&self, pod: u32) -> bool {
        self.pods.get(pod as usize).is_some_and(|p| p.state.serves_flows())
    }

    /// Where `pod` takes flows of VIP `vip`, if it still serves them (IPv4
    /// flow entries keep no VIP index: an address that moved to another
    /// Service makes them stale).
    /// Whether VIP `v` is a nat64 one (its flows take source bindings).
    #[inline(always)]
    pub fn is_nat64(&self, v: u32) -> bool {
        self.vips.get(v as usize).and_then(Option::as_ref).is_some_and(|x| x.nat == NatType::Nat64)
    }

    #[inline(always)]
    pub fn pod_of_vip(&self, pod: u32, vip: u32) -> Option<&Endpoint> {
        self.pods.get(pod as usize).filter(|p| p.vip == vip && p.state.serves_flows()).map(|p| &p.endpoint)
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
    /// A fragment before its first one, with no room left to hold it.
    HoldFull,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forward {
        vip: u32,
        pod: u32,
        outcome: FlowOutcome,
    },
    /// A new flow to a VIP without pods: the packet is now the TCP reset
    /// or ICMP port unreachable that answers it, addressed to its sender.
    Reject {
        vip: u32,
    },
    Drop(DropReason),
    /// A fragment that came before its datagram's first one: the host
    /// keeps the packet (see [`Batch::hold`]) until the worker releases it
    /// ([`Worker::take_released`]).
    Held,
}

/// A batch of packets as the worker needs them. The VPP node implements
/// it over a frame's buffers; benches and tests over byte vectors.
pub trait Batch {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The packet, from its IP header on: its first buffer's bytes.
    fn packet(&mut self, i: usize) -> &mut [u8];
    /// The packet's whole length, when it goes on beyond
    /// [`packet`](Self::packet) in a chain of buffers (jumbo frames, GSO
    /// super-frames); `None` when its first buffer is all of it.
    fn chain_len(&self, _i: usize) -> Option<usize> {
        None
    }
    fn capture(&self, i: usize) -> Capture;
    /// The one family this batch's packets come in, when the host knows
    /// it (a VPP node of an IPv4 or an IPv6 arc): the worker then tries
    /// that family's fast lane alone. `None`: either. A packet of the
    /// other family is still handled right (by the general parser); the
    /// hint only saves the fast lane's test that would fail.
    fn family(&self) -> Option<IpFamily> {
        None
    }
    /// How the TCP/UDP checksum field is used (offload).
    fn l4_checksum(&self, _i: usize) -> L4Checksum {
        L4Checksum::Full
    }
    /// Re-frames packet `i` in its first buffer: it starts `grow` bytes
    /// earlier (into the buffer's headroom) and is `len` bytes long, at
    /// most what its first buffer holds from the new start. `false` when
    /// the buffer cannot (a chain, too little headroom); nothing changes
    /// then.
    fn reframe(&mut self, _i: usize, _grow: usize, _len: usize) -> bool {
        false
    }
    /// Moves packet `i`'s start by `delta` bytes (negative: into the
    /// headroom in front of it), for a header that grows or shrinks
    /// (nat46/nat64). `false`, and nothing changed, without room.
    fn move_start(&mut self, _i: usize, _delta: isize) -> bool {
        false
    }
    /// Moves packet `i`'s start `by` bytes later and gives its bytes from
    /// there (a header that shrinks: nat64); `None`, and nothing changed,
    /// when it cannot. [`move_start`](Self::move_start) then
    /// [`packet`](Self::packet), unless the host does both at once.
    #[inline(always)]
    fn advance(&mut self, i: usize, by: usize) -> Option<&mut [u8]> {
        if self.move_start(i, by as isize) {
            Some(self.packet(i))
        } else {
            None
        }
    }
    /// Packet `i` is now of family `to` (nat46/nat64), its transport
    /// header right after a plain IP header: metadata that describes its
    /// headers (offload, segmentation) follows.
    fn family_changed(&mut self, _i: usize, _to: IpFamily) {}
    /// Packet `i` was translated towards `pod` (and will be forwarded as a
    /// packet of family `out`): a chance to act on it while it is in cache.
    fn translated(&mut self, _i: usize, _pod: u32, _out: IpFamily) {}
    /// Whether this batch's packets may be traced: the worker then keeps
    /// what [`Worker::batch_original_dst`] reports for every packet (else
    /// not for IPv6 fast-lane hits, whose keys are never built).
    fn tracing(&self) -> bool {
        false
    }
    /// Hints that packet `i`'s metadata will be read soon (out of range:
    /// nothing).
    fn prefetch_meta(&self, _i: usize) {}
    /// Hints that packet `i`'s first bytes will be read soon (its metadata
    /// was hinted earlier; out of range: nothing).
    fn prefetch_data(&self, _i: usize) {}
    /// Whether the host can keep packet `i` past this batch (a fragment
    /// waiting for its first one), and how it names it. `None`: it
    /// cannot, and such a fragment is dropped.
    fn hold(&mut self, _i: usize) -> Option<HoldTicket> {
        None
    }
    /// Who in the host this batch comes from: the owner whose held
    /// fragments the worker gives up (their time over) at this batch.
    fn owner(&self) -> u32 {
        0
    }
}

/// What the reply path did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyVerdict {
    /// A reply of a kp flow; its source is now the Service's.
    Translated { vip: u32 },
    /// A reply of a nat46/nat64 flow, now of the other family (IPv6 if
    /// `v6`) and from the Service.
    TranslatedTo { vip: u32, v6: bool },
    /// Not a kp reply: untouched.
    NotKp,
    /// A fragment before its first one, kept as [`Verdict::Held`] is.
    Held,
}

/// A batch of owned packets: for tests, benches and tools.
#[derive(Debug, Clone, Default)]
pub struct VecBatch {
    pub packets: Vec<Vec<u8>>,
    pub captures: Vec<Capture>,
    /// By packet: the length of a packet whose bytes here are only its
    /// first buffer (as VPP chains big packets); empty or `None`: whole.
    pub chain_lens: Vec<Option<usize>>,
    /// By packet: whether its L4 checksum is a partial (offloaded) sum.
    pub partial: Vec<bool>,
    /// Packets can be held: packet `i`'s handle is `hold_base + i`.
    pub hold_base: Option<u32>,
    /// The batch is traced (see [`Batch::tracing`]).
    pub tracing: bool,
    /// The family the batch says its packets come in (see
    /// [`Batch::family`]).
    pub family: Option<IpFamily>,
}

impl VecBatch {
    pub fn push(&mut self, packet: Vec<u8>, capture: Capture) {
        self.packets.push(packet);
        self.captures.push(capture);
        self.chain_lens.push(None);
        self.partial.push(false);
    }

    /// Adds the first `head` bytes of `packet` as a chained packet's first
    /// buffer (the rest is not kept: kp never reads it), with its L4
    /// checksum full or `partial`.
    pub fn push_chained(&mut self, packet: &[u8], head: usize, partial: bool, capture: Capture) {
        self.packets.push(packet[..head.min(packet.len())].to_vec());
        self.captures.push(capture);
        self.chain_lens.push((head < packet.len()).then_some(packet.len()));
        self.partial.push(partial);
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
    fn family(&self) -> Option<IpFamily> {
        self.family
    }
    fn chain_len(&self, i: usize) -> Option<usize> {
        self.chain_lens.get(i).copied().flatten()
    }
    fn reframe(&mut self, i: usize, grow: usize, len: usize) -> bool {
        if self.chain_len(i).is_some() || len > self.packets[i].len() + grow {
            return false;
        }
        let p = &mut self.packets[i];
        p.splice(0..0, core::iter::repeat_n(0, grow));
        p.truncate(len);
        true
    }
    fn move_start(&mut self, i: usize, delta: isize) -> bool {
        xlat::Frame::move_start(&mut self.packets[i], delta)
    }
    fn l4_checksum(&self, i: usize) -> L4Checksum {
        if self.partial.get(i).copied().unwrap_or(false) {
            L4Checksum::Partial
        } else {
            L4Checksum::Full
        }
    }
    fn hold(&mut self, i: usize) -> Option<HoldTicket> {
        self.hold_base.map(|b| HoldTicket { handle: b + i as u32, owner: 0, tag: 0 })
    }
    fn tracing(&self) -> bool {
        self.tracing
    }
}
