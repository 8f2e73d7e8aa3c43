//! Doubles of the Azure services a deployment's VMs call, speaking their
//! documented wire formats, so that the deployment's own binaries run
//! against them unchanged (the rehearsal's VMs resolve Azure's names to
//! these doubles and trust the rehearsal's CA; nothing in mkube is told):
//!
//! - the instance metadata service (IMDS, plain HTTP, the VM known by its
//!   private address): managed-identity tokens
//!   (`/metadata/identity/oauth2/token`), instance metadata, and Scheduled
//!   Events (`/metadata/scheduledevents`, `Preempt` and its acknowledgement);
//!   the Automation account's identity endpoint for the runbook
//!   (`IDENTITY_ENDPOINT` with the `X-IDENTITY-HEADER` secret);
//! - over TLS, by host name: Key Vault secrets (the challenge, then the
//!   secret, with the template's per-secret grants), ARM's VM list, instance
//!   view, start and deallocate (mapped to starting and stopping the VM's
//!   container, through [`Hypervisor`]), Blob storage (the binaries behind
//!   their SAS URL) and Cosmos DB (the SDK's in-memory emulator behind a
//!   real HTTPS endpoint).
//!
//! Invariants: a token names one identity and one audience and is refused
//! for any other; a VM's power state changes only through [`Azure`]'s
//! methods (ARM calls, evictions), each of which is logged with its time.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use azure_data_cosmos_driver::in_memory_emulator::{
    InMemoryEmulatorHttpClient, VirtualAccountConfig, VirtualRegion,
};
use serde_json::{Value, json};

/// The audiences the doubles accept tokens for.
const ARM: &str = "https://management.azure.com";
const VAULT: &str = "https://vault.azure.net";
/// The ARM API version the compute calls use (cloud::vms and the runbook).
const COMPUTE_API: &str = "2024-07-01";
/// The identity of the Automation account (the runbook's).
pub const AUTOMATION: &str = "automation";

/// What a VM is in the deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Runs a master and a worker.
    Master,
    /// Runs a worker only.
    Worker,
}

/// A VM's power state, as ARM's instance view names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// `PowerState/running`.
    Running,
    /// `PowerState/starting`.
    Starting,
    /// `PowerState/deallocating`.
    Deallocating,
    /// `PowerState/deallocated`.
    Deallocated,
}

impl Power {
    fn code(self) -> &'static str {
        match self {
            Power::Running => "PowerState/running",
            Power::Starting => "PowerState/starting",
            Power::Deallocating => "PowerState/deallocating",
            Power::Deallocated => "PowerState/deallocated",
        }
    }
}

/// Starts and stops VMs (the rehearsal: their containers).
pub trait Hypervisor: Send + Sync + 'static {
    /// Boots the VM from its disk.
    fn start(&self, vm: &str) -> Result<()>;
    /// Stops the VM: at once (`hard`, an eviction) or by shutting it down.
    fn stop(&self, vm: &str, hard: bool) -> Result<()>;
}

/// One VM of the deployment.
#[derive(Debug, Clone)]
pub struct Vm {
    /// Its name (the node's and, on master VMs, the master's).
    pub name: String,
    /// Master or worker.
    pub role: Role,
    /// Its private IPv4 address (how IMDS knows it).
    pub ip: IpAddr,
    /// Its power state.
    pub power: Power,
}

/// A scheduled event (only `Preempt` is rehearsed).
#[derive(Debug, Clone)]
struct Event {
    id: String,
    vm: String,
    not_before: SystemTime,
    acknowledged: Option<SystemTime>,
}

/// The names and secrets of one deployment, as the template makes them.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The cluster's name (the VMs' `mkube-cluster` tag).
    pub cluster: String,
    /// Subscription id.
    pub subscription: String,
    /// Resource group.
    pub resource_group: String,
    /// Azure region (e.g. `japaneast`).
    pub location: String,
    /// The Key Vault's name.
    pub vault: String,
    /// The storage account's name.
    pub storage: String,
    /// The Cosmos DB account's name.
    pub cosmos_account: String,
    /// Key Vault secrets by name.
    pub secrets: BTreeMap<String, String>,
    /// The secret the Automation identity endpoint asks for.
    pub automation_header: String,
}

impl Deployment {
    /// Host names of the TLS doubles (the certificate's names).
    pub fn tls_hosts(&self) -> Vec<String> {
        vec![
            "management.azure.com".into(),
            format!("{}.vault.azure.net", self.vault),
            format!("{}.blob.core.windows.net", self.storage),
            format!("{}.documents.azure.com", self.cosmos_account),
        ]
    }

