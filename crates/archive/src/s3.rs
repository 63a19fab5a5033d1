//! The archive on an S3-compatible object store (`s3://bucket/prefix`),
//! through the `object_store` crate: the same file format and names as the
//! directory archive, one object per file.
//!
//! - **Atomic:** an object appears whole or not at all (a single PUT, or a
//!   multipart upload completed in one request). Every upload carries an
//!   `x-amz-checksum-sha256` the store checks before accepting it.
//! - **Never overwritten:** a push first looks for the name; when present it
//!   compares the stored header (length, SHA-256 of the original) with the
//!   file and succeeds only when identical. New objects are written with
//!   `If-None-Match: *` (a store that ignores it leaves a window in which two
//!   members push the same name at the same instant: both carry the same WAL).
//! - **Verified:** every fetch decodes and checks length and SHA-256 before
//!   the file reaches its destination (temp file, fsync, rename).
//! - **Fast:** `push_many` uploads several ready WAL files at once (the
//!   archiver's later calls for them find identical copies and return at
//!   once); `fetch` also prefetches the next segments into
//!   `<dest dir>/.pgha-prefetch/`, where the next fetch finds them.
//!
//! Settings come from a small `key = value` file (`--s3-config`, in the
//! secrets directory): `endpoint`, `region`, `allow_http`,
//! `access_key_id`, `secret_access_key`; missing keys fall back to the
//! environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_REGION`, `AWS_ENDPOINT_URL`).
//!
//! Hazard: PostgreSQL runs `archive_command` with an almost empty
//! environment, so members must use the file, not the environment.

use crate::error::{ArchiveError, Result};
use crate::format::{self, Compression, Header, ReadError, HEADER_LEN};
use crate::inspect::Entry;
use crate::name::{WalKind, WalName};
use crate::push::PushOutcome;
use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, Checksum, S3ConditionalPut};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Name of the prefetch directory beside a fetch's destination.
pub const PREFETCH_DIR: &str = ".pgha-prefetch";
/// Parallel requests when reading headers for a listing.
const LIST_CONCURRENCY: usize = 16;
/// Multipart part size for backups.
const PART_SIZE: usize = 16 * 1024 * 1024;

/// How to reach the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub allow_http: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

impl S3Settings {
    /// `s3://bucket/prefix` plus the optional settings file.
    pub fn load(url: &str, config: Option<&Path>) -> Result<S3Settings> {
        let invalid = |why: String| ArchiveError::InvalidStore(why);
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| invalid(format!("{url:?} is not an s3://bucket/prefix URL")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid(format!("{url:?} names no bucket")));
        }
        let mut s = S3Settings {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            ..S3Settings::default()
        };
        if let Some(path) = config {
            let text = fs::read_to_string(path)
                .map_err(|e| invalid(format!("cannot read S3 settings {}: {e}", path.display())))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let Some((k, v)) = line.split_once('=') else {
                    return Err(invalid(format!(
                        "{} line {}: expected key = value",
                        path.display(),
                        n + 1
                    )));
                };
                let v = v.trim().trim_matches('"').to_string();
                match k.trim() {
                    "endpoint" => s.endpoint = Some(v),
                    "region" => s.region = Some(v),
                    "allow_http" => s.allow_http = v == "true",
                    "access_key_id" => s.access_key_id = Some(v),
                    "secret_access_key" => s.secret_access_key = Some(v),
                    other => {
                        return Err(invalid(format!(
                            "{} line {}: unknown key {other:?} (endpoint, region, allow_http, \
                             access_key_id, secret_access_key)",
                            path.display(),
                            n + 1
                        )))
                    }
                }
            }
        }
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        s.endpoint = s.endpoint.or_else(|| env("AWS_ENDPOINT_URL"));
        s.region = s.region.or_else(|| env("AWS_REGION"));
        s.access_key_id = s.access_key_id.or_else(|| env("AWS_ACCESS_KEY_ID"));
        s.secret_access_key = s.secret_access_key.or_else(|| env("AWS_SECRET_ACCESS_KEY"));
        if s.endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"))
        {
            s.allow_http = true;
        }
        Ok(s)
    }
}

/// An archive in a bucket.
#[derive(Clone)]
pub struct S3Archive {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    url: String,
}

impl std::fmt::Debug for S3Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Archive").field("url", &self.url).finish()
    }
}

