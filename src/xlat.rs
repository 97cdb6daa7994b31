//! Translation between IPv4 and IPv6 for nat46 and nat64 Services:
//! RFC 7915's header translation (stateless IP/ICMP translation) of TCP
//! and UDP packets, and RFC 6052's IPv4-embedded IPv6 addresses.
//!
//! A translated packet keeps its transport header and payload where they
//! are in memory; only the IP header in front of them is rebuilt, so the
//! packet's start moves (an IPv6 header is 20 bytes longer than an IPv4
//! header without options). The caller's [`Frame`] moves it: a VPP buffer
//! into its pre-data headroom, a test vector by inserting bytes.
//!
//! The TCP/UDP checksum is updated incrementally: only the pseudo-header
//! addresses (and the ports NAT changes) differ, since the upper-layer
//! length and protocol number contribute the same to both pseudo-headers.
//! That holds for a full checksum and for the partial (pseudo-header) sum
//! that checksum offload and GSO leave in the field. An IPv4 UDP datagram
//! sent without a checksum (0) gets one computed, as IPv6 requires
//! (RFC 7915 §4.5): over the whole datagram, so only when the first buffer
//! holds all of it.

use crate::nat::{self, L4Checksum, NatError};
use crate::packet::checksum;
use crate::packet::ipv4::field as ip4;
use crate::packet::ipv6::field as ip6;
use crate::packet::l4::{tcp_field as tcp, udp_field as udp};
use crate::packet::{proto, set_be16, IpFamily, Parsed};
use std::fmt;
use std::net::Ipv6Addr;

const IP4_LEN: usize = crate::packet::ipv4::MIN_HEADER_LEN;
const IP6_LEN: usize = crate::packet::ipv6::HEADER_LEN;

/// An RFC 6052 prefix: where IPv4 addresses are embedded in IPv6 ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rfc6052Prefix {
    bytes: [u8; 16],
    len: u8,
}

impl Rfc6052Prefix {
    /// The default: RFC 8215's local-use IPv4/IPv6 translation prefix
    /// 64:ff9b:1::/48, as a /96. Clients inside a cluster mostly have
    /// private (non-global) IPv4 addresses, and RFC 6052 §3.1 forbids the
    /// well-known prefix 64:ff9b::/96 for those; RFC 8215's prefix was set
    /// aside for exactly this local use.
    pub const LOCAL_USE: Rfc6052Prefix =
        Rfc6052Prefix { bytes: [0, 0x64, 0xff, 0x9b, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], len: 96 };

    /// A network-specific prefix: one of RFC 6052's lengths (32, 40, 48,
    /// 56, 64, 96), no bits set beyond the length, and (below /96) bits
    /// 64..72, the "u" octet, zero.
    pub fn new(addr: Ipv6Addr, len: u8) -> Result<Rfc6052Prefix, PrefixError> {
        if ![32, 40, 48, 56, 64, 96].contains(&len) {
            return Err(PrefixError::Length(len));
        }
        let bytes = addr.octets();
        let full = usize::from(len / 8);
        if bytes[full..].iter().any(|&b| b != 0) {
            return Err(PrefixError::HostBits);
        }
        Ok(Rfc6052Prefix { bytes, len })
    }

    pub fn addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.bytes)
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Byte positions of the four IPv4 bytes (RFC 6052 §2.2: after the
    /// prefix, skipping the u octet, byte 8).
    #[inline(always)]
    fn positions(&self) -> [usize; 4] {
        let mut at = [0usize; 4];
        let mut p = usize::from(self.len / 8);
        for slot in &mut at {
            if p == 8 {
                p += 1;
            }
            *slot = p;
            p += 1;
        }
        at
    }

    /// The IPv6 address that stands for `v4`.
    #[inline]
    pub fn embed(&self, v4: [u8; 4]) -> [u8; 16] {
        let mut a = self.bytes;
        if self.len == 96 {
            // The usual length (the default's): the last four bytes.
            a[12..].copy_from_slice(&v4);
            return a;
        }
        for (b, at) in v4.into_iter().zip(self.positions()) {
            a[at] = b;
        }
        a
    }

    /// The IPv4 address `v6` stands for, if it is under this prefix.
    #[inline]
    pub fn extract(&self, v6: &[u8; 16]) -> Option<[u8; 4]> {
        let full = usize::from(self.len / 8);
        if v6[..full] != self.bytes[..full] {
            return None;
        }
        let at = self.positions();
        Some([v6[at[0]], v6[at[1]], v6[at[2]], v6[at[3]]])
    }
}

impl Default for Rfc6052Prefix {
    fn default() -> Self {
        Rfc6052Prefix::LOCAL_USE
    }
}

impl fmt::Display for Rfc6052Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.len)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixError {
    Length(u8),
    HostBits,
}

impl fmt::Display for PrefixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrefixError::Length(l) => {
                write!(f, "an RFC 6052 prefix is a /32, /40, /48, /56, /64 or /96, not a /{l}")
            }
            PrefixError::HostBits => f.write_str("the prefix has bits set beyond its length"),
        }
    }
}

/// A packet whose start can move: the translation rebuilds its IP header
/// in front of an unmoved transport header.
pub trait Frame {
    /// The packet, from its IP header on (its first buffer's bytes).
    fn bytes(&mut self) -> &mut [u8];
    /// Moves the start by `delta` bytes (negative: earlier, into the
    /// headroom). `false`, and nothing moved, when there is no room.
    fn move_start(&mut self, delta: isize) -> bool;
    /// Moves the start `by` bytes later (a header that shrinks) and gives
    /// the packet's bytes from there; `None`, and nothing moved, when it
    /// cannot. (A host may do both at once.)
    fn advance(&mut self, by: usize) -> Option<&mut [u8]> {
        if self.move_start(by as isize) {
            Some(self.bytes())
        } else {
            None
        }
    }
    /// The packet is now of family `to`, its transport header right after
    /// a plain IP header: metadata that describes its headers follows.
    fn family_changed(&mut self, _to: IpFamily) {}
}

