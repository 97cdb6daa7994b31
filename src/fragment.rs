//! Per-thread memory of IP fragments: the first fragment of a datagram
//! (the one with the ports) decides where the datagram goes; the others,
//! which carry no ports, follow it by their datagram's identity.
//!
//! Why not VPP's shallow virtual reassembly (what VPP's NAT and cnat
//! build on)? It is an `ip4-unicast`/`ip6-unicast` feature that every
//! packet of an interface passes through before the lookup, fragment or
//! not, and the ports it leaves in the buffer share their bytes with the
//! flow hash that `ip4-lookup` may write before kp's node runs. kp's own
//! cache costs nothing for packets that are not fragments, sits where the
//! ports are needed, and is per thread without locks: a NIC's RSS hashes
//! fragments by their addresses only, so all of a datagram's fragments
//! reach one queue, one thread.
//!
//! Fixed size (no allocation per packet): a slot per datagram in flight,
//! found by hash in a short probe. An entry lives [`TIMEOUT`] ticks
//! (seconds), enough for the rest of a datagram to arrive.
//!
//! A fragment that comes before its datagram's first one (reordered on
//! the way, or a sender that sends the last first) is held, its buffer
//! kept, until the first fragment says where the datagram goes; then it
//! is released and translated. At most [`HOLD_CAPACITY`] fragments are
//! held per thread, each for at most [`TIMEOUT`] ticks: what has no first
//! fragment by then is given up (a request dropped, counted; what a
//! feature node held, passed on untouched, as it might not be kp's).

use crate::nat::{self, L4Checksum, NatError};
use crate::packet::{Fragment, IpFamily};
use crate::xlat::{self, Endpoints, Frame};

/// Ticks a datagram's entry lives after its first fragment (1 to 2 s).
pub const TIMEOUT: u32 = 2;

/// Datagrams in flight per thread.
pub const CAPACITY: usize = 4096;

/// Fragments held per thread awaiting their first fragment: a 64 KiB
/// datagram is 45 fragments at MTU 1500, so a few such datagrams at once.
pub const HOLD_CAPACITY: usize = 256;

/// Slots tried per key.
const PROBE: usize = 8;

/// A datagram's identity (RFC 791 / RFC 8200), and which way it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub family: IpFamily,
    pub protocol: u8,
    /// A reply (from a pod) rather than a request (to a VIP).
    pub reply: bool,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub id: u32,
}

impl FragKey {
    /// The identity of `f`'s datagram, a reply's or a request's.
    pub fn of(f: &crate::packet::Fragment, reply: bool) -> FragKey {
        let p = &f.parsed;
        FragKey { family: p.family, protocol: p.protocol, reply, src: p.src, dst: p.dst, id: f.id }
    }
}

/// Where the datagram's other fragments go: the VIP and pod of its flow,
/// and the address to write (a request's new destination, a reply's new
/// source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragTarget {
    pub vip: u32,
    pub pod: u32,
    pub addr: [u8; 16],
    /// A datagram that changes family (nat46, nat64): its new source, and
    /// `addr` its new destination.
    pub cross: Option<[u8; 16]>,
}

impl FragTarget {
    /// The record of a datagram kp does not translate (its first fragment
    /// was not kp's, or was dropped): its other fragments are not held.
    pub const NOT_KP: FragTarget = FragTarget { vip: u32::MAX, pod: u32::MAX, addr: [0; 16], cross: None };

    pub fn is_kp(&self) -> bool {
        self.vip != u32::MAX
    }

    /// Writes where the datagram went into one of its fragments that is
    /// not its first (`family` as it came; `reply`: a reply's, else a
    /// request's): the destination address of a request, the source of a
    /// reply, or, across families, the whole IP header (from `frag`, or
    /// parsed here when `None`). Returns the family it leaves in.
    pub fn apply_to<F: Frame + ?Sized>(
        &self,
        f: &mut F,
        family: IpFamily,
        reply: bool,
        frag: Option<&Fragment>,
    ) -> Result<IpFamily, NatError> {
        let Some(src) = self.cross else {
            match reply {
                true => nat::rewrite_addr::<false>(f.bytes(), family, &self.addr)?,
                false => nat::rewrite_addr::<true>(f.bytes(), family, &self.addr)?,
            }
            return Ok(family);
        };
        let parsed;
        let frag = match frag {
            Some(frag) => frag,
            None => {
                parsed = crate::packet::parse_fragment(f.bytes(), 0).map_err(|_| NatError::Truncated)?;
                &parsed
            }
        };
        // (Not a first fragment: no ports to change.)
        if frag.first || frag.parsed.family != family {
            return Err(NatError::TranslationNotSupported);
        }
        let to = Endpoints { src, src_port: 0, dst: self.addr, dst_port: 0 };
        xlat::fragment_to_other_family(f, frag, &to, L4Checksum::Full)?;
        Ok(xlat::other_family(family))
    }
}

