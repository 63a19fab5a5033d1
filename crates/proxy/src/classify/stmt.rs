//! Classification of one parsed text, statement by statement: read-only or
//! not, transaction effect, session effects.
//!
//! Hazards:
//! - Everything not positively recognised as read-only is "primary".
//! - `literal_sensitive` must be set whenever the result depends on the value
//!   of a literal (SET statements, `set_config` arguments): such results are
//!   cached by exact text only, never by shape.

use pg_query::protobuf::{self, a_const::Val, node::Node as N};

use super::functions::{CatalogSnapshot, Verdict};
use super::normalize;
use super::parser::{parse, Parsed};
use super::reason;
use super::walk;
use super::{Analysis, SessionEffect, TxEffect};

/// `CURSOR_OPT_HOLD` from PostgreSQL's parsenodes.h.
const CURSOR_OPT_HOLD: i32 = 0x0020;

/// The classification of one text.
pub struct Outcome {
    pub analysis: Analysis,
    /// The result depends on literal values: cache by exact text only.
    pub literal_sensitive: bool,
    /// A statement other than transaction control is not read-only.
    other_writes: bool,
}

/// What unparseable text gets: primary, no effects.
pub fn primary() -> Analysis {
    Analysis {
        read_only: false,
        tx: TxEffect::None,
        session: Vec::new(),
        chain: false,
        standby_in_tx: false,
        primary_reason: None,
        serializable: false,
    }
}

/// Parse and classify `sql`. Never panics on bad input.
pub fn classify_text(sql: &str, depth_bound: usize, snap: &CatalogSnapshot) -> Outcome {
    let parsed = match parse(sql, depth_bound) {
        Parsed::Tree(parsed) => parsed,
        Parsed::Invalid => {
            return Outcome {
                analysis: primary(),
                literal_sensitive: false,
                other_writes: true,
            }
        }
        Parsed::NotAnalysed => {
            // It may hold anything, SET or LISTEN included: keep the session
            // where that would have happened.
            let mut analysis = primary();
            analysis.session.push(SessionEffect::Pin {
                reason: "statement text not analysed",
            });
            return Outcome {
                analysis,
                literal_sensitive: false,
                other_writes: true,
            };
        }
    };
    let mut acc = Outcome {
        analysis: Analysis {
            read_only: true,
            tx: TxEffect::None,
            session: Vec::new(),
            chain: false,
            standby_in_tx: true,
            primary_reason: None,
            serializable: false,
        },
        literal_sensitive: false,
        other_writes: false,
    };
    for raw in &parsed.protobuf.stmts {
        let text = statement_text(sql, raw);
        match raw.stmt.as_ref().and_then(|n| n.node.as_ref()) {
            Some(node) => classify_stmt(node, text, snap, &mut acc),
            None => {
                acc.analysis.read_only = false;
                acc.analysis.standby_in_tx = false;
            }
        }
    }
    if acc.other_writes {
        // `DELETE ...; BEGIN READ ONLY` must not be sent to a standby for
        // the sake of its BEGIN.
        if let TxEffect::Begin { read_only } = &mut acc.analysis.tx {
            *read_only = false;
        }
    }
    if acc.analysis.serializable {
        acc.analysis.read_only = false;
        acc.analysis.standby_in_tx = false;
        acc.analysis.primary_reason = Some(reason::SERIALIZABLE);
    }
    acc
}

/// The source text of one statement of a (possibly multi-statement) text.
fn statement_text<'a>(sql: &'a str, raw: &protobuf::RawStmt) -> &'a str {
    let start = usize::try_from(raw.stmt_location).unwrap_or(0);
    let end = match usize::try_from(raw.stmt_len) {
        Ok(0) | Err(_) => sql.len(),
        Ok(len) => start.saturating_add(len).min(sql.len()),
    };
    // Byte offsets; empty (never the whole text: a SET's replay text must
    // hold that statement only) if they do not slice.
    sql.get(start..end).unwrap_or("").trim()
}

fn pin(acc: &mut Outcome, reason: &'static str) {
    acc.analysis.session.push(SessionEffect::Pin { reason });
}

fn because(acc: &mut Outcome, why: Option<&'static str>) {
    if acc.analysis.primary_reason.is_none() {
        acc.analysis.primary_reason = why;
    }
}