/// A byte vector as a frame: the packet is the whole vector; growing
/// inserts bytes at the front.
impl Frame for Vec<u8> {
    fn bytes(&mut self) -> &mut [u8] {
        self
    }
    fn move_start(&mut self, delta: isize) -> bool {
        if delta < 0 {
            self.splice(0..0, core::iter::repeat_n(0, delta.unsigned_abs()));
        } else {
            let d = delta as usize;
            if d > self.len() {
                return false;
            }
            self.drain(..d);
        }
        true
    }
}

/// The endpoints a translated packet gets, in its new family (an IPv4
/// address in the first four bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    pub src: [u8; 16],
    pub src_port: u16,
    pub dst: [u8; 16],
    pub dst_port: u16,
}

/// An IPv4 header as a translation writes it: no options, the checksum
/// computed from the fields (no pass over the bytes).
#[derive(Debug, Clone, Copy)]
struct Ip4Header {
    tos: u8,
    total_len: u16,
    ident: u16,
    /// Flags and fragment offset, as on the wire (0x4000: don't fragment).
    flags_frag: u16,
    ttl: u8,
    protocol: u8,
    src: [u8; 4],
    dst: [u8; 4],
}

impl Ip4Header {
    #[inline(always)]
    fn write(&self, h: &mut [u8]) {
        let h: &mut [u8; IP4_LEN] = (&mut h[..IP4_LEN]).try_into().unwrap();
        let word = |a: [u8; 4]| {
            u32::from(u16::from_be_bytes([a[0], a[1]])) + u32::from(u16::from_be_bytes([a[2], a[3]]))
        };
        let sum = (0x4500 | u32::from(self.tos))
            + u32::from(self.total_len)
            + u32::from(self.ident)
            + u32::from(self.flags_frag)
            + (u32::from(self.ttl) << 8 | u32::from(self.protocol))
            + word(self.src)
            + word(self.dst);
        h[0] = 0x45;
        h[1] = self.tos;
        set_be16(h, ip4::TOTAL_LEN, self.total_len);
        set_be16(h, ip4::IDENT, self.ident);
        set_be16(h, ip4::FLAGS_FRAG, self.flags_frag);
        h[ip4::TTL] = self.ttl;
        h[ip4::PROTOCOL] = self.protocol;
        set_be16(h, ip4::CHECKSUM, !checksum::fold(u64::from(sum)));
        h[ip4::SRC].copy_from_slice(&self.src);
        h[ip4::DST].copy_from_slice(&self.dst);
    }
}

/// An IPv6 fixed header as a translation writes it (no flow label).
#[derive(Debug, Clone, Copy)]
struct Ip6Header<'a> {
    traffic_class: u8,
    payload_len: u16,
    next_header: u8,
    hop_limit: u8,
    src: &'a [u8; 16],
    dst: &'a [u8; 16],
}

impl Ip6Header<'_> {
    #[inline(always)]
    fn write(&self, h: &mut [u8]) {
        let h: &mut [u8; IP6_LEN] = (&mut h[..IP6_LEN]).try_into().unwrap();
        let tc = self.traffic_class;
        h[..4].copy_from_slice(&[0x60 | (tc >> 4), tc << 4, 0, 0]);
        set_be16(h, ip6::PAYLOAD_LEN, self.payload_len);
        h[ip6::NEXT_HEADER] = self.next_header;
        h[ip6::HOP_LIMIT] = self.hop_limit;
        h[ip6::SRC].copy_from_slice(self.src);
        h[ip6::DST].copy_from_slice(self.dst);
    }
}

/// The first four bytes of an address (an IPv4 one, as kp stores it).
#[inline(always)]
fn v4(a: &[u8; 16]) -> [u8; 4] {
    [a[0], a[1], a[2], a[3]]
}

/// Translates an IPv4 TCP/UDP packet (`p`, not a fragment) to IPv6 with
/// endpoints `to` (RFC 7915 §4.1): traffic class from the TOS, hop limit
/// from the TTL, no flow label, IPv4 options dropped. `whole`: the frame
/// holds the whole datagram (not only the first buffer of a chain).
pub fn v4_to_v6<F: Frame + ?Sized>(
    f: &mut F,
    p: &Parsed,
    to: &Endpoints,
    l4: L4Checksum,
    whole: bool,
) -> Result<(), NatError> {
    let ihl = usize::from(p.l4_offset);
    let csum_at = nat::check_ports(f.bytes(), p)?;
    let pkt = f.bytes();
    let (tos, ttl) = (pkt[1], pkt[ip4::TTL]);
    let stored = u16::from_be_bytes([pkt[csum_at], pkt[csum_at + 1]]);
    let computes = p.protocol == proto::UDP && stored == 0 && l4 == L4Checksum::Full;
    if computes && !whole {
        return Err(NatError::ChecksumNeedsWholeDatagram);
    }
    let old = checksum::sum(&p.src[..4]) + checksum::sum(&p.dst[..4]);
    // Options go: the new header ends where the old one did.
    let grow = IP6_LEN as isize - ihl as isize;
    if !f.move_start(-grow) {
        return Err(NatError::NoHeadroom);
    }
    let pkt = f.bytes();
    Ip6Header {
        traffic_class: tos,
        payload_len: p.l4_len,
        next_header: p.protocol,
        hop_limit: ttl,
        src: &to.src,
        dst: &to.dst,
    }
    .write(pkt);
    let new = checksum::sum(&to.src) + checksum::sum(&to.dst);
    let at = IP6_LEN;
    if computes {
        set_ports(pkt, at, to);
        fill_udp_checksum(
            pkt,
            at,
            checksum::pseudo_header_v6(&to.src, &to.dst, proto::UDP, u32::from(p.l4_len)),
        );
    } else {
        finish_transport(pkt, at, p, to, replace(old, new), l4);
    }
    f.family_changed(IpFamily::V6);
    Ok(())
}

