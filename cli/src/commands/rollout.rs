//! `scale` and `rollout` (status, history, undo, restart).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use api::Kind;
use api::master::*;
use api::workloads::{Deployment, REVISION_ANNOTATION, ReplicaSet};
use serde_json::Value;

use crate::call;
use crate::errors::CliError;
use crate::output;

use super::read::{get_one, list};
use super::write::apply_value;
use super::{Ctx, Rollout, kind_and_name, require_name};

pub(super) async fn scale(
    ctx: &Ctx,
    kind: &str,
    name: Option<&str>,
    replicas: u32,
) -> Result<(), CliError> {
    let (kind, name) = kind_and_name(kind, name)?;
    let name = require_name(kind, name)?;
    if !matches!(kind, Kind::Deployment | Kind::ReplicaSet) {
        return Err(CliError::client(format!(
            "cannot scale {}: only deployments and replicasets scale",
            kind.plural()
        )));
    }
    let mut o = get_one(ctx, kind, &name).await?;
    o["spec"]["replicas"] = Value::from(replicas);
    apply_value(ctx, o).await?;
    println!(
        "{} scaled",
        output::name_of(kind, &serde_json::json!({"metadata": {"name": name}}))
    );
    Ok(())
}

pub(super) fn deployment_name(kind: &str, name: Option<&str>) -> Result<String, CliError> {
    let (k, n) = kind_and_name(kind, name)?;
    if k != Kind::Deployment {
        return Err(CliError::client(format!(
            "rollout works on deployments, not {}",
            k.plural()
        )));
    }
    require_name(k, n)
}

pub(super) async fn rollout(ctx: &Ctx, action: Rollout) -> Result<(), CliError> {
    match action {
        Rollout::Status {
            kind,
            name,
            timeout,
        } => {
            let name = deployment_name(&kind, name.as_deref())?;
            let deadline = Instant::now() + Duration::from(timeout);
            let mut last = String::new();
            loop {
                let d: Deployment =
                    serde_json::from_value(get_one(ctx, Kind::Deployment, &name).await?)
                        .map_err(|e| CliError::client(format!("unexpected deployment: {e}")))?;
                let s = d.status.clone().unwrap_or_default();
                let want = d.spec.replicas;
                if s.condition("Progressing")
                    .is_some_and(|c| c.reason == "ProgressDeadlineExceeded")
                {
                    return Err(CliError::client(format!(
                        "deployment {name:?} exceeded its progress deadline"
                    )));
                }
                let line = if s.observed_generation < d.metadata.generation {
                    "Waiting for deployment spec update to be observed...".to_string()
                } else if s.updated_replicas < want {
                    format!(
                        "Waiting for deployment {name:?} rollout to finish: {} out of {want} new replicas have been updated...",
                        s.updated_replicas
                    )
                } else if s.replicas > s.updated_replicas {
                    format!(
                        "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
                        s.replicas - s.updated_replicas
                    )
                } else if s.available_replicas < s.updated_replicas {
                    format!(
                        "Waiting for deployment {name:?} rollout to finish: {} of {} updated replicas are available...",
                        s.available_replicas, s.updated_replicas
                    )
                } else {
                    println!("deployment {name:?} successfully rolled out");
                    return Ok(());
                };
                if line != last {
                    println!("{line}");
                    last = line;
                }
                if Instant::now() > deadline {
                    return Err(CliError::client(format!(
                        "timed out waiting for the condition (rollout of deployment {name:?} after {timeout})"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        Rollout::History { kind, name } => {
            let name = deployment_name(&kind, name.as_deref())?;
            let d = get_one(ctx, Kind::Deployment, &name).await?;
            let uid = d
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let rss = list(ctx, Kind::ReplicaSet, false, None).await?;
            let mut revisions: BTreeMap<u64, String> = BTreeMap::new();
            for v in rss.items {
                let Ok(rs) = serde_json::from_value::<ReplicaSet>(v) else {
                    continue;
                };
                if rs.metadata.controller().is_some_and(|o| o.uid == uid) {
                    let rev = rs
                        .metadata
                        .annotations
                        .get(REVISION_ANNOTATION)
                        .and_then(|r| r.parse().ok())
                        .unwrap_or(0);
                    let images: Vec<&str> = rs
                        .spec
                        .template
                        .spec
                        .containers
                        .iter()
                        .map(|c| c.image.as_str())
                        .collect();
                    revisions.insert(rev, images.join(","));
                }
            }
            println!("deployment.apps/{name}");
            let mut rows = vec![vec!["REVISION".to_string(), "IMAGES".into()]];
            rows.extend(revisions.into_iter().map(|(r, i)| vec![r.to_string(), i]));
            print!("{}", output::table(&rows));
            Ok(())
        }
        Rollout::Undo {
            kind,
            name,
            to_revision,
        } => {
            let name = deployment_name(&kind, name.as_deref())?;
            let req = RollbackRequest {
                namespace: Some(ctx.namespace.clone()),
                name: name.clone(),
                to_revision,
            };
            ctx.conn.master(call!(rollback, req)).await?;
            println!("deployment.apps/{name} rolled back");
            Ok(())
        }
    }
}
