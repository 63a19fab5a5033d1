//! The agent's background tasks (lease keeper, DCS watch, postmaster watch,
//! and whatever the caller adds, e.g. the REST API) supervised as one set.
//!
//! Every task is meant to run as long as the agent: one that ends, returns
//! an error or panics leaves the agent blind or unable to keep its lease
//! while it still looks alive. So the loop waits on [`Tasks::ended`] next to
//! everything else; the first task to end is logged by name with the reason,
//! and the agent shuts down and exits non-zero for its supervisor (systemd,
//! `pgha up`) to restart it. Nothing is restarted in place: a fresh process
//! starts from a fresh observation.
//!
//! Hazard: a task that hangs without ending is not seen here; the lease
//! keeper's stall guard covers the loop itself.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use tokio::task::{AbortHandle, Id, JoinError, JoinSet};

/// Named tasks; dropping the set aborts them all.
#[derive(Default)]
pub struct Tasks {
    set: JoinSet<anyhow::Result<()>>,
    names: HashMap<Id, &'static str>,
}

/// Which task ended, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEnded {
    pub name: &'static str,
    pub why: String,
}

impl fmt::Display for TaskEnded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {:?} ended: {}", self.name, self.why)
    }
}

impl Tasks {
    /// Runs `task` as `name`; the handle stops it early (on shutdown).
    pub fn spawn<F>(&mut self, name: &'static str, task: F) -> AbortHandle
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let handle = self.set.spawn(task);
        self.names.insert(handle.id(), name);
        handle
    }

    /// Resolves when one of the tasks ends (never while none does, nor
    /// when the set is empty).
    pub async fn ended(&mut self) -> TaskEnded {
        let Some(joined) = self.set.join_next_with_id().await else {
            return std::future::pending().await;
        };
        let (id, why) = match joined {
            Ok((id, Ok(()))) => (
                id,
                "it returned, but it should run as long as the agent".into(),
            ),
            Ok((id, Err(e))) => (id, format!("it failed: {e:#}")),
            Err(e) => (e.id(), join_error(e)),
        };
        TaskEnded {
            name: self.names.remove(&id).unwrap_or("unnamed"),
            why,
        }
    }

    /// Aborts every task and waits until all have stopped.
    pub async fn shutdown(&mut self) {
        self.set.shutdown().await;
        self.names.clear();
    }
}

fn join_error(e: JoinError) -> String {
    if !e.is_panic() {
        return "it was cancelled".into();
    }
    let payload = e.into_panic();
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    format!("it panicked: {msg}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn names_the_task_that_ends_and_why() {
        let mut tasks = Tasks::default();
        tasks.spawn("forever", std::future::pending());
        tasks.spawn("returns", async { Ok(()) });
        let ended = tasks.ended().await;
        assert_eq!(ended.name, "returns");
        assert!(ended.why.contains("returned"), "{ended}");

        tasks.spawn("fails", async { Err(anyhow::anyhow!("watch closed")) });
        let ended = tasks.ended().await;
        assert_eq!(
            (ended.name, ended.why.as_str()),
            ("fails", "it failed: watch closed")
        );

        tasks.spawn("panics", async { panic!("boom {}", 7) });
        let ended = tasks.ended().await;
        assert_eq!(
            (ended.name, ended.why.as_str()),
            ("panics", "it panicked: boom 7")
        );

        let still = tokio::time::timeout(Duration::from_millis(50), tasks.ended()).await;
        assert!(still.is_err(), "a running task is not an ended one");
        tasks.shutdown().await;
    }
}
