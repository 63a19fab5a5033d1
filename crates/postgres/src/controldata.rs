//! What a data directory says about itself when PostgreSQL is not running:
//! `pg_controldata` output, parsed. This (not `standby.signal`, which
//! disappears on promotion) is how pgha knows whether a data directory is
//! initialised and whether it was last a primary or a standby.

use pgha_core::{Lsn, Timeline};
use std::collections::HashMap;

/// "Database cluster state" from pg_control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    /// Was running as a primary (crashed, or still running).
    InProduction,
    /// Cleanly shut down as a primary.
    ShutDown,
    /// Was running as a standby.
    InArchiveRecovery,
    /// Cleanly shut down as a standby.
    ShutDownInRecovery,
    /// Crashed during crash recovery, or starting up.
    InCrashRecovery,
    ShuttingDown,
    StartingUp,
}

impl ClusterState {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "in production" => ClusterState::InProduction,
            "shut down" => ClusterState::ShutDown,
            "in archive recovery" => ClusterState::InArchiveRecovery,
            "shut down in recovery" => ClusterState::ShutDownInRecovery,
            "in crash recovery" => ClusterState::InCrashRecovery,
            "shutting down" => ClusterState::ShuttingDown,
            "starting up" => ClusterState::StartingUp,
            _ => return None,
        })
    }

    /// The last role this data directory ran in was a standby.
    pub fn was_standby(self) -> bool {
        matches!(
            self,
            ClusterState::InArchiveRecovery | ClusterState::ShutDownInRecovery
        )
    }

    /// Shut down cleanly (no crash recovery needed before a rewind).
    pub fn is_clean_shutdown(self) -> bool {
        matches!(
            self,
            ClusterState::ShutDown | ClusterState::ShutDownInRecovery
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlData {
    pub system_identifier: u64,
    pub state: ClusterState,
    /// Timeline of the latest checkpoint.
    pub checkpoint_timeline: Timeline,
    /// Redo location of the latest checkpoint.
    pub checkpoint_lsn: Lsn,
    /// Minimum recovery ending location (standbys), 0/0 on a primary.
    pub min_recovery_lsn: Lsn,
    pub min_recovery_timeline: Timeline,
}

/// Parse `pg_controldata` output (run with LC_ALL=C).
pub fn parse(text: &str) -> Result<ControlData, String> {
    let fields: HashMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let get = |k: &str| {
        fields
            .get(k)
            .copied()
            .ok_or_else(|| format!("pg_controldata did not print {k:?}"))
    };
    let lsn = |k: &str| get(k)?.parse::<Lsn>().map_err(|e| e.to_string());
    let num = |k: &str| {
        get(k)?
            .parse::<u64>()
            .map_err(|_| format!("{k:?} is not a number"))
    };
    let state_text = get("Database cluster state")?;
    Ok(ControlData {
        system_identifier: num("Database system identifier")?,
        state: ClusterState::parse(state_text)
            .ok_or_else(|| format!("unknown cluster state {state_text:?}"))?,
        checkpoint_timeline: Timeline(num("Latest checkpoint's TimeLineID")? as u32),
        checkpoint_lsn: lsn("Latest checkpoint's REDO location")?,
        min_recovery_lsn: lsn("Minimum recovery ending location")?,
        min_recovery_timeline: Timeline(num("Min recovery ending loc's timeline")? as u32),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "pg_control version number:            1300
Catalog version number:               202209061
Database system identifier:           7312345678901234567
Database cluster state:               shut down in recovery
pg_control last modified:             Wed 25 Nov 2026 08:00:00 PM UTC
Latest checkpoint location:           0/3000060
Latest checkpoint's REDO location:    0/3000028
Latest checkpoint's REDO WAL file:    000000020000000000000003
Latest checkpoint's TimeLineID:       2
Minimum recovery ending location:     0/3000110
Min recovery ending loc's timeline:   2
";

    #[test]
    fn parses_a_standby_control_file() {
        let cd = parse(SAMPLE).unwrap();
        assert_eq!(cd.system_identifier, 7312345678901234567);
        assert_eq!(cd.state, ClusterState::ShutDownInRecovery);
        assert!(cd.state.was_standby());
        assert_eq!(cd.checkpoint_timeline, Timeline(2));
        assert_eq!(cd.checkpoint_lsn, Lsn(0x3000028));
        assert_eq!(cd.min_recovery_lsn, Lsn(0x3000110));
    }

    #[test]
    fn missing_field_is_named() {
        let e = parse("Database cluster state: in production\n").unwrap_err();
        assert!(e.contains("Database system identifier"), "{e}");
    }
}
