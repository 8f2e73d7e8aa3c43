//! The command line and what each command does.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use api::batch::{CONTROLLER_UID_LABEL, CompletionMode, Job, results_by_index};
use api::master::*;
use api::worker::{ExecRequest, LogsRequest};
use api::workloads::{Deployment, REVISION_ANNOTATION, ReplicaSet};
use api::{ContainerState, EventRecord, Kind, Pod};
use clap::{CommandFactory, Parser, Subcommand};
use serde_json::Value;

use crate::call;
use crate::config::{self, Context};
use crate::conn::Conn;
use crate::errors::CliError;
use crate::manifest;
use crate::output::{self, Format};

/// mkctl controls an mkube cluster, the way kubectl controls Kubernetes.
#[derive(Parser, Debug)]
#[command(
    name = "mkctl",
    version,
    about,
    after_help = "Examples:
  mkctl apply -f web.yaml              # create or update what the file describes
  mkctl get pods -o wide               # pods with their nodes
  mkctl logs web-7d9f8-abcde -f        # follow a container's output
  mkctl rollout undo deployment/web    # back to the previous template
  mkctl auth can-i create deployments  # what the current context may do"
)]
pub struct Args {
    /// Masters to talk to (HOST:PORT, comma separated); overrides the context.
    #[arg(long, global = true, env = "MKUBE_SERVER")]
    server: Option<String>,
    /// Bearer token; overrides the context's.
    #[arg(long, global = true, env = "MKUBE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The cluster CA's certificate (PEM); overrides the context's.
    #[arg(long, global = true, env = "MKUBE_CA")]
    certificate_authority: Option<std::path::PathBuf>,
    /// The name the servers' certificates must carry when it is not the
    /// host dialled (masters.mkube for masters at public addresses).
    #[arg(long, global = true)]
    tls_server_name: Option<String>,
    /// Talk plain HTTP, to a cluster started with --insecure.
    #[arg(long, global = true)]
    insecure: bool,
    /// The context of the config file to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// The namespace (default: the context's, else `default`).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create or update objects from files, directories or stdin.
    #[command(
        after_help = "Examples:\n  mkctl apply -f web.yaml\n  mkctl apply -f manifests/ -R\n  cat web.json | mkctl apply -f -"
    )]
    Apply(FileArgs),
    /// Create objects from files; fails for objects that exist.
    #[command(after_help = "Examples:\n  mkctl create -f pod.yaml")]
    Create(FileArgs),
    /// List objects, or show one.
    #[command(
        after_help = "Examples:\n  mkctl get pods\n  mkctl get deploy web -o yaml\n  mkctl get po -l app=web -w\n  mkctl get nodes -o wide\n  mkctl get pods -A\n  mkctl get jobs\n  mkctl get pdb"
    )]
    Get {
        /// Kind (pods, po, deployments, deploy, rs, jobs, job, pdb, services, svc, ep,
        /// nodes, no, events, ev), or KIND/NAME.
        kind: String,
        /// A name.
        name: Option<String>,
        /// Output format: wide, json, yaml, name.
        #[arg(short = 'o', long)]
        output: Option<Format>,
        /// Label selector (`app=web,tier!=db`).
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// After listing, watch for changes.
        #[arg(short = 'w', long)]
        watch: bool,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Show an object in detail, with its events.
    #[command(
        after_help = "Examples:\n  mkctl describe pod web-7d9f8-abcde\n  mkctl describe deploy/web\n  mkctl describe job/cases"
    )]
    Describe {
        /// Kind, or KIND/NAME.
        kind: String,
        /// A name.
        name: Option<String>,
    },
    /// Delete objects by name or by file.
    #[command(
        after_help = "A pod that a node runs is Terminating until its containers have stopped: they get\nSIGTERM, then SIGKILL after the grace period (the pod's terminationGracePeriodSeconds,\n30 s by default); it holds its node's ports and resources until then.\n\nExamples:\n  mkctl delete deploy web\n  mkctl delete job cases   # and its pods\n  mkctl delete pod/web-7d9f8-abcde\n  mkctl delete pod web-7d9f8-abcde --grace-period 5\n  mkctl delete pod web-7d9f8-abcde --force\n  mkctl delete -f web.yaml"
    )]
    Delete {
        /// Kind, or KIND/NAME.
        kind: Option<String>,
        /// A name.
        name: Option<String>,
        /// Files or directories naming what to delete.
        #[arg(short = 'f', long = "filename")]
        files: Vec<String>,
        /// With -f on a directory: its subdirectories too.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// Seconds a pod's containers get between SIGTERM and SIGKILL
        /// (default: the pod's own); 0 needs --force.
        #[arg(long)]
        grace_period: Option<u64>,
        /// Remove pods from the cluster at once, without waiting for their
        /// containers to stop (they may go on running for a while).
        #[arg(long)]
        force: bool,
    },
    /// Print a container's output, or every result of a Job.
    #[command(
        after_help = "For job/NAME: the output of each succeeded pod, once, from the pods' status (the last\n4 KiB of each, kept after the container and its node are gone, until the Job is deleted).\nAn Indexed Job's lines are prefixed with their index, `[N] `; --index N prints one\nindex alone. Indexes without a result are listed on standard error.\n\nExamples:\n  mkctl logs web-7d9f8-abcde\n  mkctl logs web-7d9f8-abcde -c sidecar --tail 20 -f\n  mkctl logs job/cases\n  mkctl logs job/cases --index 17"
    )]
    Logs {
        /// The pod, or job/NAME.
        pod: String,
        /// With job/NAME: only this index's output, without a prefix.
        #[arg(long)]
        index: Option<u32>,
        /// The container (needed when the pod has several).
        #[arg(short = 'c', long)]
        container: Option<String>,
        /// Keep printing new output.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<u64>,
    },
    /// Run a command in a container.
    #[command(
        after_help = "Examples:\n  mkctl exec web-7d9f8-abcde -- ls /\n  mkctl exec web-7d9f8-abcde -c main -- sh -c 'echo hi'"
    )]
    Exec {
        /// The pod.
        pod: String,
        /// The container.
        #[arg(short = 'c', long)]
        container: Option<String>,
        /// The command and its arguments (after --).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Set the number of replicas of a Deployment or ReplicaSet.
    #[command(after_help = "Examples:\n  mkctl scale deploy/web --replicas 5")]
    Scale {
        /// Kind, or KIND/NAME.
        kind: String,
        /// A name.
        name: Option<String>,
        /// The new count.
        #[arg(long)]
        replicas: u32,
    },
    /// Follow, list and undo Deployment rollouts.
    Rollout {
        #[command(subcommand)]
        action: Rollout,
    },
    /// Mark a node unschedulable.
    #[command(after_help = "Examples:\n  mkctl cordon node-1")]
    Cordon {
        /// The node.
        node: String,
    },
    /// Mark a node schedulable again.
    #[command(after_help = "Examples:\n  mkctl uncordon node-1")]
    Uncordon {
        /// The node.
        node: String,
    },
    /// Add or remove taints of a node (KEY[=VALUE]:NoSchedule to add, a
    /// trailing - to remove): pods without a matching toleration are not
    /// scheduled there.
    #[command(
        after_help = "Examples:\n  mkctl taint nodes m1 node-role.kubernetes.io/control-plane:NoSchedule\n  mkctl taint nodes m1 node-role.kubernetes.io/control-plane:NoSchedule-\n  mkctl taint nodes w1 dedicated=batch:NoSchedule --overwrite"
    )]
    Taint {
        /// `nodes` (or `node`, `no`).
        kind: String,
        /// The node.
        node: String,
        /// KEY[=VALUE]:EFFECT to add; KEY[:EFFECT]- to remove.
        #[arg(required = true)]
        taints: Vec<String>,
        /// Replace a taint of the same key and effect with another value.
        #[arg(long)]
        overwrite: bool,
    },
    /// Cordon a node and evict its pods (each stops within its grace period).
    #[command(
        after_help = "Pods covered by a PodDisruptionBudget are evicted only as far as the budget allows:\nthe drain waits for their replacements elsewhere to be ready, says which budget it\nwaits for, and evicts more (kubectl's eviction API behaviour).\n\nExamples:\n  mkctl drain node-1\n  mkctl drain node-1 --force   # also pods no controller will replace\n  mkctl drain node-1 --timeout 300\n  mkctl drain node-1 --disable-eviction   # ignore budgets: delete everything now"
    )]
    Drain {
        /// The node.
        node: String,
        /// Also delete pods that no controller manages.
        #[arg(long)]
        force: bool,
        /// Delete every pod at once, ignoring PodDisruptionBudgets (the
        /// budgets broken are recorded as events).
        #[arg(long)]
        disable_eviction: bool,
        /// Give up after this many seconds of waiting for budgets (0: never).
        #[arg(long, default_value_t = 0)]
        timeout: u64,
    },
    /// The masters: members, leader, term, indexes, lag.
    Cluster {
        #[command(subcommand)]
        action: ClusterCmd,
    },
    /// What the current context may do.
    Auth {
        #[command(subcommand)]
        action: AuthCmd,
    },
    /// Read and write the store's keys directly (debugging).
    Kv {
        #[command(subcommand)]
        action: KvCmd,
    },
    /// Contexts in the config file.
    Config {
        #[command(subcommand)]
        action: ConfigCmd,
    },
    /// Print a shell completion script.
    #[command(after_help = "Examples:\n  mkctl completion bash > /etc/bash_completion.d/mkctl")]
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(clap::Args, Debug)]
struct FileArgs {
    /// Files or directories of manifests, or - for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<String>,
    /// Directories: their subdirectories too.
    #[arg(short = 'R', long)]
    recursive: bool,
}

