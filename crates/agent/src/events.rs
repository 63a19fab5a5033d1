//! Writing and reading the event history (`pgha_core::event`) in the DCS:
//! one key, `<ns>/<cluster>/events`, a JSON list of the newest
//! [`EVENTS_KEPT`](pgha_core::event::EVENTS_KEPT) events, appended by
//! compare-and-swap so that agents appending at once lose nothing.
//!
//! Why one key in etcd (and not a file per member): the history must
//! outlive the member it is about (a failover's story is about a node that
//! died) and be readable from anywhere `pgha` reaches etcd. The cost: the
//! list (at most ~25 KB) is part of every agent's prefix read.
//!
//! The loop never waits on this: it queues events on a channel and the
//! writer task appends them, retrying while etcd is unavailable; an event
//! that cannot be queued (the queue is full because etcd is away) is
//! dropped with a warning, and the history says less, never something false.

use pgha_core::event::{append, Event};
use pgha_dcs::{Dcs, DcsResult};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Events waiting for the writer.
const QUEUE: usize = 64;
/// Compare-and-swap attempts per event before a pause.
const CAS_TRIES: usize = 5;

/// The loop's end of the queue.
#[derive(Clone, Debug)]
pub struct EventLog {
    tx: mpsc::Sender<Event>,
}

impl EventLog {
    pub fn channel() -> (EventLog, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (EventLog { tx }, rx)
    }

    /// Queue `event` (never waits).
    pub fn record(&self, event: Event) {
        tracing::info!(
            kind = event.kind.name(),
            member = %event.member,
            duration_ms = ?event.duration_ms,
            ok = event.ok,
            "event: {} ({})",
            event.reason,
            event.detail
        );
        if self.tx.try_send(event).is_err() {
            tracing::warn!(
                "event history queue full (etcd unreachable?): an event is not recorded"
            );
        }
    }
}

/// Append queued events to `key` until the queue closes.
pub async fn writer(dcs: Arc<dyn Dcs>, key: String, mut rx: mpsc::Receiver<Event>) {
    while let Some(event) = rx.recv().await {
        let mut pause = Duration::from_millis(200);
        loop {
            match append_one(dcs.as_ref(), &key, &event).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::debug!("event history: append failed, retrying: {e}"),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }
}

/// One append: up to [`CAS_TRIES`] read-modify-write rounds; `false` when
/// every round lost a race.
pub async fn append_one(dcs: &dyn Dcs, key: &str, event: &Event) -> DcsResult<bool> {
    for _ in 0..CAS_TRIES {
        let got = dcs.get(key).await?;
        let (list, expected) = match &got.kv {
            Some(kv) => (
                kv.parse_json::<Vec<Event>>().unwrap_or_default(),
                kv.mod_revision,
            ),
            None => (Vec::new(), 0),
        };
        let list = append(list, event.clone());
        let json = serde_json::to_vec(&list).unwrap_or_default();
        if dcs.compare_and_swap(key, &json, expected, None).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The history, oldest first (empty when there is none yet).
pub async fn read(dcs: &dyn Dcs, key: &str) -> DcsResult<Vec<Event>> {
    let got = dcs.get(key).await?;
    Ok(got
        .kv
        .and_then(|kv| kv.parse_json::<Vec<Event>>())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgha_core::event::EventKind;
    use pgha_dcs::MemoryDcs;

    fn ev(member: &str) -> Event {
        Event {
            at_unix_ms: 1,
            kind: EventKind::Failover,
            member: member.into(),
            reason: "leader gone".into(),
            duration_ms: Some(1200),
            detail: String::new(),
            ok: true,
        }
    }

    #[tokio::test]
    async fn concurrent_appends_lose_nothing() {
        let dcs = Arc::new(MemoryDcs::new());
        let key = "/pgha/c/events";
        let mut tasks = Vec::new();
        for i in 0..4 {
            let dcs = dcs.clone();
            tasks.push(tokio::spawn(async move {
                let (log, rx) = EventLog::channel();
                log.record(ev(&format!("n{i}")));
                drop(log);
                writer(dcs, key.to_string(), rx).await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut members: Vec<String> = read(dcs.as_ref(), key)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.member)
            .collect();
        members.sort();
        assert_eq!(members, ["n0", "n1", "n2", "n3"]);
    }
}
