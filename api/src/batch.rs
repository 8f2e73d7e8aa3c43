//! Work that runs to completion: `Job` (`batch/v1`), and the budget that
//! bounds voluntary disruptions of a set of pods, `PodDisruptionBudget`
//! (`policy/v1`).
//!
//! A Job creates pods from its template until `completions` of them have
//! succeeded, at most `parallelism` at once. With `completionMode: Indexed`
//! each pod gets an index in `0..completions` (the annotation and label
//! [`JOB_COMPLETION_INDEX_ANNOTATION`], and the environment variable
//! `JOB_COMPLETION_INDEX`), and the Job completes when every index has
//! succeeded once. Pods that fail on their own count against
//! `backoffLimit`; pods lost to a disruption (deleted, evicted, on a lost
//! node) are replaced without being counted: on Spot VMs that is weather.

use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;
use crate::selector::LabelSelector;
use crate::workloads::{DeploymentCondition, IntOrPercent, PodTemplateSpec};

/// The annotation (and label) holding an Indexed Job's pod's index.
pub const JOB_COMPLETION_INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
/// The label naming a Job's pods' Job.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// The label holding a Job's pods' Job uid.
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// The environment variable an Indexed Job's pod reads its index from.
pub const JOB_COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

fn api_version_batch() -> String {
    "batch/v1".to_string()
}

fn kind_job() -> String {
    "Job".to_string()
}

fn one() -> u32 {
    1
}

fn six() -> u32 {
    6
}

/// A Job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Job {
    /// `batch/v1`.
    #[serde(default = "api_version_batch")]
    pub api_version: String,
    /// `Job`.
    #[serde(default = "kind_job")]
    pub kind: String,
    /// Identity.
    pub metadata: ObjectMeta,
    /// What to run to completion.
    pub spec: JobSpec,
    /// How far it got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
}

/// How a Job counts completions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompletionMode {
    /// Any `completions` successful pods complete the Job.
    #[default]
    NonIndexed,
    /// Each index in `0..completions` must succeed once.
    Indexed,
}

/// `spec` of a Job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobSpec {
    /// Successful pods needed (default 1).
    #[serde(default = "one")]
    pub completions: u32,
    /// Pods running at once, at most (default 1).
    #[serde(default = "one")]
    pub parallelism: u32,
    /// Pod failures (not disruptions) before the Job fails (default 6).
    #[serde(default = "six")]
    pub backoff_limit: u32,
    /// Seconds from the Job's start after which it fails and its pods go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<u64>,
    /// Seconds after the Job finishes when it is deleted, with its pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<u64>,
    /// `NonIndexed` (default) or `Indexed`.
    #[serde(default)]
    pub completion_mode: CompletionMode,
    /// Stops creating pods while true; running pods are deleted.
    #[serde(default)]
    pub suspend: bool,
    /// The pods' selector: filled in by the API server from the Job's uid
    /// (Kubernetes' generated selector); given by hand it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// The pods it creates; `restartPolicy` must be `OnFailure` or `Never`.
    pub template: PodTemplateSpec,
}

/// `status` of a Job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobStatus {
    /// When the controller first acted on it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When it completed (RFC 3339); unset if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// Pods neither finished nor terminating.
    #[serde(default)]
    pub active: u32,
    /// Of those, pods whose containers are all ready.
    #[serde(default)]
    pub ready: u32,
    /// Successful pods counted (for Indexed, distinct indexes).
    #[serde(default)]
    pub succeeded: u32,
    /// Failed pods counted against `backoffLimit` (disruptions are not).
    #[serde(default)]
    pub failed: u32,
    /// Pods lost to disruptions and replaced, not counted as failures
    /// (mkube's; Kubernetes reports them through the pods' DisruptionTarget).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub disrupted: u32,
    /// Indexed: the succeeded indexes, as ranges (`"0-3,7"`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub completed_indexes: String,
    /// `Complete` or `Failed` once it has finished; `Suspended`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<JobCondition>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One condition of a Job (the shape of Kubernetes' `JobCondition`).
pub type JobCondition = DeploymentCondition;

impl JobStatus {
    /// The condition of `type_` with status `"True"`, if present.
    pub fn condition(&self, type_: &str) -> Option<&JobCondition> {
        self.conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")
    }

