//! Per-worker-thread table of established flows.
//!
//! One table per worker thread, so nothing here is shared or locked: a
//! `FlowTable` is `Send` (built on the main thread, handed to its worker)
//! but used by one thread at a time.
//!
//! **Layout.** A bucket is one 64-byte cache line holding three entries as
//! parallel arrays (compact id words `a`, `b`, `c`, tag byte, expiry tick,
//! pod), so one lookup reads one line and compares all three slots with a
//! few SSE2 operations. For an IPv4 flow the compact id *is* the whole
//! 5-tuple (addresses, ports, protocol): a hit is decided inside the
//! bucket, with no second memory access. The VIP index is not stored: the
//! address and port a flow was sent to decide its VIP, and the data path
//! checks that the entry's pod belongs to that VIP (an address that moved
//! to another Service takes its flows along). Keys that do not fit (IPv6)
//! store an 80-bit **signature** instead, tagged: a keyed hash of the whole
//! key (VIP index included) under a per-process secret
//! ([`randomize_hash_secret`]; a keyed sum of 128-bit products, whose
//! bucket is a multiply-fold of both its halves, so sharing a bucket says
//! next to nothing of the signature bits), so a signature match is the
//! hit, decided in the bucket's line as for IPv4. Two live flows with one signature in one bucket happen
//! with odds of about 3 in 2^80 per lookup (at 10^9 lookups a second, once
//! in 10^7 years), and nobody can aim for it without the secret. The other
//! 16 bits of the id's words hold the entry's [`SourceNote`] (nat64: where
//! its binding is), so a nat64 hit too reads one line. The full 48-byte
//! key is kept in a parallel array (144 bytes per bucket, allocated only
//! once there are IPv6 VIPs) for what needs the flow back: expiry,
//! resizes, reply state; the data path's IPv6 fast lane does not even
//! build it for a hit (id and hash come from the header words).
//!
//! **Batches.** DRAM latency is hidden by splitting a lookup in steps that
//! a caller runs over a whole batch at a time: [`FlowTable::prefetch_bucket`]
//! (from the hash), then
//! [`FlowTable::candidates`] (reads the bucket) and [`FlowTable::hit`]
//! (refreshes the entry); the worker's pipeline runs them packets apart.
//! [`FlowTable::hit_other`] looks in a flow's second bucket.
//!
//! **Expiry** is lazy: a slot is live while `expiry > now`. A new entry is
//! *embryonic*: it lives `embryonic` ticks (a few seconds). A hit by a
//! packet that establishes the flow (anything but a TCP SYN: the client's
//! second packet, e.g. the ACK that follows the pod's SYN-ACK) moves the
//! expiry to `now + timeout`; a SYN only to `now + embryonic`. So a flood
//! of new flows (spoofed SYNs, one-packet UDP) is gone within seconds,
//! while established flows are never pushed out: a miss inserts only into
//! a dead slot of its bucket, and when all three are live the insert fails
//! and the caller forwards the packet untracked (by Maglev, which sends it
//! to the pod it would have had anyway while the pods stay the same).

use crate::mem::{prefetch, Zeroable, ZeroedArray};
use crate::packet::{IpFamily, Parsed, V4Fast, V6Fast};
use core::sync::atomic::{AtomicU64, Ordering};

/// Slots per bucket: three 20-byte entries fill one cache line.
pub const ENTRIES_PER_BUCKET: usize = 3;

/// Limits on `kp conf buckets` (a power of two): 2^22 buckets hold 12M
/// flows in 256 MiB per worker thread (plus 576 MiB of IPv6 keys while
/// there are IPv6 VIPs, see [`FlowTable::add_keys`]).
pub const MIN_BUCKETS: u32 = 16;
pub const MAX_BUCKETS: u32 = 1 << 22;
pub const DEFAULT_BUCKETS: u32 = 1 << 16;
/// Default idle timeout, seconds (the seed plugin's 40 s).
pub const DEFAULT_TIMEOUT: u32 = 40;
/// Default idle timeout of an embryonic flow (one packet so far, or TCP
/// SYNs only), seconds: long enough for the first SYN retransmissions
/// (1 s, 3 s), short enough that a flood of one-packet flows leaves the
/// table within seconds. An expired embryonic flow that comes back is
/// simply new again: Maglev sends it to the same pod.
pub const DEFAULT_EMBRYONIC_TIMEOUT: u32 = 5;

/// The full identity of a flow, packed into six words so comparing and
/// hashing are a handful of word operations.
///
/// Layout (bytes): src address 0..16, dst address 16..32, src and dst port
/// 32..36 (as on the wire), protocol 36, family 37 (4 or 6), zero 38..40,
/// VIP index 40..44, zero 44..48. IPv4 addresses use the first four bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[repr(C, align(16))]
pub struct FlowKey {
    words: [u64; 6],
}

/// Key bytes 32..40 as a word: ports, protocol, family, zero.
#[inline(always)]
fn tail_word(ports: [u8; 4], protocol: u8, family: u8) -> u64 {
    u64::from_ne_bytes([ports[0], ports[1], ports[2], ports[3], protocol, family, 0, 0])
}

/// Key bytes 40..48 as a word: the VIP index, then zero.
#[inline(always)]
fn vip_word(vip: u32) -> u64 {
    let v = vip.to_ne_bytes();
    u64::from_ne_bytes([v[0], v[1], v[2], v[3], 0, 0, 0, 0])
}

