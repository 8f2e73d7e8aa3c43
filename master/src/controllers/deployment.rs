//! The Deployment controller's decision: given a Deployment and the
//! ReplicaSets it controls (with their pods counted), which ReplicaSet to
//! create, which to scale, which old ones to forget, and the status.
//!
//! The ReplicaSet of the current template is found by the
//! `pod-template-hash` label; it carries the highest revision. A rolling
//! update alternates two moves, never both in one pass (as Kubernetes does):
//!
//! - scale the new ReplicaSet up while every ReplicaSet's
//!   `max(spec, pods)` sums to at most `replicas + maxSurge`;
//! - scale old ones down (oldest first; unhealthy replicas first) while the
//!   available pods, counted as `min(ready, spec)` per ReplicaSet (pods
//!   above spec are about to go, not-ready first), stay at least
//!   `replicas − maxUnavailable`.
//!
//! Counting this way keeps both bounds whatever order the ReplicaSet
//! controller's deletions and creations land in (the property test in
//! `tests` interleaves them at random).

use std::time::{Duration, SystemTime};

use api::workloads::{
    Deployment, DeploymentCondition, DeploymentStatus, POD_TEMPLATE_HASH_LABEL, PodTemplateSpec,
    REVISION_ANNOTATION, ReplicaSet, ReplicaSetSpec, StrategyType,
};
use api::{ObjectMeta, OwnerReference};

use super::fnv1a;

/// One ReplicaSet of the Deployment, with its pods counted.
#[derive(Debug, Clone, Copy)]
pub struct RsView<'a> {
    /// The ReplicaSet.
    pub rs: &'a ReplicaSet,
    /// Its active pods.
    pub pods: u32,
    /// Of those, the ready ones.
    pub ready: u32,
}

impl RsView<'_> {
    fn spec(&self) -> u32 {
        self.rs.spec.replicas
    }
    /// Pods it holds or may soon hold.
    fn footprint(&self) -> u32 {
        self.spec().max(self.pods)
    }
    /// Ready pods that will survive its scale-down.
    fn available(&self) -> u32 {
        self.ready.min(self.spec())
    }
}

/// A change to a ReplicaSet's spec or revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsUpdate {
    /// The ReplicaSet.
    pub name: String,
    /// Its new `spec.replicas`.
    pub replicas: u32,
    /// Its new revision.
    pub revision: u64,
}

/// What to do for one Deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The ReplicaSet of a new template.
    pub create: Option<ReplicaSet>,
    /// Scalings and revision changes.
    pub update: Vec<RsUpdate>,
    /// Old ReplicaSets beyond the revision history limit.
    pub delete: Vec<String>,
    /// The status, when it differs from the stored one.
    pub status: Option<DeploymentStatus>,
}

/// The hash that names a template's ReplicaSet.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let json = serde_json::to_vec(template).unwrap_or_default();
    format!("{:010x}", fnv1a(&json) & 0xff_ffff_ffff)
}

