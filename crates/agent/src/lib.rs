//! The agent: owns one PostgreSQL instance, publishes its member state to
//! the DCS, competes for the leader lease, and executes the actions the pure
//! decision core (`pgha_core`) returns. Also serves the REST API
//! (Patroni-compatible health endpoints and `/cluster`).

pub mod api;
pub mod events;
mod execute;
pub mod failsafe;
pub mod instrumented;
pub mod lease;
pub mod metrics;
pub mod observe;
pub mod responsive;
pub mod runtime;
pub mod sampler;
pub mod status;
pub mod tasks;
pub mod view;

pub use runtime::{initial_config, Agent, Exit};
