//! Backend output to the client: forwards message runs with one copy,
//! swallows answers to injected messages, holds back the start of a
//! retryable unit's answer until it is known not to be a 25006 refusal,
//! and applies a unit's session effects when its ReadyForQuery arrives.
//!
//! Hazards: the order of client-visible messages must be exactly the order
//! the backend sent them, minus swallowed ones. A backend that dies fails
//! only the units in flight on it.

use super::state::{Backend, Role, SessionState, SpareBufs, TxMark, Unit};
use super::Session;
use crate::classify::SessionEffect;
use crate::codec::backend::error_field;
use crate::codec::{frame_len, BackendMessage, ErrorInfo};
use crate::config::ReadConsistency;
use crate::shared::ListenerKind;
use bytes::{Buf, BytesMut};
use std::time::Instant;

/// What to do with one backend message.
enum Act {
    Forward,
    Drop,
    Hold,
    /// Send held messages, then this one.
    Release,
    /// ReadyForQuery: the head unit is complete.
    Complete,
    /// FATAL/PANIC from the server: the backend is going away.
    Lost,
}

impl Session {
    /// Handles every complete message the active backend has sent.
    pub(super) fn respond(&mut self) -> Result<(), super::SessionError> {
        let Some(role) = self.active else {
            return Ok(());
        };
        let max = self.shared.limits.max_message;
        let mut run = 0usize;
        loop {
            let Some(b) = self.backends[role as usize].as_mut() else {
                return Ok(());
            };
            let (tag, total) = match frame_len(&b.conn.rbuf[run..], max) {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(e) => {
                    flush_run(&mut self.io.wbuf, b, &mut run);
                    self.backend_lost(&format!("invalid message from server: {e}"));
                    return Ok(());
                }
            };
            let act = self.classify(role, tag, run, total);
            let Some(b) = self.backends[role as usize].as_mut() else {
                return Ok(());
            };
            match act {
                Act::Forward => run += total,
                Act::Drop => {
                    flush_run(&mut self.io.wbuf, b, &mut run);
                    b.conn.rbuf.advance(total);
                }
                Act::Hold => {
                    flush_run(&mut self.io.wbuf, b, &mut run);
                    let frame = b.conn.rbuf.split_to(total);
                    if let Some(h) = b.units.front_mut().and_then(|u| u.held.as_mut()) {
                        h.extend_from_slice(&frame);
                    }
                }
                Act::Release => {
                    flush_run(&mut self.io.wbuf, b, &mut run);
                    release(&mut self.io.wbuf, &mut self.spare, b.units.front_mut());
                    run += total;
                }
                Act::Lost => {
                    flush_run(&mut self.io.wbuf, b, &mut run);
                    let text = Session::error_text(&b.conn.rbuf[5..total]);
                    self.backend_lost(&format!("server said: {text}"));
                    return Ok(());
                }
                Act::Complete => {
                    flush_run(&mut self.io.wbuf, b, &mut run);
                    let status = b.conn.rbuf[5];
                    let frame = b.conn.rbuf.split_to(total);
                    self.complete_unit(role, status, &frame);
                }
            }
        }
        if let Some(b) = self.backends[role as usize].as_mut() {
            flush_run(&mut self.io.wbuf, b, &mut run);
        }
        Ok(())
    }

