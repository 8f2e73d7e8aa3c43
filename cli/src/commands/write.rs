//! `apply`, `create`, `delete` and `scale`: writes of objects.

use api::Kind;
use api::master::*;
use serde_json::Value;

use crate::call;
use crate::errors::CliError;
use crate::manifest;
use crate::output;

use super::{Ctx, FileArgs, kind_and_name, require_name};

pub(super) async fn write_files(ctx: &Ctx, f: &FileArgs, create: bool) -> Result<(), CliError> {
    let docs = manifest::read(&f.files, f.recursive)?;
    let mut failed = None;
    for doc in docs {
        let mut object = doc.object;
        // `apply` means "make it so": what `get -o yaml` printed re-applies
        // even after a controller wrote the object's status since.
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        if ctx.explicit_namespace
            && let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut)
            && !meta.contains_key("namespace")
        {
            meta.insert("namespace".into(), Value::String(ctx.namespace.clone()));
        }
        let req = WriteRequest { object };
        let result = if create {
            ctx.conn.master(call!(create, req)).await
        } else {
            ctx.conn.master(call!(apply, req)).await
        };
        match result {
            Ok(r) => {
                let kind = r
                    .object
                    .get("kind")
                    .and_then(Value::as_str)
                    .and_then(|k| Kind::parse(k).ok());
                match kind {
                    Some(k) => println!("{} {}", output::name_of(k, &r.object), r.outcome.as_str()),
                    None => println!("{}", r.outcome.as_str()),
                }
            }
            // kubectl goes on with the other objects and fails at the end.
            Err(e) => {
                eprintln!("{e}");
                failed = Some(e);
            }
        }
    }
    match failed {
        // One failure: its message was the only output; exit 1 without repeating it.
        Some(e) => Err(e).map_err(|_| CliError::Silent),
        None => Ok(()),
    }
}

/// The grace a delete asks for, with kubectl's rules: `--force` alone means
/// 0 (at once), `--grace-period 0` needs `--force`.
pub(super) fn deletion_grace(
    grace_period: Option<u64>,
    force: bool,
) -> Result<Option<u64>, CliError> {
    match (grace_period, force) {
        (Some(0), false) => Err(CliError::client(
            "--grace-period 0 removes pods without waiting for their containers: add --force to mean it",
        )),
        (None, true) | (Some(0), true) => {
            eprintln!(
                "Warning: Immediate deletion does not wait for confirmation that the running resource has been terminated. The resource may continue to run on the cluster indefinitely."
            );
            Ok(Some(0))
        }
        (grace, _) => Ok(grace),
    }
}

pub(super) async fn delete(
    ctx: &Ctx,
    kind: Option<&str>,
    name: Option<&str>,
    files: &[String],
    recursive: bool,
    grace: Option<u64>,
) -> Result<(), CliError> {
    let mut targets: Vec<(Kind, String, Option<String>)> = Vec::new();
    if !files.is_empty() {
        for doc in manifest::read(files, recursive)? {
            let k = doc.object.get("kind").and_then(Value::as_str).unwrap_or("");
            let kind =
                Kind::parse(k).map_err(|e| CliError::client(format!("{}: {e}", doc.source)))?;
            let name = doc
                .object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let ns = doc
                .object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_string);
            targets.push((kind, name, ns));
        }
    } else {
        let kind = kind.ok_or_else(|| {
            CliError::client("you must provide one or more resources by argument or filename (-f)")
        })?;
        let (kind, name) = kind_and_name(kind, name)?;
        targets.push((kind, require_name(kind, name)?, None));
    }
    for (kind, name, ns) in targets {
        let req = ObjectRequest {
            kind: kind.plural().into(),
            namespace: Some(ns.unwrap_or(ctx.namespace.clone())),
            name: name.clone(),
            resource_version: None,
            grace_period_seconds: if kind == Kind::Pod { grace } else { None },
        };
        // As kubectl: "deleted" also when a pod is now Terminating.
        ctx.conn.master(call!(delete, req)).await?;
        println!("{} \"{name}\" deleted", output::resource(kind));
    }
    Ok(())
}

pub(super) async fn apply_value(ctx: &Ctx, object: Value) -> Result<WriteResponse, CliError> {
    ctx.conn.master(call!(apply, WriteRequest { object })).await
}
