//! The Docker environment (Dockerfile, docker-compose.yml, docker/) checked
//! without a Docker engine:
//!
//! 1. the compose file: no `version:` key; every pgha container runs nothing
//!    but a pgha subcommand (the image's entry point is the pgha binary) with
//!    a config file that exists in docker/, and the real CLI accepts those
//!    arguments; the WAL archive is a named volume on every node; published
//!    ports are bound to 127.0.0.1; healthchecks, restart policies and
//!    dependency conditions are present;
//! 2. the configs the compose file mounts load and validate with the code
//!    the containers run (`pgha_config::load`, `ProxySettings::load`), and
//!    agree with the compose file: member names are the node services,
//!    member hosts their fixed addresses, API ports their healthchecks,
//!    volumes where the config expects data, archive and secrets;
//! 3. `docker compose config -q` (or `docker-compose`), when one is
//!    installed; otherwise that part is skipped with a note.
//!
//! What this cannot check: that the image builds and the cluster runs in
//! containers (that needs an engine; see docs/docker.md).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use pgha_config::ClusterConfig;
use serde_yaml::{Mapping, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The pgha subcommands a container may run.
const ALLOWED: &[&str] = &["agent", "proxy", "secrets", "etcd-auth", "status"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

fn compose() -> Value {
    let path = root().join("docker-compose.yml");
    let text = std::fs::read_to_string(&path).expect("read docker-compose.yml");
    let mut doc: Value = serde_yaml::from_str(&text).expect("docker-compose.yml is YAML");
    doc.apply_merge().expect("resolve YAML merge keys (<<)");
    doc
}

fn services(doc: &Value) -> &Mapping {
    doc.get("services")
        .and_then(Value::as_mapping)
        .expect("services: is a mapping")
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_sequence)
        .map(|s| {
            s.iter()
                .map(|x| match x {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A service built from this repository's Dockerfile (runs the pgha image).
fn is_pgha(svc: &Value) -> bool {
    svc.get("build").is_some()
}

/// Name, definition and command (exec form) of every pgha service.
fn pgha_services(doc: &Value) -> Vec<(String, &Value, Vec<String>)> {
    services(doc)
        .iter()
        .filter(|(_, svc)| is_pgha(svc))
        .map(|(name, svc)| {
            let name = name.as_str().expect("service name").to_string();
            let cmd = svc.get("command");
            assert!(
                cmd.map(Value::is_sequence).unwrap_or(false),
                "service {name}: command must be a list (exec form), got {cmd:?}"
            );
            (name, svc, str_list(cmd))
        })
        .collect()
}

/// The node services: those running `pgha agent`.
fn nodes(doc: &Value) -> Vec<(String, &Value, Vec<String>)> {
    pgha_services(doc)
        .into_iter()
        .filter(|(_, _, cmd)| cmd.first().map(String::as_str) == Some("agent"))
        .collect()
}

fn flag<'a>(cmd: &'a [String], name: &str) -> Option<&'a str> {
    cmd.iter()
        .position(|a| a == name)
        .and_then(|i| cmd.get(i + 1))
        .map(String::as_str)
}

/// A service's volumes as (source, target, read_only), short syntax.
fn volumes(svc: &Value) -> Vec<(String, String, bool)> {
    str_list(svc.get("volumes"))
        .iter()
        .map(|v| {
            let parts: Vec<&str> = v.split(':').collect();
            assert!(
                parts.len() >= 2,
                "volume {v:?}: expected SOURCE:TARGET[:ro]"
            );
            let ro = parts.get(2).map(|o| o.split(',').any(|x| x == "ro"));
            (parts[0].into(), parts[1].into(), ro.unwrap_or(false))
        })
        .collect()
}

/// The host path of `container_path` through the service's bind mounts.
fn host_path(svc: &Value, container_path: &str) -> Option<PathBuf> {
    volumes(svc).into_iter().find_map(|(src, dst, _)| {
        let rest = Path::new(container_path).strip_prefix(&dst).ok()?;
        src.starts_with("./").then(|| root().join(&src).join(rest))
    })
}

/// The named volume mounted at `target` (exactly) in the service, if any.
fn named_volume_at(svc: &Value, target: &Path) -> Option<(String, bool)> {
    volumes(svc)
        .into_iter()
        .find(|(src, dst, _)| Path::new(dst) == target && !src.starts_with('.'))
        .map(|(src, _, ro)| (src, ro))
}

fn cluster_config(doc: &Value) -> ClusterConfig {
    let (name, svc, cmd) = nodes(doc).into_iter().next().expect("a node service");
    let path = flag(&cmd, "--config").expect("agent --config");
    let host = host_path(svc, path).unwrap_or_else(|| panic!("{name}: {path} is not mounted"));
    pgha_config::load(&host).unwrap_or_else(|e| panic!("{}: {e}", host.display()))
}

#[test]
fn compose_file_has_no_version_key_and_declares_named_volumes() {
    let doc = compose();
    assert!(
        doc.get("version").is_none(),
        "the Compose spec has no `version:` key"
    );
    let declared = doc
        .get("volumes")
        .and_then(Value::as_mapping)
        .expect("top-level volumes:");
    for (name, svc) in services(&doc) {
        for (src, _, _) in volumes(svc) {
            if !src.starts_with('.') && !src.starts_with('/') {
                assert!(
                    declared.contains_key(src.as_str()),
                    "{name:?}: volume {src} is not declared under volumes:"
                );
            }
        }
    }
}

#[test]
fn every_pgha_container_runs_only_a_pgha_subcommand() {
    let doc = compose();
    let all = pgha_services(&doc);
    assert!(all.len() >= 6, "init, etcd-auth, node1..node3 and proxy");
    for (name, svc, cmd) in &all {
        assert!(
            svc.get("entrypoint").is_none(),
            "{name}: must use the image's entry point (pgha), not its own"
        );
        let sub = cmd.first().map(String::as_str).unwrap_or("");
        assert!(
            ALLOWED.contains(&sub),
            "{name}: runs {cmd:?}; only pgha subcommands {ALLOWED:?} are allowed"
        );
        if let Some(config) = flag(cmd, "--config") {
            let host = host_path(svc, config)
                .unwrap_or_else(|| panic!("{name}: {config} is not bind-mounted from ./docker"));
            assert!(
                host.starts_with(root().join("./docker")),
                "{name}: {config} must come from docker/"
            );
            assert!(host.is_file(), "{name}: {} does not exist", host.display());
        }
        assert_cli_accepts(name, cmd);
    }
    assert_dockerfile_entry_point_is_pgha();
}

/// The real pgha CLI parses the service's arguments: run them with the
/// config path swapped for one that does not exist, so the command fails
/// right after parsing (exit 1, "cannot read") instead of starting anything.
/// `secrets init` is run for real, twice, into a temp dir.
fn assert_cli_accepts(name: &str, cmd: &[String]) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut args: Vec<String> = cmd.to_vec();
    if let Some(i) = args.iter().position(|a| a == "--config") {
        args[i + 1] = tmp.path().join("missing.toml").display().to_string();
    }
    if args.first().map(String::as_str) == Some("secrets") {
        return assert_secrets_init_is_idempotent(name, &args, tmp.path());
    }
    let out = Command::new(bin()).args(&args).output().expect("run pgha");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{name}: pgha {args:?} should parse and then fail to read the config; stderr: {stderr}"
    );
    assert!(
        stderr.contains("missing.toml"),
        "{name}: expected a config read error, got: {stderr}"
    );
}

fn assert_secrets_init_is_idempotent(name: &str, args: &[String], tmp: &Path) {
    let mut args = args.to_vec();
    let dir = tmp.join("secrets");
    let i = args.iter().position(|a| a == "--dir").expect("--dir");
    args[i + 1] = dir.display().to_string();
    if nix::unistd::Uid::effective().is_root() {
        // The image's user does not exist on this host; root needs one.
        if let Some(u) = args.iter().position(|a| a == "--user") {
            args[u + 1] = "postgres".into();
        }
    }
    let run = || {
        let out = Command::new(bin()).args(&args).output().expect("run pgha");
        assert!(
            out.status.success(),
            "{name}: pgha {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let read = || {
        [
            "admin.password",
            "replication.password",
            "monitor.password",
            "api.token",
            "pgpass",
        ]
        .map(|f| std::fs::read_to_string(dir.join(f)).expect("secret file written"))
    };
    let first = run();
    let before = read();
    assert!(first.contains("kept none"), "{first}");
    let second = run();
    assert!(second.contains("created none"), "{second}");
    assert_eq!(before, read(), "a second run must change no secret");
}

fn assert_dockerfile_entry_point_is_pgha() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("read Dockerfile");
    let entry: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("ENTRYPOINT"))
        .collect();
    assert_eq!(
        entry,
        ["ENTRYPOINT [\"/usr/local/bin/pgha\"]"],
        "the image's entry point is the pgha binary, exec form, nothing else"
    );
    let user = text
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("Dockerfile sets USER");
    assert!(
        !user.contains("root") && !user.contains(" 0"),
        "runs as non-root: {user}"
    );
    assert!(
        text.contains("FROM debian:bookworm-slim"),
        "Debian 12 runtime"
    );
    assert!(
        text.contains("ARG PG_MAJOR=15"),
        "PostgreSQL major pinned to 15"
    );
}

#[test]
fn archive_volume_is_on_every_node_and_data_volumes_are_per_node() {
    let doc = compose();
    let cfg = cluster_config(&doc);
    let nodes = nodes(&doc);
    assert_eq!(nodes.len(), cfg.members.len(), "one service per member");
    let mut data_volumes = BTreeSet::new();
    for (name, svc, _) in &nodes {
        let (archive, ro) = named_volume_at(svc, &cfg.archive_dir)
            .unwrap_or_else(|| panic!("{name}: no named volume at {}", cfg.archive_dir.display()));
        assert!(
            !ro,
            "{name}: the archive must be writable (the primary pushes)"
        );
        assert_eq!(archive, "archive", "{name}: the shared archive volume");
        let (secrets, ro) = named_volume_at(svc, &cfg.secrets_dir)
            .unwrap_or_else(|| panic!("{name}: no secrets volume"));
        assert_eq!(secrets, "secrets");
        assert!(!ro, "{name}: the agent rewrites the passfile");
        let member = cfg.member(name).expect("a member named like the service");
        let mount = member
            .data_dir
            .ancestors()
            .skip(1)
            .find_map(|dir| named_volume_at(svc, dir))
            .unwrap_or_else(|| panic!("{name}: no volume holds {}", member.data_dir.display()));
        assert!(
            data_volumes.insert(mount.0.clone()),
            "{name}: data volume {} is shared with another node",
            mount.0
        );
    }
}

#[test]
fn published_ports_are_bound_to_loopback() {
    let doc = compose();
    let mut published = 0;
    for (name, svc) in services(&doc) {
        for port in svc
            .get("ports")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let host_ip = match port {
                Value::String(s) => s.split(':').next().map(str::to_string),
                Value::Mapping(m) => m.get("host_ip").and_then(Value::as_str).map(Into::into),
                other => panic!("{name:?}: unexpected port entry {other:?}"),
            };
            assert_eq!(
                host_ip.as_deref(),
                Some("127.0.0.1"),
                "{name:?}: port {port:?} must be bound to 127.0.0.1"
            );
            published += 1;
        }
    }
    assert_eq!(published, 3, "the proxy's rw, ro and primary ports");
}

