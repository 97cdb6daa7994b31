//! Replays the fuzzers' committed seed corpora and every input a fuzzer
//! found (fuzz/regressions/<target>/) through the same harnesses, so the
//! normal suite keeps each finding fixed, with or without nightly Rust.

use kp_plugin::fuzzing;
use std::path::Path;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else { continue };
        for e in entries {
            let path = e.unwrap().path();
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn dataplane_inputs_hold_their_oracle_and_reach_every_path() {
    let mut total = fuzzing::Reached::default();
    let all = inputs("dataplane");
    assert!(all.len() >= 3, "seed corpus missing");
    for (name, data) in &all {
        let r = fuzzing::dataplane(data);
        eprintln!("{name}: {r:?}");
        total.forwarded_valid += r.forwarded_valid;
        total.rejected += r.rejected;
        total.replies += r.replies;
        total.icmp_translated += r.icmp_translated;
        for (t, n) in total.by_nat.iter_mut().zip(r.by_nat) {
            *t += n;
        }
    }
    // The seeds are worth mutating only if they reach each path: valid
    // requests of every NAT type translated, rejects, replies, and ICMP
    // errors translated.
    assert!(total.by_nat.iter().all(|&n| n > 0), "{total:?}");
    assert!(total.rejected > 0 && total.replies > 0 && total.icmp_translated > 0, "{total:?}");
}

/// Every input of `target` through its harness (which panics when its
/// oracle fails).
fn replay(target: &str, harness: fn(&[u8])) {
    let all = inputs(target);
    assert!(!all.is_empty(), "{target}: seed corpus missing");
    for (_, data) in &all {
        harness(data);
    }
}

#[test]
fn cli_inputs_hold_their_oracle() {
    replay("cli", fuzzing::cli);
}

#[test]
fn api_inputs_hold_their_oracle() {
    replay("api", fuzzing::api);
}

#[test]
fn apigen_inputs_hold_their_oracle() {
    replay("apigen", fuzzing::apigen);
}