/// The first four bytes of a word (an IPv4 address, or the ports).
#[inline(always)]
fn low4(w: u64) -> u32 {
    let b = w.to_ne_bytes();
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

/// A word whose first four bytes are `x`'s, then zero.
#[inline(always)]
fn word4(x: u32) -> u64 {
    let b = x.to_ne_bytes();
    u64::from_ne_bytes([b[0], b[1], b[2], b[3], 0, 0, 0, 0])
}

impl FlowKey {
    #[inline(always)]
    pub fn new(vip: u32, parsed: &Parsed) -> FlowKey {
        let w = |a: &[u8; 16], at: usize| u64::from_ne_bytes(a[at..at + 8].try_into().unwrap());
        let family: u8 = match parsed.family {
            IpFamily::V4 => 4,
            IpFamily::V6 => 6,
        };
        let mut ports = [0u8; 4];
        ports[..2].copy_from_slice(&parsed.src_port.to_be_bytes());
        ports[2..].copy_from_slice(&parsed.dst_port.to_be_bytes());
        FlowKey {
            words: [
                w(&parsed.src, 0),
                w(&parsed.src, 8),
                w(&parsed.dst, 0),
                w(&parsed.dst, 8),
                tail_word(ports, parsed.protocol, family),
                vip_word(vip),
            ],
        }
    }

    /// Whole-key equality as word operations (no `memcmp` call).
    #[inline(always)]
    pub fn same(&self, other: &FlowKey) -> bool {
        let (a, b) = (&self.words, &other.words);
        ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) | (a[5] ^ b[5])) == 0
    }

    /// The key of this flow's replies from `pod` (address and port): source
    /// and destination swapped, the pod in place of the VIP, no VIP index.
    pub fn reply_key(&self, pod_addr: &[u8; 16], pod_port: u16) -> FlowKey {
        let w = &self.words;
        let tail = w[4].to_ne_bytes();
        let pp = pod_port.to_be_bytes();
        let t = tail_word([pp[0], pp[1], tail[0], tail[1]], tail[4], tail[5]);
        let pw = |at: usize| u64::from_ne_bytes(pod_addr[at..at + 8].try_into().unwrap());
        FlowKey { words: [pw(0), pw(8), w[0], w[1], t, 0] }
    }

    /// The key of this flow's replies when they are of another family
    /// (nat46): from `pod_addr`:`pod_port` to `client` (the client's
    /// address as the pods see it) at the client's port, tagged `family`.
    pub fn reply_key_as(&self, pod_addr: &[u8; 16], pod_port: u16, client: &[u8; 16], family: u8) -> FlowKey {
        let tail = self.words[4].to_ne_bytes();
        let pp = pod_port.to_be_bytes();
        let t = tail_word([pp[0], pp[1], tail[0], tail[1]], tail[4], family);
        let w = |a: &[u8; 16], at: usize| u64::from_ne_bytes(a[at..at + 8].try_into().unwrap());
        FlowKey { words: [w(pod_addr, 0), w(pod_addr, 8), w(client, 0), w(client, 8), t, 0] }
    }

    /// The source address of an IPv4 key.
    pub fn src_v4(&self) -> [u8; 4] {
        low4(self.words[0]).to_ne_bytes()
    }

    /// The original destination (address, port) of a forward key.
    pub fn original_dst(&self) -> ([u8; 16], u16) {
        let tail = self.words[4].to_ne_bytes();
        (self.addr(2), u16::from_be_bytes([tail[2], tail[3]]))
    }

    /// The address family (4 or 6).
    pub fn family(&self) -> u8 {
        self.words[4].to_ne_bytes()[5]
    }

    /// The first five words: the 5-tuple and family without the VIP (what
    /// the shared reply table keys on).
    #[inline(always)]
    pub fn words5(&self) -> [u64; 5] {
        [self.words[0], self.words[1], self.words[2], self.words[3], self.words[4]]
    }

    /// The VIP index this flow belongs to.
    pub fn vip(&self) -> u32 {
        u32::from_ne_bytes(self.words[5].to_ne_bytes()[..4].try_into().unwrap())
    }

    /// The 64-bit hash that places the key in a table (its low bits pick
    /// the bucket). An IPv4 key (three words that carry anything) takes a
    /// one-multiply hash (`hash_v4`), which the data path's fast lane calls
    /// directly from header fields: both ways agree. An IPv6 key's is keyed
    /// by the process's secret (see [`FlowKey::id_hash`]).
    #[inline(always)]
    pub fn hash(&self) -> u64 {
        self.id_hash().1
    }

    /// The key's compact id (see [`FlowKey::compact`]) and
    /// [`hash`](FlowKey::hash), computed together: for IPv6 both come from
    /// one 128-bit keyed sum of products.
    #[inline(always)]
    pub fn id_hash(&self) -> (u128, u64) {
        let w = &self.words;
        if self.family() == 4 {
            return (pack_id(low4(w[0]), low4(w[2]), low4(w[4]), self.protocol()), self.hash_v4());
        }
        signature_hash(w, self.protocol())
    }

    /// A hash of the whole key that is the same on every node and in every
    /// process (the IPv6 [`hash`](FlowKey::hash) is not): for what must
    /// agree across nodes, as Maglev's choice of pod for ECMP peers.
    #[inline(always)]
    pub fn stable_hash(&self) -> u64 {
        let w = &self.words;
        if self.family() == 4 {
            return self.hash_v4();
        }
        let h = mum(w[0] ^ 0xa076_1d64_78bd_642f, w[1] ^ 0xe703_7ed1_a0b4_28db)
            ^ mum(w[2] ^ 0x8ebc_6af0_9c88_c6e3, w[3] ^ 0x5899_65cc_7537_4cc3)
            ^ mum(w[4] ^ 0x1d8e_4e27_c47d_124f, w[5] ^ 0xa076_1d64_78bd_642f);
        mum(h, 0xe703_7ed1_a0b4_28db ^ 48)
    }

    /// `hash_v4` of an IPv4 key's words (unkeyed: the id is the 5-tuple).
    #[inline(always)]
    fn hash_v4(&self) -> u64 {
        let w = &self.words;
        hash_v4(u64::from(low4(w[0])) | (u64::from(low4(w[2])) << 32), w[4])
    }

    /// The address in key words `at` and `at + 1`.
    #[inline(always)]
    fn addr(&self, at: usize) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[..8].copy_from_slice(&self.words[at].to_ne_bytes());
        a[8..].copy_from_slice(&self.words[at + 1].to_ne_bytes());
        a
    }

    /// The key of an IPv6 packet of the data path's fast lane to VIP `vip`,
    /// straight from its header words: equal to [`FlowKey::new`] of the
    /// packet's parse.
    #[inline(always)]
    pub fn from_v6_fast(f: &V6Fast, vip: u32) -> FlowKey {
        // The tail word as `tail_word` lays it out, from whole words.
        let tail = if cfg!(target_endian = "little") {
            u64::from(f.ports) | (u64::from(f.protocol) << 32) | (6 << 40)
        } else {
            tail_word(f.ports.to_ne_bytes(), f.protocol, 6)
        };
        FlowKey { words: [f.src[0], f.src[1], f.dst[0], f.dst[1], tail, vip_word(vip)] }
    }

    /// The source address of the key (IPv4 in the first four bytes).
    pub fn src(&self) -> [u8; 16] {
        self.addr(0)
    }

    /// The source port.
    pub fn src_port(&self) -> u16 {
        let tail = self.words[4].to_ne_bytes();
        u16::from_be_bytes([tail[0], tail[1]])
    }

    /// The transport protocol.
    pub fn protocol(&self) -> u8 {
        self.words[4].to_ne_bytes()[4]
    }

    /// The compact id and hash of an IPv6 flow of the data path's fast
    /// lane to VIP `vip`, from its header words: [`FlowKey::id_hash`] of
    /// its [`FlowKey::from_v6_fast`], without storing the key.
    #[inline(always)]
    pub fn v6_id_hash(f: &V6Fast, vip: u32, secret: &HashSecret) -> (u128, u64) {
        let k = FlowKey::from_v6_fast(f, vip);
        signature_hash_keyed(&k.words, f.protocol, |i| secret.0[i])
    }

    /// The compact id and hash of an IPv4 flow straight from header words
    /// (the data path's fast lane): equal to the [`compact`](FlowKey::compact)
    /// id and [`hash`](FlowKey::hash) of the packet's [`FlowKey::new`],
    /// without building the key.
    #[inline(always)]
    pub fn v4_id_hash(f: &V4Fast) -> (u128, u64) {
        let (src, dst) = (f.addrs as u32, (f.addrs >> 32) as u32);
        let id = pack_id(src, dst, f.ports, f.protocol);
        let tail = u64::from(f.ports) | (u64::from(f.protocol) << 32) | (4 << 40);
        (id, hash_v4(f.addrs, tail))
    }
}

/// The secret that keys IPv6 hashes and signatures: fixed constants until
/// [`randomize_hash_secret`] (so host tests are reproducible).
static HASH_SECRET: [AtomicU64; 6] = [
    AtomicU64::new(0xa076_1d64_78bd_642f),
    AtomicU64::new(0xe703_7ed1_a0b4_28db),
    AtomicU64::new(0x8ebc_6af0_9c88_c6e3),
    AtomicU64::new(0x5899_65cc_7537_4cc3),
    AtomicU64::new(0x1d8e_4e27_c47d_124f),
    AtomicU64::new(0x2d35_8dcc_aa6c_78a5),
];

/// The secret of IPv6 hashes as plain words, read once for a batch of
/// [`FlowKey::v6_id_hash`]es (six atomic loads a packet fewer).
#[derive(Debug, Clone, Copy)]
pub struct HashSecret([u64; 6]);

impl HashSecret {
    /// The secret as it is now (see [`randomize_hash_secret`]).
    #[inline(always)]
    pub fn now() -> HashSecret {
        HashSecret(core::array::from_fn(|i| HASH_SECRET[i].load(Ordering::Relaxed)))
    }
}

/// Draws a new secret for IPv6 hashes from the operating system's
/// randomness (through std's hash-map keys). Call once, before any table,
/// reply table or port pool holds an IPv6 key: keys hashed before it are
/// not found after (the plugin's init does; later calls do nothing).
pub fn randomize_hash_secret() {
    use std::hash::BuildHasher;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let state = std::collections::hash_map::RandomState::new();
        for (i, s) in HASH_SECRET.iter().enumerate() {
            s.store(state.hash_one(i), Ordering::Relaxed);
        }
    });
}

#[inline(always)]
fn mul128(a: u64, b: u64) -> u128 {
    u128::from(a) * u128::from(b)
}

/// An IPv6 key's signature id and hash. The six words, each xored with a
/// secret word, multiply in pairs to three exact 128-bit products (a
/// product changes whenever one of its factors does), summed by xor. The
/// sum's low half is 64 bits of signature: with one factor fixed, an odd
/// multiplier maps the other one to its product's low half one to one, so
/// keys that differ in one word (one client's ports) never share it
/// unless the fixed factor has many trailing zeros (some 2^-32 of
/// secrets). The top 16 bits of the high half are 16 more. The hash,
/// whose low bits choose the bucket, mixes both halves (wyhash's
/// multiply-fold), so the bucket a key shares with others says next to
/// nothing of its signature bits.
#[inline(always)]
fn signature_hash(w: &[u64; 6], proto: u8) -> (u128, u64) {
    let secret = HashSecret::now();
    signature_hash_keyed(w, proto, |i| secret.0[i])
}

/// [`signature_hash`] under the secret `s` gives word by word.
#[inline(always)]
fn signature_hash_keyed(w: &[u64; 6], proto: u8, s: impl Fn(usize) -> u64) -> (u128, u64) {
    let x = mul128(w[0] ^ s(0), w[1] ^ s(1))
        ^ mul128(w[2] ^ s(2), w[3] ^ s(3))
        ^ mul128(w[4] ^ s(4), w[5] ^ s(5));
    let (lo, hi) = (x as u64, (x >> 64) as u64);
    let hash = mum(lo ^ 0xe703_7ed1_a0b4_28db, hi ^ 0x8ebc_6af0_9c88_c6e3);
    // (The low half of word `c` is the entry's note, see `NOTE_BITS`.)
    let more = (hi >> 32) as u32 & !NOTE_BITS;
    (pack_id(lo as u32, (lo >> 32) as u32, more, proto | SIGNATURE_TAG), hash)
}