#[derive(Subcommand, Debug)]
enum Rollout {
    /// Wait until the rollout finishes; fails when it stalls.
    #[command(after_help = "Examples:\n  mkctl rollout status deploy/web --timeout 2m")]
    Status {
        /// deployment/NAME, or deployment NAME.
        kind: String,
        /// A name.
        name: Option<String>,
        /// Give up after this long (`90s`, `5m`).
        #[arg(long, default_value = "5m")]
        timeout: humantime::Duration,
    },
    /// List the revisions.
    #[command(after_help = "Examples:\n  mkctl rollout history deploy/web")]
    History {
        /// deployment/NAME.
        kind: String,
        /// A name.
        name: Option<String>,
    },
    /// Go back to the previous revision (or --to-revision).
    #[command(
        after_help = "Examples:\n  mkctl rollout undo deploy/web\n  mkctl rollout undo deploy/web --to-revision 2"
    )]
    Undo {
        /// deployment/NAME.
        kind: String,
        /// A name.
        name: Option<String>,
        /// The revision.
        #[arg(long)]
        to_revision: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterCmd {
    /// Every master's view: role, term, commit and applied index, lag.
    #[command(after_help = "Examples:\n  mkctl cluster status")]
    Status,
}

#[derive(Subcommand, Debug)]
enum AuthCmd {
    /// Whether the context's token may do VERB on KIND: prints yes or no
    /// (exit status 0 or 1), and with -v the rule that decided.
    #[command(
        name = "can-i",
        after_help = "Examples:\n  mkctl auth can-i create deployments\n  mkctl auth can-i put kv\n  mkctl auth can-i drain nodes -v"
    )]
    CanI {
        /// get, list, watch, create, apply, delete, rollback, drain, logs,
        /// exec; put for kv.
        verb: String,
        /// A kind (pods, deployments, nodes, ...) or kv for the store's keys.
        kind: String,
        /// Also print why.
        #[arg(short, long)]
        verbose: bool,
    },
}

