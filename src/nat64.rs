//! Stateful NAT64 source bindings (RFC 6146 behaviour) for nat64
//! Services: an IPv6 client's address cannot be carried in IPv4, so its
//! flow to an IPv4 pod leaves from one of the node's NAT64 source
//! addresses with a port kp allocates, and the pod's replies to that
//! address and port map back to the client.
//!
//! **Layout.** One 64-byte binding per (source address, port) of the
//! configured range, in one flat array: a reply's destination address and
//! port index it directly, so any worker finds it in one cache line.
//!
//! **No lock per packet.** The (source, port) grid is split into one part
//! per thread, a range of ports of every source (see `Part`); only that
//! thread allocates and writes bindings in its part (single writer per
//! slot), so allocation needs no atomic read-modify-write. Within its
//! part, a thread places a flow's binding by open addressing from the
//! flow's hash, probing at most [`PROBES`] slots; where it starts, source
//! and port, takes two multiplies, so an established flow's source follows
//! from its hash and the probe its entry notes, with no memory read. Every
//! other thread reads bindings under a per-slot sequence number (a
//! seqlock: the writer makes it odd, writes, makes it even; a reader
//! retries when it changed or was odd).
//!
//! **Expiry.** A binding lives while it was used (by a packet either way)
//! within [`binding_lifetime`]: the flow timeout and [`note_trust`] more,
//! for an established flow's packets confirm its binding only every so
//! often (see [`NoteClock`]). An expired slot is free: the next flow that
//! probes it takes it, so ports return to the pool with no sweep. A binding
//! is only ever replaced once it has expired, so an established flow never
//! loses its port; when no slot in a flow's probe window is free, the new
//! flow is refused (counted) and nothing else changes.

use crate::flowtable::SourceNote;
use crate::mem::{Zeroable, ZeroedArray};
use crate::nat::NatError;
use crate::packet::Parsed;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// The most ticks [`note_trust`] gives at timeouts under 1000 s.
pub const MAX_NOTE_TRUST: u32 = 10;

/// Ticks a nat64 flow goes on from the source note in its flow entry
/// after its binding was last confirmed (and stamped live), before
/// confirming it again: a quarter of the flow timeout, at most
/// [`MAX_NOTE_TRUST`], or two of the note's epochs less a tick where
/// those are longer (timeouts of 2000 s and more: 15 s at 3600, 255 s at
/// a day), so a note lasts at least to the end of the epoch after its
/// own. At 40 s, a flow's packets read their binding once in 11 s instead
/// of once a second.
pub fn note_trust(flow_timeout: u32) -> u32 {
    let two_epochs = (2 << note_shift(flow_timeout)) - 1;
    (flow_timeout / 4).min(MAX_NOTE_TRUST.max(two_epochs))
}

/// A note's epoch is `2^note_shift` ticks: the least that keeps the flow
/// timeout under 1000 epochs (with [`note_trust`], under 1011: what 10
/// bits of epoch tell apart, see [`NoteClock`]).
fn note_shift(flow_timeout: u32) -> u32 {
    let mut shift = 0;
    while flow_timeout >> shift >= 1000 {
        shift += 1;
    }
    shift
}

/// How long a binding lives after its last stamp: the flow timeout plus
/// [`note_trust`]. A flow whose last packet came at `L` last confirmed
/// its binding no earlier than `L - note_trust`, so the binding lives at
/// least to `L + flow_timeout`, when the flow itself expires: no port is
/// handed out again while its flow lives. (Its cost: a port returns to the
/// pool `note_trust` ticks after its flow has gone.)
pub fn binding_lifetime(flow_timeout: u32) -> u32 {
    flow_timeout.saturating_add(note_trust(flow_timeout))
}

/// Slots a thread probes for a flow's binding.
pub const PROBES: u32 = 64;

/// A [`NoteClock`] at one tick (see [`NoteClock::at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotesAt {
    epoch: u32,
    /// The oldest trusted note's age in epochs; -1: none is.
    max_age: i32,
}

impl NotesAt {
    /// [`NoteClock::trusted`] at this tick.
    #[inline(always)]
    pub fn trusted(&self, note: SourceNote) -> Option<u32> {
        let (probe, age) = read_note(note, self.epoch)?;
        (age as i32 <= self.max_age).then_some(probe)
    }

    /// [`NoteClock::note`] at this tick.
    #[inline(always)]
    pub fn note(&self, probe: u32) -> SourceNote {
        make_note(probe, self.epoch)
    }
}

