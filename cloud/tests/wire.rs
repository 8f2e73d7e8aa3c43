//! The Key Vault and ARM clients up to the wire: the SDK's pipeline runs
//! for real, with a transport that sends every request to a local HTTP
//! server instead of Azure. The server checks what Azure would check (path,
//! api-version, bearer token, Key Vault's authentication challenge) and
//! answers in the documented shapes. The credential is a stand-in (no
//! identity endpoint exists here) that records the scopes it is asked for.
//!
//! Opt-in against real Azure (DeveloperToolsCredential, i.e. `az login`):
//! `MKUBE_AZURE_VAULT=keyvault://NAME MKUBE_AZURE_SECRET=NAME` reads a secret;
//! `MKUBE_AZURE_SUBSCRIPTION`, `MKUBE_AZURE_RESOURCE_GROUP`, `MKUBE_AZURE_VM`
//! read a VM's power state.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::http::{AsyncRawResponse, HttpClient, Request, Transport};
use cloud::secrets::Secrets;
use cloud::vms::{PowerState, Vms};

const TOKEN: &str = "test-token";

/// One request as the local "Azure" saw it: method, path, query, authorization.
type Seen1 = (String, String, String, Option<String>);

/// What the local "Azure" saw.
#[derive(Default)]
struct Seen(Mutex<Vec<Seen1>>);

impl Seen {
    fn record(&self, method: &str, path: &str, query: &str, headers: &HeaderMap) {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let Ok(mut seen) = self.0.lock() {
            seen.push((method.into(), path.into(), query.into(), auth));
        }
    }

    fn all(&self) -> Vec<Seen1> {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

type Shared = State<Arc<Seen>>;

fn query_string(q: &Option<String>) -> String {
    let mut pairs: Vec<&str> = q
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .collect();
    pairs.sort_unstable();
    pairs.join("&")
}

/// Key Vault: a request without a token gets the authentication challenge
/// (the SDK learns tenant and resource from it); then the secret.
async fn secret(
    State(seen): Shared,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    seen.record(
        "GET",
        &format!("/secrets/{name}/"),
        &query_string(&q),
        &headers,
    );
    if query_string(&q) != "api-version=2025-07-01" {
        return (StatusCode::BAD_REQUEST, "unsupported api-version").into_response();
    }
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        None => {
            let mut response = StatusCode::UNAUTHORIZED.into_response();
            response.headers_mut().insert(
                "www-authenticate",
                "Bearer authorization=\"https://login.microsoftonline.com/00000000-0000-0000-0000-000000000001\", resource=\"https://vault.azure.net\""
                    .parse()
                    .expect("header"),
            );
            return response;
        }
        Some(auth) if auth != format!("Bearer {TOKEN}") => {
            return (StatusCode::UNAUTHORIZED, "bad token").into_response();
        }
        Some(_) => {}
    }
    if name != "mkube-token" {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": {"code": "SecretNotFound",
                "message": format!("A secret with (name/id) {name} was not found in this key vault.")}})),
        )
            .into_response();
    }
    axum::Json(serde_json::json!({
        "value": "s3cret-token",
        "id": "https://mkube-test.vault.azure.net/secrets/mkube-token/0123456789abcdef",
        "attributes": {"enabled": true, "created": 1764460800, "updated": 1764460800, "recoveryLevel": "Recoverable+Purgeable"}
    }))
    .into_response()
}

const VMS: &str =
    "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.Compute/virtualMachines";

async fn instance_view(
    State(seen): Shared,
    Path(vm): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    seen.record(
        "GET",
        &format!("{VMS}/{vm}/instanceView"),
        &query_string(&q),
        &headers,
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        return (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({"error": {"code": "AuthenticationFailed", "message": "no token"}}))).into_response();
    }
    if vm != "vm-1" {
        return (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({"error": {"code": "ResourceNotFound",
            "message": format!("The Resource 'Microsoft.Compute/virtualMachines/{vm}' under resource group 'rg-1' was not found.")}}))).into_response();
    }
    axum::Json(serde_json::json!({
        "computerName": "vm-1", "osName": "debian", "osVersion": "12",
        "statuses": [
            {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded"},
            {"code": "PowerState/deallocated", "level": "Info", "displayStatus": "VM deallocated"}
        ]
    }))
    .into_response()
}