    /// Decides what to do with the message at `rbuf[at..at + total]`.
    fn classify(&mut self, role: Role, tag: u8, at: usize, total: usize) -> Act {
        let kind = self.kind;
        let Some(b) = self.backends[role as usize].as_mut() else {
            return Act::Drop;
        };
        let frame = &b.conn.rbuf[at..at + total];
        if tag == b'S' {
            return parameter_status(kind, &mut self.state, frame, b.units.front());
        }
        if tag == b'E' && is_fatal(&frame[5..]) {
            return Act::Lost;
        }
        let Some(u) = b.units.front_mut() else {
            return match tag {
                b'E' => {
                    tracing::info!(
                        client = %self.peer,
                        "server said outside a query: {}",
                        Session::error_text(&frame[5..])
                    );
                    Act::Drop
                }
                _ => Act::Forward,
            };
        };
        if tag == b'Z' {
            return Act::Complete;
        }
        if u.injected {
            if tag == b'E' {
                u.errored = true;
            }
            if tag == b'E' && !u.quiet {
                tracing::warn!(
                    client = %self.peer,
                    "replaying session state failed: {}",
                    Session::error_text(&frame[5..])
                );
            }
            return Act::Drop;
        }
        if u.discarding {
            return Act::Drop;
        }
        match tag {
            b'1' | b'2' | b'3' if u.pop_token() => Act::Drop,
            b'E' => {
                u.errored = true;
                if let Some(t) = u.tokens.as_mut() {
                    t.clear();
                }
                for name in u.reprepared.drain(..) {
                    b.prepared.insert(name, super::state::UNKNOWN_VERSION);
                }
                if u.held.is_some() && u.retry.is_some() {
                    let fields = &frame[5..];
                    let code = error_field(fields, b'C');
                    // Serializable isolation from a role or database
                    // default (the session's own choices route to the
                    // primary before this): PostgreSQL refuses it at the
                    // first snapshot, before any row.
                    let says = |what: &[u8]| {
                        error_field(fields, b'M')
                            .is_some_and(|m| m.windows(what.len()).any(|w| w == what))
                    };
                    let serializable = code == Some(&b"0A000"[..]) && says(b"serializable");
                    // In a READ ONLY transaction the primary refuses a
                    // write too: only serializable and unlogged are
                    // retried there.
                    let write = code == Some(&b"25006"[..]) && u.retry_begin.is_none();
                    // An unlogged table the catalogue refresh has not seen
                    // yet (created since): the primary can read it.
                    let unlogged =
                        code == Some(&b"0A000"[..]) && says(b"unlogged relations during recovery");
                    if serializable || write || unlogged {
                        self.shared
                            .metrics
                            .retry(crate::metrics::Retry::StandbyRefused);
                        u.discarding = true;
                        u.refused_serializable = serializable;
                        u.held = None;
                        return Act::Drop;
                    }
                }
                if let Some(code) = error_field(&frame[5..], b'C') {
                    self.shared.metrics.error(code);
                }
                hold_or(u, Act::Release)
            }
            b'1' | b'2' | b't' | b'T' | b'n' | b'N' => hold_or(u, Act::Hold),
            b'C' => {
                if let Some(m) = TxMark::from_tag(&frame[5..]) {
                    u.tx_marks.push(m);
                }
                hold_or(u, Act::Release)
            }
            _ => hold_or(u, Act::Release),
        }
    }