fn store_err(what: String) -> impl FnOnce(object_store::Error) -> ArchiveError {
    move |e| ArchiveError::Store(format!("{what}: {e}"))
}

impl S3Archive {
    pub fn open(s: &S3Settings) -> Result<S3Archive> {
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&s.bucket)
            .with_region(s.region.clone().unwrap_or_else(|| "us-east-1".into()))
            .with_allow_http(s.allow_http)
            .with_checksum_algorithm(Checksum::SHA256)
            .with_conditional_put(S3ConditionalPut::ETagMatch);
        if let Some(e) = &s.endpoint {
            b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
        }
        if let Some(k) = &s.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = &s.secret_access_key {
            b = b.with_secret_access_key(k);
        }
        let store = b
            .build()
            .map_err(|e| ArchiveError::InvalidStore(format!("S3 settings: {e}")))?;
        Ok(S3Archive {
            store: Arc::new(store),
            prefix: s.prefix.clone(),
            url: format!("s3://{}/{}", s.bucket, s.prefix),
        })
    }

    /// The `s3://bucket/prefix` URL, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn key(&self, rel: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(rel)
        } else {
            ObjPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// Bytes of object `rel`, or `None` when absent.
    pub async fn get_bytes(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        match self.store.get(&self.key(rel)).await {
            Ok(r) => {
                let b = r
                    .bytes()
                    .await
                    .map_err(store_err(format!("reading {}/{rel}", self.url)))?;
                Ok(Some(b.to_vec()))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_err(format!("reading {}/{rel}", self.url))(e)),
        }
    }

    /// Store `bytes` as `rel`; with `create`, fail if it exists.
    pub async fn put_bytes(&self, rel: &str, bytes: Vec<u8>, create: bool) -> Result<bool> {
        let opts = PutOptions {
            mode: if create {
                PutMode::Create
            } else {
                PutMode::Overwrite
            },
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&self.key(rel), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(store_err(format!("writing {}/{rel}", self.url))(e)),
        }
    }

    pub async fn delete(&self, rel: &str) -> Result<()> {
        match self.store.delete(&self.key(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_err(format!("deleting {}/{rel}", self.url))(e)),
        }
    }

    /// Names directly under `rel` (objects) and sub-"directories".
    pub async fn list_dir(&self, rel: &str) -> Result<(Vec<(String, u64)>, Vec<String>)> {
        let prefix = if rel.is_empty() {
            if self.prefix.is_empty() {
                None
            } else {
                Some(ObjPath::from(self.prefix.as_str()))
            }
        } else {
            Some(self.key(rel))
        };
        let r = self
            .store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map_err(store_err(format!("listing {}/{rel}", self.url)))?;
        let objects = r
            .objects
            .into_iter()
            .filter_map(|m| Some((m.location.filename()?.to_string(), m.size)))
            .collect();
        let dirs = r
            .common_prefixes
            .into_iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        Ok((objects, dirs))
    }

    /// Every object under `rel/`, recursively (relative names).
    pub async fn delete_tree(&self, rel: &str) -> Result<()> {
        let metas: Vec<_> = self
            .store
            .list(Some(&self.key(rel)))
            .try_collect()
            .await
            .map_err(store_err(format!("listing {}/{rel}", self.url)))?;
        for m in metas {
            match self.store.delete(&m.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_err(format!("deleting {}", m.location))(e)),
            }
        }
        Ok(())
    }

    /// Upload a local file as `rel` (multipart with parallel parts when
    /// large), then check the stored size.
    pub async fn put_file(&self, rel: &str, local: &Path, concurrency: usize) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let key = self.key(rel);
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(ArchiveError::on("opening", local))?;
        let len = file
            .metadata()
            .await
            .map_err(ArchiveError::on("inspecting", local))?
            .len();
        let mut w = object_store::buffered::BufWriter::with_capacity(
            Arc::clone(&self.store),
            key.clone(),
            PART_SIZE,
        )
        .with_max_concurrency(concurrency.max(1));
        tokio::io::copy(&mut file, &mut w).await.map_err(|e| {
            ArchiveError::Store(format!(
                "uploading {} to {}/{rel}: {e}",
                local.display(),
                self.url
            ))
        })?;
        w.shutdown().await.map_err(|e| {
            ArchiveError::Store(format!("completing upload of {}/{rel}: {e}", self.url))
        })?;
        let meta = self
            .store
            .head(&key)
            .await
            .map_err(store_err(format!("checking {}/{rel}", self.url)))?;
        if meta.size != len {
            return Err(ArchiveError::Store(format!(
                "{}/{rel} holds {} bytes after the upload, the file {len}",
                self.url, meta.size
            )));
        }
        Ok(())
    }

    /// Download `rel` into a new local file (fsynced).
    pub async fn get_file(&self, rel: &str, local: &Path) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let r = self
            .store
            .get(&self.key(rel))
            .await
            .map_err(store_err(format!("reading {}/{rel}", self.url)))?;
        let mut out = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(crate::fsutil::FILE_MODE)
            .open(local)
            .await
            .map_err(ArchiveError::on("creating", local))?;
        let mut s = r.into_stream();
        while let Some(chunk) = s.next().await {
            let chunk = chunk.map_err(store_err(format!("reading {}/{rel}", self.url)))?;
            out.write_all(&chunk)
                .await
                .map_err(ArchiveError::on("writing", local))?;
        }
        out.sync_all()
            .await
            .map_err(ArchiveError::on("fsyncing", local))?;
        Ok(())
    }

    /// The header of archived WAL file `name`, or `None` when absent.
    async fn head_header(&self, name: &str) -> Result<Option<Header>> {
        match self
            .store
            .get_range(&self.key(name), 0..HEADER_LEN as u64)
            .await
        {
            Ok(b) => {
                let mut h = [0u8; HEADER_LEN];
                if b.len() != HEADER_LEN {
                    return Err(corrupt(&self.url, name, "shorter than its header".into()));
                }
                h.copy_from_slice(&b);
                Header::decode(&h)
                    .map(Some)
                    .map_err(|why| corrupt(&self.url, name, why))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_err(format!("reading {}/{name}", self.url))(e)),
        }
    }

    /// Archive one WAL file (see the module doc).
    pub async fn push(&self, src: &Path, compression: Compression) -> Result<PushOutcome> {
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| ArchiveError::InvalidName {
                name: src.display().to_string(),
            })
            .and_then(WalName::parse)?;
        let data = fs::read(src).map_err(|cause| ArchiveError::Source {
            path: src.to_path_buf(),
            cause,
        })?;
        let (len, sha) = format::hash_reader(&data[..]).map_err(|cause| ArchiveError::Source {
            path: src.to_path_buf(),
            cause,
        })?;
        if let Some(h) = self.head_header(name.as_str()).await? {
            return same_or_conflict(&self.url, &name, h, len, sha);
        }
        let (header, bytes) =
            tokio::task::spawn_blocking(move || format::encode_to_vec(&data[..], compression))
                .await
                .map_err(|e| ArchiveError::Store(format!("encoding task: {e}")))?
                .map_err(|cause| ArchiveError::Source {
                    path: src.to_path_buf(),
                    cause,
                })?;
        if self.put_bytes(name.as_str(), bytes, true).await? {
            return Ok(PushOutcome::Stored(header));
        }
        // Someone else stored it in the meantime.
        match self.head_header(name.as_str()).await? {
            Some(h) => same_or_conflict(&self.url, &name, h, len, sha),
            None => Err(ArchiveError::Store(format!(
                "{}/{name}: the store refused a new object but holds none",
                self.url
            ))),
        }
    }

    /// Push `first` and up to `parallel - 1` other WAL files PostgreSQL has
    /// marked ready (`archive_status/*.ready` beside it), all at once.
    /// Returns `first`'s outcome; the others are best effort.
    pub async fn push_many(
        &self,
        first: &Path,
        compression: Compression,
        parallel: usize,
    ) -> Result<PushOutcome> {
        let mut others: Vec<PathBuf> = Vec::new();
        if parallel > 1 {
            if let (Some(dir), Some(own)) = (first.parent(), first.file_name()) {
                let status = dir.join("archive_status");
                let mut ready: Vec<String> = fs::read_dir(&status)
                    .map(|it| {
                        it.filter_map(|e| e.ok()?.file_name().into_string().ok())
                            .filter_map(|n| n.strip_suffix(".ready").map(str::to_string))
                            .filter(|n| {
                                WalName::parse(n).is_ok_and(|w| w.kind() == WalKind::Segment)
                            })
                            .filter(|n| own.to_str() != Some(n.as_str()))
                            .collect()
                    })
                    .unwrap_or_default();
                ready.sort();
                others = ready
                    .into_iter()
                    .take(parallel - 1)
                    .map(|n| dir.join(n))
                    .collect();
            }
        }
        let side = stream::iter(others)
            .map(|p| async move {
                if let Err(e) = self.push(&p, compression).await {
                    tracing::debug!(
                        "early push of {} failed (PostgreSQL will retry it): {e}",
                        p.display()
                    );
                }
            })
            .buffer_unordered(parallel.max(1));
        let (main, ()) = tokio::join!(self.push(first, compression), side.collect::<()>());
        main
    }

    /// Restore WAL file `name` to `dest`, checked; prefetch the next
    /// `prefetch` segments of its timeline beside `dest`.
    pub async fn fetch(&self, name: &str, dest: &Path, prefetch: usize) -> Result<Header> {
        let wal = WalName::parse(name)?;
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let cache = dir.join(PREFETCH_DIR);
        let cached = cache.join(name);
        let bytes = match fs::read(&cached) {
            Ok(b) => {
                let _ = fs::remove_file(&cached);
                Some(b)
            }
            Err(_) => None,
        };
        let next = following(&wal, prefetch);
        let main = async {
            match bytes {
                Some(b) => Ok(Some(b)),
                None => self.get_bytes(name).await,
            }
        };
        let ahead = async {
            if next.is_empty() {
                return;
            }
            if fs::create_dir_all(&cache).is_err() {
                return;
            }
            if let (Ok(f), Some(parent)) = (fs::File::open(&cache), cache.parent()) {
                let _ = crate::fsutil::adopt_owner(&f, &cache, parent);
            }
            stream::iter(next)
                .map(|n| {
                    let cache = cache.clone();
                    async move {
                        let path = cache.join(&n);
                        if path.exists() {
                            return;
                        }
                        if let Ok(Some(b)) = self.get_bytes(&n).await {
                            let tmp = cache.join(format!(".{n}.tmp"));
                            if write_private(&tmp, &b).is_ok() {
                                let _ = fs::rename(&tmp, &path);
                            }
                        }
                    }
                })
                .buffer_unordered(prefetch.max(1))
                .collect::<()>()
                .await;
        };
        let (got, ()) = tokio::join!(main, ahead);
        let Some(bytes) = got? else {
            return Err(ArchiveError::NotFound {
                name: name.to_string(),
                dir: PathBuf::from(&self.url),
            });
        };
        place_checked(&self.url, name, &bytes, dest)
    }

    /// Every archived WAL file (top level), with its header.
    pub async fn list(&self) -> Result<Vec<Entry>> {
        let (objects, _) = self.list_dir("").await?;
        let named: Vec<(WalName, u64)> = objects
            .into_iter()
            .filter_map(|(n, size)| Some((WalName::parse(&n).ok()?, size)))
            .collect();
        let mut out: Vec<Entry> = stream::iter(named)
            .map(|(name, stored_size)| async move {
                let header = match self.head_header(name.as_str()).await {
                    Ok(Some(h)) if HEADER_LEN as u64 + h.stored_len == stored_size => Ok(h),
                    Ok(Some(h)) => Err(format!(
                        "length {stored_size} bytes, header says {} (truncated or padded)",
                        HEADER_LEN as u64 + h.stored_len
                    )),
                    Ok(None) => Err("vanished while listing".into()),
                    Err(e) => Err(e.to_string()),
                };
                Entry {
                    name,
                    stored_size,
                    header,
                }
            })
            .buffer_unordered(LIST_CONCURRENCY)
            .collect()
            .await;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Read `name` completely and check it.
    pub async fn verify(&self, name: &WalName) -> Result<Header> {
        let mut sink = Vec::new();
        self.read_into(name, &mut sink).await
    }

    /// Read `name` completely into `out`, checked.
    pub async fn read_into(&self, name: &WalName, out: &mut Vec<u8>) -> Result<Header> {
        let bytes = self
            .get_bytes(name.as_str())
            .await?
            .ok_or_else(|| ArchiveError::NotFound {
                name: name.to_string(),
                dir: PathBuf::from(&self.url),
            })?;
        format::decode_bytes(&bytes, out).map_err(|e| read_failed(&self.url, name.as_str(), e))
    }
}

