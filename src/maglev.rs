//! Maglev new-flow lookup tables (Eisenbud et al., NSDI 2016), weighted.
//!
//! A VIP's table has `new_len` entries; a new flow's hash picks one entry
//! and so one pod. Properties kp relies on, each tested below:
//!
//! - **Deterministic.** The table depends only on the set of (pod address,
//!   weight) and `new_len`: pods are sorted by address before the fill and
//!   each pod's permutation comes from a fixed hash of its address. Two
//!   nodes with the same Service build byte-identical tables, so ECMP across
//!   nodes stays consistent without shared state.
//! - **Balanced.** Every pod gets within one entry of `M * w / sum(w)`: the
//!   per-pod quota is fixed first (largest remainder), and the fill stops
//!   giving entries to a pod at its quota. With equal weights this is
//!   exactly the paper's round-robin fill.
//! - **Minimal disruption.** Pods claim entries in the order of their own
//!   permutation, interleaved by weight (a deficit round robin), so removing
//!   a pod mostly moves only the entries it owned.
//! - **O(M + N) memory.** A permutation is never materialised: each pod keeps
//!   its position and skip, and steps through `offset + j * skip mod M`.

use core::fmt;

/// The seed's default table size.
pub const DEFAULT_NEW_LEN: u32 = 1024;

/// Upper bound on `new_len`: 2^22 entries (16 MiB of table per VIP) is
/// already two orders of magnitude above a Service with 40k pods; larger
/// tables only cost memory and rebuild time.
pub const MAX_NEW_LEN: u32 = 1 << 22;

/// Largest pod weight accepted.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// Entry value of a table built from no usable pod.
pub const NO_POD: u32 = u32::MAX;

/// Why a `new_len` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewLenError {
    TooSmall(u32),
    TooLarge(u32),
    NotPowerOfTwoOrPrime { value: u32, next_pow2: u32, next_prime: u32 },
}

impl fmt::Display for NewLenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NewLenError::TooSmall(v) => write!(f, "new_len {v} is too small: the minimum is 2"),
            NewLenError::TooLarge(v) => {
                write!(f, "new_len {v} is too large: the maximum is {MAX_NEW_LEN}")
            }
            NewLenError::NotPowerOfTwoOrPrime { value, next_pow2, next_prime } => write!(
                f,
                "new_len {value} must be a power of two or a prime (for example {next_pow2} or {next_prime})"
            ),
        }
    }
}

impl std::error::Error for NewLenError {}

/// Deterministic primality test for u32 (trial division by 6k±1; at most
/// ~700 steps for values up to 2^22, and only on the control plane).
pub fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n % 2 == 0 || n % 3 == 0 {
        return false;
    }
    let mut d = 5u64;
    while d * d <= u64::from(n) {
        if n as u64 % d == 0 || n as u64 % (d + 2) == 0 {
            return false;
        }
        d += 6;
    }
    true
}

/// Checks a table size: a power of two (the seed's rule) or a prime (the
/// paper's), between 2 and [`MAX_NEW_LEN`].
pub fn validate_new_len(m: u32) -> Result<u32, NewLenError> {
    if m < 2 {
        return Err(NewLenError::TooSmall(m));
    }
    if m > MAX_NEW_LEN {
        return Err(NewLenError::TooLarge(m));
    }
    if m.is_power_of_two() || is_prime(m) {
        return Ok(m);
    }
    let next_prime = (m..).find(|&c| is_prime(c)).unwrap_or(m);
    Err(NewLenError::NotPowerOfTwoOrPrime { value: m, next_pow2: m.next_power_of_two(), next_prime })
}

/// One pod as the table builder sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend {
    /// The pod address (IPv4 in the first four bytes); the only input to
    /// its permutation, so the table is the same on every node.
    pub addr: [u8; 16],
    /// Relative weight; 0 means "no new flows" (drain).
    pub weight: u32,
    /// What the table stores for this pod (kp's pod index on this node).
    pub id: u32,
}

/// A built table: `entries[i]` is the `id` of the pod owning entry `i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    entries: Box<[u32]>,
}

