//! Building and verifying whole TCP/UDP packets from scratch.
//!
//! The emit side of the views: used by tests, benches and fuzzing to make
//! packets with correct checksums, and as the independent oracle that a
//! rewritten packet's checksums agree with a computation over every byte.

use super::{checksum, proto, Error, IpFamily, Result};

/// A TCP or UDP packet description.
#[derive(Debug, Clone)]
pub struct Spec<'a> {
    pub family: IpFamily,
    pub protocol: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
    /// IPv4 only: option bytes (a multiple of 4, at most 40).
    pub ipv4_options: &'a [u8],
    /// UDP over IPv4 only: send a zero ("no checksum") UDP checksum.
    pub udp_no_checksum: bool,
    /// TCP only: the flags byte (default ACK|PSH).
    pub tcp_flags: u8,
}

impl<'a> Spec<'a> {
    pub fn new(family: IpFamily, protocol: u8, src: &[u8], dst: &[u8], ports: (u16, u16)) -> Self {
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        s[..src.len()].copy_from_slice(src);
        d[..dst.len()].copy_from_slice(dst);
        Spec {
            family,
            protocol,
            src: s,
            dst: d,
            src_port: ports.0,
            dst_port: ports.1,
            payload: &[],
            ipv4_options: &[],
            udp_no_checksum: false,
            tcp_flags: 0x18,
        }
    }

    pub fn payload(mut self, p: &'a [u8]) -> Self {
        self.payload = p;
        self
    }
}

