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
pub mod ipv4;
pub mod ipv6;
pub mod l4;

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
    /// An IP fragment: ports are not in every fragment, so kp cannot
    /// translate it (VPP's reassembly feature can sit in front).
    Fragment,
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
    match packet.first().map(|b| b >> 4) {
        Some(4) => parse_ipv4_into(packet, out),
        Some(6) => {
            *out = parse_ipv6(packet)?;
            Ok(())
        }
        Some(_) => Err(Error::Malformed),
        None => Err(Error::Truncated),
    }
}

#[inline(always)]
fn parse_ipv4_into(packet: &[u8], out: &mut Parsed) -> Result<()> {
    // The common case first (no options, not a fragment, a good TCP/UDP
    // header): the data path's fast lane parser.
    if let Some(f) = parse_v4_fast(packet) {
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
    let ip = Ipv4Packet::new_checked(packet)?;
    if ip.is_fragment() {
        return Err(Error::Fragment);
    }
    let protocol = ip.protocol();
    let l4_offset = ip.header_len();
    let l4 = ip.payload();
    let (src_port, dst_port) = ports(protocol, l4, IpFamily::V4)?;
    out.family = IpFamily::V4;
    out.protocol = protocol;
    out.src = [0; 16];
    out.dst = [0; 16];
    out.src[..4].copy_from_slice(&ip.src_addr());
    out.dst[..4].copy_from_slice(&ip.dst_addr());
    out.src_port = src_port;
    out.dst_port = dst_port;
    out.l4_offset = l4_offset as u16;
    out.l4_len = l4.len() as u16;
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

#[inline]
pub fn parse_ipv6(packet: &[u8]) -> Result<Parsed> {
    let ip = Ipv6Packet::new_checked(packet)?;
    let (protocol, l4_offset) = ip.upper_layer()?;
    let end = ipv6::HEADER_LEN + usize::from(ip.payload_len());
    let l4 = &packet[l4_offset..end];
    let (src_port, dst_port) = ports(protocol, l4, IpFamily::V6)?;
    Ok(Parsed {
        family: IpFamily::V6,
        protocol,
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        src_port,
        dst_port,
        l4_offset: l4_offset as u16,
        l4_len: l4.len() as u16,
    })
}

#[inline]
fn ports(protocol: u8, l4: &[u8], family: IpFamily) -> Result<(u16, u16)> {
    match protocol {
        proto::TCP => {
            let tcp = TcpPacket::new_checked(l4)?;
            Ok((tcp.src_port(), tcp.dst_port()))
        }
        proto::UDP => {
            let udp = UdpPacket::new_checked(l4)?;
            if family == IpFamily::V6 && udp.checksum() == 0 {
                return Err(Error::ZeroUdpChecksumV6);
            }
            Ok((udp.src_port(), udp.dst_port()))
        }
        _ => Err(Error::UnsupportedProtocol),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The general parser (through the checked views), as the oracle for
    /// the fast path.
    fn slow_ipv4(packet: &[u8]) -> Result<Parsed> {
        let ip = Ipv4Packet::new_checked(packet)?;
        if ip.is_fragment() {
            return Err(Error::Fragment);
        }
        let l4 = ip.payload();
        let (src_port, dst_port) = ports(ip.protocol(), l4, IpFamily::V4)?;
        let mut p = Parsed { protocol: ip.protocol(), src_port, dst_port, ..Parsed::default() };
        p.src[..4].copy_from_slice(&ip.src_addr());
        p.dst[..4].copy_from_slice(&ip.dst_addr());
        p.l4_offset = ip.header_len() as u16;
        p.l4_len = l4.len() as u16;
        Ok(p)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

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
    }
}
