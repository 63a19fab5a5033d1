//! `pgha up`: bring up the dev cluster: a local etcd, one agent process per
//! member (each its own process, so killing one is a node crash) and the
//! proxy. The agents do the rest: the first member's agent bootstraps the
//! primary, the others clone from it and stream synchronously. An existing
//! cluster starts again with its data; nothing is ever re-initialised.
//!
//! Nothing here sleeps for a fixed time: `up` starts every process as soon
//! as it may (for a new cluster the other agents and the proxy once the
//! first agent holds the leader key) and then polls conditions until the
//! cluster is healthy (`Health::check`) or `--timeout` passes.

use crate::cmd::from_backup;
use crate::cmd::restore::PointArgs;
use crate::dev::{DevCluster, DirLock};
use crate::supervise;
use anyhow::{bail, Context};
use pgha_core::SyncRecord;
use pgha_dcs::{ClusterKeys, Dcs, EtcdDcs};
use pgha_postgres::seed::PgClient;
use pgha_postgres::{probe, Secrets};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("target_point").multiple(false)
    .args(["latest", "time", "lsn", "name", "xid"])))]
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
    /// Also start a Prometheus scraping the agents and the proxy
    /// (docs/observability.md); `pgha down` stops it.
    #[arg(long)]
    pub prometheus: bool,
    /// Its port on 127.0.0.1 (default: the proxy's http_port + 1, else 9090).
    #[arg(long, requires = "prometheus")]
    pub prometheus_port: Option<u16>,
    /// Make a new cluster from a backup of another one: SOURCE is that
    /// cluster's directory or config file, or its archive (a directory or
    /// an s3:// URL). The first member is restored to the point the options
    /// below name (default: the latest WAL), the others clone from it
    /// (docs/backup.md).
    #[arg(long, value_name = "SOURCE")]
    pub from_backup: Option<PathBuf>,
    #[command(flatten)]
    pub point: PointArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(up(args))
}

async fn up(args: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let source = match &args.from_backup {
        Some(path) => {
            if args.dir.join(crate::dev::CONFIG_FILE).exists() {
                bail!(
                    "{} already holds a cluster: --from-backup makes a new one; choose a new --dir",
                    args.dir.display()
                );
            }
            Some(from_backup::SourceArg::parse(path)?)
        }
        None => {
            let p = &args.point;
            if p.any_target() || p.backup.is_some() || p.timeline != "latest" {
                bail!("--latest, --time, --lsn, --name, --xid, --backup and --timeline choose what --from-backup restores: give --from-backup SOURCE too");
            }
            None
        }
    };
    let lock = DirLock::take(&args.dir)?;
    let cluster = match DevCluster::create_or_open(
        &args.dir,
        args.config.as_deref(),
        args.base_port,
        args.members,
    ) {
        Ok(c) => c,
        Err(e) => {
            lock.discard_if_unused();
            return Err(e);
        }
    };
    let source = match source.map(|s| s.into_target(&cluster.config)).transpose() {
        Ok(s) => s,
        Err(e) => {
            lock.discard_if_created();
            return Err(e);
        }
    };
    if let Some(source) = &source {
        if let Err(e) = from_backup::check_separate(&cluster.config, source) {
            lock.discard_if_created();
            return Err(e);
        }
    }
    let result = bring_up(&cluster, &args, source.as_ref(), started).await;
    drop(lock);
    result.map_err(|e| with_leftovers(&cluster, e))
}

/// A failed `up` says what it left running and how to stop it.
fn with_leftovers(cluster: &DevCluster, e: anyhow::Error) -> anyhow::Error {
    let mut running: Vec<String> = Vec::new();
    let mut names = vec![("etcd".to_string(), "etcd")];
    names.extend(
        cluster
            .config
            .members
            .iter()
            .map(|m| (agent_name(&m.name), "agent")),
    );
    names.push(("proxy".to_string(), "proxy"));
    names.push(("prometheus".to_string(), "prometheus"));
    for (name, expect) in &names {
        if let Some(pid) = supervise::running_pid(&cluster.dir, name, expect) {
            running.push(format!("{name} (pid {pid})"));
        }
    }
    if running.is_empty() {
        return e;
    }
    anyhow::anyhow!(
        "{}\nleft running: {} (and the PostgreSQL servers of those agents); stop them with `pgha down --dir {}`",
        crate::output::render_error(&e),
        running.join(", "),
        cluster.dir.display()
    )
}

