//! The Azure deployment, rehearsed on this machine: VMs as containers of a
//! Debian 12 image ([`image`]), each booted by systemd and bootstrapped by
//! cloud-init from the deployment's own `deploy/azure/cloud-init.yaml`, with
//! the placeholders filled as the template fills them ([`custom_data`]);
//! Azure's services as doubles speaking their wire formats ([`azure`]).
//!
//! Networks as on Azure: a private IPv4 subnet `10.42.0.0/24` between the
//! VMs (with outbound NAT: the deployment's NAT gateway), and public IPv6
//! addresses (`fd42:4242:4242::/64` standing for the VMs' public /64) that
//! the operator reaches. The operator is a container on the IPv6 network
//! alone, its IPv4 address removed. The doubles are this test process,
//! listening on the private network's gateway; each VM's entry point routes
//! the instance metadata address and Azure's public names to them (see
//! [`image::BOOT`]).
//!
//! Invariants: every container and network carries the label
//! `mkube-rehearsal`, and dropping a [`Rehearsal`] removes them (a run
//! that died is cleaned up by the next); only one rehearsal runs at a time
//! (its subnets are the template's, fixed).

pub mod azure;
pub mod image;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::cluster::bin_dir;
use crate::masters::Masters;
use crate::netcluster::docker;
use crate::testpki::{Credentials, TestPki};
use azure::{Azure, Deployment, Hypervisor, Role};

/// The label on everything a rehearsal creates.
pub const LABEL: &str = "mkube-rehearsal";
/// The private subnet's gateway: where the doubles listen.
const GATEWAY: &str = "10.42.0.1";
const PUBLIC_PREFIX: &str = "fd42:4242:4242::";
/// The template's cloud-init content.
pub const CLOUD_INIT: &str = include_str!("../../../deploy/azure/cloud-init.yaml");

/// The placeholders of the template's custom data, in the template's order,
/// and what each becomes for VM `i` of a deployment with `masters` masters
/// (see `deploy/azure/main.bicep`, the VMs' `customData`).
pub struct CustomData<'a> {
    /// Cluster name (`clusterName`).
    pub cluster: &'a str,
    /// `masterCount`.
    pub masters: usize,
    /// `binariesUrl`.
    pub binaries_url: &'a str,
    /// The vault's name.
    pub vault: &'a str,
    /// The Cosmos DB account's document endpoint.
    pub cosmos: &'a str,
    /// `location`.
    pub region: &'a str,
    /// Subscription id.
    pub subscription: &'a str,
    /// Resource group name.
    pub resource_group: &'a str,
}

/// The placeholders the template replaces, in its order.
pub const PLACEHOLDERS: &[&str] = &[
    "__ROLE__",
    "__NAME__",
    "__IP__",
    "__MASTERS__",
    "__MASTER_ADDRS__",
    "__BINARIES_URL__",
    "__VAULT__",
    "__COSMOS__",
    "__REGION__",
    "__SUBSCRIPTION__",
    "__RESOURCE_GROUP__",
    "__WORKER_EXTRA__",
];

impl CustomData<'_> {
    /// VM `i`'s private address.
    pub fn ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 42, 0, 10 + i as u8)
    }

    /// VM `i`'s name.
    pub fn name(&self, i: usize) -> String {
        format!("{}-{i}", self.cluster)
    }

    /// The values of [`PLACEHOLDERS`] for VM `i`.
    pub fn values(&self, i: usize) -> Vec<String> {
        let master = i < self.masters;
        let peers: Vec<String> = (0..self.masters)
            .map(|j| format!("{}={}:7000", self.name(j), Self::ip(j)))
            .collect();
        let addrs: Vec<String> = (0..self.masters)
            .map(|j| format!("{}:7000", Self::ip(j)))
            .collect();
        vec![
            if master { "master" } else { "worker" }.into(),
            self.name(i),
            Self::ip(i).to_string(),
            peers.join(","),
            addrs.join(","),
            self.binaries_url.into(),
            self.vault.into(),
            self.cosmos.into(),
            self.region.into(),
            self.subscription.into(),
            self.resource_group.into(),
            if master {
                format!("--local-master {}:7000", Self::ip(i))
            } else {
                String::new()
            },
        ]
    }

    /// VM `i`'s user data: `cloud_init` with every placeholder replaced,
    /// one after another as the template's nested `replace()`s do.
    pub fn render(&self, cloud_init: &str, i: usize) -> String {
        let mut text = cloud_init.to_owned();
        for (placeholder, value) in PLACEHOLDERS.iter().zip(self.values(i)) {
            text = text.replace(placeholder, &value);
        }
        text
    }
}