    /// The head unit got its ReadyForQuery (`frame`).
    fn complete_unit(&mut self, role: Role, status: u8, frame: &[u8]) {
        let Some(b) = self.backends[role as usize].as_mut() else {
            return;
        };
        let Some(mut u) = b.units.pop_front() else {
            return;
        };
        let before = std::mem::replace(&mut self.tx_status, status);
        if u.injected {
            if u.pin_check && !u.errored {
                tracing::info!(
                    client = %self.peer,
                    "session unpinned: the session state that pinned it ({}) is gone",
                    self.state.pinned.unwrap_or("?")
                );
                self.state.pinned = self.state.pinned_for_good;
            }
            return;
        }
        if u.discarding {
            if u.refused_serializable {
                tracing::info!(
                    client = %self.peer,
                    "a standby refused serializable isolation (a role or database default): \
                     this session's reads run on the primary from now on"
                );
                self.state.serializable_base = true;
                self.state.default_serializable = true;
            } else if let Some(sql) = &u.retry_sql {
                self.shared
                    .classifier
                    .learn_writes(&String::from_utf8_lossy(sql));
                tracing::debug!(
                    "standby refused a read-only-looking statement; running it on the primary"
                );
            }
            if let Some(begin) = u.retry_begin.take() {
                // The transaction failed on the standby: end it there; the
                // retry starts it again on the primary.
                self.inject_query(role, b"ROLLBACK");
                self.deferred_begin = Some(begin);
                self.tx_status = b'T';
            }
            self.retry = u.retry.take().map(BytesMut::freeze);
            return;
        }
        release(&mut self.io.wbuf, &mut self.spare, Some(&mut u));
        if let Some(at) = u.sent_at {
            self.shared
                .metrics
                .completed(role, at.elapsed(), status == b'I');
        }
        if !u.silent_ready {
            self.io.wbuf.extend_from_slice(frame);
        }
        if u.errored {
            // The DEALLOCATE may not have run: the client's statement still
            // exists for it (unless it prepared the name again meanwhile);
            // the backend's copy is marked unknown, so a Bind re-prepares it.
            for (name, p) in u.deallocated.drain(..) {
                self.state.prepared.entry(name).or_insert(p);
            }
            // A failed SQL PREPARE made nothing (or met a name in use).
            for name in u.sql_prepared.drain(..) {
                if self.state.prepared.get(&name).is_some_and(|p| p.from_sql) {
                    self.state.prepared.remove(&name);
                }
                b.prepared.insert(name, super::state::UNKNOWN_VERSION);
            }
        }
        let was_pinned = self.state.pinned.is_some();
        settle_effects(&mut self.state, b, &u, before, status);
        if let (false, Some(reason)) = (was_pinned, self.state.pinned) {
            self.shared.metrics.pinned(reason);
        }
        if self.pooled && role == Role::Primary && status == b'I' && self.state.pinned.is_some() {
            self.pin_check_due = true;
        }
        // Nothing writes in a READ ONLY transaction (one that fell back to
        // the primary must not make the session's next reads wait).
        let read_only_tx = self.state.tx_read_only || self.state.default_read_only;
        if role == Role::Primary && u.write && !read_only_tx {
            self.state.tx_wrote = true;
        }
        if status == b'I' {
            self.state.tx_read_only = false;
        }
        // With `read_consistency = session`, what a read on the primary saw
        // bounds the session's next standby reads too (monotonic reads).
        let session_mode = self.kind == ListenerKind::Rw
            && self.shared.settings.read_consistency == ReadConsistency::Session;
        if status == b'I' && (self.state.tx_wrote || (session_mode && role == Role::Primary)) {
            self.state.tx_wrote = false;
            self.state.last_write = Some(Instant::now());
            self.state.ryw_target = None;
        }
    }

    /// The active backend failed: fail its work in flight, keep the client.
    pub(super) fn backend_lost(&mut self, reason: &str) {
        let Some(role) = self.active else { return };
        let Some(mut b) = self.backends[role as usize].take() else {
            return;
        };
        tracing::warn!(client = %self.peer, backend = %b.conn.node.name, "lost backend connection: {reason}");
        self.drop_backend(role);
        // A transaction open on it is gone with it. The client must learn
        // that on its next statement *and every one after*, until it ends
        // the transaction: a single error can land on a message whose answer
        // the driver ignores, and a COMMIT sent later to another backend
        // would then "succeed" outside any transaction.
        let opened = b.units.iter().any(|u| u.opens_tx);
        let in_tx = (self.tx_status != b'I' || opened) && self.deferred_begin.is_none();
        if in_tx {
            self.tx_lost = Some(b.conn.node.name.clone());
        }
        let after = if in_tx { b'E' } else { b'I' };
        if b.units.is_empty() && self.open != Some(role) {
            if in_tx {
                self.tx_status = after;
            }
            return;
        }
        let head_retry = b.units.front_mut().and_then(|u| u.retry.take());
        if let (Some(bytes), 1, false) = (head_retry, b.units.len(), in_tx) {
            if self.open != Some(role) {
                self.shared
                    .metrics
                    .retry(crate::metrics::Retry::BackendLost);
                self.retry = Some(bytes.freeze());
                self.tx_status = b'I';
                return;
            }
        }
        let err =
            ErrorInfo::error(
                "08006",
                format!(
                "lost the connection to {} \"{}\" ({reason}); the statement's outcome is unknown \
                 and any open transaction did not commit through this connection",
                if role == Role::Primary { "primary" } else { "standby" },
                b.conn.node.name
            ),
            );
        for u in b.units.drain(..) {
            if u.injected {
                continue;
            }
            self.shared.metrics.error(b"08006");
            err.encode(&mut self.io.wbuf);
            if u.closed && !u.silent_ready {
                BackendMessage::ReadyForQuery { status: after }.encode(&mut self.io.wbuf);
            }
        }
        if self.open == Some(role) {
            self.open = None;
            self.discard_until_sync = true;
        }
        self.tx_status = after;
        self.state.tx_wrote = false;
    }
}