/// A ReplicaSet's revision (0 when unannotated).
pub fn revision(rs: &ReplicaSet) -> u64 {
    rs.metadata
        .annotations
        .get(REVISION_ANNOTATION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// A sum of counts, saturating: counts come from stored objects, which a
/// raw write may have set to anything.
fn sum(counts: impl Iterator<Item = u32>) -> u32 {
    counts.fold(0, u32::saturating_add)
}

/// `(maxSurge, maxUnavailable)` for `d`, never both 0.
pub fn bounds(d: &Deployment) -> (u32, u32) {
    let replicas = d.spec.replicas;
    let ru = d.spec.strategy.rolling_update.clone().unwrap_or_default();
    let surge = ru.max_surge.resolve(replicas, true).unwrap_or(1);
    let unavailable = ru.max_unavailable.resolve(replicas, false).unwrap_or(0);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// The ReplicaSet of `d`'s current template, at `revision`, with `replicas`.
pub fn new_replica_set(d: &Deployment, hash: &str, revision: u64, replicas: u32) -> ReplicaSet {
    let mut template = d.spec.template.clone();
    template
        .metadata
        .labels
        .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.into());
    let mut selector = d.spec.selector.clone();
    selector
        .match_labels
        .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.into());
    let mut metadata = ObjectMeta::named(format!("{}-{hash}", d.metadata.name));
    metadata.namespace.clone_from(&d.metadata.namespace);
    metadata.labels.clone_from(&template.metadata.labels);
    metadata
        .annotations
        .insert(REVISION_ANNOTATION.into(), revision.to_string());
    metadata.owner_references.push(OwnerReference {
        kind: "Deployment".into(),
        name: d.metadata.name.clone(),
        uid: d.metadata.uid.clone(),
        controller: true,
    });
    ReplicaSet {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        metadata,
        spec: ReplicaSetSpec {
            replicas,
            selector,
            template,
        },
        status: None,
    }
}

/// The plan for `d`, whose ReplicaSets are `rss`, at time `now`.
pub fn reconcile(d: &Deployment, rss: &[RsView<'_>], now: SystemTime) -> Plan {
    let hash = template_hash(&d.spec.template);
    let max_revision = rss.iter().map(|v| revision(v.rs)).max().unwrap_or(0);
    let is_new = |v: &&RsView<'_>| v.rs.metadata.labels.get(POD_TEMPLATE_HASH_LABEL) == Some(&hash);
    let new = rss.iter().find(is_new).copied();
    let mut olds: Vec<RsView<'_>> = rss.iter().filter(|v| !is_new(v)).copied().collect();
    olds.sort_by_key(|v| (revision(v.rs), v.rs.metadata.name.clone()));
    let mut plan = Plan::default();
    match new {
        None => {
            let replicas = initial_replicas(d, &olds);
            plan.create = Some(new_replica_set(
                d,
                &hash,
                max_revision.saturating_add(1),
                replicas,
            ));
        }
        Some(new) => {
            let new_revision = if revision(new.rs) < max_revision {
                max_revision.saturating_add(1)
            } else {
                revision(new.rs)
            };
            let specs = match d.spec.strategy.type_ {
                StrategyType::Recreate => recreate(d, new, &olds),
                StrategyType::RollingUpdate => rolling(d, new, &olds),
            };
            let mut changes = specs.unwrap_or_else(|| {
                std::iter::once(new)
                    .chain(olds.iter().copied())
                    .map(|v| (v.rs.metadata.name.clone(), v.spec()))
                    .collect()
            });
            for (name, replicas) in changes.drain(..) {
                let Some(v) = rss.iter().find(|v| v.rs.metadata.name == name) else {
                    continue;
                };
                let revision_now = if name == new.rs.metadata.name {
                    new_revision
                } else {
                    revision(v.rs)
                };
                if replicas != v.spec() || revision_now != revision(v.rs) {
                    plan.update.push(RsUpdate {
                        name,
                        replicas,
                        revision: revision_now,
                    });
                }
            }
        }
    }
    plan.delete = beyond_history(d, &olds, &plan.update);
    let status = status(d, new, &olds, now);
    if d.status.as_ref() != Some(&status) {
        plan.status = Some(status);
    }
    plan
}

fn initial_replicas(d: &Deployment, olds: &[RsView<'_>]) -> u32 {
    let replicas = d.spec.replicas;
    match d.spec.strategy.type_ {
        StrategyType::Recreate if olds.iter().all(|v| v.footprint() == 0) => replicas,
        StrategyType::Recreate => 0,
        StrategyType::RollingUpdate => {
            let (surge, _) = bounds(d);
            let used = sum(olds.iter().map(RsView::footprint));
            replicas.min(replicas.saturating_add(surge).saturating_sub(used))
        }
    }
}

/// New specs (name, replicas) for a Recreate rollout step, if any change.
fn recreate(d: &Deployment, new: RsView<'_>, olds: &[RsView<'_>]) -> Option<Vec<(String, u32)>> {
    if olds.iter().any(|v| v.spec() > 0) {
        return Some(
            olds.iter()
                .map(|v| (v.rs.metadata.name.clone(), 0))
                .collect(),
        );
    }
    if olds.iter().any(|v| v.pods > 0) || new.spec() == d.spec.replicas {
        return None;
    }
    Some(vec![(new.rs.metadata.name.clone(), d.spec.replicas)])
}

/// New specs for a rolling update step, if any change.
fn rolling(d: &Deployment, new: RsView<'_>, olds: &[RsView<'_>]) -> Option<Vec<(String, u32)>> {
    let replicas = d.spec.replicas;
    let (surge, unavailable) = bounds(d);
    let footprint = sum(std::iter::once(new)
        .chain(olds.iter().copied())
        .map(|v| v.footprint()));
    // Move 1: the new ReplicaSet toward `replicas`.
    let target = if new.spec() > replicas {
        replicas
    } else {
        let room = replicas.saturating_add(surge).saturating_sub(footprint);
        new.spec() + room.min(replicas - new.spec())
    };
    if target != new.spec() {
        return Some(vec![(new.rs.metadata.name.clone(), target)]);
    }
    // Move 2: old ReplicaSets down, availability permitting.
    if olds.iter().all(|v| v.spec() == 0) {
        return None;
    }
    let min_available = replicas.saturating_sub(unavailable);
    let mut specs: Vec<u32> = olds.iter().map(RsView::spec).collect();
    // Unhealthy old replicas first: removing them costs no availability.
    let new_unavailable = new.spec() - new.available();
    let total_spec = new.spec().saturating_add(sum(specs.iter().copied()));
    let mut budget = i64::from(total_spec) - i64::from(min_available) - i64::from(new_unavailable);
    for (spec, v) in specs.iter_mut().zip(olds) {
        let unhealthy = (*spec - v.available()).min(budget.max(0) as u32);
        *spec -= unhealthy;
        budget -= i64::from(unhealthy);
    }
    // Then healthy ones, down to the availability floor.
    let available = new
        .available()
        .saturating_add(sum(specs.iter().zip(olds).map(|(s, v)| v.ready.min(*s))));
    let mut spare = available.saturating_sub(min_available);
    for spec in specs.iter_mut() {
        let down = (*spec).min(spare);
        *spec -= down;
        spare -= down;
    }
    let changed = specs.iter().zip(olds).any(|(s, v)| *s != v.spec());
    changed.then(|| {
        olds.iter()
            .zip(specs)
            .map(|(v, s)| (v.rs.metadata.name.clone(), s))
            .collect()
    })
}

/// Old ReplicaSets, empty and scaled to zero, beyond `revisionHistoryLimit` (oldest go).
fn beyond_history(d: &Deployment, olds: &[RsView<'_>], updates: &[RsUpdate]) -> Vec<String> {
    let idle: Vec<&RsView<'_>> = olds
        .iter()
        .filter(|v| {
            v.spec() == 0 && v.pods == 0 && !updates.iter().any(|u| u.name == v.rs.metadata.name)
        })
        .collect();
    let excess = idle
        .len()
        .saturating_sub(d.spec.revision_history_limit as usize);
    idle.iter()
        .take(excess)
        .map(|v| v.rs.metadata.name.clone())
        .collect()
}

fn status(
    d: &Deployment,
    new: Option<RsView<'_>>,
    olds: &[RsView<'_>],
    now: SystemTime,
) -> DeploymentStatus {
    let replicas = d.spec.replicas;
    let (_, unavailable) = bounds(d);
    let all = new.iter().chain(olds);
    let pods = sum(all.clone().map(|v| v.pods));
    let ready = sum(all.map(|v| v.ready));
    let updated = new.map_or(0, |v| v.pods);
    let old_pods = sum(olds.iter().map(|v| v.pods));
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: pods,
        updated_replicas: updated,
        ready_replicas: ready,
        available_replicas: ready,
        unavailable_replicas: replicas.saturating_sub(ready),
        conditions: Vec::new(),
    };
    let previous = d.status.clone().unwrap_or_default();
    let now_text = humantime::format_rfc3339_seconds(now).to_string();
    let available_ok = ready >= replicas.saturating_sub(unavailable);
    status.conditions.push(condition(
        &previous,
        "Available",
        available_ok,
        if available_ok {
            "MinimumReplicasAvailable"
        } else {
            "MinimumReplicasUnavailable"
        },
        if available_ok {
            "Deployment has minimum availability.".to_string()
        } else {
            "Deployment does not have minimum availability.".to_string()
        },
        &now_text,
    ));
    let complete = new.is_some_and(|v| v.pods == replicas && v.ready >= replicas) && old_pods == 0;
    let progressed = (
        previous.updated_replicas,
        previous.available_replicas,
        previous.replicas,
    ) != (updated, ready, pods)
        || previous.observed_generation != d.metadata.generation;
    let name = new.map_or(String::new(), |v| v.rs.metadata.name.clone());
    let progressing = if complete {
        condition(
            &previous,
            "Progressing",
            true,
            "NewReplicaSetAvailable",
            format!("ReplicaSet {name:?} has successfully progressed."),
            &now_text,
        )
    } else {
        let last = previous.condition("Progressing");
        let stuck = !progressed
            && last.is_some_and(|c| {
                c.reason == "ProgressDeadlineExceeded"
                    || (c.reason == "ReplicaSetUpdated"
                        && since(c.last_transition_time.as_deref(), now)
                            > Duration::from_secs(d.spec.progress_deadline_seconds))
            });
        if stuck {
            condition(
                &previous,
                "Progressing",
                false,
                "ProgressDeadlineExceeded",
                format!("ReplicaSet {name:?} has timed out progressing."),
                &now_text,
            )
        } else {
            let mut c = condition(
                &previous,
                "Progressing",
                true,
                "ReplicaSetUpdated",
                format!("ReplicaSet {name:?} is progressing."),
                &now_text,
            );
            if progressed {
                c.last_transition_time = Some(now_text.clone());
            }
            c
        }
    };
    status.conditions.push(progressing);
    status
}

/// A condition, keeping the previous transition time when nothing changed.
fn condition(
    previous: &DeploymentStatus,
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    now: &str,
) -> DeploymentCondition {
    let status = if ok { "True" } else { "False" }.to_string();
    let time = previous
        .condition(type_)
        .filter(|c| c.status == status && c.reason == reason)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.to_string());
    DeploymentCondition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message,
        last_transition_time: Some(time),
    }
}

