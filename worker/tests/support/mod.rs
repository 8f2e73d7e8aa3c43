//! Support for the worker's tests against the real Docker daemon: a worker
//! process per test, pods built from short specs, waiting on conditions.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use api::pod::{Container, ContainerPort, EnvVar, Pod, PodSpec, Protocol, RestartPolicy};
use api::worker::{Fence, PodReport, ProbeRequest, ProbeResponse, WorkerClient};
use tokio::io::{AsyncBufReadExt, BufReader};

pub const TOKEN: &str = "test-token";

/// A `mkube-worker` process and a client for it. Dropping it kills the
/// process and removes the containers of its node.
pub struct WorkerProc {
    pub name: String,
    pub addr: String,
    pub client: WorkerClient,
    child: tokio::process::Child,
    version: u64,
    pub fence: Fence,
}

impl WorkerProc {
    /// Starts a worker for node `name` with fast back-off and sync intervals.
    pub async fn start(name: &str, extra: &[&str]) -> Result<WorkerProc> {
        tests::images::ensure_busybox()?;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mkube-worker"))
            .args([
                "--name",
                name,
                "--listen",
                "127.0.0.1:0",
                "--insecure",
                "--token",
                TOKEN,
                "--host-ip",
                "127.0.0.1",
                // Host firewall rules are the isolation test's business.
                "--pod-isolation",
                "off",
            ])
            .args([
                "--backoff-initial-ms",
                "200",
                "--backoff-max-ms",
                "3000",
                "--sync-interval-ms",
                "200",
            ])
            .args(["--stats-interval-ms", "500"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting mkube-worker")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .context("the worker did not start within 20 s")??
            .context("the worker exited before listening")?;
        let addr = line
            .strip_prefix("listening on ")
            .context("unexpected first line")?
            .to_string();
        let config = rpc::ClientConfig {
            token: Some(TOKEN.into()),
            ..Default::default()
        };
        let client = WorkerClient::new(rpc::Client::new(&addr, config)?);
        Ok(WorkerProc {
            name: name.into(),
            addr,
            client,
            child,
            version: 0,
            fence: Fence { epoch: 1, term: 1 },
        })
    }

    /// Sends the whole desired set.
    pub async fn set_pods(&mut self, pods: &[Pod]) -> Result<ProbeResponse> {
        self.version += 1;
        let req = ProbeRequest {
            node: self.name.clone(),
            fence: self.fence,
            version: self.version,
            base_version: None,
            upserts: pods.to_vec(),
            deletes: vec![],
            delete_grace: Default::default(),
            events_after: 0,
            more: false,
        };
        Ok(self.client.probe(&req).await?)
    }

    /// A probe that changes nothing (a delta on the current version).
    pub async fn poll(&self) -> Result<ProbeResponse> {
        let req = ProbeRequest {
            node: self.name.clone(),
            fence: self.fence,
            version: self.version,
            base_version: Some(self.version),
            upserts: vec![],
            deletes: vec![],
            delete_grace: Default::default(),
            events_after: 0,
            more: false,
        };
        Ok(self.client.probe(&req).await?)
    }

    /// Polls until `check` returns `Some`, or fails after `within`.
    pub async fn wait_for<T>(
        &self,
        within: Duration,
        what: &str,
        mut check: impl FnMut(&ProbeResponse) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + within;
        loop {
            let last = self.poll().await?;
            if let Some(v) = check(&last) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!(
                    "{what}: not reached within {within:?}; last report: {:#?}",
                    last.pods
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the process (pods stay).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        remove_node_containers(&self.name);
    }
}

/// Removes every container labelled with node `name`.
pub fn remove_node_containers(name: &str) {
    let ids =
        docker(&["ps", "-aq", "--filter", &format!("label=mkube.node={name}")]).unwrap_or_default();
    for id in ids.split_whitespace() {
        let _ = docker(&["rm", "-f", id]);
    }
}

/// Runs the docker CLI; its stdout.
pub fn docker(args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .context("running docker")?;
    if !out.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A one-container pod bound to `node` running `command`.
pub fn pod(node: &str, name: &str, command: &[&str]) -> Pod {
    let mut c = Container::new("main", tests::images::BUSYBOX);
    c.command = command.iter().map(|s| s.to_string()).collect();
    let mut p = Pod::new(
        name,
        PodSpec {
            containers: vec![c],
            restart_policy: RestartPolicy::Always,
            termination_grace_period_seconds: Some(2),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            node_name: Some(node.into()),
        },
    );
    p.metadata.uid = format!("{name}-{}", std::process::id());
    p
}

/// Adds `env` to the first container.
pub fn with_env(mut p: Pod, name: &str, value: &str) -> Pod {
    p.spec.containers[0].env.push(EnvVar {
        name: name.into(),
        value: value.into(),
    });
    p
}

/// Exposes `container_port` of the first container on `host_port`.
pub fn with_port(mut p: Pod, container_port: u16, host_port: u16) -> Pod {
    p.spec.containers[0].ports.push(ContainerPort {
        name: None,
        container_port,
        host_port: Some(host_port),
        protocol: Protocol::TCP,
    });
    p
}

/// The report of the pod named `name`.
pub fn report<'a>(r: &'a ProbeResponse, name: &str) -> Option<&'a PodReport> {
    r.pods.iter().find(|p| p.name == name)
}

pub use tests::clusters::free_port;

/// A node name unique to this test process.
pub fn node_name(test: &str) -> String {
    format!("t-{test}-{}", std::process::id())
}