#[derive(Subcommand, Debug)]
enum KvCmd {
    /// Read a key.
    #[command(
        after_help = "Examples:\n  mkctl kv get /registry/deployments/default/web\n  mkctl kv get /registry/pods/ --prefix"
    )]
    Get {
        /// The key.
        key: String,
        /// Every key under this prefix.
        #[arg(long)]
        prefix: bool,
    },
    /// Write a key.
    #[command(after_help = "Examples:\n  mkctl kv put /debug/note hello")]
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Delete a key (or a prefix).
    #[command(after_help = "Examples:\n  mkctl kv del /debug/ --prefix")]
    Del {
        /// The key.
        key: String,
        /// Every key under this prefix.
        #[arg(long)]
        prefix: bool,
    },
    /// Print changes under a prefix as they happen.
    #[command(after_help = "Examples:\n  mkctl kv watch /registry/pods/")]
    Watch {
        /// The prefix.
        prefix: String,
        /// From this revision (default: now).
        #[arg(long)]
        from: Option<i64>,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Add or replace a context and make it current.
    #[command(
        after_help = "Examples:\n  mkctl config set-context local --servers 127.0.0.1:7000,127.0.0.1:7001 --token-file token --certificate-authority pki/ca.crt\n  mkctl config set-context plain --servers 127.0.0.1:7000 --token-file token --insecure"
    )]
    SetContext {
        /// Its name.
        name: String,
        /// The masters.
        #[arg(long, value_delimiter = ',', required = true)]
        servers: Vec<String>,
        /// A file holding the token.
        #[arg(long)]
        token_file: Option<std::path::PathBuf>,
        /// The default namespace.
        #[arg(long = "default-namespace")]
        default_namespace: Option<String>,
    },
    /// Remove a context.
    #[command(after_help = "Examples:\n  mkctl config delete-context old")]
    DeleteContext {
        /// Its name.
        name: String,
    },
    /// Switch the current context.
    #[command(after_help = "Examples:\n  mkctl config use-context local")]
    UseContext {
        /// Its name.
        name: String,
    },
    /// Print the contexts (tokens hidden).
    #[command(after_help = "Examples:\n  mkctl config view")]
    View,
}

