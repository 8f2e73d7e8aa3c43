//! The Job controller's decision: given a Job, the pods it controls and the
//! time, which pods to create (with which indexes), which to delete, which
//! finished pods to count, and the Job's status.
//!
//! # Counting
//!
//! A finished pod is counted once: the status that adds it and the mark on
//! the pod ([`COUNTED_ANNOTATION`]) are written in one transaction, so a
//! pod is never counted twice and a count is never lost (Kubernetes keeps
//! the same promise with a finalizer and `uncountedTerminatedPods`). Counted
//! pods stay, with their output in their status, until the Job goes.
//!
//! # Failures and disruptions
//!
//! Only a pod's own failure counts against `backoffLimit`: a `Failed` pod
//! that was not being deleted, and (with `restartPolicy: OnFailure`) the
//! restarts of active pods. A pod deleted, drained or evicted, or lost with
//! its node, is not a failure: it is replaced (Kubernetes' pod failure
//! policy with `DisruptionTarget` → `Ignore`, here the default because on
//! Spot VMs evictions are weather). A deleted pod that had already
//! succeeded still counts as a success: its work is done.
//!
//! # Invariants
//!
//! - Active pods (neither finished nor terminating) never exceed
//!   `parallelism`, nor the completions still missing.
//! - Indexed: no two active pods share an index, and no pod is created for
//!   an index that has succeeded.
//! - A finished Job (`Complete` or `Failed`) creates nothing and deletes
//!   its active pods; after `ttlSecondsAfterFinished` it is deleted.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

pub use api::batch::index_of;
use api::batch::{
    CompletionMode, JOB_COMPLETION_INDEX_ANNOTATION, Job, JobCondition, JobStatus, format_indexes,
    parse_indexes,
};
use api::{Pod, PodPhase, RestartPolicy};

use super::termination::is_terminating;
use super::{is_finished, is_ready, parse_time};

/// Set on a finished pod once the Job's status counts it; its value is
/// what it was counted as (`Succeeded`, `Failed`, or `Disrupted`, not a
/// failure).
pub const COUNTED_ANNOTATION: &str = "mkube.io/job-counted";

/// Finished pods counted in one pass (one transaction).
pub const COUNT_PER_PASS: usize = 100;

/// What to do for one Job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Pods to create: one entry each, with its index for Indexed Jobs.
    pub create: Vec<Option<u32>>,
    /// Names of pods to delete, and why (for the event).
    pub delete: Vec<(String, &'static str)>,
    /// Finished pods this status counts, with what they count as; to be
    /// marked in the same transaction as the status.
    pub count: Vec<(String, &'static str)>,
    /// The status to write, when it differs from the stored one.
    pub status: Option<JobStatus>,
    /// Events: (warning, reason, message).
    pub events: Vec<(bool, &'static str, String)>,
    /// The Job's TTL after finishing has run out: delete it.
    pub delete_job: bool,
}

fn counted(pod: &Pod) -> bool {
    pod.metadata.annotations.contains_key(COUNTED_ANNOTATION)
}

fn condition(type_: &str, reason: &str, message: String, now: &str) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: reason.into(),
        message,
        last_transition_time: Some(now.to_string()),
    }
}