/// Emits the packet, IP header first, with every checksum filled in.
pub fn emit(spec: &Spec) -> Vec<u8> {
    let l4_hlen = if spec.protocol == proto::TCP { 20 } else { 8 };
    let l4_len = l4_hlen + spec.payload.len();
    let mut p = Vec::with_capacity(60 + l4_len);
    match spec.family {
        IpFamily::V4 => {
            assert!(spec.ipv4_options.len() % 4 == 0 && spec.ipv4_options.len() <= 40);
            let hlen = 20 + spec.ipv4_options.len();
            let total = (hlen + l4_len) as u16;
            p.push(0x40 | (hlen / 4) as u8);
            p.push(0);
            p.extend_from_slice(&total.to_be_bytes());
            p.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, spec.protocol, 0, 0]);
            p.extend_from_slice(&spec.src[..4]);
            p.extend_from_slice(&spec.dst[..4]);
            p.extend_from_slice(spec.ipv4_options);
            let c = checksum::checksum(&p[..hlen]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        IpFamily::V6 => {
            p.extend_from_slice(&[0x60, 0, 0, 0]);
            p.extend_from_slice(&(l4_len as u16).to_be_bytes());
            p.push(spec.protocol);
            p.push(64);
            p.extend_from_slice(&spec.src);
            p.extend_from_slice(&spec.dst);
        }
    }
    let l4_at = p.len();
    p.extend_from_slice(&spec.src_port.to_be_bytes());
    p.extend_from_slice(&spec.dst_port.to_be_bytes());
    if spec.protocol == proto::TCP {
        // seq, ack, data offset 5, flags, window, checksum, urgent
        p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, spec.tcp_flags, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        p.extend_from_slice(&(l4_len as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
    }
    p.extend_from_slice(spec.payload);
    let csum_at = l4_at + if spec.protocol == proto::TCP { 16 } else { 6 };
    if !(spec.protocol == proto::UDP && spec.udp_no_checksum && spec.family == IpFamily::V4) {
        let c = l4_checksum(&p, spec.family, spec.protocol, l4_at).expect("just built");
        let c = if c == 0 && spec.protocol == proto::UDP { 0xffff } else { c };
        p[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// The transport checksum computed from scratch over the pseudo-header and
/// every transport byte, treating the checksum field as zero.
pub fn l4_checksum(pkt: &[u8], family: IpFamily, protocol: u8, l4_at: usize) -> Result<u16> {
    let (pseudo, l4) = match family {
        IpFamily::V4 => {
            let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
            let l4 = pkt.get(l4_at..total).ok_or(Error::Truncated)?;
            let src: [u8; 4] = pkt[12..16].try_into().unwrap();
            let dst: [u8; 4] = pkt[16..20].try_into().unwrap();
            (checksum::pseudo_header_v4(&src, &dst, protocol, l4.len() as u32), l4)
        }
        IpFamily::V6 => {
            let end = 40 + usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
            let l4 = pkt.get(l4_at..end).ok_or(Error::Truncated)?;
            let src: [u8; 16] = pkt[8..24].try_into().unwrap();
            let dst: [u8; 16] = pkt[24..40].try_into().unwrap();
            // (The length from the transport header on: extension headers
            // are not part of the pseudo-header's upper-layer length.)
            (checksum::pseudo_header_v6(&src, &dst, protocol, l4.len() as u32), l4)
        }
    };
    let csum_at = match protocol {
        proto::TCP => 16,
        proto::UDP => 6,
        _ => 2, // ICMP
    };
    let field = u16::from_be_bytes([l4[csum_at], l4[csum_at + 1]]);
    // Sum everything, then take the checksum field back out.
    let s = pseudo + checksum::sum(l4) + u64::from(!field);
    Ok(!checksum::fold(s))
}

/// Verifies from scratch that the IPv4 header checksum (if IPv4) and the
/// TCP/UDP checksum of a packet are right. Returns the reason if not.
pub fn verify(pkt: &[u8]) -> core::result::Result<(), String> {
    let parsed = super::parse(pkt).map_err(|e| e.to_string())?;
    if parsed.family == IpFamily::V4 {
        let hlen = usize::from(pkt[0] & 0xf) * 4;
        let s = checksum::fold(checksum::sum(&pkt[..hlen]));
        if s != 0xffff {
            return Err(format!("bad IPv4 header checksum (sum {s:#06x})"));
        }
    }
    let l4_at = usize::from(parsed.l4_offset);
    let csum_at = l4_at + if parsed.protocol == proto::TCP { 16 } else { 6 };
    let stored = u16::from_be_bytes([pkt[csum_at], pkt[csum_at + 1]]);
    if parsed.protocol == proto::UDP && stored == 0 && parsed.family == IpFamily::V4 {
        return Ok(());
    }
    let mut want = l4_checksum(pkt, parsed.family, parsed.protocol, l4_at).map_err(|e| e.to_string())?;
    if want == 0 && parsed.protocol == proto::UDP {
        want = 0xffff;
    }
    if stored != want {
        return Err(format!("bad L4 checksum: stored {stored:#06x}, computed {want:#06x}"));
    }
    Ok(())
}

/// An ICMP error about `about` (its first 28 bytes, or IPv6's 48), from
/// `from` to `to`, with every checksum right: type/code as given, the
/// 4-byte field (an MTU for "fragmentation needed" / "packet too big").
pub fn icmp_error(
    family: IpFamily,
    from: &[u8],
    to: &[u8],
    icmp_type: u8,
    code: u8,
    mtu: u32,
    about: &[u8],
) -> Vec<u8> {
    let quote = if family == IpFamily::V4 { 28 } else { 48 };
    icmp_error_quoting(family, from, to, (icmp_type, code, mtu), &about[..about.len().min(quote)])
}

/// [`icmp_error`] quoting `quoted` whole (type, code and the 4-byte field
/// in `what`).
pub fn icmp_error_quoting(
    family: IpFamily,
    from: &[u8],
    to: &[u8],
    what: (u8, u8, u32),
    quoted: &[u8],
) -> Vec<u8> {
    let (icmp_type, code, mtu) = what;
    let mut icmp = vec![icmp_type, code, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(quoted);
    let mut pkt = match family {
        IpFamily::V4 => {
            let total = (20 + icmp.len()) as u16;
            let mut h = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, proto::ICMP, 0, 0];
            h[2..4].copy_from_slice(&total.to_be_bytes());
            h.extend_from_slice(from);
            h.extend_from_slice(to);
            let c = checksum::checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            h
        }
        IpFamily::V6 => {
            let mut h = vec![0x60, 0, 0, 0, 0, 0, proto::ICMPV6, 64];
            h[4..6].copy_from_slice(&(icmp.len() as u16).to_be_bytes());
            h.extend_from_slice(from);
            h.extend_from_slice(to);
            h
        }
    };
    let at = pkt.len();
    pkt.extend_from_slice(&icmp);
    fix_icmp_checksum(&mut pkt, at, family);
    pkt
}

pub fn icmp_checksum_of(pkt: &[u8], at: usize, family: IpFamily) -> u16 {
    let mut body = pkt[at..].to_vec();
    body[2..4].copy_from_slice(&[0, 0]);
    let mut sum = checksum::sum(&body);
    if family == IpFamily::V6 {
        sum += checksum::pseudo_header_v6(
            &pkt[8..24].try_into().unwrap(),
            &pkt[24..40].try_into().unwrap(),
            proto::ICMPV6,
            body.len() as u32,
        );
    }
    !checksum::fold(sum)
}

pub fn fix_icmp_checksum(pkt: &mut [u8], at: usize, family: IpFamily) {
    let c = icmp_checksum_of(pkt, at, family);
    pkt[at + 2..at + 4].copy_from_slice(&c.to_be_bytes());
}

/// Checks an ICMP error from scratch: outer IPv4 header checksum, ICMP
/// checksum (with IPv6's pseudo-header), the quoted IPv4 header's checksum.
/// Returns the reason if one is wrong.
pub fn verify_icmp(pkt: &[u8], family: IpFamily) -> core::result::Result<(), String> {
    let at = if family == IpFamily::V4 { 20 } else { 40 };
    if pkt.len() < at + 8 + if family == IpFamily::V4 { 20 } else { 0 } {
        return Err("too short for an ICMP error".into());
    }
    if family == IpFamily::V4 {
        if checksum::checksum(&pkt[..20]) != 0 {
            return Err("outer IPv4 header checksum".into());
        }
        if checksum::checksum(&pkt[at + 8..at + 28]) != 0 {
            return Err("quoted IPv4 header checksum".into());
        }
    }
    if icmp_checksum_of(pkt, at, family) != u16::from_be_bytes([pkt[at + 2], pkt[at + 3]]) {
        return Err("ICMP checksum".into());
    }
    Ok(())
}
