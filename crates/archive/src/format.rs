//! The on-disk format of one archived file: a 64-byte header followed by the
//! payload (the WAL file as is, or one zstd stream of it).
//!
//! ```text
//! offset size  field
//!      0    7  magic "PGHAWAL"
//!      7    1  format version (1)
//!      8    1  compression: 0 = none, 1 = zstd
//!      9    7  reserved, zero
//!     16    8  original length in bytes (u64, little endian)
//!     24    8  payload length in bytes as stored (u64, little endian)
//!     32   32  SHA-256 of the original (uncompressed) content
//! ```
//!
//! Hazard: the checksum covers the *original* bytes, so it checks the whole
//! path (compression included) and lets a plain and a zstd copy of the same
//! WAL file compare equal. The header is written last (after the payload),
//! but that only matters inside a temp file: a file reaches its final name
//! only complete and fsynced.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// Size of the header in bytes.
pub const HEADER_LEN: usize = 64;
const MAGIC: &[u8; 7] = b"PGHAWAL";
const VERSION: u8 = 1;
/// zstd level: fast, and WAL compresses well even at low levels.
const ZSTD_LEVEL: i32 = 3;
const BUF: usize = 128 * 1024;

/// How the payload is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Zstd,
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
        })
    }
}

/// The decoded header of an archived file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub compression: Compression,
    pub original_len: u64,
    pub stored_len: u64,
    pub sha256: [u8; 32],
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..7].copy_from_slice(MAGIC);
        h[7] = VERSION;
        h[8] = match self.compression {
            Compression::None => 0,
            Compression::Zstd => 1,
        };
        h[16..24].copy_from_slice(&self.original_len.to_le_bytes());
        h[24..32].copy_from_slice(&self.stored_len.to_le_bytes());
        h[32..64].copy_from_slice(&self.sha256);
        h
    }

    /// Decode; the error is a human-readable reason.
    pub fn decode(h: &[u8; HEADER_LEN]) -> Result<Header, String> {
        if &h[0..7] != MAGIC {
            return Err("not a pgha archive file (bad magic)".into());
        }
        if h[7] != VERSION {
            return Err(format!("unknown format version {}", h[7]));
        }
        let compression = match h[8] {
            0 => Compression::None,
            1 => Compression::Zstd,
            other => return Err(format!("unknown compression code {other}")),
        };
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(&h[32..64]);
        Ok(Header {
            compression,
            original_len: u64_at(16),
            stored_len: u64_at(24),
            sha256,
        })
    }

    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// A writer that counts bytes and hashes them on the way through.
