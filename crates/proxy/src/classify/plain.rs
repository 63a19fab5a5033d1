//! Statements the pooled `primary` listener need not parse: on that
//! listener every statement runs on the primary, so all the classifier
//! could tell is the statement's transaction and session effects (SET,
//! PREPARE, pins...). A single SELECT, INSERT, UPDATE or DELETE whose text
//! names nothing that has such an effect has none, and a byte scan says so
//! for a fraction of a parse (or of a shape-cache lookup).
//!
//! Hazard: a false "plain" would let session state go unnoticed (a pin
//! missed, a SET not replayed), so the scan is conservative: any text it
//! is unsure of goes to the classifier. The words it looks for, anywhere
//! and in any case (in literals and comments too), cover every way the
//! classifier finds an effect in such a statement: session advisory locks
//! (`pg_advisory_lock`...), `set_config`, temporary relations (`TEMP`,
//! `TEMPORARY`, `pg_temp`); `U&` (a Unicode-escaped identifier could spell
//! any of them) and a `;` before the end (more than one statement) send the
//! text to the classifier too.

/// Whether `sql` is one SELECT/INSERT/UPDATE/DELETE with no transaction or
/// session effect, as far as a byte scan can prove.
pub fn plain_statement(sql: &[u8]) -> bool {
    let body = trim_end(sql);
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    let rest = &body[start..];
    let word_end = rest
        .iter()
        .position(|b| !b.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    let word = &rest[..word_end];
    let dml = [&b"select"[..], b"insert", b"update", b"delete"]
        .iter()
        .any(|w| word.eq_ignore_ascii_case(w));
    if !dml || body.contains(&b';') {
        return false;
    }
    // One pass; a word is compared only where its first letter is.
    const WORDS: [&[u8]; 4] = [b"advisory", b"set_config", b"temp", b"u&"];
    for (i, b) in body.iter().enumerate() {
        let first = b | 0x20;
        if matches!(first, b'a' | b's' | b't' | b'u')
            && WORDS.iter().any(|word| starts_with_ci(&body[i..], word))
        {
            return false;
        }
    }
    true
}

fn trim_end(sql: &[u8]) -> &[u8] {
    let end = sql
        .iter()
        .rposition(|&b| b != b';' && !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &sql[..end]
}

fn starts_with_ci(text: &[u8], word: &[u8]) -> bool {
    text.get(..word.len())
        .is_some_and(|t| t.eq_ignore_ascii_case(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_effect_free_dml_is_plain() {
        let cases: &[(&str, bool)] = &[
            (
                "SELECT abalance FROM pgbench_accounts WHERE aid = 42;",
                true,
            ),
            ("  select 1", true),
            ("UPDATE t SET a = a + 1 WHERE id = 3", true),
            ("INSERT INTO t VALUES (1) RETURNING id;\n", true),
            ("DELETE FROM t", true),
            ("SELECT 1; SELECT 2", false),
            ("SELECT 'a;b'", false),
            ("SELECT pg_advisory_lock(1)", false),
            ("SELECT PG_TRY_ADVISORY_LOCK(1)", false),
            ("SELECT set_config('a.b', 'c', false)", false),
            ("SELECT * INTO TEMP x FROM t", false),
            ("SELECT * FROM pg_temp.x", false),
            ("SELECT * FROM templates", false),
            ("SELECT U&\"set\\005fconfig\"('a.b', 'c', false)", false),
            ("BEGIN", false),
            ("SET work_mem = '8MB'", false),
            ("PREPARE p AS SELECT 1", false),
            ("EXECUTE p", false),
            ("WITH x AS (SELECT 1) SELECT * FROM x", false),
            ("/* c */ SELECT 1", false),
            ("selectx 1", false),
            ("selecting 1", false),
            ("SELECT 'Temp'", false),
            ("SELECT 'xadvisoryx'", false),
            ("", false),
            (";", false),
        ];
        for (sql, want) in cases {
            assert_eq!(plain_statement(sql.as_bytes()), *want, "{sql}");
        }
    }
}