/// The plan for `job`, whose controlled pods are `pods`, at `now`.
pub fn reconcile(job: &Job, pods: &[&Pod], now: SystemTime) -> Plan {
    let now_text = humantime::format_rfc3339_seconds(now).to_string();
    let spec = &job.spec;
    let indexed = spec.completion_mode == CompletionMode::Indexed;
    let old = job.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let mut plan = Plan::default();
    if status.start_time.is_none() && !spec.suspend {
        status.start_time = Some(now_text.clone());
    }
    // Indexes already counted as succeeded; a malformed stored value is
    // read as none rather than stopping the controller.
    let mut completed = parse_indexes(&status.completed_indexes).unwrap_or_default();

    // Count the finished pods not yet counted (oldest first).
    let mut fresh: Vec<&Pod> = pods
        .iter()
        .copied()
        .filter(|p| is_finished(p) && !counted(p))
        .collect();
    fresh.sort_by_key(|p| {
        (
            p.metadata.creation_timestamp.clone(),
            p.metadata.name.clone(),
        )
    });
    for pod in fresh.into_iter().take(COUNT_PER_PASS) {
        let succeeded = pod.status.as_ref().map(|s| s.phase) == Some(PodPhase::Succeeded);
        let as_what = if succeeded {
            if indexed {
                if let Some(i) = index_of(pod, spec.completions) {
                    completed.insert(i);
                }
            } else {
                status.succeeded += 1;
            }
            "Succeeded"
        } else if is_terminating(pod) {
            "Disrupted"
        } else {
            status.failed += 1;
            "Failed"
        };
        plan.count.push((pod.metadata.name.clone(), as_what));
    }
    if indexed {
        status.succeeded = completed.len() as u32;
        status.completed_indexes = format_indexes(&completed);
    }

    let mut active: Vec<&Pod> = pods
        .iter()
        .copied()
        .filter(|p| !is_finished(p) && !is_terminating(p))
        .collect();
    active.sort_by_key(|p| {
        (
            p.metadata.creation_timestamp.clone(),
            p.metadata.name.clone(),
        )
    });
    let restarts: u32 = if spec.template.spec.restart_policy == RestartPolicy::OnFailure {
        active
            .iter()
            .filter_map(|p| p.status.as_ref())
            .flat_map(|s| s.container_statuses.iter())
            .map(|c| c.restart_count)
            .sum()
    } else {
        0
    };

    // Has it finished?
    let mut finished = status.finished();
    if !finished {
        let started = parse_time(status.start_time.as_deref());
        let deadline = spec
            .active_deadline_seconds
            .zip(started)
            .map(|(s, t)| t + Duration::from_secs(s));
        let failure = if status.succeeded >= spec.completions {
            status.completion_time = Some(now_text.clone());
            status.conditions.push(condition(
                "Complete",
                "CompletionsReached",
                format!(
                    "Reached expected number of succeeded pods ({})",
                    spec.completions
                ),
                &now_text,
            ));
            plan.events.push((
                false,
                "Completed",
                format!("Job completed: {} succeeded", status.succeeded),
            ));
            None
        } else if status.failed + restarts > spec.backoff_limit {
            Some((
                "BackoffLimitExceeded",
                format!(
                    "Job has reached the specified backoff limit: {} failures, backoffLimit {}",
                    status.failed + restarts,
                    spec.backoff_limit
                ),
            ))
        } else if deadline.is_some_and(|d| now >= d) && !spec.suspend {
            Some((
                "DeadlineExceeded",
                format!(
                    "Job was active longer than specified deadline ({} s)",
                    spec.active_deadline_seconds.unwrap_or_default()
                ),
            ))
        } else {
            None
        };
        if let Some((reason, message)) = failure {
            status
                .conditions
                .push(condition("Failed", reason, message.clone(), &now_text));
            plan.events.push((true, reason, message));
        }
        finished = status.finished();
    }

    let mut keep: Vec<&Pod> = Vec::new();
    if finished || spec.suspend {
        let why = if finished {
            "the Job has finished"
        } else {
            "the Job is suspended"
        };
        plan.delete
            .extend(active.iter().map(|p| (p.metadata.name.clone(), why)));
    } else if indexed {
        // One active pod per index not yet succeeded; extras go.
        let mut seen = BTreeSet::new();
        for p in &active {
            match index_of(p, spec.completions) {
                Some(i) if !completed.contains(&i) && seen.insert(i) => keep.push(p),
                Some(i) if completed.contains(&i) => plan
                    .delete
                    .push((p.metadata.name.clone(), "its index has succeeded")),
                _ => plan.delete.push((
                    p.metadata.name.clone(),
                    "another pod runs its index, or it has none",
                )),
            }
        }
    } else {
        keep = active.clone();
    }
    if !finished && !spec.suspend {
        let missing = spec.completions.saturating_sub(status.succeeded);
        let want = spec.parallelism.min(missing) as usize;
        if keep.len() > want {
            // Parallelism lowered: the newest go.
            for p in keep.drain(want..) {
                plan.delete
                    .push((p.metadata.name.clone(), "parallelism was lowered"));
            }
        }
        let room = want - keep.len();
        if indexed {
            let running: BTreeSet<u32> = keep
                .iter()
                .filter_map(|p| index_of(p, spec.completions))
                .collect();
            plan.create = (0..spec.completions)
                .filter(|i| !completed.contains(i) && !running.contains(i))
                .take(room)
                .map(Some)
                .collect();
        } else {
            plan.create = vec![None; room];
        }
    }

    status.active = keep.len() as u32 + plan.create.len() as u32;
    status.ready = keep.iter().filter(|p| is_ready(p)).count() as u32;
    if finished {
        status.active = 0;
        status.ready = 0;
    }
    let suspended = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Suspended" && c.status == "True");
    if spec.suspend && !suspended && !finished {
        status.conditions.retain(|c| c.type_ != "Suspended");
        status.conditions.push(condition(
            "Suspended",
            "JobSuspended",
            "Job suspended".into(),
            &now_text,
        ));
    } else if !spec.suspend && suspended {
        status.conditions.retain(|c| c.type_ != "Suspended");
    }

    if finished
        && let Some(ttl) = spec.ttl_seconds_after_finished
        && let Some(at) = status
            .conditions
            .iter()
            .filter(|c| c.type_ == "Complete" || c.type_ == "Failed")
            .find_map(|c| parse_time(c.last_transition_time.as_deref()))
        && now >= at + Duration::from_secs(ttl)
    {
        plan.delete_job = true;
    }
    if status != old {
        plan.status = Some(status);
    }
    plan
}

