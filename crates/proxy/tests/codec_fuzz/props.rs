//! The properties every wire decoder must have, on any input bytes:
//!
//! * no panic;
//! * a decoded message re-encodes to exactly the bytes it was decoded
//!   from (so it is never larger than its input, and the proxy forwards
//!   what the peer sent);
//! * bounded memory: a decoder that asks for more bytes (`Ok(None)`) never
//!   waits for a frame longer than its limit, and consumes nothing then.
//!
//! A decode error is an accepted outcome: it ends that connection.

use bytes::BytesMut;
use pgha_proxy::codec::{BackendMessage, CodecError, FrontendMessage, StartupMessage};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The frame limit used for regular messages.
pub const MAX: usize = 1 << 16;
/// The limit used for startup packets.
pub const STARTUP_MAX: usize = 10_000;

type Decoded = Result<Option<BytesMut>, CodecError>;

/// Checks every decoder on `bytes`; the first broken property, described.
pub fn check_all(bytes: &[u8]) -> Result<(), String> {
    check_stream(bytes, "frontend", MAX, regular_len, |b| {
        encoded(FrontendMessage::decode(b, MAX), |m, out| m.encode(out))
    })?;
    check_stream(bytes, "backend", MAX, regular_len, |b| {
        encoded(BackendMessage::decode(b, MAX), |m, out| m.encode(out))
    })?;
    check_stream(bytes, "startup", STARTUP_MAX, startup_len, |b| {
        encoded(StartupMessage::decode(b, STARTUP_MAX), |m, out| {
            m.encode(out)
        })
    })
}

fn encoded<M>(r: Result<Option<M>, CodecError>, enc: impl Fn(&M, &mut BytesMut)) -> Decoded {
    r.map(|m| {
        m.map(|m| {
            let mut out = BytesMut::new();
            enc(&m, &mut out);
            out
        })
    })
}

/// Declared total length of the regular frame at the front, once its
/// header is there.
fn regular_len(buf: &[u8]) -> Option<i64> {
    let h: [u8; 4] = buf.get(1..5)?.try_into().ok()?;
    Some(i64::from(i32::from_be_bytes(h)) + 1)
}

/// Declared length of the startup packet at the front.
fn startup_len(buf: &[u8]) -> Option<i64> {
    let h: [u8; 4] = buf.get(0..4)?.try_into().ok()?;
    Some(i64::from(i32::from_be_bytes(h)))
}

/// Decodes messages off `bytes` until the decoder wants more or fails,
/// checking each step.
fn check_stream(
    bytes: &[u8],
    what: &str,
    max: usize,
    declared: fn(&[u8]) -> Option<i64>,
    decode: impl Fn(&mut BytesMut) -> Decoded,
) -> Result<(), String> {
    let mut buf = BytesMut::from(bytes);
    let mut offset = 0;
    loop {
        let before = buf.clone();
        let step = catch_unwind(AssertUnwindSafe(|| decode(&mut buf)))
            .map_err(|_| format!("{what} decoder panicked at offset {offset}"))?;
        let used = before.len() - buf.len();
        match step {
            Ok(Some(out)) => {
                if used == 0 {
                    return Err(format!("{what}: a message from no bytes at {offset}"));
                }
                if out[..] != before[..used] {
                    return Err(format!(
                        "{what} at offset {offset}: re-encoded as {:02x?}, decoded from {:02x?}",
                        &out[..],
                        &before[..used]
                    ));
                }
                offset += used;
            }
            Ok(None) => {
                if used != 0 {
                    return Err(format!("{what}: consumed {used} bytes and asked for more"));
                }
                if let Some(len) = declared(&buf) {
                    if len > max as i64 {
                        return Err(format!(
                            "{what} at offset {offset}: waits for a {len}-byte frame, limit {max}"
                        ));
                    }
                }
                return Ok(());
            }
            Err(_) => return Ok(()),
        }
    }
}