/// Everything of `up` after the directory is open: start the processes and
/// wait until the cluster is healthy.
async fn bring_up(
    cluster: &DevCluster,
    args: &Args,
    source: Option<&crate::target::Target>,
    started: Instant,
) -> anyhow::Result<ExitCode> {
    let secrets = cluster.secrets()?;
    pgha_postgres::tls_files::ensure(&cluster.config, &cluster.user)
        .context("make the cluster's TLS certificates ([tls])")?;
    cluster.user.make_dir(&cluster.config.archive_dir, 0o700)?;
    check_archive_owner(cluster).await?;
    let bin = cluster.pgha_bin().await?;
    if let Some(source) = source {
        let first = from_backup::NewMember::first_of(cluster)?;
        from_backup::restore_member(&first, &secrets, &bin, source, &args.point).await?;
    }
    let mut progress = crate::progress::Progress::new();
    progress.phase("pgha up: starting etcd");
    start_etcd(cluster)?;
    let ours = local_etcd(cluster).is_some();
    let auth_deadline = started + Duration::from_secs(args.timeout);
    super::etcd_auth::for_dev_etcd(&cluster.config, &cluster.user, ours, auth_deadline).await?;
    let dcs = EtcdDcs::new(cluster.config.dcs.clone())?;
    let keys = ClusterKeys::new(&cluster.config.dcs.namespace, &cluster.config.name)?;
    let deadline = started + Duration::from_secs(args.timeout);
    let initialized: Vec<String> = cluster
        .instances()
        .into_iter()
        .filter(|i| i.is_initialized())
        .map(|i| i.name)
        .collect();
    let fresh = initialized.is_empty();
    let members = cluster.member_names();
    if let [only] = initialized.as_slice() {
        // A restored first member (`--from-backup`), or a cluster whose
        // etcd lost its keys: the one member with data initialised the
        // cluster. Without the key the others, finding no data, would race
        // to initdb a cluster of their own.
        from_backup::claim_initialize(&dcs, &keys, only, source.is_some()).await?;
    }
    if fresh {
        // The first member alone until it has bootstrapped and taken the
        // leader key, so the seed's primary is node1 as the config says.
        // The others start while it starts PostgreSQL and are ready to
        // clone the moment it is established (an idle agent still costs
        // CPU that initdb would rather have: it re-publishes its record on
        // every other agent's publish).
        progress.phase(&format!(
            "pgha up: {}: bootstrapping the cluster (initdb, first start)",
            members[0]
        ));
        start_agent(cluster, &bin, &members[0])?;
        let logs = log_files(cluster, &members[..1], false);
        wait_leader_key(&dcs, &keys, deadline, &logs).await?;
    }
    progress.phase(&format!(
        "pgha up: starting the agents of {} and the proxy",
        members.join(", ")
    ));
    for m in &members {
        start_agent(cluster, &bin, m)?;
    }
    // The proxy follows the cluster in etcd: started now, it serves as
    // soon as there is a primary.
    start_proxy(cluster, &bin, &secrets)?;
    let leader = wait_healthy(cluster, &dcs, &keys, &secrets, deadline, &mut progress).await?;
    progress.clear_line();
    let prometheus = match args.prometheus {
        true => {
            let port = args
                .prometheus_port
                .unwrap_or_else(|| super::prometheus::default_port(cluster));
            Some(super::prometheus::start(cluster, port)?)
        }
        false => None,
    };
    print_summary(cluster, &leader, &secrets, started.elapsed());
    if source.is_some() {
        crate::outln!(
            "Restored from a backup: the new archive holds no backup yet; take one with `pgha backup --dir {}`",
            cluster.dir.display()
        );
    }
    if let Some(url) = prometheus {
        crate::outln!("  prometheus {url}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuse an archive that holds another cluster's history: a new cluster
/// with WAL already in its archive, or an existing one whose system
/// identifier differs from that of any archived segment. Either would end
/// in pushes refused as conflicts (`pg_wal` growing) or, worse, in a
/// standby restoring WAL of the wrong cluster.
async fn check_archive_owner(cluster: &DevCluster) -> anyhow::Result<()> {
    let dir = &cluster.config.archive_dir;
    let archive = pgha_archive::Archive::open(dir)?;
    let Some(owner) = archive
        .owner()
        .with_context(|| format!("read the newest segment of the archive {}", dir.display()))?
    else {
        return Ok(());
    };
    let config = cluster.dir.join(crate::dev::CONFIG_FILE);
    let remedy = format!(
        "To proceed, give this cluster an archive of its own: move that archive away if its \
         history is not needed (`mv {d} {d}.other`), or set [archive] dir in {c} to an empty \
         directory",
        d = dir.display(),
        c = config.display()
    );
    let ours = cluster.instances().into_iter().find(|i| i.is_initialized());
    let Some(inst) = ours else {
        bail!(
            "the archive {} already holds WAL (newest segment {}, system identifier {}) but this \
             cluster is new: it belongs to another cluster. {remedy}",
            dir.display(),
            owner.segment,
            owner.system_identifier
        );
    };
    let cd = inst
        .controldata()
        .await
        .with_context(|| format!("read the control file of {}", inst.name))?;
    let foreign = archive
        .foreign_segment(cd.system_identifier)
        .with_context(|| format!("read the segments of the archive {}", dir.display()))?;
    if let Some(f) = foreign {
        bail!(
            "the archive {} holds another cluster's history: segment {} has system identifier \
             {}, this cluster's is {} ({}). {remedy}",
            dir.display(),
            f.segment,
            f.system_identifier,
            cd.system_identifier,
            inst.name
        );
    }
    Ok(())
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
        // A single member elects itself after one election timeout (a
        // random 1-2 s by default, minus the initial tick advance), and
        // answers nothing before: the agents' first requests waited up to
        // a second. With no peers there is no heartbeat to miss, so short
        // timings cost nothing; fsync stays on.
        .arg("--heartbeat-interval=10")
        .arg("--election-timeout=100")
        // Every login is a bcrypt check; at etcd's default cost (10) one
        // took 200-300 ms here, at 4 under 10 ms (bench/etcd-auth). The
        // passwords are 32 random characters: the cost guards nothing.
        .arg("--bcrypt-cost=4")
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
/// Whether PostgreSQL, etcd or the proxy could bind these ports: a bind with
/// SO_REUSEADDR, as they do (std's `TcpListener::bind` sets it on Unix), so
/// a port that only has TIME-WAIT sockets left from earlier connections
/// counts as free.
pub(crate) fn ensure_free(
    host: &str,
    ports: &[u16],
    who: &str,
    remedy: &str,
) -> anyhow::Result<()> {
    for &port in ports {
        if std::net::TcpListener::bind((host, port)).is_err() {
            bail!("port {port} on {host}, needed by {who}, is in use by another program: stop it, or {remedy}");
        }
    }
    Ok(())
}

pub(crate) fn which(program: &str) -> Option<PathBuf> {
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
/// with a generated proxy.toml that follows the cluster in etcd. Whether it
/// serves is part of [`wait_healthy`].
fn start_proxy(cluster: &DevCluster, bin: &Path, secrets: &Secrets) -> anyhow::Result<()> {
    let Some(p) = &cluster.config.proxy else {
        return Ok(());
    };
    if supervise::running_pid(&cluster.dir, "proxy", "proxy").is_some() {
        return Ok(());
    }
    ensure_free(
        &p.host,
        &[p.rw_port, p.ro_port, p.primary_port]
            .into_iter()
            .chain(p.http_port)
            .collect::<Vec<_>>(),
        "the proxy",
        "change [proxy] in cluster.toml",
    )?;
    let path = cluster.dir.join("proxy.toml");
    let tls = proxy_tls_keys(&cluster.config, &path);
    let http = p
        .http_port
        .map(|port| format!("http_listen = \"{}:{port}\"\n", p.host))
        .unwrap_or_default();
    let text = format!(
        "# Written by `pgha up` from cluster.toml; changes here are overwritten,\n\
         # except the TLS keys ({kept}), which are kept when set.\n{tls}{http}\
         listen_rw = \"{h}:{rw}\"\nlisten_ro = \"{h}:{ro}\"\nlisten_primary = \"{h}:{pr}\"\n\
         monitor_password_file = {mon:?}\nadmin_users = [\"postgres\"]\n\n[topology]\nkind = \"etcd\"\ncluster = {name:?}\n\n\
         [topology.dcs]\n{dcs}",
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
        dcs = super::etcd_auth::proxy_dcs_table(&cluster.config)?,
        kept = PROXY_TLS_KEYS.join(", "),
    );
    // It names the secret files: owner and group only.
    cluster
        .user
        .write_file(&path, text.as_bytes(), crate::access::CONFIG_MODE)?;
    let mut cmd = Command::new(bin);
    cmd.arg("proxy").arg("--config").arg(&path);
    cmd.env(
        "RUST_LOG",
        std::env::var("PGHA_PROXY_LOG").unwrap_or_else(|_| "info".into()),
    );
    supervise::spawn(&cluster.dir, "proxy", cmd, &cluster.dir.join("proxy.log"))?;
    Ok(())
}

/// The proxy.toml keys of TLS, which `up` keeps from an existing file.
const PROXY_TLS_KEYS: [&str; 5] = [
    "tls",
    "tls_cert_file",
    "tls_key_file",
    "backend_tls",
    "backend_ca_file",
];

/// The TLS lines of the dev proxy.toml: an operator's value of a TLS key in
/// the existing file wins; otherwise, with `[tls]`, the proxy offers TLS
/// with the generated certificate and verifies backends against the CA.
fn proxy_tls_keys(config: &pgha_config::ClusterConfig, path: &Path) -> String {
    let existing: toml::Table = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_default();
    let mut ours: Vec<(&str, toml::Value)> = Vec::new();
    if let Some(tls) = &config.tls {
        let file = |p: &Path| toml::Value::String(p.display().to_string());
        let text = |t: &str| toml::Value::String(t.into());
        ours.push(("tls", text("allow")));
        ours.push(("tls_cert_file", file(&tls.proxy.cert_file)));
        ours.push(("tls_key_file", file(&tls.proxy.key_file)));
        ours.push(("backend_tls", text("verify-full")));
        ours.push(("backend_ca_file", file(&tls.ca_file)));
    }
    let mut out = String::new();
    for key in PROXY_TLS_KEYS {
        let value = existing
            .get(key)
            .cloned()
            .or_else(|| ours.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()));
        if let Some(v) = value {
            out.push_str(&format!("{key} = {v}\n"));
        }
    }
    out
}

/// The log files to read when `members` (and the proxy, `with_proxy`) do
/// not come up:
/// real paths, not a pattern.
fn log_files(cluster: &DevCluster, members: &[String], with_proxy: bool) -> String {
    let mut files: Vec<PathBuf> = cluster
        .instances()
        .iter()
        .filter(|i| members.contains(&i.name))
        .flat_map(|i| [i.node_dir().join("agent.log"), i.log_file()])
        .collect();
    if with_proxy && cluster.config.proxy.is_some() {
        files.push(cluster.dir.join("proxy.log"));
    }
    files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// How often `pgha up` looks at the cluster while it waits.
const POLL: Duration = Duration::from_millis(50);

/// Wait until a member holds the leader key: for a new cluster, the first
/// member once its initdb is done.
/// `logs`: where to look when it does not.
async fn wait_leader_key(
    dcs: &EtcdDcs,
    keys: &ClusterKeys,
    deadline: Instant,
    logs: &str,
) -> anyhow::Result<()> {
    loop {
        if let Ok(r) = dcs.get(&keys.leader()).await {
            if r.kv.is_some() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the first member did not bootstrap in time: see {logs}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Wait until the cluster is healthy (see [`Health::check`]); return the leader.
async fn wait_healthy(
    cluster: &DevCluster,
    dcs: &EtcdDcs,
    keys: &ClusterKeys,
    secrets: &Secrets,
    deadline: Instant,
    progress: &mut crate::progress::Progress,
) -> anyhow::Result<String> {
    let mut last_missing = String::new();
    let mut health = Health {
        cluster,
        dcs,
        keys,
        secrets,
        leader_conn: None,
        proxy_conn: None,
        proxy_tls: proxy_offers_tls(&cluster.dir.join("proxy.toml")),
    };
    loop {
        let missing = match health.check().await {
            Ok(leader) => return Ok(leader),
            Err(missing) => missing,
        };
        if missing != last_missing {
            progress.phase(&format!("pgha up: waiting: {missing}"));
            last_missing = missing.clone();
        }
        if let Some((_, c)) = &health.leader_conn {
            let backups = crate::progress::base_backups(c).await;
            progress.base_backups(Instant::now(), &backups);
        }
        if Instant::now() > deadline {
            let members = cluster.member_names();
            bail!(
                "the cluster is not healthy in time: {missing} (see {})",
                log_files(cluster, &members, true)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The probes of [`wait_healthy`], with the connections they keep between
/// polls (a new connection each poll would cost a backend and a SCRAM
/// exchange every 50 ms).
struct Health<'a> {
    cluster: &'a DevCluster,
    dcs: &'a EtcdDcs,
    keys: &'a ClusterKeys,
    secrets: &'a Secrets,
    /// Superuser connection to the leader's PostgreSQL, and the leader's name.
    leader_conn: Option<(String, PgClient)>,
    /// Superuser connection through the proxy's rw port.
    proxy_conn: Option<PgClient>,
    /// The proxy offers TLS: connect to it over TLS, verified against the
    /// cluster's CA (an operator's certificate for the dev proxy must be
    /// signed by it).
    proxy_tls: bool,
}

/// Whether the proxy.toml at `path` turns client TLS on: a certificate, and
/// `tls` not `disable`.
fn proxy_offers_tls(path: &Path) -> bool {
    let table: toml::Table = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_default();
    table.contains_key("tls_cert_file")
        && table.get("tls").and_then(|v| v.as_str()) != Some("disable")
}

impl Health<'_> {
    /// Healthy means, checked in this order (the first condition not met is
    /// returned as the error):
    /// 1. a member holds the leader key;
    /// 2. its PostgreSQL is a primary and every other member streams from
    ///    it as a synchronous standby (`sync` or `quorum` in
    ///    pg_stat_replication: counted for commit acknowledgement);
    /// 3. the leader has recorded every other member in `/sync`, so a
    ///    failover can promote one of them without losing a commit;
    /// 4. through the proxy's rw port a transaction that takes a transaction
    ///    id commits: the synchronous quorum acknowledged it.
    async fn check(&mut self) -> Result<String, String> {
        let leader = self.leader().await?;
        let others: Vec<String> = self
            .cluster
            .config
            .members
            .iter()
            .filter(|m| m.name != leader)
            .map(|m| m.name.clone())
            .collect();
        self.replication(&leader, &others).await?;
        self.sync_record(&leader, &others).await?;
        self.proxy_serves(!others.is_empty()).await?;
        Ok(leader)
    }

    async fn leader(&self) -> Result<String, String> {
        let r = self
            .dcs
            .get(&self.keys.leader())
            .await
            .map_err(|e| format!("etcd: {e:#}"))?;
        r.kv.map(|kv| kv.value_str().into_owned())
            .ok_or_else(|| "no leader elected yet".to_string())
    }

    async fn replication(&mut self, leader: &str, others: &[String]) -> Result<(), String> {
        let client = self.leader_client(leader).await?;
        let in_recovery: bool = match client.query_one("SELECT pg_is_in_recovery()", &[]).await {
            Ok(row) => row.get(0),
            Err(e) => {
                self.leader_conn = None;
                return Err(format!("query the leader {leader}: {e}"));
            }
        };
        if in_recovery {
            return Err(format!("the leader {leader} is not a primary yet"));
        }
        let rows = probe::replication(client)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let not_sync: Vec<&str> = others
            .iter()
            .filter(|n| {
                !rows.iter().any(|r| {
                    r.application_name == **n
                        && r.state == "streaming"
                        && matches!(r.sync_state.as_str(), "sync" | "quorum")
                })
            })
            .map(String::as_str)
            .collect();
        if not_sync.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "not streaming from {leader} as synchronous standbys yet: {}",
                not_sync.join(", ")
            ))
        }
    }

    /// A connection as the superuser with the admin password; errors name
    /// `what`. Over TLS verified against `ca` when given.
    async fn admin_connect(
        &self,
        host: &str,
        port: u16,
        what: &str,
        ca: Option<&Path>,
    ) -> Result<PgClient, String> {
        probe::connect_tls(
            host,
            port,
            &self.cluster.config.superuser,
            &self.secrets.admin_password,
            Duration::from_secs(2),
            ca,
        )
        .await
        .map_err(|e| format!("connect to {what}: {e:#}"))
    }

    /// The cached connection to `leader`, opened when there is none.
    async fn leader_client(&mut self, leader: &str) -> Result<&PgClient, String> {
        let usable = self
            .leader_conn
            .as_ref()
            .is_some_and(|(name, c)| name == leader && !c.is_closed());
        if !usable {
            let m = self
                .cluster
                .config
                .member(leader)
                .ok_or_else(|| format!("the leader {leader} is not in cluster.toml"))?;
            let c = self
                .admin_connect(
                    &m.host,
                    m.port,
                    &format!("the leader {leader}"),
                    self.cluster.config.tls_ca(),
                )
                .await?;
            self.leader_conn = Some((leader.to_string(), c));
        }
        self.leader_conn
            .as_ref()
            .map(|(_, c)| c)
            .ok_or_else(|| "no connection".to_string())
    }

    async fn sync_record(&self, leader: &str, others: &[String]) -> Result<(), String> {
        let r = self
            .dcs
            .get(&self.keys.sync())
            .await
            .map_err(|e| format!("etcd: {e:#}"))?;
        let record: Option<SyncRecord> = r.kv.and_then(|kv| serde_json::from_slice(&kv.value).ok());
        let missing: Vec<&str> = match &record {
            Some(rec) if rec.leader == leader => others
                .iter()
                .filter(|n| !rec.set.members.contains(*n))
                .map(String::as_str)
                .collect(),
            _ => return Err(format!("{leader} has not claimed its term in /sync yet")),
        };
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{leader} has not recorded {} in /sync yet (no failover could promote them)",
                missing.join(", ")
            ))
        }
    }

    /// A statement through the proxy's rw port (skipped without a proxy):
    /// a commit when `commit` (there are standbys to acknowledge it; alone,
    /// a primary's commits wait for a standby unless `allow_async_fallback`).
    async fn proxy_serves(&mut self, commit: bool) -> Result<(), String> {
        let Some(p) = &self.cluster.config.proxy else {
            return Ok(());
        };
        if self.proxy_conn.as_ref().is_none_or(|c| c.is_closed()) {
            let c = self
                .admin_connect(
                    &p.host,
                    p.rw_port,
                    "the proxy's rw port",
                    self.cluster.config.tls_ca().filter(|_| self.proxy_tls),
                )
                .await?;
            self.proxy_conn = Some(c);
        }
        let Some(c) = &self.proxy_conn else {
            return Err("no connection through the proxy".into());
        };
        // pg_current_xact_id() takes a transaction id, so the statement's
        // commit is a real one: it waits for the synchronous quorum.
        let sql = if commit {
            "SELECT pg_current_xact_id()"
        } else {
            "SELECT 1"
        };
        match tokio::time::timeout(Duration::from_secs(5), c.batch_execute(sql)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.proxy_conn = None;
                Err(format!("{sql} through the proxy: {e}"))
            }
            Err(_) => {
                self.proxy_conn = None;
                Err(format!("{sql} through the proxy: no answer within 5 s"))
            }
        }
    }
}

fn print_summary(cluster: &DevCluster, leader: &str, secrets: &Secrets, took: Duration) {
    let c = &cluster.config;
    let dir = cluster.dir.display();
    crate::outln!(
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
        crate::outln!(
            "  {:<8} {:<8} postgresql://{}@{}:{}/postgres   agent {}",
            m.name,
            role,
            c.superuser,
            m.host,
            m.port,
            m.api_url()
        );
    }
    crate::outln!("  etcd     {}", c.dcs.endpoints.join(","));
    if let Some(line) = super::etcd_auth::summary(cluster) {
        crate::outln!("           {line}");
    }
    if let Some(p) = &c.proxy {
        crate::outln!(
            "  proxy    rw postgresql://{su}@{h}:{rw}/postgres   ro :{ro}   primary :{pr}",
            su = c.superuser,
            h = p.host,
            rw = p.rw_port,
            ro = p.ro_port,
            pr = p.primary_port
        );
        if let Some(port) = p.http_port {
            crate::outln!("           metrics http://{}:{port}/metrics", p.host);
        }
    }
    crate::outln!(
        "  password of {:?}: {}",
        c.superuser,
        secrets.admin_file().display()
    );
    if let Some(ca) = c.tls_ca() {
        crate::outln!(
            "  TLS      on: add sslmode=verify-full sslrootcert={} to verify the servers",
            ca.display()
        );
    }
    crate::outln!();
    crate::outln!("Try:");
    let p = c
        .proxy
        .as_ref()
        .map(|p| p.rw_port)
        .or_else(|| c.member(leader).map(|m| m.port))
        .unwrap_or(0);
    crate::outln!(
        "  PGPASSWORD=$(cat {}) psql -h 127.0.0.1 -p {p} -U {}",
        secrets.admin_file().display(),
        c.superuser
    );
    crate::outln!("  pgha status --dir {dir}");
    crate::outln!("  pgha dashboard --dir {dir}   # live status page; `pgha events --dir {dir}`: what happened");
    crate::outln!("  kill -9 $(cat {dir}/run/agent-{leader}.pid) $(head -1 {dir}/{leader}/data/postmaster.pid)   # crash the primary, watch `pgha status`");
    crate::outln!("  pgha down --dir {dir}        (stop; `pgha up --dir {dir}` starts it again with its data)");
    crate::outln!("  pgha destroy --dir {dir} --yes");
}

#[cfg(test)]
mod tests {
    use super::ensure_free;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    /// A port whose only sockets are in TIME-WAIT (the server side closed
    /// first) is free for a new listener, as PostgreSQL would find it.
    #[test]
    fn a_port_with_only_time_wait_sockets_is_free() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (server_side, _) = listener.accept().expect("accept");
        drop(server_side);
        let mut buf = [0u8; 1];
        assert_eq!(client.read(&mut buf).expect("EOF"), 0);
        drop(client);
        drop(listener);
        ensure_free("127.0.0.1", &[port], "a test", "pick another").expect("free");
        let busy = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let busy_port = busy.local_addr().expect("addr").port();
        let err = ensure_free("127.0.0.1", &[busy_port], "a test", "pick another").unwrap_err();
        assert!(err.to_string().contains("is in use"), "{err}");
    }
}