/// How the features of one statement (or function body) judge.
struct Judged {
    /// Nothing in it writes, locks, changes session state, or reads state
    /// local to the server.
    clean: bool,
    /// The first reason found, beyond "it may write".
    reason: Option<&'static str>,
    session_lock: bool,
    set_configs: usize,
}

fn judge_features(feats: &walk::Features, snap: &CatalogSnapshot) -> Judged {
    let mut ok = true;
    let mut why: Option<&'static str> = None;
    let mut note = |r: Option<&'static str>| {
        if why.is_none() {
            why = r;
        }
    };
    let mut set_configs = 0usize;
    let mut session_lock = false;
    for f in &feats.functions {
        match snap.judge(f) {
            Verdict::ReadOnly | Verdict::CurrentSetting => {}
            Verdict::Primary(r) => {
                ok = false;
                note(r);
            }
            Verdict::SessionLock => {
                session_lock = true;
                note(Some(reason::ADVISORY_LOCK));
            }
            Verdict::SetConfig => set_configs += 1,
        }
    }
    for s in &feats.settings {
        if !s.as_deref().is_some_and(|n| snap.session_setting(n)) {
            ok = false;
            note(Some(reason::SERVER_LOCAL));
        }
    }
    for r in &feats.relations {
        if let Some(r) = snap.relation(r.schema.as_deref(), &r.name) {
            ok = false;
            note(r);
        }
    }
    if feats.temp {
        note(Some(reason::TEMPORARY));
    }
    let operators_ok = !feats.operators.iter().any(|o| snap.volatile_operator(o));
    Judged {
        clean: ok
            && operators_ok
            && set_configs == 0
            && !session_lock
            && !feats.dml
            && !feats.locking
            && !feats.into
            && !feats.temp,
        reason: why,
        session_lock,
        set_configs,
    }
}

/// The statement an `EXECUTE` runs, also under EXPLAIN or CREATE TABLE AS.
fn executed_name(node: &N) -> Option<&str> {
    match node {
        N::ExecuteStmt(e) => Some(&e.name),
        N::ExplainStmt(e) => executed_name(e.query.as_deref()?.node.as_ref()?),
        N::CreateTableAsStmt(c) => executed_name(c.query.as_deref()?.node.as_ref()?),
        _ => None,
    }
}

