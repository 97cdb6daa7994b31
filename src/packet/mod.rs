//! Zero-copy, bounds-checked views over packet bytes.
//!
//! The shape follows smoltcp's `wire` module: a view `Foo<T: AsRef<[u8]>>`
//! wraps any byte container; getters need `AsRef`, setters `AsMut`. Offsets
//! live in one private `field` table per header.
//!
//! **The check contract.** `new_checked` validates the lengths every accessor
//! relies on; after it succeeds no accessor of that view panics or reads
//! past the end. `new_unchecked` skips validation and is only for bytes the
//! caller has already checked. Nothing here takes a reference to an
//! unaligned header struct: packet data after a 14-byte Ethernet header is
//! only 2-byte aligned, so every multi-byte field is read from bytes.

pub mod build;
pub mod checksum;
pub mod icmp_error;
pub mod ipv4;
pub mod ipv6;
pub mod l4;
pub mod reject;

pub use ipv4::Ipv4Packet;
pub use ipv6::Ipv6Packet;
pub use l4::{IcmpPacket, TcpPacket, UdpPacket};

use core::fmt;

/// IP protocol numbers kp cares about.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    // IPv6 extension headers that kp walks over.
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const DEST_OPTS: u8 = 60;
}

/// Why a packet could not be parsed or rewritten. Each variant maps to one
/// node error counter, so operators see exactly why packets were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// The bytes end before a header (or the length a header claims) does.
    Truncated,
    /// A length or version field contradicts the packet.
    Malformed,
    /// An IP fragment: ports are not in every fragment, so the parser
    /// leaves it to [`parse_fragment`] and the fragment cache. As a drop
    /// reason: a fragment whose first fragment was not seen (lately).
    Fragment,
    /// The headers kp reads do not all lie in the packet's first buffer.
    SplitHeaders,
    /// A transport kp does not translate (not TCP or UDP).
    UnsupportedProtocol,
    /// An IPv6 UDP datagram with a zero checksum, which RFC 8200 §8.1 says
    /// receivers must discard.
    ZeroUdpChecksumV6,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated packet",
            Error::Malformed => "malformed header",
            Error::Fragment => "IP fragment",
            Error::SplitHeaders => "headers not in the first buffer",
            Error::UnsupportedProtocol => "protocol not TCP or UDP",
            Error::ZeroUdpChecksumV6 => "IPv6 UDP with zero checksum",
        })
    }
}

impl std::error::Error for Error {}

pub type Result<T> = core::result::Result<T, Error>;

/// Reads a big-endian u16 at `at` (caller has checked the bounds).
#[inline(always)]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
pub(crate) fn set_be16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// An IP address as kp stores it: IPv4 in the first four bytes and a
/// family tag, so IPv4 and IPv6 keys share one fixed-size layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    V4,
    V6,
}

/// The transport-level identity of a parsed packet: what the flow table
/// keys on and what the rewrite needs, with every offset already checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    pub family: IpFamily,
    /// TCP or UDP.
    pub protocol: u8,
    /// Source and destination address; IPv4 uses the first four bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    /// Offset of the transport header from the start of the IP header.
    pub l4_offset: u16,
    /// Bytes from the transport header to the end of the IP payload.
    pub l4_len: u16,
}

impl Default for Parsed {
    fn default() -> Self {
        Parsed {
            family: IpFamily::V4,
            protocol: 0,
            src: [0; 16],
            dst: [0; 16],
            src_port: 0,
            dst_port: 0,
            l4_offset: 0,
            l4_len: 0,
        }
    }
}

/// Parses an IP packet (IPv4 or IPv6, by its version nibble) down to the
/// TCP/UDP ports. Anything else is an error saying why.
#[inline]
pub fn parse(packet: &[u8]) -> Result<Parsed> {
    let mut p = Parsed::default();
    parse_into(packet, &mut p)?;
    Ok(p)
}

/// [`parse`] into a caller's record (the data path parses into its batch
/// scratch space, saving a copy per packet). On error `out` is unspecified.
#[inline]
pub fn parse_into(packet: &[u8], out: &mut Parsed) -> Result<()> {
    parse_chain_into(packet, packet.len(), out)
}

