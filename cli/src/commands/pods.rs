//! `logs` (of a pod or of every index of a Job) and `exec`.

use api::batch::{CONTROLLER_UID_LABEL, CompletionMode, Job, results_by_index};
use api::worker::{ExecRequest, LogsRequest};
use api::{ContainerState, Kind, Pod};

use crate::call;
use crate::errors::CliError;

use super::Ctx;
use super::read::{get_one, list};

pub(super) async fn logs(
    ctx: &Ctx,
    pod: String,
    container: Option<String>,
    follow: bool,
    tail: Option<u64>,
) -> Result<(), CliError> {
    let pod = pod
        .strip_prefix("pod/")
        .or(pod.strip_prefix("po/"))
        .unwrap_or(&pod)
        .to_string();
    let mut req = LogsRequest {
        namespace: ctx.namespace.clone(),
        pod,
        container,
        tail_lines: tail,
        since_seconds: None,
        follow,
        cursor: None,
        wait_ms: Some(20_000),
    };
    loop {
        let r = ctx.conn.master(call!(logs, req.clone())).await?;
        for l in &r.lines {
            println!("{l}");
        }
        if !follow && !r.truncated {
            return Ok(());
        }
        req.cursor = r.cursor;
        req.tail_lines = None;
    }
}

/// `logs job/NAME`: each succeeded pod's kept output, once.
pub(super) async fn job_logs(
    ctx: &Ctx,
    name: &str,
    only: Option<u32>,
    container: Option<&str>,
) -> Result<(), CliError> {
    let job: Job = serde_json::from_value(get_one(ctx, Kind::Job, name).await?)
        .map_err(|e| CliError::client(format!("job {name:?} does not read as a Job: {e}")))?;
    let selector = format!("{CONTROLLER_UID_LABEL}={}", job.metadata.uid);
    let listed = list(ctx, Kind::Pod, false, Some(selector)).await?;
    let pods: Vec<Pod> = listed
        .items
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect();
    let output = |p: &Pod| -> Result<String, CliError> {
        let statuses = p.status.as_ref().map(|s| s.container_statuses.as_slice());
        let status = match container {
            Some(c) => statuses
                .and_then(|s| s.iter().find(|s| s.name == c))
                .ok_or_else(|| {
                    CliError::client(format!(
                        "container {c:?} is not in pod {:?}",
                        p.metadata.name
                    ))
                })?,
            None => match statuses.and_then(|s| s.first()) {
                Some(s) => s,
                None => return Ok(String::new()),
            },
        };
        Ok(match &status.state {
            ContainerState::Terminated { message, .. } => message.clone().unwrap_or_default(),
            _ => String::new(),
        })
    };
    let print = |prefix: &str, text: &str| {
        for line in text.lines() {
            println!("{prefix}{line}");
        }
        if text.len() >= api::pod::TERMINATION_MESSAGE_BYTES - 256 {
            eprintln!(
                "{prefix}(only the last {} bytes of its output are kept; `mkctl logs POD` has it all while the container exists)",
                api::pod::TERMINATION_MESSAGE_BYTES
            );
        }
    };
    if job.spec.completion_mode != CompletionMode::Indexed {
        if only.is_some() {
            return Err(CliError::client(format!(
                "job {name:?} is not Indexed: its pods have no index"
            )));
        }
        for p in pods
            .iter()
            .filter(|p| p.status.as_ref().map(|s| s.phase) == Some(api::PodPhase::Succeeded))
        {
            print(&format!("[{}] ", p.metadata.name), &output(p)?);
        }
        return Ok(());
    }
    let completions = job.spec.completions;
    if let Some(i) = only.filter(|i| *i >= completions) {
        return Err(CliError::client(format!(
            "index {i} is not below the Job's {completions} completions"
        )));
    }
    let results = results_by_index(&pods, completions);
    let mut missing = Vec::new();
    for i in 0..completions {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        match results.get(&i) {
            Some(p) if only.is_some() => print("", &output(p)?),
            Some(p) => print(&format!("[{i}] "), &output(p)?),
            None => missing.push(i),
        }
    }
    if !missing.is_empty() {
        let set: std::collections::BTreeSet<u32> = missing.iter().copied().collect();
        eprintln!(
            "job {name:?}: no result yet for {} of {completions} indexes: {}",
            missing.len(),
            api::batch::format_indexes(&set)
        );
    }
    Ok(())
}

pub(super) async fn exec(
    ctx: &Ctx,
    pod: String,
    container: Option<String>,
    command: Vec<String>,
) -> Result<(), CliError> {
    let req = ExecRequest {
        namespace: ctx.namespace.clone(),
        pod,
        container,
        command,
        timeout_ms: None,
    };
    let r = ctx.conn.master(call!(exec, req)).await?;
    print!("{}", r.stdout);
    eprint!("{}", r.stderr);
    if r.exit_code != 0 {
        return Err(CliError::client(format!(
            "command terminated with exit code {}",
            r.exit_code
        )));
    }
    Ok(())
}
