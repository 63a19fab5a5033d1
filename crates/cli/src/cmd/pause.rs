//! `pgha pause` / `pgha resume`: switch the cluster's maintenance mode in
//! the `/config` key (DynamicConfig JSON). While paused the agents publish
//! their state and the leader renews its lease, but nothing automatic
//! happens: no failover, no restart, no demotion.
//!
//! Also holds [`update_config`], the read-modify-write of `/config` that
//! `edit-config` uses: compare-and-swap on the key's mod_revision, retried
//! when another writer got in between, so no concurrent change is lost.
//!
//! Hazard: when `/config` does not exist yet (no agent bootstrapped the
//! cluster) the change is applied to the config the file's `[ha]` table
//! would give, and the key is created with it.

use crate::target::{Target, TargetArgs};
use anyhow::{anyhow, bail, Context};
use pgha_core::DynamicConfig;
use pgha_dcs::{Dcs, EtcdDcs};
use std::process::ExitCode;

/// How many times a CAS lost to a concurrent writer is retried.
const CAS_ATTEMPTS: usize = 5;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: TargetArgs,
}

pub fn run_pause(args: Args) -> anyhow::Result<ExitCode> {
    set_paused(args, true)
}

pub fn run_resume(args: Args) -> anyhow::Result<ExitCode> {
    set_paused(args, false)
}

fn set_paused(args: Args, paused: bool) -> anyhow::Result<ExitCode> {
    let target = Target::resolve(&args.target)?;
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(async {
        let dcs = target.dcs()?;
        let outcome = update_config(&dcs, &target, |c| {
            c.paused = paused;
            Ok(())
        })
        .await?;
        let what = if paused {
            "paused (maintenance mode: no automatic failover or restarts)"
        } else {
            "resumed (automatic failover is active)"
        };
        let already = if outcome.changed { "" } else { "already " };
        crate::outln!("cluster {} {already}{what}", target.config.name);
        Ok(ExitCode::SUCCESS)
    })
}

/// The result of [`update_config`].
pub struct ConfigUpdate {
    pub before: DynamicConfig,
    pub after: DynamicConfig,
    /// False when the change left the config as it was (nothing written).
    pub changed: bool,
}

/// Read `/config`, apply `change`, validate, and write it back only if the
/// key was not modified in between (retrying a few times if it was).
pub async fn update_config(
    dcs: &EtcdDcs,
    target: &Target,
    change: impl Fn(&mut DynamicConfig) -> anyhow::Result<()>,
) -> anyhow::Result<ConfigUpdate> {
    let key = target.keys.config();
    for _ in 0..CAS_ATTEMPTS {
        let got = dcs
            .get(&key)
            .await
            .with_context(|| format!("read {key} from etcd {:?}", target.config.dcs.endpoints))?;
        let (before, revision) = match &got.kv {
            Some(kv) => {
                let c: DynamicConfig = serde_json::from_slice(&kv.value)
                    .with_context(|| format!("parse {key} ({})", kv.value_str()))?;
                (c, kv.mod_revision)
            }
            None => (pgha_agent::initial_config(&target.config), 0),
        };
        let mut after = before.clone();
        change(&mut after)?;
        after
            .validate()
            .map_err(|e| anyhow!("refusing to write an invalid config: {e}"))?;
        // The same rule as the config file's replication.sync_quorum.
        pgha_config::check_sync_quorum(after.sync_quorum, target.config.members.len()).map_err(
            |reason| {
                anyhow!(
                    "refusing to write an invalid config: sync_quorum {} {reason}",
                    after.sync_quorum
                )
            },
        )?;
        if after == before && revision != 0 {
            return Ok(ConfigUpdate {
                before,
                after,
                changed: false,
            });
        }
        let json = serde_json::to_vec(&after).context("render the config")?;
        let written = dcs
            .compare_and_swap(&key, &json, revision, None)
            .await
            .with_context(|| format!("write {key}"))?;
        if written {
            tracing::debug!(%key, "dynamic config updated");
            return Ok(ConfigUpdate {
                changed: after != before,
                before,
                after,
            });
        }
        tracing::info!(%key, "config changed concurrently; retrying");
    }
    bail!("{key} kept changing under us ({CAS_ATTEMPTS} attempts); try again")
}