/// [`v4_to_v6`] for the data path's fast lane (an established nat46 flow):
/// a packet [`crate::packet::parse_v4_fast`] accepted (20-byte header, not
/// a fragment, TCP or UDP header checked) gets the IPv6 header for source
/// `src` (the client's embedded address, its port kept) and destination
/// `dst`:`dst_port`, with the transport checksum updated, reading only the
/// fixed-size front of the packet. `false`, and nothing changed, for what
/// it leaves to [`v4_to_v6`]: a UDP datagram without a checksum (it gets
/// one computed over the whole datagram) or a buffer without headroom.
/// A property test holds the two equal.
#[inline(always)]
pub fn v4_to_v6_fast<F: Frame + ?Sized>(
    f: &mut F,
    protocol: u8,
    src: &[u8; 16],
    dst: &[u8; 16],
    dst_port: u16,
    l4: L4Checksum,
) -> bool {
    // TCP and UDP: the front runs to the end of the checksum field.
    let csum = if protocol == proto::TCP { tcp::CHECKSUM } else { udp::CHECKSUM };
    let Some(h) = f.bytes().get(..IP4_LEN + csum + 2) else { return false };
    // The sums add native-order words, as in `v6_to_v4_fast`.
    use checksum::{ne64, sum_ne64};
    let (tos, ttl) = (h[1], h[ip4::TTL]);
    let l4_len = be16(h, ip4::TOTAL_LEN).wrapping_sub(IP4_LEN as u16);
    let old_addrs = sum_ne64(h, ip4::SRC.start);
    let port_at = IP4_LEN + udp::DST_PORT; // the same for TCP
    let old_port = u16::from_ne_bytes([h[port_at], h[port_at + 1]]);
    if protocol == proto::UDP && l4 == L4Checksum::Full && be16(h, IP4_LEN + csum) == 0 {
        return false;
    }
    if !f.move_start(-((IP6_LEN - IP4_LEN) as isize)) {
        return false;
    }
    let Some(h) = f.bytes().get_mut(..IP6_LEN + csum + 2) else { return false };
    Ip6Header { traffic_class: tos, payload_len: l4_len, next_header: protocol, hop_limit: ttl, src, dst }
        .write(h);
    let new_port = dst_port.to_be_bytes();
    h[IP6_LEN + udp::DST_PORT..IP6_LEN + udp::DST_PORT + 2].copy_from_slice(&new_port);
    let new_addrs = checksum::sum_words([ne64(src, 0), ne64(src, 8), ne64(dst, 0), ne64(dst, 8)]);
    let field: &mut [u8; 2] = (&mut h[IP6_LEN + csum..IP6_LEN + csum + 2]).try_into().unwrap();
    let ports = checksum::delta16(old_port, u16::from_ne_bytes(new_port));
    nat::update_l4_checksum_native(field, protocol, replace(old_addrs, new_addrs), ports, l4);
    f.family_changed(IpFamily::V6);
    true
}

/// A nat64 flow's IPv4 endpoints as the words of its packets' headers
/// (each `u32::from_ne_bytes` of the bytes on the wire): source and
/// destination address, and both ports in one word, source port first.
/// Built once per packet from the pool's source and the pod; the rewrite
/// stores and sums them as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireV4 {
    pub src: u32,
    pub dst: u32,
    pub ports: u32,
}

impl WireV4 {
    #[inline(always)]
    pub fn new(src: [u8; 4], src_port: u16, dst: [u8; 4], dst_port: u16) -> WireV4 {
        let ports = (u32::from(src_port) << 16) | u32::from(dst_port);
        WireV4 { src: u32::from_ne_bytes(src), dst: u32::from_ne_bytes(dst), ports: ports.to_be() }
    }
}

