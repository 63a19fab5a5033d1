//! Client messages to backends: splitting the client stream into units,
//! routing each new unit, and the bookkeeping that lets session state follow
//! the client (re-preparing named statements, replaying SETs).
//!
//! Hazards: an injected message's answer must be swallowed exactly (see
//! `Unit::tokens`), or the client's protocol state desynchronises. Frames are
//! copied once into the backend's write buffer; statement texts are never
//! copied on this path (the classifier caches by text).

use super::replay::names_statements;
use super::route::{Resolution, Want};
use super::state::{Role, Unit};
use super::{Flow, Session, SessionError};
use crate::classify::{Analysis, TxEffect};
use crate::codec::backend::error_field;
use crate::codec::{frame_len, BackendMessage, ErrorInfo, FrontendMessage};
use crate::metrics::Reason;
use crate::routing::{Route, SessionFacts, TxPlace, UnitKind};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

/// What a plain statement (see [`Session::analyze`]) gets: the primary, no
/// transaction or session effect.
static PLAIN: std::sync::LazyLock<Arc<Analysis>> =
    std::sync::LazyLock::new(|| Arc::new(Analysis::primary()));

/// Outcome of one client message.
enum Step {
    Done,
    Stall(u8, Bytes),
    Exit,
}

impl Session {
    /// Dispatches every complete client message it can.
    pub(super) async fn dispatch(&mut self) -> Result<Flow, SessionError> {
        loop {
            let (tag, frame) = match self.stalled.take() {
                Some(x) => x,
                None => match frame_len(&self.io.rbuf, self.shared.limits.max_message) {
                    Ok(Some((tag, total))) => (tag, self.io.rbuf.split_to(total).freeze()),
                    Ok(None) => return Ok(Flow::Continue),
                    Err(e) => return Err(self.client_violation(e).await),
                },
            };
            match self.on_frame(tag, frame, false).await {
                Ok(Step::Done) => {}
                Ok(Step::Stall(tag, frame)) => {
                    self.stalled = Some((tag, frame));
                    return Ok(Flow::Continue);
                }
                Ok(Step::Exit) => return Ok(Flow::Exit),
                Err(e) => return Err(self.client_violation(e).await),
            }
        }
    }

    /// Sends FATAL 08P01 to the client; the session then ends.
    async fn client_violation(&mut self, e: crate::codec::CodecError) -> SessionError {
        tracing::info!(client = %self.peer, "closing client after protocol violation: {e}");
        self.io.queue_error(&ErrorInfo::fatal(
            "08P01",
            format!("invalid frontend message: {e}"),
        ));
        let _ = self.io.flush().await;
        SessionError::Protocol(e)
    }