/// Starts and stops the VM containers.
struct Containers {
    prefix: String,
}

impl Hypervisor for Containers {
    fn start(&self, vm: &str) -> Result<()> {
        docker(&["start", &format!("{}-{vm}", self.prefix)]).map(|_| ())
    }

    fn stop(&self, vm: &str, hard: bool) -> Result<()> {
        let container = format!("{}-{vm}", self.prefix);
        if hard {
            docker(&["kill", &container]).map(|_| ())
        } else {
            docker(&["stop", "-t", "20", &container]).map(|_| ())
        }
    }
}

/// A rehearsed deployment: its VMs, the doubles, the operator.
pub struct Rehearsal {
    /// The doubles (and the VMs' power states).
    pub azure: Arc<Azure>,
    /// Names and secrets of the deployment.
    pub deployment: Deployment,
    /// The user data of each VM, as given to cloud-init.
    pub user_data: Vec<String>,
    masters: usize,
    vms: usize,
    prefix: String,
    dir: PathBuf,
    pki: TestPki,
    admin: Credentials,
    operator: String,
    private_net: String,
    public_net: String,
    vm_image: String,
    imds: std::net::SocketAddr,
    services: std::net::SocketAddr,
}

impl Drop for Rehearsal {
    fn drop(&mut self) {
        if std::env::var_os("MKUBE_REHEARSAL_KEEP").is_some() {
            eprintln!("MKUBE_REHEARSAL_KEEP: leaving {} in place", self.prefix);
            return;
        }
        clean_up();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes every container and network of any rehearsal.
pub fn clean_up() {
    let filter = format!("label={LABEL}");
    if let Ok(ids) = docker(&["ps", "-aq", "--filter", &filter]) {
        for id in ids.lines().filter(|l| !l.is_empty()) {
            let _ = docker(&["rm", "-f", "-v", id]);
        }
    }
    if let Ok(ids) = docker(&["network", "ls", "-q", "--filter", &filter]) {
        for id in ids.lines().filter(|l| !l.is_empty()) {
            let _ = docker(&["network", "rm", id]);
        }
    }
}

fn short_id() -> String {
    pki::generate_token()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(6)
        .collect::<String>()
        .to_lowercase()
}

impl Rehearsal {
    /// Brings up `masters` master VMs and `workers` worker-only VMs and the
    /// operator; returns once every VM's container runs (cloud-init is then
    /// still at work: wait on the cluster).
    pub async fn start(masters: usize, workers: usize) -> Result<Rehearsal> {
        let vm_image = image::ensure_vm_image()?;
        let demo_image = crate::images::ensure_busybox()?;
        clean_up();
        let id = short_id();
        let prefix = format!("rehearsal-{id}");
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir)?;
        let bins = bin_dir()?;

        // The cluster's PKI, as deploy.sh makes it.
        let pki_dir = dir.join("pki");
        run_ok(
            Command::new(bins.join("mkube-pki"))
                .arg("init")
                .arg(&pki_dir)
                .args(["--cluster", "mkube"]),
            "mkube-pki init",
        )?;
        let pki = TestPki::open(&pki_dir)?;
        let mut secrets = BTreeMap::new();
        secrets.insert("mkube-ca-crt".into(), read(&pki_dir.join("ca.crt"))?);
        secrets.insert("mkube-ca-key".into(), read(&pki_dir.join("ca.key"))?);
        for role in pki::ROLES {
            secrets.insert(
                format!("mkube-{role}-token"),
                read(&pki::token_path(&pki_dir, role)?)?,
            );
        }
        secrets.insert("cosmos-key".into(), "cmVoZWFyc2FsLWNvc21vcy1rZXk=".into());
        let deployment = Deployment {
            cluster: "mkube".into(),
            subscription: "00000000-0000-0000-0000-00000000beef".into(),
            resource_group: format!("rg-{id}"),
            location: "japaneast".into(),
            vault: format!("kv-{id}rehearsal"),
            storage: format!("mk{id}rehearsal"),
            cosmos_account: format!("mkube-{id}"),
            secrets,
            automation_header: pki::generate_token(),
        };

        // Networks: the private subnet (NAT outbound) and the public IPv6.
        let private_net = format!("{prefix}-private");
        let public_net = format!("{prefix}-public");
        let label = format!("{LABEL}={id}");
        docker(&[
            "network",
            "create",
            "--label",
            &label,
            "--subnet",
            "10.42.0.0/24",
            "--gateway",
            GATEWAY,
            &private_net,
        ])?;
        docker(&[
            "network",
            "create",
            "--label",
            &label,
            "--ipv6",
            "--subnet",
            &format!("{PUBLIC_PREFIX}/64"),
            &public_net,
        ])?;

        // The doubles, on the private gateway.
        let azure = Azure::new(
            deployment.clone(),
            Box::new(Containers {
                prefix: prefix.clone(),
            }),
        )?;
        let ca = pki::Ca::generate("azure-rehearsal")?;
        let cert = ca.issue(&pki::Request::new(
            "azure-rehearsal",
            "azure",
            deployment.tls_hosts(),
        ))?;
        std::fs::write(dir.join("azure-ca.crt"), ca.cert_pem())?;
        let imds = tokio::net::TcpListener::bind((GATEWAY, 0)).await?;
        let imds_addr = imds.local_addr()?;
        let router = azure::imds_router(azure.clone());
        tokio::spawn(async move {
            axum::serve(
                imds,
                router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await
        });
        let services = tokio::net::TcpListener::bind((GATEWAY, 0)).await?;
        let services_addr = services.local_addr()?;
        let listener =
            azure::TlsListener::new(services, ca.cert_pem(), &cert.cert_pem, &cert.key_pem)?;
        let router = azure::services_router(azure.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });

        // The binaries, as deploy.sh uploads them.
        let tarball = dir.join("mkube.tar.gz");
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/azure");
        run_ok(
            Command::new(deploy.join("bundle.sh"))
                .arg(&tarball)
                .arg(&bins),
            "deploy/azure/bundle.sh",
        )?;
        let binaries_url = azure.put_blob(
            "mkube",
            "mkube.tar.gz",
            std::fs::read(&tarball)?,
            "2027-12-06T00:00Z",
        );
        let demo = dir.join("demo-image.tar");
        run_ok(
            Command::new("docker")
                .args(["save", "-o"])
                .arg(&demo)
                .arg(demo_image),
            "docker save",
        )?;

        let cosmos = deployment.cosmos_endpoint();
        let data = CustomData {
            cluster: "mkube",
            masters,
            binaries_url: &binaries_url,
            vault: &deployment.vault,
            cosmos: &cosmos,
            region: &deployment.location,
            subscription: &deployment.subscription,
            resource_group: &deployment.resource_group,
        };
        let vms = masters + workers;
        let mut user_data = Vec::new();
        for i in 0..vms {
            let name = data.name(i);
            let container = format!("{prefix}-{name}");
            let text = data.render(CLOUD_INIT, i);
            let seed = dir.join(&name).join("cloud");
            std::fs::create_dir_all(seed.join("seed/nocloud"))?;
            std::fs::write(seed.join("seed/nocloud/user-data"), &text)?;
            std::fs::write(
                seed.join("seed/nocloud/meta-data"),
                format!("instance-id: {name}-{id}\nlocal-hostname: {name}\n"),
            )?;
            user_data.push(text);
            let mut args: Vec<String> = [
                "create",
                "--name",
                &container,
                "--hostname",
                &name,
                "--label",
                &label,
                "--network",
                &private_net,
                "--ip",
                &CustomData::ip(i).to_string(),
                "--cap-add",
                "ALL",
                "--cap-drop",
                "SYS_RESOURCE",
                "--security-opt",
                "seccomp=unconfined",
                "--security-opt",
                "apparmor=unconfined",
                // systemd shuts down on SIGRTMIN+3, not SIGTERM.
                "--stop-signal",
                "SIGRTMIN+3",
                "--tmpfs",
                "/run",
                "--tmpfs",
                "/run/lock",
                "-v",
                "/sys/fs/cgroup:/sys/fs/cgroup",
                "-v",
                "/var/lib/docker",
                "-e",
                &format!("IMDS={imds_addr}"),
                "-e",
                &format!("AZURE={services_addr}"),
                "-e",
                &format!("PRIVATE_GATEWAY={GATEWAY}"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            for host in deployment.tls_hosts() {
                args.extend(["--add-host".into(), format!("{host}:{}", image::AZURE_IP)]);
            }
            args.push(vm_image.clone());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            docker(&args)?;
            docker(&[
                "network",
                "connect",
                "--ip6",
                &format!("{PUBLIC_PREFIX}{}", 10 + i),
                &public_net,
                &container,
            ])?;
            docker(&[
                "cp",
                &format!("{}/.", seed.display()),
                &format!("{container}:/var/lib/cloud"),
            ])?;
            docker(&[
                "cp",
                &dir.join("azure-ca.crt").display().to_string(),
                &format!("{container}:/etc/rehearsal/ca.crt"),
            ])?;
            docker(&["start", &container])?;
            let role = if i < masters {
                Role::Master
            } else {
                Role::Worker
            };
            azure.add_vm(&name, role, IpAddr::V4(CustomData::ip(i)));
        }

        // The operator: IPv6 only, with mkctl and the cluster's PKI.
        let operator = format!("{prefix}-operator");
        docker(&[
            "run",
            "-d",
            "--name",
            &operator,
            "--label",
            &label,
            "--network",
            &public_net,
            "--cap-add",
            "NET_ADMIN",
            "--entrypoint",
            "sleep",
            &vm_image,
            "infinity",
        ])?;
        docker(&[
            "exec", &operator, "ip", "-4", "addr", "flush", "dev", "eth0",
        ])?;
        docker(&[
            "exec",
            &operator,
            "mkdir",
            "-p",
            "/root/pki",
            "/root/deploy",
        ])?;
        docker(&[
            "cp",
            &bins.join("mkctl").display().to_string(),
            &format!("{operator}:/usr/local/bin/mkctl"),
        ])?;
        docker(&[
            "cp",
            &format!("{}/.", pki_dir.display()),
            &format!("{operator}:/root/pki"),
        ])?;
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/azure/write-context.sh");
        docker(&[
            "cp",
            &deploy.display().to_string(),
            &format!("{operator}:/root/deploy/"),
        ])?;

        let admin = pki.role("admin")?;
        Ok(Rehearsal {
            azure,
            deployment,
            user_data,
            masters,
            vms,
            prefix,
            dir,
            pki,
            admin,
            operator,
            private_net,
            public_net,
            vm_image,
            imds: imds_addr,
            services: services_addr,
        })
    }

    /// VM `i`'s name.
    pub fn vm(&self, i: usize) -> String {
        format!("mkube-{i}")
    }

    /// How many VMs.
    pub fn vm_count(&self) -> usize {
        self.vms
    }

    /// The container of VM `vm`.
    pub fn container(&self, vm: &str) -> String {
        format!("{}-{vm}", self.prefix)
    }

    /// VM `i`'s public IPv6 address.
    pub fn public_ip(&self, i: usize) -> String {
        format!("{PUBLIC_PREFIX}{}", 10 + i)
    }

    /// Runs `command` in the operator's container; its output.
    pub fn operator(&self, command: &[&str]) -> Result<String> {
        let mut args = vec!["exec", self.operator.as_str()];
        args.extend_from_slice(command);
        docker(&args)
    }

    /// Runs `command` in VM `vm`; its output.
    pub fn on_vm(&self, vm: &str, command: &[&str]) -> Result<String> {
        let container = self.container(vm);
        let mut args = vec!["exec", container.as_str()];
        args.extend_from_slice(command);
        docker(&args)
    }

    /// Loads the demo's image into VM `vm`'s Docker (the registry's part:
    /// the rehearsal pulls nothing). Fails until the VM's Docker runs.
    pub fn load_demo_image(&self, vm: &str) -> Result<()> {
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker exec -i {} docker load < {}",
                self.container(vm),
                self.dir.join("demo-image.tar").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("docker load in {vm} failed");
        }
        Ok(())
    }

    /// Runs the revival runbook (`deploy/azure/runbook/start_mkube_vms.py`)
    /// as Automation would: Python 3 in a sandbox whose identity endpoint
    /// gives the Automation account's token, reaching ARM by its name.
    /// Its output.
    pub fn run_runbook(&self) -> Result<String> {
        let runbook = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/azure/runbook/start_mkube_vms.py")
            .canonicalize()?;
        let ca = self.dir.join("azure-ca.crt");
        let script = format!(
            "iptables -t nat -A OUTPUT -d {azure_ip} -p tcp --dport 443 -j DNAT --to-destination {services} \
             && cp /ca.crt /usr/local/share/ca-certificates/azure.crt && update-ca-certificates >/dev/null 2>&1 \
             && exec python3 /runbook.py {} {} {}",
            self.deployment.subscription,
            self.deployment.resource_group,
            self.deployment.cluster,
            azure_ip = image::AZURE_IP,
            services = self.services,
        );
        let label = format!("{LABEL}=runbook");
        docker(&[
            "run",
            "--rm",
            "--label",
            &label,
            "--network",
            &self.private_net,
            "--cap-add",
            "NET_ADMIN",
            "--add-host",
            &format!("management.azure.com:{}", image::AZURE_IP),
            "-v",
            &format!("{}:/runbook.py:ro", runbook.display()),
            "-v",
            &format!("{}:/ca.crt:ro", ca.display()),
            "-e",
            &format!("IDENTITY_ENDPOINT=http://{}/automation/identity", self.imds),
            "-e",
            &format!("IDENTITY_HEADER={}", self.deployment.automation_header),
            "--entrypoint",
            "sh",
            &self.vm_image,
            "-c",
            &script,
        ])
    }

    /// The last lines of VM `vm`'s mkube logs and cloud-init's.
    pub fn vm_logs(&self, vm: &str) -> String {
        let mut out = String::new();
        for unit in ["mkube-master", "mkube-worker", "cloud-final"] {
            if let Ok(text) = self.on_vm(
                vm,
                &[
                    "journalctl",
                    "-u",
                    unit,
                    "--no-pager",
                    "-n",
                    "25",
                    "-o",
                    "cat",
                ],
            ) {
                out.push_str(&format!("--- {vm} {unit}\n{text}\n"));
            }
        }
        out
    }

    /// The PKI directory (the operator's copy is /root/pki).
    pub fn pki(&self) -> &TestPki {
        &self.pki
    }

    /// The networks (private, public).
    pub fn networks(&self) -> (&str, &str) {
        (&self.private_net, &self.public_net)
    }
}

impl Masters for Rehearsal {
    fn master_count(&self) -> usize {
        self.masters
    }

    fn master_addr(&self, i: usize) -> String {
        format!("{}:7000", CustomData::ip(i))
    }

    fn logs(&self) -> String {
        (0..self.vms).map(|i| self.vm_logs(&self.vm(i))).collect()
    }

    fn credentials(&self) -> &Credentials {
        &self.admin
    }

    fn running(&self, i: usize) -> bool {
        self.azure.power(&self.vm(i)) == Some(azure::Power::Running)
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn run_ok(command: &mut Command, what: &str) -> Result<()> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: could not run it"))?;
    if !out.status.success() {
        bail!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
