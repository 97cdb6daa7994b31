//! NAT rewrite of parsed TCP/UDP packets with incremental checksums.
//!
//! When the address family stays the same (nat44, nat66) a packet is
//! rewritten in place ([`rewrite_dst`], [`rewrite_src`], and [`dnat_v4`],
//! the IPv4 fast lane's twin of `rewrite_dst`): addresses, ports, the IPv4
//! header checksum and the TCP/UDP checksum, each updated with RFC 1624
//! from one precomputed delta. The tests hold the fast twins equal to a
//! general rewrite of either or both endpoints, and to checksums computed
//! from scratch. nat46 and nat64 change the IP header itself: see
//! [`crate::xlat`].

use crate::packet::icmp_error::IcmpError;
use crate::packet::ipv4::{field as ip4, MIN_HEADER_LEN as IP4_LEN};
use crate::packet::ipv6::field as ip6;
use crate::packet::l4::{
    tcp_field as tcp, udp_field as udp, TCP_MIN_HEADER_LEN as TCP_LEN, UDP_HEADER_LEN as UDP_LEN,
};
use crate::packet::{checksum, proto, set_be16, IpFamily, Parsed};
use core::fmt;

/// The NAT type of a VIP: VIP family to pod family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NatType {
    Nat44,
    Nat66,
    Nat46,
    Nat64,
}

impl NatType {
    /// The NAT type between two families.
    pub fn between(vip: IpFamily, pod: IpFamily) -> NatType {
        match (vip, pod) {
            (IpFamily::V4, IpFamily::V4) => NatType::Nat44,
            (IpFamily::V6, IpFamily::V6) => NatType::Nat66,
            (IpFamily::V4, IpFamily::V6) => NatType::Nat46,
            (IpFamily::V6, IpFamily::V4) => NatType::Nat64,
        }
    }

    pub fn vip_family(self) -> IpFamily {
        match self {
            NatType::Nat44 | NatType::Nat46 => IpFamily::V4,
            NatType::Nat66 | NatType::Nat64 => IpFamily::V6,
        }
    }

    pub fn pod_family(self) -> IpFamily {
        match self {
            NatType::Nat44 | NatType::Nat64 => IpFamily::V4,
            NatType::Nat66 | NatType::Nat46 => IpFamily::V6,
        }
    }

    /// Whether the VIP and its pods are of different families (nat46,
    /// nat64): their packets are translated between IPv4 and IPv6.
    pub fn translates(self) -> bool {
        self.vip_family() != self.pod_family()
    }

    pub fn name(self) -> &'static str {
        match self {
            NatType::Nat44 => "nat44",
            NatType::Nat66 => "nat66",
            NatType::Nat46 => "nat46",
            NatType::Nat64 => "nat64",
        }
    }
}

impl fmt::Display for NatType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An address and port; IPv4 addresses use the first four bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub family: IpFamily,
    pub addr: [u8; 16],
    pub port: u16,
}

impl Endpoint {
    pub fn v4(addr: [u8; 4], port: u16) -> Endpoint {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&addr);
        Endpoint { family: IpFamily::V4, addr: a, port }
    }

    pub fn v6(addr: [u8; 16], port: u16) -> Endpoint {
        Endpoint { family: IpFamily::V6, addr, port }
    }
}

/// What to change: the new source and/or destination endpoint (the tests'
/// general rewrite, which the data path's one-endpoint twins must match).
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    pub src: Option<Endpoint>,
    pub dst: Option<Endpoint>,
}

#[cfg(test)]
impl Rewrite {
    /// Forward direction of a Service: client -> VIP becomes client -> pod.
    pub fn dnat(to: Endpoint) -> Rewrite {
        Rewrite { src: None, dst: Some(to) }
    }

    /// Reply direction: pod -> client becomes VIP -> client.
    pub fn snat(from: Endpoint) -> Rewrite {
        Rewrite { src: Some(from), dst: None }
    }
}

/// How the TCP/UDP checksum field is used, following the buffer's offload
/// flags: a full checksum, or a partial (pseudo-header only, not
/// complemented) sum that the NIC will finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Checksum {
    Full,
    Partial,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatError {
    /// The parse result does not describe this buffer.
    Truncated,
    /// A rewrite endpoint of the wrong family for a same-family rewrite.
    FamilyMismatch,
    /// A nat46/nat64 packet kp does not translate (yet): a fragment or an
    /// ICMP error of a translated flow.
    TranslationNotSupported,
    /// Not enough headroom to grow the header.
    NoHeadroom,
    /// An IPv4 UDP datagram without a checksum, going to IPv6 (which
    /// requires one), in a buffer chain: the checksum is computed over the
    /// first buffer only.
    ChecksumNeedsWholeDatagram,
    /// nat64: no source port free for a new flow.
    PortsExhausted,
}

