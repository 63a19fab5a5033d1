//! `pgha dashboard`: a live status page on a local HTTP port. One sampler
//! task gathers, every two seconds, what `pgha status` shows (members,
//! lag, sync set, archive health, the leader's decisions), the event
//! history from etcd and the proxy's routing counters from its `/metrics`,
//! and keeps five minutes of lag and write availability for the chart. A
//! page load renders the latest sample ([`render::page`]) and never waits
//! on the cluster.
//!
//! Read-only and unauthenticated, like `/metrics`: it listens on loopback
//! by default.

pub mod render;

use crate::cmd::status::Status;
use crate::target::{Target, TargetArgs};
use anyhow::Context;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use pgha_core::event::Event;
use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How much history the chart shows.
pub const HISTORY_SPAN: Duration = Duration::from_secs(300);
/// How often the sampler gathers.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Address to serve the page on (default: 127.0.0.1 and the proxy's
    /// http_port + 2, else 15446).
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
}

/// One sample of the chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    pub at_unix_ms: u64,
    /// The largest lag of a standby (bytes).
    pub max_lag_bytes: u64,
    /// The cluster accepted writes: a leader whose PostgreSQL is a
    /// running, unfenced primary.
    pub writable: bool,
}

/// The proxy's routing counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProxySplit {
    pub primary: f64,
    pub standby: f64,
    pub clients_active: f64,
    pub clients_waiting: f64,
}

/// What a page shows.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub taken_at_unix_ms: u64,
    pub status: Status,
    pub events: Vec<Event>,
    pub proxy: Option<ProxySplit>,
    pub history: Vec<Point>,
}

type Latest = Arc<Mutex<Option<Snapshot>>>;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let target = Target::resolve(&args.target)?;
    let listen = args.listen.unwrap_or_else(|| {
        let port = target
            .config
            .proxy
            .as_ref()
            .and_then(|p| p.http_port)
            .and_then(|p| p.checked_add(2))
            .unwrap_or(15446);
        format!("127.0.0.1:{port}")
    });
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("bind the dashboard on {listen}"))?;
        let latest: Latest = Arc::default();
        tokio::spawn(sample_forever(target, latest.clone()));
        crate::outln!("pgha dashboard: http://{}/", listener.local_addr()?);
        let app = Router::new().route("/", get(page)).with_state(latest);
        axum::serve(listener, app)
            .await
            .context("serve the dashboard")?;
        Ok(ExitCode::SUCCESS)
    })
}

async fn page(State(latest): State<Latest>) -> Response {
    let snap = latest.lock().ok().and_then(|l| l.clone());
    match snap {
        Some(s) => Html(render::page(&s)).into_response(),
        None => Html(
            "<!doctype html><html><head><meta http-equiv=\"refresh\" content=\"1\"></head>\
             <body>pgha dashboard: collecting the first sample...</body></html>",
        )
        .into_response(),
    }
}

async fn sample_forever(target: Target, latest: Latest) {
    let mut history: VecDeque<Point> = VecDeque::new();
    let dcs = target.dcs().ok();
    loop {
        let status = crate::cmd::status::collect(&target).await;
        match status {
            Ok(status) => {
                let now = unix_ms();
                history.push_back(point(&status, now));
                let horizon = now.saturating_sub(HISTORY_SPAN.as_millis() as u64);
                while history.front().is_some_and(|p| p.at_unix_ms < horizon) {
                    history.pop_front();
                }
                let events = match &dcs {
                    Some(d) => pgha_agent::events::read(d, &target.keys.events())
                        .await
                        .unwrap_or_default(),
                    None => Vec::new(),
                };
                let snap = Snapshot {
                    taken_at_unix_ms: now,
                    status,
                    events,
                    proxy: proxy_split(&target).await,
                    history: history.iter().copied().collect(),
                };
                if let Ok(mut l) = latest.lock() {
                    *l = Some(snap);
                }
            }
            Err(e) => tracing::warn!("dashboard: cannot read the cluster: {e:#}"),
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

fn point(status: &Status, at_unix_ms: u64) -> Point {
    Point {
        at_unix_ms,
        max_lag_bytes: status
            .members
            .iter()
            .filter(|m| m.role == "standby")
            .filter_map(|m| m.lag_bytes)
            .max()
            .unwrap_or(0),
        writable: writable(status),
    }
}

/// A leader whose PostgreSQL is a running primary that is not fenced.
pub fn writable(status: &Status) -> bool {
    let Some(leader) = &status.leader else {
        return false;
    };
    status.members.iter().any(|m| {
        &m.name == leader
            && m.role == "primary"
            && m.state == "running"
            && m.writable != Some(false)
    })
}

async fn proxy_split(target: &Target) -> Option<ProxySplit> {
    let p = target.config.proxy.as_ref()?;
    let url = format!("http://{}:{}/metrics", p.host, p.http_port?);
    let text = pgha_agent::api::client::get(&url, Duration::from_secs(1))
        .await
        .ok()?
        .text();
    Some(parse_split(&text))
}

/// Sum the proxy's statement counters by target and its clients by state.
pub fn parse_split(text: &str) -> ProxySplit {
    let mut s = ProxySplit::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let v: f64 = value.parse().unwrap_or(0.0);
        if series.starts_with("pgha_proxy_statements_total{") {
            if series.contains("target=\"primary\"") {
                s.primary += v;
            } else if series.contains("target=\"standby\"") {
                s.standby += v;
            }
        } else if series.starts_with("pgha_proxy_clients{") && series.contains("state=\"active\"") {
            s.clients_active += v;
        } else if series.starts_with("pgha_proxy_clients_waiting{") {
            s.clients_waiting += v;
        }
    }
    s
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn utc(at_unix_ms: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(at_unix_ms);
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .trim_end_matches('Z')
        .replace('T', " ")
}

#[cfg(test)]
mod tests;