    /// The Cosmos DB endpoint the template gives the VMs.
    pub fn cosmos_endpoint(&self) -> String {
        format!("https://{}.documents.azure.com:443/", self.cosmos_account)
    }
}

struct Inner {
    vms: BTreeMap<String, Vm>,
    events: Vec<Event>,
    /// Events carried out, kept so that their acknowledgement can still be
    /// read after the eviction they announced.
    done: Vec<Event>,
    incarnation: u64,
    blobs: BTreeMap<String, (Vec<u8>, String)>,
    log: Vec<(Instant, String)>,
}

/// The doubles' shared state.
pub struct Azure {
    deployment: Deployment,
    hypervisor: Box<dyn Hypervisor>,
    inner: Mutex<Inner>,
    cosmos: Arc<InMemoryEmulatorHttpClient>,
    started: Instant,
}

impl Azure {
    /// Doubles for `deployment`, whose VMs `hypervisor` runs. The Cosmos DB
    /// account holds the database and containers the template creates.
    pub fn new(deployment: Deployment, hypervisor: Box<dyn Hypervisor>) -> Result<Arc<Azure>> {
        // One region, whose gateway is the account's endpoint.
        let gateway = deployment.cosmos_endpoint();
        let config = VirtualAccountConfig::new(vec![VirtualRegion::new(
            &deployment.location,
            azure_core::http::Url::parse(&gateway).context("the Cosmos DB gateway URL")?,
        )])
        .map_err(|e| anyhow::anyhow!("the emulated Cosmos DB account: {e}"))?
        .with_account_id(deployment.cosmos_account.clone());
        let cosmos = Arc::new(InMemoryEmulatorHttpClient::new(config));
        let store = cosmos.store();
        store.create_database("mkube");
        for (container, path) in [("metrics", "/pk"), ("exports", "/pk")] {
            let pk = serde_json::from_value(json!({"paths": [path], "kind": "Hash", "version": 2}))
                .context("partition key definition")?;
            store.create_container("mkube", container, pk);
        }
        Ok(Arc::new(Azure {
            deployment,
            hypervisor,
            inner: Mutex::new(Inner {
                vms: BTreeMap::new(),
                events: Vec::new(),
                done: Vec::new(),
                incarnation: 0,
                blobs: BTreeMap::new(),
                log: Vec::new(),
            }),
            cosmos,
            started: Instant::now(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn note(&self, inner: &mut Inner, what: String) {
        eprintln!(
            "[azure +{:>6.1}s] {what}",
            self.started.elapsed().as_secs_f64()
        );
        inner.log.push((Instant::now(), what));
    }

    /// Adds a VM, running.
    pub fn add_vm(&self, name: &str, role: Role, ip: IpAddr) {
        let mut inner = self.lock();
        inner.vms.insert(
            name.into(),
            Vm {
                name: name.into(),
                role,
                ip,
                power: Power::Running,
            },
        );
    }

    /// Publishes a blob; the URL a SAS token signs for reading it.
    pub fn put_blob(&self, container: &str, name: &str, bytes: Vec<u8>, expiry: &str) -> String {
        let signature = pki::generate_token();
        let path = format!("{container}/{name}");
        self.lock()
            .blobs
            .insert(path.clone(), (bytes, signature.clone()));
        format!(
            "https://{}.blob.core.windows.net/{path}?sp=r&se={expiry}&spr=https&sv=2022-11-02&sr=b&sig={signature}",
            self.deployment.storage
        )
    }

    /// The VMs now.
    pub fn vms(&self) -> Vec<Vm> {
        self.lock().vms.values().cloned().collect()
    }

    /// The power state of `vm`.
    pub fn power(&self, vm: &str) -> Option<Power> {
        self.lock().vms.get(vm).map(|v| v.power)
    }

    /// What happened, in order, with the time since the doubles started.
    pub fn log(&self) -> Vec<(Duration, String)> {
        self.lock()
            .log
            .iter()
            .map(|(t, s)| (t.duration_since(self.started), s.clone()))
            .collect()
    }

    /// When `vm`'s worker acknowledged the event `id`, if it did.
    pub fn acknowledged(&self, id: &str) -> Option<SystemTime> {
        let inner = self.lock();
        inner
            .events
            .iter()
            .chain(&inner.done)
            .find(|e| e.id == id)
            .and_then(|e| e.acknowledged)
    }

    /// Schedules a Spot eviction (`Preempt`) of `vm` at `not_before`; the
    /// event's id. [`Azure::run_evictions`] carries it out.
    pub fn preempt(&self, vm: &str, not_before: SystemTime) -> String {
        let id: String = pki::generate_token()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(16)
            .collect::<String>()
            .to_uppercase();
        let mut inner = self.lock();
        inner.events.push(Event {
            id: id.clone(),
            vm: vm.into(),
            not_before,
            acknowledged: None,
        });
        inner.incarnation += 1;
        let what = format!(
            "Preempt {id} scheduled for {vm}, NotBefore {}",
            httpdate(not_before)
        );
        self.note(&mut inner, what);
        id
    }

    /// Evicts (hard-stops and deallocates) the VMs whose `Preempt` is due:
    /// acknowledged, or past `NotBefore`. Returns the VMs evicted.
    pub fn run_evictions(&self) -> Vec<String> {
        let now = SystemTime::now();
        let due: Vec<Event> = {
            let mut inner = self.lock();
            let (due, keep): (Vec<Event>, Vec<Event>) = inner
                .events
                .drain(..)
                .partition(|e| e.acknowledged.is_some() || e.not_before <= now);
            inner.events = keep;
            if !due.is_empty() {
                inner.incarnation += 1;
            }
            inner.done.extend(due.iter().cloned());
            due
        };
        let mut evicted = Vec::new();
        for event in due {
            self.evict(&event.vm);
            evicted.push(event.vm);
        }
        evicted
    }

    /// Evicts `vm` now: stopped at once and deallocated, as Spot does.
    pub fn evict(&self, vm: &str) {
        self.set_power(vm, Power::Deallocating, "eviction");
        if let Err(e) = self.hypervisor.stop(vm, true) {
            eprintln!("[azure] evicting {vm}: {e:#}");
        }
        self.set_power(vm, Power::Deallocated, "eviction");
    }

    /// Deallocates `vm` (ARM `deallocate`, or every VM at once in a test).
    pub fn deallocate(&self, vm: &str) -> Result<()> {
        self.set_power(vm, Power::Deallocating, "deallocate");
        self.hypervisor.stop(vm, false)?;
        self.set_power(vm, Power::Deallocated, "deallocate");
        Ok(())
    }

    fn start(&self, vm: &str, by: &str) -> Result<()> {
        self.set_power(vm, Power::Starting, by);
        self.hypervisor.start(vm)?;
        self.set_power(vm, Power::Running, by);
        Ok(())
    }

    fn set_power(&self, vm: &str, power: Power, by: &str) {
        let mut inner = self.lock();
        if let Some(v) = inner.vms.get_mut(vm) {
            v.power = power;
        }
        self.note(&mut inner, format!("{vm}: {} ({by})", power.code()));
    }

    /// The VM at private address `ip`.
    fn vm_at(&self, ip: IpAddr) -> Option<Vm> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        self.lock().vms.values().find(|v| v.ip == ip).cloned()
    }

    /// Whose token `headers` carry, if it is for `audience`.
    fn caller(&self, headers: &HeaderMap, audience: &str) -> Option<String> {
        let token = headers
            .get("authorization")?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?;
        let (who, aud) = token.split_once('|')?;
        (aud.trim_end_matches('/') == audience).then(|| who.to_owned())
    }

    fn role_of(&self, identity: &str) -> Option<Role> {
        self.lock().vms.get(identity).map(|v| v.role)
    }
}

/// An RFC 1123 date, as Scheduled Events writes `NotBefore`.
pub fn httpdate(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|ts| ts.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .unwrap_or_default()
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn query_pairs(q: &Option<String>) -> BTreeMap<String, String> {
    url_pairs(q.as_deref().unwrap_or_default())
}

fn url_pairs(q: &str) -> BTreeMap<String, String> {
    azure_core::http::Url::parse(&format!("http://x/?{q}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

fn token_response(identity: &str, resource: &str) -> Response {
    let expires = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 86_400;
    axum::Json(json!({
        "access_token": format!("{identity}|{resource}"),
        "expires_on": expires.to_string(),
        "expires_in": "86400",
        "resource": resource,
        "token_type": "Bearer",
    }))
    .into_response()
}

// --- IMDS -----------------------------------------------------------------

/// IMDS and the Automation identity endpoint (plain HTTP).
pub fn imds_router(azure: Arc<Azure>) -> axum::Router {
    axum::Router::new().fallback(imds).with_state(azure)
}

async fn imds(
    State(azure): State<Arc<Azure>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let q = query_pairs(&uri.query().map(str::to_owned));
    if uri.path() == "/automation/identity" {
        // The Automation sandbox's identity endpoint (IDENTITY_ENDPOINT).
        let secret = headers
            .get("x-identity-header")
            .and_then(|v| v.to_str().ok());
        if secret != Some(azure.deployment.automation_header.as_str()) {
            return error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "no X-IDENTITY-HEADER".into(),
            );
        }
        let Some(resource) = q.get("resource") else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "no resource".into(),
            );
        };
        return token_response(AUTOMATION, resource);
    }
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Required metadata header not specified".into(),
        );
    }
    let Some(vm) = azure.vm_at(peer.ip()) else {
        return error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no VM at {}", peer.ip()),
        );
    };
    match (method, uri.path()) {
        (Method::GET, "/metadata/identity/oauth2/token") => match q.get("resource") {
            Some(resource) => token_response(&vm.name, resource),
            None => error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "no resource".into(),
            ),
        },
        (Method::GET, "/metadata/instance") => axum::Json(json!({
            "compute": {
                "name": vm.name, "location": azure.deployment.location,
                "resourceGroupName": azure.deployment.resource_group,
                "subscriptionId": azure.deployment.subscription,
                "priority": "Spot", "evictionPolicy": "Deallocate",
            },
        }))
        .into_response(),
        (Method::GET, "/metadata/scheduledevents") => {
            let inner = azure.lock();
            // Every VM of the deployment sees every event (as in a scale or
            // availability set): `Resources` says whose it is.
            let events: Vec<Value> = inner
                .events
                .iter()
                .map(|e| {
                    json!({
                        "EventId": e.id, "EventType": "Preempt", "ResourceType": "VirtualMachine",
                        "Resources": [e.vm],
                        "EventStatus": if e.acknowledged.is_some() { "Started" } else { "Scheduled" },
                        "NotBefore": httpdate(e.not_before),
                        "Description": "Virtual machine is being evicted from Azure Spot.",
                        "EventSource": "Platform", "DurationInSeconds": -1,
                    })
                })
                .collect();
            axum::Json(json!({"DocumentIncarnation": inner.incarnation, "Events": events}))
                .into_response()
        }
        (Method::POST, "/metadata/scheduledevents") => {
            let Ok(doc) = serde_json::from_slice::<Value>(&body) else {
                return error(StatusCode::BAD_REQUEST, "BadRequest", "not JSON".into());
            };
            let ids: Vec<String> = doc["StartRequests"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r["EventId"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let mut inner = azure.lock();
            let now = SystemTime::now();
            let mut acked = Vec::new();
            for e in inner.events.iter_mut() {
                if ids.contains(&e.id) && e.acknowledged.is_none() {
                    e.acknowledged = Some(now);
                    acked.push(e.id.clone());
                }
            }
            for id in acked {
                azure.note(&mut inner, format!("{id} acknowledged by {}", vm.name));
            }
            StatusCode::OK.into_response()
        }
        (_, path) => error(StatusCode::NOT_FOUND, "NotFound", format!("no {path} here")),
    }
}

// --- the TLS services -----------------------------------------------------

/// Key Vault, ARM, Blob storage and Cosmos DB (over TLS, by host name).
pub fn services_router(azure: Arc<Azure>) -> axum::Router {
    axum::Router::new().fallback(services).with_state(azure)
}

async fn services(
    State(azure): State<Arc<Azure>>,
    method: Method,
    uri: Uri,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // HTTP/2 names the host in the URI (`:authority`), HTTP/1.1 in `Host`.
    let host = uri
        .host()
        .map(str::to_owned)
        .or_else(|| {
            let host = headers.get("host")?.to_str().ok()?;
            host.split(':').next().map(str::to_owned)
        })
        .unwrap_or_default()
        .to_ascii_lowercase();
    let d = &azure.deployment;
    if host == "management.azure.com" {
        arm(&azure, method, uri.path(), &query_pairs(&q), &headers)
    } else if host == format!("{}.vault.azure.net", d.vault) {
        key_vault(&azure, uri.path(), &query_pairs(&q), &headers)
    } else if host == format!("{}.blob.core.windows.net", d.storage) {
        blob(&azure, uri.path(), &query_pairs(&q))
    } else if host.ends_with(".documents.azure.com") && host.starts_with(&d.cosmos_account) {
        cosmos(&azure, method, &host, &uri, &headers, body).await
    } else {
        error(
            StatusCode::NOT_FOUND,
            "HostNotFound",
            format!("no service at {host}"),
        )
    }
}

fn key_vault(
    azure: &Azure,
    path: &str,
    q: &BTreeMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let Some(name) = path
        .strip_prefix("/secrets/")
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|n| !n.is_empty() && !n.contains('/'))
    else {
        return error(StatusCode::NOT_FOUND, "NotFound", format!("no {path}"));
    };
    if q.get("api-version").is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "api-version is required".into(),
        );
    }
    let Some(identity) = azure.caller(headers, VAULT) else {
        let mut response = StatusCode::UNAUTHORIZED.into_response();
        if let Ok(v) = "Bearer authorization=\"https://login.microsoftonline.com/00000000-0000-0000-0000-0000000000aa\", resource=\"https://vault.azure.net\"".parse() {
            response.headers_mut().insert("www-authenticate", v);
        }
        return response;
    };
    // The template's grants: every VM reads the CA certificate and the join
    // token; only masters read the rest.
    let granted = match azure.role_of(&identity) {
        Some(Role::Master) => true,
        Some(Role::Worker) => matches!(name, "mkube-ca-crt" | "mkube-join-token"),
        None => false,
    };
    if !granted {
        return error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "Caller {identity} is not authorized to perform action on resource. Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action' Resource: 'secrets/{name}'"
            ),
        );
    }
    match azure.deployment.secrets.get(name) {
        Some(value) => axum::Json(json!({
            "value": value,
            "id": format!("https://{}.vault.azure.net/secrets/{name}/00000000000000000000000000000001", azure.deployment.vault),
            "attributes": {"enabled": true, "created": 1764460800, "updated": 1764460800, "recoveryLevel": "Recoverable+Purgeable"},
        }))
        .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "SecretNotFound",
            format!("A secret with (name/id) {name} was not found in this key vault."),
        ),
    }
}

