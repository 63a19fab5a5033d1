//! `pgha up`: bring up the dev cluster: a local etcd, then one agent
//! process per member (each its own process, so killing one is a node
//! crash). The agents do the rest: the first member's agent bootstraps the
//! primary, the others clone from it and stream synchronously. An existing
//! cluster starts again with its data; nothing is ever re-initialised.

use crate::dev::DevCluster;
use crate::supervise;
use anyhow::{bail, Context};
use pgha_dcs::{ClusterKeys, Dcs, EtcdDcs};
use pgha_postgres::probe;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Cluster directory: config, secrets, archive, data and logs.
    #[arg(long, default_value = "pgha-data")]
    pub dir: PathBuf,
    /// Cluster config for a new cluster (ignored when DIR already holds one).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Ports of a new dev cluster: member i gets BASE_PORT + i, its agent
    /// API BASE_PORT + 20 + i, etcd BASE_PORT + 30 and + 31.
    #[arg(long, default_value_t = 15430)]
    pub base_port: u16,
    /// Members of a new dev cluster (the first is the bootstrap primary).
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// How long to wait for a healthy cluster.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
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
    start_etcd(&cluster)?;
    let dcs = EtcdDcs::new(cluster.config.dcs.clone())?;
    let keys = ClusterKeys::new(&cluster.config.dcs.namespace, &cluster.config.name)?;
    let deadline = started + Duration::from_secs(args.timeout);
    let fresh = !cluster.instances().iter().any(|i| i.is_initialized());
    let members: Vec<String> = cluster
        .config
        .members
        .iter()
        .map(|m| m.name.clone())
        .collect();
    if fresh {
        // The first member bootstraps; the others join once it leads, so the
        // seed's primary is node1 as the config says.
        start_agent(&cluster, &bin, &members[0])?;
        wait_leader(&dcs, &keys, Some(&members[0]), deadline).await?;
        for m in &members[1..] {
            start_agent(&cluster, &bin, m)?;
        }
    } else {
        for m in &members {
            start_agent(&cluster, &bin, m)?;
        }
    }
    let leader = wait_leader(&dcs, &keys, None, deadline).await?;
    wait_streaming(&cluster, &secrets, &leader, deadline).await?;
    start_proxy(&cluster, &bin, &secrets, deadline)?;
    print_summary(&cluster, &leader, &secrets, started.elapsed());
    Ok(ExitCode::SUCCESS)
}

/// The etcd endpoint of a dev cluster: loopback host and port.
fn local_etcd(cluster: &DevCluster) -> Option<(String, u16)> {
    let url = cluster.config.dcs.endpoints.first()?;
    let rest = url.strip_prefix("http://")?;
    let (host, port) = rest.rsplit_once(':')?;
    let port: u16 = port.trim_end_matches('/').parse().ok()?;
    matches!(host, "127.0.0.1" | "localhost").then(|| (host.to_string(), port))
}