fn classify_stmt(node: &N, text: &str, snap: &CatalogSnapshot, acc: &mut Outcome) {
    if let Some(name) = executed_name(node) {
        acc.analysis.session.push(SessionEffect::Execute {
            name: name.to_string(),
        });
    }
    let feats = walk::features(node);
    let judged = judge_features(&feats, snap);
    let clean = judged.clean;
    if judged.session_lock {
        pin(acc, "session advisory lock");
        because(acc, Some(reason::ADVISORY_LOCK));
    }
    if feats.temp {
        pin(acc, "temporary relation");
        because(acc, Some(reason::TEMPORARY));
    }
    if !feats.settings.is_empty() {
        // current_setting('name'): the answer depends on the literal.
        acc.literal_sensitive = true;
    }
    if judged.set_configs > 0 {
        acc.literal_sensitive = true;
        set_config_effects(node, judged.set_configs, acc);
    }
    let is_select = |n: Option<&protobuf::Node>| {
        matches!(n.and_then(|q| q.node.as_ref()), Some(N::SelectStmt(_)))
    };
    // (read-only, standby_in_tx)
    let (read_only, in_tx) = match node {
        N::SelectStmt(_) => {
            because(acc, judged.reason);
            (clean, clean)
        }
        N::VariableShowStmt(s) => {
            let ok = snap.session_setting(&s.name);
            if !ok {
                because(acc, Some(reason::SERVER_LOCAL));
            }
            (ok, ok)
        }
        N::ExplainStmt(e) => {
            because(acc, judged.reason);
            let ok = clean && is_select(e.query.as_deref());
            (ok, ok)
        }
        N::TransactionStmt(t) => (false, transaction(t, acc)),
        N::VariableSetStmt(s) => {
            acc.literal_sensitive = true;
            (false, variable_set(s, text, acc))
        }
        N::DiscardStmt(d) => {
            if d.target == protobuf::DiscardMode::DiscardAll as i32 {
                acc.analysis.session.push(SessionEffect::ResetAll);
                acc.analysis
                    .session
                    .push(SessionEffect::Deallocate { name: None });
            }
            (false, false)
        }
        N::DeallocateStmt(d) => {
            // Not a write, but it must reach the backend holding the
            // statement: the session decides (see session::dispatch).
            let name = (!d.isall && !d.name.is_empty()).then(|| d.name.clone());
            acc.analysis
                .session
                .push(SessionEffect::Deallocate { name });
            (false, false)
        }
        N::ListenStmt(_) => {
            pin(acc, "LISTEN");
            because(acc, Some(reason::LISTEN_NOTIFY));
            (false, false)
        }
        N::UnlistenStmt(_) | N::NotifyStmt(_) => {
            because(acc, Some(reason::LISTEN_NOTIFY));
            (false, false)
        }
        N::DeclareCursorStmt(d) => {
            if d.options & CURSOR_OPT_HOLD != 0 {
                pin(acc, "WITH HOLD cursor");
                because(acc, Some(reason::WITH_HOLD));
                (false, false)
            } else {
                because(acc, judged.reason);
                (false, clean && is_select(d.query.as_deref()))
            }
        }
        N::FetchStmt(_) | N::ClosePortalStmt(_) => (false, true),
        N::PrepareStmt(p) => {
            // The text is replayed: cache by exact text.
            acc.literal_sensitive = true;
            acc.analysis.session.push(SessionEffect::Prepare {
                name: p.name.clone(),
                statement: text.to_string(),
            });
            (false, false)
        }
        N::LoadStmt(_) => {
            pin(acc, "LOAD");
            (false, false)
        }
        _ => (false, false),
    };
    acc.analysis.read_only &= read_only;
    acc.analysis.standby_in_tx &= in_tx;
    acc.other_writes |= !read_only && !matches!(node, N::TransactionStmt(_));
}

/// Records the transaction effect; returns whether the statement may run
/// in a READ ONLY transaction on a standby with the primary's outcome.
fn transaction(t: &protobuf::TransactionStmt, acc: &mut Outcome) -> bool {
    use protobuf::TransactionStmtKind as K;
    let kind = K::try_from(t.kind);
    let effect = match kind {
        Ok(K::TransStmtBegin | K::TransStmtStart) => {
            if isolation_option(&t.options).as_deref() == Some("serializable") {
                acc.analysis.serializable = true;
            }
            TxEffect::Begin {
                read_only: read_only_option(&t.options).unwrap_or(false),
            }
        }
        Ok(K::TransStmtCommit) => TxEffect::Commit,
        Ok(K::TransStmtRollback) => TxEffect::Rollback,
        // The session's transaction ends (its writes become visible only at
        // COMMIT PREPARED, which runs on the primary like any write).
        Ok(K::TransStmtPrepare) => TxEffect::Commit,
        Ok(K::TransStmtSavepoint | K::TransStmtRelease | K::TransStmtRollbackTo) => return true,
        _ => return false,
    };
    acc.analysis.chain = t.chain && matches!(effect, TxEffect::Commit | TxEffect::Rollback);
    acc.analysis.tx = effect;
    !matches!(kind, Ok(K::TransStmtPrepare))
}

/// The last `transaction_isolation` option in a BEGIN / SET TRANSACTION /
/// SET SESSION CHARACTERISTICS list (lower case).
fn isolation_option(options: &[protobuf::Node]) -> Option<String> {
    let mut out = None;
    for o in options {
        if let Some(N::DefElem(d)) = o.node.as_ref() {
            if d.defname == "transaction_isolation" {
                out = Some(
                    d.arg
                        .as_ref()
                        .and_then(|a| a.node.as_ref())
                        .and_then(const_string)
                        .unwrap_or_default(),
                );
            }
        }
    }
    out
}

/// The lower-case value of a string (or identifier-like) constant.
fn const_string(node: &N) -> Option<String> {
    let N::AConst(c) = node else { return None };
    match c.val.as_ref()? {
        Val::Sval(s) => Some(s.sval.trim().to_ascii_lowercase()),
        _ => None,
    }
}

