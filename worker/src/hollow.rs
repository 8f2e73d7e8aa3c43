//! A simulated container runtime, for hollow nodes: the worker's own
//! agent, reconciler, reports and probe answers over containers that exist
//! only in memory, so that a thousand nodes fit on one machine beside the
//! masters (kubemark's hollow kubelet over a fake runtime, KWOK's
//! simulated nodes).
//!
//! A hollow container:
//! * starts [`HollowSettings::start_delay`] after it is created (the call
//!   returns then, as Docker's start does);
//! * runs what its command says, read as a tiny script: `sleep S` runs S
//!   seconds, `exit N` exits with N, `true` and `false` exit with 0 and 1;
//!   steps are separated by `;` or `&&` (`sleep 2; exit 3`); any other
//!   command (a server) runs until it is stopped;
//! * exits with 143 when stopped (a process that obeys SIGTERM);
//! * uses [`HollowSettings::container_cpu_millis`] of cpu while it runs and
//!   [`HollowSettings::container_memory_bytes`] of memory;
//! * has no address, no log but one line saying it started, and answers
//!   every exec with exit code 0.
//!
//! Invariants: state is computed from the clock on every call, so a
//! container's exit is seen by `list` and `inspect` as soon as it is due
//! (and `watch_exits` is woken then); names are unique per runtime, like
//! Docker's; nothing here fails except for an unknown container.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::model::{LABEL_NODE, Observed, RunState};
use crate::runtime::{
    ContainerRuntime, CreateSpec, Details, LogQuery, MachineInfo, RuntimeError, Sample, now_ms,
};

/// How hollow containers behave, and the machine they pretend to run on.
#[derive(Debug, Clone)]
pub struct HollowSettings {
    /// From create to running.
    pub start_delay: Duration,
    /// The machine's cpus.
    pub cpus: u64,
    /// The machine's memory.
    pub memory_bytes: u64,
    /// cpu a running container uses, in millicores.
    pub container_cpu_millis: u64,
    /// Memory a running container uses.
    pub container_memory_bytes: u64,
}

impl Default for HollowSettings {
    fn default() -> Self {
        HollowSettings {
            start_delay: Duration::from_millis(500),
            cpus: 4,
            memory_bytes: 16 << 30,
            container_cpu_millis: 10,
            container_memory_bytes: 16 << 20,
        }
    }
}

/// What a container's command does once started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Script {
    /// Runs until stopped.
    Serve,
    /// Exits with `code` after `after_ms`.
    Exit { after_ms: u64, code: i64 },
}

impl Script {
    /// Reads a command (entrypoint and arguments, joined) as a script (see
    /// the module doc).
    fn parse(command: &[String]) -> Script {
        let text = command.join(" ");
        // `sh -c "..."`: the script is the text after `-c`.
        let text = text.split_once(" -c ").map_or(text.as_str(), |(_, s)| s);
        let mut after_ms = 0u64;
        let mut code = None;
        for step in text.split([';', '&', '\n']).map(str::trim) {
            let words: Vec<&str> = step.split_whitespace().collect();
            match words.as_slice() {
                [] => {}
                ["sleep", s] => {
                    let Ok(seconds) = s.parse::<f64>() else {
                        return Script::Serve;
                    };
                    if !seconds.is_finite() || seconds < 0.0 {
                        return Script::Serve;
                    }
                    after_ms = after_ms.saturating_add((seconds * 1000.0) as u64);
                }
                ["exit", n] => {
                    code = Some(n.parse().unwrap_or(2));
                    break;
                }
                ["exit"] | ["true"] => {
                    code = Some(0);
                    break;
                }
                ["false"] => {
                    code = Some(1);
                    break;
                }
                _ => return Script::Serve,
            }
        }
        match code {
            Some(code) => Script::Exit { after_ms, code },
            None if after_ms > 0 => Script::Exit { after_ms, code: 0 },
            None => Script::Serve,
        }
    }
}

#[derive(Debug, Clone)]
struct Container {
    name: String,
    image: String,
    labels: BTreeMap<String, String>,
    script: Script,
    /// Last start, if started.
    started_ms: Option<u64>,
    /// Exit code and time, once stopped by a call (a script's own exit is
    /// computed from `started_ms`).
    stopped: Option<(i64, u64)>,
    /// cpu used by earlier runs, in ns.
    cpu_before_ns: u64,
}

