//! One pipelining HTTP/1.1 connection: a writer task and a reader task.
//!
//! ```text
//! callers ──Queued──▶ [queue] ──▶ writer: batch everything queued, one write()
//!                                    │ reply senders, in write order
//!                                    ▼
//!          server ──responses──▶ reader: parse, pop the oldest sender, answer it
//! ```
//!
//! Invariants: a reply sender enters the in-order `pending` queue before its
//! request's bytes are written, so a response always finds its caller, and
//! HTTP/1.1's in-order answers match requests FIFO. Every queued call gets
//! exactly one answer: its response, [`Failure::NotSent`] (the server
//! certainly did not run it: never written, or behind a `connection: close`),
//! or [`Failure::Lost`] (written, then the connection broke). Requests whose
//! caller has given up (deadline) are skipped before writing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::rustls::pki_types::ServerName;

use crate::wire::{self, Response};

/// Stop adding requests to a write batch past this many bytes.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Initial size of the read buffer.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Why a queued call got no response.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// The server certainly did not run the call; it can be sent again.
    NotSent,
    /// The connection could not be opened (so nothing was sent).
    Connect(Arc<std::io::Error>),
    /// The request was written, then the connection broke.
    Lost(String),
    /// The server's answer was not valid HTTP; the connection is closed.
    Protocol(String),
}

pub(crate) type Reply = oneshot::Sender<Result<Response, Failure>>;

/// A request on its way to the writer.
pub(crate) struct Queued {
    pub(crate) request: Bytes,
    pub(crate) reply: Reply,
}

/// The shared handle of one connection; the pool owns these.
pub(crate) struct Conn {
    queue: mpsc::UnboundedSender<Queued>,
    in_flight: AtomicUsize,
    reserved: AtomicBool,
    closed: Arc<AtomicBool>,
    /// Why it ended, set before `closed`.
    ended: Arc<Ended>,
    /// When the last call on it ended (or it opened).
    idle_since: std::sync::Mutex<std::time::Instant>,
}

/// Why a connection's task ended: read by a caller whose request it
/// refused, so that a refused connect is reported as one.
#[derive(Default)]
struct Ended {
    why: std::sync::Mutex<Option<Failure>>,
}

/// Settings a connection needs.
#[derive(Clone)]
pub(crate) struct ConnParams {
    pub(crate) addr: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_response_bytes: usize,
    /// TLS, and the name the server's certificate must carry.
    pub(crate) tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl Conn {
    /// Creates the connection handle and spawns its tasks; connecting happens
    /// in the background and queued requests wait for it.
    pub(crate) fn open(params: ConnParams) -> Arc<Conn> {
        let (queue, rx) = mpsc::unbounded_channel();
        let closed = Arc::new(AtomicBool::new(false));
        let ended = Arc::new(Ended::default());
        tokio::spawn(run(params, rx, Arc::clone(&closed), Arc::clone(&ended)));
        Arc::new(Conn {
            queue,
            in_flight: AtomicUsize::new(0),
            reserved: AtomicBool::new(false),
            closed,
            ended,
            idle_since: std::sync::Mutex::new(std::time::Instant::now()),
        })
    }

    /// Queues a request; gives it back if the connection is gone.
    pub(crate) fn send(&self, queued: Queued) -> Result<(), Queued> {
        self.queue.send(queued).map_err(|e| e.0)
    }

    /// Why the connection ended, once it has.
    pub(crate) fn failure(&self) -> Option<Failure> {
        self.ended
            .why
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn is_reserved(&self) -> bool {
        self.reserved.load(Ordering::Relaxed)
    }

    /// Counts a call against this connection (and reserves it for a long-poll).
    pub(crate) fn acquire(&self, reserve: bool) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if reserve {
            self.reserved.store(true, Ordering::Relaxed);
        }
    }

    /// Whether no call has used it for longer than `idle`: servers close
    /// such connections (their idle timeout), and a call sent just as one
    /// closes would be lost, so the pool drops them first.
    pub(crate) fn idle_longer_than(&self, idle: Duration) -> bool {
        self.in_flight() == 0
            && self
                .idle_since
                .lock()
                .map(|t| t.elapsed() > idle)
                .unwrap_or(false)
    }

    /// Undoes [`Conn::acquire`].
    pub(crate) fn release(&self, reserved: bool) {
        if let Ok(mut t) = self.idle_since.lock() {
            *t = std::time::Instant::now();
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if reserved {
            self.reserved.store(false, Ordering::Relaxed);
        }
    }
}

/// Connects, then runs the writer here and the reader on its own task.
async fn run(
    params: ConnParams,
    mut queue: mpsc::UnboundedReceiver<Queued>,
    closed: Arc<AtomicBool>,
    ended: Arc<Ended>,
) {
    let stream = match tokio::time::timeout(
        params.connect_timeout,
        TcpStream::connect(&params.addr),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            return fail_queue(&mut queue, &closed, &ended, Failure::Connect(Arc::new(e)));
        }
        Err(_) => {
            let e = std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connect timed out after {:?}", params.connect_timeout),
            );
            return fail_queue(&mut queue, &closed, &ended, Failure::Connect(Arc::new(e)));
        }
    };
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(addr = %params.addr, error = %e, "set_nodelay failed");
    }
    match &params.tls {
        None => {
            let (read, write) = stream.into_split();
            serve(read, write, &params, &mut queue).await;
        }
        Some((connector, name)) => {
            let handshake = connector.connect(name.clone(), stream);
            let stream = match tokio::time::timeout(params.connect_timeout, handshake).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    let e = std::io::Error::new(e.kind(), format!("TLS handshake failed: {e}"));
                    return fail_queue(&mut queue, &closed, &ended, Failure::Connect(Arc::new(e)));
                }
                Err(_) => {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("TLS handshake timed out after {:?}", params.connect_timeout),
                    );
                    return fail_queue(&mut queue, &closed, &ended, Failure::Connect(Arc::new(e)));
                }
            };
            let (read, write) = tokio::io::split(stream);
            serve(read, write, &params, &mut queue).await;
        }
    }
    fail_queue(&mut queue, &closed, &ended, Failure::NotSent);
}