/// The value a `Set` statement gives to `default_transaction_isolation`
/// (lower case).
pub fn default_isolation_value(statement: &str) -> Option<String> {
    match &first_statement(statement)? {
        N::VariableSetStmt(s) if s.name == "SESSION CHARACTERISTICS" => isolation_option(&s.args),
        N::VariableSetStmt(s) if s.name == "default_transaction_isolation" => {
            s.args.first()?.node.as_ref().and_then(const_string)
        }
        N::SelectStmt(s) => {
            let N::ResTarget(r) = s.target_list.first()?.node.as_ref()? else {
                return None;
            };
            let N::FuncCall(f) = r.val.as_ref()?.node.as_ref()? else {
                return None;
            };
            let name = f.args.first()?.node.as_ref().and_then(const_string)?;
            if name != "default_transaction_isolation" {
                return None;
            }
            f.args.get(1)?.node.as_ref().and_then(const_string)
        }
        _ => None,
    }
}

/// A LANGUAGE sql function body, parsed once per refresh and judged against
/// each catalogue snapshot while the catalogue settles.
#[derive(Debug)]
pub struct Body {
    statements: Vec<walk::Features>,
}

/// Parse a function body: `prosrc`, every statement of which must be a
/// SELECT, or (`atomic`) the `CREATE FUNCTION` text of a `BEGIN ATOMIC` /
/// `RETURN` body, whose body must hold only SELECT / RETURN. `None`: not
/// read-only whatever it calls.
pub fn parse_body(text: &str, atomic: bool) -> Option<Body> {
    let lexed = normalize::lex(text);
    let Parsed::Tree(parsed) = parse(text, lexed.depth_bound) else {
        return None;
    };
    let nodes = parsed
        .protobuf
        .stmts
        .iter()
        .map(|raw| raw.stmt.as_ref().and_then(|n| n.node.as_ref()));
    let mut statements = Vec::new();
    if atomic {
        let mut nodes = nodes;
        let Some(Some(N::CreateFunctionStmt(c))) = nodes.next() else {
            return None;
        };
        let body = c.sql_body.as_deref()?;
        let feats = walk::features(body);
        if feats.other_statement {
            return None;
        }
        statements.push(feats);
    } else {
        for node in nodes {
            let node @ N::SelectStmt(_) = node? else {
                return None;
            };
            statements.push(walk::features(node));
        }
    }
    Some(Body { statements })
}

/// `None` when a parsed body (or view definition) is read-only on a
/// standby by the classifier's rules against `snap`; else `Some` of the
/// first reason found (`Some(None)`: it may write).
pub fn body_verdict(body: &Body, snap: &CatalogSnapshot) -> Option<Option<&'static str>> {
    body.statements.iter().find_map(|f| {
        let j = judge_features(f, snap);
        (!j.clean).then_some(j.reason)
    })
}

/// The last `transaction_read_only` option in a BEGIN / SET TRANSACTION list.
fn read_only_option(options: &[protobuf::Node]) -> Option<bool> {
    let mut out = None;
    for o in options {
        if let Some(N::DefElem(d)) = o.node.as_ref() {
            if d.defname == "transaction_read_only" {
                out = Some(
                    d.arg
                        .as_ref()
                        .and_then(|a| a.node.as_ref())
                        .and_then(const_bool)
                        .unwrap_or(false),
                );
            }
        }
    }
    out
}