#[derive(Clone, Copy)]
struct Slot {
    key: FragKey,
    target: FragTarget,
    /// Live while `expires > now`; 0: never used.
    expires: u32,
}

pub struct FragmentCache {
    slots: Box<[Slot]>,
}

impl Default for FragmentCache {
    fn default() -> Self {
        Self::new()
    }
}

impl FragmentCache {
    pub fn new() -> FragmentCache {
        let empty = Slot {
            key: FragKey {
                family: IpFamily::V4,
                protocol: 0,
                reply: false,
                src: [0; 16],
                dst: [0; 16],
                id: 0,
            },
            target: FragTarget::NOT_KP,
            expires: 0,
        };
        FragmentCache { slots: vec![empty; CAPACITY].into_boxed_slice() }
    }

    fn start(key: &FragKey) -> usize {
        // FNV-1a over what differs between datagrams.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |b: u8| h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        key.src.iter().chain(&key.dst).for_each(|&b| eat(b));
        key.id.to_le_bytes().iter().for_each(|&b| eat(b));
        eat(key.protocol);
        eat(key.reply as u8);
        (h as usize) & (CAPACITY - 1)
    }

    /// Remembers where `key`'s datagram goes (again: the entry is
    /// refreshed). `false` when every slot it may use holds another live
    /// datagram: its other fragments will not be translated.
    pub fn insert(&mut self, key: FragKey, target: FragTarget, now: u32) -> bool {
        let start = Self::start(&key);
        let mut free = None;
        for k in 0..PROBE {
            let i = (start + k) & (CAPACITY - 1);
            let s = &self.slots[i];
            if s.expires > now && s.key == key {
                free = Some(i);
                break;
            }
            if s.expires <= now && free.is_none() {
                free = Some(i);
            }
        }
        match free {
            Some(i) => {
                self.slots[i] = Slot { key, target, expires: now + TIMEOUT };
                true
            }
            None => false,
        }
    }

    /// Where `key`'s datagram goes, if its first fragment was seen lately.
    pub fn lookup(&self, key: &FragKey, now: u32) -> Option<FragTarget> {
        let start = Self::start(key);
        (0..PROBE)
            .map(|k| &self.slots[(start + k) & (CAPACITY - 1)])
            .find(|s| s.expires > now && s.key == *key)
            .map(|s| s.target)
    }
}

/// What the host gives for a fragment it keeps: `handle` names the packet
/// (VPP: its buffer index), `owner` the part of the host that holds it
/// (VPP: the node), who alone releases it; `tag` is the host's own, given
/// back (VPP: the next node the packet had).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldTicket {
    pub handle: u32,
    pub owner: u32,
    pub tag: u16,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    key: FragKey,
    ticket: HoldTicket,
    expires: u32,
}

/// A held fragment handed back to its owner: to translate and send on
/// (`to`, where its datagram went), or, `to: None`, given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    pub ticket: HoldTicket,
    pub family: IpFamily,
    pub reply: bool,
    pub to: Option<FragTarget>,
}

impl Released {
    fn of(h: &Held, to: Option<FragTarget>) -> Released {
        Released { ticket: h.ticket, family: h.key.family, reply: h.key.reply, to }
    }

    /// Writes the datagram's translation into the fragment's IP header (a
    /// request's destination, a reply's source; across families the whole
    /// header): `false` if given up or the bytes are no such fragment.
    pub fn apply<F: Frame + ?Sized>(&self, f: &mut F) -> bool {
        self.to.is_some_and(|t| t.apply_to(f, self.family, self.reply, None).is_ok())
    }

    /// The family the fragment leaves in, once [`apply`](Self::apply)d.
    pub fn out_family(&self) -> IpFamily {
        match self.to.and_then(|t| t.cross) {
            Some(_) => xlat::other_family(self.family),
            None => self.family,
        }
    }
}

/// A thread's fragment state: where datagrams go, the fragments held for
/// a first fragment still to come, and those released but not yet taken
/// by their owner.
pub struct Fragments {
    cache: FragmentCache,
    held: Vec<Held>,
    released: Vec<Released>,
}

