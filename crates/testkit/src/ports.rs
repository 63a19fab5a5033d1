//! Loopback ports for tests that run in parallel.
//!
//! Ports come from below the kernel's ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`, 32768-60999 by default), chosen
//! at random and checked free by a bind, then remembered in a process-wide
//! set, so two tests of the same binary never get the same one. Not from the
//! ephemeral range itself (what binding port 0 gives): there the kernel hands
//! the port to any outgoing connection as its local port once the test's
//! server is down, and a server restarted by the test (etcd after an outage,
//! a member after a crash) then finds its port taken by a stranger's client
//! socket. Below that range nobody is given a port unasked.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port on 127.0.0.1 that is free now, outside the ephemeral range,
/// and not handed out before by this process.
pub fn free_port() -> u16 {
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    let (lo, hi) = (LOWEST, ephemeral_start().max(LOWEST + 1000));
    let mut rng = seed();
    loop {
        // xorshift64: enough to spread the tests of concurrent processes.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let port = lo + (rng % u64::from(hi - lo)) as u16;
        if taken.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        taken.insert(port);
        return port;
    }
}

/// The lowest port handed out (above the usual well-known and registered
/// services of a test machine).
const LOWEST: u16 = 20000;

/// The first port of the kernel's ephemeral range (32768 when unknown).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos ^ (u64::from(std::process::id()) << 32)) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_free_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len());
        let start = ephemeral_start();
        for p in ports {
            assert!((LOWEST..start.max(LOWEST + 1000)).contains(&p), "{p}");
        }
    }
}