impl Container {
    fn state(&self, now: u64) -> RunState {
        let Some(started_at_ms) = self.started_ms else {
            return RunState::Created;
        };
        let exited = self.stopped.or(match self.script {
            Script::Exit { after_ms, code } if now >= started_at_ms.saturating_add(after_ms) => {
                Some((code, started_at_ms.saturating_add(after_ms)))
            }
            _ => None,
        });
        match exited {
            Some((exit_code, finished_at_ms)) => RunState::Exited {
                exit_code,
                started_at_ms,
                finished_at_ms,
                oom_killed: false,
            },
            None => RunState::Running { started_at_ms },
        }
    }

    fn state_word(&self, now: u64) -> &'static str {
        match self.state(now) {
            RunState::Created => "created",
            RunState::Running { .. } => "running",
            RunState::Exited { .. } => "exited",
            RunState::Other(_) => "dead",
        }
    }
}

/// A runtime whose containers live in memory (see the module doc).
#[derive(Debug)]
pub struct HollowRuntime {
    settings: HollowSettings,
    containers: Mutex<HashMap<String, Container>>,
    next_id: Mutex<u64>,
    exits: Arc<Notify>,
}

impl HollowRuntime {
    /// An empty runtime.
    pub fn new(settings: HollowSettings) -> HollowRuntime {
        HollowRuntime {
            settings,
            containers: Mutex::new(HashMap::new()),
            next_id: Mutex::new(0),
            exits: Arc::new(Notify::new()),
        }
    }

    fn containers(&self) -> MutexGuard<'_, HashMap<String, Container>> {
        // A panic elsewhere while holding the lock leaves a map that is
        // still whole: every update below is a single insert or field write.
        self.containers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many containers run now (for the hollow process's figures).
    pub fn running(&self) -> usize {
        let now = now_ms();
        self.containers()
            .values()
            .filter(|c| matches!(c.state(now), RunState::Running { .. }))
            .count()
    }

    /// Wakes `watch_exits` when the script of a container started at
    /// `started_ms` is due to exit.
    fn schedule_exit(&self, script: Script, started_ms: u64) {
        if let Script::Exit { after_ms, .. } = script {
            let exits = Arc::clone(&self.exits);
            let due = started_ms.saturating_add(after_ms).saturating_sub(now_ms());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(due)).await;
                exits.notify_waiters();
            });
        }
    }

    fn not_found(id: &str) -> RuntimeError {
        RuntimeError::NotFound(format!("no such container: {id}"))
    }
}

/// cpu time of `ran_ms` of running: millicores × ms is 1,000 ns each.
fn cpu_ns(ran_ms: u64, settings: &HollowSettings) -> u64 {
    ran_ms
        .saturating_mul(settings.container_cpu_millis)
        .saturating_mul(1_000)
}

/// RFC 3339 of a time in ms since the epoch (at most the end of year
/// 9999, what the format can say: a script's exit may lie further).
fn rfc3339(ms: u64) -> String {
    const LAST_MS: u64 = 253_402_300_799_999;
    let t = UNIX_EPOCH
        .checked_add(Duration::from_millis(ms.min(LAST_MS)))
        .unwrap_or(UNIX_EPOCH);
    humantime::format_rfc3339_millis(t).to_string()
}

#[async_trait]
impl ContainerRuntime for HollowRuntime {
    async fn ping(&self) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn machine(&self) -> Result<MachineInfo, RuntimeError> {
        Ok(MachineInfo {
            cpus: self.settings.cpus,
            memory_bytes: self.settings.memory_bytes,
            version: "hollow".into(),
        })
    }

    async fn list(
        &self,
        node: &str,
    ) -> Result<Vec<(String, BTreeMap<String, String>, String)>, RuntimeError> {
        let now = now_ms();
        Ok(self
            .containers()
            .iter()
            .filter(|(_, c)| c.labels.get(LABEL_NODE).is_some_and(|n| n == node))
            .map(|(id, c)| (id.clone(), c.labels.clone(), c.state_word(now).to_string()))
            .collect())
    }

    async fn watch_exits(
        &self,
        _node: &str,
        exited: &(dyn Fn() + Send + Sync),
    ) -> Result<(), RuntimeError> {
        loop {
            self.exits.notified().await;
            exited();
        }
    }

