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
//! lookup touches two cache lines. Each key has two buckets and goes into
//! either (see `place`); a lookup tries the second only when the first
//! lacks the key.

use crate::flowtable::FlowKey;
use crate::mem::{Zeroable, ZeroedArray};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

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
            slots: ZeroedArray::sparse(n_buckets as usize * SLOTS)?,
            mask: n_buckets - 1,
        })
    }

    pub fn n_buckets(&self) -> u32 {
        self.mask + 1
    }

    /// A key's two buckets and its signature. Two choices: a key goes to
    /// whichever of them has room, so an insert fails only when both are
    /// full (with one choice, about 0.3% of keys found their bucket full
    /// at one key per bucket, and their replies passed untranslated).
    #[inline(always)]
    fn place(&self, hash: u64) -> ([usize; 2], u32) {
        let sig = (hash >> 32) as u32 | 1;
        let other = sig.wrapping_mul(0x9e37_79b9).rotate_left(16) ^ hash as u32;
        ([(hash as u32 & self.mask) as usize, (other & self.mask) as usize], sig)
    }

    /// Records `orig` for the reply key. Returns false when both its
    /// buckets are full (the reply will pass untranslated).
    ///
    /// Only the flow's own worker writes its key, so what the unlocked
    /// reads below find of it cannot change meanwhile; a bucket is locked
    /// only to write. The first bucket takes the key while it is less than
    /// half full (one head read, the common case); then the key goes to
    /// the less full of the two (`two_bucket_choices_...` below). A key
    /// left behind in its second bucket is shadowed (lookups try the first
    /// one first) and removed with it.
    pub fn insert(&self, key: &FlowKey, orig: Original) -> bool {
        let ([first, second], sig) = self.place(key.hash());
        let want = key.words5();
        if let Some(i) = self.find_in(first, sig, &want) {
            self.locked(first, || self.write_value(first, i, &orig));
            return true;
        }
        let used_first = self.used(first);
        if used_first < SLOTS / 2 || first == second {
            return self.put(first, sig, &want, &orig)
                || (first != second && self.put(second, sig, &want, &orig));
        }
        if let Some(i) = self.find_in(second, sig, &want) {
            self.locked(second, || self.write_value(second, i, &orig));
            return true;
        }
        let order = if used_first <= self.used(second) { [first, second] } else { [second, first] };
        order.iter().any(|&b| self.put(b, sig, &want, &orig))
    }

    /// Slots of bucket `b` in use.
    #[inline(always)]
    fn used(&self, b: usize) -> usize {
        self.heads[b].sig.iter().filter(|s| s.load(Ordering::Relaxed) != 0).count()
    }

    /// The slot of bucket `b` holding the key (unlocked reads: by the
    /// key's own writer, or by a reader inside the seqlock's retry loop).
    #[inline(always)]
    fn find_in(&self, b: usize, sig: u32, want: &[u64; 5]) -> Option<usize> {
        (0..SLOTS)
            .find(|&i| self.heads[b].sig[i].load(Ordering::Relaxed) == sig && self.key_at(b, i) == *want)
    }

    /// Runs `f` with bucket `b` held for writing.
    #[inline(always)]
    fn locked<T>(&self, b: usize, f: impl FnOnce() -> T) -> T {
        let head = &self.heads[b];
        let s = lock(head);
        let out = f();
        head.seq.store(s + 2, Ordering::Release);
        out
    }

    /// Puts the key in a free slot of bucket `b`; false if it has none.
    fn put(&self, b: usize, sig: u32, want: &[u64; 5], orig: &Original) -> bool {
        let head = &self.heads[b];
        self.locked(b, || {
            let Some(i) = (0..SLOTS).find(|&i| head.sig[i].load(Ordering::Relaxed) == 0) else {
                return false;
            };
            let w = &self.slots[b * SLOTS + i].words;
            for (dst, src) in w.iter().zip(want) {
                dst.store(*src, Ordering::Relaxed);
            }
            self.write_value(b, i, orig);
            head.sig[i].store(sig, Ordering::Relaxed);
            true
        })
    }

    /// Forgets the reply key (its flow ended), in both its buckets.
    pub fn remove(&self, key: &FlowKey) {
        let ([first, second], sig) = self.place(key.hash());
        let want = key.words5();
        let buckets = if first == second { &[first][..] } else { &[first, second][..] };
        for &b in buckets {
            if let Some(i) = self.find_in(b, sig, &want) {
                self.locked(b, || self.heads[b].sig[i].store(0, Ordering::Relaxed));
            }
        }
    }

    /// Where a reply's source must go back to, if it belongs to a flow.
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<Original> {
        let (buckets, sig) = self.place(key.hash());
        let want = key.words5();
        self.lookup_in(buckets[0], sig, &want).or_else(|| self.lookup_in(buckets[1], sig, &want))
    }

    #[inline(always)]
    fn lookup_in(&self, b: usize, sig: u32, want: &[u64; 5]) -> Option<Original> {
        let head = &self.heads[b];
        for _ in 0..READ_TRIES {
            let s1 = head.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                core::hint::spin_loop();
                continue;
            }
            let found = self.find_in(b, sig, want).map(|i| self.read_value(b, i));
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
        let ([b, _], _) = self.place(hash);
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

/// The reply tables a snapshot reads: the current one and, while the flow
/// tables are being resized (`kp conf buckets`), the ones it replaced,
/// until every worker has moved its flows over (see
/// [`crate::dataplane::Worker`]'s drain). Lookups try the current table
/// first, so the older ones cost only misses, and only while they last.
#[derive(Clone)]
pub struct Replies {
    current: Arc<ReverseTable>,
    older: Vec<Arc<ReverseTable>>,
}

impl Replies {
    pub fn new(current: Arc<ReverseTable>, older: Vec<Arc<ReverseTable>>) -> Replies {
        Replies { current, older }
    }

    /// Tables still being drained into the current one.
    pub fn n_older(&self) -> usize {
        self.older.len()
    }

    /// Records `orig` for the reply key, in the current table.
    #[inline]
    pub fn insert(&self, key: &FlowKey, orig: Original) -> bool {
        self.current.insert(key, orig)
    }

    /// Forgets the reply key wherever it is.
    #[inline]
    pub fn remove(&self, key: &FlowKey) {
        self.current.remove(key);
        for t in &self.older {
            t.remove(key);
        }
    }

    #[inline(always)]
    pub fn lookup(&self, key: &FlowKey) -> Option<Original> {
        match self.current.lookup(key) {
            None if !self.older.is_empty() => self.older.iter().find_map(|t| t.lookup(key)),
            found => found,
        }
    }

    #[inline(always)]
    pub fn prefetch(&self, hash: u64) {
        self.current.prefetch(hash);
    }

    /// Live entries in all tables (a full scan, for `show kp` and tests).
    pub fn len(&self) -> usize {
        self.current.len() + self.older.iter().map(|t| t.len()).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves the reply key's entry from an older table into the current
    /// one (its flow moved to a resized flow table). Returns false when it
    /// has no entry any more or the current bucket is full.
    pub fn adopt(&self, key: &FlowKey) -> bool {
        if self.current.lookup(key).is_some() {
            return true;
        }
        for t in &self.older {
            if let Some(o) = t.lookup(key) {
                t.remove(key);
                return self.current.insert(key, o);
            }
        }
        false
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

    #[test]
    fn replies_read_older_tables_until_entries_move() {
        let (old, new) = (Arc::new(ReverseTable::new(4).unwrap()), Arc::new(ReverseTable::new(64).unwrap()));
        assert!(old.insert(&key(1), orig(1)) && old.insert(&key(2), orig(2)));
        let r = Replies::new(Arc::clone(&new), vec![Arc::clone(&old)]);
        assert_eq!(r.lookup(&key(1)), Some(orig(1)), "found in the older table");
        assert!(r.adopt(&key(1)));
        assert_eq!((new.lookup(&key(1)), old.lookup(&key(1))), (Some(orig(1)), None), "moved");
        assert!(r.adopt(&key(1)), "already current");
        assert!(!r.adopt(&key(3)), "nothing to move");
        r.remove(&key(2));
        assert_eq!(r.lookup(&key(2)), None, "removed from the older table too");
        assert!(r.insert(&key(4), orig(4)));
        assert_eq!(
            (new.lookup(&key(4)), old.lookup(&key(4))),
            (Some(orig(4)), None),
            "inserts go to the current table"
        );
    }

    /// Two choices per key: with half the slots in use no insert fails
    /// (one choice: 3.5% did), and at three quarters (the most a full set
    /// of flow tables can need) about 1% do (one choice: 18%).
    #[test]
    fn two_bucket_choices_keep_inserts_from_failing_under_load() {
        // Reply keys of a few pods, client ports counting up.
        let reply = |i: u32| {
            let mut src = [0u8; 16];
            src[..4].copy_from_slice(&[10, 1, 0, (i % 7) as u8]);
            let mut dst = [0u8; 16];
            dst[..4].copy_from_slice(&[198, 51, 100, (i / 7 % 64) as u8]);
            let p = Parsed {
                family: IpFamily::V4,
                protocol: proto::TCP,
                src,
                dst,
                src_port: 8080,
                dst_port: (10_000 + i / 448) as u16,
                l4_offset: 20,
                l4_len: 20,
            };
            FlowKey::new(0, &p)
        };
        for (per_bucket, max_failed) in [(2, 0), (3, 1 << 12 >> 5)] {
            let t = ReverseTable::new(1 << 12).unwrap();
            let keys: Vec<FlowKey> = (0..per_bucket << 12).map(reply).collect();
            let failed = keys.iter().zip(0..).filter(|(k, i)| !t.insert(k, orig(*i))).count();
            assert!(failed <= max_failed, "{failed} of {} inserts failed", keys.len());
            let found = keys.iter().zip(0..).filter(|(k, i)| t.lookup(k) == Some(orig(*i))).count();
            assert_eq!(found, keys.len() - failed);
            for k in &keys {
                t.remove(k);
            }
            assert!(t.is_empty());
        }
    }
}