/// [`v6_to_v4`] for the data path's IPv6 fast lane (an established nat64
/// flow): a packet [`crate::packet::parse_v6_fast_into`] accepted (TCP or
/// UDP right after the fixed header, header checked; a UDP checksum is
/// never 0 there) gets the IPv4 header of the endpoints `to`, with the
/// transport checksum updated, reading only the fixed-size front of the
/// packet. `false`, and nothing changed, for what it leaves to
/// [`v6_to_v4`] (a datagram too long for IPv4). A property test holds the
/// two equal.
#[inline(always)]
pub fn v6_to_v4_fast<F: Frame + ?Sized>(f: &mut F, protocol: u8, to: WireV4, l4: L4Checksum) -> bool {
    let csum = if protocol == proto::TCP { tcp::CHECKSUM } else { udp::CHECKSUM };
    let Some(h) = f.bytes().get(..IP6_LEN + csum + 2) else { return false };
    // Every sum here adds native-order words and every checksum is stored
    // as computed, with no byte swap per 16-bit word: one's-complement
    // sums are the same in either byte order, byte-swapped (RFC 1071
    // §2(B)); only the total length is a number to compute with.
    use checksum::ne64;
    let ne32 = |b: &[u8], at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
    // Version, traffic class, flow label: the class is bits 20..28.
    let tclass = (u32::from_be_bytes(h[..4].try_into().unwrap()) >> 20) as u8;
    let hop_limit = h[ip6::HOP_LIMIT];
    let Some(total) = be16(h, ip6::PAYLOAD_LEN).checked_add(IP4_LEN as u16) else { return false };
    let old_addrs = checksum::sum_words([ne64(h, 8), ne64(h, 16), ne64(h, 24), ne64(h, 32)]);
    let old_ports = ne32(h, IP6_LEN);
    let Some(h) = f.advance(IP6_LEN - IP4_LEN) else { return false };
    let Some(h) = h.get_mut(..IP4_LEN + csum + 2) else { return false };
    // The header as three words and the addresses, its checksum from
    // their values (not the bytes just written: a wide load of narrower
    // stores in flight stalls on store forwarding). Identification 0,
    // don't fragment.
    let w0 = u32::from_ne_bytes([0x45, tclass, 0, 0]) | (u32::from(total.to_be()) << 16);
    let w1 = u32::from_ne_bytes([0, 0, 0x40, 0]);
    let ttl_proto = u32::from(u16::from_ne_bytes([hop_limit, protocol]));
    let new_addrs = u64::from(to.src) + u64::from(to.dst);
    let c = (!checksum::fold(u64::from(w0) + u64::from(w1) + u64::from(ttl_proto) + new_addrs)).to_ne_bytes();
    let w2 = ttl_proto | (u32::from(u16::from_ne_bytes(c)) << 16);
    for (at, w) in [(0, w0), (4, w1), (8, w2), (12, to.src), (16, to.dst), (IP4_LEN, to.ports)] {
        h[at..at + 4].copy_from_slice(&w.to_ne_bytes());
    }
    let field: &mut [u8; 2] = (&mut h[IP4_LEN + csum..IP4_LEN + csum + 2]).try_into().unwrap();
    let stored = u16::from_ne_bytes(*field);
    let addrs = replace(old_addrs, new_addrs);
    let c = match l4 {
        // A partial sum covers only the pseudo-header: addresses, not ports.
        L4Checksum::Partial => checksum::update_partial(stored, addrs),
        L4Checksum::Full => {
            // (~m + m' of RFC 1624 over both ports as one 32-bit word: its
            // complement is the same one's-complement negation.)
            let ports = u64::from(!old_ports) + u64::from(to.ports);
            match checksum::update(stored, addrs + ports) {
                // RFC 768: a computed 0 is sent as all ones (TCP's 0 and
                // all ones are the same number).
                0 if protocol == proto::UDP => 0xffff,
                c => c,
            }
        }
    };
    *field = c.to_ne_bytes();
    f.family_changed(IpFamily::V4);
    true
}

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Translates an IPv6 TCP/UDP packet (`p`: extension headers walked, not a
/// fragment) to IPv4 with endpoints `to` (RFC 7915 §5.1): TOS from the
/// traffic class, TTL from the hop limit, extension headers dropped,
/// identification 0 and Don't Fragment set (an IPv6 packet was never to be
/// fragmented on its way).
pub fn v6_to_v4<F: Frame + ?Sized>(
    f: &mut F,
    p: &Parsed,
    to: &Endpoints,
    l4: L4Checksum,
) -> Result<(), NatError> {
    let l4_at = usize::from(p.l4_offset);
    nat::check_ports(f.bytes(), p)?;
    let total = IP4_LEN + usize::from(p.l4_len);
    let Ok(total) = u16::try_from(total) else { return Err(NatError::Truncated) };
    let pkt = f.bytes();
    let tclass = (pkt[0] << 4) | (pkt[1] >> 4);
    let hop_limit = pkt[ip6::HOP_LIMIT];
    let old = checksum::sum(&p.src) + checksum::sum(&p.dst);
    if !f.move_start((l4_at - IP4_LEN) as isize) {
        return Err(NatError::Truncated);
    }
    let pkt = f.bytes();
    Ip4Header {
        tos: tclass,
        total_len: total,
        ident: 0,
        flags_frag: 0x4000,
        ttl: hop_limit,
        protocol: p.protocol,
        src: v4(&to.src),
        dst: v4(&to.dst),
    }
    .write(pkt);
    let new = checksum::sum(&to.src[..4]) + checksum::sum(&to.dst[..4]);
    finish_transport(pkt, IP4_LEN, p, to, replace(old, new), l4);
    f.family_changed(IpFamily::V4);
    Ok(())
}

/// Translates an IP fragment (`f` as [`crate::packet::parse_fragment`]
/// found it) to the other family, RFC 7915 §4.1 and §5.1.1: IPv4 to IPv6
/// gets a Fragment header (identification zero-extended, offset and M
/// flag copied), IPv6 to IPv4 loses it (identification's low 16 bits,
/// DF clear, MF and offset copied); extension headers are not carried.
/// The first fragment's transport header is translated as a whole
/// packet's (ports, the checksum for the new pseudo-header: the checksum
/// covers the whole datagram, and only the addresses and ports change);
/// an IPv4 UDP datagram without a checksum cannot get one fragment by
/// fragment (`ChecksumNeedsWholeDatagram`). The others get the IP header
/// alone (`to`'s addresses; ports unused).
pub fn fragment_to_other_family<F: Frame + ?Sized>(
    f: &mut F,
    frag: &crate::packet::Fragment,
    to: &Endpoints,
    l4: L4Checksum,
) -> Result<(), NatError> {
    let p = &frag.parsed;
    let data_at = usize::from(frag.data_at);
    // The first fragment's transport header must follow its IP (and
    // Fragment) header directly: extension headers between them belong to
    // the fragmented part, and dropping them would move every offset.
    if frag.first && usize::from(p.l4_offset) != data_at {
        return Err(NatError::TranslationNotSupported);
    }
    let pkt = f.bytes();
    if pkt.len() < data_at {
        return Err(NatError::Truncated);
    }
    let declared = match p.family {
        IpFamily::V4 => usize::from(u16::from_be_bytes([pkt[ip4::TOTAL_LEN], pkt[ip4::TOTAL_LEN + 1]])),
        IpFamily::V6 => {
            IP6_LEN + usize::from(u16::from_be_bytes([pkt[ip6::PAYLOAD_LEN], pkt[ip6::PAYLOAD_LEN + 1]]))
        }
    };
    // (The fragment's share as its header declares it: a chain's rest
    // counts, a pad beyond does not.)
    let share = declared.checked_sub(data_at).ok_or(NatError::Truncated)?;
    let mut old = 0;
    let mut csum_zero = false;
    if frag.first {
        let csum_at = nat::check_ports(pkt, p)?;
        csum_zero = p.protocol == proto::UDP && u16::from_be_bytes([pkt[csum_at], pkt[csum_at + 1]]) == 0;
        let n = if p.family == IpFamily::V4 { 4 } else { 16 };
        old = checksum::sum(&p.src[..n]) + checksum::sum(&p.dst[..n]);
    }
    match p.family {
        IpFamily::V4 => {
            if csum_zero && l4 == L4Checksum::Full {
                return Err(NatError::ChecksumNeedsWholeDatagram);
            }
            let (tos, ttl) = (pkt[1], pkt[ip4::TTL]);
            let new_len = IP6_LEN + 8;
            if !f.move_start(data_at as isize - new_len as isize) {
                return Err(NatError::NoHeadroom);
            }
            let pkt = f.bytes();
            let payload = u16::try_from(8 + share).map_err(|_| NatError::Truncated)?;
            Ip6Header {
                traffic_class: tos,
                payload_len: payload,
                next_header: proto::FRAGMENT,
                hop_limit: ttl,
                src: &to.src,
                dst: &to.dst,
            }
            .write(pkt);
            pkt[IP6_LEN] = p.protocol;
            pkt[IP6_LEN + 1] = 0;
            set_be16(pkt, IP6_LEN + 2, (frag.offset << 3) | u16::from(frag.more));
            pkt[IP6_LEN + 4..IP6_LEN + 8].copy_from_slice(&frag.id.to_be_bytes());
            if frag.first {
                let new = checksum::sum(&to.src) + checksum::sum(&to.dst);
                finish_transport(pkt, new_len, p, to, replace(old, new), l4);
            }
            f.family_changed(IpFamily::V6);
        }
        IpFamily::V6 => {
            let tclass = (pkt[0] << 4) | (pkt[1] >> 4);
            let hop_limit = pkt[ip6::HOP_LIMIT];
            if !f.move_start(data_at as isize - IP4_LEN as isize) {
                return Err(NatError::Truncated);
            }
            let pkt = f.bytes();
            let total = u16::try_from(IP4_LEN + share).map_err(|_| NatError::Truncated)?;
            Ip4Header {
                tos: tclass,
                total_len: total,
                ident: frag.id as u16,
                flags_frag: if frag.more { 0x2000 } else { 0 } | frag.offset,
                ttl: hop_limit,
                protocol: p.protocol,
                src: v4(&to.src),
                dst: v4(&to.dst),
            }
            .write(pkt);
            if frag.first {
                let new = checksum::sum(&to.src[..4]) + checksum::sum(&to.dst[..4]);
                finish_transport(pkt, IP4_LEN, p, to, replace(old, new), l4);
            }
            f.family_changed(IpFamily::V4);
        }
    }
    Ok(())
}

/// The change to a sum when words summing to `old` are replaced by words
/// summing to `new` (RFC 1624's `~m + m'`, for fields of different sizes).
#[inline(always)]
fn replace(old: u64, new: u64) -> u64 {
    // (As a 64-bit word, `!old` is `-old` modulo 0xffff: 2^64 - 1 is a
    // multiple of it.)
    checksum::sum_words([!old, new, 0, 0])
}

#[inline(always)]
fn set_ports(pkt: &mut [u8], at: usize, to: &Endpoints) {
    // TCP and UDP keep their ports at the same offsets.
    set_be16(pkt, at + udp::SRC_PORT, to.src_port);
    set_be16(pkt, at + udp::DST_PORT, to.dst_port);
}

/// The ports, and the checksum for the address change `addr_delta` and the
/// ports' change, of the transport header at `at` (the same update as a
/// same-family rewrite: [`nat::update_l4_checksum`]).
fn finish_transport(pkt: &mut [u8], at: usize, p: &Parsed, to: &Endpoints, addr_delta: u64, l4: L4Checksum) {
    set_ports(pkt, at, to);
    let csum_at = at + if p.protocol == proto::TCP { tcp::CHECKSUM } else { udp::CHECKSUM };
    let ports = checksum::delta16(p.src_port, to.src_port) + checksum::delta16(p.dst_port, to.dst_port);
    let field: &mut [u8; 2] = (&mut pkt[csum_at..csum_at + 2]).try_into().unwrap();
    nat::update_l4_checksum(field, p.protocol, addr_delta, ports, l4);
}

/// Computes a UDP checksum from scratch (the datagram is all in `pkt`).
fn fill_udp_checksum(pkt: &mut [u8], at: usize, pseudo: u64) {
    let csum_at = at + udp::CHECKSUM;
    set_be16(pkt, csum_at, 0);
    let c = !checksum::fold(pseudo + checksum::sum(&pkt[at..]));
    set_be16(pkt, csum_at, if c == 0 { 0xffff } else { c });
}

/// The largest translated ICMP error kp makes: an ICMPv6 error is at
/// most 1280 bytes (RFC 4443 §2.4), an ICMPv4 one 576 (RFC 1812 §4.3.2.3);
/// the quote is cut to fit.
pub const MAX_ICMP6_ERROR: usize = 1280;
pub const MAX_ICMP4_ERROR: usize = 576;

/// What a translated ICMP error becomes, in the other family: its outer
/// addresses, and the quoted packet's endpoints (an IPv4 address in the
/// first four bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpXlat {
    pub outer_src: [u8; 16],
    pub outer_dst: [u8; 16],
    pub inner: Endpoints,
}

