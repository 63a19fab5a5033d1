//! `pgha-testkit forward`: a null TCP forwarder, the floor of any proxy on
//! this machine. Each accepted client gets one connection to a fixed
//! upstream and bytes are copied both ways, nothing else: no parsing, no
//! pooling, no routing. The proxy benchmark puts it in front of the primary
//! like PgBouncer, so its CPU per transaction and its added latency are what
//! two loopback hops and two copies cost here, whatever a proxy does on top.
//!
//! Two modes:
//! - `threads`: two blocking threads per connection (plain `read`/`write`,
//!   TCP_NODELAY), the cheapest user-space path (no readiness polling);
//! - `epoll`: N current-thread tokio runtimes, one thread each, accepted
//!   sockets handed round-robin, like pgha's session threads.
//!
//! Hazards: no limits at all (a thread or task per connection, no idle
//! timeout); it runs until it is killed (SIGTERM/SIGINT by PID).

use anyhow::Context;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};

/// How connections are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Two blocking threads per connection.
    Threads,
    /// Current-thread tokio runtimes (`--runtimes` of them), round-robin.
    Epoll,
}

#[derive(clap::Args, Debug)]
pub struct ForwardArgs {
    /// Address to listen on (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Where every connection goes, e.g. the primary: 127.0.0.1:5432.
    #[arg(long)]
    pub upstream: SocketAddr,
    #[arg(long, value_enum, default_value = "threads")]
    pub mode: Mode,
    /// Number of session threads in epoll mode.
    #[arg(long, default_value_t = 1)]
    pub runtimes: usize,
}

/// Bind, print `listening on ADDR` on stdout, serve until killed.
pub fn run(args: &ForwardArgs) -> anyhow::Result<()> {
    let listener =
        TcpListener::bind(args.listen).with_context(|| format!("listen on {}", args.listen))?;
    let addr = listener.local_addr().context("read the listen address")?;
    println!("listening on {addr}");
    std::io::stdout().flush().context("flush stdout")?;
    serve(listener, args.upstream, args.mode, args.runtimes)
}

/// Accept forever on `listener`, forwarding each client to `upstream`.
pub fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: Mode,
    runtimes: usize,
) -> anyhow::Result<()> {
    match mode {
        Mode::Threads => serve_threads(listener, upstream),
        Mode::Epoll => serve_epoll(listener, upstream, runtimes.max(1)),
    }
}

fn serve_threads(listener: TcpListener, upstream: SocketAddr) -> anyhow::Result<()> {
    loop {
        let (client, peer) = listener.accept().context("accept")?;
        std::thread::spawn(move || {
            if let Err(e) = forward_blocking(client, upstream) {
                eprintln!("forward {peer}: {e:#}");
            }
        });
    }
}

/// One connection, two threads: this one copies client -> upstream, a
/// second one upstream -> client.
fn forward_blocking(client: TcpStream, upstream: SocketAddr) -> anyhow::Result<()> {
    let server = TcpStream::connect(upstream).with_context(|| format!("connect {upstream}"))?;
    client.set_nodelay(true).context("TCP_NODELAY")?;
    server.set_nodelay(true).context("TCP_NODELAY")?;
    let (client2, server2) = (
        client.try_clone().context("clone socket")?,
        server.try_clone().context("clone socket")?,
    );
    let back = std::thread::spawn(move || copy(server2, client2));
    let up = copy(client, server);
    let down = back
        .join()
        .map_err(|_| anyhow::anyhow!("copy thread panicked"))?;
    up.and(down).context("copy")
}

/// Plain read/write until EOF, then half-close the writer so the other
/// side sees the end too.
fn copy(mut from: TcpStream, mut to: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    let result = loop {
        match from.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                if let Err(e) = to.write_all(&buf[..n]) {
                    break Err(e);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
    result
}

fn serve_epoll(listener: TcpListener, upstream: SocketAddr, n: usize) -> anyhow::Result<()> {
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .context("start a runtime")?;
        handles.push(rt.handle().clone());
        std::thread::Builder::new()
            .name(format!("forward-{i}"))
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .context("start a session thread")?;
    }
    for i in 0usize.. {
        let (client, peer) = listener.accept().context("accept")?;
        client.set_nonblocking(true).context("set non-blocking")?;
        handles[i % n].spawn(async move {
            if let Err(e) = forward_async(client, upstream).await {
                eprintln!("forward {peer}: {e:#}");
            }
        });
    }
    Ok(())
}

async fn forward_async(client: TcpStream, upstream: SocketAddr) -> anyhow::Result<()> {
    let mut client = tokio::net::TcpStream::from_std(client).context("register socket")?;
    let mut server = tokio::net::TcpStream::connect(upstream)
        .await
        .with_context(|| format!("connect {upstream}"))?;
    client.set_nodelay(true).context("TCP_NODELAY")?;
    server.set_nodelay(true).context("TCP_NODELAY")?;
    tokio::io::copy_bidirectional(&mut client, &mut server)
        .await
        .context("copy")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free port; it serves one connection per thread.
    fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let mut s = s.unwrap();
                std::thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    std::io::copy(&mut r, &mut s).unwrap();
                });
            }
        });
        addr
    }

    fn round_trip(mode: Mode) {
        let upstream = echo_server();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || serve(l, upstream, mode, 2));
        for _ in 0..3 {
            let mut c = TcpStream::connect(addr).unwrap();
            for size in [1usize, 5000, 100_000] {
                let msg: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
                let mut w = c.try_clone().unwrap();
                let sent = msg.clone();
                let writer = std::thread::spawn(move || w.write_all(&sent).unwrap());
                let mut got = vec![0u8; size];
                c.read_exact(&mut got).unwrap();
                writer.join().unwrap();
                assert_eq!(got, msg, "{mode:?}: {size} bytes came back changed");
            }
            // A half-close reaches the echo server, whose EOF comes back.
            c.shutdown(Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            c.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn threads_mode_forwards_both_ways() {
        round_trip(Mode::Threads);
    }

    #[test]
    fn epoll_mode_forwards_both_ways() {
        round_trip(Mode::Epoll);
    }
}
