//! `get`, `describe` and what they share: listing, printing, events.

use std::time::SystemTime;

use api::batch::{CompletionMode, Job};
use api::master::*;
use api::{EventRecord, Kind};
use serde_json::Value;

use crate::call;
use crate::errors::CliError;
use crate::output::{self, Format};

use super::{Ctx, kind_and_name, require_name};

pub(super) fn namespace_for(ctx: &Ctx, kind: Kind, all: bool) -> Option<String> {
    (kind.namespaced() && !all).then(|| ctx.namespace.clone())
}

pub(super) async fn list(
    ctx: &Ctx,
    kind: Kind,
    all: bool,
    selector: Option<String>,
) -> Result<ListResponse, CliError> {
    let req = ListRequest {
        kind: kind.plural().into(),
        namespace: namespace_for(ctx, kind, all),
        label_selector: selector,
        node_name: None,
    };
    let listed = ctx.conn.master(call!(list, req)).await?;
    warn_unreadable(kind, &listed);
    Ok(listed)
}

/// Names on stderr the stored values a list left out because they do not
/// parse, with how to get rid of them.
pub(super) fn warn_unreadable(kind: Kind, listed: &ListResponse) {
    for u in &listed.unreadable {
        let name = u.key.rsplit('/').next().unwrap_or(&u.key);
        eprintln!(
            "Warning: {} is unreadable and left out ({}); delete it with: mkctl delete {} {name} (or mkctl kv del {})",
            u.key,
            u.error,
            kind.plural(),
            u.key
        );
    }
}

pub(super) async fn get_one(ctx: &Ctx, kind: Kind, name: &str) -> Result<Value, CliError> {
    let req = ObjectRequest {
        kind: kind.plural().into(),
        namespace: Some(ctx.namespace.clone()),
        name: name.to_string(),
        resource_version: None,
        grace_period_seconds: None,
    };
    Ok(ctx.conn.master(call!(get, req)).await?.object)
}

pub(super) fn print_objects(
    kind: Kind,
    items: &[Value],
    format: Format,
    single: bool,
    header: bool,
    all: bool,
) -> Result<(), CliError> {
    let now = SystemTime::now();
    match format {
        Format::Json | Format::Yaml => {
            print!("{}", output::encode(items, single, format == Format::Yaml)?)
        }
        Format::Name => items
            .iter()
            .for_each(|o| println!("{}", output::name_of(kind, o))),
        Format::Table | Format::Wide => {
            let wide = format == Format::Wide;
            let mut rows = Vec::new();
            let ns_col = all && kind.namespaced();
            if header {
                let mut h: Vec<String> = output::header(kind, wide)
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                if ns_col {
                    h.insert(0, "NAMESPACE".into());
                }
                rows.push(h);
            }
            for o in items {
                let mut r = output::row(kind, o, wide, now);
                if ns_col {
                    r.insert(
                        0,
                        o.pointer("/metadata/namespace")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    );
                }
                rows.push(r);
            }
            if rows.len() <= usize::from(header) {
                return Ok(());
            }
            print!("{}", output::table(&rows));
        }
    }
    Ok(())
}

pub(super) async fn get(
    ctx: &Ctx,
    kind: &str,
    name: Option<&str>,
    format: Format,
    selector: Option<String>,
    watch: bool,
    all: bool,
) -> Result<(), CliError> {
    if kind.contains(',') && !kind.contains('/') {
        return get_several(ctx, kind, name, format, selector, watch, all).await;
    }
    let (kind, name) = kind_and_name(kind, name)?;
    let (items, version) = match &name {
        Some(n) => {
            let o = get_one(ctx, kind, n).await?;
            let v = o
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("0")
                .to_string();
            (vec![o], v)
        }
        None => {
            let l = list(ctx, kind, all, selector.clone()).await?;
            (l.items, l.resource_version)
        }
    };
    // Like kubectl: an empty list is still a List in json and yaml.
    if items.is_empty() && !watch && !matches!(format, Format::Json | Format::Yaml) {
        match namespace_for(ctx, kind, all) {
            Some(ns) => eprintln!("No resources found in {ns} namespace."),
            None => eprintln!("No resources found"),
        }
        return Ok(());
    }
    print_objects(kind, &items, format, name.is_some(), true, all)?;
    if !watch {
        return Ok(());
    }
    let mut version = version;
    loop {
        let req = WatchRequest {
            kind: kind.plural().into(),
            namespace: namespace_for(ctx, kind, all),
            label_selector: selector.clone(),
            resource_version: version.clone(),
            wait_ms: Some(30_000),
        };
        let w = ctx.conn.master(call!(watch, req)).await?;
        version = w.resource_version;
        for e in w.events {
            if name.as_deref().is_some_and(|n| {
                e.object.pointer("/metadata/name").and_then(Value::as_str) != Some(n)
            }) {
                continue;
            }
            if e.type_ == WatchEventType::Deleted && matches!(format, Format::Table | Format::Wide)
            {
                println!("{} deleted", output::name_of(kind, &e.object));
                continue;
            }
            print_objects(kind, &[e.object], format, true, false, all)?;
        }
    }
}