    /// Runs a unit refused by a standby (25006) again on the primary.
    pub(super) async fn redispatch(&mut self, mut bytes: Bytes) -> Result<(), SessionError> {
        while bytes.len() >= 5 {
            let Ok(Some((tag, total))) = frame_len(&bytes, usize::MAX) else {
                break;
            };
            let frame = bytes.split_to(total);
            match self.on_frame(tag, frame, true).await {
                Ok(Step::Stall(_, frame)) => {
                    // Not yet: try again once the active backend drained.
                    let mut rest = BytesMut::from(&frame[..]);
                    rest.extend_from_slice(&bytes);
                    self.retry = Some(rest.freeze());
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => return Err(SessionError::Protocol(e)),
            }
        }
        Ok(())
    }

    async fn on_frame(
        &mut self,
        tag: u8,
        frame: Bytes,
        forced: bool,
    ) -> Result<Step, crate::codec::CodecError> {
        if tag == b'X' {
            return Ok(Step::Exit);
        }
        if self.discard_until_sync {
            if tag == b'S' {
                self.discard_until_sync = false;
                self.io.queue(&BackendMessage::ReadyForQuery {
                    status: self.tx_status,
                });
            }
            return Ok(Step::Done);
        }
        if matches!(tag, b'd' | b'c' | b'f') {
            if let Some(b) = self
                .active
                .and_then(|r| self.backends[r as usize].as_mut())
                .filter(|b| b.busy())
            {
                b.conn.wbuf.extend_from_slice(&frame);
            }
            return Ok(Step::Done);
        }
        let msg = FrontendMessage::parse(tag, frame.slice(5..))?;
        if let FrontendMessage::Password(_) = msg {
            return Err(crate::codec::CodecError::Malformed(
                "password message after authentication",
            ));
        }
        if let Some(role) = self.open {
            if matches!(tag, b'Q' | b'F') {
                self.end_open_unit(role);
            } else {
                self.forward(role, &msg, &frame);
                if tag == b'S' {
                    self.close_unit(role);
                }
                return Ok(Step::Done);
            }
        }
        self.start_unit(tag, msg, frame, forced).await
    }

    /// The analysis deciding a unit's route, from its first message, and the
    /// statement text a standby's 25006 refusal would teach the classifier
    /// (one prepared-statement lookup for a Bind).
    fn first_analysis(&mut self, msg: &FrontendMessage) -> (Option<Arc<Analysis>>, Option<Bytes>) {
        if !self.analyses() {
            return (None, None);
        }
        match msg {
            FrontendMessage::Query { sql } => (Some(self.analyze(sql)), Some(sql.clone())),
            FrontendMessage::Parse { sql, .. } => {
                let a = self.analyze(sql);
                self.last_parse = Some((sql.clone(), a.clone()));
                (Some(a), Some(sql.clone()))
            }
            FrontendMessage::Bind {
                statement: name, ..
            } => match self.state.prepared.get(name) {
                Some(p) => (p.analysis.clone(), Some(p.sql.clone())),
                None => (None, None),
            },
            FrontendMessage::Describe { kind: b'S', name } => (
                self.state
                    .prepared
                    .get(name)
                    .and_then(|p| p.analysis.clone()),
                None,
            ),
            _ => (None, None),
        }
    }

    /// The classifier's analysis of a statement text; on the pooled
    /// `primary` listener a single plain SELECT/INSERT/UPDATE/DELETE skips
    /// it (see `classify::plain`: there only effects matter, and it has
    /// none).
    pub(super) fn analyze(&self, sql: &Bytes) -> Arc<Analysis> {
        if self.kind == crate::shared::ListenerKind::Primary
            && crate::classify::plain::plain_statement(sql)
        {
            return PLAIN.clone();
        }
        self.shared.classifier.analyze_bytes(sql)
    }

    async fn start_unit(
        &mut self,
        tag: u8,
        msg: FrontendMessage,
        frame: Bytes,
        forced: bool,
    ) -> Result<Step, crate::codec::CodecError> {
        if self.tx_lost.is_some() && self.refuse_in_lost_tx(tag, &msg) {
            return Ok(Step::Done);
        }
        if self.tx_status == b'I' && !self.active_busy() {
            // No transaction open or in flight: SETs still pending belong to
            // one whose backend was lost.
            self.state.pending.clear();
        }
        let (analysis, text) = self.first_analysis(&msg);
        if !forced && self.defer_begin(&msg, analysis.as_deref(), &frame) {
            return Ok(Step::Done);
        }
        let route = self.route_unit(&msg, analysis.as_deref(), forced);
        let want = match route {
            Route::Primary => Want::Primary,
            Route::Standby => Want::Standby,
            Route::Stay => Want::Sticky,
            Route::Refuse(refusal) => {
                if self.active_busy() {
                    // Answers of earlier units come first.
                    return Ok(Step::Stall(tag, frame));
                }
                self.refuse_in_standby_tx(tag, &refusal);
                return Ok(Step::Done);
            }
        };
        if let Some(a) = analysis.as_deref() {
            match a.tx {
                TxEffect::Begin { read_only } if read_only || self.state.default_read_only => {
                    self.state.tx_read_only = true
                }
                TxEffect::SetTransactionReadOnly => self.state.tx_read_only = true,
                _ => {}
            }
        }
        let role = match self.resolve(want).await {
            Resolution::Go(role) => role,
            Resolution::Stall => return Ok(Step::Stall(tag, frame)),
            Resolution::Fail(body) => return Ok(self.fail_unit(tag, body)),
        };
        if !self.active_busy() || self.active != Some(role) {
            self.sync_settings(role);
        }
        if self.state.sql_prepared && role == Role::Primary {
            self.sync_sql_prepared(role);
        }
        let carried_begin = self.deferred_begin.take();
        if let Some(begin) = &carried_begin {
            self.inject(role, begin);
        }
        if let (FrontendMessage::Query { .. }, Some(a)) = (&msg, analysis.as_deref()) {
            if names_statements(a) {
                self.align_statements(role, a);
            }
        }
        let Some(b) = self.backends[role as usize].as_mut() else {
            return Ok(Step::Done);
        };
        let stats = b.stats.clone();
        stats
            .served
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let reason = self.reason(role, route, forced, &msg, analysis.as_deref());
        self.shared.metrics.statement(role, reason);
        let mut unit = self.new_unit(stats, role, &msg, analysis.as_ref(), text, carried_begin);
        unit.sent_at = Some(std::time::Instant::now());
        let Some(b) = self.backends[role as usize].as_mut() else {
            return Ok(Step::Done);
        };
        b.units.push_back(unit);
        self.active = Some(role);
        self.forward(role, &msg, &frame);
        match tag {
            b'Q' | b'F' | b'S' => self.close_unit(role),
            _ => self.open = Some(role),
        }
        Ok(Step::Done)
    }

    /// Routing failed (no primary in time, a refused login...): the client
    /// gets the error instead of the unit's answer.
    fn fail_unit(&mut self, tag: u8, body: Bytes) -> Step {
        if let Some(fields) = self.refused.take() {
            tracing::info!(
                client = %self.peer,
                "the server refused the session's deferred login: {}",
                Session::error_text(&fields)
            );
            self.io
                .queue(&BackendMessage::ErrorResponse(super::fatal(&fields)));
            return Step::Exit;
        }
        if self.deferred_begin.take().is_some() {
            self.tx_status = b'I';
        }
        if let Some(code) = error_field(&body, b'C') {
            self.shared.metrics.error(code);
        }
        self.io.queue(&BackendMessage::ErrorResponse(body));
        match tag {
            b'Q' | b'F' | b'S' => self.io.queue(&BackendMessage::ReadyForQuery {
                status: self.tx_status,
            }),
            _ => self.discard_until_sync = true,
        }
        Step::Done
    }

    /// Where a unit starting with `msg` goes (`forced`: a retry on the
    /// primary).
    fn route_unit(
        &self,
        msg: &FrontendMessage,
        analysis: Option<&Analysis>,
        forced: bool,
    ) -> Route {
        if forced {
            return Route::Primary;
        }
        let unit = match (msg, analysis) {
            (FrontendMessage::FunctionCall(_), _) => UnitKind::FunctionCall,
            (_, Some(a)) => UnitKind::Statement(a),
            (_, None) => UnitKind::Unknown,
        };
        crate::routing::decide(&self.route_facts(), unit)
    }

    /// Why the unit runs on `role` (metrics), from the route it was given.
    fn reason(
        &self,
        role: Role,
        route: Route,
        forced: bool,
        msg: &FrontendMessage,
        analysis: Option<&Analysis>,
    ) -> Reason {
        match (role, route) {
            (_, Route::Stay) => Reason::Sticky,
            (Role::Standby, _) => Reason::ReadOnly,
            (Role::Primary, _) if forced => Reason::Retry,
            (Role::Primary, Route::Standby) => Reason::StandbyUnavailable,
            (Role::Primary, _) => {
                let unit = match (msg, analysis) {
                    (FrontendMessage::FunctionCall(_), _) => UnitKind::FunctionCall,
                    (_, Some(a)) => UnitKind::Statement(a),
                    (_, None) => UnitKind::Unknown,
                };
                crate::routing::primary_reason(&self.route_facts(), unit)
            }
        }
    }

    /// The session as the routing decision sees it.
    fn route_facts(&self) -> SessionFacts {
        let tx = if self.deferred_begin.is_some() {
            TxPlace::Deferred {
                read_only: self.deferred_read_only,
            }
        } else if self.tx_status != b'I' {
            TxPlace::Open(self.active.unwrap_or(self.default_role()))
        } else {
            TxPlace::Idle
        };
        SessionFacts {
            listener: self.kind,
            tx,
            pinned: self.state.pinned,
            default_read_only: self.state.default_read_only,
            default_serializable: self.state.default_serializable,
        }
    }

    /// A client unit starting with `msg`: its write flag, session effects,
    /// and whether a standby's 25006 refusal may be retried on the primary.
    fn new_unit(
        &mut self,
        stats: Arc<crate::monitor::NodeStats>,
        role: Role,
        msg: &FrontendMessage,
        analysis: Option<&Arc<Analysis>>,
        retry_sql: Option<Bytes>,
        carried_begin: Option<Bytes>,
    ) -> Unit {
        let mut unit = Unit::new(stats);
        let Some(a) = analysis else { return unit };
        unit.opens_tx = matches!(a.tx, TxEffect::Begin { .. }) || a.chain;
        if let FrontendMessage::Query { sql } = msg {
            unit.write = may_write(a, sql);
            if !a.session.is_empty() {
                unit.effects.push(a.clone());
            }
        }
        let first_in_tx = carried_begin.is_some();
        let retryable = self.kind == crate::shared::ListenerKind::Rw
            && role == Role::Standby
            && (self.tx_status == b'I' || first_in_tx)
            && a.read_only
            && a.tx == TxEffect::None
            && retry_sql.is_some();
        if retryable {
            unit.retry = Some(self.spare.take());
            unit.held = Some(self.spare.take());
            unit.retry_sql = retry_sql;
            unit.retry_begin = carried_begin.filter(|_| role == Role::Standby);
        }
        unit
    }

    /// A simple Query (or FunctionCall) arrived while an extended unit is
    /// open, e.g. asyncpg's prepare (Parse, Describe, Flush, no Sync) followed
    /// by `BEGIN`. PostgreSQL ends the extended messages' implicit
    /// transaction there; the proxy ends the open unit with a Sync of its own
    /// (its ReadyForQuery is not forwarded) so the Query is routed as a unit
    /// of its own instead of following the open unit's backend.
    fn end_open_unit(&mut self, role: Role) {
        if let Some(b) = self.backends[role as usize].as_mut() {
            FrontendMessage::Sync.encode(&mut b.conn.wbuf);
            if let Some(u) = b.units.back_mut() {
                u.silent_ready = true;
                if let Some(r) = u.retry.take() {
                    self.spare.put(r);
                }
            }
        }
        self.close_unit(role);
    }

    fn close_unit(&mut self, role: Role) {
        self.open = None;
        if let Some(u) = self.backends[role as usize]
            .as_mut()
            .and_then(|b| b.units.back_mut())
        {
            u.closed = true;
        }
    }

    /// Sends `sql` to `role` as an injected simple query.
    pub(super) fn inject_query(&mut self, role: Role, sql: &'static [u8]) {
        let mut frame = BytesMut::new();
        FrontendMessage::Query {
            sql: Bytes::from_static(sql),
        }
        .encode(&mut frame);
        self.inject(role, &frame.freeze());
    }

    /// Sends `frame` (a simple query) to `role` as an injected unit.
    pub(super) fn inject(&mut self, role: Role, frame: &Bytes) {
        let Some(b) = self.backends[role as usize].as_mut() else {
            return;
        };
        let mut unit = Unit::new(b.stats.clone());
        unit.injected = true;
        unit.closed = true;
        b.units.push_back(unit);
        b.conn.wbuf.extend_from_slice(frame);
    }
}

/// Whether a statement text may write data (read-your-writes bookkeeping).
/// A single transaction-control or session-setting statement (BEGIN,
/// COMMIT, SET, RESET, DISCARD ...) does not: the transaction's other
/// statements decide.
pub(super) fn may_write(a: &Analysis, sql: &[u8]) -> bool {
    if a.read_only {
        return false;
    }
    let body = sql
        .iter()
        .rposition(|&b| b != b';' && !b.is_ascii_whitespace())
        .map_or(&[][..], |end| &sql[..=end]);
    if body.contains(&b';') {
        return true;
    }
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    let word: Vec<u8> = body[start..]
        .iter()
        .take_while(|b| b.is_ascii_alphabetic())
        .map(u8::to_ascii_lowercase)
        .collect();
    !matches!(
        &word[..],
        b"set"
            | b"reset"
            | b"discard"
            | b"deallocate"
            | b"begin"
            | b"start"
            | b"commit"
            | b"end"
            | b"rollback"
            | b"abort"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analysis(read_only: bool, tx: TxEffect) -> Analysis {
        Analysis {
            read_only,
            tx,
            ..crate::classify::Classifier::new(Arc::default())
                .analyze("SELECT 1")
                .as_ref()
                .clone()
        }
    }

    #[test]
    fn only_real_statements_count_as_writes() {
        let w = analysis(false, TxEffect::None);
        assert!(may_write(&w, b"INSERT INTO t VALUES (1)"));
        assert!(may_write(&w, b"BEGIN; INSERT INTO t VALUES (1); COMMIT;"));
        assert!(may_write(&w, b""), "unknown text is a write");
        assert!(!may_write(&w, b"  set work_mem = '8MB';  "));
        assert!(!may_write(&w, b"COMMIT"));
        assert!(!may_write(&w, b"reset all"));
        assert!(!may_write(&analysis(true, TxEffect::None), b"SELECT 1"));
    }
}
