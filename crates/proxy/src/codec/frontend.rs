//! Frontend (client to server) messages after startup.
//!
//! Fields are `Bytes` slices of the received frame, so decoding costs no copy
//! of statement text. Hazard: a `'p'` message means a password, a SASL initial
//! response or a SASL response depending on the authentication step; the
//! caller interprets [`FrontendMessage::Password`] with the helpers below.
//!
//! Hazard: a message's header is checked as PostgreSQL checks it before it
//! reads the body ([`check_header`]): the type byte first, then the length
//! word against the type's own bounds. Only then may a caller wait for (and
//! buffer) the body, so a bad type or a `Sync` claiming a gigabyte is refused
//! after five bytes.

use super::{begin_msg, finish_msg, put_cstr, split_frame, CodecError, Reader};
use bytes::{BufMut, Bytes, BytesMut};

/// PostgreSQL's `PQ_LARGE_MESSAGE_LIMIT` (`MaxAllocSize - 1`): the largest
/// length word of a Query, Parse, Bind, FunctionCall or CopyData.
pub const PG_LARGE_MESSAGE_LIMIT: usize = 0x3fff_fffe;
/// PostgreSQL's `PQ_SMALL_MESSAGE_LIMIT`: the largest length word of every
/// other message after login.
pub const PG_SMALL_MESSAGE_LIMIT: usize = 10_000;
/// PostgreSQL's `PG_MAX_AUTH_TOKEN_LENGTH`: the largest password, SASL
/// initial response or SASL response.
pub const PG_MAX_AUTH_TOKEN_LENGTH: usize = 65_535;

/// The smallest and largest length word (which counts itself, not the type
/// byte) a frontend message of type `tag` may have; `None` for a type that
/// is not a frontend message. The largest is PostgreSQL's (`SocketBackend`
/// in postgres.c); the smallest is that of the shortest valid body, and the
/// messages without a body (Sync, Flush, Terminate, CopyDone) must say 4.
pub fn length_bounds(tag: u8) -> Option<(usize, usize)> {
    let large = PG_LARGE_MESSAGE_LIMIT;
    let small = PG_SMALL_MESSAGE_LIMIT;
    Some(match tag {
        // text NUL
        b'Q' => (5, large),
        // name NUL, text NUL, Int16 parameter count
        b'P' => (8, large),
        // portal NUL, statement NUL, three Int16 counts
        b'B' => (12, large),
        // Int32 function OID, three Int16 counts
        b'F' => (14, large),
        b'd' => (4, large),
        b'S' | b'H' | b'X' | b'c' => (4, 4),
        // 'S'/'P', name NUL
        b'D' | b'C' => (6, small),
        // portal NUL, Int32 row limit
        b'E' => (9, small),
        // message NUL
        b'f' => (5, small),
        b'p' => (4, PG_MAX_AUTH_TOKEN_LENGTH),
        _ => return None,
    })
}

/// Checks a message header before its body is awaited: the type must be a
/// frontend message type and the length word within that type's bounds
/// (else [`CodecError::UnknownTag`] / [`CodecError::BadLength`], what
/// PostgreSQL calls "invalid frontend message type" and "invalid message
/// length"), and at most `cap` (else [`CodecError::TooLarge`] with the
/// length word and `cap`: a limit of the proxy, not of the protocol).
pub fn check_header(tag: u8, len: i32, cap: usize) -> Result<(), CodecError> {
    let (min, max) = length_bounds(tag).ok_or(CodecError::UnknownTag(tag))?;
    let Ok(n) = usize::try_from(len) else {
        return Err(CodecError::BadLength(len as i64));
    };
    if n < min || n > max {
        return Err(CodecError::BadLength(len as i64));
    }
    if n > cap {
        return Err(CodecError::TooLarge { len: n, max: cap });
    }
    Ok(())
}

/// Whether `tag` may start a message once the client is logged in: every
/// frontend type but `'p'` (PostgreSQL rejects a password message after
/// authentication as an invalid message type too).
pub fn valid_after_login(tag: u8) -> bool {
    tag != b'p' && length_bounds(tag).is_some()
}