#[inline(always)]
fn mum(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

/// [`FlowKey::hash`] of an IPv4 key: the addresses (source in the low
/// half) and the ports-protocol-family word, in one 64x64->128-bit
/// multiply folded (wyhash's mixing step; typical flow sets spread at
/// least as evenly as random: `typical_flow_sets_spread_over_buckets`).
/// Not the VIP index: an IPv4 entry is keyed on the 5-tuple alone (see
/// [`FlowKey::compact`]), so one flow has one entry whichever Service its
/// address belongs to.
///
/// The high half folded into the low half at the end: bucket indices are
/// low bits, and those of one product stay constant for key sets whose
/// low bits are (the reply keys of one pod: pod address and port fixed,
/// client ports counting up), which left 21% of buckets empty where 14%
/// should be. The high half (Maglev's tuple hash) stays as it was.
#[inline(always)]
fn hash_v4(addrs: u64, tail: u64) -> u64 {
    let h = mum(addrs ^ 0xa076_1d64_78bd_642f, tail ^ 0xe703_7ed1_a0b4_28db);
    h ^ (h >> 32)
}

/// Set in a compact id's tag byte when the id holds a signature rather
/// than the whole key.
const SIGNATURE_TAG: u8 = 0x80;

/// The bits of a signature entry's word `c` that hold its [`SourceNote`]
/// rather than signature (lookups mask them off; a key's own id has them
/// clear).
const NOTE_BITS: u32 = 0xffff;

impl FlowKey {
    /// The 13-byte identity a bucket slot stores and a lookup compares,
    /// packed in a `u128`: words `a`, `b`, `c` (bits 0..96) and a tag byte
    /// (bits 96..104). A live slot with the same id is the flow's entry.
    ///
    /// For an IPv4 flow it is the **whole 5-tuple**: source, destination,
    /// both ports (as on the wire) and the protocol as the tag. The VIP
    /// index is not stored: the address and port the flow was sent to
    /// decide its VIP, and the data path checks the entry's pod belongs to
    /// it. Anything else (IPv6) stores an 80-bit signature of the whole key
    /// (VIP index included) and the protocol, tagged (see the module doc).
    #[inline(always)]
    pub fn compact(&self) -> u128 {
        self.id_hash().0
    }

    /// The transport protocol of a compact id.
    #[inline(always)]
    pub fn id_protocol(id: u128) -> u8 {
        unpack_id(id).3 & !SIGNATURE_TAG
    }

    /// The source address of a whole-key (IPv4) compact id.
    #[inline(always)]
    pub fn id_source_v4(id: u128) -> [u8; 4] {
        unpack_id(id).0.to_ne_bytes()
    }

    /// The key a whole-key compact id stands for (inverse of [`compact`]),
    /// with VIP index 0: IPv4 entries do not keep it.
    ///
    /// [`compact`]: FlowKey::compact
    pub fn from_compact(id: u128) -> FlowKey {
        let (a, b, c, tag) = unpack_id(id);
        FlowKey { words: [word4(a), 0, word4(b), 0, tail_word(c.to_ne_bytes(), tag, 4), 0] }
    }
}

#[inline(always)]
fn pack_id(a: u32, b: u32, c: u32, tag: u8) -> u128 {
    u128::from(a) | (u128::from(b) << 32) | (u128::from(c) << 64) | (u128::from(tag) << 96)
}

#[inline(always)]
fn unpack_id(id: u128) -> (u32, u32, u32, u8) {
    (id as u32, (id >> 32) as u32, (id >> 64) as u32, (id >> 96) as u8)
}

impl FlowKey {
    /// Whether a compact id is the whole key (IPv4) rather than a
    /// signature (see [`FlowKey::compact`]).
    #[inline(always)]
    pub fn id_is_whole_key(id: u128) -> bool {
        is_whole_key(id)
    }
}

#[inline(always)]
fn is_whole_key(id: u128) -> bool {
    (id >> 96) as u8 & SIGNATURE_TAG == 0
}

/// Pod indices a flow entry's pod word can hold: its top byte is the id's
/// tag. Every pod index kp hands out fits.
const POD_WORD_CAPACITY: u32 = 1 << 24;
const POD_MASK: u32 = POD_WORD_CAPACITY - 1;
const _: () = assert!(crate::config::MAX_POD_INDICES <= POD_WORD_CAPACITY);

/// One cache line holding three entries as parallel arrays: the compact id
/// split in words `a`, `b`, `c`, the expiry tick, and the pod index with
/// the id's tag byte on top (so every field compares as a 32-bit lane).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Bucket {
    a: [u32; ENTRIES_PER_BUCKET],
    b: [u32; ENTRIES_PER_BUCKET],
    c: [u32; ENTRIES_PER_BUCKET],
    /// Tick after which the slot is dead; 0 for a never-used slot.
    expiry: [u32; ENTRIES_PER_BUCKET],
    /// `pod | tag << 24`.
    pod_tag: [u32; ENTRIES_PER_BUCKET],
    _spare: u32,
}

impl Bucket {
    #[inline(always)]
    fn id(&self, i: usize) -> u128 {
        pack_id(self.a[i], self.b[i], self.c[i], self.tag(i))
    }

    #[inline(always)]
    fn pod(&self, i: usize) -> u32 {
        self.pod_tag[i] & POD_MASK
    }

    #[inline(always)]
    fn tag(&self, i: usize) -> u8 {
        (self.pod_tag[i] >> 24) as u8
    }

    /// Slot `i`'s [`SourceNote`] (none for a whole key: its word `c` is
    /// all key).
    #[inline(always)]
    fn note(&self, i: usize) -> SourceNote {
        SourceNote((self.c[i] & !c_mask(self.id(i))) as u16)
    }

    #[inline(always)]
    fn set_pod(&mut self, i: usize, pod: u32) {
        debug_assert!(pod < POD_WORD_CAPACITY);
        self.pod_tag[i] = (self.pod_tag[i] & !POD_MASK) | (pod & POD_MASK);
    }

    /// Bitmask of the live slots (expiry after `now`) holding `id`: the
    /// same as [`Bucket::matches_scalar`], in a handful of SSE2 operations
    /// (the parallel arrays are what make this possible).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn matches(&self, id: u128, now: u32) -> u8 {
        use core::arch::x86_64::*;
        // SAFETY: each 16-byte load starts at a field of this 64-byte
        // bucket and ends inside it (a at 0, b at 12, c at 24, expiry at
        // 36, pod_tag at 48); the lane past the field's three is masked
        // off below. SSE2 is part of x86_64.
        let words = unsafe {
            let base = (self as *const Bucket).cast::<u8>();
            let at = |off: usize| _mm_loadu_si128(base.add(off).cast());
            // The id's 32-bit lanes are a, b, c and tag: each is broadcast
            // with one shuffle.
            let probe = _mm_set_epi64x((id >> 64) as i64, id as i64);
            let same_a = _mm_cmpeq_epi32(at(0), _mm_shuffle_epi32::<0x00>(probe));
            let same_b = _mm_cmpeq_epi32(at(12), _mm_shuffle_epi32::<0x55>(probe));
            // A signature's word `c` is compared without its note bits.
            let c = _mm_and_si128(at(24), _mm_set1_epi32(c_mask(id) as i32));
            let same_c = _mm_cmpeq_epi32(c, _mm_shuffle_epi32::<0xaa>(probe));
            // Expiry ticks stay below 2^31, so a signed compare is right.
            let live = _mm_cmpgt_epi32(at(36), _mm_set1_epi32(now as i32));
            let tag = _mm_slli_epi32::<24>(_mm_shuffle_epi32::<0xff>(probe));
            let same_tag = _mm_cmpeq_epi32(_mm_and_si128(at(48), _mm_set1_epi32(!POD_MASK as i32)), tag);
            let all = _mm_and_si128(_mm_and_si128(same_a, same_b), _mm_and_si128(same_c, live));
            _mm_movemask_ps(_mm_castsi128_ps(_mm_and_si128(all, same_tag))) as u32
        };
        (words & 0b111) as u8
    }

    #[cfg(not(target_arch = "x86_64"))]
    #[inline(always)]
    fn matches(&self, id: u128, now: u32) -> u8 {
        self.matches_scalar(id, now)
    }

    /// [`Bucket::matches`], one slot at a time.
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    #[inline(always)]
    fn matches_scalar(&self, id: u128, now: u32) -> u8 {
        let (a, b, c, tag) = unpack_id(id);
        let mut mask = 0u8;
        for i in 0..ENTRIES_PER_BUCKET {
            // Non-short-circuit `&`: no branch per field.
            let same =
                (self.a[i] == a) & (self.b[i] == b) & (self.c[i] & c_mask(id) == c) & (self.tag(i) == tag);
            mask |= u8::from(same & (self.expiry[i] > now)) << i;
        }
        mask
    }
}

/// What of an entry's word `c` a lookup for `id` compares: all of it for a
/// whole key, all but the note bits for a signature.
#[inline(always)]
fn c_mask(id: u128) -> u32 {
    let signature = ((id >> 103) as u32) & 1;
    !(signature.wrapping_neg() & NOTE_BITS)
}

/// Where an entry lives: `bucket * ENTRIES_PER_BUCKET + slot`.
pub type SlotId = u32;

/// A confirmed hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub slot: SlotId,
    pub pod: u32,
    /// The entry's [`SourceNote`] (from the line the hit read).
    pub note: SourceNote,
}

/// The insert could not find a dead slot: the bucket is full of live flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketFull;

/// The table could not be allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfMemory {
    pub bytes: usize,
}

// SAFETY: plain integers; all-zero is the empty state.
unsafe impl Zeroable for Bucket {}
/// The IPv6 side of a bucket: its entries' full keys, read only when an
/// entry ends or moves. Only flows whose compact id is a signature (IPv6)
/// use it, so for IPv4 its pages are never touched.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
struct KeyBlock {
    keys: [FlowKey; ENTRIES_PER_BUCKET],
}

/// Sixteen bits an IPv6 (signature) entry keeps for its user in the
/// bucket's line: nat64 notes there where the flow's binding is and when
/// it was last confirmed (see [`crate::nat64::NoteClock`]), so the flow's
/// packets need not read the binding, which would be one more cache line
/// (at a million flows, one more DRAM miss) per packet. 0: none. A new,
/// moved-in or repointed entry starts without one; one moved to its
/// second bucket keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceNote(pub u16);