/// FATAL or PANIC: the server ends the connection after this message.
fn is_fatal(fields: &[u8]) -> bool {
    let severity = error_field(fields, b'V').or_else(|| error_field(fields, b'S'));
    matches!(severity, Some(b"FATAL") | Some(b"PANIC"))
}

fn hold_or(u: &mut Unit, otherwise: Act) -> Act {
    match (u.held.is_some(), otherwise) {
        // A Flush gave up the retry: the client is waiting for these.
        (true, Act::Hold) if u.retry.is_some() => Act::Hold,
        // `release` ends the retry (and keeps the buffers for a later unit).
        (true, _) => Act::Release,
        (false, Act::Hold) => Act::Forward,
        (false, other) => other,
    }
}

fn parameter_status(
    kind: ListenerKind,
    state: &mut SessionState,
    frame: &[u8],
    head: Option<&Unit>,
) -> Act {
    let body = &frame[5..];
    let Ok(Some(BackendMessage::ParameterStatus { name, value })) =
        BackendMessage::decode(&mut BytesMut::from(frame), usize::MAX)
    else {
        let _ = body;
        return Act::Forward;
    };
    if &name[..] == b"default_transaction_read_only" {
        if let Some(on) = own_read_only_default(head, &value) {
            state.default_read_only = on;
        }
    }
    if kind == ListenerKind::Rw && &name[..] == b"in_hot_standby" {
        return Act::Drop;
    }
    match head {
        Some(u) if u.injected || u.discarding => Act::Drop,
        Some(u) if u.held.is_some() => Act::Hold,
        _ => Act::Forward,
    }
}

/// The session's own `default_transaction_read_only` once `head` is done,
/// when `head` is a client unit that sets or resets it (`reported` is the
/// server's value). Any other report is the server configuration's doing,
/// not the session's: pgha's fence on a primary is an ALTER SYSTEM and a
/// reload, and taking its "on" for the session's choice sent every later
/// transaction of the session to a standby (25006 on each write) long after
/// the fence was gone, since new backends do not report it again. A RESET
/// goes back to the session's default: read-write for routing.
fn own_read_only_default(head: Option<&Unit>, reported: &[u8]) -> Option<bool> {
    let u = head.filter(|u| !u.injected)?;
    let mut out = None;
    for e in u.effects.iter().flat_map(|a| a.session.iter()) {
        match e {
            SessionEffect::Set { name, .. } if name == "default_transaction_read_only" => {
                out = Some(reported == b"on")
            }
            SessionEffect::Reset { name, .. } if name == "default_transaction_read_only" => {
                out = Some(false)
            }
            SessionEffect::ResetAll => out = Some(false),
            _ => {}
        }
    }
    out
}

/// A forwarded run at least this long moves to the client buffer without a
/// copy (the client buffer then takes over the backend buffer's memory);
/// shorter ones are copied, so both buffers keep their memory between
/// transactions (no allocation per read).
const MOVE_MIN: usize = 16 * 1024;

/// Moves the forwarded run at the front of the backend buffer to the client.
fn flush_run(out: &mut BytesMut, b: &mut Backend, run: &mut usize) {
    if *run == 0 {
        return;
    }
    if out.is_empty() && *run == b.conn.rbuf.len() && *run >= MOVE_MIN {
        *out = b.conn.rbuf.split();
    } else {
        out.extend_from_slice(&b.conn.rbuf[..*run]);
        b.conn.rbuf.advance(*run);
    }
    *run = 0;
}

