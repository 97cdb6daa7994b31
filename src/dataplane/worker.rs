//! One data-plane thread: its flow table, and the per-packet pipeline over
//! a batch (parse, classify, batched and prefetched flow lookup, Maglev on
//! a miss, insert, DNAT), and the reply path.

use super::{Batch, Capture, Dataplane, DropReason, FlowOutcome, ReplyVerdict, Verdict, MAX_BATCH, NO_VIP};
use crate::config::FlowConf;
use crate::flowtable::{FlowKey, FlowTable, HashSecret, Hit, OutOfMemory, SlotId, SourceNote};
use crate::fragment::{FragKey, FragTarget, Fragments, Released};
use crate::nat::{self, Endpoint, L4Checksum, NatError};
use crate::nat64::{binding_lifetime, Binding, NoteClock, NotesAt, PoolPart, PortPool};
use crate::packet::{self, l4, IpFamily, Parsed};
use crate::refcount::RefCounts;
use crate::reverse::Original;
use crate::snapshot::{Reader, SnapshotCell};
use crate::xlat::{self, Endpoints};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Buckets a worker sweeps per batch, so references held by dead entries
/// are released even in buckets no new flow visits. Kept small (it costs
/// 2-3 clocks a packet at 32): while deleted pods drain, kp's periodic
/// upkeep sweeps a larger slice of every table as well.
pub const SWEEP_PER_BATCH: u32 = 8;

/// Buckets of a replaced flow table a worker moves into the new one per
/// batch (each moved entry is a write at a random place of the new table,
/// so this is kept small; packets of flows not moved yet move themselves).
pub const DRAIN_PER_BATCH: u32 = 4;

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
    /// The batch's IP fragments and ICMP messages (packet numbers),
    /// handled after the rest.
    deferred: [u16; MAX_BATCH],
    /// The packets pass 2 left for pass 3 (packet numbers), so pass 3
    /// costs only what it does: in a frame of hits it is one or two
    /// flows in their second bucket.
    pending: [u16; MAX_BATCH],
    /// By `pending` entry: whether pass 2 found candidates in the first
    /// bucket (an IPv6 flow there is most likely a hit: its second
    /// bucket is not worth loading ahead).
    first_found: [bool; MAX_BATCH],
    /// The batch was traced, so `keys` holds the IPv6 fast lane's keys
    /// too (see `Batch::tracing`).
    kept_keys: bool,
}

/// How pass 1 parsed a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// IPv4 without options, TCP or UDP: key from the header bytes,
    /// `Scratch::parsed` not filled.
    FastV4,
    /// Fully parsed into `Scratch::parsed`, key in `Scratch::keys`.
    General,
    /// IPv6 with TCP/UDP right after the fixed header: id and hash from
    /// the header words, `Scratch::parsed` not filled nor (unless traced)
    /// `Scratch::keys`; an established flow is finished in pass 2 (nat66
    /// and nat64), on fixed offsets.
    FastV6,
    /// Translated in pass 2.
    Done,
    /// Handled after pass 3: an IP fragment, or perhaps an ICMP error.
    Fragment,
    Icmp,
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
    frags: Fragments,
    rejects: RejectBudget,
    resize: Resize,
    /// The tick the data path last tried to allocate IPv6 keys.
    keys_tried: Option<u32>,
    /// The nat64 pool (its generation) and flow timeout this thread's
    /// source notes are of, and how it reads them (notes made before it
    /// took these are not trusted).
    notes: ((u16, u32), NoteClock),
}

/// Where a worker is in the flow-table resizes of `kp conf buckets`.
/// Established flows must survive a resize (and keep their pod, even when
/// Maglev would now choose another), so the old table is not dropped but
/// drained: a packet that misses in the new table takes its entry from the
/// old one, and every batch moves a few buckets more; when the old table
/// is empty it is freed. Meanwhile reply state lives in the old and new
/// shared reply tables, moved along with each entry (see
/// [`crate::reverse::Replies`]).
struct Resize {
    /// The replaced table and the next bucket of it to move.
    draining: Option<(FlowTable, u32)>,
    /// The flow-table generation ([`Dataplane::flow_gen`]) this worker took.
    gen: u64,
    /// Per thread: the generation up to which the thread has nothing left
    /// in older tables (the controller frees old reply tables by it).
    settled: Arc<[AtomicU64]>,
}

/// Rejects (TCP resets, ICMP port unreachables) a thread may send per
/// tick (second): enough to answer every client promptly, too few to make
/// kp an amplifier. Beyond it, packets are dropped (`no-pod`).
pub const REJECTS_PER_TICK: u32 = 1000;

/// This thread's rejects sent in the current tick.
#[derive(Default)]
struct RejectBudget {
    tick: u32,
    sent: u32,
}

