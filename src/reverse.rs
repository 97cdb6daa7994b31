//! The reply-translation table: state every worker can read.
//!
//! A reply from a pod (pod:target_port -> client:port) must get its source
//! set back to exactly what the client sent to (the VIP address and port,
//! or the node address and NodePort). That is per-flow state, created by
//! whichever worker handled the request; the reply may arrive on any other
//! worker. kp keeps one table shared by all workers:
//!
//! - keyed by the reply's own 5-tuple (pod address and port, client
//!   address and port, protocol, family), so the same pod backing two
//!   Services on one target port is told apart by the client's port, as
//!   the pod itself tells the connections apart;
//! - written only by the worker that owns the forward flow: inserted when
//!   the flow is created, removed when its forward entry is evicted,
//!   swept or repointed, so its lifetime follows the flow's;
//! - read lock-free: each bucket has a sequence number (a seqlock). A
//!   writer makes it odd with a compare-and-swap (writers exclude each
//!   other per bucket, only on new and ending flows), writes, and makes it
//!   even again; a reader retries if the number changed or was odd while it
//!   read. Every word is an atomic, so a racing read is never undefined
//!   behaviour, only retried.
//!
//! A bucket is one 64-byte line of sequence number and slot signatures,
//! plus one 64-byte line per slot (five key words, three value words), so a
//! lookup touches two cache lines.

use crate::flowtable::FlowKey;
use crate::mem::{Zeroable, ZeroedArray};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

pub const SLOTS: usize = 4;

/// What a reply's source becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Original {
    /// The address the client sent to (IPv4 in the first four bytes).
    pub addr: [u8; 16],
    pub port: u16,
    /// The VIP the flow belongs to.
    pub vip: u32,
}

#[repr(C, align(64))]
struct Head {
    seq: AtomicU64,
    /// Per slot: 0 for free, else the key's signature with the low bit set.
    sig: [AtomicU32; SLOTS],
}

#[repr(C, align(64))]
struct Slot {
    words: [AtomicU64; 8],
}

// SAFETY: atomics of integers; all-zero is "free" everywhere.
unsafe impl Zeroable for Head {}
// SAFETY: as above.
unsafe impl Zeroable for Slot {}

/// The shared reply table. `Sync`: any thread may read, owners write.
pub struct ReverseTable {
    heads: ZeroedArray<Head>,
    slots: ZeroedArray<Slot>,
    mask: u32,
}

// SAFETY: all shared state is atomics, accessed under the seqlock protocol.
unsafe impl Sync for ReverseTable {}
// SAFETY: as above.
unsafe impl Send for ReverseTable {}

/// Reader retries before giving up (a writer holding a bucket for this
/// long is descheduled; the reply then passes untranslated, counted).
const READ_TRIES: usize = 64;

impl ReverseTable {
    pub fn new(n_buckets: u32) -> Option<ReverseTable> {
        assert!(n_buckets.is_power_of_two());
        Some(ReverseTable {
            heads: ZeroedArray::new(n_buckets as usize)?,
            slots: ZeroedArray::new(n_buckets as usize * SLOTS)?,
            mask: n_buckets - 1,
        })
    }

    pub fn n_buckets(&self) -> u32 {
        self.mask + 1
    }

    #[inline(always)]
    fn place(&self, hash: u64) -> (usize, u32) {
        ((hash as u32 & self.mask) as usize, (hash >> 32) as u32 | 1)
    }

    /// Records `orig` for the reply key. Returns false when the bucket is
    /// full (the reply will pass untranslated).
    pub fn insert(&self, key: &FlowKey, orig: Original) -> bool {
        let (b, sig) = self.place(key.hash());
        let head = &self.heads[b];
        let s = lock(head);
        let mut free = None;
        let mut done = false;
        for i in 0..SLOTS {
            let cur = head.sig[i].load(Ordering::Relaxed);
            if cur == sig && self.key_at(b, i) == key.words5() {
                self.write_value(b, i, &orig);
                done = true;
                break;
            }
            if cur == 0 && free.is_none() {
                free = Some(i);
            }
        }
        if !done {
            if let Some(i) = free {
                let w = &self.slots[b * SLOTS + i].words;
                for (dst, src) in w.iter().zip(key.words5()) {
                    dst.store(src, Ordering::Relaxed);
                }
                self.write_value(b, i, &orig);
                head.sig[i].store(sig, Ordering::Relaxed);
                done = true;
            }
        }
        head.seq.store(s + 2, Ordering::Release);
        done
    }

    /// Forgets the reply key (its flow ended).
    pub fn remove(&self, key: &FlowKey) {
        let (b, sig) = self.place(key.hash());
        let head = &self.heads[b];
        let s = lock(head);
        for i in 0..SLOTS {
            if head.sig[i].load(Ordering::Relaxed) == sig && self.key_at(b, i) == key.words5() {
                head.sig[i].store(0, Ordering::Relaxed);
            }
        }
        head.seq.store(s + 2, Ordering::Release);
    }

