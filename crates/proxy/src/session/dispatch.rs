//! Client messages to backends: splitting the client stream into units,
//! routing each new unit, and the bookkeeping that lets session state follow
//! the client (re-preparing named statements, replaying SETs).
//!
//! Hazards: an injected message's answer must be swallowed exactly (see
//! `Unit::tokens`), or the client's protocol state desynchronises. Frames are
//! copied once into the backend's write buffer; statement texts are never
//! copied on this path (the classifier caches by text).

use super::route::{Resolution, Want};
use super::state::{Prepared, Role, Unit, UNKNOWN_VERSION};
use super::{Flow, Session, SessionError};
use crate::classify::{Analysis, SessionEffect, TxEffect};
use crate::routing::{Refusal, Route, SessionFacts, TxPlace, UnitKind};
use crate::codec::{frame_len, BackendMessage, ErrorInfo, FrontendMessage};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

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
        if self.kind == crate::server::ListenerKind::Primary {
            return (None, None);
        }
        match msg {
            FrontendMessage::Query { sql } => (
                Some(self.shared.classifier.analyze_bytes(sql)),
                Some(sql.clone()),
            ),
            FrontendMessage::Parse { sql, .. } => {
                let a = self.shared.classifier.analyze_bytes(sql);
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
        let route = if forced {
            Route::Primary
        } else {
            let unit = match (&msg, analysis.as_deref()) {
                (FrontendMessage::FunctionCall(_), _) => UnitKind::FunctionCall,
                (_, Some(a)) => UnitKind::Statement(a),
                (_, None) => UnitKind::Unknown,
            };
            crate::routing::decide(&self.route_facts(), unit)
        };
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
            Resolution::Fail(body) => {
                if let Some(fields) = self.refused.take() {
                    tracing::info!(
                        client = %self.peer,
                        "the server refused the session's deferred login: {}",
                        Session::error_text(&fields)
                    );
                    self.io
                        .queue(&BackendMessage::ErrorResponse(super::fatal(&fields)));
                    return Ok(Step::Exit);
                }
                if self.deferred_begin.take().is_some() {
                    self.tx_status = b'I';
                }
                self.io.queue(&BackendMessage::ErrorResponse(body));
                match tag {
                    b'Q' | b'F' | b'S' => self.io.queue(&BackendMessage::ReadyForQuery {
                        status: self.tx_status,
                    }),
                    _ => self.discard_until_sync = true,
                }
                return Ok(Step::Done);
            }
        };
        if !self.active_busy() || self.active != Some(role) {
            self.sync_settings(role);
        }
        let carried_begin = self.deferred_begin.take();
        if let Some(begin) = &carried_begin {
            self.inject(role, begin);
        }
        if let (FrontendMessage::Query { .. }, Some(a)) = (&msg, analysis.as_deref()) {
            if has_deallocate(a) {
                self.prepare_to_deallocate(role, a);
            }
        }
        let Some(b) = self.backends[role as usize].as_mut() else {
            return Ok(Step::Done);
        };
        let stats = b.stats.clone();
        stats
            .served
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let unit = self.new_unit(stats, role, &msg, analysis.as_ref(), text, carried_begin);
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

    /// A statement inside a READ ONLY transaction that runs on a standby
    /// needs the primary: nothing of it runs; the client gets an error that
    /// names the cause, and the transaction is aborted on the standby too
    /// (an injected failing statement), so that what follows behaves as
    /// after any error in a PostgreSQL transaction.
    fn refuse_in_standby_tx(&mut self, tag: u8, refusal: &Refusal) {
        let (code, message) = refusal.error();
        tracing::debug!(client = %self.peer, reason = refusal.reason, "refused a statement in a standby transaction");
        if let Some(role) = self.active {
            self.inject_query(
                role,
                b"DO $pgha$BEGIN RAISE EXCEPTION 'pgha: statement refused in a standby transaction'; END$pgha$",
            );
            if let Some(u) = self.backends[role as usize]
                .as_mut()
                .and_then(|b| b.units.back_mut())
            {
                u.quiet = true;
            }
        }
        self.tx_status = b'E';
        self.io
            .queue(&BackendMessage::ErrorResponse(super::route::error_body(
                &ErrorInfo::error(code, message),
            )));
        match tag {
            b'Q' | b'F' => self.io.queue(&BackendMessage::ReadyForQuery { status: b'E' }),
            _ => self.discard_until_sync = true,
        }
    }

    /// The backend that held the session's transaction was lost (see
    /// `backend_lost`). As in an aborted transaction in PostgreSQL, every
    /// unit fails until the client ends the transaction: a plain ROLLBACK
    /// ends it and is routed as usual (outside a transaction it only warns);
    /// a COMMIT fails, since nothing committed, and ends it; anything else
    /// fails with 08006. Returns false when the unit is to be routed.
    ///
    /// Hazard: failing only the next unit is not enough. Drivers send
    /// messages whose answers they ignore (tokio-postgres closes a dropped
    /// statement with Close + Sync); if that one took the error, the next
    /// statements and the COMMIT would run outside any transaction on a new
    /// backend, and the COMMIT would acknowledge writes that were lost.
    fn refuse_in_lost_tx(&mut self, tag: u8, msg: &FrontendMessage) -> bool {
        let Some(node) = self.tx_lost.clone() else {
            return false;
        };
        match tag {
            // A lone Sync or Flush: nothing to refuse.
            b'S' => {
                self.io.queue(&BackendMessage::ReadyForQuery {
                    status: self.tx_status,
                });
                return true;
            }
            b'H' => return true,
            _ => {}
        }
        let message = match self.tx_effect_of(msg) {
            Some((TxEffect::Rollback, false)) => {
                self.end_lost_tx();
                return false;
            }
            Some((TxEffect::Commit, _)) => {
                self.end_lost_tx();
                format!(
                    "the connection to {node} that held this transaction was lost: \
                     the transaction did not commit"
                )
            }
            _ => format!(
                "the connection to {node} that held this transaction was lost; the transaction \
                 did not commit, and commands are ignored until ROLLBACK"
            ),
        };
        self.io
            .queue(&BackendMessage::ErrorResponse(super::route::error_body(
                &ErrorInfo::error("08006", message),
            )));
        match tag {
            b'Q' | b'F' => self.io.queue(&BackendMessage::ReadyForQuery {
                status: self.tx_status,
            }),
            _ => self.discard_until_sync = true,
        }
        true
    }

    /// The transaction-control effect of the statement `msg` starts (and
    /// whether it chains), for the rare units refused in a lost transaction.
    fn tx_effect_of(&self, msg: &FrontendMessage) -> Option<(TxEffect, bool)> {
        let sql = match msg {
            FrontendMessage::Query { sql } | FrontendMessage::Parse { sql, .. } => sql.clone(),
            FrontendMessage::Bind { statement, .. } => {
                self.state.prepared.get(statement)?.sql.clone()
            }
            _ => return None,
        };
        let a = self.shared.classifier.analyze_bytes(&sql);
        Some((a.tx.clone(), a.chain))
    }

    fn end_lost_tx(&mut self) {
        self.tx_lost = None;
        self.tx_status = b'I';
        self.state.tx_read_only = false;
        self.state.tx_wrote = false;
        self.state.pending.clear();
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
        let retryable = self.kind == crate::server::ListenerKind::Rw
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

    /// Answers a lone `BEGIN` itself (when nothing is in flight) so that a
    /// following `SET TRANSACTION READ ONLY` can still place the transaction
    /// on a standby. Returns true when the message was handled.
    fn defer_begin(&mut self, msg: &FrontendMessage, a: Option<&Analysis>, frame: &Bytes) -> bool {
        let FrontendMessage::Query { sql } = msg else {
            return false;
        };
        let eligible = self.kind == crate::server::ListenerKind::Rw
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
    fn inject(&mut self, role: Role, frame: &Bytes) {
        let Some(b) = self.backends[role as usize].as_mut() else {
            return;
        };
        let mut unit = Unit::new(b.stats.clone());
        unit.injected = true;
        unit.closed = true;
        b.units.push_back(unit);
        b.conn.wbuf.extend_from_slice(frame);
    }

    /// A simple query deallocates the client's statements by name: prepares
    /// those `role` lacks (as an injected unit: Parse, Sync), since the
    /// client sees one statement where the proxy may have prepared it on the
    /// other backend only, and `DEALLOCATE` of a missing name fails.
    fn prepare_to_deallocate(&mut self, role: Role, a: &Analysis) {
        let Some(b) = self.backends[role as usize].as_mut() else {
            return;
        };
        let mut wrote = false;
        for name in deallocated_names(a) {
            let Some((name, p)) = self.state.prepared.get_key_value(name.as_bytes()) else {
                continue;
            };
            if b.prepared.get(name) == Some(&p.version) {
                continue;
            }
            if b.prepared.contains_key(name) {
                FrontendMessage::Close {
                    kind: b'S',
                    name: name.clone(),
                }
                .encode(&mut b.conn.wbuf);
            }
            b.conn.wbuf.extend_from_slice(&p.parse);
            b.prepared.insert(name.clone(), p.version);
            wrote = true;
        }
        if wrote {
            FrontendMessage::Sync.encode(&mut b.conn.wbuf);
            let mut unit = Unit::new(b.stats.clone());
            unit.injected = true;
            unit.closed = true;
            b.units.push_back(unit);
        }
    }

    /// Replays the session's SET state on `role` if it lags behind.
    fn sync_settings(&mut self, role: Role) {
        let Some(b) = self.backends[role as usize].as_mut() else {
            return;
        };
        if b.settings == self.state.settings {
            return;
        }
        let mut sql = String::new();
        for (name, stmt) in &self.state.settings {
            if b.settings.get(name) != Some(stmt) {
                sql.push_str(stmt);
                sql.push_str(";\n");
            }
        }
        for name in b.settings.keys() {
            if !self.state.settings.contains_key(name) {
                sql.push_str("RESET ");
                sql.push_str(name);
                sql.push_str(";\n");
            }
        }
        b.settings = self.state.settings.clone();
        b.prepared.remove(&b""[..]);
        let mut unit = Unit::new(b.stats.clone());
        unit.injected = true;
        unit.closed = true;
        b.units.push_back(unit);
        FrontendMessage::Query {
            sql: Bytes::from(sql),
        }
        .encode(&mut b.conn.wbuf);
    }

    /// Forwards one client message of the current unit, with bookkeeping.
    fn forward(&mut self, role: Role, msg: &FrontendMessage, frame: &Bytes) {
        let Some(b) = self.backends[role as usize].as_mut() else {
            return;
        };
        let state = &mut self.state;
        match msg {
            FrontendMessage::Query { .. } => {
                b.prepared.remove(&b""[..]);
                state.prepared.remove(&b""[..]);
                if let Some(u) = b.units.back_mut() {
                    if let Some(a) = u.effects.iter().find(|a| has_deallocate(a)).cloned() {
                        forget_deallocated(state, &mut b.prepared, u, &a);
                    }
                }
            }
            FrontendMessage::Parse { name, sql, .. } => {
                if !name.is_empty()
                    && !state.prepared.contains_key(name)
                    && b.prepared.contains_key(name)
                {
                    inject_close(b, name);
                }
                state.next_version += 1;
                let version = state.next_version;
                let analysis = (self.kind != crate::server::ListenerKind::Primary).then(|| {
                    match self.last_parse.take() {
                        Some((text, a)) if text == sql => a,
                        _ => self.shared.classifier.analyze_bytes(sql),
                    }
                });
                state.prepared.insert(
                    name.clone(),
                    Prepared {
                        version,
                        parse: frame.clone(),
                        sql: sql.clone(),
                        analysis,
                    },
                );
                b.prepared.insert(name.clone(), version);
                push_token(b, false);
            }
            FrontendMessage::Bind { statement, .. } => {
                let dealloc = state
                    .prepared
                    .get(statement)
                    .and_then(|p| p.analysis.as_ref())
                    .filter(|a| has_deallocate(a))
                    .cloned();
                if let Some(a) = dealloc {
                    // As for a simple query (`prepare_to_deallocate`), in
                    // line: the statements it names must exist here.
                    for name in deallocated_names(&a) {
                        if name.as_bytes() != &statement[..] {
                            let name = Bytes::copy_from_slice(name.as_bytes());
                            ensure_prepared(b, state.prepared.get(&name), &name);
                        }
                    }
                }
                let p = state.prepared.get(statement);
                ensure_prepared(b, p, statement);
                if let Some(u) = b.units.back_mut() {
                    match p.and_then(|p| Some((p.analysis.as_ref()?, &p.sql))) {
                        Some((a, sql)) => {
                            u.write |= may_write(a, sql);
                            if !a.session.is_empty() {
                                u.effects.push(a.clone());
                            }
                        }
                        None => u.write = true,
                    }
                }
                push_token(b, false);
                if let Some(a) = state
                    .prepared
                    .get(statement)
                    .and_then(|p| p.analysis.as_ref())
                    .filter(|a| has_deallocate(a))
                    .cloned()
                {
                    if let Some(u) = b.units.back_mut() {
                        forget_deallocated(state, &mut b.prepared, u, &a);
                    }
                }
            }
            FrontendMessage::Describe { kind: b'S', name } => {
                ensure_prepared(b, state.prepared.get(name), name)
            }
            FrontendMessage::Close { kind, name } => {
                if *kind == b'S' {
                    state.prepared.remove(name);
                    b.prepared.remove(name);
                }
                push_token(b, false);
            }
            FrontendMessage::FunctionCall(_) => {
                if let Some(u) = b.units.back_mut() {
                    u.write = true;
                }
            }
            FrontendMessage::Flush => {
                // The client waits for answers before Sync: nothing may be
                // held back, so this unit can no longer be retried.
                if let Some(r) = b.units.back_mut().and_then(|u| u.retry.take()) {
                    self.spare.put(r);
                }
            }
            _ => {}
        }
        b.conn.wbuf.extend_from_slice(frame);
        if let Some(r) = b.units.back_mut().and_then(|u| u.retry.as_mut()) {
            r.extend_from_slice(frame);
        }
    }
}

fn has_deallocate(a: &Analysis) -> bool {
    a.session
        .iter()
        .any(|e| matches!(e, SessionEffect::Deallocate { .. }))
}

/// The statement names an analysis deallocates by name.
fn deallocated_names(a: &Analysis) -> impl Iterator<Item = &str> {
    a.session.iter().filter_map(|e| match e {
        SessionEffect::Deallocate { name: Some(n) } => Some(n.as_str()),
        _ => None,
    })
}

/// A unit running SQL `DEALLOCATE` / `DISCARD ALL` (analysis `a`) was sent
/// to a backend whose statement map is `on`: the client's statements it
/// names (all of them for `ALL`) are gone from the session's map at once
/// (kept in the unit, put back if it fails), and their copies on this
/// backend may or may not exist ([`UNKNOWN_VERSION`]: closed before a new
/// Parse). Copies on the other backend keep their version: with no session
/// entry, the next Parse, Bind or Describe of the name there closes them.
/// Not deferred to the unit's completion: PostgreSQL removes them at once
/// (even if the transaction rolls back), and a pipelined Parse of the same
/// name must see them gone.
fn forget_deallocated(
    state: &mut super::state::SessionState,
    on: &mut super::state::SessionMap<Bytes, u64>,
    u: &mut Unit,
    a: &Analysis,
) {
    for e in &a.session {
        let SessionEffect::Deallocate { name } = e else {
            continue;
        };
        let names: Vec<Bytes> = match name {
            Some(n) => vec![Bytes::copy_from_slice(n.as_bytes())],
            None => state
                .prepared
                .keys()
                .chain(on.keys())
                .filter(|k| !k.is_empty())
                .cloned()
                .collect(),
        };
        for n in names {
            if let Some(p) = state.prepared.remove(&n) {
                u.deallocated.push((n.clone(), p));
            }
            if let Some(v) = on.get_mut(&n) {
                *v = UNKNOWN_VERSION;
            }
        }
    }
}

/// Whether a statement text may write data (read-your-writes bookkeeping).
/// A single transaction-control or session-setting statement (BEGIN,
/// COMMIT, SET, RESET, DISCARD ...) does not: the transaction's other
/// statements decide.
fn may_write(a: &Analysis, sql: &[u8]) -> bool {
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

/// The command tag of a text that is one `BEGIN` / `START TRANSACTION`
/// statement, with or without transaction modes (the classifier already
/// parsed it as one). Comments or a second statement: `None`.
fn lone_begin(sql: &[u8]) -> Option<&'static str> {
    let text = std::str::from_utf8(sql).ok()?;
    let body = text.trim().trim_end_matches(|c: char| c == ';' || c.is_whitespace());
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

fn push_token(b: &mut super::state::Backend, injected: bool) {
    if let Some(u) = b.units.back_mut() {
        u.push_token(injected);
    }
}

fn inject_close(b: &mut super::state::Backend, name: &Bytes) {
    FrontendMessage::Close {
        kind: b'S',
        name: name.clone(),
    }
    .encode(&mut b.conn.wbuf);
    b.prepared.remove(name);
    push_token(b, true);
}

/// Makes sure backend `b` has the client's current version `p` of statement
/// `name`; with no such statement, that `b` has none either (a copy left
/// from before a SQL `DEALLOCATE` that ran on the other backend is closed,
/// so the client's Bind fails as PostgreSQL's would).
fn ensure_prepared(b: &mut super::state::Backend, p: Option<&Prepared>, name: &Bytes) {
    let Some(p) = p else {
        if !name.is_empty() && b.prepared.contains_key(name) {
            inject_close(b, name);
        }
        return;
    };
    if b.prepared.get(name) == Some(&p.version) {
        return;
    }
    if !name.is_empty() && b.prepared.contains_key(name) {
        inject_close(b, name);
    }
    b.conn.wbuf.extend_from_slice(&p.parse);
    b.prepared.insert(name.clone(), p.version);
    push_token(b, true);
    if let Some(u) = b.units.back_mut() {
        u.reprepared.push(name.clone());
    }
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