/// The note of a binding at `probe`, confirmed in `epoch`; none for a
/// probe a note cannot name.
#[inline(always)]
fn make_note(probe: u32, epoch: u32) -> SourceNote {
    if probe >= NOTABLE_PROBES {
        return SourceNote::default();
    }
    SourceNote((((probe + 1) << NOTE_EPOCH_BITS) | (epoch & (NOTE_EPOCHS - 1))) as u16)
}

/// The probe a note names and its age in epochs at `epoch` (modulo its
/// epoch bits); `None` for no note.
#[inline(always)]
fn read_note(note: SourceNote, epoch: u32) -> Option<(u32, u32)> {
    let v = u32::from(note.0);
    let probe = (v >> NOTE_EPOCH_BITS).checked_sub(1)?;
    Some((probe, epoch.wrapping_sub(v) & (NOTE_EPOCHS - 1)))
}

/// Bits of a [`SourceNote`] that tell when it was made (the rest: which
/// probe found the binding, plus one).
const NOTE_EPOCH_BITS: u32 = 10;
const NOTE_EPOCHS: u32 = 1 << NOTE_EPOCH_BITS;
/// Probes a note can name (all but the last: 0 is "no note").
const NOTABLE_PROBES: u32 = (1 << (16 - NOTE_EPOCH_BITS)) - 1;
const _: () = assert!(NOTABLE_PROBES + 1 >= PROBES);

/// How a nat64 flow notes its binding in its flow entry's 16 bits
/// ([`SourceNote`]): which of its probe slots holds the binding (the slot
/// follows from the flow's hash, so the address and port take no memory
/// read) and the epoch of the tick it was last confirmed at, an epoch
/// being `2^shift` ticks. The note is trusted while the earliest tick it
/// can have been made at is at most [`note_trust`] ago, and not before
/// `since` (the tick after the thread took the current pool and timeout:
/// older notes may be of another pool's layout, or of epochs of another
/// length).
///
/// Ten bits of epoch are enough: a flow's note is confirmed at least every
/// `trust` ticks while it sends, and an entry lives at most the flow
/// timeout after its last packet, so a live entry's note is less than
/// `timeout + trust` ticks old, which `shift` keeps under 1011 epochs. A
/// note whose confirmation failed is cleared, so it cannot age further.
/// A timeout that keeps the epoch's length needs no `since`: its notes
/// read the same, and the bound holds for both timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoteClock {
    shift: u32,
    trust: u32,
    since: u32,
}

impl NoteClock {
    /// The clock for a flow timeout, trusting notes made from `since` on.
    pub fn new(flow_timeout: u32, since: u32) -> NoteClock {
        NoteClock { shift: note_shift(flow_timeout), trust: note_trust(flow_timeout), since }
    }

    /// The clock of a new flow timeout or pool, going on from this one
    /// (`pools`: the generations of the pool before and now, 0 for none):
    /// notes made before are not trusted from `now` on if they are of
    /// another pool or read otherwise (another epoch length). Without a
    /// pool before, there are no notes.
    pub fn next(&self, flow_timeout: u32, pools: (u16, u16), now: u32) -> NoteClock {
        let mut next = NoteClock::new(flow_timeout, self.since);
        if pools.0 != 0 && (pools.0 != pools.1 || next.shift != self.shift) {
            // (Notes of this one may have been made this tick.)
            next.since = now.saturating_add(1);
        }
        next
    }

    /// The note of a binding found (or made) at `probe`, confirmed at
    /// `now`; none for a probe a note cannot name.
    #[inline(always)]
    pub fn note(&self, now: u32, probe: u32) -> SourceNote {
        make_note(probe, now >> self.shift)
    }

    /// How this clock reads and makes notes at tick `now` (one batch's
    /// packets share it): the notes trusted then are those of the last
    /// few epochs, so a note's check is a mask and a compare.
    pub fn at(&self, now: u32) -> NotesAt {
        let epoch = now >> self.shift;
        // The earliest epoch whose start is at most `trust` ago and not
        // before `since` (rounded up: a note of an epoch that starts
        // earlier may be older).
        let ceil = |t: u32| t.div_ceil(1 << self.shift);
        let first = ceil(now.saturating_sub(self.trust)).max(ceil(self.since));
        let max_age = epoch.checked_sub(first).map_or(-1, |a| a.min(NOTE_EPOCHS - 1) as i32);
        NotesAt { epoch, max_age }
    }

