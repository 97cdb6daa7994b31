//! TCP, UDP and ICMP/ICMPv6 header views.

use super::{be16, set_be16, Error, Result};

pub(crate) mod tcp_field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const CHECKSUM: usize = 16;
}

pub const TCP_MIN_HEADER_LEN: usize = 20;

/// TCP flag bits (in the byte at `tcp_field::FLAGS`).
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

/// Whether a packet whose TCP header (if `protocol` is TCP) starts at
/// `l4` can establish its flow: anything but a SYN without ACK (a
/// connection attempt, answered or not, says nothing about the pod).
#[inline(always)]
pub fn establishes(packet: &[u8], protocol: u8, l4: usize) -> bool {
    protocol != super::proto::TCP
        || packet.get(l4 + tcp_field::FLAGS).is_none_or(|f| f & (TCP_SYN | TCP_ACK) != TCP_SYN)
}

/// A TCP segment view (RFC 9293).
#[derive(Debug, Clone)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Checks that the header, options included, fits in the segment.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        let b = p.buffer.as_ref();
        if b.len() < TCP_MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hlen = p.header_len();
        if hlen < TCP_MIN_HEADER_LEN {
            return Err(Error::Malformed);
        }
        if hlen > b.len() {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), tcp_field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), tcp_field::DST_PORT)
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[tcp_field::DATA_OFFSET] >> 4) * 4
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), tcp_field::CHECKSUM)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    pub fn set_src_port(&mut self, p: u16) {
        set_be16(self.buffer.as_mut(), tcp_field::SRC_PORT, p);
    }

    pub fn set_dst_port(&mut self, p: u16) {
        set_be16(self.buffer.as_mut(), tcp_field::DST_PORT, p);
    }

    pub fn set_checksum(&mut self, c: u16) {
        set_be16(self.buffer.as_mut(), tcp_field::CHECKSUM, c);
    }
}

pub(crate) mod udp_field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

pub const UDP_HEADER_LEN: usize = 8;

/// A UDP datagram view (RFC 768).
#[derive(Debug, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Checks the header fits and the length field agrees with the bytes
    /// the IP header gave it (at least 8, at most what is there).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        let b = p.buffer.as_ref();
        if b.len() < UDP_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(p.len());
        if len < UDP_HEADER_LEN || len > b.len() {
            return Err(Error::Malformed);
        }
        Ok(p)
    }

    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), udp_field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), udp_field::DST_PORT)
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), udp_field::LENGTH)
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), udp_field::CHECKSUM)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    pub fn set_src_port(&mut self, p: u16) {
        set_be16(self.buffer.as_mut(), udp_field::SRC_PORT, p);
    }

    pub fn set_dst_port(&mut self, p: u16) {
        set_be16(self.buffer.as_mut(), udp_field::DST_PORT, p);
    }

    pub fn set_checksum(&mut self, c: u16) {
        set_be16(self.buffer.as_mut(), udp_field::CHECKSUM, c);
    }
}

mod icmp_field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const IDENT: usize = 4;
    pub const SEQ: usize = 6;
}

pub const ICMP_HEADER_LEN: usize = 8;

/// ICMP (RFC 792) and ICMPv6 (RFC 4443) share this 8-byte header layout;
/// they differ in type numbers and in whether a pseudo-header is summed.
#[derive(Debug, Clone)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        IcmpPacket { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        if p.buffer.as_ref().len() < ICMP_HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[icmp_field::TYPE]
    }

    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[icmp_field::CODE]
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), icmp_field::CHECKSUM)
    }

    /// Echo identifier (meaningful for echo request/reply only).
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), icmp_field::IDENT)
    }

    pub fn echo_seq(&self) -> u16 {
        be16(self.buffer.as_ref(), icmp_field::SEQ)
    }

    /// For error messages: the embedded original packet.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[ICMP_HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    pub fn set_checksum(&mut self, c: u16) {
        set_be16(self.buffer.as_mut(), icmp_field::CHECKSUM, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_header_length_is_checked() {
        let mut seg = [0u8; 24];
        seg[12] = 6 << 4; // 24-byte header: fits
        assert_eq!(TcpPacket::new_checked(&seg[..]).unwrap().header_len(), 24);
        seg[12] = 7 << 4; // 28 bytes: does not
        assert_eq!(TcpPacket::new_checked(&seg[..]).unwrap_err(), Error::Truncated);
        seg[12] = 4 << 4; // below the minimum
        assert_eq!(TcpPacket::new_checked(&seg[..]).unwrap_err(), Error::Malformed);
        assert_eq!(TcpPacket::new_checked(&seg[..19]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn tcp_ports_round_trip() {
        let mut seg = [0xa5u8; 20];
        seg[12] = 5 << 4;
        let mut tcp = TcpPacket::new_checked(&mut seg[..]).unwrap();
        tcp.set_src_port(1234);
        tcp.set_dst_port(80);
        tcp.set_checksum(0xbeef);
        assert_eq!((tcp.src_port(), tcp.dst_port(), tcp.checksum()), (1234, 80, 0xbeef));
        assert_eq!(&seg[..4], &[0x04, 0xd2, 0x00, 0x50]);
    }

    #[test]
    fn udp_length_is_checked() {
        let mut d = [0u8; 12];
        d[5] = 12;
        assert_eq!(UdpPacket::new_checked(&d[..]).unwrap().len(), 12);
        d[5] = 13;
        assert_eq!(UdpPacket::new_checked(&d[..]).unwrap_err(), Error::Malformed);
        d[5] = 7;
        assert_eq!(UdpPacket::new_checked(&d[..]).unwrap_err(), Error::Malformed);
        assert_eq!(UdpPacket::new_checked(&d[..7]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn icmp_fields() {
        let m = [8u8, 0, 0x12, 0x34, 0, 7, 0, 9, 0xaa];
        let icmp = IcmpPacket::new_checked(&m[..]).unwrap();
        assert_eq!((icmp.msg_type(), icmp.code(), icmp.checksum()), (8, 0, 0x1234));
        assert_eq!((icmp.echo_ident(), icmp.echo_seq()), (7, 9));
        assert_eq!(icmp.payload(), &[0xaa]);
        assert_eq!(IcmpPacket::new_checked(&m[..7]).unwrap_err(), Error::Truncated);
    }
}
