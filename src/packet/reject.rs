//! What a Service without endpoints answers, as kube-proxy's REJECT does:
//! a TCP reset for TCP, ICMP "port unreachable" for UDP. Both are built in
//! the offending packet's own buffer, addressed back to its sender, from
//! the address and port it was sent to.

use super::{checksum, ipv4, ipv6, proto, set_be16, IpFamily, Parsed};

/// How many bytes of the offending packet an ICMP error quotes: as many as
/// fit in the minimum MTU (RFC 1812 §4.3.2.3: 576 bytes in all for IPv4;
/// RFC 4443 §2.4(c): 1280 for IPv6).
pub fn icmp_quote_len(family: IpFamily, len: usize) -> usize {
    len.min(match family {
        IpFamily::V4 => 576 - 28,
        IpFamily::V6 => 1280 - 48,
    })
}

/// Bytes an ICMP error puts in front of the quoted packet.
pub fn icmp_header_len(family: IpFamily) -> usize {
    match family {
        IpFamily::V4 => 28,
        IpFamily::V6 => 48,
    }
}

fn ip_header(pkt: &mut [u8], family: IpFamily, src: &[u8; 16], dst: &[u8; 16], protocol: u8, len: usize) {
    match family {
        IpFamily::V4 => {
            let h = &mut pkt[..ipv4::MIN_HEADER_LEN];
            h.fill(0);
            h[0] = 0x45;
            set_be16(h, ipv4::field::TOTAL_LEN, len as u16);
            h[ipv4::field::TTL] = 64;
            h[ipv4::field::PROTOCOL] = protocol;
            h[ipv4::field::SRC].copy_from_slice(&src[..4]);
            h[ipv4::field::DST].copy_from_slice(&dst[..4]);
            let c = checksum::checksum(h);
            set_be16(h, ipv4::field::CHECKSUM, c);
        }
        IpFamily::V6 => {
            let h = &mut pkt[..ipv6::HEADER_LEN];
            h.fill(0);
            h[0] = 0x60;
            set_be16(h, ipv6::field::PAYLOAD_LEN, (len - ipv6::HEADER_LEN) as u16);
            h[ipv6::field::NEXT_HEADER] = protocol;
            h[ipv6::field::HOP_LIMIT] = 64;
            h[ipv6::field::SRC].copy_from_slice(src);
            h[ipv6::field::DST].copy_from_slice(dst);
        }
    }
}

fn pseudo(family: IpFamily, src: &[u8; 16], dst: &[u8; 16], protocol: u8, len: u32) -> u64 {
    match family {
        IpFamily::V4 => checksum::pseudo_header_v4(
            &src[..4].try_into().unwrap(),
            &dst[..4].try_into().unwrap(),
            protocol,
            len,
        ),
        IpFamily::V6 => checksum::pseudo_header_v6(src, dst, protocol, len),
    }
}

/// Rewrites the TCP segment `p` describes (in `pkt`) into the reset that
/// answers it (RFC 9293 §3.10.7.1): from its destination to its source,
/// no options, no data. Returns the reset's length (`pkt` must be at least
/// that long: the segment's own headers are). `None` for a segment that
/// is itself a reset (never answered).
pub fn tcp_reset(pkt: &mut [u8], p: &Parsed) -> Option<usize> {
    let at = usize::from(p.l4_offset);
    let hlen = match p.family {
        IpFamily::V4 => ipv4::MIN_HEADER_LEN,
        IpFamily::V6 => ipv6::HEADER_LEN,
    };
    let tcp = &pkt[at..at + 20];
    let flags = tcp[13];
    if flags & 0x04 != 0 {
        return None;
    }
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    let data_offset = usize::from(tcp[12] >> 4) * 4;
    // The segment's length in sequence space: data, SYN and FIN.
    let seg_len = usize::from(p.l4_len).saturating_sub(data_offset) as u32
        + u32::from(flags & 0x02 != 0)
        + u32::from(flags & 0x01 != 0);
    let (rst_seq, rst_ack, rst_flags) =
        if flags & 0x10 != 0 { (ack, 0, 0x04) } else { (0, seq.wrapping_add(seg_len), 0x14) };
    let len = hlen + 20;
    let mut seg = [0u8; 20];
    seg[0..2].copy_from_slice(&p.dst_port.to_be_bytes());
    seg[2..4].copy_from_slice(&p.src_port.to_be_bytes());
    seg[4..8].copy_from_slice(&rst_seq.to_be_bytes());
    seg[8..12].copy_from_slice(&rst_ack.to_be_bytes());
    seg[12] = 5 << 4;
    seg[13] = rst_flags;
    let c = !checksum::fold(pseudo(p.family, &p.dst, &p.src, proto::TCP, 20) + checksum::sum(&seg));
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    ip_header(pkt, p.family, &p.dst, &p.src, proto::TCP, len);
    pkt[hlen..len].copy_from_slice(&seg);
    Some(len)
}

/// Writes ICMP "port unreachable" about the packet `p` describes, into
/// `pkt`, where that packet's first bytes already follow
/// [`icmp_header_len`] bytes of room and `pkt` ends where the quote does.
pub fn port_unreachable(pkt: &mut [u8], p: &Parsed) {
    let family = p.family;
    let hlen = icmp_header_len(family) - 8;
    let len = pkt.len();
    ip_header(
        pkt,
        family,
        &p.dst,
        &p.src,
        if family == IpFamily::V4 { proto::ICMP } else { proto::ICMPV6 },
        len,
    );
    let icmp = &mut pkt[hlen..];
    icmp[..8].fill(0);
    // Destination unreachable, port unreachable.
    (icmp[0], icmp[1]) = match family {
        IpFamily::V4 => (3, 3),
        IpFamily::V6 => (1, 4),
    };
    let mut sum = checksum::sum(icmp);
    if family == IpFamily::V6 {
        sum += pseudo(family, &p.dst, &p.src, proto::ICMPV6, icmp.len() as u32);
    }
    let c = !checksum::fold(sum);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
}
