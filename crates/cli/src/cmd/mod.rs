//! One module per subcommand.

pub mod agent;
pub mod backup;
pub mod dashboard;
pub mod destroy;
pub mod down;
pub mod edit_config;
pub mod etcd_auth;
pub mod events;
pub mod failover;
pub mod from_backup;
pub mod logs;
pub mod pause;
pub mod prometheus;
pub mod proxy;
pub mod reinit;
pub mod restart;
pub mod restore;
pub mod retention;
pub mod secrets;
pub mod status;
pub mod switchover;
pub mod tls;
pub mod up;
pub mod wal;

/// Logs go to stderr; `RUST_LOG` overrides the default level (info).
/// Colour only on a terminal: the agents' and the proxy's stderr is a log
/// file (agent.log, proxy.log), and escape codes there are noise.
pub fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