    async fn inspect(
        &self,
        id: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(Observed, Details), RuntimeError> {
        let container = self
            .containers()
            .get(id)
            .cloned()
            .ok_or_else(|| Self::not_found(id))?;
        let state = container.state(now_ms());
        let (started, finished) = match &state {
            RunState::Running { started_at_ms } => (Some(*started_at_ms), None),
            RunState::Exited {
                started_at_ms,
                finished_at_ms,
                ..
            } => (Some(*started_at_ms), Some(*finished_at_ms)),
            _ => (None, None),
        };
        let observed = Observed::from_labels(id.to_string(), labels, state)
            .ok_or_else(|| RuntimeError::NotFound(format!("{id} has no mkube labels")))?;
        let details = Details {
            image: container.image,
            started_at: started.map(rfc3339),
            finished_at: finished.map(rfc3339),
            ip: None,
            output: None,
        };
        Ok((observed, details))
    }

    async fn ensure_image(&self, _image: &str) -> Result<bool, RuntimeError> {
        Ok(false)
    }

    async fn create_and_start(&self, spec: &CreateSpec) -> Result<String, RuntimeError> {
        if self.containers().values().any(|c| c.name == spec.name) {
            return Err(RuntimeError::Docker {
                action: format!("creating container {}", spec.name),
                message: format!("the name {:?} is already in use", spec.name),
            });
        }
        tokio::time::sleep(self.settings.start_delay).await;
        let id = {
            let mut next = self
                .next_id
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *next += 1;
            format!("hollow{:016x}", *next)
        };
        let command: Vec<String> = spec.entrypoint.iter().chain(&spec.cmd).cloned().collect();
        let script = Script::parse(&command);
        let started = now_ms();
        self.containers().insert(
            id.clone(),
            Container {
                name: spec.name.clone(),
                image: spec.image.clone(),
                labels: spec.labels.clone(),
                script,
                started_ms: Some(started),
                stopped: None,
                cpu_before_ns: 0,
            },
        );
        self.schedule_exit(script, started);
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let now = now_ms();
        let script = {
            let mut containers = self.containers();
            let c = containers.get_mut(id).ok_or_else(|| Self::not_found(id))?;
            if let RunState::Exited {
                started_at_ms,
                finished_at_ms,
                ..
            } = c.state(now)
            {
                let ran = finished_at_ms.saturating_sub(started_at_ms);
                c.cpu_before_ns = c.cpu_before_ns.saturating_add(cpu_ns(ran, &self.settings));
            }
            c.started_ms = Some(now);
            c.stopped = None;
            c.script
        };
        self.schedule_exit(script, now);
        Ok(())
    }

    async fn stop(&self, id: &str, _grace_seconds: u64) -> Result<(), RuntimeError> {
        let now = now_ms();
        {
            let mut containers = self.containers();
            let c = containers.get_mut(id).ok_or_else(|| Self::not_found(id))?;
            if matches!(c.state(now), RunState::Running { .. }) {
                c.stopped = Some((143, now));
            }
        }
        self.exits.notify_waiters();
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.containers().remove(id);
        self.exits.notify_waiters();
        Ok(())
    }

    async fn sample(&self, id: &str) -> Result<Sample, RuntimeError> {
        let now = now_ms();
        let containers = self.containers();
        let c = containers.get(id).ok_or_else(|| Self::not_found(id))?;
        let ran_ms = match c.state(now) {
            RunState::Running { started_at_ms } => now.saturating_sub(started_at_ms),
            RunState::Exited {
                started_at_ms,
                finished_at_ms,
                ..
            } => finished_at_ms.saturating_sub(started_at_ms),
            _ => 0,
        };
        let cpu_total_ns = c
            .cpu_before_ns
            .saturating_add(cpu_ns(ran_ms, &self.settings));
        Ok(Sample {
            cpu_total_ns,
            memory_bytes: self.settings.container_memory_bytes,
        })
    }

    async fn logs(&self, id: &str, opts: LogQuery) -> Result<(Vec<String>, bool), RuntimeError> {
        let line = {
            let containers = self.containers();
            let c = containers.get(id).ok_or_else(|| Self::not_found(id))?;
            c.started_ms
                .map(|ms| format!("{} hollow container {} started", rfc3339(ms), c.name))
        };
        if line.is_none() && opts.follow {
            tokio::time::sleep(opts.wait).await;
        }
        let lines: Vec<String> = line.into_iter().collect();
        let bytes: usize = lines.iter().map(String::len).sum();
        if bytes > opts.max_bytes {
            return Ok((Vec::new(), true));
        }
        Ok((lines, false))
    }

    async fn output_tail(&self, id: &str, max_bytes: usize) -> Result<String, RuntimeError> {
        let containers = self.containers();
        let c = containers.get(id).ok_or_else(|| Self::not_found(id))?;
        let text = match c.state(now_ms()) {
            RunState::Exited { exit_code, .. } => format!("hollow: exited with {exit_code}\n"),
            _ => String::new(),
        };
        Ok(crate::runtime::tail_of(text.as_bytes(), max_bytes))
    }

    async fn exec(
        &self,
        id: &str,
        _command: Vec<String>,
        _timeout: Duration,
        _max_bytes: usize,
    ) -> Result<(i64, String, String), RuntimeError> {
        let containers = self.containers();
        let c = containers.get(id).ok_or_else(|| Self::not_found(id))?;
        match c.state(now_ms()) {
            RunState::Running { .. } => Ok((0, String::new(), String::new())),
            _ => Err(RuntimeError::Docker {
                action: format!("exec in {id}"),
                message: "the container is not running".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn commands_read_as_scripts() {
        assert_eq!(Script::parse(&cmd(&["nginx"])), Script::Serve);
        assert_eq!(
            Script::parse(&cmd(&["sleep", "3600"])),
            Script::Exit {
                after_ms: 3_600_000,
                code: 0
            }
        );
        assert_eq!(
            Script::parse(&cmd(&["sh", "-c", "sleep 2; exit 3"])),
            Script::Exit {
                after_ms: 2_000,
                code: 3
            }
        );
        assert_eq!(
            Script::parse(&cmd(&["sh", "-c", "sleep 0.5 && true"])),
            Script::Exit {
                after_ms: 500,
                code: 0
            }
        );
        assert_eq!(
            Script::parse(&cmd(&["false"])),
            Script::Exit {
                after_ms: 0,
                code: 1
            }
        );
        // A sleep past the end of time is a long sleep, not a panic.
        let far = Script::parse(&cmd(&["sleep", "1e300"]));
        let c = Container {
            name: "far".into(),
            image: String::new(),
            labels: BTreeMap::new(),
            script: far,
            started_ms: Some(1),
            stopped: None,
            cpu_before_ns: 0,
        };
        assert!(matches!(c.state(now_ms()), RunState::Running { .. }));
        assert!(!rfc3339(u64::MAX).is_empty());
        // Anything else serves until stopped; bad numbers too.
        assert_eq!(Script::parse(&cmd(&["sleep", "forever"])), Script::Serve);
        assert_eq!(Script::parse(&cmd(&["sleep", "-1"])), Script::Serve);
        assert_eq!(Script::parse(&cmd(&["sh", "-c", "echo hi"])), Script::Serve);
    }

    fn spec(name: &str, cmd: &[&str]) -> CreateSpec {
        CreateSpec {
            name: name.into(),
            image: "busybox".into(),
            entrypoint: Vec::new(),
            cmd: cmd.iter().map(|w| w.to_string()).collect(),
            env: Vec::new(),
            labels: BTreeMap::from([(LABEL_NODE.to_string(), "h1".to_string())]),
            ports: Vec::new(),
            network_mode: None,
            publish_ip: None,
            nano_cpus: None,
            memory_bytes: None,
            stop_timeout_seconds: 1,
            dns: None,
        }
    }

    #[tokio::test]
    async fn containers_start_run_their_script_and_stop() {
        let rt = HollowRuntime::new(HollowSettings {
            start_delay: Duration::ZERO,
            ..Default::default()
        });
        let server = rt.create_and_start(&spec("web", &["nginx"])).await.unwrap();
        let job = rt
            .create_and_start(&spec("job", &["exit", "4"]))
            .await
            .unwrap();
        // Names are unique, as Docker's are.
        assert!(rt.create_and_start(&spec("web", &["nginx"])).await.is_err());
        let listed = rt.list("h1").await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(rt.list("h2").await.unwrap().is_empty());
        let state = |id: &str| {
            listed
                .iter()
                .find(|(i, _, _)| i == id)
                .map(|(_, _, s)| s.clone())
        };
        assert_eq!(state(&server).as_deref(), Some("running"));
        assert_eq!(state(&job).as_deref(), Some("exited"));
        rt.stop(&server, 1).await.unwrap();
        let c = rt.containers().get(&server).cloned().unwrap();
        assert!(matches!(
            c.state(now_ms()),
            RunState::Exited { exit_code: 143, .. }
        ));
        rt.start(&server).await.unwrap();
        assert!(matches!(
            rt.containers().get(&server).unwrap().state(now_ms()),
            RunState::Running { .. }
        ));
        rt.remove(&server).await.unwrap();
        rt.remove(&server).await.unwrap();
        assert!(matches!(
            rt.sample(&server).await,
            Err(RuntimeError::NotFound(_))
        ));
    }
}
