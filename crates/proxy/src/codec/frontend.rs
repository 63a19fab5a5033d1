//! Frontend (client to server) messages after startup.
//!
//! Fields are `Bytes` slices of the received frame, so decoding costs no copy
//! of statement text. Hazard: a `'p'` message means a password, a SASL initial
//! response or a SASL response depending on the authentication step; the
//! caller interprets [`FrontendMessage::Password`] with the helpers below.

use super::{begin_msg, finish_msg, put_cstr, split_frame, CodecError, Reader};
use bytes::{BufMut, Bytes, BytesMut};

/// One frontend message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendMessage {
    /// 'Q': a simple query (text without its NUL).
    Query { sql: Bytes },
    /// 'P': Parse. `param_types` is the raw count + OID array.
    Parse {
        name: Bytes,
        sql: Bytes,
        param_types: Bytes,
    },
    /// 'B': Bind. `rest` holds the formats, parameters and result formats.
    Bind {
        portal: Bytes,
        statement: Bytes,
        rest: Bytes,
    },
    /// 'D': Describe a statement (`b'S'`) or portal (`b'P'`).
    Describe { kind: u8, name: Bytes },
    /// 'E': Execute.
    Execute { portal: Bytes, max_rows: i32 },
    /// 'C': Close a statement (`b'S'`) or portal (`b'P'`).
    Close { kind: u8, name: Bytes },
    /// 'S'
    Sync,
    /// 'H'
    Flush,
    /// 'X'
    Terminate,
    /// 'd'
    CopyData(Bytes),
    /// 'c'
    CopyDone,
    /// 'f'
    CopyFail { message: Bytes },
    /// 'p': password, SASLInitialResponse or SASLResponse (raw body).
    Password(Bytes),
    /// 'F': FunctionCall (raw body).
    FunctionCall(Bytes),
}

impl FrontendMessage {
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
            b'Q' => FrontendMessage::Query { sql: r.cstr()? },
            b'P' => {
                let name = r.cstr()?;
                let sql = r.cstr()?;
                let param_types = r.rest();
                check_param_types(&param_types)?;
                FrontendMessage::Parse {
                    name,
                    sql,
                    param_types,
                }
            }
            b'B' => FrontendMessage::Bind {
                portal: r.cstr()?,
                statement: r.cstr()?,
                rest: r.rest(),
            },
            b'D' => FrontendMessage::Describe {
                kind: kind(&mut r)?,
                name: r.cstr()?,
            },
            b'E' => FrontendMessage::Execute {
                portal: r.cstr()?,
                max_rows: r.i32()?,
            },
            b'C' => FrontendMessage::Close {
                kind: kind(&mut r)?,
                name: r.cstr()?,
            },
            b'S' => FrontendMessage::Sync,
            b'H' => FrontendMessage::Flush,
            b'X' => FrontendMessage::Terminate,
            b'd' => FrontendMessage::CopyData(r.rest()),
            b'c' => FrontendMessage::CopyDone,
            b'f' => FrontendMessage::CopyFail { message: r.cstr()? },
            b'p' => FrontendMessage::Password(r.rest()),
            b'F' => FrontendMessage::FunctionCall(r.rest()),
            other => return Err(CodecError::UnknownTag(other)),
        };
        r.finish()?;
        Ok(msg)
    }

    /// Appends the wire form.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            FrontendMessage::Query { sql } => {
                let at = begin_msg(out, b'Q');
                put_cstr(out, sql);
                finish_msg(out, at);
            }
            FrontendMessage::Parse {
                name,
                sql,
                param_types,
            } => {
                let at = begin_msg(out, b'P');
                put_cstr(out, name);
                put_cstr(out, sql);
                out.put_slice(param_types);
                finish_msg(out, at);
            }
            FrontendMessage::Bind {
                portal,
                statement,
                rest,
            } => {
                let at = begin_msg(out, b'B');
                put_cstr(out, portal);
                put_cstr(out, statement);
                out.put_slice(rest);
                finish_msg(out, at);
            }
            FrontendMessage::Describe { kind, name } => kind_name(out, b'D', *kind, name),
            FrontendMessage::Close { kind, name } => kind_name(out, b'C', *kind, name),
            FrontendMessage::Execute { portal, max_rows } => {
                let at = begin_msg(out, b'E');
                put_cstr(out, portal);
                out.put_i32(*max_rows);
                finish_msg(out, at);
            }
            FrontendMessage::Sync => empty(out, b'S'),
            FrontendMessage::Flush => empty(out, b'H'),
            FrontendMessage::Terminate => empty(out, b'X'),
            FrontendMessage::CopyDone => empty(out, b'c'),
            FrontendMessage::CopyData(data) => raw(out, b'd', data),
            FrontendMessage::CopyFail { message } => {
                let at = begin_msg(out, b'f');
                put_cstr(out, message);
                finish_msg(out, at);
            }
            FrontendMessage::Password(data) => raw(out, b'p', data),
            FrontendMessage::FunctionCall(data) => raw(out, b'F', data),
        }
    }
}

fn kind(r: &mut Reader) -> Result<u8, CodecError> {
    match r.u8()? {
        k @ (b'S' | b'P') => Ok(k),
        _ => Err(CodecError::Malformed(
            "Describe/Close kind must be 'S' or 'P'",
        )),
    }
}

