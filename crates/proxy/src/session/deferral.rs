//! The deferred `BEGIN`: a lone `BEGIN` / `START TRANSACTION` the proxy
//! answers itself, so that the transaction's first statement can decide
//! where it runs (see docs/routing.md, "Read-only transactions").

use super::Session;
use crate::classify::{Analysis, TxEffect};
use crate::codec::{BackendMessage, FrontendMessage};
use bytes::{Bytes, BytesMut};

impl Session {
    /// Answers a lone `BEGIN` itself (when nothing is in flight) so that a
    /// following `SET TRANSACTION READ ONLY` can still place the transaction
    /// on a standby. Returns true when the message was handled.
    pub(super) fn defer_begin(
        &mut self,
        msg: &FrontendMessage,
        a: Option<&Analysis>,
        frame: &Bytes,
    ) -> bool {
        let FrontendMessage::Query { sql } = msg else {
            return false;
        };
        let eligible = self.kind == crate::shared::ListenerKind::Rw
            && self.tx_status == b'I'
            && self.deferred_begin.is_none()
            && self.state.pinned.is_none()
            && !self.active_busy()
            && a.is_some_and(|a| matches!(a.tx, TxEffect::Begin { .. }) && !a.serializable);
        let Some(tag) = eligible.then(|| lone_begin(sql)).flatten() else {
            return false;
        };
        let read_only = matches!(a.map(|a| &a.tx), Some(TxEffect::Begin { read_only: true }));
        self.deferred_read_only = read_only || self.state.default_read_only;
        self.state.tx_read_only = self.deferred_read_only;
        self.deferred_begin = Some(frame.clone());
        let mut body = BytesMut::from(tag.as_bytes());
        body.extend_from_slice(&[0]);
        self.io.queue(&BackendMessage::Other {
            tag: b'C',
            body: body.freeze(),
        });
        self.io
            .queue(&BackendMessage::ReadyForQuery { status: b'T' });
        self.tx_status = b'T';
        true
    }
}

/// The command tag of a text that is one `BEGIN` / `START TRANSACTION`
/// statement, with or without transaction modes (the classifier already
/// parsed it as one). Comments or a second statement: `None`.
fn lone_begin(sql: &[u8]) -> Option<&'static str> {
    let text = std::str::from_utf8(sql).ok()?;
    let body = text
        .trim()
        .trim_end_matches(|c: char| c == ';' || c.is_whitespace());
    if body.contains([';', '-', '/', '\'', '"', '$']) {
        return None;
    }
    let mut words = body.split_whitespace().map(|w| w.to_ascii_lowercase());
    match (words.next()?.as_str(), words.next().as_deref()) {
        ("begin", _) => Some("BEGIN"),
        ("start", Some("transaction")) => Some("START TRANSACTION"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lone_begin_forms() {
        assert_eq!(lone_begin(b"BEGIN"), Some("BEGIN"));
        assert_eq!(lone_begin(b" begin work ; "), Some("BEGIN"));
        assert_eq!(lone_begin(b"START TRANSACTION"), Some("START TRANSACTION"));
        assert_eq!(lone_begin(b"BEGIN READ ONLY"), Some("BEGIN"));
        assert_eq!(
            lone_begin(b"start transaction isolation level repeatable read, read only;"),
            Some("START TRANSACTION")
        );
        assert_eq!(lone_begin(b"BEGIN; SELECT 1"), None);
        assert_eq!(lone_begin(b"BEGIN /* x */"), None);
        assert_eq!(lone_begin(b"SELECT 1"), None);
    }
}
