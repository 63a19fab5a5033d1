//! Loopback ports for tests that run in parallel.
//!
//! A port is taken from the kernel (bind to port 0) and then remembered in a
//! process-wide set, so two tests of the same binary never get the same one.
//! Across test binaries a race remains possible in theory; the ephemeral range
//! is large and the kernel hands ports out round-robin, so it is rare.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port on 127.0.0.1 that is free now and not handed out before by this process.
pub fn free_port() -> u16 {
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        if taken.insert(port) {
            return port;
        }
    }
}