impl Table {
    /// Builds the table for `backends` (any order; duplicates by address
    /// are a caller error) with `new_len` entries (already validated).
    pub fn build(backends: &[Backend], new_len: u32) -> Table {
        let m = new_len as usize;
        let mut pods: Vec<Backend> = backends.iter().copied().filter(|b| b.weight > 0).collect();
        if pods.is_empty() {
            return Table { entries: vec![NO_POD; m].into_boxed_slice() };
        }
        pods.sort_unstable_by_key(|b| b.addr);
        let quotas = quotas(&pods, new_len);

        struct Walk {
            pos: u32,
            skip: u32,
            /// Two skips, mod M.
            skip2: u32,
            weight: u64,
            credit: u64,
            left: u32,
        }
        let mut walks: Vec<Walk> = pods
            .iter()
            .zip(&quotas)
            .map(|(p, &q)| {
                let (offset, skip) = permutation(&p.addr, new_len);
                let skip2 = (u64::from(skip) * 2 % u64::from(new_len)) as u32;
                Walk { pos: offset, skip, skip2, weight: u64::from(p.weight), credit: 0, left: q }
            })
            .collect();

        // Occupancy is probed in a bitmap (8 KiB for M = 65537, so it stays
        // in L1) rather than in the 4-byte owner array: the probe loop is the
        // whole cost of a build.
        let mut used = vec![0u64; m.div_ceil(64)];
        let mut owner = vec![0u32; m];
        let mut filled = 0usize;
        // A pod claims an entry each time its credit reaches the largest
        // weight among pods still short of their quota; recomputing that
        // when a pod completes keeps every round productive even with very
        // uneven weights.
        let threshold =
            |walks: &[Walk]| walks.iter().filter(|w| w.left > 0).map(|w| w.weight).max().unwrap_or(1);
        let mut max_weight = threshold(&walks);
        'fill: loop {
            let mut completed = false;
            for (i, w) in walks.iter_mut().enumerate() {
                if w.left == 0 {
                    continue;
                }
                w.credit += w.weight;
                while w.credit >= max_weight && w.left > 0 {
                    w.credit -= max_weight;
                    // Step along this pod's permutation to its next free
                    // entry, two positions per step: both come from the
                    // same position (one and two skips on), which halves
                    // the dependency chain the search waits on.
                    let c = loop {
                        let p0 = w.pos;
                        let p1 = wrap(p0 + w.skip, new_len);
                        let p2 = wrap(p0 + w.skip2, new_len);
                        if used[(p0 >> 6) as usize] & (1 << (p0 & 63)) == 0 {
                            w.pos = p1;
                            break p0 as usize;
                        }
                        if used[(p1 >> 6) as usize] & (1 << (p1 & 63)) == 0 {
                            w.pos = p2;
                            break p1 as usize;
                        }
                        w.pos = p2;
                    };
                    used[c >> 6] |= 1 << (c & 63);
                    owner[c] = i as u32;
                    w.left -= 1;
                    filled += 1;
                    if filled == m {
                        break 'fill;
                    }
                }
                completed |= w.left == 0;
            }
            if completed {
                max_weight = threshold(&walks);
            }
        }
        for e in owner.iter_mut() {
            *e = pods[*e as usize].id;
        }
        Table { entries: owner.into_boxed_slice() }
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no pod can take new flows.
    pub fn has_no_pod(&self) -> bool {
        self.entries.first().is_none_or(|&e| e == NO_POD)
    }

    pub fn entries(&self) -> &[u32] {
        &self.entries
    }

    /// The pod for a new flow with this 32-bit hash, or `None` if no pod
    /// takes new flows. Lemire's multiply-shift maps the hash onto any
    /// table size (prime or power of two) without a division.
    #[inline(always)]
    pub fn lookup(&self, hash: u32) -> Option<u32> {
        let i = ((u64::from(hash) * self.entries.len() as u64) >> 32) as usize;
        match self.entries.get(i) {
            Some(&id) if id != NO_POD => Some(id),
            _ => None,
        }
    }

    /// How many entries each id owns, for `show kp vip verbose`.
    pub fn count(&self, id: u32) -> usize {
        self.entries.iter().filter(|&&e| e == id).count()
    }
}

/// `x mod m` for `x < 2m`, without a division.
#[inline(always)]
fn wrap(x: u32, m: u32) -> u32 {
    if x >= m {
        x - m
    } else {
        x
    }
}

/// Largest-remainder quotas: `floor(M*w/W)` each, plus one for the pods
/// with the largest remainders (ties go to the lower address), so every
/// pod is within one entry of its exact share and the quotas sum to M.
fn quotas(pods: &[Backend], m: u32) -> Vec<u32> {
    let total: u64 = pods.iter().map(|p| u64::from(p.weight)).sum();
    let m64 = u64::from(m);
    let mut q: Vec<u32> = pods.iter().map(|p| (m64 * u64::from(p.weight) / total) as u32).collect();
    let given: u64 = q.iter().map(|&x| u64::from(x)).sum();
    let mut order: Vec<usize> = (0..pods.len()).collect();
    order.sort_by_key(|&i| core::cmp::Reverse(m64 * u64::from(pods[i].weight) % total));
    for &i in order.iter().take((m64 - given) as usize) {
        q[i] += 1;
    }
    q
}