    /// The probe a note names, if it is to be trusted at `now`.
    #[inline(always)]
    pub fn trusted(&self, note: SourceNote, now: u32) -> Option<u32> {
        let epoch = now >> self.shift;
        let (probe, age) = read_note(note, epoch)?;
        let earliest = epoch.checked_sub(age)? << self.shift;
        (now - earliest <= self.trust && earliest >= self.since).then_some(probe)
    }
}
/// Most NAT64 source addresses (a flat array of 4 MiB each, backed only
/// where used).
pub const MAX_SOURCES: usize = 64;

/// A flow's binding: who the client is, what it sent to, which pod serves
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Binding {
    /// The client's IPv6 address and port.
    pub client: [u8; 16],
    pub client_port: u16,
    /// What the client sent to: the VIP (or node address) and port.
    pub service: [u8; 16],
    pub service_port: u16,
    pub vip: u32,
    /// The pod's IPv4 address and port.
    pub pod: [u8; 4],
    pub pod_port: u16,
    pub protocol: u8,
}

impl Binding {
    fn words(&self) -> [u64; 6] {
        let w = |a: &[u8; 16], at: usize| u64::from_ne_bytes(a[at..at + 8].try_into().unwrap());
        [
            w(&self.client, 0),
            w(&self.client, 8),
            w(&self.service, 0),
            w(&self.service, 8),
            u64::from(self.client_port) | u64::from(self.service_port) << 16 | u64::from(self.vip) << 32,
            u64::from(u32::from_ne_bytes(self.pod))
                | u64::from(self.pod_port) << 32
                | u64::from(self.protocol) << 48,
        ]
    }

    fn from_words(w: &[u64; 6]) -> Binding {
        let mut client = [0u8; 16];
        client[..8].copy_from_slice(&w[0].to_ne_bytes());
        client[8..].copy_from_slice(&w[1].to_ne_bytes());
        let mut service = [0u8; 16];
        service[..8].copy_from_slice(&w[2].to_ne_bytes());
        service[8..].copy_from_slice(&w[3].to_ne_bytes());
        Binding {
            client,
            client_port: w[4] as u16,
            service,
            service_port: (w[4] >> 16) as u16,
            vip: (w[4] >> 32) as u32,
            pod: (w[5] as u32).to_ne_bytes(),
            pod_port: (w[5] >> 32) as u16,
            protocol: (w[5] >> 48) as u8,
        }
    }
}

/// The flow part of the words (all but the pod): what identifies a flow.
const FLOW_WORDS: usize = 5;

#[repr(C, align(64))]
struct Slot {
    seq: AtomicU32,
    /// Tick of the last use; 0: never used.
    used: AtomicU32,
    words: [AtomicU64; 6],
}
// SAFETY: atomics of integers; all-zero is "never used".
unsafe impl Zeroable for Slot {}

/// The NAT64 source addresses and their ports, shared by all threads.
pub struct PortPool {
    sources: Vec<[u8; 4]>,
    first_port: u16,
    ports: u32,
    /// By thread: its part of the (source, port) grid.
    parts: Vec<Part>,
    /// Source-major: (source, port offset) at `source * ports + offset`.
    slots: ZeroedArray<Slot>,
    /// Tells this pool from the ones before it (never 0): what a flow
    /// noted of its binding (see [`crate::flowtable::SourceNote`]) is of
    /// this pool only.
    generation: u16,
}

/// The generation of the next pool made.
static GENERATIONS: AtomicU32 = AtomicU32::new(0);

/// Reader retries before giving up (the reply then passes untranslated).
const READ_TRIES: usize = 64;

/// A thread's part of the pool: a rectangle of the (source, port) grid,
/// the port offsets `port_lo..port_lo + ports` of the sources
/// `source_lo..source_lo + sources`. A rectangle (not a run of the flat
/// array) so that where a flow's binding starts, source and port, follows
/// from its hash by two multiplies and no division.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Part {
    source_lo: u32,
    sources: u32,
    port_lo: u32,
    ports: u32,
}

impl Part {
    /// `threads` parts of a grid of `sources` x `ports`, together all of
    /// it, each slot in one: the threads take port ranges of every source,
    /// and where there are fewer ports than threads, the threads of one
    /// port range split its sources (some get nothing if even that is too
    /// few).
    fn split(sources: u32, ports: u32, threads: u32) -> Vec<Part> {
        let span = |n: u32, i: u32, of: u32| (u64::from(n) * u64::from(i) / u64::from(of)) as u32;
        let groups = ports.min(threads);
        (0..threads)
            .map(|t| {
                let (group, k) = (t % groups, t / groups);
                // The threads of this port range: those with its remainder.
                let sharing = (threads - group).div_ceil(groups);
                let (port_lo, port_hi) = (span(ports, group, groups), span(ports, group + 1, groups));
                let (source_lo, source_hi) = (span(sources, k, sharing), span(sources, k + 1, sharing));
                Part { source_lo, sources: source_hi - source_lo, port_lo, ports: port_hi - port_lo }
            })
            .collect()
    }