/// Runs the writer here and the reader on its own task until either ends.
async fn serve<R, W>(
    read: R,
    write: W,
    params: &ConnParams,
    queue: &mut mpsc::UnboundedReceiver<Queued>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let (pending_tx, pending_rx) = mpsc::unbounded_channel();
    let (reader_done_tx, reader_done) = oneshot::channel::<()>();
    let max_response_bytes = params.max_response_bytes;
    tokio::spawn(async move {
        read_responses(read, pending_rx, max_response_bytes).await;
        drop(reader_done_tx);
    });
    write_requests(write, queue, pending_tx, reader_done).await;
}

/// Records why the connection ended, marks it closed and answers
/// everything still queued.
fn fail_queue(
    queue: &mut mpsc::UnboundedReceiver<Queued>,
    closed: &AtomicBool,
    ended: &Ended,
    failure: Failure,
) {
    *ended
        .why
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(failure.clone());
    closed.store(true, Ordering::Release);
    queue.close();
    while let Ok(q) = queue.try_recv() {
        let _ = q.reply.send(Err(failure.clone()));
    }
}

/// Writes queued requests in batches until the queue closes, a write fails,
/// or the reader ends.
async fn write_requests(
    mut write: impl AsyncWrite + Unpin,
    queue: &mut mpsc::UnboundedReceiver<Queued>,
    pending: mpsc::UnboundedSender<Reply>,
    mut reader_done: oneshot::Receiver<()>,
) {
    let mut batch = BytesMut::with_capacity(READ_BUFFER_BYTES);
    loop {
        let first = tokio::select! {
            q = queue.recv() => match q {
                Some(q) => q,
                None => {
                    // Every handle is gone (the client was dropped or let
                    // the connection go): say goodbye, so that the server
                    // frees its slot now and the reader sees the end.
                    let _ = write.shutdown().await;
                    return;
                }
            },
            _ = &mut reader_done => return,
        };
        let mut next = Some(first);
        while let Some(q) = next.take() {
            if !q.reply.is_closed() {
                batch.extend_from_slice(&q.request);
                if let Err(unsent) = pending.send(q.reply) {
                    // The reader is gone: nothing of this request will be read.
                    let _ = unsent.0.send(Err(Failure::NotSent));
                    return;
                }
            }
            if batch.len() < MAX_BATCH_BYTES {
                next = queue.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        if let Err(e) = write_out(&mut write, &batch).await {
            tracing::debug!(error = %e, "write failed; closing the connection");
            return;
        }
        batch.clear();
    }
}

/// Whether a read failed because the peer sent a fatal TLS alert.
fn is_tls_alert(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<tokio_rustls::rustls::Error>())
        .is_some_and(|e| matches!(e, tokio_rustls::rustls::Error::AlertReceived(_)))
}

/// Writes a batch and flushes it (a TLS stream holds records until flushed).
async fn write_out(write: &mut (impl AsyncWrite + Unpin), batch: &[u8]) -> std::io::Result<()> {
    write.write_all(batch).await?;
    write.flush().await
}

/// Reads responses and answers callers in order until the stream ends.
async fn read_responses(
    mut read: impl AsyncRead + Unpin,
    mut pending: mpsc::UnboundedReceiver<Reply>,
    max_response_bytes: usize,
) {
    let mut buf = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let failure = loop {
        match wire::parse_response(&mut buf, max_response_bytes) {
            Ok(Some(response)) => {
                let Ok(reply) = pending.try_recv() else {
                    break Failure::Protocol("a response arrived for no request".into());
                };
                let close = response.close;
                let _ = reply.send(Ok(response));
                if close {
                    // RFC 9112 §9.6: requests behind a `close` were not processed.
                    break Failure::NotSent;
                }
                continue;
            }
            Ok(None) => {}
            Err(reason) => break Failure::Protocol(reason),
        }
        match read.read_buf(&mut buf).await {
            Ok(0) => break Failure::Lost("the server closed the connection".into()),
            Ok(_) => {}
            Err(e) if is_tls_alert(&e) => {
                // The server refused the TLS session (TLS 1.3 checks the
                // client certificate after the client's handshake ended):
                // it served nothing on it.
                let e = std::io::Error::new(
                    e.kind(),
                    format!("the server refused the TLS session: {e}"),
                );
                break Failure::Connect(Arc::new(e));
            }
            Err(e) => break Failure::Lost(e.to_string()),
        }
    };
    pending.close();
    while let Ok(reply) = pending.try_recv() {
        let _ = reply.send(Err(failure.clone()));
    }
}
