//! The PostgreSQL v3 wire codec: framing, startup packets, and typed views of
//! the frontend and backend messages the proxy needs to look into.
//!
//! Nothing here touches a socket: decoders take a `BytesMut` and return
//! `Ok(None)` when more bytes are needed, encoders append to a `BytesMut`.
//!
//! Hazards: every length on the wire is attacker-controlled. [`frame_len`]
//! refuses lengths below 4 and above the configured limit before any buffer
//! grows, so a client cannot make the proxy allocate a huge buffer by sending
//! a large length prefix; the caller turns [`CodecError`] into an
//! ErrorResponse with SQLSTATE 08P01 and closes that one client.

pub mod backend;
pub mod frontend;
pub mod startup;

pub use backend::{BackendMessage, ErrorInfo};
pub use frontend::FrontendMessage;
pub use startup::StartupMessage;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Limits on message sizes, from the proxy settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest regular message (tag + length + body), bytes.
    pub max_message: usize,
    /// Largest startup packet, bytes.
    pub max_startup: usize,
    /// Largest client message after login (its length word), bytes: the
    /// most a session buffers of one client message.
    pub max_client_message: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message: 1 << 30,
            max_startup: 10_000,
            max_client_message: 16 << 20,
        }
    }
}

/// Why bytes from a peer are not a valid protocol message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("invalid message length {0}")]
    BadLength(i64),
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("unexpected message type 0x{0:02x}")]
    UnknownTag(u8),
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    #[error("unsupported frontend protocol {0}.{1}")]
    UnsupportedProtocol(u16, u16),
}

/// Looks at the header of the regular message starting at `buf[0]`.
///
/// Returns the tag and the total length (tag byte included) once the whole
/// message is in `buf`, `None` while more bytes are needed.
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<(u8, usize)>, CodecError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(CodecError::BadLength(len as i64));
    }
    let total = len as usize + 1;
    if total > max {
        return Err(CodecError::TooLarge { len: total, max });
    }
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((buf[0], total)))
}

/// Splits one whole message off the front of `buf`: `(tag, body)`.
pub fn split_frame(buf: &mut BytesMut, max: usize) -> Result<Option<(u8, Bytes)>, CodecError> {
    let Some((tag, total)) = frame_len(buf, max)? else {
        return Ok(None);
    };
    let mut frame = buf.split_to(total).freeze();
    frame.advance(5);
    Ok(Some((tag, frame)))
}

/// Writes a message header with a placeholder length; returns its position
/// for [`finish_msg`].
pub(crate) fn begin_msg(out: &mut BytesMut, tag: u8) -> usize {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    at
}

/// Fills in the length of the message begun at `at`.
pub(crate) fn finish_msg(out: &mut BytesMut, at: usize) {
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends a NUL-terminated string.
pub(crate) fn put_cstr(out: &mut BytesMut, s: &[u8]) {
    out.put_slice(s);
    out.put_u8(0);
}

/// A cursor over a message body.
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Reader { buf }
    }

    /// The next NUL-terminated string, without its NUL.
    pub(crate) fn cstr(&mut self) -> Result<Bytes, CodecError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(CodecError::Malformed("unterminated string"))?;
        let s = self.buf.split_to(end);
        self.buf.advance(1);
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, CodecError> {
        if self.buf.is_empty() {
            return Err(CodecError::Malformed("message too short"));
        }
        Ok(self.buf.get_u8())
    }

    pub(crate) fn i32(&mut self) -> Result<i32, CodecError> {
        if self.buf.len() < 4 {
            return Err(CodecError::Malformed("message too short"));
        }
        Ok(self.buf.get_i32())
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, CodecError> {
        if self.buf.len() < n {
            return Err(CodecError::Malformed("message too short"));
        }
        Ok(self.buf.split_to(n))
    }

    /// Everything not read yet.
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn finish(&self) -> Result<(), CodecError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(CodecError::Malformed("trailing bytes in message"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_len_rules() {
        assert_eq!(frame_len(b"Q\0\0", 100), Ok(None));
        assert_eq!(
            frame_len(b"Q\0\0\0\x03", 100),
            Err(CodecError::BadLength(3))
        );
        assert_eq!(frame_len(b"S\0\0\0\x04", 100), Ok(Some((b'S', 5))));
        assert_eq!(frame_len(b"Q\0\0\0\x06a", 100), Ok(None));
        assert!(matches!(
            frame_len(b"Q\x7f\0\0\0", 100),
            Err(CodecError::TooLarge { .. })
        ));
        assert_eq!(
            frame_len(b"Q\xff\xff\xff\xff", 100),
            Err(CodecError::BadLength(-1))
        );
    }
}
