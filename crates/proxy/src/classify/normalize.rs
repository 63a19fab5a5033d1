//! A small SQL lexer that turns a statement text into its *shape*: the text
//! with every string and numeric literal replaced by a marker and every
//! comment dropped, so that `SELECT abalance FROM a WHERE aid = 17` and
//! `... aid = 42` share one cache entry (pgbench `-M simple`, ORMs that inline
//! constants, sqlcommenter trace comments).
//!
//! Hazards:
//! - A wrong token boundary here could make two texts with different code
//!   share a shape, and so share a routing decision. The lexer therefore only
//!   normalises what it understands exactly and gives up ([`Shape::Opaque`])
//!   on anything else (unterminated quotes or comments, trailing junk after a
//!   number, control bytes); an opaque text is cached by its exact text only.
//! - libpg_query lexes with `standard_conforming_strings = on`; a session that
//!   turned it off reads `'...\'...'` differently. A backslash inside a plain
//!   `'...'` literal is reported ([`Lexed::plain_backslash`]) so the caller can
//!   refuse to call such a text read-only.
//! - The markers contain a NUL byte, which cannot occur in a query text sent
//!   over the PostgreSQL protocol, so a shape never equals a real text.

/// Result of lexing one text.
#[derive(Debug, PartialEq, Eq)]
pub struct Lexed {
    pub shape: Shape,
    /// A plain (non-`E`) string literal contains a backslash: its extent
    /// depends on the session's `standard_conforming_strings`.
    pub plain_backslash: bool,
    /// An upper bound on the depth of the text's parse tree (in nodes), for
    /// sizing the stack the parser needs: every nesting comes from a bracket,
    /// an operator or a word.
    pub depth_bound: usize,
    /// A large text (over [`BULK_MIN_BYTES`]) whose every statement starts
    /// with INSERT, UPDATE, DELETE or MERGE and that holds no word through
    /// which a statement could touch session state (`temp`, `set_config`,
    /// session advisory locks ...): it goes to the primary with no effects,
    /// no parse needed. Parsing costs ~0.5 µs per byte, and such texts
    /// (multi-row INSERTs with inline values) are too large to cache.
    pub bulk_write: bool,
}

/// Texts from this size on are checked for [`Lexed::bulk_write`].
pub const BULK_MIN_BYTES: usize = 16 * 1024;

/// Words that may give a write statement a session effect.
const SESSION_WORDS: &[&str] = &[
    "temp",
    "temporary",
    "pg_temp",
    "set_config",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// The cache key class of a text.
#[derive(Debug, PartialEq, Eq)]
pub enum Shape {
    /// No literal or comment: the text is its own shape.
    Verbatim,
    /// Literals replaced by markers, comments dropped.
    Normalized(String),
    /// The lexer does not understand the text exactly: cache by exact text.
    Opaque,
}

/// Tree levels a statement has around its first expression
/// (RawStmt, SelectStmt, ResTarget ...).
const DEPTH_BASE: usize = 16;
/// Tree levels one bracket level can add (`(SELECT (SELECT ...` adds a
/// SubLink, a SelectStmt, a ResTarget ...).
const DEPTH_PER_BRACKET: usize = 6;

const STRING_MARK: &str = "\0s";
const NUMBER_MARK: &str = "\0n";

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_char(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// Lex `sql` into its shape. Linear in the text length, one allocation at
/// most.
pub fn lex(sql: &str) -> Lexed {
    let mut lexer = Lexer {
        src: sql.as_bytes(),
        text: sql,
        pos: 0,
        out: None,
        copied: 0,
        plain_backslash: false,
        words: 0,
        bulk: (sql.len() >= BULK_MIN_BYTES).then_some(Bulk {
            at_start: true,
            statements: 0,
            writes_only: true,
        }),
        brackets: 0,
        max_brackets: 0,
    };
    match lexer.run() {
        Some(()) => {
            let shape = match lexer.out.take() {
                None => Shape::Verbatim,
                Some(mut out) => {
                    out.push_str(&sql[lexer.copied..]);
                    Shape::Normalized(collapse_whitespace(&out))
                }
            };
            Lexed {
                shape,
                plain_backslash: lexer.plain_backslash,
                depth_bound: DEPTH_BASE + DEPTH_PER_BRACKET * lexer.max_brackets + lexer.words,
                bulk_write: lexer
                    .bulk
                    .is_some_and(|b| b.writes_only && b.statements > 0),
            }
        }
        None => Lexed {
            shape: Shape::Opaque,
            plain_backslash: lexer.plain_backslash,
            depth_bound: DEPTH_BASE + DEPTH_PER_BRACKET * sql.len(),
            bulk_write: false,
        },
    }
}

/// Collapse each whitespace run of a normalised text (no string literals or
/// comments left in it) to one space, or one newline when the run holds one
/// (a newline between two string literals concatenates them), and trim the
/// ends. Quoted identifiers are copied as they are.
fn collapse_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    // Some(has_newline) while inside a whitespace run.
    let mut pending: Option<bool> = None;
    while let Some(c) = chars.next() {
        if c.is_ascii_whitespace() {
            let newline = c == '\n' || c == '\r';
            pending = Some(pending.unwrap_or(false) || newline);
            continue;
        }
        if let Some(newline) = pending.take() {
            if !out.is_empty() {
                out.push(if newline { '\n' } else { ' ' });
            }
        }
        out.push(c);
        if c == '"' {
            // Copy the quoted identifier verbatim ("" is an escaped quote;
            // the lexer verified it is terminated).
            while let Some(q) = chars.next() {
                out.push(q);
                if q == '"' {
                    if chars.peek() == Some(&'"') {
                        out.extend(chars.next());
                    } else {
                        break;
                    }
                }
            }
        }
    }
    out
}

struct Lexer<'a> {
    src: &'a [u8],
    /// `src` as text.
    text: &'a str,
    pos: usize,
    /// Output built lazily: `None` while nothing had to be replaced.
    out: Option<String>,
    /// Source bytes before this offset are already in `out`.
    copied: usize,
    plain_backslash: bool,
    /// Words (keywords, identifiers) and operator characters seen.
    words: usize,
    /// Current and deepest `(`/`[` nesting.
    brackets: usize,
    max_brackets: usize,
    /// Tracked for large texts only.
    bulk: Option<Bulk>,
}

