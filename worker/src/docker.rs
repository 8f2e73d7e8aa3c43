//! The Docker container runtime: [`ContainerRuntime`] through bollard.
//! The only module that talks to the daemon.
//!
//! Obligations kept here:
//! * Listing is filtered by the `mkube.node` label at the daemon, so foreign
//!   containers are never even seen; callers filter by their own node.
//! * Nothing computes container sizes (`size=false` on list and inspect);
//!   stats are one-shot samples, not the two-sample stream.
//! * An image is pulled only when `inspect` says it is absent.
//! * Every daemon error becomes a [`RuntimeError`] that names what was being
//!   done; nothing here panics on a daemon's answer.
//! * Every container gets safe defaults: `no-new-privileges` (no setuid
//!   escalation), at most [`POD_PIDS_LIMIT`] processes (no fork bomb takes
//!   the node), and json-file logs rotated at [`LOG_MAX_SIZE`] ×
//!   [`LOG_MAX_FILES`] (no chatty pod fills the disk).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, InspectContainerOptions,
    ListContainersOptions, LogsOptions, RemoveContainerOptions, StatsOptions, StopContainerOptions,
};
use futures_util::StreamExt;

use crate::model::{Observed, RunState};
use crate::runtime::{
    ContainerRuntime, CreateSpec, Details, LogQuery, MachineInfo, RuntimeError, Sample,
    parse_time_ms, tail_of,
};

/// Most processes (and threads) one container may have.
pub const POD_PIDS_LIMIT: i64 = 4096;
/// Size at which a container's log file is rotated.
pub const LOG_MAX_SIZE: &str = "10m";
/// Rotated log files kept per container.
pub const LOG_MAX_FILES: u32 = 3;

/// A bollard error as a [`RuntimeError`] saying what was being done.
fn from_bollard(action: impl Into<String>, host: &str, e: bollard::errors::Error) -> RuntimeError {
    use bollard::errors::Error as E;
    match e {
        E::DockerResponseServerError {
            status_code: 404,
            message,
        } => RuntimeError::NotFound(message),
        E::DockerResponseServerError { message, .. } => RuntimeError::Docker {
            action: action.into(),
            message,
        },
        E::SocketNotFoundError(path) => RuntimeError::Unreachable {
            host: host.into(),
            message: format!("no socket at {path}"),
        },
        E::HyperResponseError { .. }
        | E::HyperLegacyError { .. }
        | E::IOError { .. }
        | E::RequestTimeoutError => RuntimeError::Unreachable {
            host: host.into(),
            message: e.to_string(),
        },
        other => RuntimeError::Docker {
            action: action.into(),
            message: other.to_string(),
        },
    }
}

/// A connection to one Docker daemon.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
    host: String,
}

/// How long one daemon request may take before it counts as unreachable.
const REQUEST_TIMEOUT_S: u64 = 120;

impl DockerRuntime {
    /// Connects to `host` (`unix:///var/run/docker.sock` or `tcp://h:p`),
    /// agrees on an API version and checks that the daemon answers.
    pub async fn connect(host: &str) -> Result<DockerRuntime, RuntimeError> {
        let unreachable = |message: String| RuntimeError::Unreachable {
            host: host.to_string(),
            message,
        };
        let docker = if let Some(path) = host.strip_prefix("unix://") {
            Docker::connect_with_unix(path, REQUEST_TIMEOUT_S, bollard::API_DEFAULT_VERSION)
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            Docker::connect_with_http(host, REQUEST_TIMEOUT_S, bollard::API_DEFAULT_VERSION)
        } else {
            return Err(unreachable(
                "the address must start with unix:// or tcp://".into(),
            ));
        }
        .map_err(|e| unreachable(e.to_string()))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let runtime = DockerRuntime {
            docker,
            host: host.to_string(),
        };
        runtime.ping().await?;
        Ok(runtime)
    }