/// The boolean value of a constant, as PostgreSQL's `parse_bool` reads it.
pub fn const_bool(node: &N) -> Option<bool> {
    let N::AConst(c) = node else { return None };
    match c.val.as_ref()? {
        Val::Ival(i) => Some(i.ival != 0),
        Val::Boolval(b) => Some(b.boolval),
        Val::Sval(s) => parse_bool(&s.sval),
        _ => None,
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    let s = s.trim().to_ascii_lowercase();
    match s.as_str() {
        "" => None,
        "1" | "on" => Some(true),
        "0" => Some(false),
        _ if "true".starts_with(&s) || "yes".starts_with(&s) => Some(true),
        _ if "false".starts_with(&s) || "no".starts_with(&s) => Some(false),
        _ if s.len() >= 2 && "off".starts_with(&s) => Some(false),
        _ => None,
    }
}

/// Records the effects of a SET / RESET; returns whether it may run in a
/// READ ONLY transaction on a standby with the primary's outcome.
fn variable_set(s: &protobuf::VariableSetStmt, text: &str, acc: &mut Outcome) -> bool {
    use protobuf::VariableSetKind as K;
    let name = s.name.as_str();
    let transaction_scoped = name.starts_with("transaction_");
    let statement = || text.to_owned();
    if text.is_empty() {
        pin(acc, "SET without a replayable text");
        return false;
    }
    let first_value = || s.args.first().and_then(|a| a.node.as_ref());
    match K::try_from(s.kind) {
        Ok(K::VarSetMulti) => match name {
            "TRANSACTION" => {
                let serializable = isolation_option(&s.args).as_deref() == Some("serializable");
                acc.analysis.serializable |= serializable;
                let read_only = read_only_option(&s.args);
                if read_only == Some(true) {
                    acc.analysis.tx = TxEffect::SetTransactionReadOnly;
                }
                // READ WRITE as a transaction's first statement succeeds on
                // the primary, fails on a standby.
                !serializable && read_only != Some(false)
            }
            "SESSION CHARACTERISTICS" => {
                session_characteristics(&s.args, text, acc);
                true
            }
            _ => false,
        },
        Ok(K::VarSetValue | K::VarSetCurrent | K::VarSetDefault | K::VarReset)
            if name == "transaction_read_only" =>
        {
            // DEFAULT and RESET take the session default, unknown here.
            let value = first_value().and_then(const_bool);
            if value == Some(true) {
                acc.analysis.tx = TxEffect::SetTransactionReadOnly;
            }
            value == Some(true)
        }
        Ok(K::VarSetValue | K::VarSetCurrent | K::VarSetDefault | K::VarReset)
            if name == "transaction_isolation" =>
        {
            // DEFAULT, RESET and FROM CURRENT take a value not known here.
            let value = first_value().and_then(const_string);
            let serializable = value.as_deref().is_none_or(|v| v == "serializable");
            acc.analysis.serializable |= serializable;
            !serializable
        }
        Ok(K::VarSetValue | K::VarSetCurrent) if !transaction_scoped && !s.is_local => {
            acc.analysis.session.push(SessionEffect::Set {
                name: name.to_owned(),
                statement: statement(),
            });
            true
        }
        Ok(K::VarSetDefault | K::VarReset) if !transaction_scoped && !s.is_local => {
            acc.analysis.session.push(SessionEffect::Reset {
                name: name.to_owned(),
                statement: statement(),
            });
            true
        }
        Ok(K::VarResetAll) => {
            acc.analysis.session.push(SessionEffect::ResetAll);
            true
        }
        // SET LOCAL, and the remaining transaction_* settings
        // (transaction_deferrable).
        Ok(K::VarSetValue | K::VarSetCurrent | K::VarSetDefault | K::VarReset) => true,
        _ => false,
    }
}

/// `SET SESSION CHARACTERISTICS AS TRANSACTION ...` sets the session
/// defaults of the transaction modes it lists.
fn session_characteristics(args: &[protobuf::Node], text: &str, acc: &mut Outcome) {
    for a in args {
        let Some(N::DefElem(d)) = a.node.as_ref() else {
            continue;
        };
        let name = match d.defname.as_str() {
            "transaction_read_only" => "default_transaction_read_only",
            "transaction_isolation" => "default_transaction_isolation",
            "transaction_deferrable" => "default_transaction_deferrable",
            _ => continue,
        };
        acc.analysis.session.push(SessionEffect::Set {
            name: name.to_owned(),
            statement: text.to_owned(),
        });
    }
}

/// `set_config` calls: a plain `SELECT set_config('name', 'value', false)`
/// (no FROM, no WHERE) becomes a replayable `Set`; a local one has no
/// session effect; anything else pins the session to the primary.
fn set_config_effects(node: &N, count: usize, acc: &mut Outcome) {
    let mut effects = Vec::new();
    if let N::SelectStmt(s) = node {
        let simple = s.from_clause.is_empty()
            && s.where_clause.is_none()
            && s.larg.is_none()
            && s.with_clause.is_none();
        if simple {
            for t in &s.target_list {
                let Some(N::ResTarget(r)) = t.node.as_ref() else {
                    continue;
                };
                let Some(N::FuncCall(f)) = r.val.as_ref().and_then(|v| v.node.as_ref()) else {
                    continue;
                };
                if let Some(e) = literal_set_config(f) {
                    effects.push(e);
                }
                if sets_serializable(f) {
                    acc.analysis.serializable = true;
                }
            }
        }
    }
    if effects.len() != count {
        pin(acc, "set_config");
        return;
    }
    acc.analysis.session.extend(effects.into_iter().flatten());
}

/// `set_config('transaction_isolation', 'serializable', ...)` with
/// constants.
fn sets_serializable(f: &protobuf::FuncCall) -> bool {
    let arg = |i: usize| {
        f.args
            .get(i)
            .and_then(|a| a.node.as_ref())
            .and_then(const_string)
    };
    arg(0).as_deref() == Some("transaction_isolation") && arg(1).as_deref() == Some("serializable")
}

/// `Some(None)`: a recognised local call; `Some(Some(set))`: a recognised
/// session-wide call; `None`: not recognised.
fn literal_set_config(f: &protobuf::FuncCall) -> Option<Option<SessionEffect>> {
    let names: Vec<&str> = f
        .funcname
        .iter()
        .filter_map(|n| match n.node.as_ref() {
            Some(N::String(s)) => Some(s.sval.as_str()),
            _ => None,
        })
        .collect();
    if !matches!(
        names.as_slice(),
        ["set_config"] | ["pg_catalog", "set_config"]
    ) || f.args.len() != 3
    {
        return None;
    }
    let arg = |i: usize| f.args[i].node.as_ref();
    let string = |i: usize| match arg(i) {
        Some(N::AConst(c)) => match c.val.as_ref() {
            Some(Val::Sval(s)) if !s.sval.contains('\\') => Some(s.sval.clone()),
            _ => None,
        },
        _ => None,
    };
    let (name, value) = (string(0)?, string(1)?);
    if const_bool(arg(2)?)? {
        return Some(None);
    }
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let statement = format!(
        "SELECT pg_catalog.set_config({}, {}, false)",
        quote(&name),
        quote(&value)
    );
    Some(Some(SessionEffect::Set {
        name: name.to_ascii_lowercase(),
        statement,
    }))
}

/// The first statement of `statement`, parsed (for re-reading a `Set`
/// effect's value; not on the hot path).
fn first_statement(statement: &str) -> Option<N> {
    pg_query::parse(statement)
        .ok()?
        .protobuf
        .stmts
        .into_iter()
        .next()?
        .stmt?
        .node
}

/// The value a `Set` statement gives to `default_transaction_read_only`.
pub fn default_read_only_value(statement: &str) -> Option<bool> {
    match &first_statement(statement)? {
        N::VariableSetStmt(s) if s.name == "SESSION CHARACTERISTICS" => read_only_option(&s.args),
        N::VariableSetStmt(s) => s.args.first()?.node.as_ref().and_then(const_bool),
        N::SelectStmt(s) => {
            let N::ResTarget(r) = s.target_list.first()?.node.as_ref()? else {
                return None;
            };
            let N::FuncCall(f) = r.val.as_ref()?.node.as_ref()? else {
                return None;
            };
            match f.args.get(1)?.node.as_ref()? {
                N::AConst(c) => match c.val.as_ref()? {
                    Val::Sval(s) => parse_bool(&s.sval),
                    _ => None,
                },
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bools_like_postgres() {
        for t in ["on", "TRUE", "t", "yes", "1", "y"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["off", "of", "False", "f", "no", "0"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        assert_eq!(parse_bool("o"), None);
        assert_eq!(parse_bool("maybe"), None);
    }

    #[test]
    fn default_read_only_values() {
        assert_eq!(
            default_read_only_value("SET default_transaction_read_only = on"),
            Some(true)
        );
        assert_eq!(
            default_read_only_value("SET default_transaction_read_only TO 'off'"),
            Some(false)
        );
        assert_eq!(
            default_read_only_value("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"),
            Some(true)
        );
        assert_eq!(
            default_read_only_value(
                "SELECT pg_catalog.set_config('default_transaction_read_only', 'on', false)"
            ),
            Some(true)
        );
    }
}
