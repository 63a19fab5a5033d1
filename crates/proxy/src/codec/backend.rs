//! Backend (server to client) messages: typed views of those the proxy acts
//! on, `Other` for everything it only passes through.
//!
//! Hazard: error fields are not guaranteed UTF-8 (they follow the server
//! encoding); helpers return bytes and callers compare bytes.

use super::{begin_msg, finish_msg, put_cstr, split_frame, CodecError, Reader};
use bytes::{BufMut, Bytes, BytesMut};

/// Authentication request variants ('R').
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    Ok,
    CleartextPassword,
    Md5Password {
        salt: [u8; 4],
    },
    Sasl {
        mechanisms: Vec<Bytes>,
    },
    SaslContinue(Bytes),
    SaslFinal(Bytes),
    /// Kerberos, GSS, SSPI ...: unsupported, kept for the error message.
    Other {
        code: i32,
        data: Bytes,
    },
}

/// One backend message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendMessage {
    Authentication(Authentication),
    ParameterStatus {
        name: Bytes,
        value: Bytes,
    },
    BackendKeyData {
        pid: i32,
        key: i32,
    },
    /// 'Z' with the transaction status: b'I', b'T' or b'E'.
    ReadyForQuery {
        status: u8,
    },
    /// 'E': raw field list (each field: code byte, cstring; then a 0).
    ErrorResponse(Bytes),
    /// 'N': raw field list.
    NoticeResponse(Bytes),
    /// 'v': newest minor version supported and unrecognized options.
    NegotiateProtocolVersion {
        minor: i32,
        options: Vec<Bytes>,
    },
    /// Any other message, passed through untouched.
    Other {
        tag: u8,
        body: Bytes,
    },
}

impl BackendMessage {
    /// Splits and parses one message off `buf`; `Ok(None)` = need more bytes.
    pub fn decode(buf: &mut BytesMut, max: usize) -> Result<Option<Self>, CodecError> {
        match split_frame(buf, max)? {
            Some((tag, body)) => Self::parse(tag, body).map(Some),
            None => Ok(None),
        }
    }

    /// Parses a message body of type `tag`.
    pub fn parse(tag: u8, body: Bytes) -> Result<Self, CodecError> {
        let mut r = Reader::new(body);
        let msg = match tag {
            b'R' => BackendMessage::Authentication(parse_auth(&mut r)?),
            b'S' => BackendMessage::ParameterStatus {
                name: r.cstr()?,
                value: r.cstr()?,
            },
            b'K' => BackendMessage::BackendKeyData {
                pid: r.i32()?,
                key: r.i32()?,
            },
            b'Z' => BackendMessage::ReadyForQuery { status: r.u8()? },
            b'E' => BackendMessage::ErrorResponse(r.rest()),
            b'N' => BackendMessage::NoticeResponse(r.rest()),
            b'v' => {
                let minor = r.i32()?;
                let n = r.i32()?;
                if n < 0 {
                    return Err(CodecError::Malformed(
                        "negative option count in NegotiateProtocolVersion",
                    ));
                }
                let mut options = Vec::new();
                for _ in 0..n {
                    options.push(r.cstr()?);
                }
                BackendMessage::NegotiateProtocolVersion { minor, options }
            }
            tag => BackendMessage::Other {
                tag,
                body: r.rest(),
            },
        };
        r.finish()?;
        Ok(msg)
    }

    /// Appends the wire form.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            BackendMessage::Authentication(a) => encode_auth(a, out),
            BackendMessage::ParameterStatus { name, value } => {
                let at = begin_msg(out, b'S');
                put_cstr(out, name);
                put_cstr(out, value);
                finish_msg(out, at);
            }
            BackendMessage::BackendKeyData { pid, key } => {
                out.put_u8(b'K');
                out.put_i32(12);
                out.put_i32(*pid);
                out.put_i32(*key);
            }
            BackendMessage::ReadyForQuery { status } => {
                out.put_u8(b'Z');
                out.put_i32(5);
                out.put_u8(*status);
            }
            BackendMessage::ErrorResponse(f) => raw(out, b'E', f),
            BackendMessage::NoticeResponse(f) => raw(out, b'N', f),
            BackendMessage::NegotiateProtocolVersion { minor, options } => {
                let at = begin_msg(out, b'v');
                out.put_i32(*minor);
                out.put_i32(options.len() as i32);
                for o in options {
                    put_cstr(out, o);
                }
                finish_msg(out, at);
            }
            BackendMessage::Other { tag, body } => raw(out, *tag, body),
        }
    }
}

fn parse_auth(r: &mut Reader) -> Result<Authentication, CodecError> {
    Ok(match r.i32()? {
        0 => Authentication::Ok,
        3 => Authentication::CleartextPassword,
        5 => {
            let s = r.take(4)?;
            Authentication::Md5Password {
                salt: [s[0], s[1], s[2], s[3]],
            }
        }
        10 => {
            let mut mechanisms = Vec::new();
            loop {
                let m = r.cstr()?;
                if m.is_empty() {
                    break;
                }
                mechanisms.push(m);
            }
            Authentication::Sasl { mechanisms }
        }
        11 => Authentication::SaslContinue(r.rest()),
        12 => Authentication::SaslFinal(r.rest()),
        code => Authentication::Other {
            code,
            data: r.rest(),
        },
    })
}