/// [`parse_into`] for a packet that may go on beyond `head` (a buffer
/// chain, as VPP makes of jumbo frames and GSO super-frames): `len` is the
/// packet's whole length, and the headers kp reads must all be in `head`
/// ([`Error::SplitHeaders`] if they are not). Lengths the headers claim are
/// checked against `len`.
#[inline]
pub fn parse_chain_into(head: &[u8], len: usize, out: &mut Parsed) -> Result<()> {
    let len = len.max(head.len());
    match head.first().map(|b| b >> 4) {
        Some(4) => parse_ipv4_into(head, len, out),
        Some(6) => parse_ipv6_into(head, len, out),
        Some(_) => Err(Error::Malformed),
        None if len > 0 => Err(Error::SplitHeaders),
        None => Err(Error::Truncated),
    }
}

/// Where a packet's bytes end: what its IP header declares (already
/// checked against the chain's length), and what the first buffer holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub declared: usize,
    pub head: usize,
}

impl Bounds {
    /// The headers up to `end` are there, and in the first buffer.
    #[inline(always)]
    pub fn need(&self, end: usize) -> Result<()> {
        if end > self.declared {
            Err(Error::Truncated)
        } else if end > self.head {
            Err(Error::SplitHeaders)
        } else {
            Ok(())
        }
    }
}

#[inline(always)]
fn parse_ipv4_into(head: &[u8], len: usize, out: &mut Parsed) -> Result<()> {
    // The common case first (one buffer, no options, not a fragment, a
    // good TCP/UDP header): the data path's fast lane parser.
    if let Some(f) = parse_v4_fast(head) {
        out.family = IpFamily::V4;
        out.protocol = f.protocol;
        out.src = [0; 16];
        out.dst = [0; 16];
        out.src[..4].copy_from_slice(&f.src());
        out.dst[..4].copy_from_slice(&f.dst());
        out.src_port = f.src_port();
        out.dst_port = f.dst_port();
        out.l4_offset = 20;
        out.l4_len = f.l4_len;
        return Ok(());
    }
    let (ip, bounds) = ipv4_header(head, len)?;
    let total = bounds.declared;
    let l4_offset = ip.header_len();
    if ip.is_fragment() {
        return Err(Error::Fragment);
    }
    let protocol = ip.protocol();
    let (src_port, dst_port) = ports::<true>(protocol, head, l4_offset, bounds, IpFamily::V4)?;
    out.family = IpFamily::V4;
    out.protocol = protocol;
    out.src = [0; 16];
    out.dst = [0; 16];
    out.src[..4].copy_from_slice(&ip.src_addr());
    out.dst[..4].copy_from_slice(&ip.dst_addr());
    out.src_port = src_port;
    out.dst_port = dst_port;
    out.l4_offset = l4_offset as u16;
    out.l4_len = (total - l4_offset) as u16;
    Ok(())
}

/// What the data path's IPv4 fast lane needs of a packet: header fields
/// as words read straight from the wire (native byte order, one load
/// each), which is how the flow table keys and hashes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V4Fast {
    pub protocol: u8,
    /// Header bytes 12..20: source then destination address.
    pub addrs: u64,
    /// The transport header's first four bytes: source and destination port.
    pub ports: u32,
    /// Bytes from the transport header to the end of the IP payload.
    pub l4_len: u16,
}

impl V4Fast {
    pub fn src(&self) -> [u8; 4] {
        let a = self.addrs.to_ne_bytes();
        [a[0], a[1], a[2], a[3]]
    }

    pub fn dst(&self) -> [u8; 4] {
        let a = self.addrs.to_ne_bytes();
        [a[4], a[5], a[6], a[7]]
    }

    pub fn src_port(&self) -> u16 {
        let p = self.ports.to_ne_bytes();
        u16::from_be_bytes([p[0], p[1]])
    }

    pub fn dst_port(&self) -> u16 {
        let p = self.ports.to_ne_bytes();
        u16::from_be_bytes([p[2], p[3]])
    }
}

