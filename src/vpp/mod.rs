//! The thin FFI layer between kp and VPP 26.06.
//!
//! `sys` holds the bindgen output of kp's own `vpp-headers/`; the modules
//! beside it wrap the few VPP facilities kp uses (registrations, CLI input
//! and output, errors) in safe functions. All unsafe code that touches VPP
//! lives under this module.

#[allow(non_camel_case_types, non_snake_case, non_upper_case_globals, dead_code, clippy::all)]
pub mod sys {
    include!(concat!(env!("OUT_DIR"), "/vpp_bindings.rs"));
}

// From the bottom up: each module uses only those above it in this list
// (plus `sys`), so imports inside `vpp` go one way.
pub mod api;
pub mod barrier;
pub mod buffer;
pub mod cli;
pub mod counters;
pub mod feature;
pub mod fib;
pub mod node;
pub mod plugin;
pub mod reg;
pub mod route;
pub mod state;
pub mod text;
pub mod time;
pub mod upkeep;

pub use reg::Registration;

use std::sync::OnceLock;

/// The looked-up symbols. The data pointers in it are addresses of VPP's
/// process-wide globals, valid on every thread.
struct Symbols(sys::VppFns);
// SAFETY: function pointers and addresses of process-lifetime globals;
// sharing the addresses is fine, each use documents its own exclusion.
unsafe impl Sync for Symbols {}
// SAFETY: as above.
unsafe impl Send for Symbols {}

static FNS: OnceLock<Symbols> = OnceLock::new();

/// Looks up every VPP function and variable kp uses in the running process
/// (the `vpp` executable exports them all). Fails, naming the symbol, when
/// one is missing: then kp registers nothing and VPP runs on without it.
pub fn load() -> Result<&'static sys::VppFns, String> {
    if let Some(f) = FNS.get() {
        return Ok(&f.0);
    }
    // SAFETY: dlopen(NULL) of the running process; looking up symbols runs
    // no code. The types are kp's declarations of VPP 26.06's ABI.
    let fns = unsafe { sys::VppFns::from_library(libloading::os::unix::Library::this()) }
        .map_err(|e| e.to_string())?;
    Ok(&FNS.get_or_init(|| Symbols(fns)).0)
}

/// The VPP symbol table; only valid inside VPP after [`load`] succeeded
/// (every caller is a callback VPP makes after kp registered itself).
pub fn fns() -> &'static sys::VppFns {
    &FNS.get().expect("VPP symbols are loaded before any callback runs").0
}