async fn start(
    State(seen): Shared,
    Path(vm): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    seen.record(
        "POST",
        &format!("{VMS}/{vm}/start"),
        &query_string(&q),
        &headers,
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let mut response = StatusCode::ACCEPTED.into_response();
    response.headers_mut().insert(
        "location",
        "https://management.azure.com/subscriptions/sub-1/providers/Microsoft.Compute/locations/westeurope/operations/op-1?api-version=2024-07-01"
            .parse()
            .expect("header"),
    );
    response
}

async fn serve(seen: Arc<Seen>) -> SocketAddr {
    let app = axum::Router::new()
        .route("/secrets/{name}/", get(secret))
        .route(&format!("{VMS}/{{vm}}/instanceView"), get(instance_view))
        .route(&format!("{VMS}/{{vm}}/start"), post(start))
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Sends every request to `target` over plain HTTP, keeping path, query,
/// headers and body: the SDK's own HTTP client does the sending.
#[derive(Debug)]
struct Local {
    target: SocketAddr,
    inner: Arc<dyn HttpClient>,
}

#[async_trait::async_trait]
impl HttpClient for Local {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let mut local = request.clone();
        let url = local.url_mut();
        let _ = url.set_scheme("http");
        let _ = url.set_host(Some(&self.target.ip().to_string()));
        let _ = url.set_port(Some(self.target.port()));
        self.inner.execute_request(&local).await
    }
}

fn transport(target: SocketAddr) -> Transport {
    Transport::new(Arc::new(Local {
        target,
        inner: azure_core::http::new_http_client(None),
    }))
}

/// Hands out a fixed token and remembers the scopes asked for.
#[derive(Debug, Default)]
struct StandIn(Mutex<Vec<String>>);

#[async_trait::async_trait]
impl TokenCredential for StandIn {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        if let Ok(mut asked) = self.0.lock() {
            asked.extend(scopes.iter().map(|s| (*s).to_owned()));
        }
        Ok(AccessToken::new(
            TOKEN,
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_vault_secrets_follow_the_challenge_and_read_the_value() {
    let seen = Arc::new(Seen::default());
    let addr = serve(seen.clone()).await;
    let credential = Arc::new(StandIn::default());
    let secrets = Secrets::new(
        "keyvault://mkube-test",
        credential.clone(),
        Some(transport(addr)),
    )
    .expect("client");
    assert_eq!(
        secrets.get("mkube-token").await.expect("the secret"),
        "s3cret-token"
    );
    let err = secrets
        .get("cosmos-key")
        .await
        .expect_err("absent")
        .to_string();
    assert!(
        err.contains("reading secret cosmos-key from https://mkube-test.vault.azure.net/"),
        "{err}"
    );
    assert!(
        err.contains("cosmos-key was not found in this key vault"),
        "the service's message: {err}"
    );

    let seen = seen.all();
    assert_eq!(
        seen[0].3, None,
        "the first request carries no token: the vault answers with its challenge"
    );
    assert!(
        seen[1..]
            .iter()
            .all(|r| r.3.as_deref() == Some("Bearer test-token")),
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|r| r.2 == "api-version=2025-07-01"),
        "{seen:?}"
    );
    assert_eq!(seen[1].1, "/secrets/mkube-token/");
    let asked = credential.0.lock().map(|a| a.clone()).unwrap_or_default();
    assert!(
        asked
            .iter()
            .all(|s| s == "https://vault.azure.net/.default"),
        "{asked:?}"
    );

    assert!(
        Secrets::new("keyvault://x", credential.clone(), None).is_err(),
        "a name of 1 letter is refused"
    );
    let err = Secrets::new("vault://mkube", credential, None)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("expected keyvault://NAME"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm_reads_power_state_and_starts_a_deallocated_vm() {
    let seen = Arc::new(Seen::default());
    let addr = serve(seen.clone()).await;
    let credential = Arc::new(StandIn::default());
    let vms = Vms::new(
        "https://management.azure.com/",
        "sub-1",
        "rg-1",
        credential.clone(),
        Some(transport(addr)),
    )
    .expect("client");
    let state = vms.power_state("vm-1").await.expect("power state");
    assert_eq!(state, PowerState::Deallocated);
    assert!(state.needs_start());
    vms.start("vm-1").await.expect("start accepted");
    let err = vms
        .power_state("vm-9")
        .await
        .expect_err("no such VM")
        .to_string();
    assert!(
        err.contains("reading the instance view of VM vm-9") && err.contains("was not found"),
        "{err}"
    );

    let seen = seen.all();
    assert_eq!(seen[0].0, "GET");
    assert_eq!(seen[0].1, format!("{VMS}/vm-1/instanceView"));
    assert_eq!(seen[1].0, "POST");
    assert_eq!(seen[1].1, format!("{VMS}/vm-1/start"));
    assert!(
        seen.iter().all(|r| r.2 == "api-version=2024-07-01"),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .all(|r| r.3.as_deref() == Some("Bearer test-token")),
        "{seen:?}"
    );
    let asked = credential.0.lock().map(|a| a.clone()).unwrap_or_default();
    assert!(
        asked
            .iter()
            .all(|s| s == "https://management.azure.com/.default"),
        "{asked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_real_azure_when_configured() {
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
    let credential = || -> Arc<dyn TokenCredential> {
        azure_identity::DeveloperToolsCredential::new(None).expect("az login")
    };
    let mut ran = false;
    if let (Some(vault), Some(name)) = (var("MKUBE_AZURE_VAULT"), var("MKUBE_AZURE_SECRET")) {
        let secrets = Secrets::new(&vault, credential(), None).expect("client");
        assert!(!secrets.get(&name).await.expect("the secret").is_empty());
        ran = true;
    }
    if let (Some(sub), Some(rg), Some(vm)) = (
        var("MKUBE_AZURE_SUBSCRIPTION"),
        var("MKUBE_AZURE_RESOURCE_GROUP"),
        var("MKUBE_AZURE_VM"),
    ) {
        let vms = Vms::new(
            "https://management.azure.com/",
            &sub,
            &rg,
            credential(),
            None,
        )
        .expect("client");
        let state = vms.power_state(&vm).await.expect("power state");
        assert_ne!(state, PowerState::Unknown);
        ran = true;
    }
    if !ran {
        eprintln!("MKUBE_AZURE_* not set: the real-Azure checks are skipped");
    }
}