/// The common case of [`parse`], in as few steps as it takes: IPv4 with no
/// options, not a fragment, TCP or UDP with a header [`parse`] accepts.
/// `None` means "not this case" (the caller then runs [`parse`], which
/// says why or parses the rest); whenever this returns a value, [`parse`]
/// succeeds with the same fields and `l4_offset` 20.
#[inline(always)]
pub fn parse_v4_fast(packet: &[u8]) -> Option<V4Fast> {
    use ipv4::{field as ip, MIN_HEADER_LEN as IP_LEN};
    use l4::{tcp_field as tcp, udp_field as udp};
    // The IPv4 header and a UDP header (TCP's first 8 bytes): one array.
    const FRONT: usize = IP_LEN + l4::UDP_HEADER_LEN;
    let h: &[u8; FRONT] = packet.get(..FRONT)?.try_into().ok()?;
    // Version 4 with a 20-byte header (byte 0) and not a fragment (no MF
    // flag, offset 0: bytes 6-7 under 0x3fff), in one compare.
    let first = u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
    const IHL_AND_FRAGMENT: u64 = 0xff | 0x3f << (8 * ip::FLAGS_FRAG) | 0xff << (8 * ip::FLAGS_FRAG + 8);
    let total = usize::from(be16(h, ip::TOTAL_LEN));
    if first & IHL_AND_FRAGMENT != 0x45 || total > packet.len() {
        return None;
    }
    let l4_len = total.checked_sub(IP_LEN)?;
    let ok = match h[ip::PROTOCOL] {
        proto::UDP => (l4::UDP_HEADER_LEN..=l4_len).contains(&usize::from(be16(h, IP_LEN + udp::LENGTH))),
        proto::TCP => {
            let data_offset = usize::from(*packet.get(IP_LEN + tcp::DATA_OFFSET)? >> 4) * 4;
            (l4::TCP_MIN_HEADER_LEN..=l4_len).contains(&data_offset)
        }
        _ => false,
    };
    let word = |at: usize| u32::from_ne_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    ok.then(|| V4Fast {
        protocol: h[ip::PROTOCOL],
        addrs: u64::from(word(ip::SRC.start)) | (u64::from(word(ip::DST.start)) << 32),
        // Source and destination port, as on the wire (TCP's are there too).
        ports: word(IP_LEN + udp::SRC_PORT),
        l4_len: l4_len as u16,
    })
}

/// What the data path's IPv6 fast lane needs of a packet, as
/// [`V4Fast`] for IPv4: the addresses and ports as words read straight
/// from the wire (native byte order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V6Fast {
    pub protocol: u8,
    /// Source address, bytes 0..8 and 8..16.
    pub src: [u64; 2],
    pub dst: [u64; 2],
    /// The transport header's first four bytes: source and destination port.
    pub ports: u32,
    /// Bytes from the transport header to the end of the IP payload.
    pub l4_len: u16,
}

impl V6Fast {
    pub fn dst_port(&self) -> u16 {
        let p = self.ports.to_ne_bytes();
        u16::from_be_bytes([p[2], p[3]])
    }
}

/// The common case of IPv6 in [`parse`], on fixed offsets: TCP or UDP
/// right after the fixed header, the packet's bytes all in `packet`, a
/// transport header [`parse`] accepts. `None` means "not this case";
/// whenever this returns a value, [`parse`] succeeds with the same fields
/// and `l4_offset` 40 (a property test holds them equal).
#[inline(always)]
pub fn parse_v6_fast(packet: &[u8]) -> Option<V6Fast> {
    use ipv6::HEADER_LEN as IP_LEN;
    use l4::{tcp_field as tcp, udp_field as udp};
    // The fixed header and a UDP header (TCP's first 8 bytes): one array.
    const FRONT: usize = IP_LEN + l4::UDP_HEADER_LEN;
    let h: &[u8; FRONT] = packet.get(..FRONT)?.try_into().unwrap();
    let l4_len = usize::from(be16(h, 4));
    let protocol = h[6];
    if h[0] >> 4 != 6 || IP_LEN + l4_len > packet.len() {
        return None;
    }
    let ok = match protocol {
        proto::UDP => {
            (l4::UDP_HEADER_LEN..=l4_len).contains(&usize::from(be16(h, IP_LEN + udp::LENGTH)))
                && be16(h, IP_LEN + udp::CHECKSUM) != 0
        }
        proto::TCP => match packet.get(IP_LEN + tcp::DATA_OFFSET) {
            Some(&b) => {
                let data_offset = usize::from(b >> 4) * 4;
                // (The fixed TCP header is in `packet`: l4_len covers it.)
                (l4::TCP_MIN_HEADER_LEN..=l4_len).contains(&data_offset)
            }
            None => false,
        },
        _ => false,
    };
    let word = |at: usize| u64::from_ne_bytes(h[at..at + 8].try_into().unwrap());
    ok.then(|| V6Fast {
        protocol,
        src: [word(8), word(16)],
        dst: [word(24), word(32)],
        ports: u32::from_ne_bytes([h[IP_LEN], h[IP_LEN + 1], h[IP_LEN + 2], h[IP_LEN + 3]]),
        l4_len: l4_len as u16,
    })
}

