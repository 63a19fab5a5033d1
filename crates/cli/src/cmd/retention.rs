//! Retention of backups and WAL: which backups `[backup] keep` / `keep_for`
//! keep, and the WAL cutoff that no kept backup and no member needs.

use crate::target::Target;

/// Apply the configured retention after a successful backup.
pub async fn after_backup(_target: &Target) -> anyhow::Result<()> {
    Ok(())
}
