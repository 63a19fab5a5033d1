//! The `pgha` binary: parses the command line and hands off to one module per
//! subcommand. Each module owns its own `Args` and its `run`.

mod access;
mod cmd;
mod dev;
mod output;
mod progress;
mod supervise;
mod target;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "pgha",
    version,
    about = "PostgreSQL high availability: agents, proxy, WAL archive, dev cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HA agent of one member (foreground).
    Agent(cmd::agent::Args),
    /// Bring up the local dev cluster (creating it the first time).
    Up(cmd::up::Args),
    /// Stop every process of the local dev cluster.
    Down(cmd::down::Args),
    /// Stop the dev cluster and remove its directory.
    Destroy(cmd::destroy::Args),
    /// Show the cluster: leader, pause, and per member role, state, agent, LSNs, lag, sync state.
    Status(cmd::status::Args),
    /// The dev cluster's log files: an agent's, a member's PostgreSQL, the proxy's, etcd's.
    Logs(cmd::logs::Args),
    /// A live status page (HTML) of the cluster on a local HTTP port.
    Dashboard(cmd::dashboard::Args),
    /// The event history: failovers, switchovers, fences, rewinds, re-clones, sync-set changes.
    Events(cmd::events::Args),
    /// Hand the leader role over to a standby, losing no acknowledged write.
    Switchover(cmd::switchover::Args),
    /// Promote a member when the primary is gone (manual failover).
    Failover(cmd::failover::Args),
    /// Maintenance mode: stop every automatic action of the agents.
    Pause(cmd::pause::Args),
    /// Leave maintenance mode.
    Resume(cmd::pause::Args),
    /// Restart one member's PostgreSQL through its agent.
    Restart(cmd::restart::Args),
    /// Re-clone one standby from the leader through its agent.
    Reinit(cmd::reinit::Args),
    /// Show or change the cluster-wide dynamic configuration.
    EditConfig(cmd::edit_config::Args),
    /// archive_command target: copy one WAL file into the archive.
    WalPush(cmd::wal::PushArgs),
    /// restore_command target: copy one WAL file out of the archive.
    WalFetch(cmd::wal::FetchArgs),
    /// WAL archive maintenance.
    Archive(cmd::wal::ArchiveArgs),
    /// Take a verified base backup into the archive; `backup list` shows them.
    Backup(cmd::backup::Args),
    /// Mark a named point in the WAL on the primary (pg_create_restore_point).
    RestorePoint(cmd::backup::RestorePointArgs),
    /// Restore a backup from the archive into a new data directory, to a point in time.
    Restore(cmd::restore::Args),
    /// Make the first member of a new multi-host cluster from a backup (then start the agents).
    BootstrapFromBackup(cmd::from_backup::Args),
    /// Run the PostgreSQL protocol proxy (rw / ro / primary listeners).
    Proxy(cmd::proxy::Args),
    /// Generated credentials: `secrets init` creates the missing ones once.
    Secrets(cmd::secrets::Args),
    /// Turn on etcd authentication: root, and a user limited to the cluster's keys.
    EtcdAuth(cmd::etcd_auth::Args),
    /// TLS certificates of [tls]: `tls init` makes the missing ones once.
    Tls(cmd::tls::Args),
}

fn main() -> ExitCode {
    cmd::init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Agent(args) => cmd::agent::run(args),
        Command::Up(args) => cmd::up::run(args),
        Command::Down(args) => cmd::down::run(args),
        Command::Destroy(args) => cmd::destroy::run(args),
        Command::Status(args) => cmd::status::run(args),
        Command::Dashboard(args) => cmd::dashboard::run(args),
        Command::Logs(args) => cmd::logs::run(args),
        Command::Events(args) => cmd::events::run(args),
        Command::Switchover(args) => cmd::switchover::run(args),
        Command::Failover(args) => cmd::failover::run(args),
        Command::Pause(args) => cmd::pause::run_pause(args),
        Command::Resume(args) => cmd::pause::run_resume(args),
        Command::Restart(args) => cmd::restart::run(args),
        Command::Reinit(args) => cmd::reinit::run(args),
        Command::EditConfig(args) => cmd::edit_config::run(args),
        Command::WalPush(args) => cmd::wal::push(args),
        Command::WalFetch(args) => cmd::wal::fetch(args),
        Command::Archive(args) => cmd::wal::archive(args),
        Command::Backup(args) => cmd::backup::run(args),
        Command::RestorePoint(args) => cmd::backup::restore_point(args),
        Command::Restore(args) => cmd::restore::run(args),
        Command::BootstrapFromBackup(args) => cmd::from_backup::run(args),
        Command::Proxy(args) => cmd::proxy::run(args),
        Command::Secrets(args) => cmd::secrets::run(args),
        Command::EtcdAuth(args) => cmd::etcd_auth::run(args),
        Command::Tls(args) => cmd::tls::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pgha: error: {}", output::render_error(&e));
            ExitCode::FAILURE
        }
    }
}