    /// Where a reply's source must go back to, if it belongs to a flow.
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<Original> {
        let (b, sig) = self.place(key.hash());
        let head = &self.heads[b];
        let want = key.words5();
        for _ in 0..READ_TRIES {
            let s1 = head.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                core::hint::spin_loop();
                continue;
            }
            let mut found = None;
            for i in 0..SLOTS {
                if head.sig[i].load(Ordering::Relaxed) == sig && self.key_at(b, i) == want {
                    found = Some(self.read_value(b, i));
                    break;
                }
            }
            fence(Ordering::Acquire);
            if head.seq.load(Ordering::Relaxed) == s1 {
                return found;
            }
        }
        None
    }

    /// Prefetches the bucket head of a key's hash.
    #[inline(always)]
    pub fn prefetch(&self, hash: u64) {
        let (b, _) = self.place(hash);
        crate::mem::prefetch(&self.heads[b]);
    }

    fn key_at(&self, b: usize, i: usize) -> [u64; 5] {
        let w = &self.slots[b * SLOTS + i].words;
        core::array::from_fn(|k| w[k].load(Ordering::Relaxed))
    }

    fn write_value(&self, b: usize, i: usize, o: &Original) {
        let w = &self.slots[b * SLOTS + i].words;
        w[5].store(u64::from_ne_bytes(o.addr[..8].try_into().unwrap()), Ordering::Relaxed);
        w[6].store(u64::from_ne_bytes(o.addr[8..].try_into().unwrap()), Ordering::Relaxed);
        w[7].store(u64::from(o.port) | u64::from(o.vip) << 32, Ordering::Relaxed);
    }

    fn read_value(&self, b: usize, i: usize) -> Original {
        let w = &self.slots[b * SLOTS + i].words;
        let (a, c, d) =
            (w[5].load(Ordering::Relaxed), w[6].load(Ordering::Relaxed), w[7].load(Ordering::Relaxed));
        let mut addr = [0u8; 16];
        addr[..8].copy_from_slice(&a.to_ne_bytes());
        addr[8..].copy_from_slice(&c.to_ne_bytes());
        Original { addr, port: d as u16, vip: (d >> 32) as u32 }
    }

    /// Live entries (a full scan, for `show kp`).
    pub fn len(&self) -> usize {
        self.heads.iter().map(|h| h.sig.iter().filter(|s| s.load(Ordering::Relaxed) != 0).count()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Takes a bucket for writing: waits for an even sequence number and makes
/// it odd. Returns the even value it started from.
#[inline]
fn lock(head: &Head) -> u64 {
    loop {
        let s = head.seq.load(Ordering::Relaxed);
        if s & 1 == 0
            && head.seq.compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed).is_ok()
        {
            // Make the odd number visible before any slot write.
            fence(Ordering::Release);
            return s;
        }
        core::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{proto, IpFamily, Parsed};
    use std::sync::Arc;

    fn key(i: u32) -> FlowKey {
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[10, 1, 0, (i % 200) as u8]);
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&i.to_be_bytes());
        FlowKey::new(
            0,
            &Parsed {
                family: IpFamily::V4,
                protocol: proto::TCP,
                src,
                dst,
                src_port: 8080,
                dst_port: (i % 60000) as u16,
                l4_offset: 20,
                l4_len: 20,
            },
        )
    }

    /// Values derived from the key, so a torn read would show.
    fn orig(i: u32) -> Original {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&i.wrapping_mul(2654435761).to_be_bytes());
        addr[12..].copy_from_slice(&i.to_le_bytes());
        Original { addr, port: (i % 65000) as u16, vip: i }
    }

    #[test]
    fn insert_lookup_remove() {
        let t = ReverseTable::new(64).unwrap();
        assert_eq!(t.lookup(&key(1)), None);
        assert!(t.insert(&key(1), orig(1)));
        assert_eq!(t.lookup(&key(1)), Some(orig(1)));
        assert_eq!(t.lookup(&key(2)), None);
        assert!(t.insert(&key(1), orig(7)), "re-insert updates");
        assert_eq!(t.lookup(&key(1)), Some(orig(7)));
        assert_eq!(t.len(), 1);
        t.remove(&key(1));
        assert_eq!(t.lookup(&key(1)), None);
        assert!(t.is_empty());
    }

    #[test]
    fn full_bucket_refuses() {
        let t = ReverseTable::new(1).unwrap();
        for i in 0..SLOTS as u32 {
            assert!(t.insert(&key(i), orig(i)));
        }
        assert!(!t.insert(&key(99), orig(99)));
        for i in 0..SLOTS as u32 {
            assert_eq!(t.lookup(&key(i)), Some(orig(i)));
        }
    }

    /// Writers on two threads, readers on two more: a reader sees either
    /// nothing or exactly the value written for that key, never a mix.
    #[test]
    fn concurrent_readers_never_see_torn_entries() {
        let t = Arc::new(ReverseTable::new(16).unwrap());
        let writers: Vec<_> = (0..2u32)
            .map(|w| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    for round in 0..20_000u32 {
                        let i = (round * 2 + w) % 97;
                        if round % 3 == 2 {
                            t.remove(&key(i));
                        } else {
                            t.insert(&key(i), orig(i));
                        }
                    }
                })
            })
            .collect();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    let mut seen = 0;
                    for round in 0..50_000u32 {
                        let i = round % 97;
                        if let Some(o) = t.lookup(&key(i)) {
                            assert_eq!(o, orig(i));
                            seen += 1;
                        }
                    }
                    seen
                })
            })
            .collect();
        writers.into_iter().for_each(|h| h.join().unwrap());
        let seen: usize = readers.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(seen > 0);
    }
}