impl Worker {
    pub fn new(
        thread: usize,
        cell: &Arc<SnapshotCell<Dataplane>>,
        refs: &Arc<RefCounts>,
        settled: &Arc<[AtomicU64]>,
    ) -> Result<Worker, OutOfMemory> {
        let (flow, gen, ipv6, note_conf) = {
            let dp = cell.load();
            (dp.flow, dp.flow_gen, dp.ipv6_vips, note_conf(&dp))
        };
        settled[thread].store(gen, Ordering::Release);
        let blank = Parsed::default();
        Ok(Worker {
            thread,
            flows: {
                let mut t = FlowTable::new(flow.buckets, flow.timeout)?;
                t.set_timeouts(flow.timeout, flow.embryonic);
                if ipv6 {
                    t.add_keys()?;
                }
                t
            },
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
                deferred: [0; MAX_BATCH],
                pending: [0; MAX_BATCH],
                first_found: [false; MAX_BATCH],
                kept_keys: false,
            }),
            sweep_at: 0,
            frags: Fragments::new(),
            rejects: RejectBudget::default(),
            resize: Resize { draining: None, gen, settled: Arc::clone(settled) },
            keys_tried: None,
            // (No note is older than the table.)
            notes: (note_conf, NoteClock::new(flow.timeout, 0)),
        })
    }

    /// Gives the flow table its IPv6 key array now, if it has none: from
    /// the main thread, with this worker parked, before an IPv6 VIP is
    /// added (so no worker allocates one while packets wait;
    /// [`Worker::process`] does it too, at most once a tick, should IPv6
    /// VIPs exist without it).
    pub fn reserve_ipv6_keys(&mut self) -> Result<(), OutOfMemory> {
        self.flows.add_keys()
    }

    /// Takes the latest flow-table size and timeouts now (from the main
    /// thread before workers start, or under the barrier, so a table that
    /// cannot be allocated refuses the change); otherwise the worker
    /// notices the change at its next batch.
    pub fn adopt_flow_conf(&mut self, now: u32) -> Result<(), OutOfMemory> {
        let Worker { thread, flows, reader, cell, refs, rejects, resize, notes, .. } = self;
        let dp = reader.enter(cell);
        adopt_flow_conf(&mut FlowCtx {
            flows,
            dp: &dp,
            notes: notes.1.at(now),
            refs,
            thread: *thread,
            now,
            rejects,
            resize,
            fragment: None,
        })
    }

    /// Live entries of the table a resize replaced, while there is one (a
    /// full scan: for `show kp`).
    pub fn flows_in_old_table(&self, now: u32) -> Option<usize> {
        self.resize.draining.as_ref().map(|(t, _)| t.live_entries(now))
    }

    /// Live flows, in the current table and in one a resize replaced (a
    /// full scan).
    pub fn live_flows(&self, now: u32) -> usize {
        let draining = self.resize.draining.as_ref().map_or(0, |(t, _)| t.live_entries(now));
        self.flows.live_entries(now) + draining
    }

    /// Whether a replaced flow table is still being drained.
    pub fn draining(&self) -> bool {
        self.resize.draining.is_some()
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
            // IPv4 fast-lane keys were never built; the id is the 5-tuple.
            Lane::FastV4 | Lane::Done if FlowKey::id_is_whole_key(self.scratch.ids[i]) => {
                FlowKey::from_compact(self.scratch.ids[i])
            }
            // An IPv6 fast-lane hit's key was built only if traced.
            Lane::Done if !self.scratch.kept_keys => return None,
            Lane::General | Lane::FastV6 | Lane::FastV4 | Lane::Done => self.scratch.keys[i],
            Lane::Fragment => FlowKey::new(0, &self.scratch.parsed[i]),
            // (An ICMP error's destination is its outer one.)
            Lane::Icmp => return None,
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
    ///
    /// Pass 1 (`Pipeline::start`): parse, classify, hash, prefetch the
    /// bucket. Pass 2 (`Pipeline::finish_fast`): read the bucket; an
    /// established fast-lane flow (IPv4 without options, IPv6 without
    /// extension headers) is finished there. The two run as a software
    /// pipeline: packet `j` starts while packet `j - PIPELINE` finishes, so
    /// a bucket has the time of PIPELINE packets to arrive from memory, and
    /// waiting for memory overlaps with work on other packets. Pass 3
    /// (`finish_general`): everything else, then fragments and ICMP errors
    /// (`finish_deferred`).
    pub fn process<B: Batch>(&mut self, batch: &mut B, now: u32, verdicts: &mut [Verdict]) {
        let n = batch.len().min(MAX_BATCH);
        let Worker {
            thread,
            flows,
            reader,
            cell,
            refs,
            scratch,
            sweep_at,
            frags,
            rejects,
            resize,
            keys_tried,
            notes,
        } = self;
        let thread = *thread;
        let dp = reader.enter(cell);
        let note_conf = note_conf(&dp);
        if notes.0 != note_conf {
            *notes = (note_conf, notes.1.next(dp.flow.timeout, (notes.0 .0, note_conf.0), now));
        }
        let notes = notes.1.at(now);
        if dp.ipv6_vips && !flows.has_keys() && *keys_tried != Some(now) {
            // (Normally done beforehand from the main thread.)
            *keys_tried = Some(now);
            let _ = flows.add_keys();
        }

        // A changed `kp conf` reaches the worker here, between batches (a
        // table that cannot be allocated is tried again next batch).
        if flow_conf_changed(&dp, flows, resize) {
            let _ = adopt_flow_conf(&mut FlowCtx {
                flows,
                dp: &dp,
                notes,
                refs,
                thread,
                now,
                rejects,
                resize,
                fragment: None,
            });
        }

        scratch.kept_keys = batch.tracing();
        let mut pipe = Pipeline {
            batch,
            dp: &dp,
            flows,
            scratch,
            // One length check here spares one per packet below.
            verdicts: &mut verdicts[..n],
            now,
            notes,
            secret: HashSecret::now(),
            nat64_part: dp.nat64.as_deref().map(|pool| pool.part(thread)),
            last_class: u64::MAX,
            last_vip: NO_VIP,
            pending: 0,
            n_deferred: 0,
        };
        // Hashes of the packets whose buckets are prefetched next.
        let mut group = [0u64; PREFETCH_GROUP];
        for j in 0..n + PIPELINE {
            if j < n {
                if let Some(hash) = pipe.start(j) {
                    group[j % PREFETCH_GROUP] = hash;
                }
            }
            // Bucket prefetches go out in groups (see PREFETCH_GROUP). A
            // slot left over from an earlier group (a dropped packet, or
            // the frame's last, partial group) only repeats one.
            if j < n && (j % PREFETCH_GROUP == PREFETCH_GROUP - 1 || j == n - 1) {
                for &hash in &group {
                    pipe.flows.prefetch_bucket(hash);
                }
            }
            if j >= PIPELINE {
                pipe.finish_fast(j - PIPELINE);
            }
        }
        let Pipeline { batch, flows, scratch, verdicts, pending, n_deferred, .. } = pipe;
        let mut ctx = FlowCtx { flows, dp: &dp, notes, refs, thread, now, rejects, resize, fragment: None };
        // Pass 3 only when passes 1 and 2 left something.
        if pending != 0 || n_deferred != 0 {
            finish_general(&mut ctx, batch, scratch, verdicts, pending);
            finish_deferred(&mut ctx, batch, scratch, verdicts, frags, n_deferred);
        }
        frags.expire(now, batch.owner());
        *sweep_at = ctx.sweep(*sweep_at, SWEEP_PER_BATCH);
        if ctx.resize.draining.is_some() {
            ctx.drain(DRAIN_PER_BATCH);
        }
    }

    /// Sweeps up to `buckets` buckets of the flow table, going on from
    /// where the last sweep stopped, releasing what dead entries hold. The
    /// data path sweeps a little per batch; this is for when no packets
    /// come (from the main thread, with this worker parked).
    pub fn sweep_idle(&mut self, buckets: u32, now: u32) {
        let Worker { thread, flows, reader, cell, refs, sweep_at, rejects, resize, notes, .. } = self;
        let thread = *thread;
        // The latest snapshot, as the worker's next batch would see it (an
        // empty batch, as far as the reader's bookkeeping goes).
        let dp = reader.enter(cell);
        let notes = notes.1.at(now);
        let mut ctx = FlowCtx { flows, dp: &dp, notes, refs, thread, now, rejects, resize, fragment: None };
        if flow_conf_changed(&dp, ctx.flows, ctx.resize) {
            let _ = adopt_flow_conf(&mut ctx);
        }
        *sweep_at = ctx.sweep(*sweep_at, buckets);
        ctx.drain(buckets);
    }

    /// The reply path: for each packet of `batch` that is a reply of a kp
    /// flow (from any worker), sets its source back to what the client sent
    /// to. Anything else is left exactly as it was.
    #[allow(clippy::needless_range_loop)] // parallel per-packet arrays
    pub fn process_replies<B: Batch>(&mut self, batch: &mut B, now: u32, verdicts: &mut [ReplyVerdict]) {
        let n = batch.len().min(MAX_BATCH);
        let dp = self.reader.enter(&self.cell);
        let scratch = &mut self.scratch;
        let frags = &mut self.frags;
        for i in 0..n {
            scratch.vip[i] = NO_VIP;
            let p = &mut scratch.parsed[i];
            let len = batch.chain_len(i).unwrap_or(0);
            match packet::parse_chain_into(batch.packet(i), len, p) {
                Ok(()) => {}
                Err(packet::Error::Fragment) => {
                    verdicts[i] = reply_fragment(batch, i, &dp, frags, now);
                    continue;
                }
                Err(packet::Error::UnsupportedProtocol) => {
                    verdicts[i] = reply_icmp_error(batch, i, &dp, now);
                    continue;
                }
                Err(_) => {
                    verdicts[i] = ReplyVerdict::NotKp;
                    continue;
                }
            }
            if let Some(pool) = dp.nat64.as_deref().filter(|_| p.family == IpFamily::V4) {
                if let Some(source) = pool.source_index(p.dst[..4].try_into().unwrap()) {
                    verdicts[i] =
                        reply_nat64(batch, i, p, pool, source, now, binding_lifetime(dp.flow.timeout));
                    continue;
                }
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
            let p = &scratch.parsed[i];
            verdicts[i] = match dp.reverse.lookup(&scratch.keys[i]) {
                None => ReplyVerdict::NotKp,
                Some(o) if vip_family(&dp, o.vip) == Some(p.family) => reply_from_service(batch, i, p, &o),
                Some(o) => reply_nat46(batch, i, p, &o, &dp),
            };
        }
        frags.expire(now, batch.owner());
    }

    /// Held fragments released (their first fragment came: translate them
    /// with [`Released::apply`] and send them on as their datagram) or
    /// given up (their time ran out), since `owner` last took them. The
    /// host takes them after each batch.
    pub fn take_released(&mut self, owner: u32, take: impl FnMut(Released)) {
        self.frags.take_released(owner, take)
    }

    /// Fragments this thread holds for a first fragment still to come.
    pub fn held_fragments(&self) -> usize {
        self.frags.held()
    }
}

/// Passes 1 and 2 of [`Worker::process`] over one batch.
struct Pipeline<'a, B: Batch> {
    batch: &'a mut B,
    dp: &'a Dataplane,
    flows: &'a mut FlowTable,
    scratch: &'a mut Scratch,
    verdicts: &'a mut [Verdict],
    now: u32,
    notes: NotesAt,
    secret: HashSecret,
    /// This thread's part of the nat64 source pool, if there is one.
    nat64_part: Option<PoolPart<'a>>,
    /// The last classification, reused while capture, protocol and port
    /// stay the same (packets of a frame mostly go to one Service).
    last_class: u64,
    last_vip: u32,
    /// Packets left for pass 3, and fragments and ICMP messages for after.
    pending: usize,
    n_deferred: usize,
}