// SAFETY: as above.
unsafe impl Zeroable for KeyBlock {}

#[derive(Debug)]
pub struct FlowTable {
    buckets: ZeroedArray<Bucket>,
    /// By bucket (empty without IPv6 VIPs).
    keys: ZeroedArray<KeyBlock>,
    mask: u32,
    timeout: u32,
    /// Idle timeout of embryonic entries (at most `timeout`).
    embryonic: u32,
    /// `make_room` failures in a row, and inserts left that skip it: in a
    /// table saturated by a flood almost every move fails, and each costs
    /// three cache misses, so after `KICK_FAILURES` failures the next
    /// `KICK_BACKOFF` full inserts give up at once.
    kick_failures: u32,
    kick_backoff: u32,
}

const KICK_FAILURES: u32 = 16;
const KICK_BACKOFF: u32 = 256;

impl FlowTable {
    /// Allocates a table of `n_buckets` (a power of two, already validated)
    /// with an idle timeout of `timeout` ticks, in huge-page-backed mappings
    /// of its own (see [`crate::mem`]). Allocation failure is an error, not
    /// an abort.
    pub fn new(n_buckets: u32, timeout: u32) -> Result<FlowTable, OutOfMemory> {
        assert!(n_buckets.is_power_of_two());
        let n = n_buckets as usize;
        let bytes = n * 64;
        let buckets = ZeroedArray::new(n).ok_or(OutOfMemory { bytes })?;
        // No IPv6 keys until IPv6 flows are to come (`add_keys`).
        let keys = ZeroedArray::sparse(0).ok_or(OutOfMemory { bytes })?;
        Ok(FlowTable {
            buckets,
            keys,
            mask: n_buckets - 1,
            timeout,
            embryonic: timeout,
            kick_failures: 0,
            kick_backoff: 0,
        })
    }

    /// Gives the table its IPv6 key array (144 bytes per bucket, in huge
    /// pages and faulted in now, like the buckets: small pages cost a TLB
    /// miss per access, some 280 clocks at 1M flows), if it has none. Until then IPv6 flows cannot be
    /// inserted ([`BucketFull`]: forwarded untracked).
    pub fn add_keys(&mut self) -> Result<(), OutOfMemory> {
        if self.has_keys() {
            return Ok(());
        }
        let n = self.buckets.len();
        self.keys = ZeroedArray::new(n).ok_or(OutOfMemory { bytes: n * core::mem::size_of::<KeyBlock>() })?;
        Ok(())
    }

    /// The size of the IPv6 key array (0 without one).
    pub fn ipv6_key_bytes(&self) -> usize {
        self.keys.len() * core::mem::size_of::<KeyBlock>()
    }

    /// Whether the table can hold IPv6 flows (see [`FlowTable::add_keys`]).
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    pub fn n_buckets(&self) -> u32 {
        self.mask + 1
    }

    pub fn capacity(&self) -> usize {
        self.buckets.len() * ENTRIES_PER_BUCKET
    }

    pub fn timeout(&self) -> u32 {
        self.timeout
    }

    pub fn set_timeout(&mut self, timeout: u32) {
        self.timeout = timeout;
        self.embryonic = self.embryonic.min(timeout);
    }

    pub fn embryonic_timeout(&self) -> u32 {
        self.embryonic
    }

    /// Timeouts of established and of embryonic entries (the latter at
    /// most the former). New entries are embryonic until a hit that
    /// `establishes` them.
    pub fn set_timeouts(&mut self, timeout: u32, embryonic: u32) {
        self.timeout = timeout;
        self.embryonic = embryonic.min(timeout);
    }

    /// The bucket a hash maps to.
    #[inline(always)]
    fn bucket_of(&self, hash: u64) -> usize {
        (hash as u32 & self.mask) as usize
    }

    /// A flow's second bucket, from the hash's high half: where it goes
    /// when its first bucket is full of live flows. With one choice, 0.35%
    /// of a million flows found no room in 2^21 buckets (their packets
    /// then follow Maglev, and move when the pods change); with two, and
    /// an entry of a full first bucket moved to its own second bucket when
    /// that has room, practically none do. The data path's fast lane looks
    /// only at the first bucket; a flow in its second one takes the
    /// general path.
    #[inline(always)]
    fn other_bucket_of(&self, hash: u64) -> usize {
        ((hash >> 32) as u32).wrapping_mul(0x9e37_79b9).rotate_left(15) as usize & self.mask as usize
    }

    /// A hash's first and second bucket.
    pub fn choices(&self, hash: u64) -> [usize; 2] {
        [self.bucket_of(hash), self.other_bucket_of(hash)]
    }

    /// The first slot of bucket `bi` free for a new entry at `now`.
    #[inline(always)]
    fn free_slot(&self, bi: usize, now: u32) -> Option<usize> {
        self.buckets[bi].expiry.iter().position(|&e| e <= now)
    }

    /// The bucket a hash maps to, without a bounds check per packet.
    #[inline(always)]
    fn bucket_at(&self, hash: u64) -> &Bucket {
        let bi = self.bucket_of(hash);
        debug_assert!(bi < self.buckets.len());
        // SAFETY: `mask` is `buckets.len() - 1`, set together with the
        // array in `new` (a power of two, at least 1), so `bi` is in bounds.
        unsafe { self.buckets.get_unchecked(bi) }
    }

    /// Step 1: start loading the bucket this hash maps to.
    #[inline(always)]
    pub fn prefetch_bucket(&self, hash: u64) {
        prefetch(self.bucket_at(hash));
    }

    /// Starts loading a hash's second bucket (see `other_bucket_of`).
    #[inline(always)]
    pub fn prefetch_other_bucket(&self, hash: u64) {
        prefetch(&self.buckets[self.other_bucket_of(hash)]);
    }

    /// Step 2: reads the bucket and returns a bitmask of live slots whose
    /// compact id equals `id` (from [`FlowKey::id_hash`]): at most one, the
    /// flow's entry.
    #[inline(always)]
    pub fn candidates(&self, hash: u64, id: u128, now: u32) -> u8 {
        self.bucket_at(hash).matches(id, now)
    }

    /// Step 3: the hit among `candidates` of the hash's first bucket, its
    /// expiry refreshed; `None` for a miss there.
    #[inline(always)]
    pub fn hit(&mut self, hash: u64, candidates: u8, now: u32, establishes: bool) -> Option<Hit> {
        // Slots are bits 0..3 of a candidate mask.
        let slots = candidates & ((1 << ENTRIES_PER_BUCKET) - 1);
        (slots != 0)
            .then(|| self.refresh(self.bucket_of(hash), slots.trailing_zeros() as usize, now, establishes))
    }

    /// Step 4, after a miss in the first bucket: the flow's second bucket
    /// (see `other_bucket_of`).
    #[cold]
    pub fn hit_other(&mut self, hash: u64, id: u128, now: u32, establishes: bool) -> Option<Hit> {
        let bi = self.other_bucket_of(hash);
        let slots = self.buckets[bi].matches(id, now);
        (slots != 0).then(|| self.refresh(bi, slots.trailing_zeros() as usize, now, establishes))
    }

    /// The live entry of `key`, in either of its buckets.
    fn find(&self, key: &FlowKey, now: u32) -> Option<usize> {
        let (id, h) = key.id_hash();
        [self.bucket_of(h), self.other_bucket_of(h)].into_iter().find_map(|bi| {
            let slots = self.buckets[bi].matches(id, now);
            (slots != 0).then(|| bi * ENTRIES_PER_BUCKET + slots.trailing_zeros() as usize)
        })
    }

    /// A hit: the entry lives on for the established timeout if this
    /// packet `establishes` the flow (anything but a TCP SYN), else for the
    /// embryonic one.
    #[inline(always)]
    fn refresh(&mut self, bi: usize, i: usize, now: u32, establishes: bool) -> Hit {
        let expiry = now.saturating_add(if establishes { self.timeout } else { self.embryonic });
        debug_assert!(bi < self.buckets.len());
        // SAFETY: every caller passes a `bi` from `bucket_of`, in bounds as
        // in `bucket_at`.
        let b = unsafe { self.buckets.get_unchecked_mut(bi) };
        // Write only when the tick moved on: a line left clean needs no
        // write-back to memory when it is evicted.
        if b.expiry[i] != expiry {
            b.expiry[i] = expiry;
        }
        Hit { slot: (bi * ENTRIES_PER_BUCKET + i) as SlotId, pod: b.pod(i), note: b.note(i) }
    }

    /// A whole lookup, unbatched (tests and one-off use).
    pub fn lookup(&mut self, key: &FlowKey, now: u32) -> Option<Hit> {
        let slot = self.find(key, now)?;
        Some(self.refresh(slot / ENTRIES_PER_BUCKET, slot % ENTRIES_PER_BUCKET, now, true))
    }

    /// The key of the entry in slot `i` of bucket `bi` (which must have
    /// been inserted); IPv4 keys come back with VIP index 0.
    fn key_at(&self, bi: usize, i: usize) -> FlowKey {
        let id = self.buckets[bi].id(i);
        if is_whole_key(id) {
            FlowKey::from_compact(id)
        } else {
            self.keys[bi].keys[i]
        }
    }

