//! Retention of backups and WAL that cannot break recovery: which backups
//! `[backup] keep` / `keep_for` keep, and the WAL cutoff that no kept backup
//! and no member needs. The decision ([`plan`]) is a pure function; the
//! I/O around it gathers the members' positions and applies the plan.
//!
//! Rules:
//! - the newest verified backup is always kept, whatever the settings;
//! - WAL is kept from the start of the oldest kept backup, and from the
//!   oldest position any member may still need: the restart LSN of its
//!   replication slot on the primary and the replay LSN of a standby
//!   (one catching up from the archive reads from there);
//! - a member whose position cannot be learned (down and without a slot)
//!   blocks WAL deletion altogether: unknown is not "needs nothing";
//! - without any backup nothing is deleted.

use crate::cmd::backup::{primary, probe_members, store_of};
use crate::target::Target;
use anyhow::Context;
use pgha_archive::chain::seg_of;
use pgha_archive::{BackupRecord, Retention, WalName};
use std::time::{Duration, SystemTime};

/// What one member may still need from the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// WAL from this LSN on.
    From(u64),
    /// Unknown (the member does not answer and has no slot).
    Unknown,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub keep_backups: Vec<String>,
    pub drop_backups: Vec<String>,
    /// Delete WAL before this LSN's segment; `None`: delete no WAL.
    pub cutoff: Option<u64>,
    /// Why the cutoff is where it is (or why there is none).
    pub reason: String,
}

/// Decide which backups and which WAL to keep.
pub fn plan(
    backups: &[BackupRecord],
    keep: Option<u32>,
    keep_for: Option<Duration>,
    now: SystemTime,
    needs: &[(String, Need)],
) -> Plan {
    let n = backups.len();
    let keep_n = match (keep, keep_for) {
        (Some(k), _) => (k.max(1) as usize).min(n),
        (None, Some(_)) => 1.min(n),
        (None, None) => n,
    };
    let young = |b: &BackupRecord| match keep_for {
        Some(window) => crate::cmd::restore::parse_utc(&b.end_time)
            .ok()
            .and_then(|end| now.duration_since(end).ok())
            .is_none_or(|age| age <= window),
        None => false,
    };
    let (mut keep_backups, mut drop_backups) = (Vec::new(), Vec::new());
    for (i, b) in backups.iter().enumerate() {
        if i + keep_n >= n || young(b) {
            keep_backups.push(b.id.clone());
        } else {
            drop_backups.push(b.id.clone());
        }
    }
    let Some(oldest) = backups.iter().find(|b| keep_backups.contains(&b.id)) else {
        return Plan {
            keep_backups,
            drop_backups,
            cutoff: None,
            reason: "no backup in the archive: all WAL is kept".into(),
        };
    };
    let Some(mut cutoff) = oldest.start_lsn_u64() else {
        return Plan {
            keep_backups,
            drop_backups,
            cutoff: None,
            reason: format!(
                "backup {} has no readable start LSN: all WAL is kept",
                oldest.id
            ),
        };
    };
    let mut reason = format!("start of backup {} ({})", oldest.id, oldest.start_lsn);
    for (member, need) in needs {
        match need {
            Need::Unknown => {
                return Plan {
                    keep_backups,
                    drop_backups,
                    cutoff: None,
                    reason: format!(
                        "member {member} does not answer and has no replication slot on the \
                         primary, so the WAL it needs is unknown: no WAL is deleted. Start it, \
                         or remove it from the cluster config"
                    ),
                };
            }
            Need::From(lsn) if *lsn < cutoff => {
                cutoff = *lsn;
                reason = format!(
                    "member {member} still needs WAL from {:X}/{:X}",
                    lsn >> 32,
                    lsn & 0xffff_ffff
                );
            }
            Need::From(_) => {}
        }
    }
    Plan {
        keep_backups,
        drop_backups,
        cutoff: Some(cutoff),
        reason,
    }
}

/// What each member may still need, from the running servers.
pub async fn member_needs(target: &Target) -> anyhow::Result<Vec<(String, Need)>> {
    let probed = probe_members(target).await?;
    let slots = match primary(&probed) {
        Some(p) => pgha_postgres::probe::slots(&p.client)
            .await
            .context("read the primary's replication slots")?,
        None => anyhow::bail!(
            "no primary answers: the members' WAL needs (slots) cannot be read, so nothing is cleaned"
        ),
    };
    let mut needs = Vec::new();
    for m in &target.config.members {
        let slot = slots
            .iter()
            .find(|s| s.name == m.name)
            .and_then(|s| s.restart_lsn)
            .map(|l| l.0);
        let probe = probed.iter().find(|p| p.member.name == m.name);
        let replay = probe
            .filter(|p| p.status.in_recovery)
            .and_then(|p| p.status.replay_lsn)
            .map(|l| l.0);
        let is_primary = probe.is_some_and(|p| !p.status.in_recovery);
        let need = match (is_primary, slot, replay) {
            (true, _, _) => continue,
            (false, Some(s), Some(r)) => Need::From(s.min(r)),
            (false, Some(x), None) | (false, None, Some(x)) => Need::From(x),
            (false, None, None) => Need::Unknown,
        };
        needs.push((m.name.clone(), need));
    }
    Ok(needs)
}