impl<B: Batch> Pipeline<'_, B> {
    /// Pass 1 for packet `i`: parse, classify, hash. IPv4 without options
    /// takes the fast lane: its id and hash come straight from the header
    /// bytes, and `parsed` and `keys` are filled only if it needs the
    /// general path later. IPv6 without extension headers is parsed on
    /// fixed offsets. Returns the hash whose bucket to prefetch; a packet
    /// dropped here gets its verdict and `NO_VIP` instead.
    #[inline(always)]
    fn start(&mut self, i: usize) -> Option<u64> {
        let (batch, dp, scratch) = (&mut *self.batch, self.dp, &mut *self.scratch);
        batch.prefetch_meta(i + PREFETCH_META_AHEAD);
        batch.prefetch_data(i + PREFETCH_DATA_AHEAD);
        let capture = batch.capture(i);
        let family = batch.family();
        let fast_v4 =
            if family == Some(IpFamily::V6) { None } else { packet::parse_v4_fast(batch.packet(i)) };
        let (v, id, hash) = match fast_v4 {
            Some(f) => {
                let v = self.classify(capture, IpFamily::V4, f.protocol, f.dst_port());
                if v == NO_VIP {
                    return self.dropped(i, DropReason::NoVip);
                }
                self.scratch.lane[i] = Lane::FastV4;
                let (id, hash) = FlowKey::v4_id_hash(&f);
                (v, id, hash)
            }
            None => {
                // IPv6 without extension headers on fixed offsets, its id
                // and hash from the header words; else the general parser
                // (perhaps a chain).
                let fast_v6 =
                    if family == Some(IpFamily::V4) { None } else { packet::parse_v6_fast(batch.packet(i)) };
                match fast_v6 {
                    Some(f) => {
                        let v = self.classify(capture, IpFamily::V6, f.protocol, f.dst_port());
                        if v == NO_VIP {
                            return self.dropped(i, DropReason::NoVip);
                        }
                        self.scratch.lane[i] = Lane::FastV6;
                        // The key itself only for traces (pass 3 builds
                        // it from the packet if it needs it).
                        if self.scratch.kept_keys {
                            self.scratch.keys[i] = FlowKey::from_v6_fast(&f, v);
                        }
                        let (id, hash) = FlowKey::v6_id_hash(&f, v, &self.secret);
                        (v, id, hash)
                    }
                    None => {
                        let p = &mut scratch.parsed[i];
                        let len = batch.chain_len(i).unwrap_or(0);
                        if let Err(e) = packet::parse_chain_into(batch.packet(i), len, p) {
                            self.n_deferred +=
                                defer(e, i, &mut scratch.lane[i], &mut scratch.deferred[self.n_deferred]);
                            return self.dropped(i, DropReason::Packet(e));
                        }
                        let (family, protocol, dst_port) = (p.family, p.protocol, p.dst_port);
                        let v = self.classify(capture, family, protocol, dst_port);
                        if v == NO_VIP {
                            return self.dropped(i, DropReason::NoVip);
                        }
                        self.scratch.lane[i] = Lane::General;
                        let key = FlowKey::new(v, &self.scratch.parsed[i]);
                        self.scratch.keys[i] = key;
                        let (id, hash) = key.id_hash();
                        // The general path reads a nat64 flow's binding
                        // (the fast lane's hits go on from the note in
                        // their entry).
                        if family == IpFamily::V6 && dp.is_nat64(v) {
                            if let Some(part) = &self.nat64_part {
                                part.prefetch(hash);
                            }
                        }
                        (v, id, hash)
                    }
                }
            }
        };
        let scratch = &mut *self.scratch;
        scratch.vip[i] = v;
        scratch.hashes[i] = hash;
        scratch.ids[i] = id;
        Some(hash)
    }

    /// [`Dataplane::classify`], reusing the last answer while capture,
    /// family, protocol and port stay the same (packets of a frame mostly
    /// go to one Service). `NO_VIP` for none.
    #[inline(always)]
    fn classify(&mut self, capture: Capture, family: IpFamily, protocol: u8, dst_port: u16) -> u32 {
        let class = class_key(capture, family, protocol, dst_port);
        if class != self.last_class {
            self.last_class = class;
            self.last_vip = self.dp.classify(capture, family, protocol, dst_port).unwrap_or(NO_VIP);
        }
        self.last_vip
    }

    /// Packet `i` is dropped in pass 1 (a deferred one may yet be taken).
    #[inline(always)]
    fn dropped(&mut self, i: usize, why: DropReason) -> Option<u64> {
        self.verdicts[i] = Verdict::Drop(why);
        self.scratch.vip[i] = NO_VIP;
        None
    }

    /// Pass 2 for packet `i`: read its bucket. A fast-lane hit (the
    /// candidate is the flow) on a pod that still serves the VIP is
    /// finished here: nat44, nat66, and nat46 and nat64 but for what their
    /// fast translations leave. Anything else is left for pass 3.
    #[inline(always)]
    fn finish_fast(&mut self, i: usize) {
        let v = self.scratch.vip[i];
        if v == NO_VIP {
            return;
        }
        let (hash, id) = (self.scratch.hashes[i], self.scratch.ids[i]);
        let cands = self.flows.candidates(hash, id, self.now);
        let lane = self.scratch.lane[i];
        // Which fast lane, if any (a batch of one family has only its own).
        let fast_v4 = match self.batch.family() {
            Some(IpFamily::V4) => (lane == Lane::FastV4).then_some(true),
            Some(IpFamily::V6) => (lane == Lane::FastV6).then_some(false),
            None => matches!(lane, Lane::FastV4 | Lane::FastV6).then_some(lane == Lane::FastV4),
        };
        if let (true, Some(v4)) = (cands != 0, fast_v4) {
            let protocol = FlowKey::id_protocol(id);
            // (The fast lanes' IP headers have no options or extensions.)
            let l4_offset = if v4 { packet::ipv4::MIN_HEADER_LEN } else { packet::ipv6::HEADER_LEN };
            let establishes = l4::establishes(self.batch.packet(i), protocol, l4_offset);
            let hit = self.flows.hit(hash, cands, self.now, establishes);
            let verdict = match hit {
                Some(h) if v4 => self.finish_hit_v4(i, v, h.pod, protocol),
                Some(h) => self.finish_hit_v6(i, v, h, protocol),
                None => None,
            };
            if let Some(verdict) = verdict {
                self.verdicts[i] = verdict;
                self.scratch.lane[i] = Lane::Done;
                return;
            }
        }
        self.scratch.pending[self.pending] = i as u16;
        self.scratch.first_found[self.pending] = cands != 0;
        self.pending += 1;
    }

    /// A fast-lane hit of packet `i` (to VIP `v`) on `pod`, finished if the
    /// pod still serves this VIP: DNAT to an IPv4 pod, or nat46 to an IPv6
    /// one (the fast lane's packets are IPv4, so an IPv6 pod of their VIP
    /// is a nat46 one). `None` leaves the packet to pass 3 (a stale entry,
    /// or what the fast translation leaves to the general one).
    #[inline(always)]
    fn finish_hit_v4(&mut self, i: usize, v: u32, pod: u32, protocol: u8) -> Option<Verdict> {
        let dp = self.dp;
        let l4 = self.batch.l4_checksum(i);
        // The entry keeps no VIP index: its pod must serve this VIP (and
        // not be flushed).
        let fast = dp.fast_v4.get(pod as usize)?;
        if fast.vip == v {
            return Some(match nat::dnat_v4(self.batch.packet(i), protocol, fast.addr, fast.port, l4) {
                Ok(()) => {
                    self.batch.translated(i, pod, IpFamily::V4);
                    Verdict::Forward { vip: v, pod, outcome: FlowOutcome::Hit }
                }
                Err(e) => Verdict::Drop(DropReason::Nat(e)),
            });
        }
        let to = dp.pod_of_vip(pod, v).filter(|to| to.family == IpFamily::V6)?;
        let src = dp.nat46_prefix.embed(FlowKey::id_source_v4(self.scratch.ids[i]));
        if !xlat::v4_to_v6_fast(&mut BatchFrame(self.batch, i), protocol, &src, &to.addr, to.port, l4) {
            return None;
        }
        self.batch.translated(i, pod, IpFamily::V6);
        Some(Verdict::Forward { vip: v, pod, outcome: FlowOutcome::Hit })
    }

    /// A fast-lane hit of IPv6 packet `i` (to VIP `v`) on a pod that still
    /// serves the VIP: nat66's DNAT, or nat64's translation on fixed
    /// offsets from the source the entry's trusted note gives. `None`
    /// leaves the packet to pass 3: a stale entry, a note not to be
    /// trusted (its binding is read, confirmed or made there, and the note
    /// renewed: once in a while per flow), or what the fixed-offset
    /// rewrite leaves to the general one.
    #[inline(always)]
    fn finish_hit_v6(
        &mut self,
        i: usize,
        v: u32,
        Hit { pod, note, .. }: Hit,
        protocol: u8,
    ) -> Option<Verdict> {
        let dp = self.dp;
        let to = *dp.pod_of_vip(pod, v)?;
        let l4 = self.batch.l4_checksum(i);
        if to.family == IpFamily::V6 {
            nat::dnat_v6(self.batch.packet(i), protocol, &to.addr, to.port, l4).ok()?;
            self.batch.translated(i, pod, IpFamily::V6);
            return Some(Verdict::Forward { vip: v, pod, outcome: FlowOutcome::Hit });
        }
        // The source from a trusted note, in place; without one (its
        // binding to be confirmed, or made), pass 3 takes the packet.
        let probe = self.notes.trusted(note)?;
        let (addr, port) = self.nat64_part.as_ref()?.probed(self.scratch.hashes[i], probe)?;
        let to = xlat::WireV4::new(addr, port, to.addr[..4].try_into().unwrap(), to.port);
        if !xlat::v6_to_v4_fast(&mut BatchFrame(self.batch, i), protocol, to, l4) {
            return None;
        }
        self.batch.translated(i, pod, IpFamily::V4);
        Some(Verdict::Forward { vip: v, pod, outcome: FlowOutcome::Hit })
    }
}

