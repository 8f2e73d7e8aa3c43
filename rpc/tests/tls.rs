//! TLS over real sockets: who is let in, who is refused, and what the
//! refusals say.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use common::{DemoClient, DemoImpl, DemoServer, pod};
use rpc::{Access, Auth, ClientConfig, ClientTls, Code, Identity, Roots, ServerTls, Tokens};
use tokio::net::TcpListener;

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

    fn identity(&self, request: &pki::Request) -> Identity {
        let issued = self.ca.issue(request).unwrap();
        Identity::from_pem(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes()).unwrap()
    }

    fn member(&self, name: &str, group: &str) -> Identity {
        self.identity(&pki::Request::new(name, group, vec!["127.0.0.1".into()]))
    }
}

/// A server on 127.0.0.1 with a certificate for 127.0.0.1 only; `/Demo/echo`
/// needs a masters' certificate and a member token, the rest any token.
async fn server(pki: &Pki, tokens: Tokens) -> SocketAddr {
    let tls = ServerTls::new(&pki.roots, pki.member("m0", pki::MASTERS)).unwrap();
    let server = rpc::Server::builder(Auth::Tokens(tokens))
        .service(DemoServer::new(DemoImpl::new()))
        .tls(tls)
        .restrict(
            "/Demo/echo",
            Access::roles(&["member"]).with_certificate(&[pki::MASTERS]),
        )
        .build()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.serve(listener, std::future::pending()));
    addr
}

fn tokens() -> Tokens {
    Tokens::new(vec![
        ("member".into(), "member-token".into()),
        ("user".into(), "user-token".into()),
    ])
    .unwrap()
}