struct Tee<W> {
    inner: W,
    hasher: Option<Sha256>,
    count: u64,
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hash a whole reader: (length, sha256).
pub fn hash_reader(mut r: impl Read) -> io::Result<(u64, [u8; 32])> {
    let mut tee = Tee {
        inner: io::sink(),
        hasher: Some(Sha256::new()),
        count: 0,
    };
    io::copy(&mut r, &mut tee)?;
    Ok((tee.count, digest(tee.hasher)))
}

fn digest(h: Option<Sha256>) -> [u8; 32] {
    h.map(|h| h.finalize().into()).unwrap_or([0u8; 32])
}

/// Write `src` into `out` as header + payload and return the header.
/// `out` must be an empty file positioned at 0; the header is written last.
pub fn write_archived<W: Write + Seek>(
    src: impl Read,
    out: &mut W,
    compression: Compression,
) -> io::Result<Header> {
    write_archived_with(src, out, compression, 0)
}

/// [`write_archived`] with zstd compressing on `workers` threads besides the
/// caller's (0: on the caller's thread alone). The output is the same
/// format, one zstd frame that any decoder reads; worth it for large inputs
/// (a base backup), not for one WAL segment.
pub fn write_archived_with<W: Write + Seek>(
    src: impl Read,
    out: &mut W,
    compression: Compression,
    workers: u32,
) -> io::Result<Header> {
    out.write_all(&[0u8; HEADER_LEN])?;
    let mut src = HashingReader {
        inner: src,
        hasher: Sha256::new(),
        count: 0,
    };
    let stored = Tee {
        inner: io::BufWriter::with_capacity(BUF, &mut *out),
        hasher: None,
        count: 0,
    };
    let stored_len = match compression {
        Compression::None => {
            let mut stored = stored;
            io::copy(&mut src, &mut stored)?;
            stored.flush()?;
            stored.count
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(stored, ZSTD_LEVEL)?;
            enc.include_checksum(true)?;
            if workers > 0 {
                enc.multithread(workers)?;
            }
            io::copy(&mut src, &mut enc)?;
            let mut stored = enc.finish()?;
            stored.flush()?;
            stored.count
        }
    };
    let header = Header {
        compression,
        original_len: src.count,
        stored_len,
        sha256: src.hasher.finalize().into(),
    };
    out.seek(SeekFrom::Start(0))?;
    out.write_all(&header.encode())?;
    Ok(header)
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Why an archived file failed to read back.
#[derive(Debug)]
pub enum ReadError {
    /// The file itself is bad: the string says how.
    Corrupt(String),
    /// Reading the archived file failed.
    Io(io::Error),
    /// Writing the decoded content to its destination failed.
    Write(io::Error),
}

/// Read the header of `file` (positioned at 0) and check the file length.
pub fn read_header(file: &mut File) -> Result<Header, ReadError> {
    let actual = file.metadata().map_err(ReadError::Io)?.len();
    if actual < HEADER_LEN as u64 {
        return Err(ReadError::Corrupt(format!(
            "truncated: {actual} bytes, shorter than the {HEADER_LEN}-byte header"
        )));
    }
    let mut h = [0u8; HEADER_LEN];
    file.read_exact(&mut h).map_err(ReadError::Io)?;
    let header = Header::decode(&h).map_err(ReadError::Corrupt)?;
    let expected = HEADER_LEN as u64 + header.stored_len;
    if actual != expected {
        return Err(ReadError::Corrupt(format!(
            "length {actual} bytes, header says {expected} (truncated or padded)"
        )));
    }
    Ok(header)
}

/// Decode the payload of `file` (positioned after the header) into `out`,
/// checking length and checksum against `header`.
pub fn read_payload(file: impl Read, header: &Header, out: impl Write) -> Result<(), ReadError> {
    let payload = io::BufReader::with_capacity(BUF, file.take(header.stored_len));
    let mut tee = Tee {
        inner: out,
        hasher: Some(Sha256::new()),
        count: 0,
    };
    match header.compression {
        Compression::None => copy_classified(payload, &mut tee, false)?,
        Compression::Zstd => {
            let dec = zstd::stream::read::Decoder::with_buffer(payload).map_err(ReadError::Io)?;
            copy_classified(dec, &mut tee, true)?
        }
    }
    tee.flush().map_err(ReadError::Write)?;
    if tee.count != header.original_len {
        return Err(ReadError::Corrupt(format!(
            "content is {} bytes, header says {}",
            tee.count, header.original_len
        )));
    }
    let got = digest(tee.hasher);
    if got != header.sha256 {
        return Err(ReadError::Corrupt(format!(
            "sha256 mismatch: stored {}, content {}",
            header.sha256_hex(),
            hex::encode(got)
        )));
    }
    Ok(())
}

/// Check and decode a whole archived file held in memory (an object read
/// from an object store) into `out`.
pub fn decode_bytes(bytes: &[u8], out: impl Write) -> Result<Header, ReadError> {
    if bytes.len() < HEADER_LEN {
        return Err(ReadError::Corrupt(format!(
            "truncated: {} bytes, shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        )));
    }
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&bytes[..HEADER_LEN]);
    let header = Header::decode(&h).map_err(ReadError::Corrupt)?;
    let expected = HEADER_LEN as u64 + header.stored_len;
    if bytes.len() as u64 != expected {
        return Err(ReadError::Corrupt(format!(
            "length {} bytes, header says {expected} (truncated or padded)",
            bytes.len()
        )));
    }
    read_payload(&bytes[HEADER_LEN..], &header, out)?;
    Ok(header)
}

/// Encode `src` as an archived file in memory.
pub fn encode_to_vec(src: impl Read, compression: Compression) -> io::Result<(Header, Vec<u8>)> {
    let mut cursor = io::Cursor::new(Vec::new());
    let header = write_archived(src, &mut cursor, compression)?;
    Ok((header, cursor.into_inner()))
}

/// Copy; with a decoder, errors while *reading* mean the stream is corrupt.
fn copy_classified<R: Read, W: Write>(
    mut r: R,
    w: &mut Tee<W>,
    decoding: bool,
) -> Result<(), ReadError> {
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if decoding && e.raw_os_error().is_none() => {
                return Err(ReadError::Corrupt(format!(
                    "zstd stream does not decode: {e}"
                )))
            }
            Err(e) => return Err(ReadError::Io(e)),
        };
        w.write_all(&buf[..n]).map_err(ReadError::Write)?;
    }
}
