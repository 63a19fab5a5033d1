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
use super::parser::{parse, Parsed};
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
            standby_in_tx: false,
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
            None => acc.analysis.read_only = false,
        }
    }
    if acc.other_writes {
        // `DELETE ...; BEGIN READ ONLY` must not be sent to a standby for
        // the sake of its BEGIN.
        if let TxEffect::Begin { read_only } = &mut acc.analysis.tx {
            *read_only = false;
        }
    }
    // Interim (the classifier work refines it): only read-only texts and
    // plain transaction control continue a standby transaction.
    acc.analysis.standby_in_tx = acc.analysis.read_only
        || (!acc.other_writes
            && matches!(
                acc.analysis.tx,
                TxEffect::Commit | TxEffect::Rollback | TxEffect::SetTransactionReadOnly
            ));
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

fn classify_stmt(node: &N, text: &str, snap: &CatalogSnapshot, acc: &mut Outcome) {
    let feats = walk::features(node);
    let mut functions_ok = true;
    let mut set_configs = 0usize;
    let mut session_lock = false;
    for f in &feats.functions {
        match snap.judge(f) {
            Verdict::ReadOnly => {}
            Verdict::Primary => functions_ok = false,
            Verdict::SessionLock => session_lock = true,
            Verdict::SetConfig => set_configs += 1,
        }
    }
    let operators_ok = !feats.operators.iter().any(|o| snap.volatile_operator(o));
    let clean = functions_ok
        && operators_ok
        && set_configs == 0
        && !session_lock
        && !feats.dml
        && !feats.locking
        && !feats.into
        && !feats.temp;
    if session_lock {
        pin(acc, "session advisory lock");
    }
    if feats.temp {
        pin(acc, "temporary relation");
    }
    if set_configs > 0 {
        acc.literal_sensitive = true;
        set_config_effects(node, set_configs, acc);
    }
    let read_only = match node {
        N::SelectStmt(_) => clean,
        N::VariableShowStmt(_) => true,
        N::ExplainStmt(e) => {
            clean
                && matches!(
                    e.query.as_ref().and_then(|q| q.node.as_ref()),
                    Some(N::SelectStmt(_))
                )
        }
        N::TransactionStmt(t) => {
            transaction(t, acc);
            false
        }
        N::VariableSetStmt(s) => {
            acc.literal_sensitive = true;
            variable_set(s, text, acc);
            false
        }
        N::DiscardStmt(d) => {
            if d.target == protobuf::DiscardMode::DiscardAll as i32 {
                acc.analysis.session.push(SessionEffect::ResetAll);
                acc.analysis
                    .session
                    .push(SessionEffect::Deallocate { name: None });
            }
            false
        }
        N::DeallocateStmt(d) => {
            // Not a write, but it must reach the backend holding the
            // statement: the session decides (see session::dispatch).
            let name = (!d.isall && !d.name.is_empty()).then(|| d.name.clone());
            acc.analysis
                .session
                .push(SessionEffect::Deallocate { name });
            false
        }
        N::ListenStmt(_) => {
            pin(acc, "LISTEN");
            false
        }
        N::DeclareCursorStmt(d) => {
            if d.options & CURSOR_OPT_HOLD != 0 {
                pin(acc, "WITH HOLD cursor");
            }
            false
        }
        N::PrepareStmt(_) => {
            pin(acc, "SQL PREPARE");
            false
        }
        N::LoadStmt(_) => {
            pin(acc, "LOAD");
            false
        }
        _ => false,
    };
    acc.analysis.read_only &= read_only;
    acc.other_writes |= !read_only && !matches!(node, N::TransactionStmt(_));
}

fn transaction(t: &protobuf::TransactionStmt, acc: &mut Outcome) {
    use protobuf::TransactionStmtKind as K;
    let effect = match K::try_from(t.kind) {
        Ok(K::TransStmtBegin | K::TransStmtStart) => TxEffect::Begin {
            read_only: read_only_option(&t.options).unwrap_or(false),
        },
        Ok(K::TransStmtCommit) => TxEffect::Commit,
        Ok(K::TransStmtRollback) => TxEffect::Rollback,
        // The session's transaction ends (its writes become visible only at
        // COMMIT PREPARED, which runs on the primary like any write).
        Ok(K::TransStmtPrepare) => TxEffect::Commit,
        _ => return,
    };
    acc.analysis.chain = t.chain && matches!(effect, TxEffect::Commit | TxEffect::Rollback);
    acc.analysis.tx = effect;
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

fn variable_set(s: &protobuf::VariableSetStmt, text: &str, acc: &mut Outcome) {
    use protobuf::VariableSetKind as K;
    let name = s.name.as_str();
    let transaction_scoped = name.starts_with("transaction_");
    let statement = || text.to_owned();
    if text.is_empty() {
        pin(acc, "SET without a replayable text");
        return;
    }
    match K::try_from(s.kind) {
        Ok(K::VarSetMulti) => match name {
            "TRANSACTION" if read_only_option(&s.args) == Some(true) => {
                acc.analysis.tx = TxEffect::SetTransactionReadOnly;
            }
            "SESSION CHARACTERISTICS" => session_characteristics(&s.args, text, acc),
            _ => {}
        },
        Ok(K::VarSetValue | K::VarSetCurrent) if name == "transaction_read_only" => {
            let value = s
                .args
                .first()
                .and_then(|a| a.node.as_ref())
                .and_then(const_bool);
            if value == Some(true) {
                acc.analysis.tx = TxEffect::SetTransactionReadOnly;
            }
        }
        Ok(K::VarSetValue | K::VarSetCurrent) if !transaction_scoped && !s.is_local => {
            acc.analysis.session.push(SessionEffect::Set {
                name: name.to_owned(),
                statement: statement(),
            });
        }
        Ok(K::VarSetDefault | K::VarReset) if !transaction_scoped && !s.is_local => {
            acc.analysis.session.push(SessionEffect::Reset {
                name: name.to_owned(),
                statement: statement(),
            });
        }
        Ok(K::VarResetAll) => acc.analysis.session.push(SessionEffect::ResetAll),
        _ => {}
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
            }
        }
    }
    if effects.len() != count {
        pin(acc, "set_config");
        return;
    }
    acc.analysis.session.extend(effects.into_iter().flatten());
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

/// The value a `Set` statement gives to `default_transaction_read_only`.
pub fn default_read_only_value(statement: &str) -> Option<bool> {
    let parsed = pg_query::parse(statement).ok()?;
    let node = parsed
        .protobuf
        .stmts
        .first()?
        .stmt
        .as_ref()?
        .node
        .as_ref()?;
    match node {
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