impl Default for Fragments {
    fn default() -> Self {
        Self::new()
    }
}

impl Fragments {
    pub fn new() -> Fragments {
        Fragments {
            cache: FragmentCache::new(),
            held: Vec::with_capacity(HOLD_CAPACITY),
            released: Vec::with_capacity(HOLD_CAPACITY),
        }
    }

    /// Where `key`'s datagram goes, if its first fragment was seen lately.
    pub fn follow(&self, key: &FragKey, now: u32) -> Option<FragTarget> {
        self.cache.lookup(key, now)
    }

    /// A first fragment went to `target`: the datagram's other fragments
    /// follow it, those held now as well (released). `false` if there was
    /// no room to remember it.
    pub fn first_seen(&mut self, key: FragKey, target: FragTarget, now: u32) -> bool {
        self.release(&key, Some(target));
        self.cache.insert(key, target, now)
    }

    /// A first fragment that kp did not translate (not kp's, or dropped):
    /// the datagram's other fragments are not kp's either, so they are not
    /// held; those held now are given up at once.
    pub fn first_refused(&mut self, key: FragKey, now: u32) {
        self.release(&key, None);
        self.cache.insert(key, FragTarget::NOT_KP, now);
    }

    fn release(&mut self, key: &FragKey, to: Option<FragTarget>) {
        if self.held.is_empty() {
            return;
        }
        let released = &mut self.released;
        self.held.retain(|h| {
            let mine = h.key == *key;
            if mine {
                released.push(Released::of(h, to));
            }
            !mine
        });
    }

    /// Keeps a fragment that came before its first one. `false`: no room
    /// (what is held and what waits for its owner count alike).
    pub fn hold(&mut self, key: FragKey, ticket: HoldTicket, now: u32) -> bool {
        if self.held.len() + self.released.len() >= HOLD_CAPACITY {
            return false;
        }
        self.held.push(Held { key, ticket, expires: now + TIMEOUT });
        true
    }

    /// Gives up the fragments `owner` holds whose time is over.
    #[inline]
    pub fn expire(&mut self, now: u32, owner: u32) {
        if self.held.is_empty() {
            return;
        }
        let released = &mut self.released;
        self.held.retain(|h| {
            let over = h.ticket.owner == owner && h.expires <= now;
            if over {
                released.push(Released::of(h, None));
            }
            !over
        });
    }

