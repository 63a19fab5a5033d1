//! Fuzz target: every decoder on arbitrary bytes; none may panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgha_proxy::codec::{BackendMessage, FrontendMessage, StartupMessage};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = FrontendMessage::decode(&mut buf, 1 << 20) {}
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = BackendMessage::decode(&mut buf, 1 << 20) {}
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = StartupMessage::decode(&mut buf, 10_000) {}
});
