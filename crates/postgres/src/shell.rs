//! Running an external program and turning a non-zero exit into a
//! [`PgError::Command`] that keeps the exit status and stderr.

use crate::PgError;
use std::time::Duration;

/// Run `cmd` to completion (bounded by `timeout`); Ok(stdout) on success.
pub(crate) async fn run(
    what: &str,
    mut cmd: tokio::process::Command,
    timeout: Duration,
) -> Result<String, PgError> {
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    tracing::debug!(what, command = ?cmd.as_std(), "run");
    let child = cmd.spawn().map_err(PgError::io(format!("start {what}")))?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| PgError::Timeout {
            what: what.to_string(),
            seconds: timeout.as_secs(),
        })?
        .map_err(PgError::io(format!("wait for {what}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if stderr.is_empty() {
            stderr = stdout.trim().to_string();
        }
        Err(PgError::Command {
            what: what.to_string(),
            status: out.status.to_string(),
            stderr,
        })
    }
}

/// Quote `s` for /bin/sh with single quotes.
pub(crate) fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=:%+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::sh_quote;

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(sh_quote("/usr/bin/pgha"), "/usr/bin/pgha");
        assert_eq!(sh_quote("/a b/c"), "'/a b/c'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