    /// Fragments held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Hands `owner` its fragments released or given up since it last
    /// took them, in order: it sends them on (or drops them) now.
    #[inline]
    pub fn take_released(&mut self, owner: u32, mut take: impl FnMut(Released)) {
        if self.released.is_empty() {
            return;
        }
        self.released.retain(|r| {
            let mine = r.ticket.owner == owner;
            if mine {
                take(*r);
            }
            !mine
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u32) -> FragKey {
        FragKey { family: IpFamily::V4, protocol: 17, reply: false, src: [1; 16], dst: [2; 16], id }
    }

    fn target(pod: u32) -> FragTarget {
        FragTarget { vip: 0, pod, addr: [3; 16], cross: None }
    }

    #[test]
    fn remembers_until_the_timeout() {
        let mut c = FragmentCache::new();
        assert!(c.insert(key(1), target(7), 10));
        assert_eq!(c.lookup(&key(1), 10), Some(target(7)));
        assert_eq!(c.lookup(&key(1), 10 + TIMEOUT - 1), Some(target(7)));
        assert_eq!(c.lookup(&key(1), 10 + TIMEOUT), None);
        assert_eq!(c.lookup(&key(2), 10), None);
        let mut other = key(1);
        other.reply = true;
        assert_eq!(c.lookup(&other, 10), None, "a reply is another datagram");
    }

    #[test]
    fn full_probe_refuses_and_expired_slots_are_reused() {
        let mut c = FragmentCache::new();
        // Fill far beyond capacity: some inserts must fail, none may
        // overwrite a live entry.
        let ok: Vec<u32> = (0..CAPACITY as u32 * 2).filter(|&id| c.insert(key(id), target(id), 5)).collect();
        assert!(ok.len() < CAPACITY * 2 && ok.len() > CAPACITY / 2, "{}", ok.len());
        for &id in &ok {
            assert_eq!(c.lookup(&key(id), 5), Some(target(id)));
        }
        // Once they expire, the slots take new datagrams.
        assert!(c.insert(key(u32::MAX), target(1), 5 + TIMEOUT));
        assert_eq!(c.lookup(&key(u32::MAX), 5 + TIMEOUT), Some(target(1)));
    }

    fn ticket(handle: u32, owner: u32, tag: u16) -> HoldTicket {
        HoldTicket { handle, owner, tag }
    }

    fn taken(f: &mut Fragments, owner: u32) -> Vec<Released> {
        let mut out = Vec::new();
        f.take_released(owner, |r| out.push(r));
        out
    }

    #[test]
    fn held_fragments_follow_their_first_or_expire() {
        let mut f = Fragments::new();
        assert!(f.hold(key(1), ticket(100, 1, 7), 10));
        assert!(f.hold(key(2), ticket(101, 1, 7), 10));
        assert!(f.hold(key(1), ticket(102, 2, 8), 11));
        let mut reply = key(1);
        reply.reply = true;
        assert!(f.hold(reply, ticket(103, 3, 9), 10));
        assert!(taken(&mut f, 1).is_empty());
        // The first fragment of datagram 1 releases both its fragments,
        // each to its own owner.
        assert!(f.first_seen(key(1), target(4), 11));
        let out = taken(&mut f, 1);
        assert_eq!(out.iter().map(|r| r.ticket).collect::<Vec<_>>(), [ticket(100, 1, 7)]);
        assert!(out.iter().all(|r| r.to == Some(target(4)) && !r.reply));
        assert_eq!(taken(&mut f, 2).iter().map(|r| r.ticket.handle).collect::<Vec<_>>(), [102]);
        assert_eq!(f.follow(&key(1), 11), Some(target(4)));
        // Datagram 2's time runs out; only its owner gives it up.
        f.expire(10 + TIMEOUT - 1, 1);
        f.expire(10 + TIMEOUT, 2);
        assert!(taken(&mut f, 1).is_empty() && taken(&mut f, 2).is_empty());
        f.expire(10 + TIMEOUT, 1);
        let out = taken(&mut f, 1);
        assert_eq!(
            out,
            [Released { ticket: ticket(101, 1, 7), family: IpFamily::V4, reply: false, to: None }]
        );
        assert_eq!(f.held(), 1);
        f.expire(10 + TIMEOUT, 3);
        let out = taken(&mut f, 3);
        assert_eq!(out.iter().map(|r| (r.ticket.handle, r.reply)).collect::<Vec<_>>(), [(103, true)]);
        assert_eq!(f.held(), 0);
    }

    #[test]
    fn holding_stops_at_capacity() {
        let mut f = Fragments::new();
        for h in 0..HOLD_CAPACITY as u32 {
            assert!(f.hold(key(h), ticket(h, 1, 0), 1));
        }
        assert!(!f.hold(key(9999), ticket(9999, 1, 0), 1));
        f.expire(1 + TIMEOUT, 1);
        // Given up but not yet taken: still no room.
        assert!(!f.hold(key(9999), ticket(9999, 1, 0), 1 + TIMEOUT));
        assert_eq!(taken(&mut f, 1).len(), HOLD_CAPACITY);
        assert!(f.hold(key(9999), ticket(9999, 1, 0), 1 + TIMEOUT));
    }

    #[test]
    fn a_released_fragment_gets_its_datagrams_address() {
        // IPv4 header of a non-first fragment to 192.0.2.10.
        let mut pkt = vec![0x45, 0, 0, 28, 0, 1, 0, 10, 64, 17, 0, 0, 198, 51, 100, 1, 192, 0, 2, 10];
        pkt.extend_from_slice(&[0; 8]);
        let sum = crate::packet::checksum::fold(crate::packet::checksum::sum(&pkt[..20]));
        pkt[10..12].copy_from_slice(&(!sum).to_be_bytes());
        let mut addr = [0; 16];
        addr[..4].copy_from_slice(&[203, 0, 113, 5]);
        let r = Released {
            ticket: ticket(1, 1, 0),
            family: IpFamily::V4,
            reply: false,
            to: Some(FragTarget { vip: 0, pod: 0, addr, cross: None }),
        };
        assert!(r.apply(&mut pkt));
        assert_eq!(&pkt[16..20], &[203, 0, 113, 5]);
        assert_eq!(crate::packet::checksum::fold(crate::packet::checksum::sum(&pkt[..20])), 0xffff);
        assert!(!Released { to: None, ..r }.apply(&mut pkt));
    }
}