    /// Whether the Job has finished (`Complete` or `Failed`).
    pub fn finished(&self) -> bool {
        self.condition("Complete").is_some() || self.condition("Failed").is_some()
    }
}

/// A set of indexes written as ranges, `"0-3,7,9-10"` (Kubernetes'
/// `completedIndexes`).
pub fn format_indexes(indexes: &std::collections::BTreeSet<u32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

/// Parses [`format_indexes`]' form; a malformed part is an error naming it.
pub fn parse_indexes(text: &str) -> Result<std::collections::BTreeSet<u32>, String> {
    let mut set = std::collections::BTreeSet::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let bad = || format!("{part:?} is neither an index nor a range like \"3-7\"");
        let (start, end) = match part.split_once('-') {
            Some((a, b)) => (
                a.parse::<u32>().map_err(|_| bad())?,
                b.parse::<u32>().map_err(|_| bad())?,
            ),
            None => {
                let n = part.parse::<u32>().map_err(|_| bad())?;
                (n, n)
            }
        };
        if start > end {
            return Err(bad());
        }
        set.extend(start..=end);
    }
    Ok(set)
}

/// A Job's pod's index, if it has a valid one below `completions`.
pub fn index_of(pod: &crate::Pod, completions: u32) -> Option<u32> {
    pod.metadata
        .annotations
        .get(JOB_COMPLETION_INDEX_ANNOTATION)
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|i| *i < completions)
}

/// An Indexed Job's results: for each index, its succeeded pod (the
/// oldest, should two have succeeded), so that each is read once.
pub fn results_by_index(
    pods: &[crate::Pod],
    completions: u32,
) -> std::collections::BTreeMap<u32, &crate::Pod> {
    let mut succeeded: Vec<&crate::Pod> = pods
        .iter()
        .filter(|p| p.status.as_ref().map(|s| s.phase) == Some(crate::PodPhase::Succeeded))
        .collect();
    succeeded.sort_by_key(|p| {
        (
            p.metadata.creation_timestamp.clone(),
            p.metadata.name.clone(),
        )
    });
    let mut out = std::collections::BTreeMap::new();
    for p in succeeded {
        if let Some(i) = index_of(p, completions) {
            out.entry(i).or_insert(p);
        }
    }
    out
}

fn api_version_policy() -> String {
    "policy/v1".to_string()
}

fn kind_pdb() -> String {
    "PodDisruptionBudget".to_string()
}

/// A PodDisruptionBudget: how many of the pods it selects must stay
/// available through voluntary disruptions (drain, maintenance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodDisruptionBudget {
    /// `policy/v1`.
    #[serde(default = "api_version_policy")]
    pub api_version: String,
    /// `PodDisruptionBudget`.
    #[serde(default = "kind_pdb")]
    pub kind: String,
    /// Identity.
    pub metadata: ObjectMeta,
    /// The pods and the bound.
    pub spec: PodDisruptionBudgetSpec,
    /// What the budget allows now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PodDisruptionBudgetStatus>,
}

/// `spec` of a PodDisruptionBudget: exactly one of the two bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodDisruptionBudgetSpec {
    /// The pods it covers (in its namespace).
    pub selector: LabelSelector,
    /// Pods that must stay available (a count or a percentage of expected pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrPercent>,
    /// Pods that may be unavailable at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrPercent>,
}

/// `status` of a PodDisruptionBudget.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodDisruptionBudgetStatus {
    /// Selected pods that are ready.
    pub current_healthy: u32,
    /// Ready pods the bound asks for.
    pub desired_healthy: u32,
    /// Selected pods (not finished, not terminating).
    pub expected_pods: u32,
    /// Pods that may be disrupted now.
    pub disruptions_allowed: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn indexes_read_as_ranges() {
        let set: std::collections::BTreeSet<u32> = [0, 1, 2, 3, 7, 9, 10].into();
        assert_eq!(format_indexes(&set), "0-3,7,9-10");
        assert_eq!(parse_indexes("0-3,7,9-10"), Ok(set));
        assert_eq!(parse_indexes(""), Ok(Default::default()));
        assert!(parse_indexes("3-1").is_err());
        assert!(parse_indexes("a").is_err());
    }

    proptest! {
        #[test]
        fn indexes_round_trip(set in proptest::collection::btree_set(0u32..500, 0..60)) {
            prop_assert_eq!(parse_indexes(&format_indexes(&set)), Ok(set));
        }
    }
}
