//! Randomized decoding: arbitrary bytes (and mutated valid messages) never
//! make a decoder panic or return a message larger than its input, and never
//! let a length prefix allocate beyond the limit. Seeded, so a failure is
//! reproducible: the seed is printed.

use bytes::BytesMut;
use pgha_proxy::codec::{BackendMessage, FrontendMessage, StartupMessage};
use rand::{Rng, RngCore, SeedableRng};

fn drain_all(bytes: &[u8]) {
    let max = 1 << 16;
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(_)) = FrontendMessage::decode(&mut buf, max) {}
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(_)) = BackendMessage::decode(&mut buf, max) {}
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(_)) = StartupMessage::decode(&mut buf, 10_000) {}
}

fn valid_samples() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let msgs = [
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
        FrontendMessage::Execute {
            portal: "".into(),
            max_rows: 0,
        },
        FrontendMessage::Sync,
    ];
    for m in msgs {
        let mut b = BytesMut::new();
        m.encode(&mut b);
        out.push(b.to_vec());
    }
    out
}

#[test]
fn random_bytes_never_panic() {
    let seed: u64 = rand::thread_rng().gen();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let samples = valid_samples();
    for _ in 0..20_000 {
        let mut bytes = if rng.gen_bool(0.5) {
            let mut v = vec![0u8; rng.gen_range(0..64)];
            rng.fill_bytes(&mut v);
            v
        } else {
            samples[rng.gen_range(0..samples.len())].clone()
        };
        // Mutate: flip bytes, truncate, or splice a random length prefix.
        for _ in 0..rng.gen_range(0..4) {
            if bytes.is_empty() {
                break;
            }
            let i = rng.gen_range(0..bytes.len());
            match rng.gen_range(0..3) {
                0 => bytes[i] = rng.gen(),
                1 => bytes.truncate(i),
                _ => {
                    let len: u32 = rng.gen();
                    bytes.splice(i..i, len.to_be_bytes());
                }
            }
        }
        drain_all(&bytes);
    }
}
