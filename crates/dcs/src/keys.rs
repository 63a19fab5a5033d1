//! The etcd key layout of one cluster — what operators see with
//! `etcdctl get --prefix /pgha/<cluster>/`.
//!
//! | key | value | lease | written by |
//! |---|---|---|---|
//! | `<ns>/<cluster>/leader` | leader member name | leader's lease | the leader (create_if_absent; released with delete_if_equals, or at a switchover's hand-over together with the /sync write by put_and_delete_if_equals) |
//! | `<ns>/<cluster>/members/<name>` | member state (JSON) | member's lease | each agent, every loop |
//! | `<ns>/<cluster>/sync` | sync set and quorum (JSON) | none | the leader, only via put_if_key_equals(leader = me, created in the record's term; sync's mod revision = the one last read), or put_and_delete_if_equals(the same guard) at a hand-over |
//! | `<ns>/<cluster>/config` | dynamic cluster config (JSON, e.g. pause) | none | the CLI (`edit-config`, `pause`) |
//! | `<ns>/<cluster>/initialize` | system identifier of the bootstrapped cluster | none | the bootstrapping agent (create_if_absent) |
//! | `<ns>/<cluster>/switchover` | planned switchover request (JSON) | none | the CLI; cleared by the leader |
//! | `<ns>/<cluster>/failover` | manual failover request (JSON) | none | the CLI; cleared by the new leader |
//! | `<ns>/<cluster>/history` | timeline history (JSON) | none | the leader after a promotion |
//! | `<ns>/<cluster>/proxies/<name>` | proxy state (JSON) | proxy's lease | each proxy |
//! | `<ns>/<cluster>/events` | the event history: failovers, fences... (JSON list, newest last, bounded) | none | any agent, by compare-and-swap append |
//!
//! `<ns>` is [`DcsSettings::namespace`](crate::DcsSettings), `/pgha` by default.
//! The JSON value formats belong to the crates that write them; this module
//! only fixes the names.
//!
//! Hazard: names are path segments. A member, proxy or cluster name with
//! `/` in it would alias another key, so [`validate_name`] rejects it.

use std::fmt;

/// Why a cluster, member or proxy name cannot be used in a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name {name:?}: {reason}")]
pub struct InvalidName {
    pub name: String,
    pub reason: &'static str,
}

