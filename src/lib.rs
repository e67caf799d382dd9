//! ephemera: ephemeral test installations on Kubernetes.
//!
//! The binary `ephemera` is a thin command-line layer over this library; see
//! `cli` for its subcommands.

pub mod adapters;
pub mod allocator;
pub mod api;
pub mod cli;
pub mod controller;
pub mod events;
pub mod http_server;
pub mod telemetry;
