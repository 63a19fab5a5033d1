//! What the binary writes for people and programs, done so that neither a
//! closed pipe nor a log file gets surprises.
//!
//! - `outln!` replaces `println!`: `pgha status | head -1` closes the pipe
//!   after one line, and since Rust ignores SIGPIPE, `println!` would panic
//!   (exit 101). On a broken pipe `outln!` ends the process with 0 instead:
//!   the reader has what it wanted. Hazard: it exits without running
//!   destructors, so use it only for a command's own output, never while a
//!   side effect is half done.
//! - [`render_error`] prints an error with its causes, each cause once: many
//!   errors (ours before issue 14, tokio-postgres's, some libraries') put
//!   their source into their own message *and* chain it, and `{e:#}` then
//!   shows `(os error 2): No such file or directory (os error 2)`.

use std::io::Write;

/// Write to stdout; a broken pipe ends the process quietly (exit 0), any
/// other write error ends it with 1 and a message on stderr.
pub fn write_stdout(args: std::fmt::Arguments) {
    let result = std::io::stdout().lock().write_fmt(args);
    if let Err(e) = result {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("pgha: error: write to stdout: {e}");
        std::process::exit(1);
    }
}

/// `println!` that survives a closed pipe (see the module doc).
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `e` and its causes joined by ": ", leaving out a cause whose text the
/// message so far already contains.
pub fn render_error(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::render_error;

    /// Formats its source into its message and chains it too.
    #[derive(Debug)]
    struct Doubled {
        source: std::io::Error,
    }

    impl std::fmt::Display for Doubled {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "read /x: {}", self.source)
        }
    }

    impl std::error::Error for Doubled {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = anyhow::Error::new(Doubled { source: io }).context("load the config");
        assert_eq!(
            render_error(&e),
            "load the config: read /x: entity not found"
        );
        let e = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(render_error(&e), "outer: middle: inner");
    }
}