impl fmt::Display for NatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NatError::Truncated => "packet shorter than its parsed headers",
            NatError::FamilyMismatch => "rewrite endpoint of the wrong address family",
            NatError::TranslationNotSupported => "nat46/nat64: fragment, or ICMP error about no known flow",
            NatError::NoHeadroom => "no headroom to grow the packet header",
            NatError::ChecksumNeedsWholeDatagram => "IPv4 UDP without checksum to IPv6, in a buffer chain",
            NatError::PortsExhausted => "nat64: no source port free",
        })
    }
}

impl std::error::Error for NatError {}

/// Same-family rewrite in place, of either or both endpoints.
#[cfg(test)]
pub fn rewrite_in_place(
    pkt: &mut [u8],
    parsed: &Parsed,
    rw: &Rewrite,
    l4: L4Checksum,
) -> Result<(), NatError> {
    let csum_at = check_ports(pkt, parsed)?;
    let (mut addr_delta, mut port_delta) = (0, 0);
    if let Some(ep) = &rw.src {
        let (a, p) = rewrite_endpoint::<false>(pkt, parsed, ep)?;
        addr_delta += a;
        port_delta += p;
    }
    if let Some(ep) = &rw.dst {
        let (a, p) = rewrite_endpoint::<true>(pkt, parsed, ep)?;
        addr_delta += a;
        port_delta += p;
    }
    finish_checksums(pkt, parsed, csum_at, addr_delta, port_delta, l4);
    Ok(())
}

/// Destination NAT of a same-family packet: the data path's forward
/// rewrite, one endpoint only.
#[inline(always)]
pub fn rewrite_dst(pkt: &mut [u8], parsed: &Parsed, to: &Endpoint, l4: L4Checksum) -> Result<(), NatError> {
    rewrite_one::<true>(pkt, parsed, to, l4)
}

/// Source NAT of a same-family packet: the reply path's rewrite.
#[inline(always)]
pub fn rewrite_src(pkt: &mut [u8], parsed: &Parsed, from: &Endpoint, l4: L4Checksum) -> Result<(), NatError> {
    rewrite_one::<false>(pkt, parsed, from, l4)
}

/// One endpoint (destination if `DST`, else source) and the checksums.
#[inline(always)]
fn rewrite_one<const DST: bool>(
    pkt: &mut [u8],
    parsed: &Parsed,
    ep: &Endpoint,
    l4: L4Checksum,
) -> Result<(), NatError> {
    let csum_at = check_ports(pkt, parsed)?;
    let (a, p) = rewrite_endpoint::<DST>(pkt, parsed, ep)?;
    finish_checksums(pkt, parsed, csum_at, a, p, l4);
    Ok(())
}

/// The address alone (the destination if `DST`, else the source), with
/// IPv4's header checksum: for a fragment that is not its datagram's first
/// (the ports and the transport checksum, which covers the whole datagram,
/// are in the first one, translated with it).
#[inline]
pub fn rewrite_addr<const DST: bool>(
    pkt: &mut [u8],
    family: IpFamily,
    addr: &[u8; 16],
) -> Result<(), NatError> {
    let header = match family {
        IpFamily::V4 => IP4_LEN,
        IpFamily::V6 => crate::packet::ipv6::HEADER_LEN,
    };
    if pkt.len() < header {
        return Err(NatError::Truncated);
    }
    let d = set_addr::<DST>(pkt, family, addr);
    if family == IpFamily::V4 {
        update_ip4_checksum(pkt, d);
    }
    Ok(())
}

/// Writes the destination (if `DST`) or source address of an IP header
/// that `pkt` holds whole; returns the checksum delta.
#[inline(always)]
fn set_addr<const DST: bool>(pkt: &mut [u8], family: IpFamily, addr: &[u8; 16]) -> u64 {
    match family {
        IpFamily::V4 => {
            let at = if DST { ip4::DST } else { ip4::SRC };
            let field: &mut [u8; 4] = (&mut pkt[at]).try_into().unwrap();
            let new: &[u8; 4] = addr[..4].try_into().unwrap();
            let d = checksum::delta_v4(field, new);
            *field = *new;
            d
        }
        IpFamily::V6 => {
            let at = if DST { ip6::DST } else { ip6::SRC };
            let field: &mut [u8; 16] = (&mut pkt[at]).try_into().unwrap();
            let d = checksum::delta_v6(field, addr);
            *field = *addr;
            d
        }
    }
}