    /// Inserts a new flow into the first dead slot of its bucket. Returns
    /// the slot and, when the slot held an expired flow, that flow's pod
    /// and key (so the caller can drop its reference and reply state).
    #[inline]
    pub fn insert(
        &mut self,
        key: &FlowKey,
        hash: u64,
        pod: u32,
        now: u32,
    ) -> Result<(SlotId, Option<(u32, FlowKey)>), BucketFull> {
        self.insert_until(key, hash, pod, now, now.saturating_add(self.embryonic))
    }

    /// [`insert`](FlowTable::insert) with the expiry given: for an entry
    /// moved from another table, which keeps its own.
    #[inline(always)]
    pub fn insert_until(
        &mut self,
        key: &FlowKey,
        hash: u64,
        pod: u32,
        now: u32,
        expiry: u32,
    ) -> Result<(SlotId, Option<(u32, FlowKey)>), BucketFull> {
        if key.family() != 4 && !self.has_keys() {
            return Err(BucketFull);
        }
        let first = self.bucket_of(hash);
        let (bi, i, evicted) = match self.free_slot(first, now) {
            Some(i) => (first, i, self.dead_entry(first, i)),
            None => {
                let second = self.other_bucket_of(hash);
                match self.free_slot(second, now) {
                    Some(i) => (second, i, self.dead_entry(second, i)),
                    None => {
                        let (i, evicted) = self.kick(first, now).ok_or(BucketFull)?;
                        (first, i, evicted)
                    }
                }
            }
        };
        let slot = bi * ENTRIES_PER_BUCKET + i;
        let id = key.compact();
        let (a, b, c, tag) = unpack_id(id);
        let bk = &mut self.buckets[bi];
        (bk.a[i], bk.b[i], bk.c[i], bk.expiry[i]) = (a, b, c, expiry);
        bk.pod_tag[i] = u32::from(tag) << 24;
        bk.set_pod(i, pod);
        if !is_whole_key(id) {
            // (Its id leaves the note bits clear: no note.)
            self.keys[bi].keys[i] = *key;
        }
        Ok((slot as SlotId, evicted))
    }

    /// The expired entry a new one is about to overwrite in slot `i` of
    /// bucket `bi`, if the slot was ever used.
    #[inline(always)]
    fn dead_entry(&self, bi: usize, i: usize) -> Option<(u32, FlowKey)> {
        (self.buckets[bi].expiry[i] != 0).then(|| (self.buckets[bi].pod(i), self.key_at(bi, i)))
    }

    /// [`make_room`](FlowTable::make_room), backing off while it keeps
    /// failing (see `kick_failures`).
    #[inline(always)]
    fn kick(&mut self, first: usize, now: u32) -> Option<(usize, Option<(u32, FlowKey)>)> {
        if self.kick_backoff > 0 {
            self.kick_backoff -= 1;
            return None;
        }
        let made = self.make_room(first, now);
        if made.is_some() {
            self.kick_failures = 0;
        } else {
            self.kick_failures += 1;
            if self.kick_failures >= KICK_FAILURES {
                (self.kick_failures, self.kick_backoff) = (0, KICK_BACKOFF);
            }
        }
        made
    }

    /// Both buckets of a new flow are full: moves one entry of the first
    /// bucket to its own other bucket, if that has room. Returns the slot
    /// freed in `first` and the expired entry the move overwrote, if any.
    #[cold]
    fn make_room(&mut self, first: usize, now: u32) -> Option<(usize, Option<(u32, FlowKey)>)> {
        // Each entry's other bucket, all loads started at once: under a
        // flood that fills the table, every new flow comes here, and three
        // misses in a row cost three times one.
        let to: [usize; ENTRIES_PER_BUCKET] = core::array::from_fn(|i| {
            let [a, b] = self.choices(self.key_at(first, i).hash());
            let to = if a == first { b } else { a };
            prefetch(&self.buckets[to]);
            to
        });
        for (i, &to) in to.iter().enumerate() {
            if to == first {
                continue;
            }
            if let Some(j) = self.free_slot(to, now) {
                let evicted = self.dead_entry(to, j);
                let b = self.buckets[first];
                let t = &mut self.buckets[to];
                (t.a[j], t.b[j], t.c[j], t.expiry[j], t.pod_tag[j]) =
                    (b.a[i], b.b[i], b.c[i], b.expiry[i], b.pod_tag[i]);
                // (A signature's note goes with its word `c`: the hash it is
                // relative to stays the same.)
                if !is_whole_key(b.id(i)) {
                    self.keys[to].keys[j] = self.keys[first].keys[i];
                }
                self.buckets[first].expiry[i] = 0;
                return Some((i, evicted));
            }
        }
        None
    }

    /// Points an existing entry at another pod (its old pod was flushed)
    /// and refreshes it. Returns the old pod.
    #[inline]
    pub fn repoint(&mut self, slot: SlotId, pod: u32, now: u32) -> u32 {
        let (bi, i) = (slot as usize / ENTRIES_PER_BUCKET, slot as usize % ENTRIES_PER_BUCKET);
        let expiry = now.saturating_add(self.timeout);
        let b = &mut self.buckets[bi];
        b.expiry[i] = expiry;
        let old = b.pod(i);
        b.set_pod(i, pod);
        if !is_whole_key(b.id(i)) {
            b.c[i] &= !NOTE_BITS;
        }
        old
    }

    /// The [`SourceNote`] of the entry in `slot` (none for an IPv4 entry,
    /// whose id words are all key).
    #[inline(always)]
    pub fn source_note(&self, slot: SlotId) -> SourceNote {
        let (bi, i) = (slot as usize / ENTRIES_PER_BUCKET, slot as usize % ENTRIES_PER_BUCKET);
        self.buckets[bi].note(i)
    }

    /// Keeps `note` with the entry in `slot` (an IPv6 one: an IPv4 entry
    /// has no room for one and keeps none).
    #[inline(always)]
    pub fn set_source_note(&mut self, slot: SlotId, note: SourceNote) {
        let (bi, i) = (slot as usize / ENTRIES_PER_BUCKET, slot as usize % ENTRIES_PER_BUCKET);
        let b = &mut self.buckets[bi];
        if !is_whole_key(b.id(i)) {
            b.c[i] = (b.c[i] & !NOTE_BITS) | u32::from(note.0);
        }
    }

    /// Ends the flow in `slot` at once. Returns its pod and key if it was
    /// in use.
    pub fn remove(&mut self, slot: SlotId) -> Option<(u32, FlowKey)> {
        let (bi, i) = (slot as usize / ENTRIES_PER_BUCKET, slot as usize % ENTRIES_PER_BUCKET);
        let was = (self.buckets[bi].expiry[i] != 0).then(|| (self.buckets[bi].pod(i), self.key_at(bi, i)));
        self.buckets[bi].expiry[i] = 0;
        was
    }

    /// Takes the live entry of `key` out of the table, returning its pod
    /// and expiry (a resize moves it to the new table).
    pub fn take(&mut self, key: &FlowKey, now: u32) -> Option<(u32, u32)> {
        let slot = self.find(key, now)?;
        let b = &mut self.buckets[slot / ENTRIES_PER_BUCKET];
        let i = slot % ENTRIES_PER_BUCKET;
        let found = (b.pod(i), b.expiry[i]);
        b.expiry[i] = 0;
        Some(found)
    }

    /// Empties bucket `bi`, calling `f(key, pod, expiry)` for each entry it
    /// held, live or expired (a resize moves the live ones on).
    pub fn drain_bucket(&mut self, bi: u32, mut f: impl FnMut(&FlowKey, u32, u32)) {
        let bi = (bi & self.mask) as usize;
        for i in 0..ENTRIES_PER_BUCKET {
            let expiry = self.buckets[bi].expiry[i];
            if expiry != 0 {
                self.buckets[bi].expiry[i] = 0;
                f(&self.key_at(bi, i), self.buckets[bi].pod(i), expiry);
            }
        }
    }

    /// The key of the flow in `slot` (IPv4 keys with VIP index 0).
    pub fn key(&self, slot: SlotId) -> FlowKey {
        self.key_at(slot as usize / ENTRIES_PER_BUCKET, slot as usize % ENTRIES_PER_BUCKET)
    }

    /// Clears dead entries (expired, or whose pod `is_gone`) in the
    /// buckets `from..from+count` (wrapping), calling `release` with each
    /// cleared entry's pod and key. Returns where the next sweep should
    /// start. Run a little at a time so entries of removed pods release
    /// their references even when no new flow lands in their bucket.
    pub fn sweep(
        &mut self,
        from: u32,
        count: u32,
        now: u32,
        is_gone: impl Fn(u32) -> bool,
        mut release: impl FnMut(u32, &FlowKey),
    ) -> u32 {
        let mut bi = from & self.mask;
        for _ in 0..count.min(self.n_buckets()) {
            for i in 0..ENTRIES_PER_BUCKET {
                let (expiry, pod) = (self.buckets[bi as usize].expiry[i], self.buckets[bi as usize].pod(i));
                if expiry != 0 && (expiry <= now || is_gone(pod)) {
                    self.buckets[bi as usize].expiry[i] = 0;
                    release(pod, &self.key_at(bi as usize, i));
                }
            }
            bi = (bi + 1) & self.mask;
        }
        bi
    }

