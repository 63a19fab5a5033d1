//! Failsafe mode in the agent (the rule is `pgha_core::failsafe`): the
//! leader's promise rounds while it cannot read the DCS, the standby's
//! answer to `POST /failsafe`, and the gate that keeps a standby's promise
//! against its own loop.
//!
//! One [`Failsafe`] handle is shared by the loop, the REST API and the
//! background prober; everything sits behind one mutex held only for short,
//! non-blocking sections (never across a request).
//!
//! Hazards:
//! * a promise is granted from the loop's latest observation, which may be
//!   a loop old; the loop may meanwhile have decided to detach. The gate
//!   closes that race: a step that would break a promise first marks the
//!   node "detaching" under the same lock (no promise is granted after
//!   that) and is refused while a promise binds.
//! * the promise is runtime memory: an agent restart forgets it. Safe for
//!   acknowledged commits (the promotion rule alone keeps them); the
//!   leader's count of it then outlives it by at most a promise duration.

use crate::api::client;
use pgha_core::failsafe::{grant, promise_duration};
use pgha_core::{
    Action, Confirmations, DcsView, DynamicConfig, LocalState, Millis, Promise, PromiseRequest,
    SyncSet,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Whom the leader asks: the `/sync` set of its term and their API URLs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    term: u64,
    set: SyncSet,
    peers: BTreeMap<String, String>,
}

#[derive(Default)]
struct Inner {
    promise: Option<Promise>,
    /// A step that stops streaming from the promised leader has begun (or
    /// the node is detached): grant nothing.
    detaching: bool,
    local: Option<LocalState>,
    view: Option<DcsView>,
    target: Option<Target>,
    /// The DCS could not be read in the last loop: keep asking.
    asking: bool,
    confirmations: Option<Confirmations>,
    config: DynamicConfig,
}

/// The shared failsafe state of one agent.
#[derive(Clone)]
pub struct Failsafe {
    inner: Arc<Mutex<Inner>>,
    started: Instant,
    me: String,
    token: String,
}

