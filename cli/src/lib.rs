//! mkctl, the mini-kubectl: kubectl's everyday commands against an mkube
//! cluster, with kubectl's conventions (`KIND NAME` or `KIND/NAME`, short
//! kind names, tables with NAME first and AGE last, `deployment.apps/web
//! configured`, errors in kubectl's two styles, exit code 1 on failure).
//!
//! # Layout
//!
//! - [`commands`]: the command line (clap) and the dispatch; one module per
//!   family of commands (`read`: get and describe; `write`: apply, create,
//!   delete; `pods`: logs and exec; `rollout`: scale and rollout; `nodes`:
//!   cordon, taint, drain; `cluster`: can-i, cluster status, kv;
//!   `contexts`: config).
//! - [`conn`]: reaching any master of the cluster (the first that answers).
//! - [`config`]: contexts in `~/.mkube/config` / `$MKUBECONFIG`.
//! - [`manifest`]: reading `-f` files, directories and stdin (YAML, JSON).
//! - [`output`]: tables, ages, `-o json|yaml|name|wide`.
//! - [`errors`]: `Error from server (Reason): ...` and `error: ...`.
//!
//! Beyond `api` and `rpc` it uses `kvs-api`, the wire types of the store's
//! `Kv` service (`cluster status` and `kv` talk to the store each master
//! embeds), and never the store itself.

pub mod commands;
pub mod config;
pub mod conn;
pub mod errors;
pub mod manifest;
pub mod output;
