//! Postgres wire-format types and framing. No I/O, no routing, no config.
//!
//! Messages are kept as raw frames (tag, length, body) and forwarded untouched; only the messages
//! shardgate must understand get a type: [`frontend`] for what clients send, [`backend`] for what
//! servers send and what shardgate synthesizes, [`startup`] for the untagged startup-phase packets.
//! Client→server and server→client messages are different modules because the same tag letter
//! means different things in each direction.

pub mod backend;
pub mod error;
pub mod frontend;
pub mod startup;

pub use error::{PgError, ProtocolError, SqlState};

/// Length of a tagged message header: one tag byte and a four-byte length that counts itself.
pub const HEADER_LEN: usize = 5;

/// Where one complete tagged message sits at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub tag: u8,
    /// Whole message length, tag byte included.
    pub total_len: usize,
}

impl FrameHeader {
    /// The message body (after the length word) within a buffer that starts with this frame.
    pub fn body<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[HEADER_LEN..self.total_len]
    }
}

/// Reads the header of the first tagged message in `buf`.
///
/// `Ok(None)` when the header or body is not complete yet. The length is checked against `max_len`
/// before anything is buffered, so a peer cannot make us hold a message larger than the cap.
pub fn peek_frame(buf: &[u8], max_len: usize) -> Result<Option<FrameHeader>, ProtocolError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let tag = buf[0];
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(ProtocolError::BadLength { tag, len });
    }
    let len = len as usize;
    if len > max_len {
        return Err(ProtocolError::TooLarge {
            tag,
            len,
            max: max_len,
        });
    }
    let total_len = len + 1;
    if buf.len() < total_len {
        return Ok(None);
    }
    Ok(Some(FrameHeader { tag, total_len }))
}

/// A bounds-checked reader over a message body. Every read says what was malformed.
pub struct Reader<'a> {
    buf: &'a [u8],
    tag: u8,
}

impl<'a> Reader<'a> {
    pub fn new(tag: u8, buf: &'a [u8]) -> Self {
        Reader { buf, tag }
    }

    fn malformed(&self, what: &'static str) -> ProtocolError {
        ProtocolError::Malformed {
            tag: self.tag,
            what,
        }
    }

    pub fn cstr(&mut self, what: &'static str) -> Result<&'a str, ProtocolError> {
        let bytes = self.cbytes(what)?;
        std::str::from_utf8(bytes).map_err(|_| self.malformed(what))
    }

    pub fn cbytes(&mut self, what: &'static str) -> Result<&'a [u8], ProtocolError> {
        // memchr: every query's text is scanned here, a word at a time rather than a byte. Most
        // names are empty (the unnamed statement and portal, several per extended query), and
        // memchr's set-up costs more than the one byte they need.
        let end = match self.buf.first() {
            Some(0) => 0,
            _ => memchr::memchr(0, self.buf).ok_or_else(|| self.malformed(what))?,
        };
        let s = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, ProtocolError> {
        let (&b, rest) = self.buf.split_first().ok_or_else(|| self.malformed(what))?;
        self.buf = rest;
        Ok(b)
    }

    pub fn i16(&mut self, what: &'static str) -> Result<i16, ProtocolError> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub fn i32(&mut self, what: &'static str) -> Result<i32, ProtocolError> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ProtocolError> {
        if self.buf.len() < n {
            return Err(self.malformed(what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// How many bytes are left unread.
    pub fn rest_len(&self) -> usize {
        self.buf.len()
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub fn finish(&self, what: &'static str) -> Result<(), ProtocolError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.malformed(what))
        }
    }
}

/// Writes a tagged message: the length is written as a placeholder and patched once the body is in.
pub fn write_message(out: &mut bytes::BytesMut, tag: u8, body: impl FnOnce(&mut bytes::BytesMut)) {
    use bytes::BufMut;
    out.put_u8(tag);
    let len_at = out.len();
    out.put_i32(0);
    body(out);
    let len = (out.len() - len_at) as i32;
    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn put_cstr(out: &mut bytes::BytesMut, s: &[u8]) {
    use bytes::BufMut;
    out.put_slice(s);
    out.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_header_and_body_wait_for_more() {
        assert_eq!(peek_frame(b"Q\0\0", 100).unwrap(), None);
        assert_eq!(peek_frame(b"Q\0\0\0\x09SEL", 100).unwrap(), None);
        let h = peek_frame(b"Q\0\0\0\x09SELE\0rest", 100).unwrap().unwrap();
        assert_eq!(
            h,
            FrameHeader {
                tag: b'Q',
                total_len: 10
            }
        );
        assert_eq!(h.body(b"Q\0\0\0\x09SELE\0rest"), b"SELE\0");
    }

    #[test]
    fn oversized_and_negative_lengths_are_refused_before_buffering() {
        let err = peek_frame(b"Q\x7f\0\0\0", 1024).unwrap_err();
        assert_eq!(
            err.to_string(),
            "message 'Q' of 2130706432 bytes exceeds the limit of 1024 bytes"
        );
        let err = peek_frame(b"Q\0\0\0\x02", 1024).unwrap_err();
        assert_eq!(err.to_string(), "message 'Q' has an invalid length 2");
    }
}