    fn len(&self) -> u32 {
        self.sources * self.ports
    }
}

/// Where in its part a binding is: the part's own source and port offset.
type At = (u32, u32);

/// One thread's part of a [`PortPool`], as that thread allocates from it
/// (taken once a batch, so a packet's source costs no look-up of the
/// part). A flow of hash `h` is first looked for at source
/// `lo32(h) * sources >> 32` and port offset `hi32(h) * ports >> 32` of
/// the part; its probes go on to the next ports, and past the part's last
/// port to the next source's first (from the last source to the first).
#[derive(Clone, Copy)]
pub struct PoolPart<'a> {
    pool: &'a PortPool,
    /// The part's sources.
    sources: &'a [[u8; 4]],
    /// The part's first port.
    first_port: u16,
    part: Part,
}

impl PoolPart<'_> {
    /// Where a flow of hash `hash` is first looked for.
    #[inline(always)]
    fn start(&self, hash: u64) -> At {
        let scale = |bits: u64, n: u32| (((bits & 0xffff_ffff) * u64::from(n)) >> 32) as u32;
        (scale(hash, self.part.sources), scale(hash >> 32, self.part.ports))
    }

    /// `probe` slots on from `start`, round the part (`bind` probes fewer
    /// slots than the part has; a larger `probe` wraps round it again).
    #[inline(always)]
    fn at(&self, (source, port): At, probe: u32) -> At {
        let port = port + probe;
        if port < self.part.ports {
            return (source, port);
        }
        self.wrapped(source, port)
    }

    /// [`PoolPart::at`] past the end of a source's ports (rare: a flow
    /// starts so close to the end only a few probes in thousands).
    /// (An empty part has no slot: no source there.)
    #[cold]
    fn wrapped(&self, source: u32, port: u32) -> At {
        let Some(v) = (source * self.part.ports + port).checked_rem(self.part.len()) else {
            return (u32::MAX, 0);
        };
        (v / self.part.ports, v % self.part.ports)
    }

    /// The probes of a flow starting at `start`, in the order
    /// [`PoolPart::bind`] tries them.
    #[inline(always)]
    fn probes(&self, start: At) -> impl Iterator<Item = (u32, At)> + '_ {
        (0..PROBES.min(self.part.len())).map(move |k| (k, self.at(start, k)))
    }

    #[inline(always)]
    fn slot(&self, (source, port): At) -> &Slot {
        let source = self.part.source_lo + source;
        &self.pool.slots[(source * self.pool.ports + self.part.port_lo + port) as usize]
    }

    #[inline(always)]
    fn address(&self, (source, port): At) -> Option<([u8; 4], u16)> {
        Some((*self.sources.get(source as usize)?, self.first_port + port as u16))
    }

    /// The source address and port of `b`'s flow (hash `hash`), of this
    /// part's thread (which owns the flow): its binding, made if it has
    /// none. A binding whose pod changed (the flow moved) is updated. Also
    /// which of the flow's probes holds it (see [`PoolPart::probed`]).
    pub fn bind(
        &self,
        b: &Binding,
        hash: u64,
        now: u32,
        timeout: u32,
    ) -> Result<(([u8; 4], u16), u32), NatError> {
        if self.part.len() == 0 {
            return Err(NatError::PortsExhausted);
        }
        let want = b.words();
        let stamp = now.max(1);
        let start = self.start(hash);
        let found = |at: At, probe: u32| Ok((self.address(at).ok_or(NatError::PortsExhausted)?, probe));
        // The common case first: an established flow, unchanged, in the
        // first slot it probes (where the loop below would find it).
        let slot = self.slot(start);
        let used = slot.used.load(Ordering::Relaxed);
        if PortPool::live(used, now, timeout)
            && (0..6).all(|i| slot.words[i].load(Ordering::Relaxed) == want[i])
        {
            PortPool::stamp(slot, used, stamp);
            return found(start, 0);
        }
        let mut free = None;
        for (probe, at) in self.probes(start) {
            let slot = self.slot(at);
            // Only this thread writes this part: plain loads see its own
            // writes.
            let used = slot.used.load(Ordering::Relaxed);
            if !PortPool::live(used, now, timeout) {
                free.get_or_insert((probe, at));
                if used == 0 {
                    // Never used: nothing was ever placed beyond it.
                    break;
                }
                continue;
            }
            let same_flow = (0..FLOW_WORDS).all(|i| slot.words[i].load(Ordering::Relaxed) == want[i]);
            if same_flow {
                if slot.words[5].load(Ordering::Relaxed) != want[5] {
                    PortPool::write(slot, &want);
                }
                PortPool::stamp(slot, used, stamp);
                return found(at, probe);
            }
        }
        let (probe, at) = free.ok_or(NatError::PortsExhausted)?;
        let slot = self.slot(at);
        PortPool::write(slot, &want);
        slot.used.store(stamp, Ordering::Release);
        found(at, probe)
    }

    /// The source address and port of the binding at `probe` of the flow
    /// of hash `hash` (as [`PoolPart::bind`] gave them), from the part's
    /// layout alone: no memory read. `None` in an empty part.
    #[inline(always)]
    pub fn probed(&self, hash: u64, probe: u32) -> Option<([u8; 4], u16)> {
        self.address(self.at(self.start(hash), probe))
    }

    /// Starts loading the slot where the flow of hash `hash` is first
    /// looked for (where an established flow's binding mostly is), so that
    /// [`PoolPart::bind`] finds it in cache.
    #[inline(always)]
    pub fn prefetch(&self, hash: u64) {
        if self.part.len() != 0 {
            crate::mem::prefetch(self.slot(self.start(hash)));
        }
    }
}