/// Updates the IPv4 header checksum for address changes worth `delta`.
#[inline(always)]
fn update_ip4_checksum(pkt: &mut [u8], delta: u64) {
    let c = u16::from_be_bytes([pkt[ip4::CHECKSUM], pkt[ip4::CHECKSUM + 1]]);
    set_be16(pkt, ip4::CHECKSUM, checksum::update(c, delta));
}

/// What to change in an ICMP error: its outer addresses, and the source or
/// destination of the packet it carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IcmpRewrite {
    pub outer_src: Option<[u8; 16]>,
    pub outer_dst: Option<[u8; 16]>,
    pub inner_src: Option<Endpoint>,
    pub inner_dst: Option<Endpoint>,
}

/// Translates an ICMP error (see [`crate::packet::icmp_error`]): the
/// embedded packet's endpoints with its checksums (its IPv4 header's in
/// full, its transport checksum incrementally, where the error still
/// carries it), the outer addresses, and the outer IPv4 header and ICMP
/// checksums computed afresh (an error is small, and is all in `pkt`).
pub fn translate_icmp_error(pkt: &mut [u8], e: &IcmpError, rw: &IcmpRewrite) -> Result<(), NatError> {
    if pkt.len() < e.end {
        return Err(NatError::Truncated);
    }
    let v4 = e.family == IpFamily::V4;
    let n = if v4 { 4 } else { 16 };
    let (src_at, dst_at) = if v4 { (12, 16) } else { (8, 24) };
    let mut delta = 0u64;
    for (ep, addr_at, port_at) in [(rw.inner_src, src_at, 0), (rw.inner_dst, dst_at, 2)] {
        let Some(ep) = ep else { continue };
        if ep.family != e.family {
            return Err(NatError::FamilyMismatch);
        }
        let at = e.inner_at + addr_at;
        delta += checksum::delta(&pkt[at..at + n], &ep.addr[..n]);
        pkt[at..at + n].copy_from_slice(&ep.addr[..n]);
        let at = e.inner_l4_at + port_at;
        delta += checksum::delta16(u16::from_be_bytes([pkt[at], pkt[at + 1]]), ep.port);
        set_be16(pkt, at, ep.port);
    }
    // The embedded transport checksum, if the error carries it.
    let csum_at = e.inner_l4_at + if e.protocol == proto::TCP { tcp::CHECKSUM } else { udp::CHECKSUM };
    if csum_at + 2 <= e.end {
        let stored = u16::from_be_bytes([pkt[csum_at], pkt[csum_at + 1]]);
        if !(e.protocol == proto::UDP && stored == 0) {
            set_be16(pkt, csum_at, checksum::update(stored, delta));
        }
    }
    if v4 {
        let hlen = usize::from(pkt[e.inner_at] & 0x0f) * 4;
        let h = e.inner_at..e.inner_at + hlen;
        set_be16(pkt, e.inner_at + ip4::CHECKSUM, 0);
        let c = checksum::checksum(&pkt[h]);
        set_be16(pkt, e.inner_at + ip4::CHECKSUM, c);
    }
    if let Some(a) = rw.outer_src {
        pkt[src_at..src_at + n].copy_from_slice(&a[..n]);
    }
    if let Some(a) = rw.outer_dst {
        pkt[dst_at..dst_at + n].copy_from_slice(&a[..n]);
    }
    let icmp = e.icmp_at..e.end;
    set_be16(pkt, e.icmp_at + 2, 0);
    if v4 {
        let hlen = usize::from(pkt[0] & 0x0f) * 4;
        set_be16(pkt, ip4::CHECKSUM, 0);
        let c = checksum::checksum(&pkt[..hlen]);
        set_be16(pkt, ip4::CHECKSUM, c);
        let c = checksum::checksum(&pkt[icmp]);
        set_be16(pkt, e.icmp_at + 2, c);
    } else {
        let src: [u8; 16] = pkt[ip6::SRC].try_into().unwrap();
        let dst: [u8; 16] = pkt[ip6::DST].try_into().unwrap();
        let len = (e.end - e.icmp_at) as u32;
        let sum = checksum::pseudo_header_v6(&src, &dst, proto::ICMPV6, len) + checksum::sum(&pkt[icmp]);
        set_be16(pkt, e.icmp_at + 2, !checksum::fold(sum));
    }
    Ok(())
}

