//! The pure high-availability logic of pgha: member, role, LSN and sync-set
//! types, the decision step, and the durability rules.
//!
//! Nothing here does I/O or depends on an async runtime: the agent feeds in an
//! observation and executes the actions that come back, and the simulator does
//! the same with a fake DCS and fake clocks.
//!
//! # Using it from the agent
//!
//! Each loop (every [`DynamicConfig::loop_wait`], or sooner when
//! [`Decision::wake_in`] says so, or when a DCS watch fires):
//!
//! 1. read the whole cluster prefix in one snapshot → [`DcsView::Known`]
//!    (on error or timeout: [`DcsView::Unknown`] with the last config);
//! 2. probe PostgreSQL and fill [`LocalState`] (the fields marked "runtime
//!    memory" are kept by the agent between loops);
//! 3. call [`decide()`] with the agent's monotonic clock as [`Millis`];
//! 4. log the [`Decision::reason`] (and keep the last ones for `/cluster`),
//!    then execute [`Decision::actions`] in order, stopping at the first
//!    failure. Each [`Action`] variant documents what the runtime must do.
//!
//! Also run a loop at once (not waiting for `wake_in`) when a DCS watch
//! reports that the leader key was deleted or a member record changed:
//! failover time is dominated by how soon standbys notice.
//!
//! The runtime keeps a little memory between loops and reports it in
//! [`LocalState`]: the lease (send time of the last successful renew), the
//! detach promise, the LSN at which `synchronous_standby_names` last took
//! effect, when PostgreSQL was first seen stopped, and whether `pg_rewind`
//! failed. Losing it (agent restart) is safe: the core asks again.
//!
//! # Where the rules are
//!
//! * [`promotion`]: who may promote ([`promotion::check_promotion`]);
//! * [`sync`] and [`sync_plan`]: the quorum arithmetic and the leader's
//!   one-step-at-a-time changes of `/sync` and `synchronous_standby_names`;
//! * `decide` (module `decide`): the per-role rules;
//! * [`failsafe`]: who keeps writing while the DCS is out
//!   ([`failsafe::writes_may_continue`], [`failsafe::grant`]);
//! * [`hung`]: a server that runs but does not answer ([`hung::judge`]).
//!
//! `tests/sim` is a deterministic simulator that runs these rules on many
//! nodes with seeded faults and checks the durability invariants.

pub mod action;
pub mod decide;
pub mod event;
pub mod failsafe;
pub mod hung;
pub mod local;
pub mod lsn;
pub mod member;
pub mod promotion;
pub mod sync;
pub mod sync_plan;
pub mod time;
pub mod view;

pub use action::{Action, Decision, DemoteKind, Upstream};
pub use decide::{decide, member_record};
pub use failsafe::{Confirmations, Promise, PromiseRequest};
pub use local::{
    DataDir, LeaseState, LocalState, PgState, ReplicaStatus, SwitchoverSeen, SyncInDoubt,
    SyncNamesState,
};
pub use lsn::{Lsn, ParseLsnError, Timeline, WalPos};
pub use member::{ConnInfo, Detached, MemberState, Role, Tags};
pub use sync::{SyncSet, SyncStandbyNames};
pub use time::Millis;
pub use view::{
    ClusterView, DcsView, DynamicConfig, FailoverRequest, Handoff, LeaderKey, ProxyState,
    SwitchoverRequest, SyncRecord,
};