/// Pass 3: everything passes 1 and 2 left goes the general way: confirm,
/// Maglev for new flows and flushed pods, insert, rewrite.
fn finish_general<B: Batch>(
    ctx: &mut FlowCtx,
    batch: &mut B,
    scratch: &mut Scratch,
    verdicts: &mut [Verdict],
    pending: usize,
) {
    // A packet here missed in its first bucket (or is not IPv4 fast-lane
    // traffic): its second bucket is read next, so its load starts a few
    // packets ahead (a flood of new flows pays that miss on every packet).
    const AHEAD: usize = 8;
    let prefetch_other = |flows: &FlowTable, scratch: &Scratch, k: usize| {
        if !scratch.first_found[k] {
            flows.prefetch_other_bucket(scratch.hashes[usize::from(scratch.pending[k])]);
        }
    };
    for k in 0..AHEAD.min(pending) {
        prefetch_other(ctx.flows, scratch, k);
    }
    for k in 0..pending {
        if k + AHEAD < pending {
            prefetch_other(ctx.flows, scratch, k + AHEAD);
        }
        let i = usize::from(scratch.pending[k]);
        let v = scratch.vip[i];
        if v == NO_VIP || scratch.lane[i] == Lane::Done {
            continue;
        }
        let at = (scratch.hashes[i], scratch.ids[i]);
        match scratch.lane[i] {
            // The fast lanes skipped the full parse; do it now (it succeeds:
            // they only take what `parse` accepts).
            Lane::FastV4 => {
                if let Err(e) = packet::parse_into(batch.packet(i), &mut scratch.parsed[i]) {
                    verdicts[i] = Verdict::Drop(DropReason::Packet(e));
                    continue;
                }
                scratch.keys[i] = FlowKey::new(v, &scratch.parsed[i]);
            }
            Lane::FastV6 => {
                if !packet::parse_v6_fast_into(batch.packet(i), &mut scratch.parsed[i]) {
                    verdicts[i] = Verdict::Drop(DropReason::Packet(packet::Error::Truncated));
                    continue;
                }
                scratch.keys[i] = FlowKey::new(v, &scratch.parsed[i]);
            }
            _ => {}
        }
        verdicts[i] = ctx.general(batch, i, &scratch.parsed[i], v, &scratch.keys[i], at);
    }
}

/// After pass 3, fragments in arrival order: a first fragment (it has the
/// ports) takes the general path and decides where its datagram goes; the
/// others follow it. ICMP errors about a flow go to its pod.
fn finish_deferred<B: Batch>(
    ctx: &mut FlowCtx,
    batch: &mut B,
    scratch: &mut Scratch,
    verdicts: &mut [Verdict],
    frags: &mut Fragments,
    n_deferred: usize,
) {
    for &i in &scratch.deferred[..n_deferred] {
        let i = usize::from(i);
        verdicts[i] = if scratch.lane[i] == Lane::Fragment {
            ctx.fragment(batch, i, frags, &mut scratch.parsed[i], &mut scratch.vip[i])
        } else {
            ctx.icmp_error(batch, i, &mut scratch.vip[i]).unwrap_or(verdicts[i])
        };
    }
}

/// What a thread's nat64 source notes depend on: the pool's generation (0
/// without one) and the flow timeout (see `NoteClock::next`).
#[inline(always)]
fn note_conf(dp: &Dataplane) -> (u16, u32) {
    (dp.nat64.as_deref().map_or(0, PortPool::generation), dp.flow.timeout)
}

/// The family of VIP `v`'s own addresses.
#[inline(always)]
fn vip_family(dp: &Dataplane, v: u32) -> Option<IpFamily> {
    dp.vips.get(v as usize)?.as_ref().map(|x| x.nat.vip_family())
}

/// A reply of a nat46 flow (pod -> the client's embedded address) becomes
/// the IPv4 packet the client expects: from the VIP (or node address) and
/// port, to its own address.
#[cold]
fn reply_nat46<B: Batch>(batch: &mut B, i: usize, p: &Parsed, o: &Original, dp: &Dataplane) -> ReplyVerdict {
    let Some(client) = dp.nat46_prefix.extract(&p.dst) else { return ReplyVerdict::NotKp };
    let mut dst = [0u8; 16];
    dst[..4].copy_from_slice(&client);
    let eps = Endpoints { src: o.addr, src_port: o.port, dst, dst_port: p.dst_port };
    let l4 = batch.l4_checksum(i);
    match xlat::v6_to_v4(&mut BatchFrame(batch, i), p, &eps, l4) {
        Ok(()) => ReplyVerdict::TranslatedTo { vip: o.vip, v6: false },
        Err(_) => ReplyVerdict::NotKp,
    }
}

/// A nat64 flow's endpoints in IPv4: from its source address and port to
/// its pod.
#[inline(always)]
fn nat64_endpoints(addr: [u8; 4], port: u16, to: &Endpoint) -> Endpoints {
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&addr);
    Endpoints { src, src_port: port, dst: to.addr, dst_port: to.port }
}

/// A reply to a nat64 source address and port: the client's IPv6 packet,
/// from the VIP (or node address) and port it sent to.
#[cold]
fn reply_nat64<B: Batch>(
    batch: &mut B,
    i: usize,
    p: &Parsed,
    pool: &crate::nat64::PortPool,
    source: u32,
    now: u32,
    timeout: u32,
) -> ReplyVerdict {
    let Some(b) = pool.lookup_reply(source, p, now, timeout) else {
        return ReplyVerdict::NotKp;
    };
    let eps = Endpoints { src: b.service, src_port: b.service_port, dst: b.client, dst_port: b.client_port };
    let l4 = batch.l4_checksum(i);
    let whole = batch.chain_len(i).is_none();
    match xlat::v4_to_v6(&mut BatchFrame(batch, i), p, &eps, l4, whole) {
        Ok(()) => ReplyVerdict::TranslatedTo { vip: b.vip, v6: true },
        Err(_) => ReplyVerdict::NotKp,
    }
}

/// What the per-packet slow path works on: this thread's flow table and
/// reference counts, the batch's snapshot and tick.
struct FlowCtx<'a> {
    flows: &'a mut FlowTable,
    dp: &'a Dataplane,
    /// How this thread reads nat64 source notes this batch.
    notes: NotesAt,
    refs: &'a RefCounts,
    thread: usize,
    now: u32,
    rejects: &'a mut RejectBudget,
    resize: &'a mut Resize,
    /// The packet is this first fragment of its datagram (what a
    /// translation across families needs to know).
    fragment: Option<packet::Fragment>,
}

