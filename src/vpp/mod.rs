//! The thin FFI layer between kp and VPP 26.06.
//!
//! `sys` holds the bindgen output of kp's own `vpp-headers/`; the other
//! modules wrap it safely. All unsafe code that touches VPP lives here.

#[allow(non_camel_case_types, non_snake_case, non_upper_case_globals, dead_code, clippy::all)]
pub mod sys {
    include!(concat!(env!("OUT_DIR"), "/vpp_bindings.rs"));
}
