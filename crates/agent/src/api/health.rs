//! The Patroni-compatible health checks as pure functions of one
//! [`AgentStatus`] snapshot, so they can be tested without a socket.
//!
//! Every check answers "should a load balancer send this kind of traffic to
//! this node now?". Hazard: a check must fail closed. When a fact is unknown
//! (no lag measured, PostgreSQL role unknown, no leader lease) the answer is
//! "no", never "yes".

use crate::status::AgentStatus;
use pgha_core::Role;
use std::collections::HashMap;

/// The health endpoints. Each path (and alias) maps to one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// `/`, `/primary`, `/master`, `/leader`, `/read-write`: the writable leader.
    Primary,
    /// `/replica`: a streaming standby that is not the leader, within `?lag=`.
    Replica,
    /// `/read-only`: the leader's running primary or a healthy standby.
    ReadOnly,
    /// `/health`: PostgreSQL runs.
    Health,
    /// `/sync`, `/synchronous`: a running standby in the sync set.
    Sync,
    /// `/async`, `/asynchronous`: a streaming standby not in the sync set.
    Async,
    /// `/readiness`: the writable leader or a running standby.
    Readiness,
}

impl Check {
    /// The check a request path asks for (without the query), if any.
    pub fn from_path(path: &str) -> Option<Check> {
        Some(match path {
            "/" | "/primary" | "/master" | "/leader" | "/read-write" => Check::Primary,
            "/replica" => Check::Replica,
            "/read-only" => Check::ReadOnly,
            "/health" => Check::Health,
            "/sync" | "/synchronous" => Check::Sync,
            "/async" | "/asynchronous" => Check::Async,
            "/readiness" => Check::Readiness,
            _ => return None,
        })
    }
}

/// The outcome of one check: pass (200) or fail (503) with a reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail(String),
    /// The request itself is malformed (400), e.g. `?lag=abc`.
    BadRequest(String),
}

/// Evaluate `check` on `s` with the request's query parameters.
pub fn evaluate(check: Check, s: &AgentStatus, query: &HashMap<String, String>) -> Verdict {
    let max_lag = match query.get("lag").map(|v| parse_lag(v)) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(e)) => return Verdict::BadRequest(e),
    };
    let ok = |cond: bool, why: &str| {
        if cond {
            Verdict::Pass
        } else {
            Verdict::Fail(why.to_string())
        }
    };
    match check {
        Check::Primary => ok(s.writable, "not the writable leader"),
        Check::Health => ok(s.pg_running, "PostgreSQL is not running"),
        Check::Readiness => ok(
            s.writable || running_standby(s),
            "neither the writable leader nor a running standby",
        ),
        Check::ReadOnly => ok(
            leader_primary(s) || streaming_standby(s),
            "neither the leader's primary nor a streaming standby",
        ),
        Check::Replica => match streaming_standby(s) && !s.is_leader {
            false => Verdict::Fail("not a streaming standby".into()),
            true => within_lag(s, max_lag),
        },
        Check::Sync => ok(
            running_standby(s) && !s.is_leader && s.in_sync_set,
            "not a synchronous standby",
        ),
        Check::Async => match streaming_standby(s) && !s.is_leader && !s.in_sync_set {
            false => Verdict::Fail("not an asynchronous streaming standby".into()),
            true => within_lag(s, max_lag),
        },
    }
}

fn running_standby(s: &AgentStatus) -> bool {
    s.pg_running && s.role == Role::Standby
}

fn streaming_standby(s: &AgentStatus) -> bool {
    running_standby(s) && s.streaming
}

/// The leader's PostgreSQL runs as a primary (it may be fenced: reads are
/// still current, writes are not accepted).
fn leader_primary(s: &AgentStatus) -> bool {
    s.is_leader && s.pg_running && s.role == Role::Primary
}

fn within_lag(s: &AgentStatus, max_lag: Option<u64>) -> Verdict {
    let Some(max) = max_lag else {
        return Verdict::Pass;
    };
    match s.lag_bytes {
        Some(lag) if lag <= max => Verdict::Pass,
        Some(lag) => Verdict::Fail(format!("lag {lag} bytes exceeds {max}")),
        None => Verdict::Fail("lag unknown".into()),
    }
}