/// Plan and (unless `dry_run`) apply retention; prints what it does.
pub async fn clean(
    target: &Target,
    keep: Option<u32>,
    keep_for: Option<Duration>,
    dry_run: bool,
) -> anyhow::Result<()> {
    let archive = store_of(target)?;
    let backups = archive.backups().await.context("list backups")?;
    let needs = member_needs(target).await?;
    let plan = plan(&backups, keep, keep_for, SystemTime::now(), &needs);
    let verb = if dry_run { "would delete" } else { "deleted" };
    for id in &plan.drop_backups {
        if !dry_run {
            archive
                .remove_backup(id)
                .await
                .with_context(|| format!("remove backup {id}"))?;
        }
        crate::outln!("{verb} backup {id}");
    }
    let Some(cutoff) = plan.cutoff else {
        crate::outln!("no WAL deleted: {}", plan.reason);
        return Ok(());
    };
    let seg_size = backups
        .first()
        .map(|b| b.wal_segment_size)
        .unwrap_or(16 << 20);
    let pos = seg_of(cutoff, seg_size);
    let name = WalName::parse(&format!("{:08X}{:08X}{:08X}", 1, pos.log, pos.seg))?;
    let report = archive
        .clean(&Retention::Before(name.clone()), dry_run)
        .await
        .context("clean the archive")?;
    let bytes: u64 = report.deleted.iter().map(|(_, b)| b).sum();
    crate::outln!(
        "WAL kept from segment position {:08X}{:08X} on ({}); {verb} {} WAL files, {bytes} bytes; kept {}",
        pos.log,
        pos.seg,
        plan.reason,
        report.deleted.len(),
        report.kept
    );
    Ok(())
}

/// Apply the configured retention after a successful backup (nothing when
/// neither `keep` nor `keep_for` is set).
pub async fn after_backup(target: &Target) -> anyhow::Result<()> {
    let b = &target.config.file.backup;
    if b.keep.is_none() && b.keep_for.is_none() {
        return Ok(());
    }
    clean(target, b.keep, b.keep_for, false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, start: &str, end_time: &str) -> BackupRecord {
        BackupRecord {
            id: id.into(),
            state: "verified".into(),
            source: "node2".into(),
            source_role: "standby".into(),
            timeline: 1,
            start_lsn: start.into(),
            end_lsn: start.into(),
            start_time: end_time.into(),
            end_time: end_time.into(),
            wal_segment_size: 16 << 20,
            original_bytes: 1,
            stored_bytes: 1,
            sha256: String::new(),
            pg_version: "15".into(),
        }
    }

    fn now() -> SystemTime {
        crate::cmd::restore::parse_utc("2026-12-07T12:00:00Z").unwrap()
    }

    /// (backups, keep, keep_for, needs) -> (kept, dropped, cutoff)
    type Case<'a> = (
        &'a [BackupRecord],
        Option<u32>,
        Option<Duration>,
        Vec<(String, Need)>,
        &'a [&'a str],
        &'a [&'a str],
        Option<u64>,
    );

    #[test]
    fn table() {
        let three = vec![
            rec("a", "0/2000028", "2026-12-01T00:00:00Z"),
            rec("b", "0/5000028", "2026-12-06T00:00:00Z"),
            rec("c", "0/9000028", "2026-12-07T11:00:00Z"),
        ];
        let day = Duration::from_secs(86_400);
        let standby = |lsn: u64| vec![("node2".to_string(), Need::From(lsn))];
        // (backups, keep, keep_for, needs) -> (kept, dropped, cutoff)
        let cases: Vec<Case> = vec![
            // keep everything when nothing is configured
            (
                &three,
                None,
                None,
                vec![],
                &["a", "b", "c"],
                &[],
                Some(0x200_0028),
            ),
            // keep 1: the newest; WAL from its start
            (
                &three,
                Some(1),
                None,
                vec![],
                &["c"],
                &["a", "b"],
                Some(0x900_0028),
            ),
            // keep 0 is treated as 1: the only restorable backup stays
            (
                &three,
                Some(0),
                None,
                vec![],
                &["c"],
                &["a", "b"],
                Some(0x900_0028),
            ),
            // a time window keeps younger ones too
            (
                &three,
                Some(1),
                Some(2 * day),
                vec![],
                &["b", "c"],
                &["a"],
                Some(0x500_0028),
            ),
            // a time window alone keeps the young ones and the newest
            (
                &three,
                None,
                Some(2 * day),
                vec![],
                &["b", "c"],
                &["a"],
                Some(0x500_0028),
            ),
            (
                &three,
                None,
                Some(Duration::from_secs(60)),
                vec![],
                &["c"],
                &["a", "b"],
                Some(0x900_0028),
            ),
            // a standby behind the oldest kept backup holds the WAL back
            (
                &three,
                Some(1),
                None,
                standby(0x300_0000),
                &["c"],
                &["a", "b"],
                Some(0x300_0000),
            ),
            // a standby ahead changes nothing
            (
                &three,
                Some(1),
                None,
                standby(0xA00_0000),
                &["c"],
                &["a", "b"],
                Some(0x900_0028),
            ),
            // an unknown member blocks WAL deletion
            (
                &three,
                Some(1),
                None,
                vec![("node3".into(), Need::Unknown)],
                &["c"],
                &["a", "b"],
                None,
            ),
            // no backup: no WAL deleted
            (&[], Some(1), None, vec![], &[], &[], None),
        ];
        for (i, (backups, keep, keep_for, needs, kept, dropped, cutoff)) in
            cases.into_iter().enumerate()
        {
            let p = plan(backups, keep, keep_for, now(), &needs);
            assert_eq!(p.keep_backups, kept, "case {i}: {p:?}");
            assert_eq!(p.drop_backups, dropped, "case {i}: {p:?}");
            assert_eq!(p.cutoff, cutoff, "case {i}: {p:?}");
        }
    }
}
