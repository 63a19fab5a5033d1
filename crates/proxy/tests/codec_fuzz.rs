//! Randomized decoding: arbitrary bytes and mutated valid messages, fed to
//! every decoder, must keep the properties of `codec_fuzz/props.rs` (no
//! panic, exact re-encoding, bounded waiting). Seeded: the seed is printed,
//! and `PGHA_FUZZ_SEED=<n>` replays it. The fuzz target's seed corpus
//! (`crates/proxy/fuzz/seeds/decode`, plus a local `corpus/decode` if a
//! fuzzing run left one) runs through the same checks.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

#[path = "codec_fuzz/props.rs"]
mod props;

use bytes::BytesMut;
use pgha_proxy::codec::backend::Authentication;
use pgha_proxy::codec::{BackendMessage, FrontendMessage, StartupMessage};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

const CASES: usize = 20_000;

fn seed() -> u64 {
    match std::env::var("PGHA_FUZZ_SEED") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|e| panic!("PGHA_FUZZ_SEED={s:?} is not a u64: {e}")),
        Err(_) => rand::thread_rng().gen(),
    }
}

fn frontend_samples() -> Vec<FrontendMessage> {
    vec![
        FrontendMessage::Query {
            sql: "SELECT 1".into(),
        },
        FrontendMessage::Parse {
            name: "s".into(),
            sql: "SELECT $1".into(),
            param_types: vec![0u8, 1, 0, 0, 0, 23].into(),
        },
        FrontendMessage::Bind {
            portal: "".into(),
            statement: "s".into(),
            rest: vec![0u8, 0, 0, 1, 0, 0, 0, 1, b'1', 0, 0].into(),
        },
        FrontendMessage::Describe {
            kind: b'S',
            name: "s".into(),
        },
        FrontendMessage::Execute {
            portal: "".into(),
            max_rows: 0,
        },
        FrontendMessage::Close {
            kind: b'P',
            name: "".into(),
        },
        FrontendMessage::Sync,
        FrontendMessage::CopyFail {
            message: "no".into(),
        },
        FrontendMessage::Password("secret\0".into()),
    ]
}

fn backend_samples() -> Vec<BackendMessage> {
    vec![
        BackendMessage::Authentication(Authentication::Sasl {
            mechanisms: vec!["SCRAM-SHA-256".into()],
        }),
        BackendMessage::Authentication(Authentication::Md5Password { salt: [1, 2, 3, 4] }),
        BackendMessage::ParameterStatus {
            name: "server_version".into(),
            value: "15.0".into(),
        },
        BackendMessage::BackendKeyData { pid: 42, key: -7 },
        BackendMessage::ReadyForQuery { status: b'I' },
        BackendMessage::ErrorResponse("SERROR\0C08006\0Mgone\0\0".into()),
        BackendMessage::NegotiateProtocolVersion {
            minor: 0,
            options: vec!["_pq_.x".into()],
        },
    ]
}

fn startup_samples() -> Vec<StartupMessage> {
    vec![
        StartupMessage::SslRequest,
        StartupMessage::CancelRequest { pid: 1, key: 2 },
        StartupMessage::Startup {
            version: 3 << 16,
            params: vec![
                ("user".into(), "alice".into()),
                ("database".into(), "postgres".into()),
            ],
        },
    ]
}

/// The wire form of every sample message, each on its own.
fn valid_samples() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut push = |enc: &dyn Fn(&mut BytesMut)| {
        let mut b = BytesMut::new();
        enc(&mut b);
        out.push(b.to_vec());
    };
    for m in frontend_samples() {
        push(&|b| m.encode(b));
    }
    for m in backend_samples() {
        push(&|b| m.encode(b));
    }
    for m in startup_samples() {
        push(&|b| m.encode(b));
    }
    out
}

/// Random bytes or a valid message, mutated: bytes flipped, truncated, a
/// random length prefix spliced in, or a second message appended.
fn random_case(rng: &mut impl Rng, samples: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = if rng.gen_bool(0.3) {
        let mut v = vec![0u8; rng.gen_range(0..64)];
        rng.fill_bytes(&mut v);
        v
    } else {
        samples[rng.gen_range(0..samples.len())].clone()
    };
    for _ in 0..rng.gen_range(0..4) {
        if bytes.is_empty() {
            break;
        }
        let i = rng.gen_range(0..bytes.len());
        match rng.gen_range(0..4) {
            0 => bytes[i] = rng.gen(),
            1 => bytes.truncate(i),
            2 => {
                let len: u32 = rng.gen();
                bytes.splice(i..i, len.to_be_bytes());
            }
            _ => bytes.extend_from_slice(&samples[rng.gen_range(0..samples.len())]),
        }
    }
    bytes
}

/// The checks themselves catch what they must: a valid stream decodes and
/// re-encodes (so the random run is not vacuous), and an oversized length
/// prefix is refused rather than waited for.
#[test]
fn the_checks_decode_valid_messages() {
    for m in frontend_samples() {
        let mut b = BytesMut::new();
        m.encode(&mut b);
        let mut copy = b.clone();
        assert_eq!(
            FrontendMessage::decode(&mut copy, props::MAX).expect("valid"),
            Some(m)
        );
        props::check_all(&b).expect("valid message");
    }
    let huge = [b'Q', 0x7f, 0xff, 0xff, 0xff];
    props::check_all(&huge).expect("refused, not waited for");
}

#[test]
fn random_bytes_keep_the_decoder_properties() {
    let seed = seed();
    eprintln!(
        "codec_fuzz seed {seed} (replay: PGHA_FUZZ_SEED={seed} cargo test -p pgha-proxy \
         --test codec_fuzz)"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let samples = valid_samples();
    for case in 0..CASES {
        let bytes = random_case(&mut rng, &samples);
        if let Err(e) = props::check_all(&bytes) {
            panic!(
                "seed {seed} case {case}: {e}\ninput {bytes:02x?}\nreplay: PGHA_FUZZ_SEED={seed} \
                 cargo test -p pgha-proxy --test codec_fuzz"
            );
        }
    }
}

fn corpus_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Every input of the fuzz target's committed seed corpus (and of a local
/// corpus, if a fuzzing run left one), as a regular test.
#[test]
fn fuzz_corpus_keeps_the_decoder_properties() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let seeds = corpus_files(&fuzz.join("seeds/decode"));
    assert!(
        seeds.len() >= 10,
        "the committed seed corpus is missing: {} files in {}",
        seeds.len(),
        fuzz.join("seeds/decode").display()
    );
    let local = corpus_files(&fuzz.join("corpus/decode"));
    for path in seeds.iter().chain(&local) {
        let bytes = std::fs::read(path).expect("read corpus file");
        if let Err(e) = props::check_all(&bytes) {
            panic!("{}: {e}", path.display());
        }
    }
}

/// Found by the random run (seed 4, case 14565): a NegotiateProtocolVersion
/// with a negative option count was accepted and re-encoded with count 0,
/// so the proxy would have forwarded a different message. Refused now.
#[test]
fn negotiate_protocol_version_with_a_negative_count() {
    let mut body = BytesMut::new();
    body.extend_from_slice(&[b'v', 0, 0, 0, 12]);
    body.extend_from_slice(&0i32.to_be_bytes());
    body.extend_from_slice(&(-1i32).to_be_bytes());
    let decoded = BackendMessage::decode(&mut body, props::MAX);
    assert!(decoded.is_err(), "accepted: {decoded:?}");
}
