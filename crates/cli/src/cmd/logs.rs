//! `pgha logs [NAME] [--postgres] [--lines N] [--follow]`: the dev cluster's
//! log files without knowing where they are. NAME is a member (its agent's
//! log; with `--postgres` its PostgreSQL server log), `proxy`, `etcd` or
//! `prometheus`; without NAME, every agent's log and the proxy's. The last
//! `--lines` lines of each (with a header when there are several); with
//! `--follow`, then every line appended, prefixed with `[name]` when
//! several files are followed, until interrupted. A file that shrinks (was
//! truncated or replaced) is read again from its start.

use crate::dev::DevCluster;
use anyhow::{bail, Context};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// How often `--follow` looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

#[derive(clap::Args)]
pub struct Args {
    /// Dev cluster directory.
    #[arg(long, default_value = "pgha-data")]
    pub dir: PathBuf,
    /// A member, `proxy`, `etcd` or `prometheus` (default: every agent and the proxy).
    pub name: Option<String>,
    /// The member's PostgreSQL server log instead of its agent's.
    #[arg(long, requires = "name")]
    pub postgres: bool,
    /// How many lines of each file to print first.
    #[arg(long, short = 'n', default_value_t = 20)]
    pub lines: usize,
    /// Keep printing lines as they are appended (until interrupted).
    #[arg(long, short = 'f')]
    pub follow: bool,
}

/// One log file and its short name.
struct Log {
    name: String,
    path: PathBuf,
    offset: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cluster = DevCluster::open(&args.dir)?;
    let mut logs = pick(&cluster, args.name.as_deref(), args.postgres)?;
    let several = logs.len() > 1;
    for log in &mut logs {
        if several {
            crate::outln!("==> {} ({}) <==", log.name, log.path.display());
        }
        let (tail, end) = tail(&log.path, args.lines)?;
        for line in tail {
            crate::outln!("{line}");
        }
        log.offset = end;
    }
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        for log in &mut logs {
            for line in appended(log)? {
                if several {
                    crate::outln!("[{}] {line}", log.name);
                } else {
                    crate::outln!("{line}");
                }
            }
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

/// The files `name` designates.
fn pick(cluster: &DevCluster, name: Option<&str>, postgres: bool) -> anyhow::Result<Vec<Log>> {
    let log = |name: &str, path: PathBuf| Log {
        name: name.to_string(),
        path,
        offset: 0,
    };
    let instances = cluster.instances();
    let agent = |i: &pgha_postgres::Instance| log(&i.name, i.node_dir().join("agent.log"));
    let fixed = ["proxy", "etcd", "prometheus"];
    Ok(match name {
        None => {
            let mut all: Vec<Log> = instances.iter().map(agent).collect();
            all.push(log("proxy", cluster.dir.join("proxy.log")));
            all.retain(|l| l.path.exists());
            all
        }
        Some(n) if fixed.contains(&n) && !postgres => {
            vec![log(n, cluster.dir.join(format!("{n}.log")))]
        }
        Some(n) => match instances.iter().find(|i| i.name == n) {
            Some(i) if postgres => vec![log(&i.name, i.log_file())],
            Some(i) => vec![agent(i)],
            None => bail!(
                "no log named {n:?} in {}: give a member ({}), or proxy, etcd, prometheus",
                cluster.dir.display(),
                cluster.member_names().join(", ")
            ),
        },
    })
}

/// The last `n` lines of `path` and its length.
fn tail(path: &std::path::Path, n: usize) -> anyhow::Result<(Vec<String>, u64)> {
    let mut f = std::fs::File::open(path)
        .with_context(|| format!("open {} (has it started yet?)", path.display()))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if n == 0 {
        return Ok((Vec::new(), len));
    }
    // Enough for n long lines; the whole file when it is small.
    let window = (n as u64 * 1024).max(64 * 1024).min(len);
    f.seek(SeekFrom::Start(len - window))
        .with_context(|| format!("read {}", path.display()))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)
        .with_context(|| format!("read {}", path.display()))?;
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    // The first line of a window that does not start the file is partial.
    let first = usize::from(window < len).max(lines.len().saturating_sub(n));
    let end = len - window + buf.len() as u64;
    Ok((
        lines[first.min(lines.len())..]
            .iter()
            .map(|l| l.to_string())
            .collect(),
        end,
    ))
}

/// Complete lines appended to `log` since its offset.
fn appended(log: &mut Log) -> anyhow::Result<Vec<String>> {
    let Ok(mut f) = std::fs::File::open(&log.path) else {
        return Ok(Vec::new());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len < log.offset {
        log.offset = 0;
    }
    if len == log.offset {
        return Ok(Vec::new());
    }
    f.seek(SeekFrom::Start(log.offset))
        .with_context(|| format!("read {}", log.path.display()))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)
        .with_context(|| format!("read {}", log.path.display()))?;
    // Keep a partial last line for the next round.
    let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    log.offset += complete as u64;
    Ok(String::from_utf8_lossy(&buf[..complete])
        .lines()
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_and_appended_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
        let (lines, end) = tail(&path, 2).unwrap();
        assert_eq!(lines, ["two", "three"]);
        assert_eq!(end, 14);
        let mut log = Log {
            name: "a".into(),
            path: path.clone(),
            offset: end,
        };
        std::fs::write(&path, "one\ntwo\nthree\nfour\nfi").unwrap();
        assert_eq!(appended(&mut log).unwrap(), ["four"]);
        assert!(appended(&mut log).unwrap().is_empty(), "partial line waits");
        std::fs::write(&path, "new\n").unwrap();
        assert_eq!(
            appended(&mut log).unwrap(),
            ["new"],
            "a shrunk file is read again"
        );
        assert!(tail(&path, 0).unwrap().0.is_empty());
    }
}
