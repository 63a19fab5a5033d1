//! `pgha edit-config [--set KEY=VALUE ...]`: show or change the cluster-wide
//! dynamic configuration in the `/config` key (DynamicConfig JSON): the
//! lease TTL, loop interval, fencing margin, sync quorum, async fallback,
//! and so on. Without `--set` it prints the current config.
//!
//! Values are JSON literals (`3000`, `true`, `null`) or plain strings; the
//! key must be a DynamicConfig field. The result is checked with
//! `DynamicConfig::validate` before anything is written, and written with
//! compare-and-swap (see `pause::update_config`).
//!
//! `sync_quorum` follows the same rule as the config file's
//! `replication.sync_quorum` (`pgha_config::check_sync_quorum`): a value
//! larger than the number of standbys is refused, not clamped.
//!
//! Exit codes: 0 written (or nothing to change); 1 invalid key or value,
//! invalid result, or etcd unreachable.

use super::pause::update_config;
use crate::target::{Target, TargetArgs};
use anyhow::{anyhow, bail, Context};
use pgha_core::DynamicConfig;
use pgha_dcs::Dcs;
use serde_json::Value;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: TargetArgs,
    /// A change, e.g. `--set ttl_ms=3000 --set allow_async_fallback=true`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let target = Target::resolve(&args.target)?;
    let changes = args
        .set
        .iter()
        .map(|s| parse_assignment(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(async {
        let dcs = target.dcs()?;
        if changes.is_empty() {
            let key = target.keys.config();
            let got = dcs.get(&key).await.with_context(|| format!("read {key}"))?;
            let current = match got.kv {
                Some(kv) => serde_json::from_slice::<DynamicConfig>(&kv.value)
                    .with_context(|| format!("parse {key}"))?,
                None => {
                    eprintln!(
                        "pgha: {key} does not exist yet; showing the defaults from the config file"
                    );
                    pgha_agent::initial_config(&target.config)
                }
            };
            crate::outln!("{}", serde_json::to_string_pretty(&current)?);
            return Ok(ExitCode::SUCCESS);
        }
        let outcome = update_config(&dcs, &target, |c| apply(c, &changes)).await?;
        if outcome.changed {
            for (k, _) in &changes {
                let field = |c: &DynamicConfig| serde_json::to_value(c).ok().map(|v| v[k].clone());
                crate::outln!(
                    "{k}: {} -> {}",
                    field(&outcome.before).unwrap_or(Value::Null),
                    field(&outcome.after).unwrap_or(Value::Null)
                );
            }
        } else {
            crate::outln!("nothing changed");
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `key=value` → (key, JSON value): a JSON literal if it parses as one,
/// else the text as a string.
fn parse_assignment(s: &str) -> anyhow::Result<(String, Value)> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("--set {s:?}: expected KEY=VALUE"))?;
    let k = k.trim();
    if k.is_empty() {
        bail!("--set {s:?}: empty key");
    }
    let v = v.trim();
    let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
    Ok((k.to_string(), value))
}

/// Apply the changes to `c` through its JSON form, so that field names and
/// types are exactly those of the `/config` key.
fn apply(c: &mut DynamicConfig, changes: &[(String, Value)]) -> anyhow::Result<()> {
    let mut json = serde_json::to_value(&*c).context("render the config")?;
    let obj = json
        .as_object_mut()
        .ok_or_else(|| anyhow!("config is not a JSON object"))?;
    for (k, v) in changes {
        if !obj.contains_key(k) {
            let known: Vec<&str> = obj.keys().map(String::as_str).collect();
            bail!("unknown config key {k:?} (known: {})", known.join(", "));
        }
        obj.insert(k.clone(), v.clone());
        // Checked one key at a time, so that a wrong type names its key.
        serde_json::from_value::<DynamicConfig>(Value::Object(obj.clone()))
            .map_err(|e| anyhow!("{k}: invalid value {v}: {e}"))?;
    }
    *c = serde_json::from_value(json).context("apply the changes")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_apply_with_types_and_names_checked() {
        let mut c = DynamicConfig::default();
        let ch = vec![
            parse_assignment("ttl_ms=4000").unwrap(),
            parse_assignment("allow_async_fallback=true").unwrap(),
            parse_assignment("max_lag_on_failover=1048576").unwrap(),
        ];
        apply(&mut c, &ch).unwrap();
        assert_eq!(c.ttl.0, 4000);
        assert!(c.allow_async_fallback);
        assert_eq!(c.max_lag_on_failover, Some(1 << 20));
        let err = apply(&mut c, &[parse_assignment("ttl=1").unwrap()]).unwrap_err();
        assert!(err.to_string().contains("unknown config key"), "{err}");
        let err = apply(&mut c, &[parse_assignment("sync_quorum=many").unwrap()]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("sync_quorum: invalid value \"many\""),
            "{err}"
        );
        assert!(parse_assignment("novalue").is_err());
    }
}