#[derive(Clone, Copy)]
struct Bulk {
    /// The next token starts a statement.
    at_start: bool,
    statements: usize,
    /// Every statement so far starts with a write keyword, and no session
    /// word was seen.
    writes_only: bool,
}

impl Lexer<'_> {
    /// Bulk-write bookkeeping for the token starting with byte `b`.
    fn bulk_token(&mut self, b: u8) {
        let next = self.peek(1);
        let brackets = self.brackets;
        let src = self.src;
        let pos = self.pos;
        let Some(bulk) = self.bulk.as_mut() else {
            return;
        };
        let comment = (b == b'-' && next == Some(b'-')) || (b == b'/' && next == Some(b'*'));
        if b == b';' {
            bulk.at_start |= brackets == 0;
        } else if bulk.at_start && !b.is_ascii_whitespace() && !comment {
            bulk.at_start = false;
            bulk.statements += 1;
            let end = src[pos..]
                .iter()
                .position(|&c| !is_ident_char(c))
                .map_or(src.len(), |n| pos + n);
            let word = &src[pos..end];
            let write = ["insert", "update", "delete", "merge"]
                .iter()
                .any(|w| w.as_bytes().eq_ignore_ascii_case(word));
            bulk.writes_only &= is_ident_start(b) && write;
        }
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.src.get(self.pos + ahead).copied()
    }

    /// Replace source bytes `start..self.pos` by `mark` in the output.
    fn replace(&mut self, start: usize, mark: &str) {
        let src = self.src;
        let out = self
            .out
            .get_or_insert_with(|| String::with_capacity(src.len()));
        // Token boundaries are ASCII bytes, so these are char boundaries
        // (`get` checks that, without validating the bytes between).
        out.push_str(self.text.get(self.copied..start).unwrap_or_default());
        out.push_str(mark);
        self.copied = self.pos;
    }

    /// `None` means "give up: opaque".
    fn run(&mut self) -> Option<()> {
        while let Some(b) = self.peek(0) {
            let start = self.pos;
            if self.bulk.is_some() {
                self.bulk_token(b);
            }
            match b {
                b'\'' => {
                    let escape = self.prefix_is_e(start);
                    self.string(escape)?;
                    self.replace(start, STRING_MARK);
                }
                b'"' => {
                    self.quoted_ident()?;
                    self.words += 1;
                }
                b'(' | b'[' => {
                    self.brackets += 1;
                    self.max_brackets = self.max_brackets.max(self.brackets);
                    self.pos += 1;
                }
                b')' | b']' => {
                    self.brackets = self.brackets.saturating_sub(1);
                    self.pos += 1;
                }
                b'-' if self.peek(1) == Some(b'-') => {
                    while self.peek(0).is_some_and(|c| c != b'\n' && c != b'\r') {
                        self.pos += 1;
                    }
                    self.replace(start, " ");
                }
                b'/' if self.peek(1) == Some(b'*') => {
                    self.block_comment()?;
                    self.replace(start, " ");
                }
                b'$' => self.dollar(start)?,
                b'0'..=b'9' => {
                    self.number()?;
                    self.replace(start, NUMBER_MARK);
                }
                b'.' if self.peek(1).is_some_and(|c| c.is_ascii_digit()) => {
                    self.number()?;
                    self.replace(start, NUMBER_MARK);
                }
                _ if is_ident_start(b) => {
                    self.words += 1;
                    while self.peek(0).is_some_and(is_ident_char) {
                        self.pos += 1;
                    }
                    if let Some(bulk) = self.bulk.as_mut() {
                        let word = &self.src[start..self.pos];
                        if SESSION_WORDS
                            .iter()
                            .any(|w| w.as_bytes().eq_ignore_ascii_case(word))
                        {
                            bulk.writes_only = false;
                        }
                    }
                }
                b'+' | b'-' | b'*' | b'/' | b'<' | b'>' | b'=' | b'~' | b'!' | b'@' | b'#'
                | b'%' | b'^' | b'&' | b'|' | b'`' | b'?' | b':' => {
                    self.words += 1;
                    self.pos += 1;
                }
                // NUL and other control bytes other than whitespace: not SQL we
                // want to reason about.
                _ if b < 0x20 && !b.is_ascii_whitespace() => return None,
                _ => self.pos += 1,
            }
        }
        Some(())
    }

    /// The quote at `quote` is an `E'...'` string: the identifier right
    /// before it is exactly `e`/`E`.
    fn prefix_is_e(&self, quote: usize) -> bool {
        quote >= 1
            && matches!(self.src[quote - 1], b'e' | b'E')
            && (quote < 2 || !is_ident_char(self.src[quote - 2]))
    }

    /// A `'...'` literal; `''` is a quote; in E-strings `\x` escapes `x`.
    fn string(&mut self, escape: bool) -> Option<()> {
        self.pos += 1;
        loop {
            match self.peek(0)? {
                b'\'' if self.peek(1) == Some(b'\'') => self.pos += 2,
                b'\'' => {
                    self.pos += 1;
                    return Some(());
                }
                b'\\' if escape => {
                    self.peek(1)?;
                    self.pos += 2;
                }
                b'\\' => {
                    self.plain_backslash = true;
                    self.pos += 1;
                }
                0 => return None,
                _ => self.pos += 1,
            }
        }
    }

    /// A `"..."` identifier, kept verbatim (`""` is a quote).
    fn quoted_ident(&mut self) -> Option<()> {
        self.pos += 1;
        loop {
            match self.peek(0)? {
                b'"' if self.peek(1) == Some(b'"') => self.pos += 2,
                b'"' => {
                    self.pos += 1;
                    return Some(());
                }
                0 => return None,
                _ => self.pos += 1,
            }
        }
    }

    /// `/* ... */`, nested as PostgreSQL nests them.
    fn block_comment(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            match (self.peek(0)?, self.peek(1)) {
                (b'/', Some(b'*')) => {
                    depth += 1;
                    self.pos += 2;
                }
                (b'*', Some(b'/')) => {
                    depth -= 1;
                    self.pos += 2;
                    if depth == 0 {
                        return Some(());
                    }
                }
                _ => self.pos += 1,
            }
        }
    }

    /// `$1` parameter (kept), or a `$tag$...$tag$` string (replaced).
    fn dollar(&mut self, start: usize) -> Option<()> {
        if self.peek(1).is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
            while self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
                self.pos += 1;
            }
            // `$1abc` is not something we want to reason about.
            return if self.peek(0).is_some_and(is_ident_char) {
                None
            } else {
                Some(())
            };
        }
        // A `$` that continues an identifier was consumed with the identifier,
        // so this one opens a dollar quote: `$` tag? `$`.
        let mut end = self.pos + 1;
        if self.src.get(end).is_some_and(|&c| is_ident_start(c)) {
            while self
                .src
                .get(end)
                .is_some_and(|&c| is_ident_char(c) && c != b'$')
            {
                end += 1;
            }
        }
        if self.src.get(end) != Some(&b'$') {
            return None;
        }
        let delim = &self.src[start..=end];
        let body = end + 1;
        let close = self.src[body..]
            .windows(delim.len())
            .position(|w| w == delim)?;
        self.pos = body + close + delim.len();
        self.replace(start, STRING_MARK);
        Some(())
    }

    /// Decimal, real or `0x`/`0o`/`0b` integer, with `_` separators.
    fn number(&mut self) -> Option<()> {
        let radix = self.peek(0) == Some(b'0')
            && matches!(self.peek(1), Some(b'x' | b'X' | b'o' | b'O' | b'b' | b'B'));
        if radix {
            self.pos += 2;
            while self
                .peek(0)
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
            {
                self.pos += 1;
            }
        } else {
            self.digits();
            if self.peek(0) == Some(b'.') && self.peek(1) != Some(b'.') {
                self.pos += 1;
                self.digits();
            }
            if matches!(self.peek(0), Some(b'e' | b'E')) {
                let sign = usize::from(matches!(self.peek(1), Some(b'+' | b'-')));
                if self.peek(1 + sign).is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1 + sign;
                    self.digits();
                }
            }
        }
        // Trailing junk (`123abc`, `1.2.3`) is lexed differently by server
        // versions: do not reason about it.
        match self.peek(0) {
            Some(c) if is_ident_char(c) || c == b'.' => None,
            _ => Some(()),
        }
    }

    fn digits(&mut self) {
        while self
            .peek(0)
            .is_some_and(|c| c.is_ascii_digit() || c == b'_')
        {
            self.pos += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(sql: &str) -> Shape {
        lex(sql).shape
    }

    fn norm(s: &str) -> Shape {
        Shape::Normalized(s.replace('S', STRING_MARK).replace('N', NUMBER_MARK))
    }

    #[test]
    fn literals_are_replaced() {
        assert_eq!(
            shape("select a from t where id = 42"),
            norm("select a from t where id = N")
        );
        assert_eq!(
            shape("select 'x''y', 1.5e-3, .5, 0x1F"),
            norm("select S, N, N, N")
        );
        assert_eq!(
            shape("select E'a\\'b', $q$it's$q$, $$x$$"),
            norm("select ES, S, S")
        );
        assert_eq!(shape("select 1 -- c'\n"), norm("select N"));
        assert_eq!(shape("/* a /* b */ ' */select 1"), norm("select N"));
        assert_eq!(
            shape("select  'a'  -- x\n  'b', \"a  b\"\t"),
            norm("select S\nS, \"a  b\"")
        );
    }

    #[test]
    fn code_is_kept() {
        assert_eq!(shape("select t1.a, \"x'y\", $1 from t1"), Shape::Verbatim);
        assert_eq!(shape("select a$b from t"), Shape::Verbatim);
    }

    #[test]
    fn unclear_texts_are_opaque() {
        for sql in [
            "select 'abc",
            "select \"abc",
            "select 1 /* x",
            "select $q$ x",
            "select 123abc",
            "select $1a",
        ] {
            assert_eq!(shape(sql), Shape::Opaque, "{sql}");
        }
    }

    #[test]
    fn depth_bound_counts_words_operators_brackets() {
        let small = lex("select a from t where id = $1").depth_bound;
        assert_eq!(small, DEPTH_BASE + 7);
        let deep = lex(&format!("select {}a", "-+".repeat(1000))).depth_bound;
        assert!(deep >= 2000);
        let nested = lex(&format!("select {}1{}", "[".repeat(100), "]".repeat(100))).depth_bound;
        assert!(nested >= 600);
        // A long IN list of literals is not deep.
        let list = lex(&format!(
            "select 1 where a in ({})",
            vec!["1"; 1000].join(",")
        ))
        .depth_bound;
        assert!(list < 50);
    }

    #[test]
    fn large_pure_writes_are_recognised() {
        let rows = vec!["(1, 'a', now())"; 2000].join(", ");
        assert!(lex(&format!("INSERT INTO t VALUES {rows}")).bulk_write);
        assert!(
            lex(&format!(
                "/* c */ insert into t values {rows}; UPDATE t SET a = 1;"
            ))
            .bulk_write
        );
        assert!(!lex(&format!("INSERT INTO t VALUES {rows}; SET x = 1")).bulk_write);
        assert!(
            !lex(&format!(
                "INSERT INTO t VALUES {rows}, (pg_advisory_lock(1), 'b', 1)"
            ))
            .bulk_write
        );
        assert!(
            !lex(&format!(
                "INSERT INTO t VALUES {rows}; CREATE TEMP TABLE x (a int)"
            ))
            .bulk_write
        );
        assert!(!lex(&format!("SELECT * FROM (VALUES {rows}) v")).bulk_write);
        assert!(!lex(&format!("WITH x AS (SELECT 1) INSERT INTO t VALUES {rows}")).bulk_write);
        assert!(
            !lex("INSERT INTO t VALUES (1)").bulk_write,
            "small texts are parsed"
        );
    }

    #[test]
    fn plain_backslash_is_flagged() {
        assert!(lex("select 'a\\'").plain_backslash);
        assert!(!lex("select E'a\\''").plain_backslash);
    }
}
