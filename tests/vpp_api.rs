//! kp's binary API from the standard Python client (vpp_papi from PyPI),
//! in file mode and in bootstrapapi mode, against real VPP 26.06 (skipped
//! without VPP). Also checks kp's generated JSON against VPP's own
//! vppapigen when it is installed.

mod common;
use common::{apidir, installed_vpp, kp_api_json, vpp_prefix, Options, Vpp};
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> Option<PathBuf> {
    common::venv_python("(vpp_api)")
}

#[test]
fn vpp_papi_configures_and_dumps_in_both_modes() {
    let Some(vpp_bin) = installed_vpp("vpp_papi_configures_and_dumps_in_both_modes") else { return };
    let Some(py) = python() else { return };
    let vpp = Vpp::start(&vpp_bin, Options::default()).unwrap_or_else(|e| panic!("{e}"));
    let api = apidir(&vpp.dir);
    for mode in ["file", "bootstrap"] {
        let out = Command::new(&py)
            .arg(root().join("tests/python/kp_api_test.py"))
            .arg(&vpp.api)
            .arg(&api)
            .arg(mode)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{mode} mode: {text}\nVPP: {}", vpp.output());
        assert!(text.contains(&format!("OK ({mode})")), "{text}");
    }
    // The API changes are visible on the CLI too, and VPP is still up.
    assert_eq!(vpp.ctl("show kp vip"), "kp: no VIPs configured\n");
}

/// Every message of kp's JSON (names, fields, CRCs, comments), its
/// services and its own enum equal what VPP 26.06's vppapigen makes of
/// kp.api.
#[test]
fn json_equals_vppapigen() {
    let gen = vpp_prefix().join("bin/vppapigen");
    let include = vpp_prefix().join("include");
    if !gen.exists() || !include.join("vnet/ip/ip_types.api").exists() {
        eprintln!(
            "SKIPPED json_equals_vppapigen: no vppapigen and VPP .api files under {}",
            vpp_prefix().display()
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("kp-apigen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let theirs = dir.join("kp.api.json");
    // vppapigen is a Python script needing `ply`; Debian's python3 has it.
    let out = Command::new("/usr/bin/python3")
        .arg(&gen)
        .arg("--includedir")
        .arg(&include)
        .args(["--input", "kp.api", "JSON", "--outputdir"])
        .arg(&dir)
        .arg("--output")
        .arg(&theirs)
        .current_dir(root())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && err.contains("No module named") {
        eprintln!("SKIPPED json_equals_vppapigen: vppapigen cannot run here: {err}");
        return;
    }
    assert!(out.status.success(), "vppapigen: {err}");
    let theirs: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&theirs).unwrap()).unwrap();
    let ours: serde_json::Value = serde_json::from_str(&kp_api_json()).unwrap();
    for key in ["module", "messages", "services", "options", "imports", "enumflags", "counters", "paths"] {
        assert_eq!(ours[key], theirs[key], "{key}");
    }
    // Types kp declares (it imports only what it uses) are identical.
    for key in ["types", "unions", "enums"] {
        for t in ours[key].as_array().unwrap() {
            let name = &t[0];
            let same = theirs[key].as_array().unwrap().iter().find(|x| &x[0] == name);
            assert_eq!(Some(t), same, "{key} {name}");
        }
    }
    for (k, v) in ours["aliases"].as_object().unwrap() {
        assert_eq!(Some(v), theirs["aliases"].get(k), "alias {k}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Hostile API input through the API socket: every kp request with random
/// field values, mutated, truncated and oversized, 2,000 messages. VPP
/// stays up; one shorter than its size VPP drops itself, before kp sees it
/// (no reply); each request that fails changes nothing (checked after every
/// one by dumping everything back).
#[test]
fn hostile_messages_change_nothing_and_keep_vpp_up() {
    let Some(vpp_bin) = installed_vpp("hostile_messages_change_nothing_and_keep_vpp_up") else { return };
    let Some(py) = python() else { return };
    let mut vpp = Vpp::start(&vpp_bin, Options::default()).unwrap_or_else(|e| panic!("{e}"));
    let api = apidir(&vpp.dir);
    let out = Command::new(&py)
        .arg(root().join("tests/python/kp_api_hostile.py"))
        .arg(&vpp.api)
        .arg(&api)
        .args(["2000", "7"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}\nVPP: {}", vpp.output());
    assert!(text.contains("OK: 2000 messages"), "{text}");
    eprintln!("{text}");
    assert!(vpp.is_running(), "{}", vpp.output());
}
