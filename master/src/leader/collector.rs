//! The metrics collector: every `metrics_interval`, the leader gathers every
//! master's own figures (`Master.figures`; its own directly), the cluster's
//! figures from one snapshot, and annotations from new Events, and writes
//! the batch to every master's metrics store (`Master.record_metrics`; its
//! own directly), so that any master can answer Grafana with the whole
//! picture.
//!
//! A master that does not answer in time is left out of that round (its
//! lines show a gap) and misses that batch; nothing is retried, since the
//! next round writes fresher figures. Events present when the leadership
//! starts are not annotated again (the previous leader did); a
//! `LeaderElected` annotation marks the start. New Events are followed
//! with a watch from the last round's revision (at 30,000 pods, listing
//! every Event each round was a tenth of the leader's cpu).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use api::master::{FiguresRequest, MasterClient, RecordMetricsRequest};
use api::metrics::{Annotation, Point};
use api::{EventRecord, Kind};
use tokio::task::JoinSet;

use super::{Context, Snapshot};
use crate::metrics::{MasterMetrics, annotations, cluster_points, now_ms};
use crate::store::{decode, prefix};

/// The longest wait for another master's figures or write.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs rounds until the leadership ends (the caller aborts it then).
pub(super) async fn run(ctx: Context) {
    let Some(metrics) = ctx.metrics.clone() else {
        return;
    };
    let others: Vec<(String, MasterClient)> = metrics
        .masters()
        .iter()
        .filter(|(name, _)| name.as_str() != metrics.name())
        .filter_map(|(name, address)| {
            let config = rpc::ClientConfig {
                token: ctx.config.token.clone(),
                tls: ctx.config.tls.clone(),
                default_timeout: CALL_TIMEOUT,
                max_connections: 1,
                ..Default::default()
            };
            match rpc::Client::new(address, config) {
                Ok(c) => Some((name.clone(), MasterClient::new(c))),
                Err(e) => {
                    tracing::warn!(master = %name, %address, error = %e, "metrics: a master's address is unusable");
                    None
                }
            }
        })
        .collect();
    // Events from the leadership's start on; those before it were the
    // previous leader's to annotate.
    let mut seen = HashSet::new();
    let mut from = ctx.store.revision().await.map_or(0, |r| r + 1);
    let mut pending_notes = vec![Annotation {
        time_ms: now_ms(),
        title: "LeaderElected".into(),
        text: format!(
            "{} leads (epoch {}, term {})",
            metrics.name(),
            ctx.leadership.epoch,
            ctx.leadership.term
        ),
        tags: vec![format!("master:{}", metrics.name())],
    }];
    let mut tick = tokio::time::interval(ctx.config.metrics_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while ctx.still_leading() {
        tick.tick().await;
        let mut points = metrics.own_points().await;
        points.extend(figures_of(&others).await);
        let (scheduling, probes) = metrics.take_latencies();
        match Snapshot::read(&ctx.store).await {
            Ok(snap) => {
                let mut cluster = cluster_points(&snap, scheduling, probes, now_ms());
                cluster.extend(metrics.take_probe_intervals(now_ms()));
                metrics.set_cluster_points(cluster.clone());
                points.extend(cluster);
            }
            Err(e) => tracing::debug!(error = %e, "metrics: no snapshot this round"),
        }
        pending_notes.extend(annotations(&new_events(&ctx, &mut from).await, &mut seen));
        let notes = std::mem::take(&mut pending_notes);
        record(&metrics, &others, points, notes).await;
    }
}

/// The Events written since revision `from` (moved past them), oldest
/// first: one watch of what is new, not a list of every Event each round.
/// If the store no longer holds that history, the round skips to now.
async fn new_events(ctx: &Context, from: &mut i64) -> Vec<EventRecord> {
    if *from <= 0 {
        match ctx.store.revision().await {
            Ok(r) => *from = r + 1,
            Err(e) => {
                tracing::debug!(error = %e, "metrics: no revision to follow events from");
                return Vec::new();
            }
        }
    }
    match ctx
        .store
        .watch(prefix(Kind::Event, None), *from, Duration::ZERO)
        .await
    {
        Ok((changes, next)) => {
            *from = next;
            changes
                .iter()
                .filter_map(|c| match c {
                    kvs::kv::Event::Put { kv } => decode::<EventRecord>(kv).ok(),
                    kvs::kv::Event::Delete { .. } => None,
                })
                .map(|s| s.object)
                .collect()
        }
        Err(e) => {
            tracing::debug!(error = %e, "metrics: events skipped; following from now");
            *from = 0;
            Vec::new()
        }
    }
}

/// Every other master's own figures, asked at once.
async fn figures_of(others: &[(String, MasterClient)]) -> Vec<Point> {
    let mut set = JoinSet::new();
    for (name, client) in others {
        let (name, client) = (name.clone(), client.clone());
        set.spawn(async move {
            let answer =
                tokio::time::timeout(CALL_TIMEOUT, client.figures(&FiguresRequest {})).await;
            (name, answer)
        });
    }
    let mut points = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((_, Ok(Ok(answer)))) => points.extend(answer.points),
            Ok((name, Ok(Err(e)))) => {
                tracing::debug!(master = %name, error = %e, "metrics: no figures")
            }
            Ok((name, Err(_))) => tracing::debug!(master = %name, "metrics: figures timed out"),
            Err(_) => {}
        }
    }
    points
}

/// Writes the round to this master's store and to every other master's.
async fn record(
    metrics: &Arc<MasterMetrics>,
    others: &[(String, MasterClient)],
    points: Vec<Point>,
    notes: Vec<Annotation>,
) {
    let request = RecordMetricsRequest {
        points,
        annotations: notes,
    };
    let mut set = JoinSet::new();
    for (name, client) in others {
        let (name, client, request) = (name.clone(), client.clone(), request.clone());
        set.spawn(async move {
            let answer = tokio::time::timeout(CALL_TIMEOUT, client.record_metrics(&request)).await;
            if !matches!(answer, Ok(Ok(_))) {
                tracing::debug!(master = %name, "metrics: the batch did not reach it");
            }
        });
    }
    let store = metrics.store();
    if let Err(e) = store.write(&request.points).await {
        tracing::warn!(error = %e, "metrics: writing the batch failed");
    }
    if !request.annotations.is_empty()
        && let Err(e) = store.write_annotations(&request.annotations).await
    {
        tracing::warn!(error = %e, "metrics: writing annotations failed");
    }
    while set.join_next().await.is_some() {}
}