fn encode_auth(a: &Authentication, out: &mut BytesMut) {
    let at = begin_msg(out, b'R');
    match a {
        Authentication::Ok => out.put_i32(0),
        Authentication::CleartextPassword => out.put_i32(3),
        Authentication::Md5Password { salt } => {
            out.put_i32(5);
            out.put_slice(salt);
        }
        Authentication::Sasl { mechanisms } => {
            out.put_i32(10);
            for m in mechanisms {
                put_cstr(out, m);
            }
            out.put_u8(0);
        }
        Authentication::SaslContinue(d) => {
            out.put_i32(11);
            out.put_slice(d);
        }
        Authentication::SaslFinal(d) => {
            out.put_i32(12);
            out.put_slice(d);
        }
        Authentication::Other { code, data } => {
            out.put_i32(*code);
            out.put_slice(data);
        }
    }
    finish_msg(out, at);
}

fn raw(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_i32(4 + body.len() as i32);
    out.put_slice(body);
}

/// The value of field `code` in an ErrorResponse/NoticeResponse body.
pub fn error_field(fields: &[u8], code: u8) -> Option<&[u8]> {
    let mut rest = fields;
    while let Some((&c, tail)) = rest.split_first() {
        if c == 0 {
            return None;
        }
        let end = tail.iter().position(|&b| b == 0)?;
        if c == code {
            return Some(&tail[..end]);
        }
        rest = &tail[end + 1..];
    }
    None
}

/// An error the proxy itself raises towards a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorInfo {
    /// "ERROR" or "FATAL".
    pub severity: &'static str,
    /// SQLSTATE, five characters.
    pub code: &'static str,
    pub message: String,
}

impl ErrorInfo {
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        ErrorInfo {
            severity: "ERROR",
            code,
            message: message.into(),
        }
    }

    pub fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        ErrorInfo {
            severity: "FATAL",
            code,
            message: message.into(),
        }
    }

    /// Appends the ErrorResponse.
    pub fn encode(&self, out: &mut BytesMut) {
        let at = begin_msg(out, b'E');
        for (c, v) in [
            (b'S', self.severity.as_bytes()),
            (b'V', self.severity.as_bytes()),
            (b'C', self.code.as_bytes()),
            (b'M', self.message.as_bytes()),
        ] {
            out.put_u8(c);
            put_cstr(out, v);
        }
        out.put_u8(0);
        finish_msg(out, at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn all() -> Vec<BackendMessage> {
        use super::Authentication as A;
        use BackendMessage::*;
        vec![
            Authentication(A::Ok),
            Authentication(A::CleartextPassword),
            Authentication(A::Md5Password { salt: [1, 2, 3, 4] }),
            Authentication(A::Sasl {
                mechanisms: vec![b("SCRAM-SHA-256"), b("SCRAM-SHA-256-PLUS")],
            }),
            Authentication(A::SaslContinue(b("r=abc,s=xyz,i=4096"))),
            Authentication(A::SaslFinal(b("v=sig"))),
            Authentication(A::Other {
                code: 7,
                data: Bytes::new(),
            }),
            ParameterStatus {
                name: b("server_version"),
                value: b("15.6"),
            },
            BackendKeyData {
                pid: 1234,
                key: -99,
            },
            ReadyForQuery { status: b'I' },
            ErrorResponse(b("SERROR\0C25006\0Mread-only\0\0")),
            NoticeResponse(b("SNOTICE\0Mhi\0\0")),
            NegotiateProtocolVersion {
                minor: 0,
                options: vec![b("_pq_.x")],
            },
            Other {
                tag: b'D',
                body: Bytes::from_static(&[0, 1, 0, 0, 0, 1, b'1']),
            },
            Other {
                tag: b'C',
                body: b("SELECT 1\0"),
            },
        ]
    }

    #[test]
    fn round_trip_every_message() {
        for msg in all() {
            let mut buf = BytesMut::new();
            msg.encode(&mut buf);
            let wire = buf.clone();
            let back = BackendMessage::decode(&mut buf, 1 << 20).unwrap().unwrap();
            assert_eq!(back, msg);
            let mut again = BytesMut::new();
            back.encode(&mut again);
            assert_eq!(again, wire);
        }
    }

    #[test]
    fn error_info_encodes_fields() {
        let mut buf = BytesMut::new();
        ErrorInfo::fatal("28P01", "password authentication failed for user \"x\"").encode(&mut buf);
        let Some(BackendMessage::ErrorResponse(f)) =
            BackendMessage::decode(&mut buf, 1 << 20).unwrap()
        else {
            panic!()
        };
        assert_eq!(error_field(&f, b'C'), Some(&b"28P01"[..]));
        assert_eq!(error_field(&f, b'S'), Some(&b"FATAL"[..]));
        assert_eq!(error_field(&f, b'X'), None);
    }
}
