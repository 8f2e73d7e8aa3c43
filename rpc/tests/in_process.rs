//! The router without a socket: the same checks as over HTTP, driven in memory.
#![allow(missing_docs)]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use rpc::{Auth, Code, InProcess, Server};

fn router() -> (Arc<rpc::Router>, Arc<Counters>) {
    let demo = DemoImpl::new();
    let counters = Arc::clone(&demo.counters);
    let server = Server::builder(Auth::Bearer(vec![TOKEN.into(), "next-token".into()]))
        .service(DemoServer::new(demo))
        .max_body_bytes(64)
        .build()
        .expect("valid server config");
    (server.router(), counters)
}

#[tokio::test]
async fn typed_client_over_in_process_transport() {
    let (router, counters) = router();
    let client = DemoClient::new(InProcess::new(Arc::clone(&router), Some(TOKEN)).unwrap());
    let err = client
        .fail(&FailRequest { name: "a".into() })
        .await
        .unwrap_err();
    assert_eq!(
        err.status().map(|s| s.message.as_str()),
        Some("pod a not found")
    );
    // The router's body limit applies in process too: a pod does not fit in 64 bytes.
    let err = client.echo(&pod("web")).await.unwrap_err();
    assert_eq!(err.code(), Code::PayloadTooLarge);
    assert_eq!(counters.get(&counters.calls), 1);
}

#[tokio::test]
async fn rotated_tokens_are_both_accepted() {
    let (router, _) = router();
    for token in [TOKEN, "next-token"] {
        let client = DemoClient::new(InProcess::new(Arc::clone(&router), Some(token)).unwrap());
        let err = client
            .fail(&FailRequest { name: "x".into() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "token {token} accepted");
    }
    let client = DemoClient::new(InProcess::new(router, Some("old-token")).unwrap());
    let err = client
        .fail(&FailRequest { name: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn router_refuses_oversized_bodies_before_reading_them() {
    let (router, counters) = router();
    let body = format!("{{\"name\":\"{}\"}}", "x".repeat(100));
    let request = http::Request::builder()
        .method("POST")
        .uri("/Demo/fail")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-length", body.len())
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = router.handle(request).await;
    assert_eq!(response.status(), 413);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let status: rpc::Status = serde_json::from_slice(&body).unwrap();
    assert_eq!(status.code, Code::PayloadTooLarge);
    assert_eq!(counters.get(&counters.calls), 0);
}
