//! Calling libpg_query without risking the process.
//!
//! Hazards, each measured:
//! - libpg_query turns its parse tree into protobuf by a recursion of one
//!   level per tree level, with no depth check; a level costs up to ~2.2 KiB of
//!   C stack (debug build). `SELECT 1+1+1...` with a few thousand terms
//!   overflows a 2 MiB thread stack, and a stack overflow aborts the whole
//!   proxy. So a text is parsed on the caller's stack only when the lexer's
//!   depth bound says that is safe, otherwise on one long-lived parser thread
//!   with a large stack, and not at all when even that is too small.
//! - libpg_query creates a pthread key and a memory context for every thread
//!   that parses, so parsing on a fresh thread each time would exhaust
//!   pthread keys: hence one long-lived thread, started on first use.
//!   The inline path has the same cost once per calling thread: call
//!   `analyze` from long-lived threads (tokio workers), not from a churning
//!   `spawn_blocking` pool (past 1024 keys libpg_query still works, but other
//!   code creating pthread keys would fail).
//! - Pages of the parser thread's stack touched by a deep parse stay resident
//!   (at most `PARSER_STACK`).
//! - prost refuses protobuf nested deeper than 100 messages, so a tree
//!   deeper than ~50 expression levels is "invalid" here (primary), and the
//!   Rust side never recurses deeper than that.

use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

/// Texts above this size are not parsed at all.
pub const MAX_PARSE_BYTES: usize = 1024 * 1024;
/// Stack a tree level may need (measured ~2.2 KiB in a debug build; less
/// optimised).
const STACK_PER_LEVEL: usize = if cfg!(debug_assertions) {
    3 * 1024
} else {
    1024
};
/// Stack the caller's thread may lend to a parse (tokio workers have 2 MiB).
const INLINE_STACK: usize = 256 * 1024;
/// Stack of the parser thread.
const PARSER_STACK: usize = 256 * 1024 * 1024;

/// The outcome of a parse.
pub enum Parsed {
    Tree(pg_query::ParseResult),
    /// The parser rejects it: so will the server, with no effect.
    Invalid,
    /// Could not be analysed (too large or too deep to parse safely, no
    /// parser thread): its effects are unknown.
    NotAnalysed,
}

impl Parsed {
    fn from_result(r: pg_query::Result<pg_query::ParseResult>) -> Self {
        r.map_or(Parsed::Invalid, Parsed::Tree)
    }
}

/// Parse `sql`, whose tree is at most `depth_bound` levels deep.
pub fn parse(sql: &str, depth_bound: usize) -> Parsed {
    let stack = depth_bound.saturating_mul(STACK_PER_LEVEL);
    if sql.len() > MAX_PARSE_BYTES || stack > PARSER_STACK / 2 {
        return Parsed::NotAnalysed;
    }
    if stack <= INLINE_STACK {
        return std::panic::catch_unwind(|| pg_query::parse(sql))
            .map_or(Parsed::NotAnalysed, Parsed::from_result);
    }
    parse_on_parser_thread(sql)
}

type Job = (String, mpsc::SyncSender<Parsed>);

fn parse_on_parser_thread(sql: &str) -> Parsed {
    static JOBS: OnceLock<Option<Mutex<mpsc::Sender<Job>>>> = OnceLock::new();
    let Some(jobs) = JOBS.get_or_init(start_parser_thread) else {
        return Parsed::NotAnalysed;
    };
    let (reply, answer) = mpsc::sync_channel(1);
    let sent = jobs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((sql.to_owned(), reply));
    if sent.is_err() {
        return Parsed::NotAnalysed;
    }
    answer.recv().unwrap_or(Parsed::NotAnalysed)
}

fn start_parser_thread() -> Option<Mutex<mpsc::Sender<Job>>> {
    let (tx, rx) = mpsc::channel::<Job>();
    let spawned = std::thread::Builder::new()
        .name("pgha-sql-parser".into())
        .stack_size(PARSER_STACK)
        .spawn(move || {
            for (sql, reply) in rx {
                let parsed = std::panic::catch_unwind(|| pg_query::parse(&sql))
                    .map_or(Parsed::NotAnalysed, Parsed::from_result);
                let _ = reply.send(parsed);
            }
        });
    match spawned {
        Ok(_) => Some(Mutex::new(tx)),
        Err(e) => {
            tracing::error!(
                "start the SQL parser thread: {e}; deep statements will go to the primary"
            );
            None
        }
    }
}