/// The next `n` segment names after `wal` on its timeline (16 MB segments:
/// 256 per log; names past a smaller segment size simply do not exist).
fn following(wal: &WalName, n: usize) -> Vec<String> {
    let (WalKind::Segment, Some(pos)) = (wal.kind(), wal.pos()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let (mut log, mut seg) = (pos.log, pos.seg);
    for _ in 0..n {
        seg += 1;
        if seg > 0xFF {
            seg = 0;
            log += 1;
        }
        out.push(format!("{:08X}{log:08X}{seg:08X}", wal.timeline()));
    }
    out
}

fn same_or_conflict(
    url: &str,
    name: &WalName,
    h: Header,
    len: u64,
    sha: [u8; 32],
) -> Result<PushOutcome> {
    if h.original_len == len && h.sha256 == sha {
        Ok(PushOutcome::AlreadyArchived(h))
    } else {
        Err(ArchiveError::Conflict {
            name: name.to_string(),
            path: PathBuf::from(format!("{url}/{name}")),
            existing: h.sha256_hex(),
            new: hex::encode(sha),
        })
    }
}

fn corrupt(url: &str, name: &str, reason: String) -> ArchiveError {
    ArchiveError::Corrupt {
        path: PathBuf::from(format!("{url}/{name}")),
        reason,
    }
}

fn read_failed(url: &str, name: &str, e: ReadError) -> ArchiveError {
    match e {
        ReadError::Corrupt(reason) => corrupt(url, name, reason),
        ReadError::Io(e) | ReadError::Write(e) => {
            ArchiveError::Store(format!("reading {url}/{name}: {e}"))
        }
    }
}

/// A new file, mode 0600, owned like its directory (when run as root).
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(crate::fsutil::FILE_MODE)
        .open(path)
        .map_err(ArchiveError::on("creating", path))?;
    if let Some(dir) = path.parent() {
        crate::fsutil::adopt_owner(&f, path, dir)?;
    }
    f.write_all(bytes)
        .map_err(ArchiveError::on("writing", path))
}

