//! Generates Rust declarations of the VPP ABI from kp's own headers
//! (`wrapper.h` -> `vpp-headers/`) with bindgen. Needs libclang only; no
//! VPP installation is needed to build kp.

use std::env;
use std::fmt::Write;
use std::path::PathBuf;

#[path = "src/apigen.rs"]
#[allow(dead_code)]
mod apigen;

/// Generates kp.api.json and the message-name/CRC table from kp.api with
/// kp's own generator (the same code `cargo test` checks against VPP's).
fn generate_api(out: &std::path::Path) {
    println!("cargo:rerun-if-changed=kp.api");
    println!("cargo:rerun-if-changed=src/apigen.rs");
    let text = std::fs::read_to_string("kp.api").expect("reading kp.api");
    let resolve = |p: &str| std::fs::read_to_string(format!("vpp-headers/api/{p}")).ok();
    let api = apigen::Api::parse("kp", &text, &resolve).unwrap_or_else(|e| panic!("kp.api: {e}"));
    std::fs::write(out.join("kp.api.json"), api.to_json()).unwrap();
    let mut rs = String::from("/// (message name, CRC) of every kp.api message, in definition order.\n");
    rs += "pub const MESSAGES: &[(&str, u32)] = &[\n";
    for m in api.messages() {
        writeln!(rs, "    (\"{}\", 0x{:08x}),", m.name, m.crc).unwrap();
    }
    rs += "];\n\n";
    // The `Msg` enum and its tables, from the same definitions: a message
    // added to kp.api is known to the handlers without a hand-kept list.
    let camel = |name: &str| -> String {
        let base = name.strip_prefix("kp_").unwrap_or(name);
        base.split('_').map(|w| w[..1].to_uppercase() + &w[1..]).collect()
    };
    let messages = api.messages();
    let sizes = api.wire_sizes();
    let services = api.services();
    rs += "/// kp.api's messages, in definition order (their offset from kp's base ID).\n";
    rs += "#[derive(Debug, Clone, Copy, PartialEq, Eq)]\n#[repr(u16)]\npub enum Msg {\n";
    for m in &messages {
        writeln!(rs, "    {},", camel(&m.name)).unwrap();
    }
    rs += "}\n\n";
    writeln!(rs, "const ALL: [Msg; {}] = [", messages.len()).unwrap();
    for m in &messages {
        writeln!(rs, "    Msg::{},", camel(&m.name)).unwrap();
    }
    rs += "];\n\nimpl Msg {\n";
    rs += "    /// Wire size in bytes, `_vl_msg_id` included (kp's messages are fixed-size).\n";
    rs += "    pub fn size(self) -> usize {\n        match self {\n";
    for (name, size) in &sizes {
        writeln!(rs, "            Msg::{} => {size},", camel(name)).unwrap();
    }
    rs += "        }\n    }\n\n";
    rs += "    /// The reply (or details) message of a request.\n";
    rs += "    pub fn reply(self) -> Option<Msg> {\n        match self {\n";
    for (req, reply, _) in &services {
        writeln!(rs, "            Msg::{} => Some(Msg::{}),", camel(req), camel(reply)).unwrap();
    }
    rs += "            _ => None,\n        }\n    }\n}\n";
    std::fs::write(out.join("kp_api_messages.rs"), rs).unwrap();
}

fn main() {
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    generate_api(&out_dir);
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=vpp-headers");
    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_arg("-Ivpp-headers")
        .allowlist_type("vlib_.*|_vlib_.*|vnet_.*|dpo_.*|fib_.*|vl_.*|api_main_t|clib_.*|unformat_input_t|vec_attr_t|kp_.*|format_function_t")
        .allowlist_function("vlib_.*|vnet_.*|dpo_.*|fib_.*|vl_.*|format|_clib_error_return|_vec_.*|vec_free_not_inline|unformat_.*|clib_time_verify_frequency|clib_mem_get_heap_usage|format_vnet_.*")
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