/// The environment and metadata of a new pod of `job` with `index`.
pub fn index_pod(pod: &mut Pod, index: u32) {
    let value = index.to_string();
    pod.metadata
        .annotations
        .insert(JOB_COMPLETION_INDEX_ANNOTATION.into(), value.clone());
    pod.metadata
        .labels
        .insert(JOB_COMPLETION_INDEX_ANNOTATION.into(), value.clone());
    for c in &mut pod.spec.containers {
        if !c
            .env
            .iter()
            .any(|e| e.name == api::batch::JOB_COMPLETION_INDEX_ENV)
        {
            c.env.push(api::EnvVar {
                name: api::batch::JOB_COMPLETION_INDEX_ENV.into(),
                value: value.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::replicaset::tests::pod;
    use api::ObjectMeta;
    use api::batch::JobSpec;
    use api::workloads::{PodTemplateSpec, TemplateMeta};
    use api::{Container, PodSpec};
    use proptest::prelude::*;

    fn job(completions: u32, parallelism: u32, indexed: bool) -> Job {
        Job {
            api_version: "batch/v1".into(),
            kind: "Job".into(),
            metadata: ObjectMeta::named("j"),
            spec: JobSpec {
                completions,
                parallelism,
                backoff_limit: 2,
                active_deadline_seconds: None,
                ttl_seconds_after_finished: None,
                completion_mode: if indexed {
                    CompletionMode::Indexed
                } else {
                    CompletionMode::NonIndexed
                },
                suspend: false,
                selector: None,
                template: PodTemplateSpec {
                    metadata: TemplateMeta::default(),
                    spec: PodSpec {
                        containers: vec![Container::new("c", "img")],
                        restart_policy: RestartPolicy::Never,
                        ..PodSpec::default()
                    },
                },
            },
            status: None,
        }
    }

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    fn indexed_pod(name: &str, i: u32, phase: Option<PodPhase>) -> Pod {
        let mut p = pod(name, Some("n"), phase);
        index_pod(&mut p, i);
        p
    }

    /// Applies a plan as the control loop would: statuses and marks
    /// written, pods created (running at once) and deleted.
    fn apply(job: &mut Job, pods: &mut Vec<Pod>, plan: &Plan, next: &mut u32) {
        if let Some(s) = &plan.status {
            job.status = Some(s.clone());
        }
        for (name, what) in &plan.count {
            if let Some(p) = pods.iter_mut().find(|p| &p.metadata.name == name) {
                p.metadata
                    .annotations
                    .insert(COUNTED_ANNOTATION.into(), (*what).into());
            }
        }
        pods.retain(|p| !plan.delete.iter().any(|(n, _)| n == &p.metadata.name));
        for i in &plan.create {
            *next += 1;
            let name = format!("p{next}");
            let mut p = pod(&name, Some("n"), Some(PodPhase::Running));
            p.metadata.creation_timestamp = Some(format!("{next:08}"));
            if let Some(i) = i {
                index_pod(&mut p, *i);
            }
            pods.push(p);
        }
    }

    #[test]
    fn an_indexed_job_starts_the_lowest_indexes_up_to_its_parallelism() {
        let plan = reconcile(&job(5, 2, true), &[], at(0));
        assert_eq!(plan.create, vec![Some(0), Some(1)]);
        let status = plan.status.expect("status");
        assert_eq!(status.active, 2);
        assert!(status.start_time.is_some());
    }

    #[test]
    fn succeeded_indexes_are_counted_once_and_not_run_again() {
        let mut j = job(3, 3, true);
        let done = indexed_pod("a", 0, Some(PodPhase::Succeeded));
        let plan = reconcile(&j, &[&done], at(0));
        assert_eq!(plan.count, vec![("a".to_string(), "Succeeded")]);
        assert_eq!(plan.create, vec![Some(1), Some(2)]);
        j.status = plan.status;
        assert_eq!(
            j.status.as_ref().map(|s| s.completed_indexes.as_str()),
            Some("0")
        );
        // Marked: not counted again; its index stays done even once it is gone.
        let mut marked = done.clone();
        marked
            .metadata
            .annotations
            .insert(COUNTED_ANNOTATION.into(), "Succeeded".into());
        let again = reconcile(&j, &[&marked], at(1));
        assert!(again.count.is_empty());
        assert_eq!(again.create, vec![Some(1), Some(2)]);
        assert_eq!(reconcile(&j, &[], at(1)).create, vec![Some(1), Some(2)]);
    }

    #[test]
    fn failures_count_against_the_backoff_limit_and_disruptions_do_not() {
        let j = job(1, 1, false);
        let mut failed = pod("f", Some("n"), Some(PodPhase::Failed));
        let plan = reconcile(&j, &[&failed], at(0));
        assert_eq!(plan.count, vec![("f".to_string(), "Failed")]);
        assert_eq!(plan.status.as_ref().map(|s| s.failed), Some(1));
        failed.metadata.deletion_timestamp = Some("t".into());
        let plan = reconcile(&j, &[&failed], at(0));
        assert_eq!(plan.count, vec![("f".to_string(), "Disrupted")]);
        assert_eq!(plan.status.as_ref().map(|s| s.failed), Some(0));
        assert_eq!(plan.create, vec![None]);
    }

    #[test]
    fn too_many_failures_fail_the_job_with_the_reason() {
        let j = job(4, 2, false);
        let pods: Vec<Pod> = (0..3)
            .map(|i| pod(&format!("f{i}"), Some("n"), Some(PodPhase::Failed)))
            .collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let plan = reconcile(&j, &refs, at(0));
        let status = plan.status.expect("status");
        let failed = status.condition("Failed").expect("failed");
        assert_eq!(failed.reason, "BackoffLimitExceeded");
        assert!(plan.create.is_empty());
        assert!(
            plan.events
                .iter()
                .any(|e| e.0 && e.1 == "BackoffLimitExceeded")
        );
    }

    #[test]
    fn the_deadline_fails_the_job_and_its_pods_go() {
        let mut j = job(2, 2, false);
        j.spec.active_deadline_seconds = Some(10);
        let first = reconcile(&j, &[], at(0));
        j.status = first.status;
        let running = pod("r", Some("n"), Some(PodPhase::Running));
        let plan = reconcile(&j, &[&running], at(11));
        assert_eq!(
            plan.status
                .as_ref()
                .and_then(|s| s.condition("Failed"))
                .map(|c| c.reason.as_str()),
            Some("DeadlineExceeded")
        );
        assert_eq!(plan.delete.len(), 1);
    }

    #[test]
    fn a_finished_job_goes_after_its_ttl() {
        let mut j = job(1, 1, false);
        j.spec.ttl_seconds_after_finished = Some(60);
        let done = pod("a", Some("n"), Some(PodPhase::Succeeded));
        let plan = reconcile(&j, &[&done], at(0));
        j.status = plan.status;
        assert!(j.status.as_ref().is_some_and(JobStatus::finished));
        assert!(!reconcile(&j, &[&done], at(59)).delete_job);
        assert!(reconcile(&j, &[&done], at(60)).delete_job);
    }

    #[test]
    fn running_twice_on_the_same_state_decides_the_same() {
        let mut j = job(2, 1, false);
        let running = pod("r", Some("n"), Some(PodPhase::Running));
        let first = reconcile(&j, &[&running], at(0));
        j.status = first.status;
        assert_eq!(reconcile(&j, &[&running], at(0)), Plan::default());
    }

    /// A pod's fate in the simulation below.
    #[derive(Debug, Clone, Copy)]
    enum Fate {
        Succeed,
        Fail,
        /// Deleted (evicted, drained, lost with its node).
        Disrupt,
        /// Deleted after succeeding (its node lost later).
        SucceedThenLost,
        Keep,
    }

    fn fate() -> impl Strategy<Value = Fate> {
        prop_oneof![
            6 => Just(Fate::Succeed),
            1 => Just(Fate::Fail),
            2 => Just(Fate::Disrupt),
            1 => Just(Fate::SucceedThenLost),
            2 => Just(Fate::Keep),
        ]
    }

    proptest! {
        /// Whatever happens to its pods, an Indexed Job never runs more
        /// than `parallelism` pods or two pods of one index, counts each
        /// index once, charges only failures, and with enough passes
        /// completes unless failures exceeded its limit.
        #[test]
        fn an_indexed_job_completes_each_index_once_whatever_the_weather(
            completions in 1u32..30,
            parallelism in 1u32..8,
            fates in proptest::collection::vec(fate(), 0..200),
        ) {
            let mut j = job(completions, parallelism, true);
            j.spec.backoff_limit = 1_000;
            let mut pods: Vec<Pod> = Vec::new();
            let mut next = 0;
            let mut fates = fates.into_iter();
            let mut failures = 0u32;
            for step in 0..400u64 {
                let refs: Vec<&Pod> = pods.iter().collect();
                let plan = reconcile(&j, &refs, at(step));
                apply(&mut j, &mut pods, &plan, &mut next);
                let active: Vec<&Pod> = pods
                    .iter()
                    .filter(|p| !is_finished(p) && !is_terminating(p))
                    .collect();
                prop_assert!(active.len() <= parallelism as usize);
                let mut seen = BTreeSet::new();
                for p in &active {
                    prop_assert!(seen.insert(index_of(p, completions)), "two pods share an index");
                }
                let status = j.status.clone().unwrap_or_default();
                prop_assert_eq!(status.failed, failures);
                if status.finished() {
                    prop_assert_eq!(status.succeeded, completions);
                    prop_assert_eq!(
                        status.completed_indexes.clone(),
                        format_indexes(&(0..completions).collect())
                    );
                    return Ok(());
                }
                // The weather acts on the oldest active pod.
                let Some(name) = active.first().map(|p| p.metadata.name.clone()) else {
                    continue;
                };
                let f = fates.next().unwrap_or(Fate::Succeed);
                let pos = pods.iter().position(|p| p.metadata.name == name).unwrap_or(0);
                let set = |p: &mut Pod, phase| {
                    if let Some(s) = p.status.as_mut() {
                        s.phase = phase;
                    }
                };
                match f {
                    Fate::Succeed => set(&mut pods[pos], PodPhase::Succeeded),
                    Fate::Fail => {
                        set(&mut pods[pos], PodPhase::Failed);
                        failures += 1;
                    }
                    Fate::Disrupt => {
                        pods.remove(pos);
                    }
                    Fate::SucceedThenLost => {
                        set(&mut pods[pos], PodPhase::Succeeded);
                        let refs: Vec<&Pod> = pods.iter().collect();
                        let plan = reconcile(&j, &refs, at(step));
                        apply(&mut j, &mut pods, &plan, &mut next);
                        pods.retain(|p| p.metadata.name != name);
                    }
                    Fate::Keep => {}
                }
            }
            prop_assert!(false, "the Job did not finish in 400 passes");
        }
    }
}