fn client(addr: &str, roots: &Roots, identity: Option<Identity>, token: &str) -> DemoClient {
    let config = ClientConfig {
        token: Some(token.into()),
        tls: Some(ClientTls::new(roots, identity).unwrap()),
        connect_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    DemoClient::new(rpc::Client::new(addr, config).unwrap())
}

#[tokio::test]
async fn a_member_with_the_ca_and_its_certificate_is_served() {
    let pki = Pki::new();
    let addr = server(&pki, tokens()).await;
    let c = client(
        &format!("https://{addr}"),
        &pki.roots,
        Some(pki.member("m1", pki::MASTERS)),
        "member-token",
    );
    assert_eq!(c.echo(&pod("a")).await.unwrap(), pod("a"));
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_cluster_ca_cannot_connect() {
    let pki = Pki::new();
    let addr = server(&pki, tokens()).await;
    let stranger = Pki::new();
    let c = client(&addr.to_string(), &stranger.roots, None, "user-token");
    let err = c
        .fail(&common::FailRequest { name: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("TLS handshake failed: invalid peer certificate"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_certificate_from_another_ca_or_an_expired_one_is_refused() {
    let pki = Pki::new();
    let addr = server(&pki, tokens()).await;
    let other = Pki::new();
    let foreign = other.member("m9", pki::MASTERS);
    let now = SystemTime::now();
    let mut request = pki::Request::new("m8", pki::MASTERS, vec!["127.0.0.1".into()]);
    request.not_before = now - Duration::from_secs(2 * 86_400);
    request.not_after = now - Duration::from_secs(86_400);
    let expired = pki.identity(&request);
    for (what, identity) in [("foreign", foreign), ("expired", expired)] {
        let c = client(
            &addr.to_string(),
            &pki.roots,
            Some(identity),
            "member-token",
        );
        let err = c.echo(&pod("a")).await.unwrap_err();
        // TLS 1.3: the server's refusal of the client certificate arrives as
        // an alert after the client's handshake completed, so the first call
        // sees it as the connection failing.
        assert_eq!(err.code(), Code::Unavailable, "{what}: {err}");
        let msg = err.to_string();
        assert!(msg.contains("received fatal alert"), "{what}: {msg}");
        eprintln!("{what}: {msg}");
    }
}

#[tokio::test]
async fn restricted_methods_need_the_right_certificate_group_and_token_role() {
    let pki = Pki::new();
    let addr = server(&pki, tokens()).await;
    let addr = addr.to_string();
    // No client certificate, valid member token: the TLS session opens, the call is refused.
    let anonymous = client(&addr, &pki.roots, None, "member-token");
    let err = anonymous.echo(&pod("a")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(
        err.to_string()
            .contains("requires a client certificate of mkube:masters"),
        "{err}"
    );
    // A worker's certificate: the wrong group.
    let worker = client(
        &addr,
        &pki.roots,
        Some(pki.member("w1", pki::WORKERS)),
        "member-token",
    );
    let err = worker.echo(&pod("a")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(
        err.to_string().contains("`w1` is in [\"mkube:workers\"]"),
        "{err}"
    );
    // A master's certificate with a user token: the wrong role.
    let user = client(
        &addr,
        &pki.roots,
        Some(pki.member("m1", pki::MASTERS)),
        "user-token",
    );
    let err = user.echo(&pod("a")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(
        err.to_string()
            .contains("a user token may not call /Demo/echo"),
        "{err}"
    );
    // Unrestricted methods take any valid token without a certificate.
    let err = anonymous
        .fail(&common::FailRequest { name: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
}

#[tokio::test]
async fn a_server_certificate_for_another_name_is_refused_naming_the_mismatch() {
    let pki = Pki::new();
    let addr = server(&pki, tokens()).await;
    let c = client(
        &format!("localhost:{}", addr.port()),
        &pki.roots,
        None,
        "user-token",
    );
    let err = c
        .fail(&common::FailRequest { name: "x".into() })
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("not valid for name \"localhost\""), "{msg}");
    assert!(
        msg.contains("127.0.0.1"),
        "names what the certificate is valid for: {msg}"
    );
}

#[tokio::test]
async fn rotated_tokens_overlap_then_the_old_one_is_refused() {
    let pki = Pki::new();
    let tokens = tokens();
    let addr = server(&pki, tokens.clone()).await.to_string();
    let old = client(&addr, &pki.roots, None, "user-token");
    let new = client(&addr, &pki.roots, None, "user-token-2");
    let call = |c: &DemoClient| {
        let c = c.clone();
        async move {
            c.fail(&common::FailRequest { name: "x".into() })
                .await
                .unwrap_err()
                .code()
        }
    };
    assert_eq!(call(&new).await, Code::Unauthenticated);
    tokens
        .replace(vec![
            ("user".into(), "user-token-2".into()),
            ("user".into(), "user-token".into()),
        ])
        .unwrap();
    assert_eq!(
        call(&old).await,
        Code::NotFound,
        "old token during the overlap"
    );
    assert_eq!(
        call(&new).await,
        Code::NotFound,
        "new token during the overlap"
    );
    tokens
        .replace(vec![("user".into(), "user-token-2".into())])
        .unwrap();
    assert_eq!(
        call(&old).await,
        Code::Unauthenticated,
        "old token after the overlap"
    );
    assert_eq!(call(&new).await, Code::NotFound);
}

#[tokio::test]
async fn a_plain_client_gets_no_answer_from_a_tls_server() {
    let pki = Pki::new();
    let addr = server(&pki, tokens()).await;
    let plain = common::client(addr, Some("user-token"));
    let err = plain
        .fail(&common::FailRequest { name: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
}

#[test]
fn a_kept_certificate_is_checked_against_the_ca_its_name_and_its_validity() {
    let pki = Pki::new();
    let other = Pki::new();
    let mine = pki::Request::new("w1", pki::WORKERS, vec!["w1".into(), "127.0.0.1".into()]);
    let cert = pki.ca.issue(&mine).unwrap().cert_pem;
    pki.roots
        .verify_certificate(cert.as_bytes(), "w1")
        .expect("its own");
    let e = pki
        .roots
        .verify_certificate(cert.as_bytes(), "w2")
        .unwrap_err();
    assert!(e.to_string().contains("not valid for name"), "{e}");
    let foreign = other.ca.issue(&mine).unwrap().cert_pem;
    let e = pki
        .roots
        .verify_certificate(foreign.as_bytes(), "w1")
        .unwrap_err();
    // Both test CAs have one subject: the signature is what fails.
    assert!(
        e.to_string().contains("BadSignature") || e.to_string().contains("UnknownIssuer"),
        "{e}"
    );
    let mut old = mine.clone();
    old.not_before = SystemTime::now() - Duration::from_secs(2 * 86_400);
    old.not_after = SystemTime::now() - Duration::from_secs(86_400);
    let expired = pki.ca.issue(&old).unwrap().cert_pem;
    let e = pki
        .roots
        .verify_certificate(expired.as_bytes(), "w1")
        .unwrap_err();
    assert!(e.to_string().contains("certificate expired"), "{e}");
}