/// Check a cluster, member or proxy name: 1-64 characters of
/// `[A-Za-z0-9_.-]`, not `.` or `..`.
pub fn validate_name(name: &str) -> Result<(), InvalidName> {
    let bad = |reason| {
        Err(InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 64 {
        return bad("must be 1 to 64 characters long");
    }
    if name == "." || name == ".." {
        return bad("must not be '.' or '..'");
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if !name.chars().all(ok) {
        return bad("only letters, digits, '_', '.' and '-' are allowed");
    }
    Ok(())
}

/// What a key under a cluster's prefix is, as parsed by [`ClusterKeys::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterKey<'a> {
    Leader,
    Member(&'a str),
    Sync,
    Config,
    Initialize,
    Switchover,
    Failover,
    History,
    Proxy(&'a str),
}

/// The keys of one cluster: `<namespace>/<cluster>/...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterKeys {
    /// `<namespace>/<cluster>/`, with the trailing slash.
    prefix: String,
}

impl ClusterKeys {
    /// Keys for `cluster` under `namespace` (e.g. `"/pgha"`; a trailing `/`
    /// is ignored).
    pub fn new(namespace: &str, cluster: &str) -> Result<Self, InvalidName> {
        validate_name(cluster)?;
        let ns = namespace.trim_end_matches('/');
        Ok(ClusterKeys {
            prefix: format!("{ns}/{cluster}/"),
        })
    }

    /// `<ns>/<cluster>/` — watch this to see every change of the cluster.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<ns>/<cluster>/leader`: the leader lease key.
    pub fn leader(&self) -> String {
        self.key("leader")
    }

    /// `<ns>/<cluster>/members/`: prefix of all member keys.
    pub fn members_prefix(&self) -> String {
        self.key("members/")
    }

    /// `<ns>/<cluster>/members/<name>`. Call [`validate_name`] on config input.
    pub fn member(&self, name: &str) -> String {
        format!("{}members/{name}", self.prefix)
    }

    /// `<ns>/<cluster>/sync`: the synchronous standby set the leader recorded.
    pub fn sync(&self) -> String {
        self.key("sync")
    }

    /// `<ns>/<cluster>/config`: the dynamic cluster configuration.
    pub fn config(&self) -> String {
        self.key("config")
    }

    /// `<ns>/<cluster>/initialize`: who bootstrapped the cluster.
    pub fn initialize(&self) -> String {
        self.key("initialize")
    }

    /// `<ns>/<cluster>/switchover`: a pending planned switchover.
    pub fn switchover(&self) -> String {
        self.key("switchover")
    }

    /// `<ns>/<cluster>/failover`: a pending manual failover.
    pub fn failover(&self) -> String {
        self.key("failover")
    }

    /// `<ns>/<cluster>/history`: the timeline history.
    pub fn history(&self) -> String {
        self.key("history")
    }

    /// `<ns>/<cluster>/proxies/`: prefix of all proxy keys.
    pub fn proxies_prefix(&self) -> String {
        self.key("proxies/")
    }

    /// `<ns>/<cluster>/events`: the event history (not a [`ClusterKey`]:
    /// the agents' and proxies' views skip it).
    pub fn events(&self) -> String {
        self.key("events")
    }

    /// `<ns>/<cluster>/proxies/<name>`.
    pub fn proxy(&self, name: &str) -> String {
        format!("{}proxies/{name}", self.prefix)
    }

    /// What `key` is, if it is one of this cluster's keys.
    pub fn parse<'k>(&self, key: &'k str) -> Option<ClusterKey<'k>> {
        let rest = key.strip_prefix(self.prefix.as_str())?;
        if let Some(name) = rest.strip_prefix("members/") {
            return validate_name(name).ok().map(|_| ClusterKey::Member(name));
        }
        if let Some(name) = rest.strip_prefix("proxies/") {
            return validate_name(name).ok().map(|_| ClusterKey::Proxy(name));
        }
        Some(match rest {
            "leader" => ClusterKey::Leader,
            "sync" => ClusterKey::Sync,
            "config" => ClusterKey::Config,
            "initialize" => ClusterKey::Initialize,
            "switchover" => ClusterKey::Switchover,
            "failover" => ClusterKey::Failover,
            "history" => ClusterKey::History,
            _ => return None,
        })
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }
}

impl fmt::Display for ClusterKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_stable() {
        let k = ClusterKeys::new("/pgha", "main").expect("valid");
        assert_eq!(k.prefix(), "/pgha/main/");
        assert_eq!(k.leader(), "/pgha/main/leader");
        assert_eq!(k.member("node1"), "/pgha/main/members/node1");
        assert_eq!(k.members_prefix(), "/pgha/main/members/");
        assert_eq!(k.sync(), "/pgha/main/sync");
        assert_eq!(k.config(), "/pgha/main/config");
        assert_eq!(k.initialize(), "/pgha/main/initialize");
        assert_eq!(k.switchover(), "/pgha/main/switchover");
        assert_eq!(k.failover(), "/pgha/main/failover");
        assert_eq!(k.history(), "/pgha/main/history");
        assert_eq!(k.proxy("p1"), "/pgha/main/proxies/p1");
        assert_eq!(
            ClusterKeys::new("/x/", "c").expect("valid").leader(),
            "/x/c/leader"
        );
    }

    #[test]
    fn parse_round_trips() {
        let k = ClusterKeys::new("/pgha", "main").expect("valid");
        assert_eq!(k.parse(&k.leader()), Some(ClusterKey::Leader));
        assert_eq!(k.parse(&k.member("n1")), Some(ClusterKey::Member("n1")));
        assert_eq!(k.parse(&k.proxy("p")), Some(ClusterKey::Proxy("p")));
        assert_eq!(k.parse(&k.sync()), Some(ClusterKey::Sync));
        assert_eq!(k.parse("/pgha/mainx/leader"), None);
        assert_eq!(k.parse("/pgha/main/members/a/b"), None);
        assert_eq!(k.parse("/pgha/main/unknown"), None);
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("node-1.a_b").is_ok());
        for bad in ["", "a/b", "..", "sp ace", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ClusterKeys::new("/pgha", "a/b").is_err());
    }
}
