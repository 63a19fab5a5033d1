//! One etcd watch, kept alive by a background task.
//!
//! Reconnection: the task remembers the revision after the last event (or
//! progress notification) it delivered. When the stream breaks — etcd
//! restarted, connection reset, or no answer to a progress request within
//! `PROGRESS_EVERY + request_timeout` (a silent partition) — it reconnects
//! with backoff (100 ms doubling to 2 s, forever) and resumes from that
//! revision, so no event is lost or repeated. If etcd compacted that
//! revision meanwhile, it restarts the watch from "now" and then delivers
//! [`WatchEvent::Resync`]: the consumer re-reads with `get_prefix`.
//!
//! Hazard: while reconnecting the consumer just sees no events; silence is
//! not proof that nothing changed. Agents also read state every loop.

use super::convert::{classify, header_revision, kv_from};
use super::pool::Pool;
use crate::api::{Revision, Watch, WatchEvent, WATCH_CHANNEL};
use crate::error::{DcsError, DcsResult};
use etcd_client::{EventType, GetOptions, WatchOptions, WatchResponse, WatchStream, Watcher};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How often the task asks etcd for a progress report to prove the stream
/// is alive.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// An open etcd watch stream.
struct Opened {
    /// Kept alive: dropping it half-closes the stream and etcd ends it.
    watcher: Watcher,
    stream: WatchStream,
}

/// Why a stream stopped being read.
enum End {
    ConsumerGone,
    Broken(String),
    Compacted,
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct WatchTask {
    pool: Arc<Pool>,
    prefix: String,
    tx: mpsc::Sender<WatchEvent>,
    /// The first revision not yet delivered.
    next_rev: Revision,
}

/// Open the watch (failing fast with `Unavailable`), then hand it to a task.
pub(crate) async fn start(pool: Arc<Pool>, prefix: String, start: Revision) -> DcsResult<Watch> {
    let (opened, next_rev) = open(&pool, &prefix, start).await?;
    let (tx, rx) = mpsc::channel(WATCH_CHANNEL);
    let task = WatchTask {
        pool,
        prefix,
        tx,
        next_rev,
    };
    let handle = tokio::spawn(task.run(opened));
    Ok(Watch::new(rx, Some(Box::new(AbortOnDrop(handle)))))
}

/// Watch `prefix` from `start` (0: from the current revision, which is
/// read first so that resuming later has a definite revision), trying the
/// endpoints in preference order within one request timeout.
async fn open(pool: &Pool, prefix: &str, start: Revision) -> DcsResult<(Opened, Revision)> {
    let limit = pool.settings().request_timeout;
    let order = pool.order();
    let mut last = None;
    for (n, &idx) in order.iter().enumerate() {
        let budget = limit / (order.len() - n) as u32;
        let attempt = tokio::time::timeout(budget, open_on(pool, idx, prefix, start)).await;
        match attempt.unwrap_or_else(|elapsed| Err(DcsError::unavailable("watch_prefix", elapsed)))
        {
            Ok(opened) => {
                pool.succeeded(idx);
                return Ok(opened);
            }
            Err(e) if e.is_unavailable() => {
                pool.failed(idx).await;
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| DcsError::unavailable("watch_prefix", "no endpoint")))
}

async fn open_on(
    pool: &Pool,
    idx: usize,
    prefix: &str,
    start: Revision,
) -> DcsResult<(Opened, Revision)> {
    let mut client = pool.client(idx).await?;
    let start = if start > 0 {
        start
    } else {
        let opts = GetOptions::new().with_count_only();
        let r = client
            .get(prefix, Some(opts))
            .await
            .map_err(|e| classify("watch_prefix", e, None))?;
        header_revision(r.header()) + 1
    };
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(start)
        .with_progress_notify();
    let (watcher, stream) = client
        .watch(prefix, Some(opts))
        .await
        .map_err(|e| classify("watch_prefix", e, None))?;
    Ok((Opened { watcher, stream }, start))
}

impl WatchTask {
    async fn run(mut self, mut cur: Opened) {
        loop {
            let resync = match self.pump(&mut cur).await {
                End::ConsumerGone => return,
                End::Broken(why) => {
                    tracing::info!(prefix = %self.prefix, %why, "etcd watch lost; reconnecting");
                    false
                }
                End::Compacted => {
                    tracing::warn!(prefix = %self.prefix, "etcd watch history compacted; resyncing");
                    self.next_rev = 0;
                    true
                }
            };
            cur = match self.reopen().await {
                Some(c) => c,
                None => return,
            };
            if resync && self.tx.send(WatchEvent::Resync).await.is_err() {
                return;
            }
        }
    }

    /// Reconnect with backoff until it works or the consumer is gone.
    async fn reopen(&mut self) -> Option<Opened> {
        let mut backoff = BACKOFF_MIN;
        loop {
            if self.tx.is_closed() {
                return None;
            }
            match open(&self.pool, &self.prefix, self.next_rev).await {
                Ok((opened, next)) => {
                    self.next_rev = next;
                    return Some(opened);
                }
                Err(e) => {
                    tracing::debug!(error = %format!("{e:#}"), "etcd watch reconnect failed")
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Forward events until the stream ends or stops answering.
    async fn pump(&mut self, cur: &mut Opened) -> End {
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        progress.reset();
        let mut last_heard = Instant::now();
        let silence = PROGRESS_EVERY + self.pool.settings().request_timeout;
        loop {
            tokio::select! {
                _ = self.tx.closed() => return End::ConsumerGone,
                msg = cur.stream.message() => match msg {
                    Ok(Some(resp)) => {
                        last_heard = Instant::now();
                        if let Some(end) = self.deliver(resp).await {
                            return end;
                        }
                    }
                    Ok(None) => return End::Broken("stream ended".into()),
                    Err(e) => return End::Broken(e.to_string()),
                },
                _ = progress.tick() => {
                    if last_heard.elapsed() > silence {
                        return End::Broken(format!("no answer from etcd for {silence:?}"));
                    }
                    if let Err(e) = cur.watcher.request_progress().await {
                        return End::Broken(e.to_string());
                    }
                }
            }
        }
    }

    /// Send one response's events to the consumer.
    async fn deliver(&mut self, resp: WatchResponse) -> Option<End> {
        if resp.compact_revision() > 0 {
            return Some(End::Compacted);
        }
        if resp.canceled() {
            return Some(End::Broken(format!(
                "watch canceled: {}",
                resp.cancel_reason()
            )));
        }
        if resp.events().is_empty() {
            // A progress report: everything up to its revision was sent.
            let rev = header_revision(resp.header());
            self.next_rev = self.next_rev.max(rev + 1);
            return None;
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let out = match ev.event_type() {
                EventType::Put => WatchEvent::Put(kv_from(kv)),
                EventType::Delete => WatchEvent::Delete {
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    revision: kv.mod_revision(),
                },
            };
            self.next_rev = self.next_rev.max(kv.mod_revision() + 1);
            if self.tx.send(out).await.is_err() {
                return Some(End::ConsumerGone);
            }
        }
        None
    }
}