fn arm(
    azure: &Arc<Azure>,
    method: Method,
    path: &str,
    q: &BTreeMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let d = &azure.deployment;
    let Some(identity) = azure.caller(headers, ARM) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing or invalid.".into(),
        );
    };
    // The custom role "mkube revival": masters and the Automation account.
    if identity != AUTOMATION && azure.role_of(&identity) != Some(Role::Master) {
        return error(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            format!(
                "The client '{identity}' does not have authorization to perform action over scope '{path}'."
            ),
        );
    }
    if q.get("api-version").map(String::as_str) != Some(COMPUTE_API) {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            format!(
                "api-version {:?} is not {COMPUTE_API}",
                q.get("api-version")
            ),
        );
    }
    let base = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines",
        d.subscription, d.resource_group
    );
    let Some(rest) = path.strip_prefix(&base).or_else(|| {
        path.to_ascii_lowercase()
            .strip_prefix(&base.to_ascii_lowercase())
            .map(|_| &path[base.len()..])
    }) else {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
            format!("no {path}"),
        );
    };
    let view = |vm: &Vm| {
        json!({
            "computerName": vm.name,
            "statuses": [
                {"code": "ProvisioningState/succeeded", "level": "Info"},
                {"code": vm.power.code(), "level": "Info"},
            ],
        })
    };
    let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (method, parts.as_slice()) {
        (Method::GET, []) => {
            let status_only = q.get("statusOnly").map(String::as_str) == Some("true");
            let value: Vec<Value> = azure
                .vms()
                .iter()
                .map(|vm| {
                    let mut v = json!({
                        "name": vm.name,
                        "id": format!("{base}/{}", vm.name),
                        "type": "Microsoft.Compute/virtualMachines",
                        "location": d.location,
                        "tags": {
                            "mkube-cluster": d.cluster,
                            "mkube-role": if vm.role == Role::Master { "master" } else { "worker" },
                        },
                        "properties": {"priority": "Spot"},
                    });
                    if status_only {
                        v["properties"]["instanceView"] = view(vm);
                    }
                    v
                })
                .collect();
            axum::Json(json!({ "value": value })).into_response()
        }
        (Method::GET, [vm, "instanceView"]) => match azure.lock().vms.get(*vm) {
            Some(v) => axum::Json(view(v)).into_response(),
            None => not_found(vm, d),
        },
        (Method::POST, [vm, action @ ("start" | "deallocate")]) => {
            if azure.power(vm).is_none() {
                return not_found(vm, d);
            }
            let (azure2, vm2, action2) = (azure.clone(), vm.to_string(), action.to_string());
            let who = identity.clone();
            tokio::task::spawn_blocking(move || {
                let result = if action2 == "start" {
                    azure2.start(&vm2, &format!("ARM start by {who}"))
                } else {
                    azure2.deallocate(&vm2)
                };
                if let Err(e) = result {
                    eprintln!("[azure] {action2} {vm2}: {e:#}");
                }
            });
            let mut response = StatusCode::ACCEPTED.into_response();
            if let Ok(v) = format!("https://management.azure.com/subscriptions/{}/providers/Microsoft.Compute/locations/{}/operations/{vm}-{action}?api-version={COMPUTE_API}", d.subscription, d.location).parse() {
                response.headers_mut().insert("location", v);
            }
            response
        }
        _ => error(StatusCode::NOT_FOUND, "NotFound", format!("no {path}")),
    }
}

