//! mkctl, the mini-kubectl.
//!
//! This crate will own (see `DESIGN.md`, "Interfaces people touch") kubectl's
//! everyday commands against an mkube cluster: `apply`, `get`, `describe`,
//! `delete`, `logs`, `exec`, `scale`, `rollout`, `cordon` / `drain`,
//! `cluster status`, and contexts in a config file.
