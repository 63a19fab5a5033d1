//! Unit tests of the archive library against real files in temp dirs.

use super::*;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};
use tempfile::TempDir;

/// An archive dir and a fake pg_wal dir in one temp dir.
struct Fixture {
    _tmp: TempDir,
    archive: Archive,
    wal: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("archive");
    fs::create_dir(&dir).unwrap();
    let wal = tmp.path().join("pg_wal");
    fs::create_dir(&wal).unwrap();
    Fixture {
        archive: Archive::open(&dir).unwrap(),
        wal,
        _tmp: tmp,
    }
}

/// Deterministic, partly compressible content of `len` bytes.
fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            if i % 4096 < 2048 {
                0
            } else {
                (i as u8).wrapping_mul(31) ^ seed
            }
        })
        .collect()
}

impl Fixture {
    fn write_wal(&self, name: &str, data: &[u8]) -> PathBuf {
        let path = self.wal.join(name);
        fs::write(&path, data).unwrap();
        path
    }

    fn push(&self, name: &str, data: &[u8], compression: Compression) -> Result<PushOutcome> {
        let src = self.write_wal(name, data);
        self.archive.push(&src, PushOptions { compression })
    }

    fn fetch(&self, name: &str) -> Result<Vec<u8>> {
        let dest = self.wal.join("RECOVERYXLOG");
        self.archive.fetch(name, &dest)?;
        Ok(fs::read(dest).unwrap())
    }
}

const SEG: &str = "000000010000000000000003";

#[test]
fn round_trip_plain_and_zstd() {
    for compression in [Compression::None, Compression::Zstd] {
        let f = fixture();
        let data = content(1 << 20, 7);
        let out = f.push(SEG, &data, compression).unwrap();
        let PushOutcome::Stored(h) = out else {
            panic!("expected Stored, got {out:?}")
        };
        assert_eq!(h.compression, compression);
        assert_eq!(h.original_len, data.len() as u64);
        let stored = fs::metadata(f.archive.dir().join(SEG)).unwrap();
        assert_eq!(stored.permissions().mode() & 0o777, 0o600);
        if compression == Compression::Zstd {
            assert!(
                stored.len() < data.len() as u64 / 2,
                "zstd did not compress"
            );
        }
        assert_eq!(f.fetch(SEG).unwrap(), data);
        assert_eq!(f.archive.verify(&WalName::parse(SEG).unwrap()).unwrap(), h);
    }
}

#[test]
fn identical_repush_succeeds_even_across_compression() {
    let f = fixture();
    let data = content(100_000, 1);
    f.push(SEG, &data, Compression::None).unwrap();
    assert!(matches!(
        f.push(SEG, &data, Compression::None).unwrap(),
        PushOutcome::AlreadyArchived(_)
    ));
    assert!(matches!(
        f.push(SEG, &data, Compression::Zstd).unwrap(),
        PushOutcome::AlreadyArchived(_)
    ));
    assert_eq!(f.fetch(SEG).unwrap(), data);
}

