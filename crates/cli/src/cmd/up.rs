//! `pgha up`: create the dev cluster the first time (node1 primary, the other
//! members synchronous hot standbys cloned from it), or start the existing
//! one with its data. Never re-initialises a cluster that exists.

use crate::dev::DevCluster;
use anyhow::{bail, Context};
use pgha_core::SyncStandbyNames;
use pgha_postgres::conf::all_standbys;
use pgha_postgres::{probe, Instance};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Cluster directory: config, secrets, archive, data and logs.
    #[arg(long, default_value = "pgha-data")]
    pub dir: PathBuf,
    /// Cluster config for a new cluster (ignored when DIR already holds one).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Ports of a new dev cluster: member i gets BASE_PORT + i.
    #[arg(long, default_value_t = 15430)]
    pub base_port: u16,
    /// Members of a new dev cluster (the first is the primary).
    #[arg(long, default_value_t = 3)]
    pub members: usize,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(up(args))
}

async fn up(args: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let cluster = DevCluster::create_or_open(
        &args.dir,
        args.config.as_deref(),
        args.base_port,
        args.members,
    )?;
    let secrets = cluster.secrets()?;
    cluster.user.make_dir(&cluster.config.archive_dir, 0o700)?;
    let bin = cluster.pgha_bin().await?;
    let seed = cluster.seed(&secrets, &bin);
    let instances = cluster.instances();
    check_ports(&instances)?;
    let p = choose_primary(&instances).await?;
    let primary = &instances[p];
    let sync = all_standbys(&cluster.config, &primary.name);
    if primary.is_initialized() {
        seed.start_member(primary, None, &sync).await?;
    } else {
        seed.bootstrap_primary(primary).await?;
    }
    for (i, inst) in instances.iter().enumerate() {
        if i == p {
            continue;
        }
        if inst.is_initialized() {
            seed.start_member(inst, Some(primary), &SyncStandbyNames::Async)
                .await?;
        } else {
            seed.clone_standby(inst, primary).await?;
        }
    }
    // Synchronous only once the standbys exist, so the seed's own writes
    // (roles, slots) never wait for a standby that is not there yet.
    seed.configure(primary, None, &sync)?;
    primary.reload().await?;
    wait_streaming(&seed, primary, &instances, Duration::from_secs(60)).await?;
    print_summary(&cluster, primary, &sync, &secrets, started.elapsed());
    Ok(ExitCode::SUCCESS)
}

/// A member whose port is taken by something else would fail to start with
/// a confusing log line; say it up front.
fn check_ports(instances: &[Instance]) -> anyhow::Result<()> {
    for inst in instances.iter().filter(|i| !i.is_running()) {
        if std::net::TcpListener::bind((inst.host.as_str(), inst.port)).is_err() {
            bail!(
                "port {} on {} (member {}) is in use by another program: stop it, or use another --base-port for a new cluster (edit cluster.toml for an existing one)",
                inst.port,
                inst.host,
                inst.name
            );
        }
    }
    Ok(())
}

/// The member to run as primary: the one whose data directory last ran as a
/// primary; the first member for a new cluster.
async fn choose_primary(instances: &[Instance]) -> anyhow::Result<usize> {
    let mut primaries = Vec::new();
    let mut any_initialized = false;
    for (i, inst) in instances.iter().enumerate() {
        if !inst.is_initialized() {
            continue;
        }
        any_initialized = true;
        let cd = inst.controldata().await?;
        if !cd.state.was_standby() {
            primaries.push(i);
        }
    }
    match primaries.as_slice() {
        [] if !any_initialized => Ok(0),
        [one] => Ok(*one),
        [] => bail!("no member's data directory was last a primary; start the agents (`pgha agent`) to elect one"),
        _ => {
            let names: Vec<&str> = primaries.iter().map(|&i| instances[i].name.as_str()).collect();
            bail!(
                "several members were last primaries ({}); refusing to pick one by guesswork",
                names.join(", ")
            )
        }
    }
}

async fn wait_streaming(
    seed: &pgha_postgres::seed::SeedContext<'_>,
    primary: &Instance,
    instances: &[Instance],
    timeout: Duration,
) -> anyhow::Result<()> {
    let want: Vec<&str> = instances
        .iter()
        .filter(|i| i.name != primary.name)
        .map(|i| i.name.as_str())
        .collect();
    let deadline = Instant::now() + timeout;
    let client = seed.admin(primary).await?;
    loop {
        let rows = probe::replication(&client).await?;
        let missing: Vec<&str> = want
            .iter()
            .copied()
            .filter(|n| {
                !rows
                    .iter()
                    .any(|r| r.application_name == *n && r.state == "streaming")
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "standbys not streaming after {timeout:?}: {} (see their postgresql.log)",
                missing.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_summary(
    cluster: &DevCluster,
    primary: &Instance,
    sync: &SyncStandbyNames,
    secrets: &pgha_postgres::Secrets,
    took: Duration,
) {
    let c = &cluster.config;
    let dir = cluster.dir.display();
    println!(
        "pgha: cluster {:?} is up in {dir} ({:.1}s); synchronous_standby_names = '{}'",
        c.name,
        took.as_secs_f64(),
        sync.to_postgres()
    );
    for m in &c.members {
        let role = if m.name == primary.name {
            "primary"
        } else {
            "standby"
        };
        println!(
            "  {:<8} {:<8} postgresql://{}@{}:{}/postgres",
            m.name, role, c.superuser, m.host, m.port
        );
    }
    println!(
        "  password of {:?}: {}",
        c.superuser,
        secrets.admin_file().display()
    );
    println!();
    println!("Try:");
    println!(
        "  PGPASSWORD=$(cat {}) psql -h {} -p {} -U {}",
        secrets.admin_file().display(),
        primary.host,
        primary.port,
        c.superuser
    );
    println!("  pgha status --dir {dir}");
    println!("  pgha down --dir {dir}        (stop; `pgha up --dir {dir}` starts it again with its data)");
    println!("  pgha destroy --dir {dir} --yes");
}
