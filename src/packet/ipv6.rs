//! IPv6 header view (RFC 8200), with a bounded walk over extension headers.

use super::{be16, proto, Bounds, Error, Result};

pub(crate) mod field {
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: core::ops::Range<usize> = 8..24;
    pub const DST: core::ops::Range<usize> = 24..40;
}

pub const HEADER_LEN: usize = 40;

/// How many extension headers kp walks before giving up: enough for any
/// sane packet, and a bound against crafted chains.
const MAX_EXTENSION_HEADERS: usize = 8;

#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the version and that the fixed header plus `payload_len`
    /// bytes are present (jumbograms, payload length 0, are not supported).
    pub fn check_len(&self) -> Result<()> {
        self.check_len_in(self.buffer.as_ref().len())
    }

    /// [`check_len`](Self::check_len) for a packet of `len` bytes of which
    /// the view holds only the first ones (a buffer chain's head): then
    /// only the fixed header's accessors are safe.
    pub(crate) fn check_len_in(&self, len: usize) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len().min(len) < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(Error::Malformed);
        }
        if len < HEADER_LEN + usize::from(self.payload_len()) {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    pub fn src_addr(&self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        a
    }

    pub fn dst_addr(&self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        a
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }

    /// Walks hop-by-hop, routing and destination-options headers and returns
    /// the upper-layer protocol and its offset from the start of the packet.
    /// A fragment header is reported as [`Error::Fragment`].
    pub fn upper_layer(&self) -> Result<(u8, usize)> {
        let b = self.buffer.as_ref();
        let declared = HEADER_LEN + usize::from(self.payload_len());
        upper_layer(b, self.next_header(), Bounds { declared, head: b.len() })
    }
}

/// [`Ipv6Packet::upper_layer`] over a packet's first buffer `head`, whose
/// extension headers must lie there.
pub(crate) fn upper_layer(head: &[u8], first: u8, bounds: Bounds) -> Result<(u8, usize)> {
    match walk(head, first, bounds)? {
        Walk { fragment: Some(_), .. } => Err(Error::Fragment),
        Walk { protocol, at, .. } => Ok((protocol, at)),
    }
}

/// Where an IPv6 packet's extension headers lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Walk {
    /// The upper-layer protocol, and where its header starts.
    pub protocol: u8,
    pub at: usize,
    /// The fragment header's offset, if there is one. In a fragment that
    /// is not the first, the walk stops after it (what follows is data).
    pub fragment: Option<usize>,
}

/// Walks hop-by-hop, routing, destination-options and fragment headers
/// (at most [`MAX_EXTENSION_HEADERS`]; a longer chain is malformed).
pub(crate) fn walk(head: &[u8], first: u8, bounds: Bounds) -> Result<Walk> {
    let mut next = first;
    let mut at = HEADER_LEN;
    let mut fragment = None;
    for _ in 0..MAX_EXTENSION_HEADERS {
        match next {
            proto::HOP_BY_HOP | proto::ROUTING | proto::DEST_OPTS => {
                bounds.need(at + 8)?;
                next = head[at];
                at += (usize::from(head[at + 1]) + 1) * 8;
                if at > bounds.declared {
                    return Err(Error::Truncated);
                }
            }
            proto::FRAGMENT if fragment.is_none() => {
                bounds.need(at + FRAGMENT_HEADER_LEN)?;
                fragment = Some(at);
                next = head[at];
                let offset = be16(head, at + 2) & !7;
                at += FRAGMENT_HEADER_LEN;
                if offset != 0 {
                    return Ok(Walk { protocol: next, at, fragment });
                }
            }
            // A second fragment header is malformed (RFC 8200 §4.1: at
            // most once).
            proto::FRAGMENT => return Err(Error::Malformed),
            _ => return Ok(Walk { protocol: next, at, fragment }),
        }
    }
    Err(Error::Malformed)
}

/// Length of the IPv6 fragment header.
pub const FRAGMENT_HEADER_LEN: usize = 8;

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    pub fn set_src_addr(&mut self, a: [u8; 16]) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a);
    }

    pub fn set_dst_addr(&mut self, a: [u8; 16]) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        p.push(next);
        p.push(64);
        p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn parses_fields() {
        let p = packet(17, &[0xa5; 8]);
        let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!(ip.payload_len(), 8);
        assert_eq!(ip.next_header(), 17);
        assert_eq!(ip.hop_limit(), 64);
        assert_eq!(ip.src_addr()[15], 1);
        assert_eq!(ip.dst_addr()[15], 2);
        assert_eq!(ip.upper_layer().unwrap(), (17, 40));
    }

    #[test]
    fn walks_extension_headers() {
        // Hop-by-hop (8 bytes) then destination options (16 bytes) then TCP.
        let mut ext = vec![proto::DEST_OPTS, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[6, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        ext.extend_from_slice(&[0; 20]);
        let p = packet(proto::HOP_BY_HOP, &ext);
        let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!(ip.upper_layer().unwrap(), (6, 64));
    }

    #[test]
    fn rejects_bad_chains() {
        let p = packet(proto::FRAGMENT, &[17, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(Ipv6Packet::new_checked(&p[..]).unwrap().upper_layer(), Err(Error::Fragment));
        // Extension header claims more bytes than the payload has.
        let p = packet(proto::HOP_BY_HOP, &[17, 3, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Ipv6Packet::new_checked(&p[..]).unwrap().upper_layer(), Err(Error::Truncated));
        // An endless chain of hop-by-hop headers.
        let p = packet(proto::HOP_BY_HOP, &[0u8; 80]);
        assert_eq!(Ipv6Packet::new_checked(&p[..]).unwrap().upper_layer(), Err(Error::Malformed));
    }

    #[test]
    fn rejects_short_and_wrong_version() {
        let p = packet(17, &[0; 8]);
        assert_eq!(Ipv6Packet::new_checked(&p[..39]).unwrap_err(), Error::Truncated);
        assert_eq!(Ipv6Packet::new_checked(&p[..47]).unwrap_err(), Error::Truncated);
        let mut bad = p;
        bad[0] = 0x40;
        assert_eq!(Ipv6Packet::new_checked(&bad[..]).unwrap_err(), Error::Malformed);
    }
}
