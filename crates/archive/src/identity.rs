//! Whose history an archive holds: the system identifier in the long page
//! header at the start of every WAL segment (`XLogLongPageHeaderData`:
//! magic u16, info u16, timeline u32, page address u64, remaining length
//! u32 and 4 bytes of padding, then `xlp_sysid` u64 at byte 24, little
//! endian on the platforms PostgreSQL runs pgha on). `pgha up` compares it
//! with the cluster's own so that a cluster never archives into, or
//! restores from, another cluster's history.

use crate::error::{ArchiveError, Result};
use crate::format::{Compression, ReadError};
use crate::inspect::{open_archived, read_error};
use crate::name::{WalKind, WalName};
use crate::Archive;
use std::io::Read;

/// `XLP_LONG_HEADER` in `xlp_info`.
const XLP_LONG_HEADER: u16 = 0x0002;
/// Bytes of the long page header read (through `xlp_sysid`).
const PREFIX: usize = 32;

/// The newest archived segment and the system identifier it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveOwner {
    pub segment: String,
    pub system_identifier: u64,
}

impl Archive {
    /// The system identifier of the newest archived segment, `None` when
    /// the archive holds no segment.
    pub fn owner(&self) -> Result<Option<ArchiveOwner>> {
        let newest = self
            .list()?
            .into_iter()
            .rfind(|e| e.name.kind() == WalKind::Segment);
        let Some(entry) = newest else { return Ok(None) };
        let system_identifier = self.system_identifier_of(&entry.name)?;
        Ok(Some(ArchiveOwner {
            segment: entry.name.as_str().to_string(),
            system_identifier,
        }))
    }

    /// The first archived segment (in WAL order) whose system identifier is
    /// not `ours`, if any. Reads the first 32 bytes of every segment: an
    /// open and a small read each (a decompression start when compressed).
    pub fn foreign_segment(&self, ours: u64) -> Result<Option<ArchiveOwner>> {
        for entry in self.list()? {
            if entry.name.kind() != WalKind::Segment {
                continue;
            }
            let system_identifier = self.system_identifier_of(&entry.name)?;
            if system_identifier != ours {
                return Ok(Some(ArchiveOwner {
                    segment: entry.name.as_str().to_string(),
                    system_identifier,
                }));
            }
        }
        Ok(None)
    }

    fn system_identifier_of(&self, name: &WalName) -> Result<u64> {
        let path = self.path_of(name);
        let (file, header) = open_archived(&path, name, self.dir())?;
        let mut prefix = [0u8; PREFIX];
        let read = match header.compression {
            Compression::None => file.take(header.stored_len).read_exact(&mut prefix),
            Compression::Zstd => zstd::stream::read::Decoder::new(file.take(header.stored_len))
                .and_then(|mut d| d.read_exact(&mut prefix)),
        };
        read.map_err(|e| read_error(&path, "reading archive file", ReadError::Io(e)))?;
        parse_sysid(&prefix).ok_or_else(|| ArchiveError::Corrupt {
            path,
            reason: "its first page has no long WAL page header".into(),
        })
    }
}

/// `xlp_sysid` of a segment's first page, if it has a long header.
fn parse_sysid(prefix: &[u8; PREFIX]) -> Option<u64> {
    let info = u16::from_le_bytes([prefix[2], prefix[3]]);
    if info & XLP_LONG_HEADER == 0 {
        return None;
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&prefix[24..32]);
    Some(u64::from_le_bytes(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Compression, PushOptions};

    fn segment(sysid: u64) -> Vec<u8> {
        let mut seg = vec![0u8; 8192];
        seg[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        seg[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        seg[24..32].copy_from_slice(&sysid.to_le_bytes());
        seg
    }

    #[test]
    fn the_newest_segment_names_the_owner_and_a_foreign_one_is_found_compressed_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        assert_eq!(archive.owner().unwrap(), None);
        let src = tempfile::tempdir().unwrap();
        for (name, sysid, compression) in [
            ("000000010000000000000001", 7, Compression::None),
            ("000000010000000000000002", 42, Compression::Zstd),
        ] {
            let p = src.path().join(name);
            std::fs::write(&p, segment(sysid)).unwrap();
            archive.push(&p, PushOptions { compression }).unwrap();
        }
        let owner = archive.owner().unwrap().unwrap();
        assert_eq!(owner.segment, "000000010000000000000002");
        assert_eq!(owner.system_identifier, 42);
        let foreign = archive.foreign_segment(42).unwrap().unwrap();
        assert_eq!(foreign.segment, "000000010000000000000001");
        assert_eq!(foreign.system_identifier, 7);
        assert_eq!(
            archive
                .foreign_segment(7)
                .unwrap()
                .unwrap()
                .system_identifier,
            42
        );
    }
}