#[test]
fn different_content_is_refused_and_not_overwritten() {
    let f = fixture();
    let data = content(100_000, 1);
    f.push(SEG, &data, Compression::None).unwrap();
    let before = fs::read(f.archive.dir().join(SEG)).unwrap();
    let err = f
        .push(SEG, &content(100_000, 2), Compression::Zstd)
        .unwrap_err();
    assert!(matches!(err, ArchiveError::Conflict { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(SEG) && msg.contains("refusing to overwrite"),
        "{msg}"
    );
    assert_eq!(fs::read(f.archive.dir().join(SEG)).unwrap(), before);
    // Same length, one byte different: still refused.
    let mut other = data.clone();
    other[500] ^= 1;
    assert!(matches!(
        f.push(SEG, &other, Compression::None).unwrap_err(),
        ArchiveError::Conflict { .. }
    ));
    assert_eq!(f.fetch(SEG).unwrap(), data);
}

/// Damage the archived copy of SEG with `damage`, then expect Corrupt.
fn expect_corrupt(compression: Compression, damage: impl FnOnce(&mut File, u64)) {
    let f = fixture();
    f.push(SEG, &content(200_000, 3), compression).unwrap();
    let path = f.archive.dir().join(SEG);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let len = file.metadata().unwrap().len();
    damage(&mut file, len);
    drop(file);
    let dest = f.wal.join("RECOVERYXLOG");
    let err = f.archive.fetch(SEG, &dest).unwrap_err();
    assert!(err.is_corrupt(), "{compression}: {err}");
    assert!(err.to_string().contains(SEG), "{err}");
    assert!(!dest.exists(), "corrupt content reached the destination");
    assert!(!f.wal.join(".RECOVERYXLOG.pgha-tmp").exists());
    // A push of the right content must not paper over the damage either.
    let err = f.push(SEG, &content(200_000, 3), compression).unwrap_err();
    assert!(err.is_corrupt(), "{err}");
}

fn flip(file: &mut File, at: u64) {
    use std::io::Read;
    let mut b = [0u8; 1];
    file.seek(SeekFrom::Start(at)).unwrap();
    file.read_exact(&mut b).unwrap();
    file.seek(SeekFrom::Start(at)).unwrap();
    file.write_all(&[b[0] ^ 0x40]).unwrap();
}

#[test]
fn corruption_is_detected() {
    for c in [Compression::None, Compression::Zstd] {
        expect_corrupt(c, |f, len| flip(f, len - 10)); // payload bit flip
        expect_corrupt(c, |f, len| f.set_len(len - 1).unwrap()); // truncated
        expect_corrupt(c, |f, _| f.set_len(10).unwrap()); // header cut
        expect_corrupt(c, |f, _| flip(f, 0)); // magic
        expect_corrupt(c, |f, _| flip(f, 40)); // stored checksum
        expect_corrupt(c, |f, len| f.write_all_at_end(len)); // padded
    }
}

trait Pad {
    fn write_all_at_end(&mut self, len: u64);
}
impl Pad for File {
    fn write_all_at_end(&mut self, len: u64) {
        self.seek(SeekFrom::Start(len)).unwrap();
        self.write_all(b"junk").unwrap();
    }
}

#[test]
fn absent_is_not_found() {
    let f = fixture();
    let err = f.fetch("00000002.history").unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(f.fetch(SEG).unwrap_err().is_not_found());
    assert!(!f.wal.join("RECOVERYXLOG").exists());
}

#[test]
fn history_partial_backup_and_empty_files() {
    let f = fixture();
    let files: [(&str, Vec<u8>); 4] = [
        (
            "00000002.history",
            b"1\t0/3000000\tno recovery target specified\n".to_vec(),
        ),
        ("000000010000000000000005.partial", content(3_000, 9)),
        (
            "000000010000000000000002.00000028.backup",
            b"START WAL LOCATION: 0/2000028\n".to_vec(),
        ),
        ("000000020000000000000005", Vec::new()),
    ];
    for (name, data) in &files {
        f.push(name, data, Compression::Zstd).unwrap();
        assert_eq!(&f.fetch(name).unwrap(), data, "{name}");
    }
    let listed: Vec<String> = f
        .archive
        .list()
        .unwrap()
        .iter()
        .map(|e| e.name.to_string())
        .collect();
    assert_eq!(listed.len(), 4, "{listed:?}");
}

#[test]
fn bad_names_and_missing_dir() {
    let f = fixture();
    let src = f.write_wal("RECOVERYXLOG", b"x");
    assert!(matches!(
        f.archive.push(&src, PushOptions::default()).unwrap_err(),
        ArchiveError::InvalidName { .. }
    ));
    assert!(matches!(
        f.fetch("../etc/passwd").unwrap_err(),
        ArchiveError::InvalidName { .. }
    ));
    let missing = f.archive.dir().join("nope");
    let err = Archive::open(&missing).unwrap_err();
    assert!(matches!(err, ArchiveError::DirMissing { .. }), "{err}");
    assert!(err.to_string().contains("does not exist"));
    let err = f
        .archive
        .push(&f.wal.join(SEG), PushOptions::default())
        .unwrap_err();
    assert!(matches!(err, ArchiveError::Source { .. }), "{err}");
}

#[test]
fn fetch_replaces_an_existing_destination() {
    let f = fixture();
    f.push(SEG, b"new content", Compression::None).unwrap();
    fs::write(f.wal.join("RECOVERYXLOG"), b"old, longer content").unwrap();
    assert_eq!(f.fetch(SEG).unwrap(), b"new content");
}

fn set_old(path: &Path) {
    let old = SystemTime::now() - Duration::from_secs(3600);
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(old)
        .unwrap();
}

#[test]
fn stale_temps_are_swept_but_live_ones_are_not() {
    let f = fixture();
    let tmp_dir = f.archive.dir().join(TEMP_DIR);
    fs::create_dir(&tmp_dir).unwrap();
    let stale = tmp_dir.join(format!("{SEG}.1.0{}", fsutil::TEMP_SUFFIX));
    let fresh = tmp_dir.join(format!("{SEG}.2.0{}", fsutil::TEMP_SUFFIX));
    let locked = tmp_dir.join(format!("{SEG}.3.0{}", fsutil::TEMP_SUFFIX));
    fs::write(&stale, b"half").unwrap();
    fs::write(&fresh, b"half").unwrap();
    let _lock = fsutil::create_locked(&locked).unwrap();
    set_old(&stale);
    set_old(&locked);
    f.push(SEG, b"data", Compression::None).unwrap();
    assert!(!stale.exists(), "stale temp not swept");
    assert!(
        fresh.exists(),
        "a fresh temp (maybe a push in progress) was removed"
    );
    assert!(
        locked.exists(),
        "a locked temp (a push in progress) was removed"
    );
}

/// Archive: TL1 segments 1..=10 and 0A.partial; TL2 from 0A to 0F with its
/// history; a backup file at 3; a foreign file at 2 on TL3.
fn timeline_fixture() -> Fixture {
    let f = fixture();
    for seg in 1..=10u32 {
        f.push(
            &format!("0000000100000000{seg:08X}"),
            &[seg as u8; 100],
            Compression::None,
        )
        .unwrap();
    }
    f.push("00000001000000000000000A.partial", b"p", Compression::None)
        .unwrap();
    f.push("00000002.history", b"1\t0/A000000\tx\n", Compression::None)
        .unwrap();
    for seg in 10..=15u32 {
        f.push(
            &format!("0000000200000000{seg:08X}"),
            &[seg as u8; 100],
            Compression::Zstd,
        )
        .unwrap();
    }
    f.push(
        "000000010000000000000003.00000028.backup",
        b"b",
        Compression::None,
    )
    .unwrap();
    fs::write(
        f.archive.dir().join("000000030000000000000002"),
        b"not ours",
    )
    .unwrap();
    f
}

fn names(f: &Fixture) -> Vec<String> {
    f.archive
        .list()
        .unwrap()
        .iter()
        .map(|e| e.name.to_string())
        .collect()
}

#[test]
fn clean_keeps_newest_positions_and_all_history() {
    let f = timeline_fixture();
    let all = names(&f);
    let dry = f.archive.clean(&Retention::KeepNewest(3), true).unwrap();
    assert_eq!(names(&f), all, "dry run deleted something");
    let report = f.archive.clean(&Retention::KeepNewest(3), false).unwrap();
    assert_eq!(report.deleted, dry.deleted);
    assert_eq!(report.cutoff.as_deref(), Some("00000002000000000000000D"));
    assert_eq!(
        report
            .skipped
            .iter()
            .map(|s| s.0.as_str())
            .collect::<Vec<_>>(),
        ["000000030000000000000002"]
    );
    assert_eq!(
        names(&f),
        [
            "00000002.history",
            "000000030000000000000002",
            "00000002000000000000000D",
            "00000002000000000000000E",
            "00000002000000000000000F",
        ]
    );
}

#[test]
fn clean_across_a_timeline_switch_keeps_the_fork() {
    let f = timeline_fixture();
    // Positions 8..=F: TL1 8, 9, A.partial, A and TL2 A.. stay.
    let report = f.archive.clean(&Retention::KeepNewest(8), false).unwrap();
    assert_eq!(report.cutoff.as_deref(), Some("000000020000000000000008"));
    let left = names(&f);
    for keep in [
        "000000010000000000000008",
        "000000010000000000000009",
        "00000001000000000000000A",
        "00000001000000000000000A.partial",
        "00000002000000000000000A",
        "00000002.history",
    ] {
        assert!(left.iter().any(|n| n == keep), "{keep} deleted: {left:?}");
    }
    assert!(!left.iter().any(|n| n == "000000010000000000000007"));
    assert!(!left.iter().any(|n| n.ends_with(".backup")));
}

#[test]
fn clean_refuses_nonsense_and_keeps_all_when_n_is_large() {
    let f = timeline_fixture();
    let all = names(&f);
    let err = f
        .archive
        .clean(&Retention::KeepNewest(0), false)
        .unwrap_err();
    assert!(matches!(err, ArchiveError::InvalidRetention(_)), "{err}");
    let history = WalName::parse("00000002.history").unwrap();
    assert!(f.archive.clean(&Retention::Before(history), false).is_err());
    let report = f
        .archive
        .clean(&Retention::KeepNewest(1000), false)
        .unwrap();
    assert!(report.deleted.is_empty() && report.cutoff.is_none());
    assert_eq!(names(&f), all);
    let empty = fixture();
    let report = empty
        .archive
        .clean(&Retention::KeepNewest(1), false)
        .unwrap();
    assert!(report.deleted.is_empty());
}

#[test]
fn clean_ignores_an_abandoned_timeline_beyond_the_newest_head() {
    let f = timeline_fixture();
    // TL1 went on past the fork (an old primary that kept archiving).
    for seg in 16..=20u32 {
        f.push(
            &format!("0000000100000000{seg:08X}"),
            b"old",
            Compression::None,
        )
        .unwrap();
    }
    let report = f.archive.clean(&Retention::KeepNewest(2), false).unwrap();
    assert_eq!(report.cutoff.as_deref(), Some("00000002000000000000000E"));
    let left = names(&f);
    assert!(left.iter().any(|n| n == "00000002000000000000000E"));
    assert!(left.iter().any(|n| n == "000000010000000000000014"));
}

#[test]
fn clean_before_a_name_works_like_pg_archivecleanup() {
    let f = timeline_fixture();
    let name = WalName::parse("000000010000000000000003.00000028.backup").unwrap();
    let report = f.archive.clean(&Retention::Before(name), false).unwrap();
    let deleted: Vec<&str> = report.deleted.iter().map(|d| d.0.as_str()).collect();
    assert_eq!(
        deleted,
        ["000000010000000000000001", "000000010000000000000002"]
    );
    assert!(names(&f).iter().any(|n| n.ends_with(".backup")));
}

#[test]
fn files_created_as_root_take_the_archive_owner() {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return; // only root can create files for someone else
    }
    let f = fixture();
    let (uid, gid) = (54321, 54322);
    std::os::unix::fs::chown(f.archive.dir(), Some(uid), Some(gid)).unwrap();
    std::os::unix::fs::chown(&f.wal, Some(uid), Some(gid)).unwrap();
    f.push(SEG, b"data", Compression::Zstd).unwrap();
    for path in [f.archive.dir().join(SEG), f.archive.dir().join(TEMP_DIR)] {
        let m = fs::metadata(&path).unwrap();
        assert_eq!((m.uid(), m.gid()), (uid, gid), "{}", path.display());
    }
    f.fetch(SEG).unwrap();
    let m = fs::metadata(f.wal.join("RECOVERYXLOG")).unwrap();
    assert_eq!((m.uid(), m.gid()), (uid, gid));
}

/// A backup payload compressed on several threads reads back byte for byte
/// through the ordinary (single-threaded) reader, checksum checked.
#[test]
fn multithreaded_payload_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("payload");
    // Larger than one zstd job (several MB at level 3) so the workers split it.
    let data = content(24 << 20, 3);
    let h = crate::backups::write_payload_file(&path, &data[..]).unwrap();
    assert_eq!(h.original_len, data.len() as u64);
    let mut back = Vec::new();
    let read = crate::backups::read_payload_file(&path, &mut back).unwrap();
    assert_eq!(read, h);
    assert!(back == data, "the payload does not read back as written");
}
