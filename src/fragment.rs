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

use crate::packet::IpFamily;

/// Ticks a datagram's entry lives after its first fragment (1 to 2 s).
pub const TIMEOUT: u32 = 2;

/// Datagrams in flight per thread.
pub const CAPACITY: usize = 4096;

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
            target: FragTarget { vip: 0, pod: 0, addr: [0; 16] },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u32) -> FragKey {
        FragKey { family: IpFamily::V4, protocol: 17, reply: false, src: [1; 16], dst: [2; 16], id }
    }

    fn target(pod: u32) -> FragTarget {
        FragTarget { vip: 0, pod, addr: [3; 16] }
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
}
