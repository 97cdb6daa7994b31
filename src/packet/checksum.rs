//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Everything here works on one's-complement sums kept unfolded in a `u64`
//! until the end: adding 16-bit words into 64 bits cannot overflow for any
//! packet VPP can hold, so folding happens once, not per word.

/// Unfolded one's-complement sum of `data` read as big-endian 16-bit words.
/// An odd trailing byte is padded with zero, as RFC 1071 requires.
#[inline]
pub fn sum(data: &[u8]) -> u64 {
    let mut acc: u64 = 0;
    // Eight bytes per step: the two halves of a big-endian u64 summed as
    // 32-bit numbers carry the same one's-complement value as the four
    // 16-bit words they contain, and the compiler keeps this in registers.
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let w = u64::from_be_bytes([
            chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
        ]);
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let mut rest = chunks.remainder();
    while rest.len() >= 2 {
        acc += u64::from(u16::from_be_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let [last] = rest {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds an unfolded sum to 16 bits with end-around carry, in two steps
/// of [`fold32`]'s kind (no loop, no branch): adding the word to itself
/// rotated by half puts the halves' end-around-carry sum in the top half,
/// 64 -> 32 -> 16 bits. Zero only for zero.
#[inline(always)]
pub fn fold(acc: u64) -> u16 {
    fold32((acc.wrapping_add(acc.rotate_left(32)) >> 32) as u32)
}

/// The checksum field value for `data` (which must hold a zeroed checksum
/// field, or the field's bytes excluded).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// Unfolded sum of the IPv4 pseudo-header (RFC 793/768).
#[inline]
pub fn pseudo_header_v4(src: &[u8; 4], dst: &[u8; 4], protocol: u8, l4_len: u32) -> u64 {
    sum(src) + sum(dst) + u64::from(protocol) + u64::from(l4_len)
}

/// Unfolded sum of the IPv6 pseudo-header (RFC 8200 §8.1).
#[inline]
pub fn pseudo_header_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, l4_len: u32) -> u64 {
    sum(src) + sum(dst) + u64::from(next_header) + u64::from(l4_len >> 16) + u64::from(l4_len & 0xffff)
}

/// The change to a one's-complement sum when the bytes `old` are replaced by
/// `new` (both the same, even length): `~m + m'` of RFC 1624 eqn. 3,
/// unfolded. Deltas for several fields can simply be added.
#[inline]
pub fn delta(old: &[u8], new: &[u8]) -> u64 {
    debug_assert_eq!(old.len(), new.len());
    debug_assert_eq!(old.len() % 2, 0);
    // ~m summed word by word equals (0xffff * words) - sum(m).
    let words = (old.len() / 2) as u64;
    let old_sum = u64::from(fold(sum(old)));
    // Keep the value positive: 0xffff*words >= folded old sum for words >= 1.
    (0xffff * words.max(1) - old_sum) + sum(new)
}

/// [`delta`] for an IPv4 address, in two 16-bit words.
#[inline(always)]
pub fn delta_v4(old: &[u8; 4], new: &[u8; 4]) -> u64 {
    let o = u32::from_be_bytes(*old);
    let n = u32::from_be_bytes(*new);
    delta16((o >> 16) as u16, (n >> 16) as u16) + delta16(o as u16, n as u16)
}

/// [`delta`] for an IPv6 address: `~old + new` summed as 32-bit halves of
/// 64-bit words (the same one's-complement value as the 16-bit words).
#[inline(always)]
pub fn delta_v6(old: &[u8; 16], new: &[u8; 16]) -> u64 {
    let mut acc = 0u64;
    for at in [0, 8] {
        let o = !u64::from_be_bytes(old[at..at + 8].try_into().unwrap());
        let n = u64::from_be_bytes(new[at..at + 8].try_into().unwrap());
        acc += (o >> 32) + (o & 0xffff_ffff) + (n >> 32) + (n & 0xffff_ffff);
    }
    acc
}

/// The unfolded one's-complement sum of the eight bytes at `at`, read in
/// native byte order: the byte-swapped value of the big-endian sum (RFC
/// 1071 §2(B)), for rewrites that add native-order words throughout and
/// store the result as it is, with no swap per word. Its halves as 32-bit
/// numbers carry the same value as the four 16-bit words.
#[inline(always)]
pub fn sum_ne64(b: &[u8], at: usize) -> u64 {
    let w = ne64(b, at);
    (w >> 32) + (w & 0xffff_ffff)
}

/// The one's-complement sum of 64-bit words (native-order reads of 8
/// bytes each, or their complements for `~m`), added with end-around
/// carry: 2^64 is 1 modulo 0xffff, so a carry out of bit 63 counts as 1
/// (one `add`/`adc` per word where splitting each word into 32-bit halves
/// takes four instructions). Returned as a sum of two 32-bit halves, of
/// the same value modulo 0xffff as the words' [`sum_ne64`]s and, like
/// theirs, 0 only for words that are all 0: small enough for the usual
/// accumulators.
#[inline(always)]
pub fn sum_words(words: [u64; 4]) -> u64 {
    let add = |a: u64, b: u64| {
        let (s, carry) = a.overflowing_add(b);
        // (No overflow: with a carry, `s` is at most 2^64 - 2.)
        s + u64::from(carry)
    };
    let w = add(add(words[0], words[1]), add(words[2], words[3]));
    (w >> 32) + (w & 0xffff_ffff)
}

/// The eight bytes at `at` as a native-order word (for [`sum_words`]).
#[inline(always)]
pub fn ne64(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().unwrap())
}

/// The change to a sum when the 16-bit value `old` becomes `new` (both
/// read in one byte order, either: see [`sum_ne64`]).
#[inline]
pub fn delta16(old: u16, new: u16) -> u64 {
    u64::from(!old) + u64::from(new)
}

/// Applies an unfolded sum delta to a stored checksum field (RFC 1624 eqn. 3:
/// `HC' = ~(~HC + ~m + m')`). Correct for every input, including the
/// one's-complement negative zero cases that eqn. 2 gets wrong.
#[inline]
pub fn update(stored: u16, delta: u64) -> u16 {
    !fold(u64::from(!stored) + delta)
}

/// Applies a delta to a field that holds a *partial* (pseudo-header only,
/// not complemented) sum, as left for checksum offload.
#[inline]
pub fn update_partial(stored: u16, delta: u64) -> u16 {
    fold(u64::from(stored) + delta)
}

/// One's-complement addition of 32-bit words (the carry out wraps
/// around; it cannot carry again). Zero only when both are zero.
///
/// With [`fold32`] this is the fast lane's deliberate twin of the `u64`
/// sums above: 32-bit adds and a rotate fold on words in native byte order
/// (the sum does not care about byte order, RFC 1071 §2(B)), so the IPv4
/// fast-lane rewrite stays in registers. A property test holds the two
/// equal (`add32_fold32_equal_sum_fold`).
#[inline(always)]
pub fn add32(a: u32, b: u32) -> u32 {
    let (sum, carry) = a.overflowing_add(b);
    sum + u32::from(carry)
}

/// A 32-bit one's-complement sum folded to 16 bits: adding the word to
/// itself rotated by 16 puts hi + lo + (the carry of lo + hi) in the top
/// half, which is the end-around-carry sum. Zero only for zero.
#[inline(always)]
pub fn fold32(s: u32) -> u16 {
    (s.wrapping_add(s.rotate_left(16)) >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The fold of [`fold`]'s earlier version, step by step:
    /// 64 -> 33 -> 18 -> 17 -> 16 bits.
    fn reference_fold(acc: u64) -> u16 {
        let a = (acc & 0xffff_ffff) + (acc >> 32);
        let a = (a & 0xffff) + (a >> 16);
        let a = (a & 0xffff) + (a >> 16);
        let a = (a & 0xffff) + (a >> 16);
        a as u16
    }

    proptest! {
        #[test]
        fn fold_equals_the_stepwise_fold(acc in any::<u64>()) {
            prop_assert_eq!(fold(acc), reference_fold(acc));
        }

        /// Words added with end-around carry fold to what their bytes'
        /// 16-bit sum folds to (0 and all ones kept apart), whatever the
        /// words; biased towards all-ones words, whose carries chain.
        #[test]
        fn word_sums_equal_the_byte_sum(
            words in any::<[u64; 4]>(),
            ones in any::<[bool; 4]>(),
            zero in any::<[bool; 4]>(),
        ) {
            let mut w = words;
            for k in 0..4 {
                if ones[k] { w[k] = u64::MAX - (w[k] & 1); }
                if zero[k] { w[k] = 0; }
            }
            let bytes: Vec<u8> = w.iter().flat_map(|x| x.to_ne_bytes()).collect();
            let s = sum_words(w);
            prop_assert!(s < 1 << 33);
            prop_assert_eq!(fold(s), fold_ne(&bytes));
        }
    }

    /// The folded native-order sum of `bytes` (pairs of bytes as
    /// native-order 16-bit words).
    fn fold_ne(bytes: &[u8]) -> u16 {
        let total: u64 = bytes.chunks(2).map(|c| u64::from(u16::from_ne_bytes([c[0], c[1]]))).sum();
        reference_fold(total)
    }

    #[test]
    fn fold_edges() {
        let halves = [0u64, 1, 0xfffe, 0xffff, 0x1_0000, 0xffff_0000, 0xffff_fffe, 0xffff_ffff];
        for hi in halves {
            for lo in halves {
                let acc = hi << 32 | lo;
                assert_eq!(fold(acc), reference_fold(acc), "{acc:#x}");
            }
        }
        assert_eq!(fold(0), 0);
        assert_eq!(fold(0xffff), 0xffff);
    }

    /// The RFC 1071 reference: plain 16-bit word loop.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in data.chunks(2) {
            let w = if pair.len() == 2 {
                u16::from_be_bytes([pair[0], pair[1]])
            } else {
                u16::from_be_bytes([pair[0], 0])
            };
            acc += u32::from(w);
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn fold_matches_the_loop() {
        fn slow(mut a: u64) -> u16 {
            while a > 0xffff {
                a = (a & 0xffff) + (a >> 16);
            }
            a as u16
        }
        for a in
            [0u64, 1, 0xffff, 0x1_0000, 0x1_ffff, 0xffff_ffff, 0x1_0000_0000, u64::MAX, 0x1234_5678_9abc_def0]
        {
            assert_eq!(fold(a), slow(a), "{a:#x}");
        }
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example bytes: sum is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn known_ipv4_header() {
        // A header from a real capture; its checksum field is 0xb861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01,
            0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(fold(sum(&h)), 0xffff);
    }

    proptest! {
        /// The 32-bit twins give the same folded sum as the `u64` path for
        /// any words, in either byte order.
        #[test]
        fn add32_fold32_equal_sum_fold(words in proptest::collection::vec(any::<u32>(), 1..12)) {
            let fast = words.iter().fold(0u32, |acc, &w| add32(acc, w));
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
            prop_assert_eq!(fold32(fast), fold(sum(&bytes)));
            let ne = words.iter().fold(0u32, |acc, &w| add32(acc, u32::from_ne_bytes(w.to_be_bytes())));
            prop_assert_eq!(fold32(ne).to_ne_bytes(), fold(sum(&bytes)).to_be_bytes());
        }

        #[test]
        fn sum_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let ours = fold(sum(&data));
            let reference = reference_sum(&data);
            // 0x0000 and 0xffff are the same one's-complement value only when
            // the data is all zero; otherwise both folds must agree exactly.
            prop_assert_eq!(ours, reference);
        }

        #[test]
        fn incremental_equals_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 4..64),
            at in 0usize..30,
            new in any::<[u8; 2]>(),
        ) {
            if data.len() % 2 == 1 { data.push(0); }
            let at = (at * 2) % (data.len() - 2);
            let csum_at = if at == 0 { 2 } else { 0 };
            data[csum_at] = 0; data[csum_at + 1] = 0;
            let c = checksum(&data);
            data[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
            let old = [data[at], data[at + 1]];
            data[at..at + 2].copy_from_slice(&new);
            let updated = update(c, delta(&old, &new));
            data[csum_at..csum_at + 2].copy_from_slice(&updated.to_be_bytes());
            // The packet verifies...
            prop_assert_eq!(fold(sum(&data)), 0xffff);
            // ...and the field equals a from-scratch computation.
            data[csum_at] = 0; data[csum_at + 1] = 0;
            prop_assert_eq!(updated, checksum(&data));
        }

        #[test]
        fn address_deltas_match_the_generic_one(a in any::<[u8; 16]>(), b in any::<[u8; 16]>(), c in any::<u16>()) {
            let v4a: [u8; 4] = a[..4].try_into().unwrap();
            let v4b: [u8; 4] = b[..4].try_into().unwrap();
            prop_assert_eq!(update(c, delta_v4(&v4a, &v4b)), update(c, delta(&v4a, &v4b)));
            prop_assert_eq!(update(c, delta_v6(&a, &b)), update(c, delta(&a, &b)));
        }
    }
}