    /// Live entries (a full scan: for `show kp`, not the data path).
    pub fn live_entries(&self, now: u32) -> usize {
        self.buckets.iter().map(|b| b.expiry.iter().filter(|&&e| e > now).count()).sum()
    }

    /// Calls `f(pod)` for every live entry (for `show` commands).
    pub fn for_each_live(&self, now: u32, mut f: impl FnMut(u32)) {
        for b in self.buckets.iter() {
            for i in 0..ENTRIES_PER_BUCKET {
                if b.expiry[i] > now {
                    f(b.pod(i));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table that holds IPv6 flows too.
    fn table(n_buckets: u32, timeout: u32) -> FlowTable {
        let mut t = FlowTable::new(n_buckets, timeout).unwrap();
        t.add_keys().unwrap();
        t
    }

    /// Without its key array a table holds IPv4 flows only: an IPv6 insert
    /// fails as a full bucket would (the flow goes untracked), until the
    /// array is there.
    #[test]
    fn ipv6_flows_need_the_key_array() {
        let mut t = FlowTable::new(16, 10).unwrap();
        assert!(!t.has_keys());
        let mut v6 =
            Parsed { family: IpFamily::V6, protocol: 6, src_port: 1, dst_port: 80, ..Parsed::default() };
        v6.src[0] = 0x20;
        let mut v4 = v6;
        v4.family = IpFamily::V4;
        let (k6, k4) = (FlowKey::new(1, &v6), FlowKey::new(0, &v4));
        assert_eq!(t.insert(&k6, k6.hash(), 3, 1), Err(BucketFull));
        assert!(t.insert(&k4, k4.hash(), 4, 1).is_ok());
        assert_eq!(t.lookup(&k4, 2).map(|h| h.pod), Some(4));
        t.add_keys().unwrap();
        assert!(t.has_keys());
        assert!(t.insert(&k6, k6.hash(), 3, 1).is_ok());
        assert_eq!(t.lookup(&k6, 2).map(|h| h.pod), Some(3));
        assert_eq!(t.lookup(&k4, 2).map(|h| h.pod), Some(4), "IPv4 flows stay");
    }
    /// A flow's source note stays with its entry, and only there: a new
    /// entry in the slot (the old one expired), a repointed entry and an
    /// IPv4 entry have none; a move to the other bucket carries it. The
    /// note's bits never change what a lookup finds.
    #[test]
    fn source_notes_belong_to_their_entry() {
        let mut t = FlowTable::new(16, 10).unwrap();
        t.add_keys().unwrap();
        let note = SourceNote(0xffff);
        let flows: Vec<FlowKey> = (0..6).map(|i| FlowKey::new(1, &parsed(i, IpFamily::V6))).collect();
        let (a, _) = t.insert(&flows[0], flows[0].hash(), 1, 1).unwrap();
        assert_eq!(t.source_note(a), SourceNote::default());
        t.set_source_note(a, note);
        let hit = t.lookup(&flows[0], 2).unwrap();
        assert_eq!(t.source_note(hit.slot), note);
        t.repoint(a, 2, 2);
        assert_eq!(t.source_note(a), SourceNote::default(), "repointed");
        t.set_source_note(a, note);
        // Fill the table: kicks move entries to their other buckets, each
        // with its own note.
        let mut placed = vec![(0u32, flows[0], a)];
        for i in 1..200u32 {
            let k = FlowKey::new(1, &parsed(i, IpFamily::V6));
            if let Ok((s, _)) = t.insert(&k, k.hash(), 1, 2) {
                t.set_source_note(s, SourceNote(i as u16));
                placed.push((i, k, s));
            }
        }
        let mut moved = 0;
        for &(i, k, at) in &placed {
            let h = t.lookup(&k, 3).expect("placed flows stay");
            let want = if i == 0 { note } else { SourceNote(i as u16) };
            assert_eq!(t.source_note(h.slot), want, "flow {i}");
            moved += usize::from(h.slot != at);
        }
        assert!(moved > 0, "some entries were moved to make room");
        // Expired, the slot's next entry starts without one.
        let mut evicted = 0;
        for i in 100..110 {
            let late = FlowKey::new(1, &parsed(i, IpFamily::V6));
            if let Ok((s, old)) = t.insert(&late, late.hash(), 1, 100) {
                evicted += usize::from(old.is_some());
                assert_eq!(t.source_note(s), SourceNote::default());
            }
        }
        assert!(evicted > 0, "new entries took the slots of expired ones");
        let k4 = FlowKey::new(0, &parsed(7, IpFamily::V4));
        let mut t4 = FlowTable::new(16, 10).unwrap();
        let (s4, _) = t4.insert(&k4, k4.hash(), 1, 1).unwrap();
        t4.set_source_note(s4, note);
        assert_eq!(t4.source_note(s4), SourceNote::default(), "an IPv4 entry keeps none");
        assert_eq!(t4.key(s4), k4, "and its key is untouched");
        assert_eq!(t4.lookup(&k4, 2).map(|h| h.slot), Some(s4));
    }

    use crate::packet::proto;

    fn parsed(i: u32, family: IpFamily) -> Parsed {
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src[..4].copy_from_slice(&i.to_be_bytes());
        dst[..4].copy_from_slice(&[10, 96, 0, 1]);
        if family == IpFamily::V6 {
            src[15] = 1;
        }
        Parsed {
            family,
            protocol: proto::TCP,
            src,
            dst,
            src_port: (i % 60000) as u16,
            dst_port: 80,
            l4_offset: 20,
            l4_len: 20,
        }
    }

    /// At the recommended size (twice as many buckets as flows) a good
    /// hash loses about 0.4% of inserts to full buckets (Poisson, mean
    /// 1/2, three slots). Typical traffic shapes must not do worse: many
    /// clients to one VIP port, one client on many ports, both families.
    #[test]
    fn typical_flow_sets_spread_over_buckets() {
        const FLOWS: u32 = 1 << 15;
        // Flow i's family, first four source address bytes and ports.
        type Shape = fn(u32) -> (IpFamily, [u8; 4], u16, u16);
        let shapes: [(&str, Shape); 5] = [
            ("clients in a /16", |i| (IpFamily::V4, [10, 0, (i >> 8) as u8, i as u8], 40000, 80)),
            ("one client, many ports", |i| (IpFamily::V4, [192, 0, 2, 1], 1024 + i as u16, 443)),
            ("clients x ports", |i| {
                (IpFamily::V4, [10, 0, 0, (i >> 8) as u8], 30000 + (i & 0xff) as u16, 53)
            }),
            ("IPv6 clients", |i| (IpFamily::V6, [0x20, 0x01, (i >> 8) as u8, i as u8], 40000, 80)),
            ("one IPv6 client, many ports", |i| {
                (IpFamily::V6, [0x20, 0x01, 0x0d, 0xb8], 1024 + i as u16, 443)
            }),
        ];
        for (name, shape) in shapes {
            let mut t = table(2 * FLOWS, 100);
            let mut full = 0;
            for i in 0..FLOWS {
                let (family, src4, sport, dport) = shape(i);
                let mut p = parsed(0, family);
                p.src[..4].copy_from_slice(&src4);
                (p.src_port, p.dst_port) = (sport, dport);
                let k = FlowKey::new(1, &p);
                if t.insert(&k, k.hash(), 0, 1).is_err() {
                    full += 1;
                }
            }
            assert!(full * 100 < FLOWS, "{name}: {full} of {FLOWS} inserts found a full bucket");
        }
    }

    #[test]
    fn bucket_is_one_cache_line_and_key_is_48_bytes() {
        assert_eq!(core::mem::size_of::<Bucket>(), 64);
        assert_eq!(core::mem::align_of::<Bucket>(), 64);
        assert_eq!(core::mem::size_of::<FlowKey>(), 48);
        // A bucket's IPv6 side: its three keys.
        assert_eq!(core::mem::size_of::<KeyBlock>(), 3 * 48);
        // A note takes the low half of a signature's word `c`.
        assert_eq!(core::mem::size_of::<SourceNote>(), 2);
        assert_eq!(NOTE_BITS, u32::from(u16::MAX));
    }

    #[test]
    fn insert_then_hit_then_expire() {
        let mut t = table(16, 10);
        let k = FlowKey::new(3, &parsed(1, IpFamily::V4));
        assert_eq!(t.lookup(&k, 1), None);
        let (slot, evicted) = t.insert(&k, k.hash(), 7, 1).unwrap();
        assert_eq!(evicted, None);
        let note = SourceNote::default();
        assert_eq!(t.lookup(&k, 5), Some(Hit { slot, pod: 7, note }));
        // The hit at 5 moved expiry to 15.
        assert_eq!(t.lookup(&k, 14), Some(Hit { slot, pod: 7, note }));
        assert_eq!(t.lookup(&k, 23), Some(Hit { slot, pod: 7, note }));
        assert_eq!(t.lookup(&k, 33), None, "expiry 33 is dead at 33");
        assert_eq!(t.live_entries(33), 0);
        // The expired slot is reused and reports its old pod.
        let (slot2, evicted) = t.insert(&k, k.hash(), 8, 34).unwrap();
        // IPv4 entries give their key back without the VIP index.
        assert_eq!((slot2, evicted), (slot, Some((7, FlowKey::new(0, &parsed(1, IpFamily::V4))))));
    }

    /// Keys that share a bucket must not share an entry: force it by
    /// giving two different keys the same hash. IPv4 ids hold the whole
    /// key; IPv6 ids a signature of it, independent of the hash, so either
    /// way the bucket tells them apart.
    #[test]
    fn id_decides_a_hit_in_a_shared_bucket() {
        for family in [IpFamily::V4, IpFamily::V6] {
            let mut t = table(16, 10);
            let a = FlowKey::new(0, &parsed(1, family));
            let b = FlowKey::new(0, &parsed(2, family));
            let h = a.hash();
            let (ia, ib) = (a.compact(), b.compact());
            assert_ne!(ia, ib);
            t.insert(&a, h, 100, 1).unwrap();
            let c = t.candidates(h, ib, 1);
            assert_eq!(c, 0, "{family:?}");
            assert_eq!(t.hit(h, c, 1, true), None);
            t.insert(&b, h, 200, 1).unwrap();
            let (ca, cb) = (t.candidates(h, ia, 1), t.candidates(h, ib, 1));
            assert_eq!(t.hit(h, ca, 1, true).unwrap().pod, 100);
            assert_eq!(t.hit(h, cb, 1, true).unwrap().pod, 200);
            // Keys come back whole from either kind of id.
            let first = (h as u32 & 15) * ENTRIES_PER_BUCKET as u32;
            let slots: Vec<FlowKey> = (0..2).map(|i| t.key(first + i)).collect();
            assert_eq!(&slots[..2], &[a, b]);
        }
    }

    /// An IPv6 signature changes with every part of the key (each address
    /// word, port, protocol, VIP index), and the IPv6 hash and signature
    /// are keyed: another secret moves both.
    #[test]
    fn ipv6_signatures_cover_the_key_and_follow_the_secret() {
        let base = parsed(1, IpFamily::V6);
        let k = FlowKey::new(4, &base);
        let mut variants = vec![FlowKey::new(5, &base)];
        for at in [0, 7, 8, 15] {
            let mut p = base;
            p.src[at] ^= 1;
            variants.push(FlowKey::new(4, &p));
            let mut p = base;
            p.dst[at] ^= 0x80;
            variants.push(FlowKey::new(4, &p));
        }
        variants.push(FlowKey::new(4, &Parsed { src_port: base.src_port ^ 1, ..base }));
        variants.push(FlowKey::new(4, &Parsed { dst_port: base.dst_port ^ 0x100, ..base }));
        variants.push(FlowKey::new(4, &Parsed { protocol: proto::UDP, ..base }));
        for v in &variants {
            assert_ne!(v, &k);
            let (id, vid) = (k.compact(), v.compact());
            assert_ne!(id & ((1 << 96) - 1), vid & ((1 << 96) - 1), "{v:?}");
            // A key's own id leaves the note bits clear, and a lookup
            // compares all of word `c` but them.
            assert_eq!((vid >> 64) as u32 & NOTE_BITS, 0);
            assert_eq!(c_mask(vid), !NOTE_BITS);
        }
        assert_eq!(c_mask(FlowKey::new(0, &parsed(1, IpFamily::V4)).compact()), u32::MAX, "an IPv4 key: all");
        // (Not the global secret: other tests hash meanwhile.)
        let other = |i: usize| HASH_SECRET[i].load(Ordering::Relaxed) ^ (0x1234_5678 << i);
        let (id, hash) = signature_hash_keyed(&k.words, proto::TCP, other);
        assert_ne!((id, hash), k.id_hash());
        assert_ne!(id, k.id_hash().0);
        assert_ne!(hash, k.id_hash().1);
        assert_eq!(
            signature_hash_keyed(&k.words, proto::TCP, |i| HASH_SECRET[i].load(Ordering::Relaxed)),
            k.id_hash()
        );
    }

    /// No two keys of typical IPv6 flow sets share a signature (80 bits:
    /// a chance collision among these 2^18 keys has odds of 2^-45), under
    /// the fixed secret and under others: one client's ports, many
    /// clients on one port, clients differing in either address word,
    /// other VIP indices.
    #[test]
    fn typical_ipv6_flow_sets_have_distinct_signatures() {
        let base = parsed(0, IpFamily::V6);
        // Key i of a shape: its parse changed from the base, its VIP.
        type Shape = fn(u32, &mut Parsed) -> u32;
        let shapes: [(&str, Shape); 4] = [
            ("one client's ports", |i, p| {
                p.src_port = i as u16;
                p.dst_port = 80 + (i >> 16) as u16;
                1
            }),
            ("clients in a /64", |i, p| {
                p.src[12..].copy_from_slice(&i.to_be_bytes());
                1
            }),
            ("clients in /64s", |i, p| {
                p.src[4..8].copy_from_slice(&i.to_be_bytes());
                1
            }),
            ("VIPs and ports", |i, p| {
                p.src_port = i as u16;
                i >> 16
            }),
        ];
        for round in 0..3u64 {
            let secret = |i: usize| {
                HASH_SECRET[i].load(Ordering::Relaxed) ^ round.wrapping_mul(0x9e37_79b9_7f4a_7c15 << i)
            };
            let mut ids = std::collections::HashSet::new();
            for (name, shape) in shapes {
                ids.clear();
                for i in 0..1u32 << 18 {
                    let mut p = base;
                    let vip = shape(i, &mut p);
                    let k = FlowKey::new(vip, &p);
                    let (id, _) = signature_hash_keyed(&k.words, p.protocol, secret);
                    assert!(ids.insert(id), "{name}, secret {round}: key {i} shares its signature");
                }
            }
        }
    }

    /// The whole-key id of every IPv4 key gives its 5-tuple back (the VIP
    /// index is not kept); IPv6 keys use a signature id and the key array.
    #[test]
    fn compact_ids_round_trip() {
        for i in [0u32, 1, 77, 0xffff_ffff] {
            for vip in [0u32, 5, u32::MAX] {
                let mut p = parsed(i, IpFamily::V4);
                p.protocol = if i % 2 == 0 { proto::UDP } else { proto::TCP };
                let k = FlowKey::new(vip, &p);
                let id = k.compact();
                assert!(is_whole_key(id));
                assert_eq!(FlowKey::id_protocol(id), p.protocol);
                assert_eq!(FlowKey::from_compact(id), FlowKey::new(0, &p));
            }
        }
        let k = FlowKey::new(7, &parsed(1, IpFamily::V6));
        assert!(!is_whole_key(k.compact()));
        let mut t = table(16, 10);
        let (slot, _) = t.insert(&k, k.hash(), 3, 1).unwrap();
        assert_eq!(t.lookup(&k, 2).map(|h| h.pod), Some(3));
        assert_eq!(t.key(slot), k);
    }

    proptest::proptest! {
        /// The SSE2 slot match agrees with the one-slot-at-a-time one, for
        /// buckets whose fields share values with the probe or not.
        #[test]
        fn simd_match_equals_scalar(
            fields in proptest::collection::vec(0u32..3, 15),
            tags in proptest::collection::vec(proptest::prop_oneof![0u8..3, 0x80u8..0x83], 3),
            probe in proptest::collection::vec(0u32..3, 3),
            probe_tag in proptest::prop_oneof![0u8..3, 0x80u8..0x83],
            now in 0u32..4,
        ) {
            let f = |k: usize| [fields[k], fields[k + 1], fields[k + 2]];
            // Pods share the word with the tag: any pod bits, any tag.
            let pod_tag = |i: usize| fields[12 + i].wrapping_mul(0x0055_5555) | (u32::from(tags[i]) << 24);
            let b = Bucket {
                a: f(0), b: f(3), c: f(6), expiry: f(9),
                pod_tag: [pod_tag(0), pod_tag(1), pod_tag(2)], _spare: u32::MAX,
            };
            let id = pack_id(probe[0], probe[1], probe[2], probe_tag);
            proptest::prop_assert_eq!(b.matches(id, now), b.matches_scalar(id, now));
        }
    }

    #[test]
    fn fast_lane_key_equals_parsed_key() {
        let p = parsed(0x0a01_0203, IpFamily::V4);
        let ports = [(p.src_port >> 8) as u8, p.src_port as u8, (p.dst_port >> 8) as u8, p.dst_port as u8];
        let four = |a: &[u8; 16]| [a[0], a[1], a[2], a[3]];
        let k = FlowKey::new(9, &p);
        let h = k.hash();
        let word = |b: [u8; 4]| u32::from_ne_bytes(b);
        let fast = V4Fast {
            protocol: p.protocol,
            addrs: u64::from(word(four(&p.src))) | (u64::from(word(four(&p.dst))) << 32),
            ports: word(ports),
            l4_len: 0,
        };
        assert_eq!(FlowKey::v4_id_hash(&fast), (k.compact(), h));
        // IPv6: the key from the header words is the parsed packet's.
        let mut p6 = parsed(0x2001_0db8, IpFamily::V6);
        p6.dst = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
        let w = |a: &[u8; 16], at: usize| u64::from_ne_bytes(a[at..at + 8].try_into().unwrap());
        let fast6 = V6Fast {
            protocol: p6.protocol,
            src: [w(&p6.src, 0), w(&p6.src, 8)],
            dst: [w(&p6.dst, 0), w(&p6.dst, 8)],
            ports: word([(p6.src_port >> 8) as u8, p6.src_port as u8, 0, 80]),
            l4_len: 0,
        };
        let k6 = FlowKey::from_v6_fast(&fast6, 9);
        assert_eq!(k6, FlowKey::new(9, &p6));
        assert_eq!((k6.src(), k6.src_port(), k6.protocol()), (p6.src, p6.src_port, p6.protocol));
    }

    #[test]
    fn reply_key_is_the_replys_own_key() {
        let fwd = parsed(77, IpFamily::V4);
        let k = FlowKey::new(5, &fwd);
        let mut pod = [0u8; 16];
        pod[..4].copy_from_slice(&[10, 1, 0, 9]);
        let reply = Parsed { src: pod, dst: fwd.src, src_port: 8080, dst_port: fwd.src_port, ..fwd };
        assert_eq!(k.reply_key(&pod, 8080), FlowKey::new(0, &reply));
        assert_eq!(k.original_dst(), (fwd.dst, fwd.dst_port));
    }

    #[test]
    fn vip_and_family_are_part_of_the_key() {
        let p4 = parsed(1, IpFamily::V4);
        assert_ne!(FlowKey::new(1, &p4), FlowKey::new(2, &p4));
        let mut p6 = p4;
        p6.family = IpFamily::V6;
        assert_ne!(FlowKey::new(1, &p4), FlowKey::new(1, &p6));
        let mut udp = p4;
        udp.protocol = proto::UDP;
        assert_ne!(FlowKey::new(1, &p4), FlowKey::new(1, &udp));
        assert_eq!(FlowKey::new(9, &p4).vip(), 9);
    }

    #[test]
    fn full_bucket_fails_insert_until_an_entry_expires() {
        const N: usize = ENTRIES_PER_BUCKET;
        // One bucket: both choices of every key are the same bucket.
        let mut t = table(1, 10);
        let keys: Vec<FlowKey> = (0..=N as u32).map(|i| FlowKey::new(0, &parsed(i, IpFamily::V6))).collect();
        for (i, k) in keys[..N].iter().enumerate() {
            t.insert(k, k.hash(), i as u32, 1).unwrap();
        }
        assert_eq!(t.insert(&keys[N], keys[N].hash(), 9, 2), Err(BucketFull));
        // Everything inserted is still found.
        for (i, k) in keys[..N].iter().enumerate() {
            let (id, h) = k.id_hash();
            let c = t.candidates(h, id, 2);
            assert_eq!(t.hit(h, c, 2, true).unwrap().pod, i as u32);
        }
        assert!(t.insert(&keys[N], keys[N].hash(), 9, 20).is_ok());
    }

    /// A flow whose first bucket is full goes to its second one (found
    /// there by `hit_other`, not by the first-bucket lookup); when
    /// both are full, an entry of the first moves to its own second
    /// bucket to make room.
    #[test]
    fn full_first_buckets_send_flows_to_their_second() {
        for family in [IpFamily::V4, IpFamily::V6] {
            let mut t = table(16, 100);
            let first = |k: &FlowKey| t.choices(k.hash())[0];
            // Keys sharing one first bucket.
            let all: Vec<FlowKey> = (0..2000).map(|i| FlowKey::new(0, &parsed(i, family))).collect();
            let target = first(&all[0]);
            let same: Vec<FlowKey> = all.iter().copied().filter(|k| first(k) == target).take(8).collect();
            assert_eq!(same.len(), 8);
            for (i, k) in same.iter().enumerate() {
                let (slot, _) = t.insert(k, k.hash(), i as u32, 1).unwrap();
                if family == IpFamily::V6 {
                    t.set_source_note(slot, SourceNote(0xf000 | i as u16));
                }
            }
            for (i, k) in same.iter().enumerate() {
                let (id, h) = k.id_hash();
                let c = t.candidates(h, id, 2);
                let in_first = t.hit(h, c, 2, true);
                let hit = in_first.or_else(|| t.hit_other(h, id, 2, true));
                assert_eq!(hit.map(|h| h.pod), Some(i as u32), "{family:?} flow {i} lost");
                assert_eq!(t.lookup(k, 2).map(|h| h.pod), Some(i as u32));
                // Either bucket, the entry's key and note are its own.
                let slot = hit.unwrap().slot;
                assert_eq!(t.key(slot), *k);
                if family == IpFamily::V6 {
                    assert_eq!(t.source_note(slot), SourceNote(0xf000 | i as u16), "flow {i}'s note");
                }
            }
            assert_eq!(t.live_entries(2), 8, "eight flows of one first bucket (of three slots) all kept");
            let taken = t.take(&same[7], 2);
            assert_eq!(taken.map(|(pod, _)| pod), Some(7));
            assert_eq!(t.lookup(&same[7], 2), None);
        }
    }

    proptest::proptest! {
        /// The table against a `HashMap` model, over inserts (after a
        /// missed lookup, as the worker does), lookups, time passing and
        /// full buckets: a small table and a pool of keys (IPv4 and IPv6)
        /// that share buckets, so every bucket fills and entries expire.
        #[test]
        fn behaves_like_a_map_with_expiry(
            ops in proptest::collection::vec((0u32..48, 0u32..4, 0u32..5), 1..400),
        ) {
            const TIMEOUT: u32 = 10;
            let mut t = table(16, TIMEOUT);
            let keys: Vec<FlowKey> = (0..48)
                .map(|i| FlowKey::new(0, &parsed(i, if i % 3 == 0 { IpFamily::V6 } else { IpFamily::V4 })))
                .collect();
            // Every entry the table should hold: (key index, pod, expiry),
            // at most one live per key; dead ones stay until replaced.
            let mut model: Vec<(u32, u32, u32)> = Vec::new();
            let mut now = 1u32;
            let choice: Vec<[usize; 2]> = keys.iter().map(|k| t.choices(k.hash())).collect();
            let choices = |j: u32| choice[j as usize];
            for (k, pod, dt) in ops {
                now += dt;
                let key = &keys[k as usize];
                let live = model.iter_mut().find(|(j, _, e)| *j == k && *e > now);
                let got = t.lookup(key, now);
                proptest::prop_assert_eq!(got.map(|h| h.pod), live.as_ref().map(|(_, p, _)| *p), "lookup {} at {}", k, now);
                if let Some(entry) = live {
                    entry.2 = now + TIMEOUT;
                    continue;
                }
                // Live entries that may sit in this key's two buckets.
                let mine = choices(k);
                let sharing = model
                    .iter()
                    .filter(|&&(j, _, e)| e > now && choices(j).iter().any(|b| mine.contains(b)))
                    .count();
                match t.insert(key, key.hash(), pod, now) {
                    Ok((_, evicted)) => {
                        if let Some((old_pod, old)) = evicted {
                            // Only a dead entry is replaced.
                            let j = keys.iter().position(|x| *x == old).expect("an inserted key") as u32;
                            let at = model.iter().position(|&(m, p, e)| m == j && p == old_pod && e <= now);
                            proptest::prop_assert!(at.is_some(), "evicted a live or unknown entry");
                            model.swap_remove(at.unwrap());
                        }
                        model.push((k, pod, now + TIMEOUT));
                    }
                    // Both buckets full of live entries.
                    Err(BucketFull) => {
                        let slots = if mine[0] == mine[1] { 1 } else { 2 } * ENTRIES_PER_BUCKET;
                        proptest::prop_assert!(sharing >= slots, "refused with {} live sharing", sharing);
                    }
                }
                let live_model = model.iter().filter(|&&(_, _, e)| e > now).count();
                proptest::prop_assert_eq!(t.live_entries(now), live_model);
            }
        }
    }

    #[test]
    fn sweep_releases_expired_and_gone() {
        let mut t = table(16, 10);
        for i in 0..40 {
            let k = FlowKey::new(0, &parsed(i, IpFamily::V4));
            let _ = t.insert(&k, k.hash(), i % 4, 1 + (i % 2) * 100);
        }
        let live_before = t.live_entries(5);
        let mut of_pod_3 = 0;
        t.for_each_live(5, |p| of_pod_3 += usize::from(p == 3));
        assert!(of_pod_3 > 0);
        let mut released = Vec::new();
        // At now=5 the entries inserted at 1 are alive (expiry 11), those at
        // 101 too; pod 3 is gone, so exactly its entries are released.
        let next = t.sweep(0, 16, 5, |p| p == 3, |p, _| released.push(p));
        assert_eq!(next, 0);
        assert_eq!(released, vec![3; of_pod_3]);
        assert_eq!(t.live_entries(5), live_before - released.len());
        // At now=50 everything inserted at 1 is expired.
        released.clear();
        let live_at_50 = t.live_entries(50);
        t.sweep(0, 16, 50, |_| false, |p, _| released.push(p));
        assert!(!released.is_empty());
        assert!(released.iter().all(|&p| p == 0 || p == 2));
        // Only dead entries went: what was live at 50 still is, and nothing
        // inserted at 1 is left to be live at 5.
        assert_eq!(t.live_entries(50), live_at_50);
        assert_eq!(t.live_entries(5), live_at_50);
    }

    #[test]
    fn repoint_and_remove() {
        let mut t = table(16, 10);
        let k = FlowKey::new(0, &parsed(1, IpFamily::V4));
        let (slot, _) = t.insert(&k, k.hash(), 1, 1).unwrap();
        assert_eq!(t.repoint(slot, 2, 2), 1);
        assert_eq!(t.lookup(&k, 3).unwrap().pod, 2);
        assert_eq!(t.remove(slot), Some((2, k)));
        assert_eq!(t.lookup(&k, 3), None);
        assert_eq!(t.remove(slot), None);
    }
}