/// `get deploy,rs,pods`: one table per kind, names as `KIND/NAME`; one
/// `List` in json and yaml.
pub(super) async fn get_several(
    ctx: &Ctx,
    kinds: &str,
    name: Option<&str>,
    format: Format,
    selector: Option<String>,
    watch: bool,
    all: bool,
) -> Result<(), CliError> {
    if name.is_some() || watch {
        return Err(CliError::client(
            "several kinds take neither a name nor --watch: get them one kind at a time",
        ));
    }
    let kinds: Vec<Kind> = kinds
        .split(',')
        .map(|k| kind_and_name(k, None).map(|(k, _)| k))
        .collect::<Result<_, _>>()?;
    let mut every = Vec::new();
    let mut printed = false;
    for kind in kinds {
        let items = list(ctx, kind, all, selector.clone()).await?.items;
        match format {
            Format::Json | Format::Yaml => every.extend(items),
            _ if items.is_empty() => {}
            _ => {
                if printed && format != Format::Name {
                    println!();
                }
                let named: Vec<Value> = items
                    .into_iter()
                    .map(|mut o| {
                        let full = output::name_of(kind, &o);
                        if format != Format::Name {
                            o["metadata"]["name"] = Value::String(full);
                        }
                        o
                    })
                    .collect();
                print_objects(kind, &named, format, false, true, all)?;
                printed = true;
            }
        }
    }
    match format {
        Format::Json | Format::Yaml => {
            print!("{}", output::encode(&every, false, format == Format::Yaml)?)
        }
        _ if !printed => eprintln!("No resources found"),
        _ => {}
    }
    Ok(())
}

pub(super) async fn events_of(
    ctx: &Ctx,
    kind: Kind,
    name: &str,
) -> Result<Vec<EventRecord>, CliError> {
    let events = list(ctx, Kind::Event, !kind.namespaced(), None).await?;
    let mut out: Vec<EventRecord> = events
        .items
        .into_iter()
        .filter_map(|v| serde_json::from_value::<EventRecord>(v).ok())
        .filter(|e| e.involved_object.kind == kind.as_str() && e.involved_object.name == name)
        .collect();
    out.sort_by(|a, b| a.timestamp.cmp(&b.timestamp));
    Ok(out)
}

pub(super) fn indent(value: &Value, by: usize) -> String {
    let text = serde_yaml_ng::to_string(value).unwrap_or_default();
    text.lines().map(|l| format!("{:by$}{l}\n", "")).collect()
}