    fn err(
        &self,
        action: impl Into<String>,
    ) -> impl FnOnce(bollard::errors::Error) -> RuntimeError + '_ {
        let action = action.into();
        move |e| from_bollard(action, &self.host, e)
    }
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    /// Checks that the daemon answers.
    async fn ping(&self) -> Result<(), RuntimeError> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(self.err("ping"))
    }

    /// cpus, memory and version of the machine.
    async fn machine(&self) -> Result<MachineInfo, RuntimeError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(self.err("reading the daemon's info"))?;
        Ok(MachineInfo {
            cpus: info.ncpu.and_then(|n| u64::try_from(n).ok()).unwrap_or(1),
            memory_bytes: info
                .mem_total
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            version: format!("docker {}", info.server_version.unwrap_or_default()),
        })
    }

    /// Every container of `node` (its `mkube.node` label), with id, labels
    /// and the coarse state from the listing (`running`, `exited`, ...).
    /// Other nodes' containers on a shared daemon are not ours to read.
    async fn list(
        &self,
        node: &str,
    ) -> Result<Vec<(String, BTreeMap<String, String>, String)>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{}={node}", crate::model::LABEL_NODE)],
        )]);
        let options = ListContainersOptions {
            all: true,
            size: false,
            filters: Some(filters),
            ..Default::default()
        };
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(self.err("listing containers"))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let id = c.id?;
                let labels = c.labels.unwrap_or_default().into_iter().collect();
                let state = c.state.map(|s| s.to_string()).unwrap_or_default();
                Some((id, labels, state))
            })
            .collect())
    }

    /// Calls `exited` whenever one of `node`'s containers exits (Docker's
    /// `die` events), so that an exit is seen at once rather than at the
    /// next sync; returns when the event stream ends or fails.
    async fn watch_exits(
        &self,
        node: &str,
        exited: &(dyn Fn() + Send + Sync),
    ) -> Result<(), RuntimeError> {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("event".to_string(), vec!["die".to_string()]),
            (
                "label".to_string(),
                vec![format!("{}={node}", crate::model::LABEL_NODE)],
            ),
        ]);
        let options = EventsOptions {
            filters: Some(filters),
            ..Default::default()
        };
        let mut stream = self.docker.events(Some(options));
        while let Some(event) = stream.next().await {
            event.map_err(self.err("watching container events"))?;
            exited();
        }
        Ok(())
    }

    /// The precise state and details of one container.
    async fn inspect(
        &self,
        id: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(Observed, Details), RuntimeError> {
        let options = InspectContainerOptions { size: false };
        let c = self
            .docker
            .inspect_container(id, Some(options))
            .await
            .map_err(self.err(format!("inspecting {id}")))?;
        let state = c.state.unwrap_or_default();
        let started = state.started_at.as_deref().and_then(parse_time_ms);
        let finished = state.finished_at.as_deref().and_then(parse_time_ms);
        let status = state.status.map(|s| s.to_string()).unwrap_or_default();
        let run_state = match status.as_str() {
            "running" => RunState::Running {
                started_at_ms: started.unwrap_or(0),
            },
            "created" => RunState::Created,
            "exited" => RunState::Exited {
                exit_code: state.exit_code.unwrap_or(-1),
                started_at_ms: started.unwrap_or(0),
                finished_at_ms: finished.unwrap_or(0),
                oom_killed: state.oom_killed.unwrap_or(false),
            },
            other => RunState::Other(other.to_string()),
        };
        let observed = Observed::from_labels(id.to_string(), labels, run_state)
            .ok_or_else(|| RuntimeError::NotFound(format!("{id} has no mkube labels")))?;
        let ip = c
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|nets| {
                nets.into_values()
                    .find_map(|e| e.ip_address.filter(|ip| !ip.is_empty()))
            });
        let details = Details {
            image: c.config.and_then(|cfg| cfg.image).unwrap_or_default(),
            started_at: started.and(state.started_at),
            finished_at: finished.and(state.finished_at),
            ip,
            output: None,
        };
        Ok((observed, details))
    }

    /// Pulls `image` unless it is present. Returns whether it pulled.
    async fn ensure_image(&self, image: &str) -> Result<bool, RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(false),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => {
                return Err(from_bollard(
                    format!("inspecting image {image}"),
                    &self.host,
                    e,
                ));
            }
        }
        let options = CreateImageOptions {
            from_image: Some(image.to_string()),
            ..Default::default()
        };
        let mut pull = self.docker.create_image(Some(options), None, None);
        while let Some(step) = pull.next().await {
            match step {
                Ok(info) => {
                    if let Some(message) = info.error_detail.and_then(|d| d.message) {
                        return Err(RuntimeError::ImagePull {
                            image: image.into(),
                            message,
                        });
                    }
                }
                Err(e) => {
                    let e = from_bollard("pulling", &self.host, e);
                    if e.is_unreachable() {
                        return Err(e);
                    }
                    return Err(RuntimeError::ImagePull {
                        image: image.into(),
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(true)
    }

    /// Creates a container (the image must be present) and starts it.
    async fn create_and_start(&self, spec: &CreateSpec) -> Result<String, RuntimeError> {
        let mut port_bindings = HashMap::new();
        let mut exposed = Vec::new();
        for (container_port, host_port, proto) in &spec.ports {
            let key = format!("{container_port}/{proto}");
            exposed.push(key.clone());
            port_bindings.insert(
                key,
                Some(vec![PortBinding {
                    host_ip: spec.publish_ip.clone(),
                    host_port: Some(host_port.to_string()),
                }]),
            );
        }
        let host_config = HostConfig {
            network_mode: spec.network_mode.clone(),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            nano_cpus: spec.nano_cpus,
            memory: spec.memory_bytes,
            init: Some(false),
            dns: spec.dns.as_ref().map(|d| d.servers.clone()),
            dns_search: spec.dns.as_ref().map(|d| d.search.clone()),
            dns_options: spec.dns.as_ref().map(|d| d.options.clone()),
            // Safe defaults for every container (see the constants).
            security_opt: Some(vec!["no-new-privileges".into()]),
            pids_limit: Some(POD_PIDS_LIMIT),
            log_config: Some(bollard::models::HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(
                    [
                        ("max-size".to_string(), LOG_MAX_SIZE.to_string()),
                        ("max-file".to_string(), LOG_MAX_FILES.to_string()),
                    ]
                    .into(),
                ),
            }),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: (!spec.entrypoint.is_empty()).then(|| spec.entrypoint.clone()),
            cmd: (!spec.cmd.is_empty()).then(|| spec.cmd.clone()),
            env: (!spec.env.is_empty()).then(|| spec.env.clone()),
            labels: Some(spec.labels.clone().into_iter().collect()),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            stop_timeout: i64::try_from(spec.stop_timeout_seconds).ok(),
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(self.err(format!("creating container {}", spec.name)))?;
        if let Err(e) = self.start(&created.id).await {
            // Leave no half-made container behind: the next round creates afresh.
            let _ = self.remove(&created.id).await;
            return Err(e);
        }
        Ok(created.id)
    }

    /// Starts a created or exited container.
    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(self.err(format!("starting {id}")))
    }

    /// SIGTERM, then SIGKILL after `grace_seconds`; returns when it has exited.
    async fn stop(&self, id: &str, grace_seconds: u64) -> Result<(), RuntimeError> {
        let options = StopContainerOptions {
            t: Some(i32::try_from(grace_seconds).unwrap_or(i32::MAX)),
            signal: None,
        };
        match self.docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(from_bollard(format!("stopping {id}"), &self.host, e)),
        }
    }

    /// Removes a container (forcing, in case it still runs).
    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match self.docker.remove_container(id, Some(options)).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(from_bollard(format!("removing {id}"), &self.host, e)),
        }
    }

    /// One resource sample of a running container.
    async fn sample(&self, id: &str) -> Result<Sample, RuntimeError> {
        let options = StatsOptions {
            stream: false,
            one_shot: true,
        };
        let mut stream = self.docker.stats(id, Some(options));
        let stats = match stream.next().await {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                return Err(from_bollard(
                    format!("reading stats of {id}"),
                    &self.host,
                    e,
                ));
            }
            None => return Err(RuntimeError::NotFound(id.to_string())),
        };
        let cpu_total_ns = stats
            .cpu_stats
            .and_then(|c| c.cpu_usage)
            .and_then(|u| u.total_usage)
            .unwrap_or(0);
        let memory = stats.memory_stats.unwrap_or_default();
        let cache = memory
            .stats
            .as_ref()
            .and_then(|s| {
                s.get("inactive_file")
                    .or_else(|| s.get("total_inactive_file"))
                    .copied()
            })
            .unwrap_or(0);
        Ok(Sample {
            cpu_total_ns,
            memory_bytes: memory.usage.unwrap_or(0).saturating_sub(cache),
        })
    }

    /// Log lines of a container with their Docker timestamps
    /// (`<rfc3339nano> <line>`), at most `max_bytes` in all.
    async fn logs(&self, id: &str, opts: LogQuery) -> Result<(Vec<String>, bool), RuntimeError> {
        let options = LogsOptions {
            follow: opts.follow,
            stdout: true,
            stderr: true,
            since: opts.since_unix_s,
            until: 0,
            timestamps: true,
            tail: opts
                .tail
                .map(|t| t.to_string())
                .unwrap_or_else(|| "all".into()),
        };
        let mut stream = self.docker.logs(id, Some(options));
        let mut lines = Vec::new();
        let mut bytes = 0usize;
        let deadline = tokio::time::Instant::now() + opts.wait;
        loop {
            let next = if opts.follow {
                match tokio::time::timeout_at(deadline, stream.next()).await {
                    Ok(n) => n,
                    Err(_) => break,
                }
            } else {
                stream.next().await
            };
            let Some(item) = next else { break };
            let chunk = match item.map_err(self.err(format!("reading logs of {id}")))? {
                LogOutput::StdOut { message }
                | LogOutput::StdErr { message }
                | LogOutput::Console { message } => message,
                LogOutput::StdIn { .. } => continue,
            };
            for line in String::from_utf8_lossy(&chunk).lines() {
                bytes += line.len();
                if bytes > opts.max_bytes {
                    return Ok((lines, true));
                }
                lines.push(line.to_string());
            }
            if opts.follow && !lines.is_empty() && opts.return_on_first {
                // Long-poll: answer soon after the first lines arrive.
                let settle = tokio::time::Instant::now() + Duration::from_millis(50);
                let until = settle.min(deadline);
                while let Ok(Some(Ok(more))) = tokio::time::timeout_at(until, stream.next()).await {
                    if let LogOutput::StdOut { message } | LogOutput::StdErr { message } = more {
                        lines.extend(
                            String::from_utf8_lossy(&message)
                                .lines()
                                .map(str::to_string),
                        );
                    }
                }
                break;
            }
        }
        Ok((lines, false))
    }

    /// The end of an exited container's output: its last lines, stdout and
    /// stderr interleaved, that fit in `max_bytes` (a longer last line is
    /// cut to its end).
    async fn output_tail(&self, id: &str, max_bytes: usize) -> Result<String, RuntimeError> {
        let options = LogsOptions {
            follow: false,
            stdout: true,
            stderr: true,
            since: 0,
            until: 0,
            timestamps: false,
            tail: "200".to_string(),
        };
        let mut stream = self.docker.logs(id, Some(options));
        let mut out: Vec<u8> = Vec::new();
        while let Some(item) = stream.next().await {
            match item.map_err(self.err(format!("reading logs of {id}")))? {
                LogOutput::StdOut { message }
                | LogOutput::StdErr { message }
                | LogOutput::Console { message } => out.extend_from_slice(&message),
                LogOutput::StdIn { .. } => {}
            }
        }
        Ok(tail_of(&out, max_bytes))
    }

    /// Runs a command in a running container; `(exit code, stdout, stderr)`.
    async fn exec(
        &self,
        id: &str,
        command: Vec<String>,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<(i64, String, String), RuntimeError> {
        let options = CreateExecOptions {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(command),
            ..Default::default()
        };
        let exec = self
            .docker
            .create_exec(id, options)
            .await
            .map_err(self.err(format!("exec in {id}")))?;
        let started = self
            .docker
            .start_exec(
                &exec.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(self.err(format!("exec in {id}")))?;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        if let StartExecResults::Attached { mut output, .. } = started {
            let collect = async {
                while let Some(item) = output.next().await {
                    match item {
                        Ok(LogOutput::StdOut { message }) => {
                            append_bounded(&mut stdout, &message, max_bytes)
                        }
                        Ok(LogOutput::StdErr { message }) => {
                            append_bounded(&mut stderr, &message, max_bytes)
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            };
            if tokio::time::timeout(timeout, collect).await.is_err() {
                return Err(RuntimeError::Docker {
                    action: format!("exec in {id}"),
                    message: format!("timed out after {timeout:?}"),
                });
            }
        }
        let inspect = self
            .docker
            .inspect_exec(&exec.id)
            .await
            .map_err(self.err(format!("exec in {id}")))?;
        Ok((
            inspect.exit_code.unwrap_or(-1),
            String::from_utf8_lossy(&stdout).into_owned(),
            String::from_utf8_lossy(&stderr).into_owned(),
        ))
    }
}

fn append_bounded(buf: &mut Vec<u8>, bytes: &[u8], max: usize) {
    let room = max.saturating_sub(buf.len());
    buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
}