impl Failsafe {
    /// `started` must be the agent's clock origin (the core's `Millis`).
    pub fn new(me: &str, token: &str, started: Instant) -> Failsafe {
        Failsafe {
            inner: Arc::new(Mutex::new(Inner::default())),
            started,
            me: me.to_string(),
            token: token.to_string(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> Millis {
        Millis(self.started.elapsed().as_millis() as u64)
    }

    /// The standby's side of `POST /failsafe`: grant (and remember) a
    /// promise, or say why not.
    pub fn request(&self, req: &PromiseRequest) -> Result<Promise, String> {
        let now = self.now();
        let mut s = self.lock();
        if s.detaching {
            return Err("I am detaching (or detached) from my upstream".into());
        }
        let Some(mut local) = s.local.clone() else {
            return Err("the agent has not observed its PostgreSQL yet".into());
        };
        local.promise = s.promise.clone();
        let view = s.view.clone().unwrap_or_else(|| DcsView::Unknown {
            error: "not read yet".into(),
            last_config: s.config.clone(),
        });
        let p = grant(&local, &view, req, now)?;
        s.promise = Some(p.clone());
        Ok(p)
    }

    /// The loop observed `local` and read `view`: keep them for
    /// [`Failsafe::request`], and (as the leader) track whom to ask.
    pub fn observed(&self, local: &LocalState, view: &DcsView) {
        let mut s = self.lock();
        s.local = Some(local.clone());
        s.view = Some(view.clone());
        match view {
            DcsView::Unknown { last_config, .. } => {
                s.config = last_config.clone();
                s.asking = s.target.is_some() && local.pg.is_running_primary();
            }
            DcsView::Known(v) => {
                s.config = v.config.clone();
                s.asking = false;
                let target = target(&self.me, v);
                if target.as_ref().map(|t| (&t.set, t.term))
                    != s.target.as_ref().map(|t| (&t.set, t.term))
                {
                    s.confirmations = target.as_ref().map(|t| Confirmations::new(t.set.clone()));
                }
                s.target = target;
            }
        }
    }

    /// What the core gets in `LocalState`.
    pub fn promise(&self) -> Option<Promise> {
        self.lock().promise.clone()
    }

    pub fn confirmations(&self) -> Option<Confirmations> {
        self.lock().confirmations.clone()
    }

    /// Before the loop runs `action`: refuse a step that breaks a promise
    /// that binds now; mark a step that stops streaming as detaching.
    pub fn gate(&self, action: &Action) -> Result<(), String> {
        let now = self.now();
        let mut s = self.lock();
        let bound = s.promise.as_ref().filter(|p| p.active(now)).cloned();
        let stops_streaming = match action {
            Action::DetachFromPrimary { .. }
            | Action::AcquireLeader
            | Action::Promote { .. }
            | Action::StartAsPrimary { .. } => true,
            Action::FollowLeader(up) => bound.as_ref().is_none_or(|p| up.name != p.leader),
            _ => false,
        };
        if !stops_streaming {
            return Ok(());
        }
        if let Some(p) = bound {
            return Err(format!(
                "failsafe: promised {} (term {}) for {} more not to detach or promote",
                p.leader,
                p.term,
                p.until - now
            ));
        }
        s.detaching = true;
        Ok(())
    }

    /// After the loop's actions: detached or not, as the runtime now knows.
    pub fn settle(&self, detached: bool) {
        self.lock().detaching = detached;
    }

    /// Whether the last loop found the DCS unreadable while leading.
    pub fn asking(&self) -> bool {
        self.lock().asking
    }

    /// One round of promise requests to the members of the set, in
    /// parallel, each bounded by `timeout`; records the promises granted.
    pub async fn round(&self, timeout: Duration) {
        let (target, cfg) = {
            let s = self.lock();
            match (&s.target, s.asking) {
                (Some(t), true) => (t.clone(), s.config.clone()),
                _ => return,
            }
        };
        let sent = self.now();
        let body = match serde_json::to_vec(&PromiseRequest {
            leader: self.me.clone(),
            term: target.term,
        }) {
            Ok(b) => b,
            Err(_) => return,
        };
        let mut asks = tokio::task::JoinSet::new();
        for (name, url) in target.peers {
            let body = body.clone();
            let auth = format!("Bearer {}", self.token);
            asks.spawn(async move {
                let url = format!("{}/failsafe", url.trim_end_matches('/'));
                let headers = [
                    ("Authorization", auth.as_str()),
                    ("Content-Type", "application/json"),
                ];
                let r = client::request("POST", &url, &headers, &body, timeout).await;
                (name, r)
            });
        }
        while let Some(joined) = asks.join_next().await {
            let Ok((name, r)) = joined else { continue };
            match r {
                Ok(resp) if resp.status == 200 => {
                    let mut s = self.lock();
                    if let Some(c) = s.confirmations.as_mut() {
                        c.record(&name, sent, &cfg);
                    }
                }
                // Every half loop during an outage: the decision's reason
                // (logged when it changes) says how many promised.
                Ok(resp) => tracing::debug!(
                    member = %name,
                    status = resp.status,
                    "failsafe: no promise: {}",
                    resp.text()
                ),
                Err(e) => tracing::debug!(member = %name, "failsafe: no promise: {e}"),
            }
        }
    }

    /// The background prober: a round every half loop while asking, so
    /// promises stay fresh even while the loop waits on DCS timeouts.
    pub async fn run(self) {
        loop {
            let (period, asking) = {
                let s = self.lock();
                (
                    Duration::from_millis((s.config.loop_wait.0 / 2).max(50)),
                    s.asking,
                )
            };
            if asking {
                self.round(period).await;
            }
            tokio::time::sleep(period).await;
        }
    }

    /// How long a request waits for the members (half a loop, at most the
    /// margin the leader keeps before its count of a promise runs out).
    pub fn round_timeout(&self) -> Duration {
        let s = self.lock();
        let ms = (s.config.loop_wait.0 / 2)
            .min(promise_duration(&s.config).0 / 3)
            .max(50);
        Duration::from_millis(ms)
    }
}

/// The leader's target from a view: the `/sync` set of the term it leads
/// (or led last, while nobody else holds the key), with the members' API
/// URLs. `None` when this node does not lead or failsafe mode is off.
fn target(me: &str, v: &pgha_core::ClusterView) -> Option<Target> {
    let led_last = v.sync.as_ref().is_some_and(|s| s.leader == me);
    let key_ok = v.leader.as_ref().is_none_or(|l| l.holder == me);
    if !(led_last && key_ok && v.config.failsafe_mode) {
        return None;
    }
    let set = v.sync_set();
    let peers = set
        .members
        .iter()
        .filter(|m| *m != me)
        .filter_map(|m| v.members.get(m).map(|r| (m.clone(), r.api_url.clone())))
        .filter(|(_, url)| !url.is_empty())
        .collect();
    Some(Target {
        term: v.sync_term(),
        set,
        peers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgha_core::{ClusterView, LeaderKey, Role, SyncRecord, Upstream};

    fn standby_local() -> LocalState {
        let mut l = LocalState {
            name: "b".into(),
            ..Default::default()
        };
        l.pg.running = true;
        l.pg.role = Role::Standby;
        l.pg.upstream = Some("a".into());
        l
    }

    fn down() -> DcsView {
        DcsView::Unknown {
            error: "down".into(),
            last_config: DynamicConfig::default(),
        }
    }

    fn req() -> PromiseRequest {
        PromiseRequest {
            leader: "a".into(),
            term: 3,
        }
    }

    /// A granted promise closes the gate for detaching and taking the key;
    /// following the promised leader stays open.
    #[test]
    fn a_granted_promise_closes_the_gate() {
        let f = Failsafe::new("b", "t", Instant::now());
        assert!(f.request(&req()).is_err(), "nothing observed yet");
        f.observed(&standby_local(), &down());
        let p = f.request(&req()).unwrap();
        assert_eq!(p.leader, "a");
        assert_eq!(f.promise(), Some(p));
        assert!(f
            .gate(&Action::DetachFromPrimary { after_term: 3 })
            .is_err());
        assert!(f.gate(&Action::AcquireLeader).is_err());
        let up = |n: &str| Upstream {
            name: n.into(),
            conn: Default::default(),
        };
        assert!(f.gate(&Action::FollowLeader(up("a"))).is_ok());
        assert!(f.gate(&Action::FollowLeader(up("c"))).is_err());
        assert!(f.gate(&Action::PublishMember(Default::default())).is_ok());
    }

    /// Once a step that stops streaming passed the gate, no promise is
    /// granted until the loop says it is not detached.
    #[test]
    fn no_promise_once_detaching() {
        let f = Failsafe::new("b", "t", Instant::now());
        f.observed(&standby_local(), &down());
        f.gate(&Action::DetachFromPrimary { after_term: 3 })
            .unwrap();
        assert!(f.request(&req()).unwrap_err().contains("detaching"));
        f.settle(false);
        assert!(f.request(&req()).is_ok());
    }

    /// The leader asks the other members of its set while the DCS is out,
    /// and starts afresh when the set changes.
    #[test]
    fn the_leader_tracks_its_set_and_asks_only_while_the_dcs_is_out() {
        let f = Failsafe::new("a", "t", Instant::now());
        let mut v = ClusterView {
            leader: Some(LeaderKey {
                holder: "a".into(),
                term: 3,
            }),
            sync: Some(SyncRecord {
                term: 3,
                leader: "a".into(),
                set: SyncSet::new(["b", "c"], 1),
                handoff: None,
            }),
            ..Default::default()
        };
        for (n, url) in [("b", "http://b:1"), ("c", "")] {
            v.members.insert(
                n.into(),
                pgha_core::MemberState {
                    name: n.into(),
                    api_url: url.into(),
                    ..Default::default()
                },
            );
        }
        let mut primary = standby_local();
        primary.name = "a".into();
        primary.pg.role = Role::Primary;
        f.observed(&primary, &DcsView::Known(v.clone()));
        assert!(!f.asking());
        let t = f.lock().target.clone().unwrap();
        assert_eq!(
            t.peers.keys().collect::<Vec<_>>(),
            ["b"],
            "c has no API URL"
        );
        f.observed(&primary, &down());
        assert!(f.asking());
        f.lock()
            .confirmations
            .as_mut()
            .unwrap()
            .record("b", f.now(), &DynamicConfig::default());
        f.observed(&primary, &DcsView::Known(v.clone()));
        assert!(
            f.confirmations().unwrap().until.contains_key("b"),
            "same set: kept"
        );
        v.leader = Some(LeaderKey {
            holder: "c".into(),
            term: 9,
        });
        f.observed(&primary, &DcsView::Known(v));
        assert_eq!(f.confirmations(), None, "another leader: nothing to ask");
    }
}
