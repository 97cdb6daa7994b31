//! Generates Rust declarations of the VPP ABI from kp's own headers
//! (`wrapper.h` -> `vpp-headers/`) with bindgen. Needs libclang only; no
//! VPP installation is needed to build kp.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=vpp-headers");
    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_arg("-Ivpp-headers")
        .allowlist_type("vlib_.*|_vlib_.*|vnet_.*|dpo_.*|fib_.*|vl_.*|api_main_t|clib_.*|unformat_input_t|vec_attr_t|kp_.*|format_function_t")
        .allowlist_function("vlib_.*|vnet_.*|dpo_.*|fib_.*|vl_.*|format|_clib_error_return|_vec_.*|vec_free_not_inline|unformat_.*|clib_time_verify_frequency|format_vnet_.*")
        .allowlist_var("vlib_.*|feature_main|KP_.*")
        // Functions are looked up in the running VPP at load time (through
        // libloading on the process itself) rather than linked: the crate's
        // tests and benches are ordinary executables with no VPP to link.
        .dynamic_library_name("VppFns")
        .dynamic_link_require_all(true)
        .derive_default(false)
        .derive_debug(false)
        .layout_tests(true)
        .use_core()
        .generate_comments(false)
        .generate()
        .expect("bindgen failed on wrapper.h (is libclang installed? apt-get install libclang-dev)");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("vpp_bindings.rs");
    bindings.write_to_file(out).expect("writing bindings");
}
