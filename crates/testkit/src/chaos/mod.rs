//! The fault-injection harness ("chaos"): a real three-node cluster with a
//! three-member etcd and a proxy, clients that record every acknowledged
//! write, seeded fault schedules, and a checker that proves no
//! acknowledged write was lost, no two primaries acknowledged writes on
//! diverging histories, and no session read stale data.
//!
//! Layout: `history` (the JSON record of a run), `lab` (hosts: network
//! namespaces or loopback, and the processes on them), `faults` (what can
//! be done to the lab and how to heal it), `schedule` (seeded choice of
//! faults), `clients` (the workload), `run` (one run end to end),
//! `check` (the offline checker), `report` (summary table, SVG timeline).

pub mod check;
pub mod clients;
pub mod faults;
pub mod history;
pub mod lab;
pub mod report;
pub mod run;
pub mod schedule;