fn start_etcd(cluster: &DevCluster) -> anyhow::Result<()> {
    let Some((host, port)) = local_etcd(cluster) else {
        tracing::info!("dcs.endpoints is not a loopback address: using the etcd cluster there");
        return Ok(());
    };
    if supervise::running_pid(&cluster.dir, "etcd", "etcd").is_some() {
        return Ok(());
    }
    let peer = port.checked_add(1).context("etcd port too high")?;
    ensure_free(
        &host,
        &[port, peer],
        "the dev cluster's etcd",
        "choose other ports in [dcs]",
    )?;
    let etcd = which("etcd")
        .context("etcd not found: install it (Debian: apt-get install etcd-server)")?;
    let client = format!("http://{host}:{port}");
    let peer = format!("http://{host}:{peer}");
    let mut cmd = Command::new(etcd);
    cmd.arg("--name=pgha")
        .arg(format!("--data-dir={}", cluster.dir.join("etcd").display()))
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=pgha={peer}"))
        .arg("--log-level=warn");
    supervise::spawn(&cluster.dir, "etcd", cmd, &cluster.dir.join("etcd.log"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect((host.as_str(), port)).is_err() {
        if Instant::now() > deadline {
            bail!(
                "etcd did not start listening on {client}: see {}",
                cluster.dir.join("etcd.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Fail with a clear error when one of `ports` on `host` is taken: a
/// process that cannot bind would fail later with a less helpful message.
fn ensure_free(host: &str, ports: &[u16], who: &str, remedy: &str) -> anyhow::Result<()> {
    for &port in ports {
        if std::net::TcpListener::bind((host, port)).is_err() {
            bail!("port {port} on {host}, needed by {who}, is in use by another program: stop it, or {remedy}");
        }
    }
    Ok(())
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn agent_name(member: &str) -> String {
    format!("agent-{member}")
}

fn start_agent(cluster: &DevCluster, bin: &Path, member: &str) -> anyhow::Result<()> {
    if supervise::running_pid(&cluster.dir, &agent_name(member), "agent").is_some() {
        return Ok(());
    }
    let m = cluster.config.member(member).context("member in config")?;
    let inst = cluster
        .instances()
        .into_iter()
        .find(|i| i.name == member)
        .context("instance")?;
    if !inst.is_running() {
        ensure_free(
            &m.host,
            &[m.port, m.api_port],
            &format!("member {member}"),
            "use another --base-port for a new cluster (edit cluster.toml for an existing one)",
        )?;
    }
    std::fs::create_dir_all(inst.node_dir()).context("create node directory")?;
    cluster.user.give(&inst.node_dir())?;
    let mut cmd = Command::new(bin);
    cmd.arg("agent")
        .arg("--config")
        .arg(cluster.dir.join(crate::dev::CONFIG_FILE))
        .arg("--member")
        .arg(member);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    supervise::spawn(
        &cluster.dir,
        &agent_name(member),
        cmd,
        &inst.node_dir().join("agent.log"),
    )?;
    Ok(())
}

/// Start the dev cluster's proxy (when the config has a `[proxy]` table)
/// with a generated proxy.toml that follows the cluster in etcd.
fn start_proxy(
    cluster: &DevCluster,
    bin: &Path,
    secrets: &pgha_postgres::Secrets,
    deadline: Instant,
) -> anyhow::Result<()> {
    let Some(p) = &cluster.config.proxy else {
        return Ok(());
    };
    if supervise::running_pid(&cluster.dir, "proxy", "proxy").is_some() {
        return Ok(());
    }
    ensure_free(
        &p.host,
        &[p.rw_port, p.ro_port, p.primary_port],
        "the proxy",
        "change [proxy] in cluster.toml",
    )?;
    let dcs = &cluster.config.dcs;
    let endpoints: Vec<String> = dcs.endpoints.iter().map(|e| format!("{e:?}")).collect();
    let text = format!(
        "# Written by `pgha up` from cluster.toml; changes here are overwritten.\n\
         listen_rw = \"{h}:{rw}\"\nlisten_ro = \"{h}:{ro}\"\nlisten_primary = \"{h}:{pr}\"\n\
         monitor_password_file = {mon:?}\n\n[topology]\nkind = \"etcd\"\ncluster = {name:?}\n\n\
         [topology.dcs]\nendpoints = [{eps}]\nnamespace = {ns:?}\n",
        h = p.host,
        rw = p.rw_port,
        ro = p.ro_port,
        pr = p.primary_port,
        mon = secrets
            .dir
            .join(pgha_postgres::secrets::MONITOR_FILE)
            .display()
            .to_string(),
        name = cluster.config.name,
        eps = endpoints.join(", "),
        ns = dcs.namespace,
    );
    let path = cluster.dir.join("proxy.toml");
    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    let mut cmd = Command::new(bin);
    cmd.arg("proxy").arg("--config").arg(&path);
    cmd.env(
        "RUST_LOG",
        std::env::var("PGHA_PROXY_LOG").unwrap_or_else(|_| "info".into()),
    );
    supervise::spawn(&cluster.dir, "proxy", cmd, &cluster.dir.join("proxy.log"))?;
    while std::net::TcpStream::connect((p.host.as_str(), p.rw_port)).is_err() {
        if Instant::now() > deadline {
            bail!(
                "the proxy did not start listening: see {}",
                cluster.dir.join("proxy.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Wait until the leader key names `want` (or anyone) and return the holder.
async fn wait_leader(
    dcs: &EtcdDcs,
    keys: &ClusterKeys,
    want: Option<&str>,
    deadline: Instant,
) -> anyhow::Result<String> {
    loop {
        if let Ok(r) = dcs.get(&keys.leader()).await {
            if let Some(kv) = r.kv {
                let holder = kv.value_str().into_owned();
                if want.is_none_or(|w| w == holder) {
                    return Ok(holder);
                }
            }
        }
        if Instant::now() > deadline {
            bail!(
                "no leader elected in time{}: see the agents' logs (<dir>/<member>/agent.log)",
                want.map(|w| format!(" (waiting for {w})"))
                    .unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until every other member streams from the leader.
async fn wait_streaming(
    cluster: &DevCluster,
    secrets: &pgha_postgres::Secrets,
    leader: &str,
    deadline: Instant,
) -> anyhow::Result<()> {
    let m = cluster
        .config
        .member(leader)
        .context("leader is a member")?;
    let want: Vec<&str> = cluster
        .config
        .members
        .iter()
        .filter(|x| x.name != leader)
        .map(|x| x.name.as_str())
        .collect();
    loop {
        let missing: Vec<&str> = match probe::connect(
            &m.host,
            m.port,
            &cluster.config.superuser,
            &secrets.admin_password,
            Duration::from_secs(2),
        )
        .await
        {
            Ok(c) => {
                let rows = probe::replication(&c).await.unwrap_or_default();
                want.iter()
                    .copied()
                    .filter(|n| {
                        !rows
                            .iter()
                            .any(|r| r.application_name == *n && r.state == "streaming")
                    })
                    .collect()
            }
            Err(_) => want.clone(),
        };
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "standbys not streaming from {leader} in time: {} (see <dir>/<member>/agent.log and postgresql.log)",
                missing.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_summary(
    cluster: &DevCluster,
    leader: &str,
    secrets: &pgha_postgres::Secrets,
    took: Duration,
) {
    let c = &cluster.config;
    let dir = cluster.dir.display();
    println!(
        "pgha: cluster {:?} is up in {dir} ({:.1}s)",
        c.name,
        took.as_secs_f64()
    );
    for m in &c.members {
        let role = if m.name == leader {
            "primary"
        } else {
            "standby"
        };
        println!(
            "  {:<8} {:<8} postgresql://{}@{}:{}/postgres   agent {}",
            m.name,
            role,
            c.superuser,
            m.host,
            m.port,
            m.api_url()
        );
    }
    println!("  etcd     {}", c.dcs.endpoints.join(","));
    if let Some(p) = &c.proxy {
        println!(
            "  proxy    rw postgresql://{su}@{h}:{rw}/postgres   ro :{ro}   primary :{pr}",
            su = c.superuser,
            h = p.host,
            rw = p.rw_port,
            ro = p.ro_port,
            pr = p.primary_port
        );
    }
    println!(
        "  password of {:?}: {}",
        c.superuser,
        secrets.admin_file().display()
    );
    println!();
    println!("Try:");
    let p = c
        .proxy
        .as_ref()
        .map(|p| p.rw_port)
        .or_else(|| c.member(leader).map(|m| m.port))
        .unwrap_or(0);
    println!(
        "  PGPASSWORD=$(cat {}) psql -h 127.0.0.1 -p {p} -U {}",
        secrets.admin_file().display(),
        c.superuser
    );
    println!("  pgha status --dir {dir}");
    println!("  kill -9 $(cat {dir}/run/agent-{leader}.pid) $(head -1 {dir}/{leader}/data/postmaster.pid)   # crash the primary, watch `pgha status`");
    println!("  pgha down --dir {dir}        (stop; `pgha up --dir {dir}` starts it again with its data)");
    println!("  pgha destroy --dir {dir} --yes");
}
