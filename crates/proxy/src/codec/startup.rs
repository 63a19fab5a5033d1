//! Startup-phase packets: StartupMessage, SSLRequest, GSSENCRequest and
//! CancelRequest. They carry no tag byte, only a length and a code.
//!
//! Hazard: the startup packet arrives before authentication, from anyone, so
//! its limit is small (`Limits::max_startup`).

use super::{put_cstr, CodecError, Reader};
use bytes::{Buf, BufMut, Bytes, BytesMut};

const SSL_REQUEST: i32 = 80877103;
const GSSENC_REQUEST: i32 = 80877104;
const CANCEL_REQUEST: i32 = 80877102;
/// Protocol 3.0.
pub const PROTOCOL_3_0: i32 = 196608;

/// One startup-phase packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupMessage {
    SslRequest,
    GssEncRequest,
    CancelRequest {
        pid: i32,
        key: i32,
    },
    /// Protocol version (major << 16 | minor) and the parameters in order.
    Startup {
        version: i32,
        params: Vec<(String, String)>,
    },
}

impl StartupMessage {
    /// Splits and parses one packet off `buf`; `Ok(None)` = need more bytes.
    pub fn decode(buf: &mut BytesMut, max: usize) -> Result<Option<Self>, CodecError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if len < 8 {
            return Err(CodecError::BadLength(len as i64));
        }
        if len as usize > max {
            return Err(CodecError::TooLarge {
                len: len as usize,
                max,
            });
        }
        if buf.len() < len as usize {
            return Ok(None);
        }
        let mut body = buf.split_to(len as usize).freeze();
        body.advance(4);
        Self::parse(body).map(Some)
    }

    fn parse(body: Bytes) -> Result<Self, CodecError> {
        let mut r = Reader::new(body);
        let code = r.i32()?;
        let msg = match code {
            SSL_REQUEST => StartupMessage::SslRequest,
            GSSENC_REQUEST => StartupMessage::GssEncRequest,
            CANCEL_REQUEST => StartupMessage::CancelRequest {
                pid: r.i32()?,
                key: r.i32()?,
            },
            version if version >> 16 == 3 => StartupMessage::Startup {
                version,
                params: params(&mut r)?,
            },
            version => {
                return Err(CodecError::UnsupportedProtocol(
                    (version >> 16) as u16,
                    version as u16,
                ));
            }
        };
        r.finish()?;
        Ok(msg)
    }

    /// Appends the wire form.
    pub fn encode(&self, out: &mut BytesMut) {
        let at = out.len();
        out.put_i32(0);
        match self {
            StartupMessage::SslRequest => out.put_i32(SSL_REQUEST),
            StartupMessage::GssEncRequest => out.put_i32(GSSENC_REQUEST),
            StartupMessage::CancelRequest { pid, key } => {
                out.put_i32(CANCEL_REQUEST);
                out.put_i32(*pid);
                out.put_i32(*key);
            }
            StartupMessage::Startup { version, params } => {
                out.put_i32(*version);
                for (k, v) in params {
                    put_cstr(out, k.as_bytes());
                    put_cstr(out, v.as_bytes());
                }
                out.put_u8(0);
            }
        }
        let len = (out.len() - at) as i32;
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
}

fn params(r: &mut Reader) -> Result<Vec<(String, String)>, CodecError> {
    let mut out = Vec::new();
    loop {
        let k = r.cstr()?;
        if k.is_empty() {
            return Ok(out);
        }
        let v = r.cstr()?;
        let k = String::from_utf8(k.to_vec())
            .map_err(|_| CodecError::Malformed("parameter name is not UTF-8"))?;
        let v = String::from_utf8(v.to_vec())
            .map_err(|_| CodecError::Malformed("parameter value is not UTF-8"))?;
        out.push((k, v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_packet() {
        let all = vec![
            StartupMessage::SslRequest,
            StartupMessage::GssEncRequest,
            StartupMessage::CancelRequest { pid: 42, key: -7 },
            StartupMessage::Startup {
                version: PROTOCOL_3_0,
                params: vec![
                    ("user".into(), "alice".into()),
                    ("database".into(), "db".into()),
                ],
            },
        ];
        for msg in all {
            let mut buf = BytesMut::new();
            msg.encode(&mut buf);
            let wire = buf.clone();
            for cut in 0..wire.len() {
                let mut part = BytesMut::from(&wire[..cut]);
                assert_eq!(StartupMessage::decode(&mut part, 10_000), Ok(None));
            }
            let back = StartupMessage::decode(&mut buf, 10_000).unwrap().unwrap();
            assert_eq!(back, msg);
            let mut again = BytesMut::new();
            back.encode(&mut again);
            assert_eq!(again, wire);
        }
    }

    #[test]
    fn bad_packets() {
        let mut huge = BytesMut::from(&[0x7f, 0, 0, 0][..]);
        assert!(matches!(
            StartupMessage::decode(&mut huge, 10_000),
            Err(CodecError::TooLarge { .. })
        ));
        let mut v2 = BytesMut::from(&[0, 0, 0, 8, 0, 2, 0, 0][..]);
        assert_eq!(
            StartupMessage::decode(&mut v2, 10_000),
            Err(CodecError::UnsupportedProtocol(2, 0))
        );
        let mut unterminated =
            BytesMut::from(&[0, 0, 0, 12, 0, 3, 0, 0, b'u', b's', b'e', b'r'][..]);
        assert!(StartupMessage::decode(&mut unterminated, 10_000).is_err());
    }
}
