//! A socket wrapper that sends a connection's pipelined responses in one write.
//!
//! hyper's HTTP/1 server writes and flushes each response on its own: one
//! `write` per call. Its `pipeline_flush` option batches them, but loses the
//! last response when it closes a connection with pipelined bytes still
//! unread (graceful shutdown, `connection: close`): its shutdown path skips
//! the deferred flush. This wrapper does the batching below hyper instead,
//! where the buffers are ours and shutdown always flushes.
//!
//! ```text
//! socket ──read (large)──▶ read-ahead ──slices──▶ hyper ──responses──▶ write buffer ──▶ socket
//!                              │ non-empty: more requests are waiting,      ▲
//!                              │ so flush() defers                          │
//!                              └─ empty and the socket has nothing: ────────┘ write everything
//! ```
//!
//! Invariants: bytes are delivered in order in both directions; a response is
//! held back only while more pipelined input is waiting to be served (hyper
//! will come back for it), and everything buffered is written before the
//! connection waits for input and before it shuts down.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read from the socket at once.
const READ_AHEAD_BYTES: usize = 64 * 1024;
/// Bytes handed to hyper per read: small enough that a read-ahead holding
/// more requests stays non-empty while hyper answers the first ones.
const SLICE_BYTES: usize = 4096;
/// Write out before buffering more than this.
const MAX_WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// See the module doc.
pub(crate) struct BatchedIo<S> {
    stream: S,
    read_ahead: Box<[u8]>,
    read_start: usize,
    read_end: usize,
    write_buf: Vec<u8>,
    written: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> BatchedIo<S> {
    pub(crate) fn new(stream: S) -> Self {
        BatchedIo {
            stream,
            read_ahead: vec![0; READ_AHEAD_BYTES].into_boxed_slice(),
            read_start: 0,
            read_end: 0,
            write_buf: Vec::new(),
            written: 0,
        }
    }

    fn has_input(&self) -> bool {
        self.read_start < self.read_end
    }

    /// Writes the whole buffer to the socket.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.write_buf.len() {
            let n =
                ready!(Pin::new(&mut self.stream).poll_write(cx, &self.write_buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.write_buf.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Reads from the socket into the empty read-ahead; `Ok(false)` at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        self.read_start = 0;
        self.read_end = 0;
        let mut buf = ReadBuf::new(&mut self.read_ahead);
        ready!(Pin::new(&mut self.stream).poll_read(cx, &mut buf))?;
        self.read_end = buf.filled().len();
        Poll::Ready(Ok(self.read_end > 0))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for BatchedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.has_input() {
            match this.poll_fill(cx) {
                Poll::Ready(Ok(true)) => {}
                Poll::Ready(Ok(false)) => return Poll::Ready(Ok(())),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // hyper is about to wait for input: send what it has answered.
                    if let Poll::Ready(Err(e)) = this.poll_write_out(cx) {
                        return Poll::Ready(Err(e));
                    }
                    return Poll::Pending;
                }
            }
        }
        let n = (this.read_end - this.read_start)
            .min(out.remaining())
            .min(SLICE_BYTES);
        out.put_slice(&this.read_ahead[this.read_start..this.read_start + n]);
        this.read_start += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for BatchedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_buf.len() >= MAX_WRITE_BUFFER_BYTES {
            ready!(this.poll_write_out(cx))?;
        }
        this.write_buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_buf.len() >= MAX_WRITE_BUFFER_BYTES {
            ready!(this.poll_write_out(cx))?;
        }
        let mut n = 0;
        for s in slices {
            this.write_buf.extend_from_slice(s);
            n += s.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.has_input() {
            // More pipelined requests are waiting; hyper reads them next and
            // the last read before waiting writes everything out.
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn pair() -> (BatchedIo<TcpStream>, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (BatchedIo::new(server), client)
    }

    #[tokio::test]
    async fn holds_writes_while_input_waits_and_sends_them_before_waiting() {
        let (mut io, mut peer) = pair().await;
        let sent = 3 * SLICE_BYTES;
        peer.write_all(&vec![7u8; sent]).await.unwrap();
        let mut got = vec![0u8; 2 * SLICE_BYTES];
        let n = io.read(&mut got).await.unwrap();
        assert_eq!(n, SLICE_BYTES, "input is handed over in slices");
        io.write_all(b"one").await.unwrap();
        io.flush().await.unwrap();
        assert_eq!(io.write_buf, b"one", "deferred while input waits");
        let mut total = n;
        while total < sent {
            total += io.read(&mut got).await.unwrap();
        }
        io.write_all(b"two").await.unwrap();
        io.flush().await.unwrap();
        let mut answer = [0u8; 6];
        peer.read_exact(&mut answer).await.unwrap();
        assert_eq!(
            &answer, b"onetwo",
            "flushed together, in order, once input ran out"
        );
    }

    #[tokio::test]
    async fn shutdown_writes_deferred_bytes() {
        let (mut io, mut peer) = pair().await;
        peer.write_all(&vec![1u8; 2 * SLICE_BYTES]).await.unwrap();
        let mut got = [0u8; 64];
        assert!(io.read(&mut got).await.unwrap() > 0);
        io.write_all(b"last response").await.unwrap();
        io.flush().await.unwrap();
        io.shutdown().await.unwrap();
        let mut answer = Vec::new();
        peer.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"last response");
    }
}