#[test]
fn services_have_healthchecks_restart_policies_and_conditions() {
    let doc = compose();
    for (name, svc) in services(&doc) {
        let name = name.as_str().unwrap_or("?");
        if name == "init" || name == "etcd-auth" {
            // One-shot services: no healthcheck, never restarted.
            assert_eq!(svc.get("restart").and_then(Value::as_str), Some("no"));
            continue;
        }
        let test = str_list(svc.get("healthcheck").and_then(|h| h.get("test")));
        assert!(test.len() >= 2, "{name}: healthcheck.test missing");
        assert!(
            svc.get("restart").is_some(),
            "{name}: restart policy missing"
        );
    }
    for (name, svc, _) in nodes(&doc) {
        let dep = |s: &str| {
            svc.get("depends_on")
                .and_then(|d| d.get(s))
                .and_then(|d| d.get("condition"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        assert_eq!(dep("etcd").as_deref(), Some("service_healthy"), "{name}");
        assert_eq!(
            dep("init").as_deref(),
            Some("service_completed_successfully"),
            "{name}: secrets must exist before an agent starts"
        );
        assert_eq!(
            dep("etcd-auth").as_deref(),
            Some("service_completed_successfully"),
            "{name}: etcd must refuse anonymous requests before an agent starts"
        );
        assert_eq!(
            svc.get("init").and_then(Value::as_bool),
            Some(true),
            "{name}"
        );
    }
}

#[test]
fn cluster_config_matches_the_node_services() {
    let doc = compose();
    let cfg = cluster_config(&doc);
    assert_eq!(
        cfg.bin_dir.as_deref(),
        Some(Path::new("/usr/lib/postgresql/15/bin"))
    );
    for (name, svc, cmd) in nodes(&doc) {
        assert_eq!(
            flag(&cmd, "--member"),
            Some(name.as_str()),
            "{name}: --member"
        );
        let member = cfg.member(&name).expect("member named like the service");
        let addr = svc
            .get("networks")
            .and_then(|n| n.get("pgha"))
            .and_then(|n| n.get("ipv4_address"))
            .and_then(Value::as_str);
        assert_eq!(
            addr,
            Some(member.host.as_str()),
            "{name}: the container's fixed address is the member's host"
        );
        assert!(
            member.host.parse::<std::net::Ipv4Addr>().is_ok(),
            "{name}: member host must be an address (pg_hba host names need reverse DNS)"
        );
        let test = str_list(svc.get("healthcheck").and_then(|h| h.get("test")));
        assert_eq!(
            test[1..],
            [
                "pgha-check".to_string(),
                "http".into(),
                member.host.clone(),
                member.api_port.to_string(),
                "/health".into()
            ],
            "{name}: healthcheck probes the agent's REST API"
        );
    }
    let services = services(&doc);
    for url in &cfg.dcs.endpoints {
        let host = url
            .trim_start_matches("http://")
            .split(':')
            .next()
            .unwrap_or("");
        assert!(
            services.contains_key(host),
            "dcs endpoint {url}: no service {host}"
        );
    }
}

#[test]
fn proxy_config_matches_the_cluster_and_published_ports() {
    use pgha_proxy::config::TopologySettings;
    let doc = compose();
    let cfg = cluster_config(&doc);
    let (name, svc, cmd) = pgha_services(&doc)
        .into_iter()
        .find(|(_, _, c)| c.first().map(String::as_str) == Some("proxy"))
        .expect("a proxy service");
    let path = flag(&cmd, "--config").expect("proxy --config");
    let host = host_path(svc, path).expect("proxy config mounted");
    let settings = pgha_proxy::ProxySettings::load(&host).expect("proxy.toml is valid");
    match &settings.topology {
        TopologySettings::Etcd { cluster, dcs } => {
            assert_eq!(cluster, &cfg.name, "proxy follows this cluster");
            assert_eq!(dcs.endpoints, cfg.dcs.endpoints, "same etcd");
            assert_eq!(dcs.username, cfg.dcs.username, "same etcd user");
            assert_eq!(dcs.password_file, cfg.dcs.password_file, "same password");
        }
        other => panic!("{name}: the proxy must follow etcd, not {other:?}"),
    }
    let secrets = settings
        .monitor_password_file
        .parent()
        .expect("password file in a dir");
    assert_eq!(
        secrets, cfg.secrets_dir,
        "monitor password from secrets_dir"
    );
    let (vol, _) = named_volume_at(svc, secrets).expect("secrets volume on the proxy");
    assert_eq!(vol, "secrets");
    let published: BTreeSet<String> = str_list(svc.get("ports"))
        .iter()
        .filter_map(|p| p.rsplit(':').next().map(str::to_string))
        .collect();
    for listen in [
        &settings.listen_rw,
        &settings.listen_ro,
        &settings.listen_primary,
    ] {
        let port = listen.rsplit(':').next().unwrap_or("");
        assert!(
            published.contains(port),
            "{name}: listener {listen} is not published"
        );
    }
}

/// `docker compose config -q` / `docker-compose config -q`, when available.
#[test]
fn compose_file_validates_with_docker_compose_when_installed() {
    let file = root().join("docker-compose.yml");
    let candidates: [&[&str]; 2] = [&["docker", "compose"], &["docker-compose"]];
    for tool in candidates {
        let works = Command::new(tool[0])
            .args(&tool[1..])
            .arg("version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !works {
            continue;
        }
        let out = Command::new(tool[0])
            .args(&tool[1..])
            .arg("-f")
            .arg(&file)
            .args(["config", "-q"])
            .output()
            .expect("run compose");
        assert!(
            out.status.success(),
            "{} config -q failed: {}",
            tool.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    println!("note: neither `docker compose` nor `docker-compose` is installed; compose validation skipped");
}

/// etcd refuses anonymous requests in the Docker environment: the agents
/// and the proxy name the etcd user and a password file in the secrets
/// volume, and the one-shot `etcd-auth` service (which can write that
/// volume) turns authentication on before any of them starts.
#[test]
fn etcd_auth_runs_before_the_agents_and_the_proxy_with_the_secrets() {
    let doc = compose();
    let cfg = cluster_config(&doc);
    assert_eq!(cfg.dcs.username.as_deref(), Some("pgha"));
    let password = cfg.dcs.password_file.as_deref().expect("dcs.password_file");
    assert!(
        password.starts_with(&cfg.secrets_dir),
        "the etcd password lives in the secrets volume: {}",
        password.display()
    );
    let svc = services(&doc)
        .get("etcd-auth")
        .expect("an etcd-auth service");
    let cmd = str_list(svc.get("command"));
    assert_eq!(cmd.first().map(String::as_str), Some("etcd-auth"));
    let (_, _, node_cmd) = nodes(&doc).into_iter().next().expect("a node");
    assert_eq!(flag(&cmd, "--config"), flag(&node_cmd, "--config"));
    assert_eq!(
        named_volume_at(svc, &cfg.secrets_dir),
        Some(("secrets".to_string(), false)),
        "etcd-auth writes the etcd passwords into the secrets volume"
    );
    let proxy = services(&doc).get("proxy").expect("proxy");
    assert_eq!(
        proxy
            .get("depends_on")
            .and_then(|d| d.get("etcd-auth"))
            .and_then(|d| d.get("condition"))
            .and_then(Value::as_str),
        Some("service_completed_successfully")
    );
}