/// Checks the transport header is where `parsed` says; returns the offset
/// of its checksum field.
#[inline(always)]
pub(crate) fn check_ports(pkt: &[u8], parsed: &Parsed) -> Result<usize, NatError> {
    let l4_off = usize::from(parsed.l4_offset);
    let (ports_min, csum_at) = match parsed.protocol {
        proto::TCP => (TCP_LEN, l4_off + tcp::CHECKSUM),
        proto::UDP => (UDP_LEN, l4_off + udp::CHECKSUM),
        _ => return Err(NatError::Truncated),
    };
    if pkt.len() < l4_off + ports_min {
        return Err(NatError::Truncated);
    }
    Ok(csum_at)
}

/// Writes one endpoint (destination if `DST`, else source); returns the
/// checksum deltas of the address and of the port.
#[inline(always)]
fn rewrite_endpoint<const DST: bool>(
    pkt: &mut [u8],
    parsed: &Parsed,
    ep: &Endpoint,
) -> Result<(u64, u64), NatError> {
    if ep.family != parsed.family {
        return Err(NatError::FamilyMismatch);
    }
    let l4_off = usize::from(parsed.l4_offset);
    // TCP and UDP keep their ports at the same offsets.
    let (port_at, old_port) = if DST {
        (l4_off + udp::DST_PORT, parsed.dst_port)
    } else {
        (l4_off + udp::SRC_PORT, parsed.src_port)
    };
    let addr_delta = set_addr::<DST>(pkt, parsed.family, &ep.addr);
    set_be16(pkt, port_at, ep.port);
    Ok((addr_delta, checksum::delta16(old_port, ep.port)))
}

/// Updates the IPv4 header checksum (addresses only) and the TCP/UDP
/// checksum (addresses through the pseudo-header, and ports).
#[inline(always)]
fn finish_checksums(
    pkt: &mut [u8],
    parsed: &Parsed,
    csum_at: usize,
    addr_delta: u64,
    port_delta: u64,
    l4: L4Checksum,
) {
    if parsed.family == IpFamily::V4 {
        update_ip4_checksum(pkt, addr_delta);
    }
    let field: &mut [u8; 2] = (&mut pkt[csum_at..csum_at + 2]).try_into().unwrap();
    update_l4_checksum(field, parsed.protocol, addr_delta, port_delta, l4);
}

/// Updates a TCP/UDP checksum field for changed addresses and ports.
#[inline(always)]
pub(crate) fn update_l4_checksum(
    field: &mut [u8; 2],
    protocol: u8,
    addr_delta: u64,
    port_delta: u64,
    l4: L4Checksum,
) {
    if let Some(c) = updated_l4_checksum(u16::from_be_bytes(*field), protocol, addr_delta, port_delta, l4) {
        *field = c.to_be_bytes();
    }
}

/// [`update_l4_checksum`] with the field and the deltas in native byte
/// order: one's-complement sums are the same in either order, byte-swapped
/// (RFC 1071 §2(B)), so a rewrite may add native-order words with no swap
/// per word, and store the result as it is.
#[inline(always)]
pub(crate) fn update_l4_checksum_native(
    field: &mut [u8; 2],
    protocol: u8,
    addr_delta: u64,
    port_delta: u64,
    l4: L4Checksum,
) {
    if let Some(c) = updated_l4_checksum(u16::from_ne_bytes(*field), protocol, addr_delta, port_delta, l4) {
        *field = c.to_ne_bytes();
    }
}

/// The new value of a TCP/UDP checksum field `stored` (either byte order,
/// the deltas in the same), `None` to leave it as it is. (0 and all ones,
/// the values UDP treats apart, are the same in both orders.)
#[inline(always)]
fn updated_l4_checksum(
    stored: u16,
    protocol: u8,
    addr_delta: u64,
    port_delta: u64,
    l4: L4Checksum,
) -> Option<u16> {
    Some(match l4 {
        // A partial sum covers only the pseudo-header: addresses, not ports.
        L4Checksum::Partial => checksum::update_partial(stored, addr_delta),
        L4Checksum::Full => {
            if protocol == proto::UDP && stored == 0 {
                // IPv4 UDP without a checksum stays without one (IPv6 UDP
                // with 0 never gets here: the parser rejects it).
                return None;
            }
            let c = checksum::update(stored, addr_delta + port_delta);
            if protocol == proto::UDP && c == 0 {
                0xffff // RFC 768: a computed 0 is sent as all ones
            } else {
                c
            }
        }
    })
}

