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
        let parse_analysis = match msg {
            FrontendMessage::Parse { sql, .. } if analyses => Some(match self.last_parse.take() {
                Some((text, a)) if text == sql => a,
                _ => self.analyze(sql),
            }),
            _ => None,
        };
        let versions = self.pooled.then_some(&*self.shared);
        let Some(b) = self.backends[role as usize].as_mut() else {
            return;
        };
        let state = &mut self.state;
        match msg {
            FrontendMessage::Query { .. } => {
                b.prepared.remove(&b""[..]);
                state.prepared.remove(&b""[..]);
                if let Some(u) = b.units.back_mut() {
                    if let Some(a) = u.effects.iter().find(|a| names_statements(a)).cloned() {
                        settle_statements(state, &mut b.prepared, u, &a, versions);
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
                let version = next_version(state, versions);
                let analysis = parse_analysis;
                state.prepared.insert(
                    name.clone(),
                    Prepared {
                        version,
                        parse: frame.clone(),
                        sql: sql.clone(),
                        analysis,
                        from_sql: false,
                    },
                );
                b.prepared.insert(name.clone(), version);
                push_token(b, false);
            }
            FrontendMessage::Bind { statement, .. } => forward_bind(state, b, statement, versions),
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

    /// A simple query names the client's statements (`PREPARE`,
    /// `EXECUTE`, `DEALLOCATE`): each must exist on `role` as the client's
    /// version, or not at all when the client has none (so PostgreSQL
    /// answers as on a dedicated connection: 26000 for an unknown name,
    /// 42P05 for a taken one, never another client's statement).
    pub(super) fn align_statements(&mut self, role: Role, a: &Analysis) {
        let names: Vec<Bytes> = statement_names(a)
            .map(|n| Bytes::copy_from_slice(n.as_bytes()))
            .collect();
        self.align_names(role, names);
    }

    /// Before a unit on the primary: the statements the session made with
    /// SQL `PREPARE` exist there (a pooled backend serves one transaction
    /// of a client, then others; a new primary after a failover has none).
    pub(super) fn sync_sql_prepared(&mut self, role: Role) {
        let Some(b) = self.backends[role as usize].as_ref() else {
            return;
        };
        let mut any = false;
        let names: Vec<Bytes> = self
            .state
            .prepared
            .iter()
            .filter(|(_, p)| p.from_sql)
            .inspect(|_| any = true)
            .filter(|(n, p)| b.prepared.get(*n) != Some(&p.version))
            .map(|(n, _)| n.clone())
            .collect();
        self.state.sql_prepared = any;
        if !names.is_empty() {
            self.align_names(role, names);
        }
    }

    /// Makes `role`'s copies of `names` the client's: stale copies closed,
    /// missing ones prepared again, as injected units ahead of the client's
    /// (Close and Parse messages, Sync; then one simple query per SQL
    /// `PREPARE`).
    fn align_names(&mut self, role: Role, names: Vec<Bytes>) {
        let Some(b) = self.backends[role as usize].as_mut() else {
            return;
        };
        let mut wrote = false;
        let mut sql = Vec::new();
        for name in names {
            let p = self.state.prepared.get(&name);
            if p.is_some_and(|p| b.prepared.get(&name) == Some(&p.version)) {
                continue;
            }
            if b.prepared.remove(&name).is_some() {
                FrontendMessage::Close {
                    kind: b'S',
                    name: name.clone(),
                }
                .encode(&mut b.conn.wbuf);
                wrote = true;
            }
            let Some(p) = p else { continue };
            if p.from_sql {
                sql.push(p.parse.clone());
            } else {
                b.conn.wbuf.extend_from_slice(&p.parse);
                wrote = true;
            }
            b.prepared.insert(name, p.version);
        }
        if wrote {
            FrontendMessage::Sync.encode(&mut b.conn.wbuf);
            let mut unit = Unit::new(b.stats.clone());
            unit.injected = true;
            unit.closed = true;
            b.units.push_back(unit);
        }
        for frame in sql {
            // One unit each: a PREPARE that fails (a table dropped since)
            // must not keep the others from running.
            self.inject(role, &frame);
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

/// The analysis deallocates, prepares or executes statements by name.
pub(super) fn names_statements(a: &Analysis) -> bool {
    a.session.iter().any(|e| {
        matches!(
            e,
            SessionEffect::Deallocate { .. }
                | SessionEffect::Prepare { .. }
                | SessionEffect::Execute { .. }
        )
    })
}

/// The statement names an analysis deallocates, prepares or executes by
/// name.
pub(super) fn statement_names(a: &Analysis) -> impl Iterator<Item = &str> {
    a.session.iter().filter_map(|e| match e {
        SessionEffect::Deallocate { name: Some(n) } => Some(n.as_str()),
        SessionEffect::Prepare { name, .. } | SessionEffect::Execute { name } => {
            Some(name.as_str())
        }
        _ => None,
    })
}

/// A new statement version: unique across the proxy in transaction mode
/// (`shared`), since backends pass from client to client.
fn next_version(state: &mut SessionState, shared: Option<&crate::shared::Shared>) -> u64 {
    match shared {
        Some(shared) => shared.statement_version(),
        None => {
            state.next_version += 1;
            state.next_version
        }
    }
}

/// A unit running SQL `DEALLOCATE` / `DISCARD ALL` / `PREPARE` (analysis
/// `a`, its effects in order) was sent to a backend whose statement map is
/// `on`.
///
/// DEALLOCATE: the client's statements it names (all of them for `ALL`)
/// are gone from the session's map at once (kept in the unit, put back if
/// it fails), and their copies on this backend may or may not exist
/// ([`UNKNOWN_VERSION`]: closed before a new Parse). Copies on the other
/// backend keep their version: with no session entry, the next Parse, Bind
/// or Describe of the name there closes them.
///
/// PREPARE: a name the client does not have yet becomes its statement, on
/// this backend too (forgotten if the unit fails); a name it has is left
/// alone (PostgreSQL refuses it with 42P05).
///
/// Not deferred to the unit's completion: PostgreSQL makes and removes
/// prepared statements at once (even if the transaction rolls back), and a
/// pipelined Parse of the same name must see that.
pub(super) fn settle_statements(
    state: &mut super::state::SessionState,
    on: &mut super::state::SessionMap<Bytes, u64>,
    u: &mut Unit,
    a: &Analysis,
    versions: Option<&crate::shared::Shared>,
) {
    for e in &a.session {
        match e {
            SessionEffect::Deallocate { name } => forget_deallocated(state, on, u, name.as_deref()),
            SessionEffect::Prepare { name, statement } => {
                let name = Bytes::copy_from_slice(name.as_bytes());
                if state.prepared.contains_key(&name) {
                    continue;
                }
                let version = next_version(state, versions);
                let sql = Bytes::copy_from_slice(statement.as_bytes());
                let mut parse = bytes::BytesMut::new();
                FrontendMessage::Query { sql: sql.clone() }.encode(&mut parse);
                state.prepared.insert(
                    name.clone(),
                    Prepared {
                        version,
                        parse: parse.freeze(),
                        sql,
                        analysis: Some(std::sync::Arc::new(Analysis::primary())),
                        from_sql: true,
                    },
                );
                state.sql_prepared = true;
                on.insert(name.clone(), version);
                u.sql_prepared.push(name);
            }
            _ => {}
        }
    }
}

fn forget_deallocated(
    state: &mut super::state::SessionState,
    on: &mut super::state::SessionMap<Bytes, u64>,
    u: &mut Unit,
    name: Option<&str>,
) {
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
    if p.from_sql {
        // Replayed before the unit (`sync_sql_prepared`), not inside it.
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
fn forward_bind(
    state: &mut SessionState,
    b: &mut Backend,
    statement: &Bytes,
    versions: Option<&crate::shared::Shared>,
) {
    let named = state
        .prepared
        .get(statement)
        .and_then(|p| p.analysis.as_ref())
        .filter(|a| names_statements(a))
        .cloned();
    if let Some(a) = &named {
        // As for a simple query (`align_statements`), in line: the
        // statements it names must exist here as the client's, or not at all.
        for name in statement_names(a) {
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
    if let (Some(a), Some(u)) = (named, b.units.back_mut()) {
        settle_statements(state, &mut b.prepared, u, &a, versions);
    }
}