impl PortPool {
    /// A pool of `sources` x ports `first..=last`, split among `threads`.
    pub fn new(sources: &[[u8; 4]], first: u16, last: u16, threads: usize) -> Option<PortPool> {
        if sources.is_empty() || sources.len() > MAX_SOURCES || first > last || threads == 0 {
            return None;
        }
        let ports = u32::from(last - first) + 1;
        let slots = ZeroedArray::new(sources.len() * ports as usize)?;
        let parts = Part::split(sources.len() as u32, ports, u32::try_from(threads).ok()?);
        let generation = (GENERATIONS.fetch_add(1, Ordering::Relaxed) % u32::from(u16::MAX)) as u16 + 1;
        Some(PortPool { sources: sources.to_vec(), first_port: first, ports, parts, slots, generation })
    }

    /// See `generation`.
    #[inline(always)]
    pub fn generation(&self) -> u16 {
        self.generation
    }

    /// Which of the pool's source addresses `addr` is, if any.
    #[inline(always)]
    pub fn source_index(&self, addr: &[u8; 4]) -> Option<u32> {
        self.sources.iter().position(|s| s == addr).map(|i| i as u32)
    }

    /// `thread`'s part of the pool.
    #[inline(always)]
    pub fn part(&self, thread: usize) -> PoolPart<'_> {
        let part = self.parts[thread.min(self.parts.len() - 1)];
        let lo = part.source_lo as usize;
        PoolPart {
            pool: self,
            sources: &self.sources[lo..lo + part.sources as usize],
            first_port: self.first_port + part.port_lo as u16,
            part,
        }
    }

    /// (A use stamped by a thread whose clock is a little ahead is live.)
    #[inline(always)]
    fn live(used: u32, now: u32, timeout: u32) -> bool {
        used != 0 && (now.wrapping_sub(used) as i32) < timeout as i32
    }

    /// A use of a live binding: its stamp moves on only when the tick did
    /// (a line left clean needs no write-back to memory).
    #[inline(always)]
    fn stamp(slot: &Slot, used: u32, stamp: u32) {
        if used != stamp {
            slot.used.store(stamp, Ordering::Relaxed);
        }
    }

    /// Writes a slot's words (its owner only) under its sequence number.
    fn write(slot: &Slot, words: &[u64; 6]) {
        let s = slot.seq.load(Ordering::Relaxed);
        slot.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        for (dst, &src) in slot.words.iter().zip(words) {
            dst.store(src, Ordering::Relaxed);
        }
        slot.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// The binding the reply `p` (an IPv4 TCP/UDP packet to the pool's
    /// source address `source`, see [`PortPool::source_index`]) belongs
    /// to, if it is live and comes from its pod; any thread. Counts as a
    /// use of the binding.
    pub fn lookup_reply(&self, source: u32, p: &Parsed, now: u32, timeout: u32) -> Option<Binding> {
        let (port, pod, pod_port, protocol) =
            (p.dst_port, p.src[..4].try_into().unwrap(), p.src_port, p.protocol);
        let a = source;
        let off = u32::from(port.checked_sub(self.first_port)?);
        if off >= self.ports {
            return None;
        }
        let slot = &self.slots[(a * self.ports + off) as usize];
        let (used, w) = Self::read(slot)?;
        if !Self::live(used, now, timeout) {
            return None;
        }
        let b = Binding::from_words(&w);
        let pod: [u8; 4] = pod;
        if b.pod != pod || b.pod_port != pod_port || b.protocol != protocol {
            return None;
        }
        slot.used.store(now.max(1), Ordering::Relaxed);
        Some(b)
    }

    /// A slot's use stamp and words, read consistently from any thread
    /// (`None` if its owner kept writing it).
    fn read(slot: &Slot) -> Option<(u32, [u64; 6])> {
        for _ in 0..READ_TRIES {
            let s1 = slot.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                core::hint::spin_loop();
                continue;
            }
            let used = slot.used.load(Ordering::Acquire);
            let mut w = [0u64; 6];
            for (dst, src) in w.iter_mut().zip(&slot.words) {
                *dst = src.load(Ordering::Relaxed);
            }
            fence(Ordering::Acquire);
            if slot.seq.load(Ordering::Relaxed) == s1 {
                return Some((used, w));
            }
        }
        None
    }

    /// The source address and port `b`'s flow (hash `hash`) is bound to,
    /// without binding one, from any thread: each thread's part is probed
    /// where [`PoolPart::bind`] would have put it (for ICMP errors about
    /// the flow, which may arrive on any thread).
    pub fn find_flow(&self, b: &Binding, hash: u64, now: u32, timeout: u32) -> Option<([u8; 4], u16)> {
        let want = b.words();
        for thread in 0..self.parts.len() {
            let part = self.part(thread);
            for (_, at) in part.probes(part.start(hash)) {
                let Some((used, w)) = Self::read(part.slot(at)) else { continue };
                if used == 0 {
                    break;
                }
                if Self::live(used, now, timeout) && w[..FLOW_WORDS] == want[..FLOW_WORDS] {
                    return part.address(at);
                }
            }
        }
        None
    }

    /// Live bindings (for `show kp`).
    pub fn live_bindings(&self, now: u32, timeout: u32) -> usize {
        self.slots.iter().filter(|s| Self::live(s.used.load(Ordering::Relaxed), now, timeout)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::IpFamily;
    use proptest::prelude::*;

    fn flow(n: u16) -> Binding {
        Binding {
            client: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7],
            client_port: n,
            service: [0x20, 0x01, 0x0d, 0xb8, 0, 0x64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            service_port: 80,
            vip: 3,
            pod: [198, 51, 100, 5],
            pod_port: 8080,
            protocol: 6,
        }
    }

    /// A reply from `pod`:8080 to `to`:`port`.
    fn reply(to: [u8; 4], port: u16, pod: [u8; 4], protocol: u8) -> Parsed {
        let mut p =
            Parsed { family: IpFamily::V4, protocol, src_port: 8080, dst_port: port, ..Default::default() };
        p.src[..4].copy_from_slice(&pod);
        p.dst[..4].copy_from_slice(&to);
        p
    }

    #[test]
    fn a_flow_keeps_its_port_and_replies_find_it() {
        let pool = PortPool::new(&[[192, 0, 2, 1]], 40000, 40099, 2).unwrap();
        let ((a, p), _) = pool.part(1).bind(&flow(1), 12345 << 32, 10, 40).unwrap();
        assert_eq!(a, [192, 0, 2, 1]);
        assert!((40050..=40099).contains(&p), "thread 1 owns the upper half: {p}");
        assert_eq!(pool.part(1).bind(&flow(1), 12345 << 32, 11, 40).unwrap().0, (a, p));
        let b = pool.lookup_reply(0, &reply(a, p, [198, 51, 100, 5], 6), 12, 40).unwrap();
        assert_eq!(b, flow(1));
        // Not from the flow's pod, or another protocol: not this binding.
        assert_eq!(pool.lookup_reply(0, &reply(a, p, [198, 51, 100, 6], 6), 12, 40), None);
        assert_eq!(pool.lookup_reply(0, &reply(a, p, [198, 51, 100, 5], 17), 12, 40), None);
        assert_eq!(pool.source_index(&[192, 0, 2, 2]), None);
    }

    #[test]
    fn exhaustion_refuses_new_flows_and_expired_ports_return() {
        let pool = PortPool::new(&[[192, 0, 2, 1]], 50000, 50007, 1).unwrap();
        let mut ports = Vec::new();
        for n in 0..8 {
            ports.push(pool.part(0).bind(&flow(n), u64::from(n) << 40, 5, 40).unwrap().0 .1);
        }
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 8, "every flow has its own port");
        assert_eq!(pool.part(0).bind(&flow(99), 1 << 40, 6, 40), Err(NatError::PortsExhausted));
        // The established flows are untouched by the refusal.
        for n in 0..8 {
            let ((_, p), _) = pool.part(0).bind(&flow(n), u64::from(n) << 40, 7, 40).unwrap();
            assert!(ports.contains(&p));
        }
        // All idle past the timeout: the ports are free again.
        assert!(pool.part(0).bind(&flow(99), 1 << 40, 7 + 40, 40).is_ok());
        assert_eq!(pool.live_bindings(7 + 40, 40), 1);
    }

    #[test]
    fn a_moved_flow_updates_its_pod() {
        let pool = PortPool::new(&[[192, 0, 2, 1]], 1024, 2047, 1).unwrap();
        let ((a, p), _) = pool.part(0).bind(&flow(1), 0, 3, 40).unwrap();
        let mut moved = flow(1);
        moved.pod = [198, 51, 100, 9];
        assert_eq!(pool.part(0).bind(&moved, 0, 4, 40).unwrap().0, (a, p));
        assert!(pool.lookup_reply(0, &reply(a, p, [198, 51, 100, 9], 6), 5, 40).is_some());
        assert!(pool.lookup_reply(0, &reply(a, p, [198, 51, 100, 5], 6), 5, 40).is_none());
    }

    /// The threads' parts cover the pool, each slot in one part; with at
    /// least as many ports as threads every thread has every source (and
    /// a fair share of ports), and a flow's probes stay in its part.
    #[test]
    fn parts_cover_the_pool_once() {
        for sources in 1..=5u32 {
            for ports in 1..=9u32 {
                for threads in 1..=12u32 {
                    let parts = Part::split(sources, ports, threads);
                    assert_eq!(parts.len(), threads as usize);
                    let mut owners = vec![0; (sources * ports) as usize];
                    for p in &parts {
                        for s in p.source_lo..p.source_lo + p.sources {
                            for o in p.port_lo..p.port_lo + p.ports {
                                owners[(s * ports + o) as usize] += 1;
                            }
                        }
                        if ports >= threads {
                            assert_eq!((p.source_lo, p.sources), (0, sources));
                            assert!(p.ports >= ports / threads && p.ports <= ports.div_ceil(threads));
                        }
                    }
                    assert!(owners.iter().all(|&n| n == 1), "{sources} x {ports} over {threads}: {owners:?}");
                }
            }
        }
        // One slot, two threads: one has none to give.
        let tiny = PortPool::new(&[[192, 0, 2, 1]], 1000, 1000, 2).unwrap();
        assert_eq!(tiny.part(0).probed(u64::MAX, 3), None);
        assert_eq!(tiny.part(0).bind(&flow(1), u64::MAX, 5, 40), Err(NatError::PortsExhausted));
        assert_eq!(tiny.part(1).bind(&flow(1), u64::MAX, 5, 40), Ok((([192, 0, 2, 1], 1000), 0)));
        let pool = PortPool::new(&[[192, 0, 2, 1], [192, 0, 2, 2], [192, 0, 2, 3]], 1000, 1004, 2).unwrap();
        for thread in 0..2 {
            let part = pool.part(thread);
            for hash in [0, u64::MAX, 0x8000_0000_8000_0000, 0x1234_5678_9abc_def0] {
                let probes: Vec<At> = part.probes(part.start(hash)).map(|(_, at)| at).collect();
                let distinct: std::collections::HashSet<_> = probes.iter().collect();
                assert_eq!(
                    distinct.len(),
                    part.part.len() as usize,
                    "thread {thread} hash {hash:x}: {probes:?}"
                );
                assert!(probes.iter().all(|&(s, o)| s < part.part.sources && o < part.part.ports));
            }
        }
    }

    /// What `bind` says of a binding's probe gives back its address and
    /// port from the hash alone, in every thread's part, wrapping ones
    /// included.
    #[test]
    fn a_probe_gives_back_its_binding() {
        let pool = PortPool::new(&[[192, 0, 2, 1], [192, 0, 2, 2]], 40000, 40009, 3).unwrap();
        let mut probes = std::collections::HashSet::new();
        for thread in 0..3 {
            for n in 0..6u16 {
                // Hashes that start every flow at one of two slots of the
                // part (one near its end), so later flows probe further.
                let hash = u64::from(n % 2) * (0xf000_0000 << 32);
                let (source, probe) = pool.part(thread).bind(&flow(n), hash, 5, 40).unwrap();
                assert_eq!(pool.part(thread).probed(hash, probe), Some(source), "thread {thread} flow {n}");
                probes.insert(probe);
            }
        }
        assert!(probes.len() >= 3, "flows beyond their first probe: {probes:?}");
    }

    /// A note names its probe while it is trusted: at most `note_trust`
    /// ticks after it was made, and only when made after the clock's
    /// `since`; every timeout up to the longest keeps that exact for a
    /// note as old as a live entry's can be.
    #[test]
    fn notes_are_trusted_for_their_time_only() {
        let clock = NoteClock::new(40, 100);
        let note = clock.note(1000, 5);
        assert_eq!(note_trust(40), 10);
        for now in 1000..=1010 {
            assert_eq!(clock.trusted(note, now), Some(5), "at {now}");
        }
        assert_eq!(clock.trusted(note, 1011), None);
        assert_eq!(clock.trusted(SourceNote::default(), 1000), None, "no note");
        assert_eq!(clock.trusted(clock.note(1000, NOTABLE_PROBES), 1000), None, "a probe beyond notes");
        assert_eq!(NoteClock::new(40, 1001).trusted(note, 1001), None, "made before `since`");
        assert_eq!(NoteClock::new(40, 1000).trusted(note, 1001), Some(5), "made at `since`");
        for timeout in [1, 3, 40, 300, 990, 1000, 3600, 86_400] {
            let clock = NoteClock::new(timeout, 0);
            let trust = note_trust(timeout);
            for made in [7, 1023, 1024, 5000, 123_456] {
                let note = clock.note(made, 62);
                // Trusted at most `trust` after, and right after at least
                // when an epoch is no longer than the trust.
                for later in 0..timeout + trust {
                    let t = clock.trusted(note, made + later);
                    assert!(t.is_none() || later <= trust, "timeout {timeout} made {made} +{later}");
                    if t.is_some() {
                        assert_eq!(t, Some(62));
                    }
                }
                if 1 << clock.shift <= trust {
                    assert_eq!(clock.trusted(note, made), Some(62), "timeout {timeout} made {made}");
                }
            }
        }
    }

    /// After a new timeout or pool, only notes that would be misread (of
    /// another epoch length) or of another pool are no longer trusted.
    #[test]
    fn a_new_clock_distrusts_only_notes_it_would_misread() {
        let c40 = NoteClock::new(40, 0);
        let note = c40.note(500, 3);
        assert_eq!(c40.next(300, (7, 7), 501).trusted(note, 502), Some(3), "one-tick epochs still");
        assert_eq!(c40.next(3600, (7, 7), 501).trusted(note, 502), None, "four-tick epochs");
        assert_eq!(c40.next(40, (7, 8), 501).trusted(note, 502), None, "another pool");
        assert_eq!(c40.next(40, (7, 0), 501).trusted(note, 502), None, "no pool");
        // No pool before: no notes, so the first ones made are trusted.
        let first = NoteClock::new(40, 0).next(3600, (0, 7), 501);
        assert_eq!(first.trusted(first.note(501, 3), 502), Some(3));
        let c3600 = c40.next(3600, (7, 7), 501);
        assert_eq!(c3600.trusted(c3600.note(504, 3), 505), Some(3), "made after the change");
        // Long epochs trust a note to the end of the next one at least.
        let day = NoteClock::new(86_400, 0);
        assert_eq!(note_trust(86_400), 255);
        for made in 1024..1024 + 128 {
            let note = day.note(made, 1);
            assert_eq!(day.trusted(note, (made | 127) + 128), Some(1), "made at {made}");
        }
    }

    proptest! {
        /// A clock fixed at one tick reads and makes notes as the clock
        /// itself does at that tick.
        #[test]
        fn a_clock_at_a_tick_is_the_clock(
            timeout in prop::sample::select(vec![1u32, 3, 40, 999, 1000, 2000, 3600, 86_400]),
            since in 0u32..5000,
            now in 1u32..200_000,
            note in any::<u16>(),
            probe in 0u32..70,
        ) {
            let clock = NoteClock::new(timeout, since);
            let at = clock.at(now);
            prop_assert_eq!(at.trusted(SourceNote(note)), clock.trusted(SourceNote(note), now));
            prop_assert_eq!(at.note(probe), clock.note(now, probe));
            // Notes made within the last few ticks, as the data path sees them.
            for back in 0..=12u32.min(now) {
                let made = clock.note(now - back, probe.min(5));
                prop_assert_eq!(at.trusted(made), clock.trusted(made, now));
            }
        }
    }
}
