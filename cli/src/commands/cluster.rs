//! `auth can-i`, `cluster status` and `kv`: the access rules and the store.

use api::master::*;

use crate::call;
use crate::errors::CliError;
use crate::output;

use super::{Ctx, KvCmd};

pub(super) async fn can_i(
    ctx: &Ctx,
    verb: String,
    kind: String,
    verbose: bool,
) -> Result<(), CliError> {
    let r = ctx
        .conn
        .master(call!(review_access, AccessReviewRequest { verb, kind }))
        .await?;
    println!("{}", if r.allowed { "yes" } else { "no" });
    if verbose {
        eprintln!("{}", r.reason);
    }
    if r.allowed {
        Ok(())
    } else {
        Err(CliError::Silent)
    }
}

pub(super) async fn cluster_status(ctx: &Ctx) -> Result<(), CliError> {
    let mut rows = vec![
        [
            "MEMBER",
            "ADDRESS",
            "ROLE",
            "TERM",
            "EPOCH",
            "COMMIT",
            "APPLIED",
            "LAG",
            "SNAPSHOT",
            "LAST-EXPORT",
            "KEYS",
            "STORE",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<String>>(),
    ];
    let mut answers = Vec::new();
    for addr in ctx.conn.addresses() {
        let Some(client) = ctx.conn.member(&addr) else {
            continue;
        };
        answers.push((addr.clone(), client.status(&kvs_api::Empty {}).await));
    }
    let configuration: Option<Vec<String>> = answers
        .iter()
        .filter_map(|(_, s)| s.as_ref().ok())
        .find(|s| s.role == kvs_api::Role::Leader)
        .map(|s| {
            s.members
                .iter()
                .map(|m| {
                    let role = if m.voter { "voter" } else { "learner" };
                    format!("{} ({:x}, {role})", m.name, m.id)
                })
                .collect()
        });
    let leader_commit = answers
        .iter()
        .filter_map(|(_, s)| s.as_ref().ok())
        .filter(|s| s.role == kvs_api::Role::Leader)
        .map(|s| s.commit_index)
        .max();
    let mut reachable = 0;
    let mut alarms = Vec::new();
    for (addr, s) in answers {
        match s {
            Ok(s) => {
                reachable += 1;
                for alarm in &s.alarms {
                    alarms.push(format!(
                        "Alarm {alarm} on {}: the store holds {} of its quota of {}; writes that put are refused until objects are deleted or --quota-bytes is raised",
                        s.name,
                        api::quantity::format_memory_bytes(s.bytes),
                        api::quantity::format_memory_bytes(s.quota_bytes)
                    ));
                }
                let lag = leader_commit.map_or("?".to_string(), |c| {
                    c.saturating_sub(s.applied_index).to_string()
                });
                rows.push(vec![
                    format!("{} ({:x})", s.name, s.id),
                    addr,
                    format!("{:?}{}", s.role, if s.voter { "" } else { " (learner)" }),
                    s.term.to_string(),
                    s.epoch.map_or("-".into(), |e| e.to_string()),
                    s.commit_index.to_string(),
                    s.applied_index.to_string(),
                    lag,
                    s.snapshot_index.to_string(),
                    s.last_export_age_ms
                        .map_or("never".into(), |ms| format!("{}s ago", ms / 1000)),
                    s.keys.to_string(),
                    format!(
                        "{}/{}",
                        output::approx_bytes(s.bytes),
                        output::approx_bytes(s.quota_bytes)
                    ),
                ]);
            }
            Err(e) => {
                let err = CliError::from_rpc(&e, &addr);
                let mut r = vec!["?".to_string(), addr, "Unreachable".into()];
                r.extend(std::iter::repeat_n("-".to_string(), 9));
                if !err.is_unreachable() {
                    return Err(err);
                }
                rows.push(r);
            }
        }
    }
    print!("{}", output::table(&rows));
    for alarm in alarms {
        println!("{alarm}");
    }
    match configuration {
        Some(members) => println!("Members (as the leader has them): {}", members.join(", ")),
        None if reachable > 0 => println!(
            "No leader: the masters that answer are electing one or looking for their cluster."
        ),
        None => {}
    }
    if reachable == 0 {
        return Err(CliError::client(format!(
            "cannot reach the cluster: tried {}",
            ctx.conn.addresses().join(", ")
        )));
    }
    Ok(())
}

pub(super) async fn kv(ctx: &Ctx, action: KvCmd) -> Result<(), CliError> {
    use kvs_api::{DeleteRequest, GetRequest, PutRequest, RangeRequest, WatchRequest as KvWatch};
    match action {
        KvCmd::Get { key, prefix: false } => {
            let r = ctx
                .conn
                .kv(call!(get, GetRequest { key: key.clone() }))
                .await?;
            match r.kv {
                Some(kv) => println!("{}", kv.value),
                None => return Err(CliError::client(format!("key {key:?} not found"))),
            }
        }
        KvCmd::Get { key, prefix: true } => {
            let r = ctx
                .conn
                .kv(call!(
                    range,
                    RangeRequest {
                        prefix: key,
                        limit: 0
                    }
                ))
                .await?;
            for kv in r.kvs {
                println!("{}\n{}", kv.key, kv.value);
            }
        }
        KvCmd::Put { key, value } => {
            let r = ctx
                .conn
                .kv(call!(
                    put,
                    PutRequest {
                        key,
                        value,
                        request_id: None
                    }
                ))
                .await?;
            println!("OK (revision {})", r.revision);
        }
        KvCmd::Del { key, prefix } => {
            let r = ctx
                .conn
                .kv(call!(
                    delete,
                    DeleteRequest {
                        key,
                        prefix,
                        request_id: None
                    }
                ))
                .await?;
            println!("{}", r.deleted);
        }
        KvCmd::Watch { prefix, from } => {
            let mut next = match from {
                Some(f) => f,
                None => {
                    ctx.conn
                        .kv(call!(
                            get,
                            GetRequest {
                                key: prefix.clone()
                            }
                        ))
                        .await?
                        .revision
                        + 1
                }
            };
            loop {
                let req = KvWatch {
                    prefix: prefix.clone(),
                    from_revision: next,
                    wait_ms: 30_000,
                };
                let r = ctx.conn.kv(call!(watch, req)).await?;
                for e in r.events {
                    match e {
                        kvs_api::kv::Event::Put { kv } => println!(
                            "PUT {} (revision {})\n{}",
                            kv.key, kv.mod_revision, kv.value
                        ),
                        kvs_api::kv::Event::Delete { key, revision } => {
                            println!("DELETE {key} (revision {revision})")
                        }
                    }
                }
                next = r.next_revision;
            }
        }
    }
    Ok(())
}
