//! `pgha tls init --config cluster.toml`: make the certificates `[tls]`
//! needs (a CA, each member's and the dev proxy's server certificate) at
//! their default places in the secrets directory, once, as `pgha up` does
//! for a dev cluster. For a cluster on several hosts: run it once, then copy
//! the secrets directory to every host (agents never generate them).
//!
//! Safe to run again: a file that exists is kept, an operator's path is
//! never written (missing, it is an error naming the key). Prints which
//! files were made and which were kept, never a key.

use anyhow::{bail, Context};
use pgha_postgres::ServiceUser;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: TlsCommand,
}

#[derive(clap::Subcommand)]
enum TlsCommand {
    /// Make every missing certificate of the config's [tls] (keeps existing ones).
    Init(InitArgs),
}

#[derive(clap::Args)]
struct InitArgs {
    /// The cluster config, with `[tls] enabled = true`.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Also make the proxy's certificate (`[tls.proxy]`, default
    /// `<secrets_dir>/proxy.crt`), naming HOST besides 127.0.0.1 and
    /// localhost. Default: `[proxy] host` when the config has a `[proxy]`
    /// table, else no proxy certificate.
    #[arg(long, value_name = "HOST")]
    proxy_host: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        TlsCommand::Init(a) => init(a),
    }
}

fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    let config = crate::access::load_config(&args.config)?;
    let Some(tls) = &config.tls else {
        bail!(
            "{}: TLS is not enabled: add a [tls] table with enabled = true first",
            args.config.display()
        );
    };
    let mut files = vec![tls.ca_file.clone(), tls.ca_key_file.clone()];
    for pair in tls.members.values() {
        files.extend([pair.cert_file.clone(), pair.key_file.clone()]);
    }
    let proxy_host = args
        .proxy_host
        .clone()
        .or_else(|| config.proxy.as_ref().map(|p| p.host.clone()));
    if proxy_host.is_some() {
        files.extend([tls.proxy.cert_file.clone(), tls.proxy.key_file.clone()]);
    }
    let before: Vec<bool> = files.iter().map(|f| f.exists()).collect();
    let user = ServiceUser::resolve(&config.os_user).context("resolve the service user")?;
    user.make_dir(&config.secrets_dir, 0o700)?;
    pgha_postgres::tls_files::ensure_with_proxy(&config, &user, proxy_host.as_deref())
        .context("make the cluster's TLS certificates ([tls])")?;
    for (file, existed) in files.iter().zip(before) {
        let what = match (existed, file.exists()) {
            (true, _) => "kept",
            (false, true) => "made",
            // The CA key of an operator's CA: not needed when every
            // certificate is there.
            (false, false) => "absent (not needed)",
        };
        crate::outln!("{what:<8} {}", file.display());
    }
    crate::outln!(
        "clients verify the servers with sslmode=verify-full sslrootcert={}",
        tls.ca_file.display()
    );
    Ok(ExitCode::SUCCESS)
}
