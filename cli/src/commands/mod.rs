//! The command line and what each command does.

use std::time::Duration;

use api::Kind;
use clap::{CommandFactory, Parser, Subcommand};

use crate::config;
use crate::conn::Conn;
use crate::errors::CliError;
use crate::output::Format;

mod cluster;
mod contexts;
mod nodes;
mod pods;
mod read;
mod rollout;
mod write;

use cluster::*;
use contexts::*;
use nodes::*;
use pods::*;
use read::*;
use rollout::*;
use write::*;

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