/// [`parse_v6_fast`] into a [`Parsed`]: `false` means "not this case"
/// (and `out` is unspecified).
#[inline(always)]
pub fn parse_v6_fast_into(packet: &[u8], out: &mut Parsed) -> bool {
    let Some(f) = parse_v6_fast(packet) else { return false };
    let addr = |w: [u64; 2]| {
        let mut a = [0u8; 16];
        a[..8].copy_from_slice(&w[0].to_ne_bytes());
        a[8..].copy_from_slice(&w[1].to_ne_bytes());
        a
    };
    let ports = f.ports.to_ne_bytes();
    out.family = IpFamily::V6;
    out.protocol = f.protocol;
    out.src = addr(f.src);
    out.dst = addr(f.dst);
    out.src_port = u16::from_be_bytes([ports[0], ports[1]]);
    out.dst_port = u16::from_be_bytes([ports[2], ports[3]]);
    out.l4_offset = ipv6::HEADER_LEN as u16;
    out.l4_len = f.l4_len;
    true
}

/// The IPv4 header of a packet of `len` bytes whose first buffer is
/// `head`: checked (options included, in `head`), with the packet's bounds
/// (`declared`: its total length).
#[inline(always)]
fn ipv4_header(head: &[u8], len: usize) -> Result<(Ipv4Packet<&[u8]>, Bounds)> {
    Bounds { declared: len, head: head.len() }.need(ipv4::MIN_HEADER_LEN)?;
    let ip = Ipv4Packet::new_unchecked(head);
    ip.check_len_in(len)?;
    let bounds = Bounds { declared: usize::from(ip.total_len()), head: head.len() };
    bounds.need(ip.header_len())?;
    Ok((ip, bounds))
}

/// The IPv6 fixed header of a packet of `len` bytes whose first buffer is
/// `head`: checked, with the packet's bounds (`declared`: header plus
/// payload length).
#[inline(always)]
fn ipv6_header(head: &[u8], len: usize) -> Result<(Ipv6Packet<&[u8]>, Bounds)> {
    Bounds { declared: len, head: head.len() }.need(ipv6::HEADER_LEN)?;
    let ip = Ipv6Packet::new_unchecked(head);
    ip.check_len_in(len)?;
    let declared = ipv6::HEADER_LEN + usize::from(ip.payload_len());
    Ok((ip, Bounds { declared, head: head.len() }))
}

#[inline]
fn parse_ipv6_into(head: &[u8], len: usize, out: &mut Parsed) -> Result<()> {
    // The common case first: TCP or UDP right after the fixed header, all
    // in bounds (what the walk below would find, without walking).
    if let Some(h) = head.get(..ipv6::HEADER_LEN) {
        let protocol = h[6];
        let declared = ipv6::HEADER_LEN + usize::from(be16(h, 4));
        if (protocol == proto::TCP || protocol == proto::UDP) && declared <= len {
            let bounds = Bounds { declared, head: head.len() };
            let (src_port, dst_port) = ports::<true>(protocol, head, ipv6::HEADER_LEN, bounds, IpFamily::V6)?;
            *out = Parsed {
                family: IpFamily::V6,
                protocol,
                src: h[8..24].try_into().unwrap(),
                dst: h[24..40].try_into().unwrap(),
                src_port,
                dst_port,
                l4_offset: ipv6::HEADER_LEN as u16,
                l4_len: (declared - ipv6::HEADER_LEN) as u16,
            };
            return Ok(());
        }
    }
    let (ip, bounds) = ipv6_header(head, len)?;
    let declared = bounds.declared;
    let (protocol, l4_offset) = ipv6::upper_layer(head, ip.next_header(), bounds)?;
    let (src_port, dst_port) = ports::<true>(protocol, head, l4_offset, bounds, IpFamily::V6)?;
    *out = Parsed {
        family: IpFamily::V6,
        protocol,
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        src_port,
        dst_port,
        l4_offset: l4_offset as u16,
        l4_len: (declared - l4_offset) as u16,
    };
    Ok(())
}