/// [`check_header`] for a message after login (a `'p'` is an unknown type).
pub fn check_header_after_login(tag: u8, len: i32, cap: usize) -> Result<(), CodecError> {
    if !valid_after_login(tag) {
        return Err(CodecError::UnknownTag(tag));
    }
    check_header(tag, len, cap)
}

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
    /// The header is checked ([`check_header`]) as soon as it is there: an
    /// unknown type byte is an error before its length word arrives.
    pub fn decode(buf: &mut BytesMut, max: usize) -> Result<Option<Self>, CodecError> {
        if let Some(&tag) = buf.first() {
            if length_bounds(tag).is_none() {
                return Err(CodecError::UnknownTag(tag));
            }
        }
        if buf.len() >= 5 {
            let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
            check_header(buf[0], len, usize::MAX)?;
        }
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

    /// Every message type's shortest valid body passes the header check, and
    /// one byte less does not.
    #[test]
    fn shortest_bodies_are_the_length_bounds() {
        for msg in all() {
            let mut wire = BytesMut::new();
            msg.encode(&mut wire);
            let tag = wire[0];
            let len = i32::from_be_bytes([wire[1], wire[2], wire[3], wire[4]]);
            let (min, _) = length_bounds(tag).unwrap();
            assert!(len as usize >= min, "{msg:?}");
            assert_eq!(check_header(tag, len, usize::MAX), Ok(()), "{msg:?}");
        }
        let shortest: [&[u8]; 13] = [
            b"Q\0",
            b"P\0\0\0\0",
            b"B\0\0\0\0\0\0\0\0",
            b"F\0\0\0\0\0\0\0\0\0\0",
            b"d",
            b"S",
            b"H",
            b"X",
            b"c",
            b"DS\0",
            b"CP\0",
            b"E\0\0\0\0\0",
            b"f\0",
        ];
        for short in shortest {
            let (tag, body) = (short[0], &short[1..]);
            let len = body.len() as i32 + 4;
            assert_eq!(check_header(tag, len, usize::MAX), Ok(()), "{short:?}");
            assert_eq!(
                check_header(tag, len - 1, usize::MAX),
                Err(CodecError::BadLength(len as i64 - 1)),
                "{short:?}"
            );
            assert!(
                FrontendMessage::parse(tag, Bytes::copy_from_slice(body)).is_ok(),
                "{short:?}"
            );
        }
    }

    /// PostgreSQL's limits: large types up to 1 GB - 2, the others up to
    /// 10000, the body-less ones exactly 4; the cap is reported apart.
    #[test]
    fn header_limits_follow_postgres() {
        let big = PG_LARGE_MESSAGE_LIMIT as i32;
        assert_eq!(check_header(b'Q', big, usize::MAX), Ok(()));
        assert_eq!(
            check_header(b'Q', big + 1, usize::MAX),
            Err(CodecError::BadLength(big as i64 + 1))
        );
        assert_eq!(check_header(b'E', 10_000, usize::MAX), Ok(()));
        assert_eq!(
            check_header(b'E', 10_001, usize::MAX),
            Err(CodecError::BadLength(10_001))
        );
        for tag in [b'S', b'H', b'X', b'c'] {
            assert_eq!(check_header(tag, 4, usize::MAX), Ok(()));
            assert_eq!(
                check_header(tag, 5, usize::MAX),
                Err(CodecError::BadLength(5))
            );
            assert_eq!(
                check_header(tag, 1 << 30, usize::MAX),
                Err(CodecError::BadLength(1 << 30))
            );
        }
        assert_eq!(
            check_header(b'Q', -1, usize::MAX),
            Err(CodecError::BadLength(-1))
        );
        assert_eq!(
            check_header(b'B', 2000, 1000),
            Err(CodecError::TooLarge {
                len: 2000,
                max: 1000
            })
        );
        assert_eq!(
            check_header(b'!', 4, usize::MAX),
            Err(CodecError::UnknownTag(b'!'))
        );
        assert_eq!(check_header(b'p', 40, usize::MAX), Ok(()));
        assert_eq!(
            check_header_after_login(b'p', 40, usize::MAX),
            Err(CodecError::UnknownTag(b'p'))
        );
    }

    /// `decode` refuses a bad header before the body arrives.
    #[test]
    fn decode_refuses_a_bad_header_early() {
        let mut unknown = BytesMut::from(&b"!"[..]);
        assert_eq!(
            FrontendMessage::decode(&mut unknown, 1 << 20),
            Err(CodecError::UnknownTag(b'!'))
        );
        let mut huge_sync = BytesMut::from(&b"S\x40\0\0\0"[..]);
        assert_eq!(
            FrontendMessage::decode(&mut huge_sync, usize::MAX),
            Err(CodecError::BadLength(1 << 30))
        );
    }
}
