//! The leader-only loops, started when the embedded member becomes Raft
//! leader and stopped when it stops being leader.
//!
//! ```text
//!  leadership watch ──▶ Some(epoch, term) ──▶ spawn control loop + prober
//!                   ◀── None / new term ◀──── abort both, wait for the next
//!  control loop: snapshot ─▶ gc · deployments · replicasets · scheduler ─▶ txns ─▶ wait for a change
//!  prober:       snapshot ─▶ probe(fence, desired pods) ─▶ statuses, node health, evictions ─▶ txns
//!  collector:    every master's figures + cluster figures + annotations ─▶ every master's MetricsStore
//! ```
//!
//! Invariants: a loop acts only while the leadership it was started for is
//! current, and every write is a compare-and-set transaction on the
//! revisions it read, so a deposed leader's late write fails instead of
//! undoing a newer one; probes carry the (epoch, term) fence, so a worker
//! refuses a deposed leader's orders. Every snapshot is a linearizable read
//! taken after the loop's previous writes were applied: no decision is made
//! on state older than the loop's own actions.
//!
//! # Layout
//!
//! - `control`: the control loop (gc, Deployment, ReplicaSet, Job, scheduler,
//!   endpoints, disruption budgets), on a [`Snapshot`] (`crate::snapshot`).
//! - `prober`: heartbeat probes, pod statuses, node lifecycle.
//! - `collector`: the metrics collector (see [`crate::metrics`]).
//! - `revival`: starts the deallocated VMs of silent nodes (Azure).
//! - [`unreadable`]: reporting stored values that do not parse, once per key.

mod collector;
pub mod control;
mod prober;
mod revival;
pub mod unreadable;

use std::sync::Arc;
use std::time::Duration;

use kvs::node::{Leadership, Node};
use tokio::sync::watch;

use crate::controllers::nodes::Timeouts;
use crate::metrics::MasterMetrics;
use crate::scheduler::ScorePolicy;
pub use crate::snapshot::Snapshot;
use crate::store::Store;

/// Settings of the leader-only loops.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Time between heartbeat probes of a worker (jittered by ±10%).
    pub probe_interval: Duration,
    /// Longest wait for a probe's answer.
    pub probe_timeout: Duration,
    /// Probes in flight at once (at least; see the prober's `slots`).
    pub probe_concurrency: usize,
    /// When a silent node becomes NotReady and when its pods are evicted.
    pub timeouts: Timeouts,
    /// Control passes run at least this often, changes or not.
    pub resync_interval: Duration,
    /// How the scheduler ranks nodes.
    pub score_policy: ScorePolicy,
    /// The token workers accept.
    pub token: Option<String>,
    /// TLS towards workers and the other masters; `None` speaks plain HTTP.
    pub tls: Option<rpc::ClientTls>,
    /// Time between metric collections.
    pub metrics_interval: Duration,
}

impl Default for LeaderConfig {
    fn default() -> Self {
        LeaderConfig {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(2),
            probe_concurrency: 32,
            timeouts: Timeouts {
                grace_ms: 5_000,
                eviction_ms: 10_000,
            },
            resync_interval: Duration::from_secs(5),
            score_policy: ScorePolicy::Spread,
            token: None,
            tls: None,
            metrics_interval: Duration::from_secs(10),
        }
    }
}

/// What a loop needs to act for one leadership.
#[derive(Clone)]
pub(crate) struct Context {
    pub store: Store,
    pub config: LeaderConfig,
    pub leadership: Leadership,
    /// Whether the leadership is still this one.
    pub current: watch::Receiver<Option<Leadership>>,
    /// The store's revision, to wait for changes.
    pub revision: watch::Receiver<i64>,
    /// Where latencies are observed and figures kept, if anywhere.
    pub metrics: Option<Arc<MasterMetrics>>,
    /// The VMs of the nodes, when running on Azure (peer revival).
    pub vms: Option<Arc<cloud::vms::Vms>>,
}

impl Context {
    /// Whether this leadership is still current.
    pub fn still_leading(&self) -> bool {
        *self.current.borrow() == Some(self.leadership)
    }

    /// Waits until the store moves past `revision`, `timeout` passes, or
    /// the leadership ends.
    pub async fn wait_for_change(&self, revision: i64, timeout: Duration) {
        let mut rev = self.revision.clone();
        let mut current = self.current.clone();
        let leadership = self.leadership;
        tokio::select! {
            _ = rev.wait_for(|r| *r > revision) => {}
            _ = current.wait_for(|c| *c != Some(leadership)) => {}
            _ = tokio::time::sleep(timeout) => {}
        }
    }
}

/// Runs the leader-only loops whenever `node` leads, until `shutdown`;
/// with `metrics`, the collector too; with `vms`, peer revival.
pub async fn run(
    node: Node,
    store: Store,
    config: LeaderConfig,
    metrics: Option<Arc<MasterMetrics>>,
    vms: Option<Arc<cloud::vms::Vms>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut leadership = node.leadership();
    loop {
        let current = *leadership.borrow_and_update();
        let Some(lead) = current else {
            tokio::select! {
                _ = &mut shutdown => return,
                changed = leadership.changed() => if changed.is_err() { return },
            }
            continue;
        };
        tracing::info!(
            epoch = lead.epoch,
            term = lead.term,
            "leading: starting the control loop and the prober"
        );
        let ctx = Context {
            store: store.clone(),
            config: config.clone(),
            leadership: lead,
            current: node.leadership(),
            revision: node.revision(),
            metrics: metrics.clone(),
            vms: vms.clone(),
        };
        let control = tokio::spawn(control::run(ctx.clone()));
        let collector = tokio::spawn(collector::run(ctx.clone()));
        let reviver = tokio::spawn(revival::run(ctx.clone()));
        let prober = tokio::spawn(prober::run(ctx));
        let mut stopped = false;
        tokio::select! {
            _ = &mut shutdown => stopped = true,
            _ = leadership.wait_for(|l| *l != Some(lead)) => {}
        }
        control.abort();
        prober.abort();
        collector.abort();
        reviver.abort();
        if let Some(m) = &metrics {
            m.set_cluster_points(Vec::new());
        }
        tracing::info!(term = lead.term, "no longer leading: the loops stopped");
        if stopped {
            return;
        }
    }
}