/// DNAT for the data path's IPv4 fast lane: a packet
/// [`crate::packet::parse_v4_fast`] accepted (20-byte header, TCP or UDP
/// header checked) gets destination `addr`:`port`, with both checksums
/// updated as [`rewrite_dst`] would (a property test holds them equal).
#[inline(always)]
pub fn dnat_v4(
    pkt: &mut [u8],
    protocol: u8,
    addr: [u8; 4],
    port: u16,
    l4: L4Checksum,
) -> Result<(), NatError> {
    // The header array runs to the end of the L4 checksum field.
    const TCP_END: usize = IP4_LEN + tcp::CHECKSUM + 2;
    const UDP_END: usize = IP4_LEN + udp::CHECKSUM + 2;
    if protocol == proto::TCP {
        let h: &mut [u8; TCP_END] =
            pkt.get_mut(..TCP_END).and_then(|h| h.try_into().ok()).ok_or(NatError::Truncated)?;
        dnat_v4_header::<TCP_END, { IP4_LEN + tcp::CHECKSUM }>(h, false, addr, port, l4);
    } else {
        let h: &mut [u8; UDP_END] =
            pkt.get_mut(..UDP_END).and_then(|h| h.try_into().ok()).ok_or(NatError::Truncated)?;
        dnat_v4_header::<UDP_END, { IP4_LEN + udp::CHECKSUM }>(h, true, addr, port, l4);
    }
    Ok(())
}

/// DNAT for the data path's IPv6 fast lane: a packet
/// [`crate::packet::parse_v6_fast_into`] accepted (TCP or UDP right after
/// the fixed header, header checked) gets destination `addr`:`port`, with
/// its checksum updated as [`rewrite_dst`] would (a property test holds
/// them equal), on the fixed-size front of the packet.
#[inline(always)]
pub fn dnat_v6(
    pkt: &mut [u8],
    protocol: u8,
    addr: &[u8; 16],
    port: u16,
    l4: L4Checksum,
) -> Result<(), NatError> {
    const IP6_LEN: usize = crate::packet::ipv6::HEADER_LEN;
    let csum = IP6_LEN + if protocol == proto::TCP { tcp::CHECKSUM } else { udp::CHECKSUM };
    let h = pkt.get_mut(..csum + 2).ok_or(NatError::Truncated)?;
    // Native-order words, as `dnat_v4_header` (no byte swap per word):
    // ~m + m' of the address as two 64-bit words each.
    let dst = ip6::DST.start;
    use checksum::ne64;
    let addr_delta = checksum::sum_words([!ne64(h, dst), !ne64(h, dst + 8), ne64(addr, 0), ne64(addr, 8)]);
    h[ip6::DST].copy_from_slice(addr);
    let port_at = IP6_LEN + udp::DST_PORT; // the same for TCP
    let new_port = port.to_be_bytes();
    let old_port = u16::from_ne_bytes([h[port_at], h[port_at + 1]]);
    let port_delta = checksum::delta16(old_port, u16::from_ne_bytes(new_port));
    h[port_at..port_at + 2].copy_from_slice(&new_port);
    let field: &mut [u8; 2] = (&mut h[csum..csum + 2]).try_into().unwrap();
    update_l4_checksum_native(field, protocol, addr_delta, port_delta, l4);
    Ok(())
}