fn not_found(vm: &str, d: &Deployment) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource 'Microsoft.Compute/virtualMachines/{vm}' under resource group '{}' was not found.",
            d.resource_group
        ),
    )
}

fn blob(azure: &Azure, path: &str, q: &BTreeMap<String, String>) -> Response {
    let key = path.trim_start_matches('/');
    let inner = azure.lock();
    match inner.blobs.get(key) {
        Some((bytes, sig)) if q.get("sig") == Some(sig) => bytes.clone().into_response(),
        Some(_) => error(
            StatusCode::FORBIDDEN,
            "AuthenticationFailed",
            "Server failed to authenticate the request.".into(),
        ),
        None => error(
            StatusCode::NOT_FOUND,
            "BlobNotFound",
            "The specified blob does not exist.".into(),
        ),
    }
}

async fn cosmos(
    azure: &Azure,
    method: Method,
    host: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let url = format!(
        "https://{host}:443{}",
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let Ok(url) = azure_core::http::Url::parse(&url) else {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("bad URL {url}"),
        );
    };
    let method = match method {
        Method::GET => azure_core::http::Method::Get,
        Method::POST => azure_core::http::Method::Post,
        Method::PUT => azure_core::http::Method::Put,
        Method::DELETE => azure_core::http::Method::Delete,
        Method::PATCH => azure_core::http::Method::Patch,
        Method::HEAD => azure_core::http::Method::Head,
        other => {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "BadRequest",
                format!("{other}"),
            );
        }
    };
    let mut request = azure_core::http::Request::new(url, method);
    for (name, value) in headers {
        if let Ok(v) = value.to_str() {
            request.insert_header(name.as_str().to_owned(), v.to_owned());
        }
    }
    request.set_body(body.to_vec());
    let response = match azure.cosmos.execute_request(&request).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "[azure] the Cosmos DB emulator refused {}: {e}",
                request.url()
            );
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                e.to_string(),
            );
        }
    };
    let (status, response_headers, body) = response.deconstruct();
    let bytes = match body.collect().await {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                e.to_string(),
            );
        }
    };
    let mut out = Response::new(axum::body::Body::from(bytes.to_vec()));
    *out.status_mut() =
        StatusCode::from_u16(u16::from(status)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in response_headers.iter() {
        if let (Ok(n), Ok(v)) = (
            axum::http::HeaderName::from_bytes(name.as_str().as_bytes()),
            axum::http::HeaderValue::from_str(value.as_str()),
        ) {
            out.headers_mut().append(n, v);
        }
    }
    out
}

// --- TLS listener ---------------------------------------------------------

/// Accepts TLS connections for axum: handshakes run in their own tasks, so
/// one slow client delays no other.
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        SocketAddr,
    )>,
    local: SocketAddr,
}

impl TlsListener {
    /// Serves TLS with `cert_pem`/`key_pem` on `listener`.
    pub fn new(
        listener: tokio::net::TcpListener,
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<TlsListener> {
        let identity = rpc::tls::Identity::from_pem(cert_pem.as_bytes(), key_pem.as_bytes())
            .context("the doubles' certificate")?;
        let roots = rpc::tls::Roots::from_pem(ca_pem.as_bytes()).context("the rehearsal CA")?;
        let tls = rpc::tls::ServerTls::new(&roots, identity).context("the doubles' TLS")?;
        // Cosmos DB's gateway speaks HTTP/2 (the SDK insists on it); the
        // other services HTTP/1.1.
        let mut config = (*tls.rustls_config()).clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let local = listener.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                            .await;
                    if let Ok(Ok(tls)) = handshake {
                        let _ = tx.send((tls, peer)).await;
                    }
                });
            }
        });
        Ok(TlsListener { rx, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept loop ended: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
