//! Reading sockets without a per-connection read buffer: a read lands in a
//! per-thread scratch buffer and only the bytes that arrived are appended to
//! the connection's own `BytesMut`. A buffer that has to grow gets at least
//! [`MIN_RESERVE`] bytes; an active session keeps that memory between
//! transactions (no allocation per read), and a session frees its empty
//! buffers after being idle for a while (the memory target is many thousands
//! of idle clients), see `Session::idle_tick`.
//!
//! Hazard: the scratch buffer is borrowed only inside one `poll_read` (no
//! `.await` while it is borrowed); a re-entrant borrow falls back to a
//! temporary buffer instead of panicking.

use bytes::BytesMut;
use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// Largest single read (bytes).
const SCRATCH: usize = 64 * 1024;

/// Smallest growth of a connection buffer (bytes): small messages do not
/// make a buffer grow in steps of a few bytes.
const MIN_RESERVE: usize = 2048;

thread_local! {
    static BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH].into_boxed_slice());
}

/// Reads whatever `rd` has (at least one byte, or 0 at end of stream) and
/// appends it to `buf`.
pub async fn read_some<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut BytesMut) -> io::Result<usize> {
    poll_fn(|cx| poll_read_some(Pin::new(&mut *rd), cx, buf)).await
}

fn poll_read_some<R: AsyncRead>(
    rd: Pin<&mut R>,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    BUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => read_via(rd, cx, &mut scratch[..], buf),
        Err(_) => read_via(rd, cx, &mut vec![0u8; 8192], buf),
    })
}

fn read_via<R: AsyncRead>(
    rd: Pin<&mut R>,
    cx: &mut Context<'_>,
    scratch: &mut [u8],
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    let mut rb = ReadBuf::new(scratch);
    ready!(rd.poll_read(cx, &mut rb))?;
    let n = rb.filled().len();
    if buf.capacity() - buf.len() < n {
        buf.reserve(n.max(MIN_RESERVE));
    }
    buf.extend_from_slice(rb.filled());
    Poll::Ready(Ok(rb.filled().len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn appends_only_what_arrived() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        a.write_all(b"hello").await.unwrap();
        let mut buf = BytesMut::new();
        assert_eq!(read_some(&mut b, &mut buf).await.unwrap(), 5);
        assert_eq!(&buf[..], b"hello");
        let big = vec![7u8; 100_000];
        a.write_all(&big).await.unwrap();
        drop(a);
        while read_some(&mut b, &mut buf).await.unwrap() > 0 {}
        assert_eq!(buf.len(), 100_005);
    }
}