/// [`dnat_v4`] on the fixed-size front of the packet (so no index is
/// checked at run time). The sums run on words read in native byte order:
/// the one's-complement sum does not care about byte order as long as
/// every word, and the result, use the same one (RFC 1071 §2(B)).
#[inline(always)]
fn dnat_v4_header<const N: usize, const CSUM: usize>(
    h: &mut [u8; N],
    udp: bool,
    addr: [u8; 4],
    port: u16,
    l4: L4Checksum,
) {
    let ne16 = |h: &[u8; N], at: usize| u32::from(u16::from_ne_bytes([h[at], h[at + 1]]));
    const DST: usize = ip4::DST.start;
    const DST_PORT: usize = IP4_LEN + udp::DST_PORT; // the same for TCP
    const IP_CSUM: usize = ip4::CHECKSUM;
    let old_addr = u32::from_ne_bytes([h[DST], h[DST + 1], h[DST + 2], h[DST + 3]]);
    let new_port = port.to_be_bytes();
    // ~m + m' for the address (two 16-bit words as one 32-bit word) ...
    let addr_delta = checksum::add32(!old_addr, u32::from_ne_bytes(addr));
    // ... and for the port (below 2^17: no carry to fold yet).
    let port_delta = (0xffff ^ ne16(h, DST_PORT)) + u32::from(u16::from_ne_bytes(new_port));
    let ip = !checksum::fold32(checksum::add32(0xffff ^ ne16(h, IP_CSUM), addr_delta));
    h[IP_CSUM..IP_CSUM + 2].copy_from_slice(&ip.to_ne_bytes());
    h[DST..DST + 4].copy_from_slice(&addr);
    h[DST_PORT..DST_PORT + 2].copy_from_slice(&new_port);
    let stored = ne16(h, CSUM);
    let updated = match l4 {
        // A partial sum covers only the pseudo-header: addresses, not ports.
        L4Checksum::Partial => checksum::fold32(checksum::add32(stored, addr_delta)),
        L4Checksum::Full => {
            if udp && stored == 0 {
                return; // IPv4 UDP without a checksum stays without one
            }
            match !checksum::fold32(checksum::add32(checksum::add32(0xffff ^ stored, addr_delta), port_delta))
            {
                0 if udp => 0xffff, // RFC 768: a computed 0 is sent as all ones
                c => c,
            }
        }
    };
    h[CSUM..CSUM + 2].copy_from_slice(&updated.to_ne_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::build::{emit, verify, Spec};
    use crate::packet::{parse, proto};
    use proptest::prelude::*;

    fn family_addr(family: IpFamily) -> impl Strategy<Value = [u8; 16]> {
        any::<[u8; 16]>().prop_map(move |mut a| {
            if family == IpFamily::V4 {
                a[4..].fill(0);
            }
            a
        })
    }

    /// family, protocol, src, dst, sport, dport, payload, no UDP checksum,
    /// IPv4 option words.
    type PacketParams = (IpFamily, u8, [u8; 16], [u8; 16], u16, u16, Vec<u8>, bool, usize);

    fn spec_strategy() -> impl Strategy<Value = PacketParams> {
        (prop_oneof![Just(IpFamily::V4), Just(IpFamily::V6)], prop_oneof![Just(proto::TCP), Just(proto::UDP)])
            .prop_flat_map(|(family, protocol)| {
                (
                    Just(family),
                    Just(protocol),
                    family_addr(family),
                    family_addr(family),
                    any::<u16>(),
                    any::<u16>(),
                    proptest::collection::vec(any::<u8>(), 0..64),
                    any::<bool>(),
                    0usize..3,
                )
            })
    }

    fn build(
        (family, protocol, src, dst, sport, dport, payload, no_csum, opt_words): &PacketParams,
    ) -> Vec<u8> {
        let opts = [1u8; 8];
        let mut spec = Spec::new(*family, *protocol, src, dst, (*sport, *dport)).payload(payload);
        spec.udp_no_checksum = *no_csum;
        if *family == IpFamily::V4 {
            spec.ipv4_options = &opts[..opt_words * 4];
        }
        emit(&spec)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The word-wise one's-complement sum and fold equal the textbook
        /// one (RFC 1071: add 16-bit pieces, fold carries until none),
        /// zero included.
        #[test]
        fn one_complement_helpers_equal_rfc1071(a in any::<u32>(), b in any::<u32>(), zero in 0u8..4) {
            let (a, b) = match zero { 0 => (0, 0), 1 => (a, 0), _ => (a, b) };
            let mut sum = u64::from(a >> 16) + u64::from(a & 0xffff) + u64::from(b >> 16) + u64::from(b & 0xffff);
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            prop_assert_eq!(u64::from(checksum::fold32(checksum::add32(a, b))), sum);
        }

        /// The data path's IPv4 fast lane writes exactly what the general
        /// rewrite writes.
        #[test]
        fn fast_lane_dnat_equals_rewrite_dst(
            pkt in spec_strategy(),
            new_dst in any::<[u8; 4]>(),
            new_dport in any::<u16>(),
            partial in any::<bool>(),
        ) {
            let p = build(&pkt);
            let Some(fast) = crate::packet::parse_v4_fast(&p) else {
                // Not the fast lane's case (IPv6, or IPv4 with options).
                prop_assert!(pkt.0 == IpFamily::V6 || pkt.8 > 0);
                return Ok(());
            };
            let parsed = parse(&p).unwrap();
            let l4 = if partial { L4Checksum::Partial } else { L4Checksum::Full };
            let (mut a, mut b) = (p.clone(), p.clone());
            rewrite_dst(&mut a, &parsed, &Endpoint::v4(new_dst, new_dport), l4).unwrap();
            dnat_v4(&mut b, fast.protocol, new_dst, new_dport, l4).unwrap();
            prop_assert_eq!(a, b);
        }

        /// The data path's IPv6 fast lane writes exactly what the general
        /// rewrite writes.
        #[test]
        fn fast_lane_dnat_v6_equals_rewrite_dst(
            pkt in spec_strategy(),
            new_dst in any::<[u8; 16]>(),
            new_dport in any::<u16>(),
            partial in any::<bool>(),
        ) {
            let p = build(&pkt);
            let mut parsed = crate::packet::Parsed::default();
            if !crate::packet::parse_v6_fast_into(&p, &mut parsed) {
                prop_assert!(pkt.0 == IpFamily::V4);
                return Ok(());
            }
            let l4 = if partial { L4Checksum::Partial } else { L4Checksum::Full };
            let (mut a, mut b) = (p.clone(), p.clone());
            rewrite_dst(&mut a, &parsed, &Endpoint::v6(new_dst, new_dport), l4).unwrap();
            dnat_v6(&mut b, parsed.protocol, &new_dst, new_dport, l4).unwrap();
            prop_assert_eq!(a, b);
        }

        /// After any same-family rewrite, a from-scratch computation over
        /// the whole packet agrees with the incrementally updated checksums.
        #[test]
        fn rewrite_keeps_checksums_exact(
            pkt in spec_strategy(),
            new_src in any::<[u8; 16]>(),
            new_dst in any::<[u8; 16]>(),
            new_sport in any::<u16>(),
            new_dport in any::<u16>(),
            which in 0u8..3,
        ) {
            let mut p = build(&pkt);
            let parsed = parse(&p).unwrap();
            let ep = |a: [u8; 16], port| match parsed.family {
                IpFamily::V4 => Endpoint::v4([a[0], a[1], a[2], a[3]], port),
                IpFamily::V6 => Endpoint::v6(a, port),
            };
            let rw = Rewrite {
                src: (which != 1).then(|| ep(new_src, new_sport)),
                dst: (which != 0).then(|| ep(new_dst, new_dport)),
            };
            let udp_was_zero = parsed.protocol == proto::UDP && parsed.family == IpFamily::V4 && pkt.7;
            rewrite_in_place(&mut p[..], &parsed, &rw, L4Checksum::Full).unwrap();
            prop_assert_eq!(verify(&p), Ok(()));
            let after = parse(&p).unwrap();
            if let Some(s) = rw.src {
                prop_assert_eq!(after.src, s.addr);
                prop_assert_eq!(after.src_port, s.port);
            } else {
                prop_assert_eq!((after.src, after.src_port), (parsed.src, parsed.src_port));
            }
            if let Some(d) = rw.dst {
                prop_assert_eq!(after.dst, d.addr);
                prop_assert_eq!(after.dst_port, d.port);
            } else {
                prop_assert_eq!((after.dst, after.dst_port), (parsed.dst, parsed.dst_port));
            }
            if udp_was_zero {
                let at = usize::from(parsed.l4_offset) + 6;
                prop_assert_eq!(&p[at..at + 2], &[0, 0]);
            }
        }

        /// With checksum offload the field holds the pseudo-header sum; after
        /// the rewrite it must hold the new pseudo-header's sum.
        #[test]
        fn partial_checksum_tracks_pseudo_header(
            pkt in spec_strategy(),
            new_dst in any::<[u8; 16]>(),
            new_dport in any::<u16>(),
        ) {
            let mut p = build(&pkt);
            let parsed = parse(&p).unwrap();
            let csum_at = usize::from(parsed.l4_offset) + if parsed.protocol == proto::TCP { 16 } else { 6 };
            let pseudo = |p: &[u8]| {
                let s = match parsed.family {
                    IpFamily::V4 => checksum::pseudo_header_v4(
                        &p[12..16].try_into().unwrap(), &p[16..20].try_into().unwrap(),
                        parsed.protocol, u32::from(parsed.l4_len)),
                    IpFamily::V6 => checksum::pseudo_header_v6(
                        &p[8..24].try_into().unwrap(), &p[24..40].try_into().unwrap(),
                        parsed.protocol, u32::from(parsed.l4_len)),
                };
                checksum::fold(s)
            };
            let partial = pseudo(&p);
            p[csum_at..csum_at + 2].copy_from_slice(&partial.to_be_bytes());
            let to = match parsed.family {
                IpFamily::V4 => Endpoint::v4([new_dst[0], new_dst[1], new_dst[2], new_dst[3]], new_dport),
                IpFamily::V6 => Endpoint::v6(new_dst, new_dport),
            };
            rewrite_in_place(&mut p[..], &parsed, &Rewrite::dnat(to), L4Checksum::Partial).unwrap();
            let got = u16::from_be_bytes([p[csum_at], p[csum_at + 1]]);
            // One's-complement: 0 and 0xffff are the same value.
            let want = pseudo(&p);
            prop_assert!(got == want || (got == 0 && want == 0xffff) || (got == 0xffff && want == 0));
        }
    }

    #[test]
    fn specialised_rewrites_equal_the_general_one() {
        for fam in [IpFamily::V4, IpFamily::V6] {
            for protocol in [proto::TCP, proto::UDP] {
                let n = if fam == IpFamily::V4 { 4 } else { 16 };
                let p =
                    emit(&Spec::new(fam, protocol, &[7; 16][..n], &[9; 16][..n], (1000, 80)).payload(b"abc"));
                let parsed = parse(&p).unwrap();
                let ep = Endpoint { family: fam, addr: [0x42; 16], port: 8080 };
                let ep = if fam == IpFamily::V4 { Endpoint::v4([0x42; 4], 8080) } else { ep };
                for (rw, special) in [(Rewrite::dnat(ep), true), (Rewrite::snat(ep), false)] {
                    let (mut a, mut b) = (p.clone(), p.clone());
                    rewrite_in_place(&mut a[..], &parsed, &rw, L4Checksum::Full).unwrap();
                    if special {
                        rewrite_dst(&mut b, &parsed, &ep, L4Checksum::Full).unwrap();
                    } else {
                        rewrite_src(&mut b, &parsed, &ep, L4Checksum::Full).unwrap();
                    }
                    assert_eq!(a, b);
                    assert_eq!(verify(&b), Ok(()));
                }
            }
        }
    }

    #[test]
    fn ipv4_udp_without_checksum_stays_without() {
        let mut spec = Spec::new(IpFamily::V4, proto::UDP, &[10, 0, 0, 1], &[10, 0, 0, 2], (5000, 53));
        spec.udp_no_checksum = true;
        let mut p = emit(&spec);
        let parsed = parse(&p).unwrap();
        rewrite_in_place(
            &mut p[..],
            &parsed,
            &Rewrite::dnat(Endpoint::v4([192, 168, 1, 9], 8053)),
            L4Checksum::Full,
        )
        .unwrap();
        assert_eq!(&p[26..28], &[0, 0]);
        assert_eq!(verify(&p), Ok(()));
        assert_eq!(parse(&p).unwrap().dst_port, 8053);
    }

    #[test]
    fn known_tcp_rewrite() {
        // 10.0.0.1:40000 -> 10.96.0.10:80 becomes -> 172.16.1.5:8080.
        let spec = Spec::new(IpFamily::V4, proto::TCP, &[10, 0, 0, 1], &[10, 96, 0, 10], (40000, 80))
            .payload(b"GET /");
        let mut p = emit(&spec);
        let parsed = parse(&p).unwrap();
        let to = Endpoint::v4([172, 16, 1, 5], 8080);
        rewrite_in_place(&mut p[..], &parsed, &Rewrite::dnat(to), L4Checksum::Full).unwrap();
        let mut expected = emit(
            &Spec::new(IpFamily::V4, proto::TCP, &[10, 0, 0, 1], &[172, 16, 1, 5], (40000, 8080))
                .payload(b"GET /"),
        );
        assert_eq!(p, expected);
        // And back again.
        let parsed = parse(&expected).unwrap();
        let vip = Endpoint::v4([10, 96, 0, 10], 80);
        rewrite_in_place(
            &mut expected[..],
            &parsed,
            &Rewrite { src: None, dst: Some(vip) },
            L4Checksum::Full,
        )
        .unwrap();
        assert_eq!(expected, emit(&spec));
    }

    #[test]
    fn cross_family_is_refused_without_touching_the_packet() {
        let mut p = emit(&Spec::new(IpFamily::V4, proto::UDP, &[10, 0, 0, 1], &[10, 0, 0, 2], (1, 2)));
        let before = p.clone();
        let parsed = parse(&p).unwrap();
        let to = Endpoint::v6([0x20; 16], 80);
        assert_eq!(
            rewrite_in_place(&mut p[..], &parsed, &Rewrite::dnat(to), L4Checksum::Full),
            Err(NatError::FamilyMismatch)
        );
        assert_eq!(p, before);
    }

    #[test]
    fn stale_parse_is_refused() {
        let p = emit(&Spec::new(IpFamily::V4, proto::TCP, &[10, 0, 0, 1], &[10, 0, 0, 2], (1, 2)));
        let parsed = parse(&p).unwrap();
        let mut short = p[..30].to_vec();
        assert_eq!(
            rewrite_in_place(
                &mut short,
                &parsed,
                &Rewrite::dnat(Endpoint::v4([1, 2, 3, 4], 5)),
                L4Checksum::Full
            ),
            Err(NatError::Truncated)
        );
    }
}
