//! `pgha events`: the cluster's event history (failovers, switchovers,
//! demotions, fences, rewinds, re-clones, synchronous-set changes) as the
//! agents recorded it in etcd (`<ns>/<cluster>/events`, the newest 50):
//! time (UTC), what, which member, how long, and the reason.

use crate::target::{Target, TargetArgs};
use anyhow::Context;
use pgha_core::event::Event;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print JSON (a list, oldest first) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Only the newest N events.
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let target = Target::resolve(&args.target)?;
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(async {
        let dcs = target.dcs()?;
        let mut events = pgha_agent::events::read(&dcs, &target.keys.events())
            .await
            .context("read the event history from etcd")?;
        if let Some(n) = args.last {
            let skip = events.len().saturating_sub(n);
            events.drain(..skip);
        }
        if args.json {
            crate::outln!("{}", serde_json::to_string_pretty(&events)?);
        } else {
            print(&events);
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn print(events: &[Event]) {
    if events.is_empty() {
        crate::outln!("no events recorded yet");
        return;
    }
    crate::outln!(
        "{:<20} {:<10} {:<8} {:>9}  REASON",
        "TIME (UTC)",
        "EVENT",
        "MEMBER",
        "TOOK"
    );
    for e in events {
        crate::outln!("{}", line(e));
    }
}

/// One table row: time, kind (`!` when it failed), member, duration,
/// reason and detail.
pub fn line(e: &Event) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(e.at_unix_ms);
    let at = humantime::format_rfc3339_seconds(at).to_string();
    let at = at.trim_end_matches('Z').replace('T', " ");
    let took = e
        .duration_ms
        .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
        .unwrap_or_else(|| "-".into());
    let kind = format!("{}{}", e.kind.name(), if e.ok { "" } else { "!" });
    let detail = if e.detail.is_empty() {
        String::new()
    } else {
        format!(" [{}]", e.detail)
    };
    format!(
        "{at:<20} {kind:<10} {:<8} {took:>9}  {}{detail}",
        e.member, e.reason
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgha_core::event::EventKind;

    #[test]
    fn a_row_has_utc_time_kind_member_duration_reason_and_detail() {
        let e = Event {
            at_unix_ms: 1_765_000_000_000,
            kind: EventKind::Rewind,
            member: "node1".into(),
            reason: "former primary diverged".into(),
            duration_ms: Some(2500),
            detail: "from node2".into(),
            ok: false,
        };
        assert_eq!(
            line(&e),
            "2025-12-06 05:46:40  rewind!    node1         2.5s  former primary diverged [from node2]"
        );
    }
}
