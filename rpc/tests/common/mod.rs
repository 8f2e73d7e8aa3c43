//! A test service and helpers shared by the rpc integration tests.
#![allow(dead_code, missing_docs)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, oneshot};

pub const TOKEN: &str = "test-token-1";
/// How long any test waits for a condition before failing.
pub const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pod {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub containers: Vec<Container>,
    pub phase: Phase,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    pub image: String,
    pub ports: Vec<(u16, u16)>,
    pub env: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Phase {
    Pending,
    Running { since_ms: u64 },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Empty {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailRequest {
    pub name: String,
}

/// An application error type of the service, converted into the envelope.
#[derive(Debug)]
pub enum DemoError {
    NoSuchPod(String),
}

impl From<DemoError> for rpc::Status {
    fn from(e: DemoError) -> Self {
        match e {
            DemoError::NoSuchPod(name) => rpc::Status::not_found(format!("pod {name} not found")),
        }
    }
}

#[rpc::service]
pub trait Demo {
    /// Returns the pod unchanged.
    async fn echo(&self, pod: Pod) -> Result<Pod, rpc::Status>;
    /// Always fails with NotFound.
    async fn fail(&self, req: FailRequest) -> Result<Empty, DemoError>;
    /// Waits until the test releases it.
    async fn hold(&self, req: Empty) -> Result<Empty, rpc::Status>;
    /// Panics.
    async fn explode(&self, req: Empty) -> Result<Empty, rpc::Status>;
}

/// The same service as a newer client sees it: one method more.
#[rpc::service]
pub trait Demo2 {
    /// Exists on the client side only.
    async fn brand_new(&self, req: Empty) -> Result<Empty, rpc::Status>;
}

/// Counts what handlers did, and lets tests wait for counts.
#[derive(Default)]
pub struct Counters {
    pub calls: AtomicUsize,
    pub held: AtomicUsize,
    pub cancelled: AtomicUsize,
    pub completed: AtomicUsize,
    changed: Notify,
}

impl Counters {
    fn bump(&self, counter: &AtomicUsize) {
        counter.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub fn get(&self, counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }

    /// Waits until `check` holds, failing the test after [`DEADLINE`].
    pub async fn wait_for(&self, what: &str, check: impl Fn(&Counters) -> bool) {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                if check(self) {
                    return;
                }
                changed.await;
            }
        };
        if tokio::time::timeout(DEADLINE, wait).await.is_err() {
            panic!("timed out waiting for {what}");
        }
    }
}

pub struct DemoImpl {
    pub counters: Arc<Counters>,
    pub release: Arc<Semaphore>,
}

impl DemoImpl {
    pub fn new() -> Self {
        DemoImpl {
            counters: Arc::default(),
            release: Arc::new(Semaphore::new(0)),
        }
    }
}

/// Counts a cancellation if dropped before `done` is set.
struct CancelGuard<'a> {
    counters: &'a Counters,
    done: bool,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.counters.bump(&self.counters.cancelled);
        }
    }
}

impl Demo for DemoImpl {
    async fn echo(&self, pod: Pod) -> Result<Pod, rpc::Status> {
        self.counters.bump(&self.counters.calls);
        Ok(pod)
    }

    async fn fail(&self, req: FailRequest) -> Result<Empty, DemoError> {
        self.counters.bump(&self.counters.calls);
        Err(DemoError::NoSuchPod(req.name))
    }

    async fn hold(&self, _req: Empty) -> Result<Empty, rpc::Status> {
        self.counters.bump(&self.counters.calls);
        let mut guard = CancelGuard {
            counters: &self.counters,
            done: false,
        };
        self.counters.bump(&self.counters.held);
        let permit = self
            .release
            .acquire()
            .await
            .map_err(rpc::Status::internal)?;
        permit.forget();
        guard.done = true;
        self.counters.bump(&self.counters.completed);
        Ok(Empty {})
    }

    async fn explode(&self, _req: Empty) -> Result<Empty, rpc::Status> {
        self.counters.bump(&self.counters.calls);
        panic!("boom");
    }
}

pub fn pod(name: &str) -> Pod {
    Pod {
        name: name.into(),
        labels: BTreeMap::from([
            ("app".into(), "web".into()),
            ("tier".into(), "front".into()),
        ]),
        containers: vec![Container {
            image: "busybox:local".into(),
            ports: vec![(8080, 80)],
            env: Some(vec!["A=1".into()]),
        }],
        phase: Phase::Running { since_ms: 42 },
    }
}

/// A running server and the means to stop it.
pub struct TestServer {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
    pub release: Arc<Semaphore>,
    shutdown: Option<oneshot::Sender<()>>,
    pub served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub async fn start(builder: impl FnOnce(rpc::ServerBuilder) -> rpc::ServerBuilder) -> TestServer {
    let demo = DemoImpl::new();
    let counters = Arc::clone(&demo.counters);
    let release = Arc::clone(&demo.release);
    let server = builder(
        rpc::Server::builder(rpc::Auth::Bearer(vec![TOKEN.into()])).service(DemoServer::new(demo)),
    )
    .build()
    .expect("valid server config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = oneshot::channel::<()>();
    let served = tokio::spawn(server.serve(listener, async {
        let _ = rx.await;
    }));
    TestServer {
        addr,
        counters,
        release,
        shutdown: Some(tx),
        served,
    }
}

pub fn client_config(token: Option<&str>) -> rpc::ClientConfig {
    rpc::ClientConfig {
        token: token.map(str::to_owned),
        ..Default::default()
    }
}

pub fn client(addr: SocketAddr, token: Option<&str>) -> DemoClient {
    DemoClient::new(
        rpc::Client::new(&addr.to_string(), client_config(token)).expect("valid client config"),
    )
}

/// Sends raw bytes and returns the status code and body of the answer; the
/// request should carry `connection: close` so the answer ends the stream.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer))
        .await
        .expect("answer within the deadline")
        .expect("read");
    parse_raw(&answer)
}

pub fn parse_raw(answer: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(answer).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub fn post(path: &str, token: Option<&str>, body: &str) -> Vec<u8> {
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Inserts a header line after the request line.
pub fn with_header(mut request: Vec<u8>, line: &str) -> Vec<u8> {
    let at = request
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("a request line")
        + 2;
    request.splice(at..at, format!("{line}\r\n").into_bytes());
    request
}