impl FlowCtx<'_> {
    /// The path for everything but an established fast-lane flow, at the
    /// key's (hash, compact id) from pass 1: look up again (an earlier
    /// packet of this batch may have just inserted this very flow), both
    /// buckets and a draining old table, Maglev for new flows
    /// (and flows whose pod was flushed), insert, reply state, and the
    /// rewrite for any family.
    #[inline(never)]
    fn general<B: Batch>(
        &mut self,
        batch: &mut B,
        i: usize,
        parsed: &Parsed,
        v: u32,
        key: &FlowKey,
        (hash, id): (u64, u128),
    ) -> Verdict {
        let (dp, now) = (self.dp, self.now);
        let establishes = l4::establishes(batch.packet(i), parsed.protocol, usize::from(parsed.l4_offset));
        let lookup = |flows: &mut FlowTable| {
            let cands = flows.candidates(hash, id, now);
            flows.hit(hash, cands, now, establishes).or_else(|| flows.hit_other(hash, id, now, establishes))
        };
        let mut hit = lookup(self.flows);
        if hit.is_none() && self.resize.draining.is_some() && self.move_from_old_table(key) {
            hit = lookup(self.flows);
        }
        // The flow's entry, if it has one (nat64 notes its source there).
        let mut entry = hit.map(|h| h.slot);
        let (pod, outcome) = match hit {
            // IPv4 entries keep no VIP index: a pod of another VIP (the
            // address now belongs to a different Service) makes the entry
            // stale.
            Some(Hit { pod, .. }) if dp.pod_of_vip(pod, v).is_some() => (pod, FlowOutcome::Hit),
            stale_or_miss => {
                let vip = dp.vips[v as usize].as_ref().expect("classified VIPs exist");
                // The Maglev choice must not depend on node-local indices,
                // so ECMP peers pick the same pod.
                let Some(pod) = vip.table.lookup(tuple_hash(parsed)) else {
                    if let Some(h) = stale_or_miss {
                        let gone = self.flows.remove(h.slot);
                        self.forget(gone);
                    }
                    return self.no_endpoint(batch, i, parsed, v);
                };
                let original = Original { addr: parsed.dst, port: parsed.dst_port, vip: v };
                let to = &dp.pods[pod as usize].endpoint;
                // The entry the flow had (its pod was flushed: it moves on)
                // or the one it displaces; no entry at all if its bucket is
                // full.
                let replaced = match stale_or_miss {
                    Some(h) => Some(Some((self.flows.repoint(h.slot, pod, now), *key))),
                    None => self.flows.insert(key, hash, pod, now).ok().map(|(slot, evicted)| {
                        entry = Some(slot);
                        evicted
                    }),
                };
                match replaced {
                    Some(old) => {
                        self.forget(old);
                        self.refs.add(self.thread, pod, 1);
                        if let Some(reply) = reply_key(dp, key, to) {
                            dp.reverse.insert(&reply, original);
                        }
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
            self.translate(batch, i, parsed, key, &to, (hash, entry), l4)
        };
        match done {
            Ok(()) => {
                batch.translated(i, pod, to.family);
                Verdict::Forward { vip: v, pod, outcome }
            }
            Err(e) => Verdict::Drop(DropReason::Nat(e)),
        }
    }

    /// A nat64 flow's source address and port in this thread's part of
    /// the pool, on the general path (the fast lane reads a trusted note
    /// itself, see `finish_hit_v6`, and leaves the rest here). From the
    /// note in its `entry` (if it has one) when its binding was confirmed
    /// (and stamped live) lately enough to go on without reading it: a
    /// binding outlives its flow's last confirmation by as long as the note
    /// is trusted, so it lives as long as the flow (see
    /// `binding_lifetime`); the note says which of the flow's probe slots it
    /// is, so the address and port follow from the hash. Else from its
    /// binding (made if it has none) for the flow's `key`, then noted for
    /// the flow's next packets.
    fn nat64_source(
        &mut self,
        key: &FlowKey,
        to: &Endpoint,
        (hash, entry): (u64, Option<(SlotId, SourceNote)>),
    ) -> Result<([u8; 4], u16), NatError> {
        let pool = self.dp.nat64.as_deref().ok_or(NatError::PortsExhausted)?;
        let part = pool.part(self.thread);
        if let Some(probed) = entry.and_then(|(_, note)| part.probed(hash, self.notes.trusted(note)?)) {
            return Ok(probed);
        }
        let (service, service_port) = key.original_dst();
        let b = Binding {
            client: key.src(),
            client_port: key.src_port(),
            service,
            service_port,
            vip: key.vip(),
            pod: to.addr[..4].try_into().unwrap(),
            pod_port: to.port,
            protocol: key.protocol(),
        };
        let bound = part.bind(&b, hash, self.now, binding_lifetime(self.dp.flow.timeout));
        if let Some((slot, _)) = entry {
            // A failed confirmation leaves no note, so no note outlives what
            // its epoch bits can tell (see `NoteClock`).
            let note = bound.map_or(SourceNote::default(), |(_, probe)| self.notes.note(probe));
            self.flows.set_source_note(slot, note);
        }
        bound.map(|(source, _)| source)
    }

    /// nat46 and nat64: the packet becomes one of the pod's family, from
    /// the client's embedded IPv6 address (nat46) or from a nat64 source
    /// address and port bound to the flow (nat64; noted in the flow's
    /// `entry`, if it has one).
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn translate<B: Batch>(
        &mut self,
        batch: &mut B,
        i: usize,
        p: &Parsed,
        key: &FlowKey,
        to: &Endpoint,
        (hash, entry): (u64, Option<SlotId>),
        l4: L4Checksum,
    ) -> Result<(), NatError> {
        let dp = self.dp;
        let whole = batch.chain_len(i).is_none();
        let fragment = self.fragment;
        let mut frame = BatchFrame(batch, i);
        match p.family {
            IpFamily::V4 => {
                let src = dp.nat46_prefix.embed(p.src[..4].try_into().unwrap());
                let eps = Endpoints { src, src_port: p.src_port, dst: to.addr, dst_port: to.port };
                match fragment {
                    Some(f) => xlat::fragment_to_other_family(&mut frame, &f, &eps, l4)?,
                    None => xlat::v4_to_v6(&mut frame, p, &eps, l4, whole)?,
                }
            }
            IpFamily::V6 => {
                // (An established flow here, from its second bucket or a
                // fragment's, may go on from its note; a new flow's entry
                // gets one for its second packet.)
                let entry = entry.map(|slot| (slot, self.flows.source_note(slot)));
                let (addr, port) = self.nat64_source(key, to, (hash, entry))?;
                let eps = nat64_endpoints(addr, port, to);
                match fragment {
                    Some(f) => xlat::fragment_to_other_family(&mut frame, &f, &eps, l4)?,
                    None => xlat::v6_to_v4(&mut frame, p, &eps, l4)?,
                }
            }
        }
        Ok(())
    }

    /// An IP fragment. The first (with the ports) goes the general way and
    /// records where its datagram went; the others follow that record,
    /// their destination address rewritten (their checksum is in the first
    /// fragment). One whose first fragment was not seen is held for it.
    #[cold]
    fn fragment<B: Batch>(
        &mut self,
        batch: &mut B,
        i: usize,
        frags: &mut Fragments,
        parsed: &mut Parsed,
        vip_of: &mut u32,
    ) -> Verdict {
        let len = batch.chain_len(i).unwrap_or(0);
        let f = match packet::parse_fragment(batch.packet(i), len) {
            Ok(f) => f,
            Err(e) => return Verdict::Drop(DropReason::Packet(e)),
        };
        *parsed = f.parsed;
        let key = FragKey::of(&f, false);
        if !f.first {
            return match frags.follow(&key, self.now) {
                Some(t) if self.dp.pod_of_vip(t.pod, t.vip).is_some() => {
                    match t.apply_to(&mut BatchFrame(batch, i), parsed.family, false, Some(&f)) {
                        Ok(out) => {
                            batch.translated(i, t.pod, out);
                            *vip_of = t.vip;
                            Verdict::Forward { vip: t.vip, pod: t.pod, outcome: FlowOutcome::Hit }
                        }
                        Err(e) => Verdict::Drop(DropReason::Nat(e)),
                    }
                }
                Some(_) => Verdict::Drop(DropReason::Packet(packet::Error::Fragment)),
                None => hold(batch, i, frags, key, self.now),
            };
        }
        self.fragment = Some(f);
        let verdict = self.first_fragment(batch, i, parsed, vip_of);
        self.fragment = None;
        match verdict {
            Verdict::Forward { vip, pod, .. } => {
                let to = self.dp.pods[pod as usize].endpoint;
                // Across families the source changed too: as translated.
                let cross = (to.family != parsed.family).then(|| source_of(batch.packet(i), to.family));
                // (Full: the datagram's other fragments will be dropped.)
                frags.first_seen(key, FragTarget { vip, pod, addr: to.addr, cross }, self.now);
            }
            _ => frags.first_refused(key, self.now),
        }
        verdict
    }

    /// A datagram's first fragment, as any packet.
    fn first_fragment<B: Batch>(
        &mut self,
        batch: &mut B,
        i: usize,
        parsed: &Parsed,
        vip_of: &mut u32,
    ) -> Verdict {
        let Some(v) = self.dp.classify(batch.capture(i), parsed.family, parsed.protocol, parsed.dst_port)
        else {
            return Verdict::Drop(DropReason::NoVip);
        };
        *vip_of = v;
        let flow = FlowKey::new(v, parsed);
        let (id, hash) = flow.id_hash();
        self.general(batch, i, parsed, v, &flow, (hash, id))
    }

    /// An ICMP error to a VIP (or a NodePort address) about a packet the
    /// Service sent a client (a reply: VIP:port -> client): it goes to the
    /// flow's pod, as if the pod's own packet had caused it. The pod is the
    /// one in this thread's flow table, or else the one Maglev gives the
    /// flow, if the reply table confirms that the flow is the pod's. `None`:
    /// not such an error (the packet's first verdict stands).
    #[cold]
    fn icmp_error<B: Batch>(&mut self, batch: &mut B, i: usize, vip_of: &mut u32) -> Option<Verdict> {
        let len = batch.chain_len(i).unwrap_or(0);
        let e = packet::icmp_error::parse(batch.packet(i), len).ok()?;
        let dp = self.dp;
        let v = dp.classify(batch.capture(i), e.family, e.protocol, e.inner_src_port)?;
        *vip_of = v;
        // The flow's own direction: client -> VIP.
        let forward = e.quoted_reversed();
        let key = FlowKey::new(v, &forward);
        let known = self.flows.lookup(&key, self.now).map(|h| h.pod);
        let vip = dp.vips[v as usize].as_ref()?;
        let candidate = known.or_else(|| vip.table.lookup(tuple_hash(&forward)))?;
        let to = *dp.pod_of_vip(candidate, v)?;
        if to.family != e.family {
            return Some(self.icmp_error_xlat(batch, i, &e, &key, v, candidate, &to));
        }
        // The flow must be the pod's (its replies are known to come from it).
        let original = dp.reverse.lookup(&key.reply_key(&to.addr, to.port))?;
        if original.vip != v {
            return None;
        }
        let rw = nat::IcmpRewrite { outer_dst: Some(to.addr), inner_src: Some(to), ..Default::default() };
        Some(match nat::translate_icmp_error(batch.packet(i), &e, &rw) {
            Ok(()) => {
                batch.translated(i, candidate, to.family);
                Verdict::Forward { vip: v, pod: candidate, outcome: FlowOutcome::Hit }
            }
            Err(err) => Verdict::Drop(DropReason::Nat(err)),
        })
    }

    /// An ICMP error to a nat46/nat64 VIP about a reply (VIP -> client)
    /// goes to the pod, about what the pod sent: for nat46 to the client's
    /// embedded address, from the embedded address of whoever sent the
    /// error; for nat64 to the flow's source address and port, from that
    /// address (the translator's, as RFC 6146 has it).
    #[cold]
    #[allow(clippy::too_many_arguments)]
    fn icmp_error_xlat<B: Batch>(
        &mut self,
        batch: &mut B,
        i: usize,
        e: &packet::icmp_error::IcmpError,
        key: &FlowKey,
        v: u32,
        pod: u32,
        to: &Endpoint,
    ) -> Verdict {
        let dp = self.dp;
        let unsupported = Verdict::Drop(DropReason::Nat(NatError::TranslationNotSupported));
        let x = if e.family == IpFamily::V4 {
            // The flow's reply state must say the pod answers it.
            let Some(original) = reply_key(dp, key, to).and_then(|k| dp.reverse.lookup(&k)) else {
                return unsupported;
            };
            if original.vip != v {
                return unsupported;
            }
            let embed = |a: &[u8; 16]| dp.nat46_prefix.embed(a[..4].try_into().unwrap());
            let inner = Endpoints {
                src: to.addr,
                src_port: to.port,
                dst: embed(&e.inner_dst),
                dst_port: e.inner_dst_port,
            };
            xlat::IcmpXlat { outer_src: embed(&e.src), outer_dst: to.addr, inner }
        } else {
            // The flow's binding must be live.
            let Some(pool) = dp.nat64.as_deref() else { return unsupported };
            let b = Binding {
                client: e.inner_dst,
                client_port: e.inner_dst_port,
                service: e.inner_src,
                service_port: e.inner_src_port,
                vip: v,
                pod: to.addr[..4].try_into().unwrap(),
                pod_port: to.port,
                protocol: e.protocol,
            };
            let Some((addr, port)) =
                pool.find_flow(&b, key.hash(), self.now, binding_lifetime(dp.flow.timeout))
            else {
                return unsupported;
            };
            let mut source = [0u8; 16];
            source[..4].copy_from_slice(&addr);
            let inner = Endpoints { src: to.addr, src_port: to.port, dst: source, dst_port: port };
            xlat::IcmpXlat { outer_src: source, outer_dst: to.addr, inner }
        };
        match rebuild_icmp_xlat(batch, i, e, &x) {
            Ok(family) => {
                batch.translated(i, pod, family);
                Verdict::Forward { vip: v, pod, outcome: FlowOutcome::Hit }
            }
            Err(err) => Verdict::Drop(DropReason::Nat(err)),
        }
    }

    /// A new flow to a VIP with no pod taking new flows: answered as
    /// kube-proxy does (a TCP reset; for UDP, ICMP port unreachable),
    /// within this thread's budget, unless `kp conf reject off`.
    #[cold]
    fn no_endpoint<B: Batch>(&mut self, batch: &mut B, i: usize, parsed: &Parsed, v: u32) -> Verdict {
        use crate::packet::reject;
        let drop = Verdict::Drop(DropReason::NoPod);
        if !self.dp.reject {
            return drop;
        }
        if self.rejects.tick != self.now {
            *self.rejects = RejectBudget { tick: self.now, sent: 0 };
        }
        if self.rejects.sent >= REJECTS_PER_TICK || batch.chain_len(i).is_some() {
            return drop;
        }
        let answered = match parsed.protocol {
            packet::proto::TCP => match reject::tcp_reset(batch.packet(i), parsed) {
                Some(len) => batch.reframe(i, 0, len),
                None => false,
            },
            _ => {
                let grow = reject::icmp_header_len(parsed.family);
                let quote = reject::icmp_quote_len(parsed.family, batch.packet(i).len());
                batch.reframe(i, grow, grow + quote) && {
                    reject::port_unreachable(batch.packet(i), parsed);
                    true
                }
            }
        };
        if !answered {
            return drop;
        }
        self.rejects.sent += 1;
        Verdict::Reject { vip: v }
    }

    /// A flow entry went away: drop its pod reference and its reply state.
    #[inline(always)]
    fn forget(&self, entry: Option<(u32, FlowKey)>) {
        forget(entry, self.thread, self.refs, self.dp)
    }

    /// A packet missed in a freshly resized table: its flow may still be
    /// in the old one. Returns whether it was moved over.
    #[cold]
    fn move_from_old_table(&mut self, key: &FlowKey) -> bool {
        let Some((old, _)) = self.resize.draining.as_mut() else { return false };
        match old.take(key, self.now) {
            Some((pod, expiry)) => self.move_entry(key, pod, expiry),
            None => false,
        }
    }

    /// Puts an entry taken from a replaced table into the current one,
    /// with its pod, expiry and reply state; an expired entry, or one whose
    /// bucket is full of live flows, ends instead. Returns whether it moved.
    fn move_entry(&mut self, key: &FlowKey, pod: u32, expiry: u32) -> bool {
        if expiry <= self.now {
            self.forget(Some((pod, *key)));
            return false;
        }
        match self.flows.insert_until(key, key.hash(), pod, self.now, expiry) {
            Ok((_, evicted)) => {
                self.forget(evicted);
                let dp = self.dp;
                if let Some(reply) = dp.pods.get(pod as usize).and_then(|p| reply_key(dp, key, &p.endpoint)) {
                    // A full bucket leaves the replies untranslated, as for
                    // a new flow.
                    dp.reverse.adopt(&reply);
                }
                true
            }
            Err(_) => {
                self.forget(Some((pod, *key)));
                false
            }
        }
    }

    /// Moves `count` more buckets of a replaced table into the current
    /// one; frees the old table when it is empty.
    fn drain(&mut self, count: u32) {
        let Some((mut old, next)) = self.resize.draining.take() else { return };
        let end = next.saturating_add(count).min(old.n_buckets());
        for bi in next..end {
            old.drain_bucket(bi, |key, pod, expiry| {
                self.move_entry(key, pod, expiry);
            });
        }
        if end < old.n_buckets() {
            self.resize.draining = Some((old, end));
        } else {
            self.resize.settled[self.thread].store(self.resize.gen, Ordering::Release);
        }
    }

    /// Sweeps `count` buckets from `from`: entries expired or of pods that
    /// no longer serve flows go, with their references and reply state.
    /// Returns where the next sweep starts.
    fn sweep(&mut self, from: u32, count: u32) -> u32 {
        let (dp, thread, refs) = (self.dp, self.thread, self.refs);
        self.flows.sweep(
            from,
            count,
            self.now,
            |p| !dp.pod_serves(p),
            |p, k| forget(Some((p, *k)), thread, refs, dp),
        )
    }
}

/// Pass 1 could not parse packet `i` for `e`: a fragment, or what may be
/// an ICMP error, is kept (in `slot`) for after pass 3. Returns 1 if so.
#[cold]
fn defer(e: packet::Error, i: usize, lane: &mut Lane, slot: &mut u16) -> usize {
    *lane = match e {
        packet::Error::Fragment => Lane::Fragment,
        packet::Error::UnsupportedProtocol => Lane::Icmp,
        _ => return 0,
    };
    *slot = i as u16;
    1
}

/// The source address of an IP header of family `family` (an IPv4 one in
/// the first four bytes).
fn source_of(pkt: &[u8], family: IpFamily) -> [u8; 16] {
    let mut a = [0u8; 16];
    match family {
        IpFamily::V4 => a[..4].copy_from_slice(&pkt[12..16]),
        IpFamily::V6 => a.copy_from_slice(&pkt[8..24]),
    }
    a
}

/// Holds fragment `i` (its first fragment is still to come), if the host
/// can and there is room.
#[cold]
fn hold<B: Batch>(batch: &mut B, i: usize, frags: &mut Fragments, key: FragKey, now: u32) -> Verdict {
    match batch.hold(i) {
        Some(ticket) if frags.hold(key, ticket, now) => Verdict::Held,
        Some(_) => Verdict::Drop(DropReason::HoldFull),
        None => Verdict::Drop(DropReason::Packet(packet::Error::Fragment)),
    }
}

/// A reply that is an IP fragment: the first (with the ports) is looked up
/// and translated as any reply, and records its datagram; the others get
/// the recorded source address.
#[cold]
fn reply_fragment<B: Batch>(
    batch: &mut B,
    i: usize,
    dp: &Dataplane,
    frags: &mut Fragments,
    now: u32,
) -> ReplyVerdict {
    let len = batch.chain_len(i).unwrap_or(0);
    let Ok(f) = packet::parse_fragment(batch.packet(i), len) else { return ReplyVerdict::NotKp };
    let p = &f.parsed;
    let key = FragKey::of(&f, true);
    if !f.first {
        let Some(t) = frags.follow(&key, now) else {
            return match hold(batch, i, frags, key, now) {
                Verdict::Held => ReplyVerdict::Held,
                _ => ReplyVerdict::NotKp,
            };
        };
        if !t.is_kp() {
            return ReplyVerdict::NotKp;
        }
        return match t.apply_to(&mut BatchFrame(batch, i), p.family, true, Some(&f)) {
            Ok(out) if out == p.family => ReplyVerdict::Translated { vip: t.vip },
            Ok(out) => ReplyVerdict::TranslatedTo { vip: t.vip, v6: out == IpFamily::V6 },
            Err(_) => ReplyVerdict::NotKp,
        };
    }
    let (verdict, target) = first_reply_fragment(batch, i, dp, &f, now);
    match target {
        Some(t) if verdict != ReplyVerdict::NotKp => {
            frags.first_seen(key, t, now);
        }
        _ => frags.first_refused(key, now),
    }
    verdict
}

/// A reply's first fragment, translated as any reply (across families as
/// a fragment, RFC 7915 §4.1/§5.1.1), and the record its datagram's other
/// fragments follow.
fn first_reply_fragment<B: Batch>(
    batch: &mut B,
    i: usize,
    dp: &Dataplane,
    f: &packet::Fragment,
    now: u32,
) -> (ReplyVerdict, Option<FragTarget>) {
    let p = &f.parsed;
    let l4 = batch.l4_checksum(i);
    // To a nat64 source address: the client's IPv6 datagram.
    if let Some(pool) = dp.nat64.as_deref().filter(|_| p.family == IpFamily::V4) {
        if let Some(source) = pool.source_index(p.dst[..4].try_into().unwrap()) {
            let Some(b) = pool.lookup_reply(source, p, now, binding_lifetime(dp.flow.timeout)) else {
                return (ReplyVerdict::NotKp, None);
            };
            let to = Endpoints {
                src: b.service,
                src_port: b.service_port,
                dst: b.client,
                dst_port: b.client_port,
            };
            return match xlat::fragment_to_other_family(&mut BatchFrame(batch, i), f, &to, l4) {
                Ok(()) => (
                    ReplyVerdict::TranslatedTo { vip: b.vip, v6: true },
                    Some(FragTarget { vip: b.vip, pod: 0, addr: b.client, cross: Some(b.service) }),
                ),
                Err(_) => (ReplyVerdict::NotKp, None),
            };
        }
    }
    let Some(o) = dp.reverse.lookup(&FlowKey::new(0, p)) else { return (ReplyVerdict::NotKp, None) };
    if vip_family(dp, o.vip) == Some(p.family) {
        let verdict = reply_from_service(batch, i, p, &o);
        return (verdict, Some(FragTarget { vip: o.vip, pod: 0, addr: o.addr, cross: None }));
    }
    // A nat46 flow's reply, to the client's embedded address.
    let Some(client) = dp.nat46_prefix.extract(&p.dst) else { return (ReplyVerdict::NotKp, None) };
    let mut dst = [0u8; 16];
    dst[..4].copy_from_slice(&client);
    let to = Endpoints { src: o.addr, src_port: o.port, dst, dst_port: p.dst_port };
    match xlat::fragment_to_other_family(&mut BatchFrame(batch, i), f, &to, l4) {
        Ok(()) => (
            ReplyVerdict::TranslatedTo { vip: o.vip, v6: false },
            Some(FragTarget { vip: o.vip, pod: 0, addr: dst, cross: Some(o.addr) }),
        ),
        Err(_) => (ReplyVerdict::NotKp, None),
    }
}

/// A reply of the flow `o` (packet `i`, parsed as `p`) gets its source
/// back to what the client sent to: the VIP (or node address) and port.
#[inline(always)]
fn reply_from_service<B: Batch>(batch: &mut B, i: usize, p: &Parsed, o: &Original) -> ReplyVerdict {
    let from = Endpoint { family: p.family, addr: o.addr, port: o.port };
    let l4 = batch.l4_checksum(i);
    match nat::rewrite_src(batch.packet(i), p, &from, l4) {
        Ok(()) => ReplyVerdict::Translated { vip: o.vip },
        Err(_) => ReplyVerdict::NotKp,
    }
}

/// An ICMP error from the pods' side about a packet a client sent through
/// a Service (client -> pod, after DNAT): the client gets it about the
/// packet it sent (client -> VIP:port), and from the VIP if the pod itself
/// sent it.
#[cold]
fn reply_icmp_error<B: Batch>(batch: &mut B, i: usize, dp: &Dataplane, now: u32) -> ReplyVerdict {
    let len = batch.chain_len(i).unwrap_or(0);
    let Ok(e) = packet::icmp_error::parse(batch.packet(i), len) else { return ReplyVerdict::NotKp };
    // The reply direction of the flow: pod -> client.
    let reply = e.quoted_reversed();
    if let Some(pool) = dp.nat64.as_deref().filter(|_| e.family == IpFamily::V4) {
        if let Some(source) = pool.source_index(e.dst[..4].try_into().unwrap()) {
            // About a nat64 flow's request (source:port -> pod): to the
            // client, about what it sent (client -> VIP).
            let Some(b) = pool.lookup_reply(source, &reply, now, binding_lifetime(dp.flow.timeout)) else {
                return ReplyVerdict::NotKp;
            };
            let inner = Endpoints {
                src: b.client,
                src_port: b.client_port,
                dst: b.service,
                dst_port: b.service_port,
            };
            let x = xlat::IcmpXlat { outer_src: b.service, outer_dst: b.client, inner };
            return reply_icmp_xlat(batch, i, &e, &x, b.vip);
        }
    }
    let Some(o) = dp.reverse.lookup(&FlowKey::new(0, &reply)) else { return ReplyVerdict::NotKp };
    if vip_family(dp, o.vip) != Some(e.family) {
        // About a nat46 flow's request (embedded client -> pod): to the
        // IPv4 client, about what it sent (client -> VIP), from the VIP.
        let Some(client) = dp.nat46_prefix.extract(&e.inner_src) else { return ReplyVerdict::NotKp };
        let mut c = [0u8; 16];
        c[..4].copy_from_slice(&client);
        let inner = Endpoints { src: c, src_port: e.inner_src_port, dst: o.addr, dst_port: o.port };
        let x = xlat::IcmpXlat { outer_src: o.addr, outer_dst: c, inner };
        return reply_icmp_xlat(batch, i, &e, &x, o.vip);
    }
    let service = Endpoint { family: e.family, addr: o.addr, port: o.port };
    let rw = nat::IcmpRewrite {
        outer_src: (e.src == e.inner_dst).then_some(o.addr),
        inner_dst: Some(service),
        ..Default::default()
    };
    match nat::translate_icmp_error(batch.packet(i), &e, &rw) {
        Ok(()) => ReplyVerdict::Translated { vip: o.vip },
        Err(_) => ReplyVerdict::NotKp,
    }
}

/// Packet `i`, an ICMP error of a nat46/nat64 flow, as `x` says in the
/// other family.
#[cold]
fn reply_icmp_xlat<B: Batch>(
    batch: &mut B,
    i: usize,
    e: &packet::icmp_error::IcmpError,
    x: &xlat::IcmpXlat,
    vip: u32,
) -> ReplyVerdict {
    match rebuild_icmp_xlat(batch, i, e, x) {
        Ok(to) => ReplyVerdict::TranslatedTo { vip, v6: to == IpFamily::V6 },
        Err(_) => ReplyVerdict::NotKp,
    }
}

/// Rebuilds packet `i` as the translated ICMP error (built aside, then
/// written over the packet, which grows or shrinks by 40 bytes or less).
/// Returns its new family.
fn rebuild_icmp_xlat<B: Batch>(
    batch: &mut B,
    i: usize,
    e: &packet::icmp_error::IcmpError,
    x: &xlat::IcmpXlat,
) -> Result<IpFamily, NatError> {
    let mut out = [0u8; xlat::MAX_ICMP6_ERROR];
    let len = xlat::translate_icmp_error(batch.packet(i), e, x, &mut out)?;
    let grow = len.saturating_sub(e.end);
    if !batch.reframe(i, grow, len) {
        return Err(NatError::NoHeadroom);
    }
    batch.packet(i)[..len].copy_from_slice(&out[..len]);
    let to = xlat::other_family(e.family);
    batch.family_changed(i, to);
    Ok(to)
}

#[inline(always)]
fn forget(entry: Option<(u32, FlowKey)>, thread: usize, refs: &RefCounts, dp: &Dataplane) {
    if let Some((pod, key)) = entry {
        refs.add(thread, pod, -1);
        if let Some(reply) = dp.pods.get(pod as usize).and_then(|p| reply_key(dp, &key, &p.endpoint)) {
            dp.reverse.remove(&reply);
        }
    }
}

/// The key the replies of the flow `key` have when they come from `pod`,
/// in the shared reply table: the pod's own family; for nat46, to the
/// client's embedded address. `None` for nat64, whose replies go to a
/// source binding instead (see [`crate::nat64`]).
#[inline(always)]
fn reply_key(dp: &Dataplane, key: &FlowKey, pod: &Endpoint) -> Option<FlowKey> {
    match (key.family(), pod.family) {
        (4, IpFamily::V4) | (6, IpFamily::V6) => Some(key.reply_key(&pod.addr, pod.port)),
        (4, IpFamily::V6) => {
            let client = dp.nat46_prefix.embed(key.src_v4());
            Some(key.reply_key_as(&pod.addr, pod.port, &client, 6))
        }
        _ => None,
    }
}

/// A translated packet, as [`xlat`] moves its start.
struct BatchFrame<'a, B: Batch>(&'a mut B, usize);

impl<B: Batch> xlat::Frame for BatchFrame<'_, B> {
    fn bytes(&mut self) -> &mut [u8] {
        self.0.packet(self.1)
    }
    fn move_start(&mut self, delta: isize) -> bool {
        self.0.move_start(self.1, delta)
    }
    #[inline(always)]
    fn advance(&mut self, by: usize) -> Option<&mut [u8]> {
        self.0.advance(self.1, by)
    }
    fn family_changed(&mut self, to: IpFamily) {
        self.0.family_changed(self.1, to)
    }
}