/// The other family's type and code for an ICMP error (RFC 7915 §4.2 and
/// §5.2), and whether its 4-byte field is an MTU; `None` for what is not
/// translated (parameter problems other than an unknown next header,
/// source route failed...).
fn map_icmp(from: IpFamily, t: u8, code: u8) -> Option<(u8, u8, bool)> {
    Some(match (from, t, code) {
        // Destination unreachable.
        (IpFamily::V4, 3, 0 | 1 | 5..=8 | 11 | 12) => (1, 0, false),
        (IpFamily::V4, 3, 9 | 10 | 13 | 15) => (1, 1, false),
        (IpFamily::V4, 3, 3) => (1, 4, false),
        (IpFamily::V4, 3, 4) => (2, 0, true),
        (IpFamily::V4, 3, 2) => (4, 1, false),
        (IpFamily::V4, 11, c) => (3, c, false),
        (IpFamily::V6, 1, 0 | 2 | 3) => (3, 1, false),
        (IpFamily::V6, 1, 1) => (3, 10, false),
        (IpFamily::V6, 1, 4) => (3, 3, false),
        (IpFamily::V6, 2, _) => (3, 4, true),
        (IpFamily::V6, 3, c) => (11, c, false),
        (IpFamily::V6, 4, 1) => (3, 2, false),
        _ => return None,
    })
}

