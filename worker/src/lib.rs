//! The mkube node agent (`mkube-worker`): the kubelet of mkube.
//!
//! # Layout
//!
//! - [`model`]: slots, observed containers, the labels and names the worker
//!   puts on containers.
//! - [`reconcile`]: the pure reconciler of desired pods against observed
//!   containers.
pub mod agent;
pub mod docker;
pub mod model;
pub mod reconcile;
pub mod register;
pub mod service;
pub mod status;