/// An IP fragment, as far as kp can know it from the fragment alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// Addresses and protocol; for the first fragment also the ports and
    /// transport offset (its `l4_len` is this fragment's share). For the
    /// others ports are 0 and `l4_offset` is where their data starts.
    pub parsed: Parsed,
    /// The datagram's identification (16 bits in IPv4, 32 in IPv6).
    pub id: u32,
    /// Whether this is the first fragment (offset 0), which carries the
    /// transport header.
    pub first: bool,
    /// Where it is in its datagram (8-byte units), and whether more
    /// fragments follow it.
    pub offset: u16,
    pub more: bool,
    /// Where the fragment's share of the datagram starts: after the IPv4
    /// header, or after the IPv6 Fragment header.
    pub data_at: u16,
}

/// Parses a packet [`parse_chain_into`] reported as [`Error::Fragment`]:
/// what identifies its datagram, and its ports if it is the first
/// fragment (whose transport header must then be whole in it).
pub fn parse_fragment(head: &[u8], len: usize) -> Result<Fragment> {
    let len = len.max(head.len());
    let mut p = Parsed::default();
    let (id, word, data_at, bounds) = match head.first().map(|b| b >> 4) {
        Some(4) => {
            let (ip, bounds) = ipv4_header(head, len)?;
            let hlen = ip.header_len();
            if !ip.is_fragment() {
                return Err(Error::Malformed);
            }
            p.family = IpFamily::V4;
            p.protocol = ip.protocol();
            p.src[..4].copy_from_slice(&ip.src_addr());
            p.dst[..4].copy_from_slice(&ip.dst_addr());
            p.l4_offset = hlen as u16;
            // (offset, MF) in the IPv6 Fragment header's layout.
            let w = be16(head, ipv4::field::FLAGS_FRAG);
            let word = ((w & 0x1fff) << 3) | u16::from(w & 0x2000 != 0);
            (u32::from(be16(head, ipv4::field::IDENT)), word, hlen, bounds)
        }
        Some(6) => {
            let (ip, bounds) = ipv6_header(head, len)?;
            let w = ipv6::walk(head, ip.next_header(), bounds)?;
            let Some(at) = w.fragment else { return Err(Error::Malformed) };
            p.family = IpFamily::V6;
            p.protocol = w.protocol;
            p.src = ip.src_addr();
            p.dst = ip.dst_addr();
            p.l4_offset = w.at as u16;
            let id = u32::from_be_bytes([head[at + 4], head[at + 5], head[at + 6], head[at + 7]]);
            (id, be16(head, at + 2), at + 8, bounds)
        }
        Some(_) => return Err(Error::Malformed),
        None => return Err(Error::Truncated),
    };
    let at = usize::from(p.l4_offset);
    p.l4_len = (bounds.declared - at) as u16;
    let (offset, more) = (word >> 3, word & 1 != 0);
    let first = offset == 0;
    if first {
        // The transport header must be whole in the first fragment (RFC
        // 8200 §4.5; RFC 1858 for IPv4's tiny fragments).
        (p.src_port, p.dst_port) = ports::<false>(p.protocol, head, at, bounds, p.family)?;
    }
    Ok(Fragment { parsed: p, id, first, offset, more, data_at: data_at as u16 })
}

