//! One PostgreSQL instance, driven from outside: locate the binaries, run them
//! as the service user, render pgha's settings file and pg_hba.conf, initdb,
//! start, stop, reload, promote, clone from a primary, rewind, and the SQL
//! probes the agent and `pgha status` read.
//!
//! Every operation returns `Result<_, PgError>`; a failed external command
//! keeps its exit status and stderr so the caller can say what went wrong.

pub mod binaries;
pub mod conf;
pub mod controldata;
pub mod error;
pub mod instance;
pub mod lockfile;
pub mod os_user;
pub mod probe;
pub mod secrets;
pub mod seed;
mod shell;
pub mod tls_files;

pub use binaries::PgBinaries;
pub use error::PgError;
pub use instance::{process_alive, wait_for_exit, Instance, ShutdownProgress, StopMode};
pub use os_user::ServiceUser;
pub use secrets::Secrets;