fn check_param_types(raw: &[u8]) -> Result<(), CodecError> {
    if raw.len() < 2 {
        return Err(CodecError::Malformed("Parse without parameter count"));
    }
    let n = i16::from_be_bytes([raw[0], raw[1]]);
    if n < 0 || raw.len() != 2 + 4 * n as usize {
        return Err(CodecError::Malformed(
            "Parse parameter types do not match their count",
        ));
    }
    Ok(())
}

fn empty(out: &mut BytesMut, tag: u8) {
    out.put_u8(tag);
    out.put_i32(4);
}

fn raw(out: &mut BytesMut, tag: u8, data: &[u8]) {
    out.put_u8(tag);
    out.put_i32(4 + data.len() as i32);
    out.put_slice(data);
}

fn kind_name(out: &mut BytesMut, tag: u8, kind: u8, name: &[u8]) {
    let at = begin_msg(out, tag);
    out.put_u8(kind);
    put_cstr(out, name);
    finish_msg(out, at);
}

/// Builds a SASLInitialResponse body ('p').
pub fn sasl_initial_response(mechanism: &str, data: &[u8]) -> FrontendMessage {
    let mut b = BytesMut::with_capacity(mechanism.len() + 5 + data.len());
    put_cstr(&mut b, mechanism.as_bytes());
    b.put_i32(data.len() as i32);
    b.put_slice(data);
    FrontendMessage::Password(b.freeze())
}

/// Reads a SASLInitialResponse body: `(mechanism, data)`.
pub fn parse_sasl_initial_response(body: Bytes) -> Result<(Bytes, Bytes), CodecError> {
    let mut r = Reader::new(body);
    let mech = r.cstr()?;
    let len = r.i32()?;
    let data = if len < 0 {
        Bytes::new()
    } else {
        r.take(len as usize)?
    };
    r.finish()?;
    Ok((mech, data))
}

/// Reads a cleartext/md5 PasswordMessage body (NUL-terminated).
pub fn parse_password(body: Bytes) -> Result<Bytes, CodecError> {
    let mut r = Reader::new(body);
    let p = r.cstr()?;
    r.finish()?;
    Ok(p)
}

/// Builds a PasswordMessage carrying a NUL-terminated string.
pub fn password_message(text: &[u8]) -> FrontendMessage {
    let mut b = BytesMut::with_capacity(text.len() + 1);
    put_cstr(&mut b, text);
    FrontendMessage::Password(b.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn all() -> Vec<FrontendMessage> {
        use FrontendMessage::*;
        vec![
            Query { sql: b("SELECT 1") },
            Parse {
                name: b("s1"),
                sql: b("SELECT $1"),
                param_types: Bytes::from_static(&[0, 1, 0, 0, 0, 23]),
            },
            Bind {
                portal: b(""),
                statement: b("s1"),
                rest: Bytes::from_static(&[0, 0, 0, 1, 0, 0, 0, 1, b'7', 0, 0]),
            },
            Describe {
                kind: b'S',
                name: b("s1"),
            },
            Describe {
                kind: b'P',
                name: b(""),
            },
            Execute {
                portal: b(""),
                max_rows: 0,
            },
            Close {
                kind: b'S',
                name: b("s1"),
            },
            Close {
                kind: b'P',
                name: b("p"),
            },
            Sync,
            Flush,
            Terminate,
            CopyData(b("1\t2\n")),
            CopyDone,
            CopyFail { message: b("nope") },
            Password(b("secret\0")),
            sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=abc"),
            FunctionCall(Bytes::from_static(&[0, 0, 4, 0, 0, 0, 0, 0, 0, 0])),
        ]
    }

    #[test]
    fn round_trip_every_message() {
        for msg in all() {
            let mut buf = BytesMut::new();
            msg.encode(&mut buf);
            let wire = buf.clone();
            let back = FrontendMessage::decode(&mut buf, 1 << 20).unwrap().unwrap();
            assert_eq!(back, msg);
            assert!(buf.is_empty());
            let mut again = BytesMut::new();
            back.encode(&mut again);
            assert_eq!(again, wire);
        }
    }

    #[test]
    fn partial_input_needs_more() {
        let mut wire = BytesMut::new();
        FrontendMessage::Query {
            sql: b("SELECT 42"),
        }
        .encode(&mut wire);
        for cut in 0..wire.len() {
            let mut part = BytesMut::from(&wire[..cut]);
            assert_eq!(FrontendMessage::decode(&mut part, 1 << 20), Ok(None));
        }
    }

    #[test]
    fn sasl_helpers_round_trip() {
        let FrontendMessage::Password(body) = sasl_initial_response("SCRAM-SHA-256", b"xyz") else {
            panic!()
        };
        let (m, d) = parse_sasl_initial_response(body).unwrap();
        assert_eq!(&m[..], b"SCRAM-SHA-256");
        assert_eq!(&d[..], b"xyz");
        let FrontendMessage::Password(body) = password_message(b"md5abc") else {
            panic!()
        };
        assert_eq!(&parse_password(body).unwrap()[..], b"md5abc");
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(FrontendMessage::parse(b'Q', b("no nul")).is_err());
        assert!(FrontendMessage::parse(b'D', b("Xname\0")).is_err());
        assert!(FrontendMessage::parse(b'P', Bytes::from_static(b"a\0b\0\0\x05")).is_err());
        assert!(FrontendMessage::parse(b'S', b("x")).is_err());
        assert_eq!(
            FrontendMessage::parse(b'z', Bytes::new()),
            Err(CodecError::UnknownTag(b'z'))
        );
    }
}