/// The ports of the TCP/UDP header at `at`, after checking it: its fixed
/// part in the first buffer, and, for a whole datagram (`WHOLE`), its
/// lengths within what the IP header gave it. (A first fragment's lengths
/// are the datagram's, not the fragment's.)
#[inline]
fn ports<const WHOLE: bool>(
    protocol: u8,
    head: &[u8],
    at: usize,
    bounds: Bounds,
    family: IpFamily,
) -> Result<(u16, u16)> {
    use l4::{tcp_field as tcp, udp_field as udp, TCP_MIN_HEADER_LEN, UDP_HEADER_LEN};
    match protocol {
        proto::TCP => {
            bounds.need(at + TCP_MIN_HEADER_LEN)?;
            let data_offset = usize::from(head[at + tcp::DATA_OFFSET] >> 4) * 4;
            if data_offset < TCP_MIN_HEADER_LEN {
                return Err(Error::Malformed);
            }
            // (Options need not be in the first buffer: kp never reads them.)
            if WHOLE && at + data_offset > bounds.declared {
                return Err(Error::Truncated);
            }
        }
        proto::UDP => {
            bounds.need(at + UDP_HEADER_LEN)?;
            let length = usize::from(be16(head, at + udp::LENGTH));
            if length < UDP_HEADER_LEN || (WHOLE && at + length > bounds.declared) {
                return Err(Error::Malformed);
            }
            if family == IpFamily::V6 && be16(head, at + udp::CHECKSUM) == 0 {
                return Err(Error::ZeroUdpChecksumV6);
            }
        }
        _ => return Err(Error::UnsupportedProtocol),
    }
    Ok((be16(head, at), be16(head, at + 2)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The transport checks through the checked views (the oracle's own).
    fn view_ports(protocol: u8, l4: &[u8]) -> Result<(u16, u16)> {
        match protocol {
            proto::TCP => TcpPacket::new_checked(l4).map(|t| (t.src_port(), t.dst_port())),
            proto::UDP => UdpPacket::new_checked(l4).map(|u| (u.src_port(), u.dst_port())),
            _ => Err(Error::UnsupportedProtocol),
        }
    }

    /// The general parser through the checked views, as the oracle for the
    /// fast path and for the chain-aware parser.
    fn slow_ipv4(packet: &[u8]) -> Result<Parsed> {
        let ip = Ipv4Packet::new_checked(packet)?;
        if ip.is_fragment() {
            return Err(Error::Fragment);
        }
        let l4 = ip.payload();
        let (src_port, dst_port) = view_ports(ip.protocol(), l4)?;
        let mut p = Parsed { protocol: ip.protocol(), src_port, dst_port, ..Parsed::default() };
        p.src[..4].copy_from_slice(&ip.src_addr());
        p.dst[..4].copy_from_slice(&ip.dst_addr());
        p.l4_offset = ip.header_len() as u16;
        p.l4_len = l4.len() as u16;
        Ok(p)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Any bytes at all: the IPv6 fast path takes exactly the packets
        /// `parse` accepts with TCP/UDP right after the fixed header, with
        /// the same fields, and never panics.
        #[test]
        fn ipv6_fast_path_equals_general(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..90),
            v6 in any::<bool>(),
            fix_len in any::<bool>(),
            proto in prop_oneof![Just(6u8), Just(17), Just(0), Just(44), any::<u8>()],
            fix_udp_len in any::<bool>(),
            tcp_offset in 0u8..16,
            zero_udp_checksum in any::<bool>(),
        ) {
            if let Some(b) = bytes.first_mut() {
                *b = if v6 { 0x60 | (*b & 0x0f) } else { *b };
            }
            if bytes.len() > 6 {
                bytes[6] = proto;
            }
            if fix_len && bytes.len() >= 40 {
                let n = bytes.len() as u16 - 40;
                bytes[4..6].copy_from_slice(&n.to_be_bytes());
                if fix_udp_len && bytes.len() >= 48 {
                    bytes[44..46].copy_from_slice(&n.to_be_bytes());
                }
                if bytes.len() > 52 {
                    bytes[52] = tcp_offset << 4;
                }
                if zero_udp_checksum && bytes.len() >= 48 {
                    bytes[46..48].fill(0);
                }
            }
            let mut fast = Parsed::default();
            let took = parse_v6_fast_into(&bytes, &mut fast);
            prop_assert_eq!(
                took,
                matches!(parse(&bytes), Ok(p) if p.family == IpFamily::V6 && p.l4_offset == 40),
                "the fast lane takes exactly the packets parse accepts without extension headers"
            );
            if took {
                prop_assert_eq!(Ok(fast), parse(&bytes));
            }
        }

        /// Any bytes at all: the fast path agrees with the general parser,
        /// error for error, and never panics.
        #[test]
        fn ipv4_fast_path_equals_general(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..80),
            ihl5 in any::<bool>(),
            fix_len in any::<bool>(),
            proto in prop_oneof![Just(6u8), Just(17), any::<u8>()],
            fix_udp_len in any::<bool>(),
            frag in 0u8..4,
        ) {
            if let Some(b) = bytes.first_mut() {
                *b = if ihl5 { 0x45 } else { 0x40 | (*b & 0x0f) };
            }
            if bytes.len() > 9 {
                bytes[9] = proto;
                if fix_len {
                    let n = bytes.len() as u16;
                    bytes[2..4].copy_from_slice(&n.to_be_bytes());
                    // Not a fragment (with or without DF), or one: MF set,
                    // or a non-zero offset.
                    (bytes[6], bytes[7]) = match frag {
                        0 => (0, 0),
                        1 => (0x40, 0),
                        2 => (0x20 | (bytes[6] & 0x40), 0),
                        _ => (bytes[6] & 0x5f, bytes[7] | 1),
                    };
                    if fix_udp_len && bytes.len() >= 28 {
                        let n = bytes.len() as u16 - 20;
                        bytes[24..26].copy_from_slice(&n.to_be_bytes());
                    }
                }
            }
            prop_assert_eq!(parse(&bytes), slow_ipv4(&bytes));
            prop_assert_eq!(
                parse_v4_fast(&bytes).is_some(),
                matches!(parse(&bytes), Ok(p) if p.l4_offset == 20),
                "the fast lane takes exactly the option-less packets parse accepts"
            );
            if let Some(f) = parse_v4_fast(&bytes) {
                let p = parse(&bytes).expect("the fast lane only takes what parse accepts");
                prop_assert_eq!(p.l4_offset, 20);
                prop_assert_eq!((p.protocol, &p.src[..4], &p.dst[..4]), (f.protocol, &f.src()[..], &f.dst()[..]));
                prop_assert_eq!((p.src_port, p.dst_port), (f.src_port(), f.dst_port()));
            }
        }

        /// A packet seen only through a first buffer of `head` bytes (its
        /// length the whole chain's) parses exactly as the whole packet,
        /// unless its headers do not fit there: then it says so, and
        /// nothing else.
        #[test]
        fn a_chain_parses_as_the_whole_packet(
            payload in proptest::collection::vec(any::<u8>(), 0..200),
            v6 in any::<bool>(),
            tcp in any::<bool>(),
            head in 0usize..120,
            lie in proptest::option::of((0usize..64, any::<u8>())),
        ) {
            let (family, src, dst): (IpFamily, &[u8], &[u8]) = if v6 {
                (IpFamily::V6, &[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], &[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2])
            } else {
                (IpFamily::V4, &[192, 0, 2, 1], &[192, 0, 2, 2])
            };
            let protocol = if tcp { proto::TCP } else { proto::UDP };
            let mut pkt = build::emit(&build::Spec::new(family, protocol, src, dst, (1000, 80)).payload(&payload));
            // Sometimes a header byte that lies.
            if let Some((at, b)) = lie {
                if at < pkt.len() {
                    pkt[at] = b;
                }
            }
            let whole = parse(&pkt);
            let head = head.min(pkt.len());
            let mut p = Parsed::default();
            match parse_chain_into(&pkt[..head], pkt.len(), &mut p) {
                Ok(()) => prop_assert_eq!(Ok(p), whole),
                Err(Error::SplitHeaders) => {
                    prop_assert!(head < pkt.len());
                    // The whole packet's headers do reach beyond the head
                    // (or it is bad in a way only they show).
                    let l4_min = if tcp { 20 } else { 8 };
                    if let Ok(w) = whole {
                        prop_assert!(usize::from(w.l4_offset) + l4_min > head);
                    }
                }
                Err(e) => prop_assert_eq!(Err(e), whole),
            }
        }
    }
}