/// Translates an ICMP error about a TCP/UDP packet to the other family
/// (RFC 7915 §4.2, §5.2), into `out`: a new outer header (hop limit / TTL
/// carried over) to `x`'s outer addresses, the mapped type and code, the
/// MTU of "fragmentation needed" / "packet too big" adjusted for the 20
/// bytes the header differs by, the quoted packet's IP header translated
/// with `x.inner`'s endpoints and its transport header's ports and
/// checksum updated, the rest of the quote as it was (cut to the size
/// limit). Every checksum of the result is computed afresh. Returns the
/// new packet's length.
pub fn translate_icmp_error(
    pkt: &[u8],
    e: &crate::packet::icmp_error::IcmpError,
    x: &IcmpXlat,
    out: &mut [u8; MAX_ICMP6_ERROR],
) -> Result<usize, NatError> {
    let from = e.family;
    let icmp = e.icmp_at;
    let (t, code, has_mtu) =
        map_icmp(from, pkt[icmp], pkt[icmp + 1]).ok_or(NatError::TranslationNotSupported)?;
    let hop = if from == IpFamily::V4 { pkt[ip4::TTL] } else { pkt[ip6::HOP_LIMIT] };
    let quoted = &pkt[e.inner_at..e.end];
    let inner_l4 = e.inner_l4_at - e.inner_at;
    let rest = &pkt[e.inner_l4_at..e.end];
    let (outer_len, inner_len, limit) = match from {
        IpFamily::V4 => (IP6_LEN, IP6_LEN, MAX_ICMP6_ERROR),
        IpFamily::V6 => (IP4_LEN, IP4_LEN, MAX_ICMP4_ERROR),
    };
    let head = outer_len + 8 + inner_len;
    let rest_len = rest.len().min(limit.saturating_sub(head));
    if rest_len < 8 {
        return Err(NatError::Truncated);
    }
    let total = head + rest_len;
    let out = &mut out[..total];
    out.fill(0);
    // The quoted packet's own length and hop count, as it was sent.
    let (q_payload, q_hop, q_tos) = match from {
        IpFamily::V4 => {
            let ihl = usize::from(quoted[0] & 0x0f) * 4;
            (u16::from_be_bytes([quoted[2], quoted[3]]).saturating_sub(ihl as u16), quoted[8], quoted[1])
        }
        IpFamily::V6 => {
            // (Extension headers are dropped: what follows them is the
            // payload the IPv4 packet carries.)
            let ext = (inner_l4 - IP6_LEN) as u16;
            let plen = u16::from_be_bytes([quoted[4], quoted[5]]).saturating_sub(ext);
            (plen, quoted[7], (quoted[0] << 4) | (quoted[1] >> 4))
        }
    };
    // The quoted transport header: ports, and its checksum for the new
    // pseudo-header (updated, as the quote is usually cut short).
    let r = &mut out[head..];
    r.copy_from_slice(&rest[..rest_len]);
    let (old_src, old_dst) = (&e.inner_src[..addr_len(from)], &e.inner_dst[..addr_len(from)]);
    let to = other_family(from);
    let (new_src, new_dst) = (&x.inner.src[..addr_len(to)], &x.inner.dst[..addr_len(to)]);
    let csum_at = if e.protocol == proto::TCP { tcp::CHECKSUM } else { udp::CHECKSUM };
    if rest_len >= csum_at + 2 {
        let stored = u16::from_be_bytes([r[csum_at], r[csum_at + 1]]);
        if !(e.protocol == proto::UDP && stored == 0) {
            // (Zeros pad the shorter family's addresses: they add nothing.)
            let (mut old, mut new) = ([0u8; 32], [0u8; 32]);
            old[..old_src.len() * 2].copy_from_slice(&[old_src, old_dst].concat());
            new[..new_src.len() * 2].copy_from_slice(&[new_src, new_dst].concat());
            let mut delta = checksum::delta(&old, &new);
            delta += checksum::delta16(e.inner_src_port, x.inner.src_port);
            delta += checksum::delta16(e.inner_dst_port, x.inner.dst_port);
            set_be16(r, csum_at, checksum::update(stored, delta));
        }
    }
    set_be16(r, 0, x.inner.src_port);
    set_be16(r, 2, x.inner.dst_port);
    // The quoted IP header.
    let q = &mut out[outer_len + 8..head];
    match to {
        IpFamily::V6 => Ip6Header {
            traffic_class: q_tos,
            payload_len: q_payload,
            next_header: e.protocol,
            hop_limit: q_hop,
            src: &x.inner.src,
            dst: &x.inner.dst,
        }
        .write(q),
        IpFamily::V4 => Ip4Header {
            tos: q_tos,
            total_len: q_payload.saturating_add(IP4_LEN as u16),
            ident: 0,
            flags_frag: 0x4000,
            ttl: q_hop,
            protocol: e.protocol,
            src: v4(&x.inner.src),
            dst: v4(&x.inner.dst),
        }
        .write(q),
    }
    // The ICMP header.
    let icmp_len = total - outer_len;
    {
        let h = &mut out[outer_len..outer_len + 8];
        h[0] = t;
        h[1] = code;
        if has_mtu {
            let mtu = match from {
                IpFamily::V4 => u32::from(u16::from_be_bytes([pkt[icmp + 6], pkt[icmp + 7]])),
                IpFamily::V6 => {
                    u32::from_be_bytes([pkt[icmp + 4], pkt[icmp + 5], pkt[icmp + 6], pkt[icmp + 7]])
                }
            };
            match to {
                // An IPv4 router's MTU; the IPv6 path is 20 bytes more, and
                // never below IPv6's minimum.
                IpFamily::V6 => h[4..8].copy_from_slice(&(mtu + 20).max(1280).to_be_bytes()),
                // An IPv6 router's: 20 bytes less, and 8 less again if the
                // quote had a Fragment header (an IPv4 fragment translated
                // gains 28 bytes: the sender must fragment that much
                // smaller).
                IpFamily::V4 => {
                    let ext = (inner_l4 - IP6_LEN) as u32;
                    set_be16(h, 6, mtu.saturating_sub(20 + ext).clamp(68, 65535) as u16)
                }
            }
        } else if (from, pkt[icmp], pkt[icmp + 1]) == (IpFamily::V4, 3, 2) {
            // Protocol unreachable: IPv6's parameter problem at the next
            // header field.
            h[0] = 4;
            h[1] = 1;
            h[4..8].copy_from_slice(&6u32.to_be_bytes());
        }
    }
    // The outer header, and the ICMP checksum.
    match to {
        IpFamily::V6 => {
            Ip6Header {
                traffic_class: 0,
                payload_len: icmp_len as u16,
                next_header: proto::ICMPV6,
                hop_limit: hop,
                src: &x.outer_src,
                dst: &x.outer_dst,
            }
            .write(out);
            let ph = checksum::pseudo_header_v6(&x.outer_src, &x.outer_dst, proto::ICMPV6, icmp_len as u32);
            let c = !checksum::fold(ph + checksum::sum(&out[IP6_LEN..]));
            set_be16(out, IP6_LEN + 2, c);
        }
        IpFamily::V4 => {
            Ip4Header {
                tos: 0,
                total_len: total as u16,
                ident: 0,
                flags_frag: 0x4000,
                ttl: hop,
                protocol: proto::ICMP,
                src: v4(&x.outer_src),
                dst: v4(&x.outer_dst),
            }
            .write(out);
            let c = checksum::checksum(&out[IP4_LEN..]);
            set_be16(out, IP4_LEN + 2, c);
        }
    }
    Ok(total)
}