struct Ctx {
    conn: Conn,
    namespace: String,
    explicit_namespace: bool,
}

fn kind_and_name(kind: &str, name: Option<&str>) -> Result<(Kind, Option<String>), CliError> {
    let (k, n) = match kind.split_once('/') {
        Some((k, n)) => (k, Some(n.to_string())),
        None => (kind, name.map(str::to_string)),
    };
    let k = k.split('.').next().unwrap_or(k);
    let kind = Kind::parse(k).map_err(|e| CliError::client(e.to_string()))?;
    Ok((kind, n))
}

fn require_name(kind: Kind, name: Option<String>) -> Result<String, CliError> {
    name.ok_or_else(|| {
        CliError::client(format!(
            "a resource name is required: {} NAME or {}/NAME",
            kind.plural(),
            kind.plural()
        ))
    })
}

/// Runs one command line.
pub async fn run(args: Args) -> Result<(), CliError> {
    let path = config::path();
    match args.command {
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Args::command(), "mkctl", &mut std::io::stdout());
            return Ok(());
        }
        Command::Config { action } => {
            let tls = ContextTls {
                certificate_authority: args.certificate_authority.clone(),
                tls_server_name: args.tls_server_name.clone(),
                insecure: args.insecure,
            };
            return config_command(action, path.as_deref(), &tls);
        }
        _ => {}
    }
    let cfg = match &path {
        Some(p) => config::load(p)?,
        None => config::Config::default(),
    };
    let target = cfg.target(&config::Flags {
        context: args.context.as_deref(),
        server: args.server.as_deref(),
        token: args.token.as_deref(),
        certificate_authority: args.certificate_authority.as_deref(),
        tls_server_name: args.tls_server_name.as_deref(),
        insecure: args.insecure,
    })?;
    let namespace = args.namespace.clone().unwrap_or(target.namespace.clone());
    let ctx = Ctx {
        conn: Conn::new(target, Duration::from_secs(30))?,
        explicit_namespace: args.namespace.is_some(),
        namespace,
    };
    match args.command {
        Command::Apply(f) => write_files(&ctx, &f, false).await,
        Command::Create(f) => write_files(&ctx, &f, true).await,
        Command::Get {
            kind,
            name,
            output,
            selector,
            watch,
            all_namespaces,
        } => {
            get(
                &ctx,
                &kind,
                name.as_deref(),
                output.unwrap_or(Format::Table),
                selector,
                watch,
                all_namespaces,
            )
            .await
        }
        Command::Describe { kind, name } => describe(&ctx, &kind, name.as_deref()).await,
        Command::Delete {
            kind,
            name,
            files,
            recursive,
            grace_period,
            force,
        } => {
            let grace = deletion_grace(grace_period, force)?;
            delete(
                &ctx,
                kind.as_deref(),
                name.as_deref(),
                &files,
                recursive,
                grace,
            )
            .await
        }
        Command::Logs {
            pod,
            index,
            container,
            follow,
            tail,
        } => match pod.strip_prefix("job/").or(pod.strip_prefix("jobs/")) {
            Some(job) => job_logs(&ctx, job, index, container.as_deref()).await,
            None if index.is_some() => Err(CliError::client(
                "--index is for job/NAME: a pod has one output",
            )),
            None => logs(&ctx, pod, container, follow, tail).await,
        },
        Command::Exec {
            pod,
            container,
            command,
        } => exec(&ctx, pod, container, command).await,
        Command::Scale {
            kind,
            name,
            replicas,
        } => scale(&ctx, &kind, name.as_deref(), replicas).await,
        Command::Rollout { action } => rollout(&ctx, action).await,
        Command::Cordon { node } => cordon(&ctx, &node, true).await,
        Command::Uncordon { node } => cordon(&ctx, &node, false).await,
        Command::Drain {
            node,
            force,
            disable_eviction,
            timeout,
        } => drain(&ctx, &node, force, disable_eviction, timeout).await,
        Command::Taint {
            kind,
            node,
            taints,
            overwrite,
        } => taint(&ctx, &kind, &node, &taints, overwrite).await,
        Command::Cluster {
            action: ClusterCmd::Status,
        } => cluster_status(&ctx).await,
        Command::Kv { action } => kv(&ctx, action).await,
        Command::Auth {
            action:
                AuthCmd::CanI {
                    verb,
                    kind,
                    verbose,
                },
        } => can_i(&ctx, verb, kind, verbose).await,
        Command::Completion { .. } | Command::Config { .. } => Ok(()),
    }
}

