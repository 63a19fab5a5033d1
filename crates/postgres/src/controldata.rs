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

    /// The `DBState` value PostgreSQL stores in pg_control
    /// (`catalog/pg_control.h`).
    fn from_db_state(v: u32) -> Option<Self> {
        Some(match v {
            0 => ClusterState::StartingUp,
            1 => ClusterState::ShutDown,
            2 => ClusterState::ShutDownInRecovery,
            3 => ClusterState::ShuttingDown,
            4 => ClusterState::InCrashRecovery,
            5 => ClusterState::InArchiveRecovery,
            6 => ClusterState::InProduction,
            _ => return None,
        })
    }
}

/// Offset of `state` in `ControlFileData` (after the u64 system identifier
/// and the u32 pg_control and catalog versions); unchanged since 9.x.
const STATE_OFFSET: usize = 16;

/// The cluster state from the first bytes of `global/pg_control`, read
/// directly: a few microseconds, against several milliseconds to spawn
/// `pg_controldata`, so a shutdown can be polled every few milliseconds.
/// Only the state is read (without the CRC check `pg_controldata` does;
/// PostgreSQL writes the file in one sector-sized write): use
/// [`parse`] for anything that must be exact, such as positions.
pub fn state_from_control_file(bytes: &[u8]) -> Result<ClusterState, String> {
    let word = |at: usize| -> Result<u32, String> {
        let b = bytes
            .get(at..at + 4)
            .ok_or_else(|| format!("pg_control is only {} bytes", bytes.len()))?;
        Ok(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    // pg_control_version: 1300 for PostgreSQL 13 to 16, 1700 for 17.
    let version = word(8)?;
    if !(900..10_000).contains(&version) {
        return Err(format!("unexpected pg_control version {version}"));
    }
    let state = word(STATE_OFFSET)?;
    ClusterState::from_db_state(state).ok_or_else(|| format!("unknown cluster state {state}"))
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
    fn reads_the_state_from_the_control_file() {
        let mut file = vec![0u8; 64];
        file[8..12].copy_from_slice(&1300u32.to_ne_bytes());
        file[16..20].copy_from_slice(&1u32.to_ne_bytes());
        assert_eq!(state_from_control_file(&file), Ok(ClusterState::ShutDown));
        file[16..20].copy_from_slice(&6u32.to_ne_bytes());
        assert_eq!(
            state_from_control_file(&file),
            Ok(ClusterState::InProduction)
        );
        file[16..20].copy_from_slice(&9u32.to_ne_bytes());
        assert!(state_from_control_file(&file).is_err());
        file[8..12].copy_from_slice(&0u32.to_ne_bytes());
        assert!(state_from_control_file(&file).is_err());
        assert!(state_from_control_file(&file[..10]).is_err());
    }

    #[test]
    fn missing_field_is_named() {
        let e = parse("Database cluster state: in production\n").unwrap_err();
        assert!(e.contains("Database system identifier"), "{e}");
    }
}