/// Parse a `?lag=` value as Patroni does: bytes by default, or a number with
/// a PostgreSQL memory unit (`B`, `kB`, `MB`, `GB`, `TB`; 1024-based, the
/// case of the unit is ignored).
pub fn parse_lag(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("lag={text:?}: expected bytes or a size like 16MB");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1 << 10,
        "mb" | "m" => 1 << 20,
        "gb" | "g" => 1 << 30,
        "tb" | "t" => 1 << 40,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary() -> AgentStatus {
        AgentStatus {
            role: Role::Primary,
            pg_running: true,
            is_leader: true,
            writable: true,
            ..Default::default()
        }
    }

    fn standby(lag: u64, sync: bool) -> AgentStatus {
        AgentStatus {
            role: Role::Standby,
            pg_running: true,
            streaming: true,
            lag_bytes: Some(lag),
            in_sync_set: sync,
            ..Default::default()
        }
    }

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn pass(c: Check, s: &AgentStatus) -> bool {
        evaluate(c, s, &HashMap::new()) == Verdict::Pass
    }

    #[test]
    fn lag_units_follow_patroni() {
        assert_eq!(parse_lag("1048576"), Ok(1 << 20));
        assert_eq!(parse_lag("16MB"), Ok(16 << 20));
        assert_eq!(parse_lag("16mb"), Ok(16 << 20));
        assert_eq!(parse_lag("1kB"), Ok(1024));
        assert_eq!(parse_lag("2 GB"), Ok(2 << 30));
        assert!(parse_lag("abc").is_err());
        assert!(parse_lag("16XB").is_err());
        assert!(parse_lag("").is_err());
        assert!(parse_lag("99999999999999TB").is_err());
    }

    #[test]
    fn primary_passes_only_primary_checks() {
        let p = primary();
        assert!(pass(Check::Primary, &p));
        assert!(pass(Check::ReadOnly, &p));
        assert!(pass(Check::Health, &p));
        assert!(!pass(Check::Replica, &p));
        assert!(!pass(Check::Sync, &p));
        assert!(!pass(Check::Async, &p));
    }

    #[test]
    fn fenced_primary_is_not_writable_but_still_readable() {
        let p = AgentStatus {
            writable: false,
            ..primary()
        };
        assert!(!pass(Check::Primary, &p));
        assert!(pass(Check::ReadOnly, &p));
    }

    #[test]
    fn primary_without_lease_serves_nothing_but_health() {
        let p = AgentStatus {
            writable: false,
            is_leader: false,
            ..primary()
        };
        assert!(!pass(Check::ReadOnly, &p));
        assert!(pass(Check::Health, &p));
    }

    #[test]
    fn standby_checks_follow_sync_set_and_lag() {
        let s = standby(100, true);
        assert!(pass(Check::Replica, &s));
        assert!(pass(Check::Sync, &s));
        assert!(!pass(Check::Async, &s));
        assert!(!pass(Check::Primary, &s));
        let a = standby(100, false);
        assert!(pass(Check::Async, &a));
        assert!(!pass(Check::Sync, &a));
        let lagging = standby(32 << 20, false);
        let v = evaluate(Check::Replica, &lagging, &q(&[("lag", "16MB")]));
        assert!(
            matches!(v, Verdict::Fail(ref m) if m.contains("exceeds")),
            "{v:?}"
        );
        assert_eq!(
            evaluate(Check::Replica, &lagging, &q(&[("lag", "64MB")])),
            Verdict::Pass
        );
        let unknown = AgentStatus {
            lag_bytes: None,
            ..standby(0, false)
        };
        assert!(pass(Check::Replica, &unknown));
        assert!(!matches!(
            evaluate(Check::Replica, &unknown, &q(&[("lag", "1MB")])),
            Verdict::Pass
        ));
        assert!(matches!(
            evaluate(Check::Replica, &s, &q(&[("lag", "x")])),
            Verdict::BadRequest(_)
        ));
    }

    #[test]
    fn stopped_or_detached_standby_fails_replica() {
        let stopped = AgentStatus {
            pg_running: false,
            ..standby(0, true)
        };
        assert!(!pass(Check::Replica, &stopped));
        assert!(!pass(Check::Health, &stopped));
        assert!(!pass(Check::Sync, &stopped));
        let detached = AgentStatus {
            streaming: false,
            ..standby(0, false)
        };
        assert!(!pass(Check::Replica, &detached));
        assert!(pass(Check::Readiness, &detached));
    }

    #[test]
    fn paths_and_aliases() {
        for p in ["/", "/primary", "/master", "/leader"] {
            assert_eq!(Check::from_path(p), Some(Check::Primary), "{p}");
        }
        assert_eq!(Check::from_path("/replica"), Some(Check::Replica));
        assert_eq!(Check::from_path("/cluster"), None);
    }
}
