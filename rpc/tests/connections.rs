//! Connections that abuse the server over real sockets: silent ones,
//! header and body tricklers, floods from one address, and a full client
//! pool; none of them may cost a member (a client with the cluster's
//! certificate) its connection or a well-behaved client its call.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{DEADLINE, DemoClient, DemoImpl, DemoServer, TOKEN, client, pod, post, start};
use rpc::{Auth, ClientConfig, ClientTls, Code, Identity, Roots, ServerTls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Opens a connection from the loopback address `from` (127.0.0.2, ...),
/// so that a test can be "another client machine".
async fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    socket.connect(to).await
}

/// Whether the server closes `stream` within `within` (EOF or reset).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let server = start(|b| b.header_read_timeout(Duration::from_millis(300))).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_within(&mut silent, DEADLINE).await);

    // Between requests, an idle keep-alive connection goes the same way.
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    let mut request = post(
        "/Demo/echo",
        Some(TOKEN),
        &serde_json::to_string(&pod("a")).unwrap(),
    );
    let close = b"connection: close\r\n";
    let at = request
        .windows(close.len())
        .position(|w| w == close)
        .unwrap();
    request.drain(at..at + close.len());
    kept.write_all(&request).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(closed_within(&mut kept, DEADLINE).await);
}

#[tokio::test]
async fn a_header_trickled_a_byte_at_a_time_is_cut_off() {
    let server = start(|b| b.header_read_timeout(Duration::from_millis(500))).await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    let request = post("/Demo/echo", Some(TOKEN), "{}");
    let started = Instant::now();
    for byte in request.iter().take(request.len() - 10) {
        if slow.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if started.elapsed() > DEADLINE {
            panic!("the server kept a trickling connection for {DEADLINE:?}");
        }
    }
    assert!(closed_within(&mut slow, DEADLINE).await);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_refused_naming_the_limit() {
    let server = start(|b| b.body_read_timeout(Duration::from_millis(300))).await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    let head = "POST /Demo/echo HTTP/1.1\r\nhost: t\r\nauthorization: Bearer test-token-1\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{";
    slow.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, slow.read_to_end(&mut answer))
        .await
        .expect("an answer within the deadline")
        .unwrap();
    let (status, body) = common::parse_raw(&answer);
    assert_eq!(status, Code::DeadlineExceeded.http_status(), "{body}");
    assert!(body.contains("did not arrive within"), "{body}");
}

/// Whether a request sent on `stream` is answered within `within`.
async fn answered_within(stream: &mut TcpStream, within: Duration) -> bool {
    let request = post(
        "/Demo/echo",
        Some(TOKEN),
        &serde_json::to_string(&pod("a")).unwrap(),
    );
    if stream.write_all(&request).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(n)) if n > 0 && buf.starts_with(b"HTTP/1.1 200")
    )
}

#[tokio::test]
async fn one_address_gets_its_share_and_others_are_still_served() {
    let server = start(|b| b.max_connections_per_ip(8)).await;
    let mut flood = Vec::new();
    for _ in 0..40 {
        flood.push(connect_from("127.0.0.2", server.addr).await.unwrap());
    }
    // The share is served; the rest are held unread (and reset later).
    let mut served = 0;
    for s in &mut flood {
        if answered_within(s, Duration::from_millis(300)).await {
            served += 1;
        }
    }
    assert_eq!(served, 8, "40 connections from one address, 8 allowed");
    // Another address is served meanwhile.
    let c = client(server.addr, Some(TOKEN));
    assert_eq!(c.echo(&pod("a")).await.unwrap(), pod("a"));
    // The flood ends: its address gets connections again.
    drop(flood);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut s = connect_from("127.0.0.2", server.addr).await.unwrap();
        if answered_within(&mut s, Duration::from_millis(300)).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the address never got a slot back"
        );
    }
}