/// A pod's permutation of the table: start `offset`, stride `skip`. The
/// stride must be coprime with M so the walk visits every entry: any
/// non-zero stride for a prime M, an odd one for a power of two.
fn permutation(addr: &[u8; 16], m: u32) -> (u32, u32) {
    let hi = u64::from_be_bytes(addr[..8].try_into().unwrap());
    let lo = u64::from_be_bytes(addr[8..].try_into().unwrap());
    let h1 = mix64(hi ^ mix64(lo ^ 0x6b70_6f66_6673_6574)); // "kpoffset"
    let h2 = mix64(lo ^ mix64(hi ^ 0x6b70_736b_6970_7373)); // "kpskipss"
    let offset = (h1 % u64::from(m)) as u32;
    let skip = if m.is_power_of_two() {
        ((h2 % u64::from((m / 2).max(1))) * 2 + 1) as u32 % m.max(2)
    } else {
        (h2 % u64::from(m - 1)) as u32 + 1
    };
    (offset, skip.max(1))
}

/// The murmur3 64-bit finaliser: a fixed, well-mixed, platform-independent
/// function, which is all the permutation needs.
#[inline]
fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pod(i: u32, weight: u32) -> Backend {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        Backend { addr, weight, id: i }
    }

    #[test]
    fn new_len_rules() {
        assert_eq!(validate_new_len(1024), Ok(1024));
        assert_eq!(validate_new_len(65537), Ok(65537));
        assert_eq!(validate_new_len(2), Ok(2));
        assert_eq!(validate_new_len(1), Err(NewLenError::TooSmall(1)));
        assert_eq!(validate_new_len(0), Err(NewLenError::TooSmall(0)));
        assert_eq!(validate_new_len(MAX_NEW_LEN), Ok(MAX_NEW_LEN));
        assert_eq!(validate_new_len(MAX_NEW_LEN + 1), Err(NewLenError::TooLarge(MAX_NEW_LEN + 1)));
        let e = validate_new_len(1000).unwrap_err();
        assert_eq!(e, NewLenError::NotPowerOfTwoOrPrime { value: 1000, next_pow2: 1024, next_prime: 1009 });
        assert_eq!(
            e.to_string(),
            "new_len 1000 must be a power of two or a prime (for example 1024 or 1009)"
        );
    }

    #[test]
    fn primes() {
        let small: Vec<u32> = (0..50).filter(|&n| is_prime(n)).collect();
        assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47]);
        assert!(is_prime(65537));
        assert!(!is_prime(65535));
        assert!(is_prime(4194301));
        assert!(!is_prime(4194303));
    }

    #[test]
    fn no_pods_means_no_pod() {
        let t = Table::build(&[], 16);
        assert!(t.has_no_pod());
        assert_eq!(t.lookup(12345), None);
        let t = Table::build(&[pod(1, 0), pod(2, 0)], 16);
        assert!(t.has_no_pod());
    }

    #[test]
    fn lookup_covers_the_whole_table() {
        let t = Table::build(&[pod(1, 1), pod(2, 1), pod(3, 1)], 7);
        assert_eq!(t.lookup(0), Some(t.entries()[0]));
        assert_eq!(t.lookup(u32::MAX), Some(t.entries()[6]));
    }

    #[test]
    fn drained_pod_gets_nothing() {
        let t = Table::build(&[pod(1, 1), pod(2, 0), pod(3, 1)], 1024);
        assert_eq!(t.count(2), 0);
        assert_eq!(t.count(1) + t.count(3), 1024);
    }

    #[test]
    fn extreme_weights_build_quickly_and_exactly() {
        let pods: Vec<Backend> = (0..1000).map(|i| pod(i, if i == 0 { MAX_WEIGHT } else { 1 })).collect();
        let t = Table::build(&pods, 65537);
        // 65537 * 1e6 / (1e6 + 999) = 65471.6; the rest share 65.
        assert_eq!(t.count(0), 65472);
        assert_eq!((1..1000).map(|i| t.count(i)).sum::<usize>(), 65);
    }

    #[test]
    fn weights_split_proportionally() {
        let t = Table::build(&[pod(1, 1), pod(2, 3)], 1024);
        assert_eq!((t.count(1), t.count(2)), (256, 768));
    }

    #[test]
    fn permutations_visit_every_entry() {
        for m in [2u32, 3, 16, 17, 1024, 1031] {
            for i in 0..20 {
                let (offset, skip) = permutation(&pod(i, 1).addr, m);
                let mut seen = vec![false; m as usize];
                let mut p = offset;
                for _ in 0..m {
                    seen[p as usize] = true;
                    p = (p + skip) % m;
                }
                assert!(seen.iter().all(|&s| s), "m={m} pod={i}");
            }
        }
    }

    /// Known table for a fixed input, so a change to the hash or fill
    /// (which would break consistency across nodes running mixed versions)
    /// cannot go unnoticed.
    #[test]
    fn golden_table() {
        let t = Table::build(&[pod(1, 1), pod(2, 1), pod(3, 2)], 16);
        assert_eq!(t.entries(), GOLDEN_16);
    }
    const GOLDEN_16: &[u32] = &[1, 3, 3, 2, 3, 3, 1, 3, 3, 2, 3, 1, 3, 2, 2, 1];

    fn sizes() -> impl Strategy<Value = u32> {
        prop_oneof![Just(16u32), Just(64), Just(251), Just(1024), Just(4099), Just(8192)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn balanced_within_one_entry(
            weights in proptest::collection::vec(0u32..10, 1..60),
            m in sizes(),
        ) {
            let pods: Vec<Backend> = weights.iter().enumerate().map(|(i, &w)| pod(i as u32, w)).collect();
            let t = Table::build(&pods, m);
            let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            if total == 0 {
                prop_assert!(t.has_no_pod());
                return Ok(());
            }
            for p in &pods {
                let exact = f64::from(m) * f64::from(p.weight) / total as f64;
                let got = t.count(p.id) as f64;
                prop_assert!((got - exact).abs() < 1.0, "pod {} got {} want {}", p.id, got, exact);
            }
            prop_assert_eq!(t.entries().iter().filter(|&&e| e == NO_POD).count(), 0);
        }

        #[test]
        fn independent_of_insertion_order(
            weights in proptest::collection::vec(1u32..5, 1..40),
            m in sizes(),
            seed in any::<u64>(),
        ) {
            let pods: Vec<Backend> = weights.iter().enumerate().map(|(i, &w)| pod(i as u32, w)).collect();
            let mut shuffled = pods.clone();
            // Deterministic Fisher-Yates from the seed.
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = mix64(s.wrapping_add(0x9e37_79b9_7f4a_7c15));
                shuffled.swap(i, (s % (i as u64 + 1)) as usize);
            }
            prop_assert_eq!(Table::build(&pods, m), Table::build(&shuffled, m));
        }

        /// Removing k pods: entries of surviving pods move only as Maglev
        /// must. With N pods and M entries, the paper's Figure 9 shows a few
        /// percent; bound it loosely here and measure exactly in `disruption`.
        #[test]
        fn removal_moves_few_surviving_entries(
            n in 20u32..120,
            k in 1u32..4,
            m in prop_oneof![Just(4099u32), Just(8192)],
        ) {
            let before: Vec<Backend> = (0..n).map(|i| pod(i, 1)).collect();
            let after: Vec<Backend> = before.iter().copied().filter(|p| p.id >= k).collect();
            let (a, b) = (Table::build(&before, m), Table::build(&after, m));
            let moved = extra_moves(&a, &b, |id| id >= k);
            // Every entry of a removed pod must move; others should mostly stay.
            prop_assert!(moved as f64 / f64::from(m) < 0.02 * f64::from(k) + 0.02,
                "n={} k={} m={} moved={}", n, k, m, moved);
        }
    }

    /// Entries that changed owner between two surviving pods.
    pub(crate) fn extra_moves(a: &Table, b: &Table, survives: impl Fn(u32) -> bool) -> usize {
        a.entries().iter().zip(b.entries()).filter(|(&x, &y)| x != y && survives(x)).count()
    }

    /// The measurement: N=1000, M=65537, k=1 and k=10. Printed with
    /// `cargo test --release -- --nocapture maglev::tests::disruption`.
    #[test]
    fn disruption() {
        let (n, m) = (1000u32, 65537u32);
        let before: Vec<Backend> = (0..n).map(|i| pod(i, 1)).collect();
        let a = Table::build(&before, m);
        for k in [1u32, 10] {
            // Remove k pods spread over the sorted order.
            let gone = |id: u32| id % (n / k) == 7 && id / (n / k) < k;
            let after: Vec<Backend> = before.iter().copied().filter(|p| !gone(p.id)).collect();
            assert_eq!(after.len(), (n - k) as usize);
            let b = Table::build(&after, m);
            let extra = extra_moves(&a, &b, |id| !gone(id));
            let pct = 100.0 * extra as f64 / f64::from(m);
            println!("maglev disruption N={n} M={m} k={k}: {extra} extra moves ({pct:.2}% of M)");
            assert!(pct < 3.0 * f64::from(k).sqrt(), "k={k}: {pct:.2}%");
        }
    }
}
