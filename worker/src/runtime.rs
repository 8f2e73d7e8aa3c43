//! The container runtime as the agent sees it: the [`ContainerRuntime`]
//! trait, the values that cross it, and small helpers on times and output.
//!
//! Two runtimes implement it: Docker ([`crate::docker`], what ships) and a
//! simulated one ([`crate::hollow`], for hollow nodes that stand in for
//! real machines in scale runs, as kubemark's do). The agent, the
//! reconciler, the reports and the probes are the same code over either.
//!
//! Obligations of an implementation:
//! * `list` returns only the containers labelled with the node's name
//!   (`mkube.node`), never another node's.
//! * Every failure is a [`RuntimeError`] that names what was being done;
//!   [`RuntimeError::Unreachable`] only when the runtime itself does not
//!   answer (the agent then reports the node as unable to run pods).
//! * `stop` returns once the container has exited; `remove` of an absent
//!   container succeeds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::model::Observed;

/// Why a runtime call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The daemon does not answer.
    #[error(
        "cannot reach the Docker daemon at {host}: {message} (is dockerd running, and may this user use its socket?)"
    )]
    Unreachable {
        /// Where we looked.
        host: String,
        /// What failed.
        message: String,
    },
    /// The image is absent and could not be pulled.
    #[error("image {image:?} is not on this node and could not be pulled: {message}")]
    ImagePull {
        /// The image.
        image: String,
        /// The daemon's answer.
        message: String,
    },
    /// No such container.
    #[error("no such container {0}")]
    NotFound(String),
    /// The daemon refused a request.
    #[error("{action}: {message}")]
    Docker {
        /// What was being done.
        action: String,
        /// The daemon's answer.
        message: String,
    },
}

impl RuntimeError {
    /// Whether the daemon itself is the problem.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, RuntimeError::Unreachable { .. })
    }
}

/// What the daemon says about the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineInfo {
    /// Logical cpus.
    pub cpus: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// `docker <version>`.
    pub version: String,
}

/// Details of a container beyond its [`RunState`], for pod status and probes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details {
    /// The image it was created from.
    pub image: String,
    /// RFC 3339 start time, if started.
    pub started_at: Option<String>,
    /// RFC 3339 finish time, if exited.
    pub finished_at: Option<String>,
    /// Its address on its Docker network, if it has one of its own.
    pub ip: Option<String>,
    /// Once exited: the end of its output (see [`ContainerRuntime::output_tail`]).
    pub output: Option<String>,
}

/// One container's resource use, as a cumulative sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Cumulative cpu time in nanoseconds.
    pub cpu_total_ns: u64,
    /// Memory in use, less the reclaimable page cache.
    pub memory_bytes: u64,
}

/// How to create one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSpec {
    /// Docker name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Entrypoint override.
    pub entrypoint: Vec<String>,
    /// Cmd override.
    pub cmd: Vec<String>,
    /// `NAME=value`.
    pub env: Vec<String>,
    /// mkube labels.
    pub labels: BTreeMap<String, String>,
    /// `(container port, host port, "tcp"|"udp")`.
    pub ports: Vec<(u16, u16, &'static str)>,
    /// `container:<id>`, `host`, or `None` for Docker's default network.
    pub network_mode: Option<String>,
    /// The host address host ports are published on (all when `None`).
    pub publish_ip: Option<String>,
    /// Docker `NanoCpus`.
    pub nano_cpus: Option<i64>,
    /// Docker `Memory` in bytes.
    pub memory_bytes: Option<i64>,
    /// Seconds between SIGTERM and SIGKILL when Docker stops it.
    pub stop_timeout_seconds: u64,
    /// The container's resolver, when it has a network of its own.
    pub dns: Option<PodDns>,
}

/// A pod's resolver: Docker's `Dns`, `DnsSearch` and `DnsOptions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDns {
    /// Name server addresses.
    pub servers: Vec<String>,
    /// Search domains.
    pub search: Vec<String>,
    /// resolv.conf options (`ndots:5`).
    pub options: Vec<String>,
}

impl PodDns {
    /// What Kubernetes gives a pod of `namespace` (the `ClusterFirst`
    /// policy): the cluster's name servers, a search path from the
    /// namespace's Services out to the cluster domain, and `ndots:5`.
    pub fn cluster_first(servers: &[String], domain: &str, namespace: &str) -> PodDns {
        let domain = domain.trim_end_matches('.');
        PodDns {
            servers: servers.to_vec(),
            search: vec![
                format!("{namespace}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.to_string(),
            ],
            options: vec!["ndots:5".into()],
        }
    }
}

/// A container runtime: what the agent needs of Docker, or of a stand-in.
#[async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Checks that the runtime answers.
    async fn ping(&self) -> Result<(), RuntimeError>;

