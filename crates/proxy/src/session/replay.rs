//! Session state onto a backend: SET replay before a unit, the client's
//! prepared statements re-prepared (or closed) where a unit needs them, and
//! SQL `DEALLOCATE` / `DISCARD ALL` bookkeeping.
//!
//! Hazard: an injected message's answer must be swallowed exactly (see
//! `Unit::tokens`), or the client's protocol state desynchronises.

use super::dispatch::may_write;
use super::state::{Backend, Prepared, Role, SessionState, Unit, UNKNOWN_VERSION};
use super::Session;
use crate::classify::{Analysis, SessionEffect};
use crate::codec::FrontendMessage;
use bytes::Bytes;

/// The most client bytes of one unit kept for a retry on the primary.
const RETRY_MAX_BYTES: usize = 1 << 20;

impl Session {
    /// Forwards one client message of the current unit, with bookkeeping.
    pub(super) fn forward(&mut self, role: Role, msg: &FrontendMessage, frame: &Bytes) {
        let analyses = self.analyses();
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
                let version = if self.pooled {
                    self.shared.statement_version()
                } else {
                    state.next_version += 1;
                    state.next_version
                };
                let analysis = analyses.then(|| match self.last_parse.take() {
                    Some((text, a)) if text == sql => a,
                    _ => self.shared.classifier.analyze_bytes(sql),
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
            FrontendMessage::Bind { statement, .. } => forward_bind(state, b, statement),
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
        if let Some(u) = b.units.back_mut() {
            match u.retry.as_mut() {
                // A unit this large is not kept for a retry: memory per
                // session stays bounded whatever a client sends before Sync.
                Some(r) if r.len() + frame.len() > RETRY_MAX_BYTES => {
                    if let Some(r) = u.retry.take() {
                        self.spare.put(r);
                    }
                }
                Some(r) => r.extend_from_slice(frame),
                None => {}
            }
        }
    }

    /// A simple query deallocates the client's statements by name: prepares
    /// those `role` lacks (as an injected unit: Parse, Sync), since the
    /// client sees one statement where the proxy may have prepared it on the
    /// other backend only, and `DEALLOCATE` of a missing name fails.
    pub(super) fn prepare_to_deallocate(&mut self, role: Role, a: &Analysis) {
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
    pub(super) fn sync_settings(&mut self, role: Role) {
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
}

pub(super) fn has_deallocate(a: &Analysis) -> bool {
    a.session
        .iter()
        .any(|e| matches!(e, SessionEffect::Deallocate { .. }))
}

/// The statement names an analysis deallocates by name.
pub(super) fn deallocated_names(a: &Analysis) -> impl Iterator<Item = &str> {
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
pub(super) fn forget_deallocated(
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

pub(super) fn push_token(b: &mut super::state::Backend, injected: bool) {
    if let Some(u) = b.units.back_mut() {
        u.push_token(injected);
    }
}

pub(super) fn inject_close(b: &mut super::state::Backend, name: &Bytes) {
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
pub(super) fn ensure_prepared(b: &mut super::state::Backend, p: Option<&Prepared>, name: &Bytes) {
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

/// Bookkeeping for a client's Bind of `statement` on backend `b`: the
/// statement (and any a SQL `DEALLOCATE` in it names) exists there in the
/// client's version first; the unit's write flag and session effects.
fn forward_bind(state: &mut SessionState, b: &mut Backend, statement: &Bytes) {
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