fn addr_len(f: IpFamily) -> usize {
    match f {
        IpFamily::V4 => 4,
        IpFamily::V6 => 16,
    }
}

/// The family a translation goes to.
pub fn other_family(f: IpFamily) -> IpFamily {
    match f {
        IpFamily::V4 => IpFamily::V6,
        IpFamily::V6 => IpFamily::V4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn rfc6052_examples() {
        // RFC 6052 §2.4's table, for 192.0.2.33.
        let v4 = [192, 0, 2, 33];
        let cases = [
            ("2001:db8::", 32, "2001:db8:c000:221::"),
            ("2001:db8:100::", 40, "2001:db8:1c0:2:21::"),
            ("2001:db8:122::", 48, "2001:db8:122:c000:2:2100::"),
            ("2001:db8:122:300::", 56, "2001:db8:122:3c0:0:221::"),
            ("2001:db8:122:344::", 64, "2001:db8:122:344:c0:2:2100:0"),
            ("2001:db8:122:344::", 96, "2001:db8:122:344::192.0.2.33"),
            ("64:ff9b::", 96, "64:ff9b::192.0.2.33"),
        ];
        for (prefix, len, want) in cases {
            let p = Rfc6052Prefix::new(v6(prefix), len).unwrap();
            let a = p.embed(v4);
            assert_eq!(Ipv6Addr::from(a), v6(want), "/{len}");
            assert_eq!(p.extract(&a), Some(v4));
        }
    }

    #[test]
    fn prefixes_are_validated_and_foreign_addresses_not_extracted() {
        assert_eq!(Rfc6052Prefix::new(v6("2001:db8::"), 80), Err(PrefixError::Length(80)));
        assert_eq!(Rfc6052Prefix::new(v6("2001:db8::1"), 96), Err(PrefixError::HostBits));
        let p = Rfc6052Prefix::new(v6("2001:db8:46::"), 96).unwrap();
        assert_eq!(p.extract(&v6("2001:db8:47::1").octets()), None);
        assert_eq!(Rfc6052Prefix::default().to_string(), "64:ff9b:1::/96");
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use crate::packet::build::{emit, verify, Spec};
    use crate::packet::parse;
    use proptest::prelude::*;

    /// The one translated UDP datagram of a flow whose checksum computes
    /// to 0 (some source port makes it so: the sum moves by one a port)
    /// carries all ones (RFC 768), in the fast lane as in the general one.
    #[test]
    fn fast_six_to_four_sends_a_computed_zero_udp_checksum_as_all_ones() {
        let (src, dst) = (
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10],
        );
        let orig = emit(&Spec::new(IpFamily::V6, proto::UDP, &src, &dst, (5555, 80)).payload(b"hello kp"));
        let p = parse(&orig).unwrap();
        let checksum_at = IP4_LEN + udp::CHECKSUM;
        let mut found = 0;
        for port in 0..=u16::MAX {
            let mut eps = Endpoints { src: [0; 16], src_port: port, dst: [0; 16], dst_port: 8080 };
            eps.src[..4].copy_from_slice(&[192, 0, 2, 1]);
            eps.dst[..4].copy_from_slice(&[198, 51, 100, 5]);
            let mut general = orig.clone();
            v6_to_v4(&mut general, &p, &eps, L4Checksum::Full).unwrap();
            if general[checksum_at..checksum_at + 2] != [0xff, 0xff] {
                continue;
            }
            found += 1;
            let mut fast = orig.clone();
            assert!(v6_to_v4_fast(
                &mut fast,
                proto::UDP,
                WireV4::new([192, 0, 2, 1], port, [198, 51, 100, 5], 8080),
                L4Checksum::Full
            ));
            assert_eq!(fast, general, "port {port}");
            assert_eq!(verify(&fast), Ok(()));
        }
        assert!(found > 0, "some port makes the sum 0");
    }

    proptest! {
        /// The fast lane's nat46 translation writes exactly what the
        /// general one does, for every packet it takes (full or offloaded
        /// checksum, any TOS and TTL), and leaves alone, to the general
        /// one, a UDP datagram without a checksum to compute.
        #[test]
        fn fast_four_to_six_is_the_general_one(
            tcp in any::<bool>(),
            src in any::<[u8; 4]>(),
            dst in any::<[u8; 4]>(),
            ports in any::<(u16, u16)>(),
            to_port in 1u16..,
            (tos, ttl) in any::<(u8, u8)>(),
            payload in proptest::collection::vec(any::<u8>(), 0..100),
            no_checksum in any::<bool>(),
            partial in any::<bool>(),
            prefix_len in prop::sample::select(vec![32u8, 40, 48, 56, 64, 96]),
        ) {
            let protocol = if tcp { proto::TCP } else { proto::UDP };
            let mut spec = Spec::new(IpFamily::V4, protocol, &src, &dst, ports).payload(&payload);
            spec.udp_no_checksum = no_checksum && !tcp;
            let mut orig = emit(&spec);
            orig[1] = tos;
            orig[ip4::TTL] = ttl;
            let p = parse(&orig).unwrap();
            let prefix = Rfc6052Prefix::new("2001:db8::".parse().unwrap(), prefix_len).unwrap();
            let pod = [0x20, 0x01, 0x0d, 0xb8, 0, 0xb, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
            let l4 = if partial { L4Checksum::Partial } else { L4Checksum::Full };
            let fwd = Endpoints { src: prefix.embed(src), src_port: ports.0, dst: pod, dst_port: to_port };
            let mut general = orig.clone();
            v4_to_v6(&mut general, &p, &fwd, l4, true).unwrap();
            let mut fast = orig.clone();
            let took = v4_to_v6_fast(&mut fast, protocol, &fwd.src, &pod, to_port, l4);
            if spec.udp_no_checksum && !partial {
                prop_assert!(!took);
                prop_assert_eq!(&fast, &orig);
            } else {
                prop_assert!(took);
                prop_assert_eq!(&fast, &general);
            }
        }

        /// The fast lane's nat64 translation writes exactly what the
        /// general one does (full or offloaded checksum, any traffic class
        /// and hop limit).
        #[test]
        fn fast_six_to_four_is_the_general_one(
            tcp in any::<bool>(),
            src in any::<[u8; 16]>(),
            dst in any::<[u8; 16]>(),
            ports in any::<(u16, u16)>(),
            to in any::<([u8; 4], [u8; 4], u16, u16)>(),
            (first, second, hop) in any::<(u8, u8, u8)>(),
            payload in proptest::collection::vec(any::<u8>(), 0..100),
            partial in any::<bool>(),
        ) {
            let protocol = if tcp { proto::TCP } else { proto::UDP };
            let mut orig = emit(&Spec::new(IpFamily::V6, protocol, &src, &dst, ports).payload(&payload));
            // Traffic class and flow label bits (version kept).
            orig[0] = 0x60 | (first & 0x0f);
            orig[1] = second;
            orig[ip6::HOP_LIMIT] = hop;
            let p = parse(&orig).unwrap();
            let l4 = if partial { L4Checksum::Partial } else { L4Checksum::Full };
            let mut eps = Endpoints { src: [0; 16], src_port: to.2, dst: [0; 16], dst_port: to.3 };
            eps.src[..4].copy_from_slice(&to.0);
            eps.dst[..4].copy_from_slice(&to.1);
            let mut general = orig.clone();
            v6_to_v4(&mut general, &p, &eps, l4).unwrap();
            let mut fast = orig.clone();
            prop_assert!(v6_to_v4_fast(&mut fast, protocol, WireV4::new(to.0, to.2, to.1, to.3), l4));
            prop_assert_eq!(&fast, &general);
        }

        /// Any TCP/UDP packet translated 4 -> 6 and back 6 -> 4 has valid
        /// checksums at every step (checked from scratch) and comes back
        /// with its transport bytes as they were sent.
        #[test]
        fn four_to_six_and_back_verifies(
            tcp in any::<bool>(),
            src in any::<[u8; 4]>(),
            dst in any::<[u8; 4]>(),
            ports in any::<(u16, u16)>(),
            to_port in 1u16..,
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            options in 0usize..=10,
            no_checksum in any::<bool>(),
        ) {
            let protocol = if tcp { proto::TCP } else { proto::UDP };
            let opts = vec![1u8; options * 4];
            let mut spec = Spec::new(IpFamily::V4, protocol, &src, &dst, ports).payload(&payload);
            spec.ipv4_options = &opts;
            spec.udp_no_checksum = no_checksum && !tcp;
            let orig = emit(&spec);
            let p = parse(&orig).unwrap();
            let prefix = Rfc6052Prefix::new("2001:db8:46::".parse().unwrap(), 96).unwrap();
            let pod = [0x20, 0x01, 0x0d, 0xb8, 0, 0xb, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
            let mut pkt = orig.clone();
            let fwd = Endpoints { src: prefix.embed(src), src_port: ports.0, dst: pod, dst_port: to_port };
            v4_to_v6(&mut pkt, &p, &fwd, L4Checksum::Full, true).unwrap();
            prop_assert_eq!(verify(&pkt), Ok(()));
            let q = parse(&pkt).unwrap();
            prop_assert_eq!((q.src, q.dst, q.src_port, q.dst_port), (fwd.src, fwd.dst, fwd.src_port, fwd.dst_port));
            let mut back_to = Endpoints { src: [0; 16], src_port: ports.0, dst: [0; 16], dst_port: ports.1 };
            back_to.src[..4].copy_from_slice(&src);
            back_to.dst[..4].copy_from_slice(&dst);
            v6_to_v4(&mut pkt, &q, &back_to, L4Checksum::Full).unwrap();
            prop_assert_eq!(verify(&pkt), Ok(()));
            let ihl = 20 + opts.len();
            // The transport header and payload are as sent, but for a
            // checksum computed where there was none.
            let l4 = &orig[ihl..];
            let csum = if tcp { 16 } else { 6 };
            prop_assert_eq!(&pkt[20..20 + csum], &l4[..csum]);
            prop_assert_eq!(&pkt[20 + csum + 2..], &l4[csum + 2..]);
            if !spec.udp_no_checksum {
                prop_assert_eq!(&pkt[20 + csum..20 + csum + 2], &l4[csum..csum + 2]);
            }
        }
    }
}