/// A connection over its address's share is reset once the header
/// timeout has passed (not at once: it would be opened again at once).
#[tokio::test]
async fn a_connection_over_the_share_is_reset_after_the_header_timeout() {
    let server = start(|b| {
        b.max_connections_per_ip(1)
            .header_read_timeout(Duration::from_millis(500))
    })
    .await;
    let _share = connect_from("127.0.0.2", server.addr).await.unwrap();
    let mut over = connect_from("127.0.0.2", server.addr).await.unwrap();
    assert!(
        !closed_within(&mut over, Duration::from_millis(200)).await,
        "held, not reset at once"
    );
    assert!(
        closed_within(&mut over, DEADLINE).await,
        "reset after the timeout"
    );
}

struct Pki {
    ca: pki::Ca,
    roots: Roots,
}

impl Pki {
    fn new() -> Pki {
        let ca = pki::Ca::generate("test").unwrap();
        let roots = Roots::from_pem(ca.cert_pem().as_bytes()).unwrap();
        Pki { ca, roots }
    }

    /// A TLS server of this CA's certificate for m0, set up by `builder`.
    async fn server(
        &self,
        builder: impl FnOnce(rpc::ServerBuilder) -> rpc::ServerBuilder,
    ) -> SocketAddr {
        let tls = ServerTls::new(&self.roots, self.identity("m0", pki::MASTERS)).unwrap();
        let server = builder(
            rpc::Server::builder(Auth::Bearer(vec![TOKEN.into()]))
                .service(DemoServer::new(DemoImpl::new()))
                .tls(tls),
        )
        .build()
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(server.serve(listener, std::future::pending()));
        addr
    }

    fn identity(&self, name: &str, group: &str) -> Identity {
        let issued = self
            .ca
            .issue(&pki::Request::new(name, group, vec!["127.0.0.1".into()]))
            .unwrap();
        Identity::from_pem(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes()).unwrap()
    }

    fn client(&self, addr: SocketAddr, identity: Option<Identity>) -> DemoClient {
        let config = ClientConfig {
            token: Some(TOKEN.into()),
            tls: Some(ClientTls::new(&self.roots, identity).unwrap()),
            max_connections: 1,
            ..Default::default()
        };
        DemoClient::new(rpc::Client::new(&addr.to_string(), config).unwrap())
    }
}

/// Raft and probes come with the cluster's certificates: they have slots of
/// their own that clients without one can never take.
#[tokio::test]
async fn members_have_slots_that_a_full_client_pool_cannot_take() {
    let pki = Pki::new();
    let addr = pki.server(|b| b.max_connections(4)).await;

    // Four clients without a certificate fill the client pool...
    let holders: Vec<DemoClient> = (0..4).map(|_| pki.client(addr, None)).collect();
    for h in &holders {
        h.echo(&pod("hold")).await.unwrap();
    }
    // ...a fifth is refused...
    let fifth = pki.client(addr, None).echo(&pod("x")).await.unwrap_err();
    let status = fifth.status().expect("a status, not a broken connection");
    assert_eq!(status.code, Code::ResourceExhausted, "{fifth}");
    assert!(status.message.contains("--max-connections"), "{fifth}");
    // ...while members are still served.
    for name in ["m1", "w1"] {
        let group = if name == "m1" {
            pki::MASTERS
        } else {
            pki::WORKERS
        };
        let member = pki.client(addr, Some(pki.identity(name, group)));
        assert_eq!(member.echo(&pod(name)).await.unwrap(), pod(name));
    }
}

/// A client that is dropped closes its connections at once: over TLS they
/// held a slot of their address until the server's idle timeout (the
/// reader half kept the socket open).
#[tokio::test]
async fn a_dropped_client_frees_its_slot_at_once() {
    let pki = Pki::new();
    let addr = pki.server(|b| b.max_connections_per_ip(1)).await;
    for i in 0..20 {
        let c = pki.client(addr, None);
        let deadline = Instant::now() + DEADLINE;
        loop {
            match c.echo(&pod("a")).await {
                Ok(_) => break,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "client {i}: the previous client's connection still holds the slot: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
