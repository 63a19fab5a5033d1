//! Helpers for tests that run real processes: free loopback ports, process
//! guards that stop what a test started (by PID, even when the test panics),
//! and waiting on conditions with a deadline instead of sleeping.

// Test support: a broken expectation here is a failed test, said by the panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod chaos;
pub mod cluster;
pub mod etcd;
pub mod pg;
pub mod ports;
pub mod process;
pub mod proxy_writer;
pub mod tools;
pub mod unprivileged;
pub mod wait;
pub mod workload;

pub use ports::free_port;
pub use process::ProcessGuard;
pub use wait::{wait_until, wait_until_async};