fn since(time: Option<&str>, now: SystemTime) -> Duration {
    time.and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .and_then(|t| now.duration_since(t).ok())
        .unwrap_or_default()
}

/// The template `rollout undo` restores: that of revision `to`, or of the
/// revision before the current one.
pub fn rollback_template(
    d: &Deployment,
    rss: &[ReplicaSet],
    to: Option<u64>,
) -> Result<PodTemplateSpec, String> {
    let hash = template_hash(&d.spec.template);
    let owned: Vec<&ReplicaSet> = rss
        .iter()
        .filter(|rs| super::controlled_by(&rs.metadata, &d.metadata.uid))
        .collect();
    let current = owned
        .iter()
        .find(|rs| rs.metadata.labels.get(POD_TEMPLATE_HASH_LABEL) == Some(&hash))
        .map_or(u64::MAX, |rs| revision(rs));
    let target = match to {
        Some(r) => owned.iter().find(|rs| revision(rs) == r).ok_or_else(|| {
            format!(
                "deployment {:?} has no revision {r}; see `mkctl rollout history deployment/{}`",
                d.metadata.name, d.metadata.name
            )
        })?,
        None => owned
            .iter()
            .filter(|rs| revision(rs) < current)
            .max_by_key(|rs| revision(rs))
            .ok_or_else(|| format!("deployment {:?} has no previous revision", d.metadata.name))?,
    };
    let mut template = target.spec.template.clone();
    template.metadata.labels.remove(POD_TEMPLATE_HASH_LABEL);
    Ok(template)
}

#[cfg(test)]
mod tests;
