//! IPv4 header view (RFC 791), options included.

use super::{be16, checksum, set_be16, Error, Result};

pub(crate) mod field {
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: core::ops::Range<usize> = 12..16;
    pub const DST: core::ops::Range<usize> = 16..20;
}

/// Length of an IPv4 header without options.
pub const MIN_HEADER_LEN: usize = 20;

const MORE_FRAGMENTS: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps bytes without checking them; see the module's check contract.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps bytes after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the version, that the header (with options) fits, and that
    /// `total_len` lies between the header length and the bytes present.
    /// Trailing bytes beyond `total_len` (Ethernet padding) are allowed and
    /// ignored. Invalidated by `set_header_len`-style changes, which this
    /// view does not offer.
    pub fn check_len(&self) -> Result<()> {
        self.check_len_in(self.buffer.as_ref().len())
    }

    /// [`check_len`](Self::check_len) for a packet of `len` bytes of which
    /// the view holds only the first ones (a buffer chain's head). Only the
    /// fixed header's accessors are then safe: options and payload are
    /// the caller's to check (see [`super::Bounds`]).
    pub(crate) fn check_len_in(&self, len: usize) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len().min(len) < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(Error::Malformed);
        }
        let hlen = self.header_len();
        let total = usize::from(self.total_len());
        if hlen < MIN_HEADER_LEN || total < hlen {
            return Err(Error::Malformed);
        }
        if len < total {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::TOTAL_LEN)
    }

    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// True for any fragment: "more fragments" set or a non-zero offset.
    pub fn is_fragment(&self) -> bool {
        let f = be16(self.buffer.as_ref(), field::FLAGS_FRAG);
        f & (MORE_FRAGMENTS | FRAG_OFFSET_MASK) != 0
    }

    pub fn src_addr(&self) -> [u8; 4] {
        let b = self.buffer.as_ref();
        [b[12], b[13], b[14], b[15]]
    }

    pub fn dst_addr(&self) -> [u8; 4] {
        let b = self.buffer.as_ref();
        [b[16], b[17], b[18], b[19]]
    }

    /// True when the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        let h = &self.buffer.as_ref()[..self.header_len()];
        checksum::fold(checksum::sum(h)) == 0xffff
    }

    /// The IP payload: from the end of the header to `total_len`.
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    pub fn set_src_addr(&mut self, a: [u8; 4]) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a);
    }

    pub fn set_dst_addr(&mut self, a: [u8; 4]) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a);
    }

    pub fn set_checksum(&mut self, c: u16) {
        set_be16(self.buffer.as_mut(), field::CHECKSUM, c);
    }

    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hlen = self.header_len();
        let c = checksum::checksum(&self.buffer.as_ref()[..hlen]);
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: [u8; 20] =
        [0x45, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 10, 0, 0, 1, 10, 0, 0, 2];

    fn packet() -> Vec<u8> {
        let mut p = HEADER.to_vec();
        p.extend_from_slice(&[0xa5; 8]);
        let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
        ip.fill_checksum();
        p
    }

    #[test]
    fn parses_fields() {
        let p = packet();
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert_eq!(ip.header_len(), 20);
        assert_eq!(ip.total_len(), 28);
        assert_eq!(ip.protocol(), 17);
        assert_eq!(ip.src_addr(), [10, 0, 0, 1]);
        assert_eq!(ip.dst_addr(), [10, 0, 0, 2]);
        assert!(ip.verify_checksum());
        assert!(!ip.is_fragment());
        assert_eq!(ip.payload(), &[0xa5; 8]);
    }

    #[test]
    fn rejects_short_and_inconsistent() {
        let p = packet();
        assert_eq!(Ipv4Packet::new_checked(&p[..19]).unwrap_err(), Error::Truncated);
        // total_len says 28, only 27 bytes present.
        assert_eq!(Ipv4Packet::new_checked(&p[..27]).unwrap_err(), Error::Truncated);
        let mut bad = p.clone();
        bad[0] = 0x44; // IHL 4 words < 20 bytes
        assert_eq!(Ipv4Packet::new_checked(&bad[..]).unwrap_err(), Error::Malformed);
        let mut bad = p.clone();
        bad[0] = 0x65; // version 6
        assert_eq!(Ipv4Packet::new_checked(&bad[..]).unwrap_err(), Error::Malformed);
        let mut bad = p.clone();
        bad[3] = 10; // total_len < header_len
        assert_eq!(Ipv4Packet::new_checked(&bad[..]).unwrap_err(), Error::Malformed);
        let mut bad = p;
        bad[0] = 0x4f; // 60-byte header in a 28-byte packet
        assert!(Ipv4Packet::new_checked(&bad[..]).is_err());
    }

    #[test]
    fn options_move_the_payload() {
        let mut p = HEADER.to_vec();
        p[0] = 0x46;
        p[3] = 32;
        p.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
        p.extend_from_slice(&[0x5a; 8]);
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert_eq!(ip.header_len(), 24);
        assert_eq!(ip.payload(), &[0x5a; 8]);
    }

    #[test]
    fn padding_after_total_len_is_ignored() {
        let mut p = packet();
        p.extend_from_slice(&[0; 18]);
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert_eq!(ip.payload().len(), 8);
    }

    #[test]
    fn fragments_are_recognised() {
        let mut p = packet();
        p[6] = 0x20; // MF
        assert!(Ipv4Packet::new_checked(&p[..]).unwrap().is_fragment());
        p[6] = 0x00;
        p[7] = 0x01; // offset 8
        assert!(Ipv4Packet::new_checked(&p[..]).unwrap().is_fragment());
    }
}