    /// cpus, memory and version of the machine.
    async fn machine(&self) -> Result<MachineInfo, RuntimeError>;

    /// Every container of `node` (its `mkube.node` label), with id, labels
    /// and the coarse state from the listing (`running`, `exited`, ...).
    async fn list(
        &self,
        node: &str,
    ) -> Result<Vec<(String, BTreeMap<String, String>, String)>, RuntimeError>;

    /// Calls `exited` whenever one of `node`'s containers exits, so that an
    /// exit is seen at once rather than at the next sync; returns when the
    /// event stream ends or fails.
    async fn watch_exits(
        &self,
        node: &str,
        exited: &(dyn Fn() + Send + Sync),
    ) -> Result<(), RuntimeError>;

    /// The precise state and details of one container.
    async fn inspect(
        &self,
        id: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(Observed, Details), RuntimeError>;

    /// Pulls `image` unless it is present. Returns whether it pulled.
    async fn ensure_image(&self, image: &str) -> Result<bool, RuntimeError>;

    /// Creates a container (the image must be present) and starts it.
    async fn create_and_start(&self, spec: &CreateSpec) -> Result<String, RuntimeError>;

    /// Starts a created or exited container.
    async fn start(&self, id: &str) -> Result<(), RuntimeError>;

    /// SIGTERM, then SIGKILL after `grace_seconds`; returns when it has exited.
    async fn stop(&self, id: &str, grace_seconds: u64) -> Result<(), RuntimeError>;

    /// Removes a container (forcing, in case it still runs).
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;

    /// One resource sample of a running container.
    async fn sample(&self, id: &str) -> Result<Sample, RuntimeError>;

    /// Log lines of a container with their timestamps (`<rfc3339nano>
    /// <line>`), at most `opts.max_bytes` in all; and whether it stopped
    /// at that bound.
    async fn logs(&self, id: &str, opts: LogQuery) -> Result<(Vec<String>, bool), RuntimeError>;

    /// The end of an exited container's output: its last lines, stdout and
    /// stderr interleaved, that fit in `max_bytes` (a longer last line is
    /// cut to its end).
    async fn output_tail(&self, id: &str, max_bytes: usize) -> Result<String, RuntimeError>;

    /// Runs a command in a running container; `(exit code, stdout, stderr)`.
    async fn exec(
        &self,
        id: &str,
        command: Vec<String>,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<(i64, String, String), RuntimeError>;
}

/// The runtime an agent runs on.
pub type Runtime = Arc<dyn ContainerRuntime>;

/// The last whole lines of `bytes` that fit in `max` bytes (the end of
/// the last line alone if it does not fit), as text.
pub fn tail_of(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.as_ref();
    if text.len() <= max {
        return text.to_string();
    }
    let cut = (text.len() - max..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    let start = match text[cut..].find('\n') {
        _ if text.as_bytes()[cut - 1] == b'\n' => cut,
        Some(nl) if cut + nl + 1 < text.len() => cut + nl + 1,
        _ => cut,
    };
    text[start..].to_string()
}

/// What [`ContainerRuntime::logs`] reads.
#[derive(Debug, Clone, Copy)]
pub struct LogQuery {
    /// Only the last N lines.
    pub tail: Option<u64>,
    /// Only lines from this Unix second (0: all).
    pub since_unix_s: i32,
    /// Keep the stream open for new lines.
    pub follow: bool,
    /// With `follow`: stop waiting after this long.
    pub wait: Duration,
    /// With `follow`: answer as soon as lines arrive.
    pub return_on_first: bool,
    /// Stop after this many bytes.
    pub max_bytes: usize,
}

/// Parses Docker's RFC 3339 times; `None` for its zero time (year 1).
pub fn parse_time_ms(text: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(text)
        .or_else(|_| humantime::parse_rfc3339(text))
        .ok()?;
    t.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_millis()).ok())
        .filter(|ms| *ms > 0)
}

/// The current time in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The current time in RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::tail_of;

    #[test]
    fn the_tail_keeps_whole_lines_that_fit() {
        assert_eq!(tail_of(b"a\nb\n", 10), "a\nb\n");
        assert_eq!(tail_of(b"first\nsecond\nthird\n", 12), "third\n");
        assert_eq!(tail_of(b"first\nsecond\nthird\n", 13), "second\nthird\n");
        // One line longer than the bound: its end.
        assert_eq!(tail_of(b"abcdefgh", 3), "fgh");
        // Never a split character.
        assert_eq!(tail_of("ééé".as_bytes(), 3), "é");
    }
}