/// Sends what a unit held back; the unit can no longer be retried (its
/// buffers go to `spare`).
fn release(out: &mut BytesMut, spare: &mut SpareBufs, u: Option<&mut Unit>) {
    if let Some(u) = u {
        if let Some(h) = &u.held {
            out.extend_from_slice(h);
        }
        spare.reclaim(u);
    }
}

/// Settles a completed unit's session effects. Pins apply at once when the
/// unit succeeded. SET/RESET follow PostgreSQL's rule: inside a transaction
/// they wait in `state.pending` and count only once it commits; `ROLLBACK`
/// drops them, `ROLLBACK TO SAVEPOINT` drops those since the latest
/// savepoint. `before`/`after` are the transaction status around the unit.
/// (Within one multi-statement unit, marks are settled before its SETs.)
fn settle_effects(state: &mut SessionState, b: &mut Backend, u: &Unit, before: u8, after: u8) {
    if before == b'I' && !state.pending.is_empty() {
        // Left over from a transaction whose backend was lost.
        state.pending.clear();
    }
    for m in &u.tx_marks {
        match m {
            TxMark::Savepoint => state.pending.push(None),
            TxMark::Release => {
                if let Some(i) = state.pending.iter().rposition(Option::is_none) {
                    state.pending.remove(i);
                }
            }
            TxMark::Rollback if after == b'I' => state.pending.clear(),
            TxMark::Rollback => {
                // ROLLBACK TO SAVEPOINT (or ROLLBACK AND CHAIN, which finds
                // no savepoint mark and drops everything).
                let keep = state
                    .pending
                    .iter()
                    .rposition(Option::is_none)
                    .map_or(0, |i| i + 1);
                state.pending.truncate(keep);
            }
            TxMark::Commit => commit_pending(state, b),
        }
    }
    let rolled_back = u.tx_marks.last() == Some(&TxMark::Rollback);
    if after == b'I' {
        // Ended without a COMMIT/ROLLBACK tag (PREPARE TRANSACTION): kept.
        commit_pending(state, b);
    }
    if u.errored {
        return;
    }
    for e in u.effects.iter().flat_map(|a| a.session.iter()) {
        match e {
            SessionEffect::Pin { reason } => {
                if state.pinned.is_none() {
                    tracing::debug!("session pinned to the primary: {reason}");
                }
                state.pinned = Some(reason);
                if !crate::pool::pin_can_lift(reason) {
                    state.pinned_for_good = Some(reason);
                }
            }
            // Not transactional; settled when the unit was sent.
            SessionEffect::Deallocate { .. }
            | SessionEffect::Prepare { .. }
            | SessionEffect::Execute { .. } => {}
            e if after != b'I' => state.pending.push(Some(e.clone())),
            e if !rolled_back => apply_setting(state, b, e),
            _ => {}
        }
    }
}

fn commit_pending(state: &mut SessionState, b: &mut Backend) {
    for e in std::mem::take(&mut state.pending).iter().flatten() {
        apply_setting(state, b, e);
    }
}

/// Records a committed SET/RESET for the session and backend `b`.
fn apply_setting(state: &mut SessionState, b: &mut Backend, e: &SessionEffect) {
    match e {
        SessionEffect::Set { name, .. } if name == "default_transaction_isolation" => {
            // A value that is not a constant may be serializable.
            state.default_serializable = e.default_serializable().unwrap_or(true);
        }
        SessionEffect::Reset { name, .. } if name == "default_transaction_isolation" => {
            state.default_serializable = state.serializable_base;
        }
        SessionEffect::ResetAll => state.default_serializable = state.serializable_base,
        _ => {}
    }
    match e {
        SessionEffect::Set { name, statement } => {
            state.settings.insert(name.clone(), statement.clone());
            b.settings.insert(name.clone(), statement.clone());
        }
        SessionEffect::Reset { name, .. } => {
            state.settings.remove(name);
            b.settings.remove(name);
        }
        SessionEffect::ResetAll => {
            state.settings.clear();
            b.settings.clear();
        }
        SessionEffect::Pin { .. }
        | SessionEffect::Deallocate { .. }
        | SessionEffect::Prepare { .. }
        | SessionEffect::Execute { .. } => {}
    }
}
