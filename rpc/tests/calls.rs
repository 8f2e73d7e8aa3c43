//! Calls over real sockets: round trips, errors, auth, limits, deadlines,
//! concurrency and shutdown.
#![allow(missing_docs)]

mod common;

use std::time::Duration;

use common::*;
use rpc::{CallOptions, Code, Error, TransportError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The same `Demo` service as a newer client sees it: one method more.
mod v2 {
    #[rpc::service]
    pub trait Demo {
        /// Unknown to the server.
        async fn brand_new(&self, req: super::Empty) -> Result<super::Empty, rpc::Status>;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_with_nested_types() {
    let server = start(|b| b).await;
    let client = client(server.addr, Some(TOKEN));
    let sent = pod("web-1");
    let got = client.echo(&sent).await.expect("echo succeeds");
    assert_eq!(got, sent);
    assert_eq!(server.counters.get(&server.counters.calls), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_error_arrives_with_code_and_message() {
    let server = start(|b| b).await;
    let client = client(server.addr, Some(TOKEN));
    let err = client
        .fail(&FailRequest {
            name: "db-0".into(),
        })
        .await
        .expect_err("fail fails");
    let status = err.status().expect("an answer from the server");
    assert_eq!(status.code, Code::NotFound);
    assert_eq!(status.message, "pod db-0 not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_token_is_unauthenticated_and_handler_never_runs() {
    let server = start(|b| b).await;
    for token in [None, Some("wrong-token"), Some("test-token-10")] {
        let err = client(server.addr, token)
            .echo(&pod("x"))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::Unauthenticated, "token {token:?}: {err}");
    }
    // Another scheme is refused too.
    let request = with_header(
        post("/Demo/echo", None, "{}"),
        "authorization: Basic dGVzdA==",
    );
    let (status, body) = raw(server.addr, &request).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Bearer"), "{body}");
    assert_eq!(server.counters.get(&server.counters.calls), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_invalid_argument_naming_the_problem() {
    let server = start(|b| b).await;
    let (status, body) = raw(
        server.addr,
        &post("/Demo/echo", Some(TOKEN), "{\"name\": 1}"),
    )
    .await;
    assert_eq!(status, 400);
    let envelope: rpc::Status = serde_json::from_str(&body).expect("an error envelope");
    assert_eq!(envelope.code, Code::InvalidArgument);
    assert!(
        envelope.message.contains("/Demo/echo"),
        "{}",
        envelope.message
    );
    assert!(
        envelope
            .message
            .contains("invalid type: integer `1`, expected a string"),
        "{}",
        envelope.message
    );
    assert!(
        envelope.message.contains("line 1 column"),
        "{}",
        envelope.message
    );

    let (status, body) = raw(server.addr, &post("/Demo/echo", Some(TOKEN), "{not json")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("key must be a string"), "{body}");
    assert_eq!(server.counters.get(&server.counters.calls), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_method_or_service_is_not_found() {
    let server = start(|b| b).await;
    let transport = rpc::Client::new(&server.addr.to_string(), client_config(Some(TOKEN))).unwrap();
    let err = v2::DemoClient::new(transport)
        .brand_new(&Empty {})
        .await
        .expect_err("no such method");
    let status = err.status().expect("an answer");
    assert_eq!(status.code, Code::NotFound);
    assert!(
        status
            .message
            .contains("unknown method `brand_new` of service `Demo`"),
        "{}",
        status.message
    );
    assert!(
        status.message.contains("echo, fail, hold, explode"),
        "{}",
        status.message
    );

    let (code, body) = raw(server.addr, &post("/Nope/echo", Some(TOKEN), "{}")).await;
    assert_eq!(code, 404);
    assert!(
        body.contains("unknown service `Nope`; this server serves Demo"),
        "{body}"
    );

    let (code, body) = raw(server.addr, &post("/", Some(TOKEN), "{}")).await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("/<Service>/<method>"), "{body}");

    let get = b"GET /Demo/echo HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n";
    let (code, body) = raw(server.addr, get).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("POST"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_refused_without_being_read_whole() {
    let server = start(|b| b.max_body_bytes(1024)).await;
    // Announce 100 MB, send only the head and a few bytes, keep the socket open:
    // the answer must come without the rest.
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /Demo/echo HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {TOKEN}\r\ncontent-length: 100000000\r\n\r\n{{\"name\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer))
        .await
        .expect("answered and closed without reading 100 MB")
        .unwrap();
    let (status, body) = parse_raw(&answer);
    assert_eq!(status, 413, "{body}");
    assert!(
        body.contains("100000000 bytes exceeds the limit of 1024 bytes"),
        "{body}"
    );

    // A chunked body has no length up front: it is read up to the limit, then refused.
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /Demo/echo HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {TOKEN}\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("800\r\n{}\r\n", "x".repeat(0x800));
    stream.write_all(chunk.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(DEADLINE, stream.read(&mut answer))
        .await
        .expect("answered before the body ends")
        .unwrap();
    let (status, body) = parse_raw(&answer[..n]);
    assert_eq!(status, 413, "{body}");
    assert_eq!(server.counters.get(&server.counters.calls), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handler_past_deadline_is_cancelled() {
    let server = start(|b| b).await;
    let client = client(server.addr, Some(TOKEN)).with_timeout(Duration::from_millis(200));
    let err = client.hold(&Empty {}).await.expect_err("past its deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    // The server dropped the handler: its guard counted a cancellation.
    server
        .counters
        .wait_for("the handler to be cancelled", |c| c.get(&c.cancelled) == 1)
        .await;
    assert_eq!(server.counters.get(&server.counters.completed), 0);

    // The connection stays usable for the next call.
    assert_eq!(client.echo(&pod("after")).await.unwrap().name, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_timeout_header_is_invalid_argument() {
    let server = start(|b| b).await;
    let request = with_header(
        post("/Demo/echo", Some(TOKEN), "{}"),
        "rpc-timeout-ms: soon",
    );
    let (status, body) = raw(server.addr, &request).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("rpc-timeout-ms"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_handler_is_an_opaque_internal_error() {
    let server = start(|b| b).await;
    let client = client(server.addr, Some(TOKEN));
    let err = client.explode(&Empty {}).await.expect_err("panics");
    let status = err.status().expect("an answer");
    assert_eq!(status.code, Code::Internal);
    assert!(
        !status.message.contains("boom"),
        "internal details leaked: {}",
        status.message
    );
    // The server and the connection survive.
    assert_eq!(client.echo(&pod("still")).await.unwrap().name, "still");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_calls_over_one_client() {
    let server = start(|b| b).await;
    let client = client(server.addr, Some(TOKEN));
    let calls: Vec<_> = (0..1000)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.echo(&pod(&format!("pod-{i}"))).await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let got = call
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("call {i} failed: {e}"));
        assert_eq!(got.name, format!("pod-{i}"));
    }
    assert_eq!(server.counters.get(&server.counters.calls), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_does_not_block_other_calls() {
    let server = start(|b| b).await;
    let client = client(server.addr, Some(TOKEN));
    let long_poll = client.with_options(CallOptions {
        timeout: Some(DEADLINE),
        long_poll: true,
    });
    let held = tokio::spawn(async move { long_poll.hold(&Empty {}).await });
    server
        .counters
        .wait_for("the long-poll to start", |c| c.get(&c.held) == 1)
        .await;
    // If this were pipelined behind the held call it would wait for ever.
    for i in 0..10 {
        assert_eq!(
            client.echo(&pod(&format!("p{i}"))).await.unwrap().name,
            format!("p{i}")
        );
    }
    server.release.add_permits(1);
    held.await
        .unwrap()
        .expect("the long-poll completes once released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_server_is_a_transport_error() {
    // A port held bound but never listening: refused, and no other test's
    // server can take it meanwhile (a freed port could be reused at once).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let err = client(addr, Some(TOKEN))
        .echo(&pod("x"))
        .await
        .expect_err("nobody listens");
    assert_eq!(err.code(), Code::Unavailable);
    match err {
        Error::Transport(e @ TransportError::Connect { .. }) => {
            assert!(!e.may_have_run());
            assert!(e.to_string().contains(&addr.to_string()), "{e}");
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_completes_in_flight_calls_or_fails_them_cleanly() {
    let mut server = start(|b| b.drain_timeout(DEADLINE)).await;
    // Several connections, several calls each, all held in handlers or queued behind them.
    let config = rpc::ClientConfig {
        token: Some(TOKEN.into()),
        max_connections: 4,
        pipeline_depth: 2,
        ..Default::default()
    };
    let client = DemoClient::new(rpc::Client::new(&server.addr.to_string(), config).unwrap());
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.hold(&Empty {}).await })
        })
        .collect();
    server
        .counters
        .wait_for("four held calls", |c| c.get(&c.held) == 4)
        .await;
    server.shutdown();
    server.release.add_permits(100);
    let served = tokio::time::timeout(DEADLINE, &mut server.served)
        .await
        .expect("serve returns after draining");
    served.unwrap().unwrap();
    let (mut ok, mut failed) = (0, 0);
    for call in calls {
        match tokio::time::timeout(DEADLINE, call)
            .await
            .expect("every call ends")
            .unwrap()
        {
            Ok(_) => ok += 1,
            Err(Error::Transport(e)) => {
                failed += 1;
                // Only calls that never started may fail: the running ones completed.
                assert!(
                    matches!(
                        e,
                        TransportError::Connect { .. } | TransportError::ConnectionLost { .. }
                    ),
                    "{e}"
                );
            }
            Err(other) => panic!("unclean failure: {other:?}"),
        }
    }
    assert!(
        ok >= 4,
        "the four running calls complete (ok={ok}, failed={failed})"
    );
    assert_eq!(ok + failed, 12);
    assert_eq!(server.counters.get(&server.counters.cancelled), 0);
    assert_eq!(server.counters.get(&server.counters.completed), ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_past_drain_timeout_aborts_stuck_calls() {
    let mut server = start(|b| b.drain_timeout(Duration::from_millis(200))).await;
    let client = client(server.addr, Some(TOKEN));
    let stuck = tokio::spawn(async move { client.hold(&Empty {}).await });
    server
        .counters
        .wait_for("the call to start", |c| c.get(&c.held) == 1)
        .await;
    server.shutdown();
    tokio::time::timeout(DEADLINE, &mut server.served)
        .await
        .expect("serve returns at the drain timeout")
        .unwrap()
        .unwrap();
    let err = tokio::time::timeout(DEADLINE, stuck)
        .await
        .expect("the stuck call ends")
        .unwrap()
        .expect_err("its connection was closed");
    match err {
        Error::Transport(e @ TransportError::ConnectionLost { .. }) => assert!(e.may_have_run()),
        other => panic!("expected ConnectionLost, got {other:?}"),
    }
    server
        .counters
        .wait_for("the aborted handler to be dropped", |c| {
            c.get(&c.cancelled) == 1
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mounted_page_answers_get_with_its_content_type_behind_the_token() {
    let server = start(|b| {
        b.page(
            "/metrics",
            std::sync::Arc::new(|| {
                Box::pin(async { Ok(("text/plain; version=0.0.4", "up 1\n".into())) })
            }),
        )
    })
    .await;
    let get = |token: Option<&str>| {
        let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
        format!("GET /metrics HTTP/1.1\r\nhost: x\r\n{auth}connection: close\r\n\r\n").into_bytes()
    };
    let (status, body) = raw(server.addr, &get(Some(TOKEN))).await;
    assert_eq!((status, body.as_str()), (200, "up 1\n"));
    let (status, body) = raw(server.addr, &get(None)).await;
    assert_eq!(status, 401, "the page needs the token too: {body}");
    // Other GETs are still refused as RPC calls.
    let other = format!(
        "GET /Demo/echo HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\nconnection: close\r\n\r\n"
    );
    let (status, body) = raw(server.addr, other.as_bytes()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("POST"), "{body}");
}
