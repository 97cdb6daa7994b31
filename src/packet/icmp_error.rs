//! ICMP and ICMPv6 error messages about a TCP/UDP packet (RFC 792, RFC
//! 4443): destination unreachable (fragmentation needed included), packet
//! too big, time exceeded, parameter problem. They carry the start of the
//! packet they are about; translating one means translating that packet
//! (its addresses, its ports) as well as the outer header, so that the
//! host that sent the packet recognises its own flow (PMTUD depends on it).

use super::{be16, ipv6, proto, Bounds, Error, IpFamily, Result};

/// Where the parts of an ICMP error sit, and what it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpError {
    pub family: IpFamily,
    /// The outer addresses (IPv4 in the first four bytes).
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Offset of the ICMP header.
    pub icmp_at: usize,
    /// Offset of the embedded IP header and of its transport header.
    pub inner_at: usize,
    pub inner_l4_at: usize,
    /// The embedded packet's TCP or UDP, addresses and ports.
    pub protocol: u8,
    pub inner_src: [u8; 16],
    pub inner_dst: [u8; 16],
    pub inner_src_port: u16,
    pub inner_dst_port: u16,
    /// The ICMP message ends here (the packet's IP length).
    pub end: usize,
}

impl IcmpError {
    /// The quoted packet's flow in the other direction (addresses and
    /// ports swapped): the packet that answers the quoted one.
    pub fn quoted_reversed(&self) -> super::Parsed {
        super::Parsed {
            family: self.family,
            protocol: self.protocol,
            src: self.inner_dst,
            dst: self.inner_src,
            src_port: self.inner_dst_port,
            dst_port: self.inner_src_port,
            l4_offset: 0,
            l4_len: 0,
        }
    }
}

fn is_error(family: IpFamily, icmp_type: u8) -> bool {
    match family {
        // Destination unreachable, time exceeded, parameter problem.
        IpFamily::V4 => matches!(icmp_type, 3 | 11 | 12),
        // Destination unreachable, packet too big, time exceeded,
        // parameter problem.
        IpFamily::V6 => matches!(icmp_type, 1..=4),
    }
}

/// Parses an ICMP error whose embedded packet is TCP or UDP. The whole
/// message must be in `head` (kp recomputes its checksum); anything else
/// is an error (`UnsupportedProtocol` for ICMP that is not such an error).
pub fn parse(head: &[u8], len: usize) -> Result<IcmpError> {
    if len > head.len() {
        return Err(Error::SplitHeaders);
    }
    let (family, src, dst, icmp_at, end) = match head.first().map(|b| b >> 4) {
        Some(4) => {
            let ip = super::Ipv4Packet::new_checked(head)?;
            if ip.protocol() != proto::ICMP || ip.is_fragment() {
                return Err(Error::UnsupportedProtocol);
            }
            let mut s = [0; 16];
            let mut d = [0; 16];
            s[..4].copy_from_slice(&ip.src_addr());
            d[..4].copy_from_slice(&ip.dst_addr());
            (IpFamily::V4, s, d, ip.header_len(), usize::from(ip.total_len()))
        }
        Some(6) => {
            let ip = super::Ipv6Packet::new_checked(head)?;
            let end = ipv6::HEADER_LEN + usize::from(ip.payload_len());
            let w = ipv6::walk(head, ip.next_header(), Bounds { declared: end, head: head.len() })?;
            if w.protocol != proto::ICMPV6 || w.fragment.is_some() {
                return Err(Error::UnsupportedProtocol);
            }
            (IpFamily::V6, ip.src_addr(), ip.dst_addr(), w.at, end)
        }
        Some(_) => return Err(Error::Malformed),
        None => return Err(Error::Truncated),
    };
    let bounds = Bounds { declared: end, head: head.len() };
    bounds.need(icmp_at + 8)?;
    if !is_error(family, head[icmp_at]) {
        return Err(Error::UnsupportedProtocol);
    }
    // The embedded packet: an IP header of the same family, then (at
    // least) the transport header's first 8 bytes, which hold the ports.
    let inner_at = icmp_at + 8;
    let inner = &head[inner_at..end];
    let (protocol, inner_src, inner_dst, l4) = match family {
        IpFamily::V4 => {
            bounds.need(inner_at + 20)?;
            let hlen = usize::from(inner[0] & 0x0f) * 4;
            if inner[0] >> 4 != 4 || hlen < 20 {
                return Err(Error::Malformed);
            }
            let (mut s, mut d) = ([0; 16], [0; 16]);
            s[..4].copy_from_slice(&inner[12..16]);
            d[..4].copy_from_slice(&inner[16..20]);
            // Only a first fragment (or a whole packet) has ports.
            if be16(inner, 6) & 0x1fff != 0 {
                return Err(Error::Fragment);
            }
            (inner[9], s, d, inner_at + hlen)
        }
        IpFamily::V6 => {
            bounds.need(inner_at + ipv6::HEADER_LEN)?;
            if inner[0] >> 4 != 6 {
                return Err(Error::Malformed);
            }
            // The embedded packet is cut short: walk what is there.
            let w = ipv6::walk(inner, inner[6], Bounds { declared: inner.len(), head: inner.len() })?;
            if w.fragment.is_some() {
                let at = w.fragment.unwrap_or(0);
                if be16(inner, at + 2) & !7 != 0 {
                    return Err(Error::Fragment);
                }
            }
            let s: [u8; 16] = inner[8..24].try_into().unwrap();
            let d: [u8; 16] = inner[24..40].try_into().unwrap();
            (w.protocol, s, d, inner_at + w.at)
        }
    };
    if protocol != proto::TCP && protocol != proto::UDP {
        return Err(Error::UnsupportedProtocol);
    }
    bounds.need(l4 + 8)?;
    Ok(IcmpError {
        family,
        src,
        dst,
        icmp_at,
        inner_at,
        inner_l4_at: l4,
        protocol,
        inner_src,
        inner_dst,
        inner_src_port: be16(head, l4),
        inner_dst_port: be16(head, l4 + 2),
        end,
    })
}