/// What the global flags say about a cluster's TLS, for `config set-context`.
struct ContextTls {
    certificate_authority: Option<std::path::PathBuf>,
    tls_server_name: Option<String>,
    insecure: bool,
}

fn config_command(
    action: ConfigCmd,
    path: Option<&std::path::Path>,
    tls: &ContextTls,
) -> Result<(), CliError> {
    let path = path.ok_or_else(|| CliError::client("no config file: set HOME or MKUBECONFIG"))?;
    let mut cfg = config::load(path)?;
    match action {
        ConfigCmd::SetContext {
            name,
            servers,
            token_file,
            default_namespace,
        } => {
            // The global --certificate-authority (kept as an absolute path)
            // and --insecure describe the cluster.
            let ca_file = tls
                .certificate_authority
                .clone()
                .map(|f| {
                    let f = std::path::absolute(&f).unwrap_or(f);
                    rpc::Roots::from_file(&f)
                        .map(|_| f)
                        .map_err(|e| CliError::client(format!("the certificate authority {e}")))
                })
                .transpose()?;
            let token = token_file
                .map(|f| {
                    // The first token of the file: a token file being
                    // rotated lists the new token first (see mkube-pki).
                    std::fs::read_to_string(&f)
                        .map(|t| {
                            t.lines()
                                .map(str::trim)
                                .find(|l| !l.is_empty() && !l.starts_with('#'))
                                .unwrap_or_default()
                                .to_string()
                        })
                        .map_err(|e| CliError::client(format!("cannot read {}: {e}", f.display())))
                })
                .transpose()?;
            cfg.set_context(Context {
                name: name.clone(),
                servers,
                token,
                certificate_authority: ca_file,
                tls_server_name: tls.tls_server_name.clone(),
                insecure: tls.insecure,
                namespace: default_namespace,
            });
            config::save(path, &cfg)?;
            println!("Context \"{name}\" set and in use.");
        }
        ConfigCmd::DeleteContext { name } => {
            let before = cfg.contexts.len();
            cfg.contexts.retain(|c| c.name != name);
            if cfg.contexts.len() == before {
                return Err(CliError::client(format!(
                    "no context exists with the name: {name:?}"
                )));
            }
            if cfg.current_context.as_deref() == Some(name.as_str()) {
                cfg.current_context = None;
            }
            config::save(path, &cfg)?;
            println!("deleted context {name} from {}", path.display());
        }
        ConfigCmd::UseContext { name } => {
            if !cfg.contexts.iter().any(|c| c.name == name) {
                return Err(CliError::client(format!(
                    "no context exists with the name: {name:?}"
                )));
            }
            cfg.current_context = Some(name.clone());
            config::save(path, &cfg)?;
            println!("Switched to context \"{name}\".");
        }
        ConfigCmd::View => {
            for c in &mut cfg.contexts {
                if c.token.is_some() {
                    c.token = Some("REDACTED".into());
                }
            }
            print!(
                "{}",
                serde_yaml_ng::to_string(&cfg).map_err(|e| CliError::client(e.to_string()))?
            );
        }
    }
    Ok(())
}