/// Whether the snapshot's flow-table size or timeouts are not yet taken.
#[inline(always)]
fn flow_conf_changed(dp: &Dataplane, flows: &FlowTable, resize: &Resize) -> bool {
    dp.flow_gen != resize.gen
        || dp.flow.timeout != flows.timeout()
        || dp.flow.embryonic.min(dp.flow.timeout) != flows.embryonic_timeout()
}

/// Takes the snapshot's flow-table size and timeouts. A new generation (a
/// resize: the reply tables were replaced too) starts a drain of the
/// current table into a new one, even when a later resize came back to
/// this table's size (an older drain still going is finished first).
fn adopt_flow_conf(ctx: &mut FlowCtx) -> Result<(), OutOfMemory> {
    let flow: FlowConf = ctx.dp.flow;
    if ctx.dp.flow_gen != ctx.resize.gen {
        let mut table = FlowTable::new(flow.buckets, flow.timeout)?;
        if ctx.dp.ipv6_vips || ctx.flows.has_keys() {
            table.add_keys()?;
        }
        ctx.drain(u32::MAX);
        let old = core::mem::replace(ctx.flows, table);
        ctx.resize.draining = Some((old, 0));
    }
    ctx.flows.set_timeouts(flow.timeout, flow.embryonic);
    ctx.resize.gen = ctx.dp.flow_gen;
    if ctx.resize.draining.is_none() {
        ctx.resize.settled[ctx.thread].store(ctx.resize.gen, Ordering::Release);
    }
    Ok(())
}

/// What [`Dataplane::classify`] depends on, packed (never `u64::MAX`).
#[inline(always)]
fn class_key(capture: Capture, family: IpFamily, protocol: u8, dst_port: u16) -> u64 {
    let capture = match capture {
        Capture::Prefix(i) => u64::from(i),
        Capture::NodePort => 1 << 32,
    };
    let family = u64::from(family == IpFamily::V6) << 33;
    capture | family | (u64::from(protocol) << 40) | (u64::from(dst_port) << 48)
}

/// Hash of the 5-tuple alone (no node-local index), for Maglev.
#[inline]
fn tuple_hash(p: &Parsed) -> u32 {
    (FlowKey::new(0, p).stable_hash() >> 32) as u32
}