pub(super) async fn describe(ctx: &Ctx, kind: &str, name: Option<&str>) -> Result<(), CliError> {
    let (kind, name) = kind_and_name(kind, name)?;
    let name = require_name(kind, name)?;
    let o = get_one(ctx, kind, &name).await?;
    let meta = |p: &str| o.pointer(p).cloned().unwrap_or(Value::Null);
    println!("Name:         {name}");
    if kind.namespaced() {
        println!(
            "Namespace:    {}",
            meta("/metadata/namespace").as_str().unwrap_or("")
        );
    }
    let labels: Vec<String> = meta("/metadata/labels")
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    println!(
        "Labels:       {}",
        if labels.is_empty() {
            "<none>".into()
        } else {
            labels.join(",")
        }
    );
    println!(
        "Created:      {}",
        meta("/metadata/creationTimestamp")
            .as_str()
            .unwrap_or("<unknown>")
    );
    if let Some(owner) = o.pointer("/metadata/ownerReferences/0") {
        println!(
            "Controlled By: {}/{}",
            owner["kind"].as_str().unwrap_or(""),
            owner["name"].as_str().unwrap_or("")
        );
    }
    if kind == Kind::Service {
        describe_service(ctx, &o, &name).await?;
    }
    if kind == Kind::Job
        && let Ok(job) = serde_json::from_value::<Job>(o.clone())
    {
        let s = job.status.clone().unwrap_or_default();
        println!(
            "Completions:  {}/{} (parallelism {}, backoffLimit {}, {:?})",
            s.succeeded,
            job.spec.completions,
            job.spec.parallelism,
            job.spec.backoff_limit,
            job.spec.completion_mode
        );
        println!(
            "Pods Statuses: {} Active ({} Ready) / {} Succeeded / {} Failed",
            s.active, s.ready, s.succeeded, s.failed
        );
        if job.spec.completion_mode == CompletionMode::Indexed {
            println!(
                "Completed Indexes: {}",
                if s.completed_indexes.is_empty() {
                    "<none>"
                } else {
                    &s.completed_indexes
                }
            );
        }
    }
    println!("Spec:\n{}", indent(&meta("/spec"), 2).trim_end());
    if let Some(status) = o.get("status") {
        println!("Status:\n{}", indent(status, 2).trim_end());
    }
    let events = events_of(ctx, kind, &name).await?;
    if events.is_empty() {
        println!("Events:       <none>");
    } else {
        println!("Events:");
        let now = SystemTime::now();
        let mut rows = vec![vec![
            "  Type".to_string(),
            "Reason".into(),
            "Age".into(),
            "From".into(),
            "Message".into(),
        ]];
        for e in events {
            rows.push(vec![
                format!("  {:?}", e.type_),
                e.reason,
                output::age(Some(&e.timestamp), now),
                e.source,
                e.message,
            ]);
        }
        print!("{}", output::table(&rows));
    }
    Ok(())
}

/// kubectl's Service lines: the selector, each port, and where its ready
/// (and not ready) pods answer, from the Service's Endpoints.
pub(super) async fn describe_service(ctx: &Ctx, o: &Value, name: &str) -> Result<(), CliError> {
    let Ok(svc) = serde_json::from_value::<api::service::Service>(o.clone()) else {
        return Ok(());
    };
    println!("Selector:     {}", output::labels_text(&svc.spec.selector));
    let endpoints = match get_one(ctx, Kind::Endpoints, name).await {
        Ok(e) => serde_json::from_value::<api::service::Endpoints>(e).ok(),
        Err(_) => None,
    };
    for p in &svc.spec.ports {
        println!(
            "Port:         {}  {}/{:?}",
            p.name.as_deref().unwrap_or("<unset>"),
            p.port,
            p.protocol
        );
        let target = match &p.target_port {
            Some(api::service::TargetPort::Number(n)) => n.to_string(),
            Some(api::service::TargetPort::Name(n)) => n.clone(),
            None => p.port.to_string(),
        };
        println!("TargetPort:   {target}/{:?}", p.protocol);
        let (mut ready, mut not_ready) = (Vec::new(), Vec::new());
        for subset in endpoints.iter().flat_map(|e| &e.subsets) {
            if !subset.ports.iter().any(|sp| sp.name == p.name) {
                continue;
            }
            for sp in &subset.ports {
                ready.extend(
                    subset
                        .addresses
                        .iter()
                        .map(|a| format!("{}:{}", a.ip, sp.port)),
                );
                not_ready.extend(
                    subset
                        .not_ready_addresses
                        .iter()
                        .map(|a| format!("{}:{}", a.ip, sp.port)),
                );
            }
        }
        let none = |v: Vec<String>| {
            if v.is_empty() {
                "<none>".to_string()
            } else {
                v.join(",")
            }
        };
        println!("Endpoints:    {}", none(ready));
        println!("NotReady:     {}", none(not_ready));
    }
    Ok(())
}