async fn write_files(ctx: &Ctx, f: &FileArgs, create: bool) -> Result<(), CliError> {
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

fn namespace_for(ctx: &Ctx, kind: Kind, all: bool) -> Option<String> {
    (kind.namespaced() && !all).then(|| ctx.namespace.clone())
}

async fn list(
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
fn warn_unreadable(kind: Kind, listed: &ListResponse) {
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

async fn get_one(ctx: &Ctx, kind: Kind, name: &str) -> Result<Value, CliError> {
    let req = ObjectRequest {
        kind: kind.plural().into(),
        namespace: Some(ctx.namespace.clone()),
        name: name.to_string(),
        resource_version: None,
        grace_period_seconds: None,
    };
    Ok(ctx.conn.master(call!(get, req)).await?.object)
}

fn print_objects(
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

async fn get(
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
async fn get_several(
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

async fn events_of(ctx: &Ctx, kind: Kind, name: &str) -> Result<Vec<EventRecord>, CliError> {
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

fn indent(value: &Value, by: usize) -> String {
    let text = serde_yaml_ng::to_string(value).unwrap_or_default();
    text.lines().map(|l| format!("{:by$}{l}\n", "")).collect()
}

async fn describe(ctx: &Ctx, kind: &str, name: Option<&str>) -> Result<(), CliError> {
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
async fn describe_service(ctx: &Ctx, o: &Value, name: &str) -> Result<(), CliError> {
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

/// The grace a delete asks for, with kubectl's rules: `--force` alone means
/// 0 (at once), `--grace-period 0` needs `--force`.
fn deletion_grace(grace_period: Option<u64>, force: bool) -> Result<Option<u64>, CliError> {
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

async fn delete(
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

async fn logs(
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
async fn job_logs(
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

async fn exec(
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

async fn apply_value(ctx: &Ctx, object: Value) -> Result<WriteResponse, CliError> {
    ctx.conn.master(call!(apply, WriteRequest { object })).await
}

async fn scale(ctx: &Ctx, kind: &str, name: Option<&str>, replicas: u32) -> Result<(), CliError> {
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

fn deployment_name(kind: &str, name: Option<&str>) -> Result<String, CliError> {
    let (k, n) = kind_and_name(kind, name)?;
    if k != Kind::Deployment {
        return Err(CliError::client(format!(
            "rollout works on deployments, not {}",
            k.plural()
        )));
    }
    require_name(k, n)
}

async fn rollout(ctx: &Ctx, action: Rollout) -> Result<(), CliError> {
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

async fn cordon(ctx: &Ctx, node: &str, unschedulable: bool) -> Result<(), CliError> {
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

async fn taint(
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

async fn drain(
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

async fn can_i(ctx: &Ctx, verb: String, kind: String, verbose: bool) -> Result<(), CliError> {
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

async fn cluster_status(ctx: &Ctx) -> Result<(), CliError> {
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

async fn kv(ctx: &Ctx, action: KvCmd) -> Result<(), CliError> {
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
