//! Failpoints for crash tests: `PGHA_FAILPOINT=name[,name...]` makes the
//! process abort (no unwinding, no cleanup, like `kill -9`) when it reaches
//! a point of that name.
//!
//! Points: `wal-push-after-write` (payload written, not fsynced),
//! `wal-push-before-rename` (temp file complete and fsynced),
//! `wal-push-before-dir-fsync` (renamed, directory not fsynced),
//! `wal-fetch-before-rename` (temp file next to the destination complete).
//!
//! Hazard: read from the environment on every hit; harmless in production
//! because the variable is unset and the check is one `getenv`.

/// Environment variable naming the active failpoints.
pub const ENV: &str = "PGHA_FAILPOINT";

/// Abort the process if failpoint `name` is active.
pub fn hit(name: &str) {
    let Some(active) = std::env::var_os(ENV) else {
        return;
    };
    let active = active.to_string_lossy();
    if active.split(',').any(|p| p.trim() == name) {
        eprintln!("pgha: failpoint {name} hit: aborting");
        std::process::abort();
    }
}