/// Decode `bytes` into a temp file beside `dest`, check, fsync, rename.
fn place_checked(url: &str, name: &str, bytes: &[u8], dest: &Path) -> Result<Header> {
    let tmp = crate::fetch::temp_path_for(dest)?;
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(crate::fsutil::FILE_MODE)
        .open(&tmp)
        .map_err(ArchiveError::on(
            "creating temp file for restored WAL",
            &tmp,
        ))?;
    let mut guard = crate::push::TempGuard::new(tmp.clone());
    let dest_dir = tmp.parent().filter(|p| !p.as_os_str().is_empty());
    crate::fsutil::adopt_owner(&out, &tmp, dest_dir.unwrap_or(Path::new(".")))?;
    let mut writer = io::BufWriter::new(&out);
    let header = format::decode_bytes(bytes, &mut writer).map_err(|e| match e {
        ReadError::Write(e) => ArchiveError::io("writing restored WAL", &tmp, e),
        other => read_failed(url, name, other),
    })?;
    writer
        .flush()
        .map_err(ArchiveError::on("writing restored WAL", &tmp))?;
    drop(writer);
    out.sync_all()
        .map_err(ArchiveError::on("fsyncing restored WAL", &tmp))?;
    fs::rename(&tmp, dest).map_err(ArchiveError::on("renaming restored WAL into place", dest))?;
    guard.disarm();
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_url_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s3.conf");
        fs::write(
            &f,
            "# test\nendpoint = http://127.0.0.1:9000\nregion = eu-west-1\naccess_key_id = AK\nsecret_access_key = \"SK\"\n",
        )
        .unwrap();
        let s = S3Settings::load("s3://bucket/some/prefix/", Some(&f)).unwrap();
        assert_eq!(s.bucket, "bucket");
        assert_eq!(s.prefix, "some/prefix");
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(s.allow_http);
        assert_eq!(s.secret_access_key.as_deref(), Some("SK"));
        assert!(S3Settings::load("/srv/archive", None).is_err());
        assert!(S3Settings::load("s3:///x", None).is_err());
        fs::write(&f, "bogus = 1\n").unwrap();
        let err = S3Settings::load("s3://b", Some(&f))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown key \"bogus\""), "{err}");
    }

    #[test]
    fn prefetch_names_follow_the_timeline() {
        let w = WalName::parse("0000000200000001000000FE").unwrap();
        assert_eq!(
            following(&w, 3),
            [
                "0000000200000001000000FF",
                "000000020000000200000000",
                "000000020000000200000001"
            ]
        );
        assert!(following(&WalName::parse("00000002.history").unwrap(), 3).is_empty());
    }
}
