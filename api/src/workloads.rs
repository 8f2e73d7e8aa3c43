//! Controller-managed workloads: `ReplicaSet` (keep N copies of a pod
//! template running) and `Deployment` (roll a ReplicaSet over to a new
//! template within surge and unavailability bounds, keep a revision history).

use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;
use crate::pod::PodSpec;
use crate::selector::LabelSelector;

/// The annotation holding a ReplicaSet's (and its Deployment's) revision.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// The label a Deployment puts on its ReplicaSets and their pods: a hash of the template.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

fn api_version_apps() -> String {
    "apps/v1".to_string()
}

fn one() -> u32 {
    1
}

/// `spec.template`: the pods a workload creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodTemplateSpec {
    /// Labels (must match the selector) and annotations; no name.
    #[serde(default)]
    pub metadata: TemplateMeta,
    /// The pods' spec.
    pub spec: PodSpec,
}

/// The metadata a template may carry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateMeta {
    /// The pods' labels.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The pods' annotations.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// A ReplicaSet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicaSet {
    /// `apps/v1`.
    #[serde(default = "api_version_apps")]
    pub api_version: String,
    /// `ReplicaSet`.
    #[serde(default = "kind_replica_set")]
    pub kind: String,
    /// Identity.
    pub metadata: ObjectMeta,
    /// What to keep running.
    pub spec: ReplicaSetSpec,
    /// What the controller last saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ReplicaSetStatus>,
}

fn kind_replica_set() -> String {
    "ReplicaSet".to_string()
}

/// `spec` of a ReplicaSet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicaSetSpec {
    /// How many pods (default 1).
    #[serde(default = "one")]
    pub replicas: u32,
    /// Which pods count as its own; must match the template's labels.
    pub selector: LabelSelector,
    /// The pods it creates.
    pub template: PodTemplateSpec,
}

/// `status` of a ReplicaSet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicaSetStatus {
    /// Pods that exist and are not finished.
    pub replicas: u32,
    /// Of those, pods whose containers all run and are ready.
    pub ready_replicas: u32,
    /// Ready pods (no minReadySeconds here, so the same as ready).
    pub available_replicas: u32,
    /// The generation these figures are for.
    pub observed_generation: i64,
}

/// A Deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Deployment {
    /// `apps/v1`.
    #[serde(default = "api_version_apps")]
    pub api_version: String,
    /// `Deployment`.
    #[serde(default = "kind_deployment")]
    pub kind: String,
    /// Identity.
    pub metadata: ObjectMeta,
    /// What to run and how to roll it out.
    pub spec: DeploymentSpec,
    /// The rollout's progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DeploymentStatus>,
}

fn kind_deployment() -> String {
    "Deployment".to_string()
}

fn default_history() -> u32 {
    10
}

fn default_progress_deadline() -> u64 {
    600
}

/// `spec` of a Deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentSpec {
    /// How many pods (default 1).
    #[serde(default = "one")]
    pub replicas: u32,
    /// Which pods are its own; must match the template's labels.
    pub selector: LabelSelector,
    /// The pods it runs.
    pub template: PodTemplateSpec,
    /// How a new template replaces the old.
    #[serde(default)]
    pub strategy: DeploymentStrategy,
    /// Old ReplicaSets kept for rollback (default 10).
    #[serde(default = "default_history")]
    pub revision_history_limit: u32,
    /// Seconds without progress before the rollout is reported stuck (default 600).
    #[serde(default = "default_progress_deadline")]
    pub progress_deadline_seconds: u64,
}

/// `spec.strategy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentStrategy {
    /// `RollingUpdate` (default) or `Recreate`.
    #[serde(rename = "type", default)]
    pub type_: StrategyType,
    /// Bounds of a rolling update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
}

/// How a Deployment replaces pods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum StrategyType {
    /// New pods come up while old ones go, within the bounds.
    #[default]
    RollingUpdate,
    /// Every old pod goes before any new one starts.
    Recreate,
}

/// `spec.strategy.rollingUpdate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollingUpdate {
    /// Pods above `replicas` allowed during the update (default 25%, rounded up).
    #[serde(default = "quarter")]
    pub max_surge: IntOrPercent,
    /// Pods below `replicas` that may be unavailable (default 25%, rounded down).
    #[serde(default = "quarter")]
    pub max_unavailable: IntOrPercent,
}

fn quarter() -> IntOrPercent {
    IntOrPercent::Percent("25%".into())
}

impl Default for RollingUpdate {
    fn default() -> Self {
        RollingUpdate {
            max_surge: quarter(),
            max_unavailable: quarter(),
        }
    }
}

/// A count or a percentage of `replicas` (`1` or `"25%"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrPercent {
    /// An absolute count.
    Int(u32),
    /// `"N%"`.
    Percent(String),
}

impl IntOrPercent {
    /// The count for `replicas`, rounding a percentage up or down; an
    /// invalid percentage is an error naming it.
    pub fn resolve(&self, replicas: u32, round_up: bool) -> Result<u32, String> {
        match self {
            IntOrPercent::Int(n) => Ok(*n),
            IntOrPercent::Percent(text) => {
                let pct: u64 = text
                    .strip_suffix('%')
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n <= 100)
                    .ok_or_else(|| {
                        format!("{text:?} is neither a count nor a percentage like \"25%\"")
                    })?;
                let scaled = u64::from(replicas) * pct;
                let n = if round_up {
                    scaled.div_ceil(100)
                } else {
                    scaled / 100
                };
                Ok(n as u32)
            }
        }
    }
}

/// `status` of a Deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentStatus {
    /// The generation these figures are for.
    pub observed_generation: i64,
    /// Pods of every ReplicaSet of the Deployment.
    pub replicas: u32,
    /// Pods of the current template.
    pub updated_replicas: u32,
    /// Ready pods.
    pub ready_replicas: u32,
    /// Available pods.
    pub available_replicas: u32,
    /// `replicas` (desired) less available pods.
    pub unavailable_replicas: u32,
    /// `Available` and `Progressing`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<DeploymentCondition>,
}

/// One condition of a Deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentCondition {
    /// `Available` or `Progressing`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `"True"` or `"False"`.
    pub status: String,
    /// One CamelCase word (`NewReplicaSetAvailable`, `ProgressDeadlineExceeded`).
    pub reason: String,
    /// A sentence.
    pub message: String,
    /// When the condition last changed its status or reason (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

impl DeploymentStatus {
    /// The condition of `type_`, if present.
    pub fn condition(&self, type_: &str) -> Option<&DeploymentCondition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_like_kubernetes() {
        let p = IntOrPercent::Percent("25%".into());
        assert_eq!(p.resolve(6, true), Ok(2));
        assert_eq!(p.resolve(6, false), Ok(1));
        assert_eq!(IntOrPercent::Int(3).resolve(6, false), Ok(3));
        assert!(IntOrPercent::Percent("x%".into()).resolve(6, true).is_err());
        assert!(
            IntOrPercent::Percent("200%".into())
                .resolve(6, true)
                .is_err()
        );
    }
}
