//! `cordon`, `uncordon`, `taint` and `drain`.

use std::time::{Duration, Instant};

use api::Kind;
use api::master::*;
use serde_json::Value;

use crate::call;
use crate::errors::CliError;

use super::Ctx;
use super::read::get_one;
use super::write::apply_value;

pub(super) async fn cordon(ctx: &Ctx, node: &str, unschedulable: bool) -> Result<(), CliError> {
    let node = node.strip_prefix("node/").unwrap_or(node);
    let mut o = get_one(ctx, Kind::Node, node).await?;
    let word = if unschedulable {
        "cordoned"
    } else {
        "uncordoned"
    };
    if o.pointer("/spec/unschedulable")
        .and_then(Value::as_bool)
        .unwrap_or(false)
        == unschedulable
    {
        println!("node/{node} already {word}");
        return Ok(());
    }
    o["spec"]["unschedulable"] = Value::Bool(unschedulable);
    apply_value(ctx, o).await?;
    println!("node/{node} {word}");
    Ok(())
}

pub(super) async fn taint(
    ctx: &Ctx,
    kind: &str,
    node: &str,
    changes: &[String],
    overwrite: bool,
) -> Result<(), CliError> {
    use api::node::Taint;
    if Kind::parse(kind).ok() != Some(Kind::Node) {
        return Err(CliError::client(format!(
            "taint applies to nodes, not {kind:?}: mkctl taint nodes NAME KEY=VALUE:NoSchedule"
        )));
    }
    let node = node.strip_prefix("node/").unwrap_or(node);
    let mut o = get_one(ctx, Kind::Node, node).await?;
    let mut taints: Vec<Taint> = serde_json::from_value(
        o.pointer("/spec/taints")
            .cloned()
            .unwrap_or(Value::Array(Vec::new())),
    )
    .map_err(|e| CliError::client(format!("node/{node} has unreadable taints: {e}")))?;
    for change in changes {
        if let Some(removal) = change.strip_suffix('-') {
            let (key, effect) = match removal.rsplit_once(':') {
                Some((k, e)) => (k, Some(e)),
                None => (removal, None),
            };
            let key = key.split_once('=').map_or(key, |(k, _)| k);
            let before = taints.len();
            taints.retain(|t| !(t.key == key && effect.is_none_or(|e| t.effect.to_string() == e)));
            if taints.len() == before {
                return Err(CliError::client(format!(
                    "taint {removal:?} not found on node/{node}"
                )));
            }
            continue;
        }
        let new: Taint = change.parse().map_err(CliError::client)?;
        match taints
            .iter_mut()
            .find(|t| t.key == new.key && t.effect == new.effect)
        {
            Some(old) if *old == new => {}
            Some(old) if overwrite => *old = new,
            Some(old) => {
                return Err(CliError::client(format!(
                    "node/{node} already has taint {old}; use --overwrite to replace it"
                )));
            }
            None => taints.push(new),
        }
    }
    o["spec"]["taints"] = serde_json::to_value(&taints)
        .map_err(|e| CliError::client(format!("encoding the taints: {e}")))?;
    apply_value(ctx, o).await?;
    println!("node/{node} tainted");
    Ok(())
}

pub(super) async fn drain(
    ctx: &Ctx,
    node: &str,
    force: bool,
    disable_eviction: bool,
    timeout_s: u64,
) -> Result<(), CliError> {
    let node = node.strip_prefix("node/").unwrap_or(node).to_string();
    let req = DrainRequest {
        node: node.clone(),
        force,
        disable_eviction,
    };
    let start = Instant::now();
    let mut waiting: Vec<String> = Vec::new();
    let mut first = true;
    loop {
        let r = ctx.conn.master(call!(drain, req.clone())).await?;
        if first {
            println!("node/{node} cordoned");
            first = false;
        }
        for p in &r.evicted {
            println!("evicting pod {p}");
        }
        if r.blocked.is_empty() {
            println!("node/{node} drained");
            return Ok(());
        }
        if r.blocked != waiting {
            for b in &r.blocked {
                println!("waiting: {b}");
            }
            waiting = r.blocked;
        }
        if timeout_s > 0 && start.elapsed() > Duration::from_secs(timeout_s) {
            return Err(CliError::client(format!(
                "drain of node/{node} timed out after {timeout_s} s; still waiting: {}",
                waiting.join("; ")
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
