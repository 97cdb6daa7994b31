//! kp: a kube-proxy data plane for VPP.
//!
//! The crate is layered:
//! - a host-independent core — [`packet`] (views, checksums), [`nat`]
//!   (rewrite), [`xlat`] and [`nat64`] (between IPv4 and IPv6), [`maglev`] (new-flow tables), [`flowtable`] (per-thread
//!   established flows), [`refcount`] (per-thread reference counts),
//!   [`config`] (the service model and its validation) and [`dataplane`]
//!   (the per-packet pipeline over them) — plain Rust, tested and
//!   benchmarked without VPP;
//! - [`control`], [`cli`] and [`api`]: the operator and agent front ends
//!   over the core, still without VPP;
//! - [`vpp`]: the thin FFI layer (bindings of kp's own `vpp-headers/`,
//!   per-process state, nodes, CLI and API registration) that glues the
//!   rest into VPP; the only place with VPP-facing `unsafe`.

#![warn(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

pub mod api;
pub mod apigen;
pub mod cli;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod flowtable;
pub mod fragment;
pub mod fuzzing;
pub mod maglev;
pub mod mem;
pub mod nat;
pub mod nat64;
pub mod packet;
pub mod refcount;
pub mod reverse;
pub mod snapshot;
pub mod vpp;
pub mod xlat;
