//! kp in real VPP 26.06, driven with vppctl (skipped without VPP).

mod common;
use common::{installed_vpp, Options, Vpp};

fn start(test: &str, o: Options) -> Option<Vpp> {
    let vpp = installed_vpp(test)?;
    Some(Vpp::start(&vpp, o).unwrap_or_else(|e| panic!("{e}")))
}

fn example_lines() -> Vec<String> {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/example.cli"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

const EXAMPLE_VERBOSE: &str = "\
[1] 192.0.2.10/32 udp port 53 target_port 5353 nat44 new_len 1024 pods 2
    pod 203.0.113.4 weight 1 new-flow entries 512 active flows 0 packets 0
    pod 203.0.113.5 weight 1 new-flow entries 512 active flows 0 packets 0
    counters: existing flow packets 0, first packets 0, untracked 0, no pod 0
[0] 192.0.2.10/32 tcp+udp port 80 target_port 8080 node_port 30080 nat44 new_len 1024 pods 2
    pod 203.0.113.1 weight 1 new-flow entries 341 active flows 0 packets 0
    pod 203.0.113.2 weight 2 new-flow entries 683 active flows 0 packets 0
    counters: existing flow packets 0, first packets 0, untracked 0, no pod 0
[2] 2001:db8::10/128 tcp+udp port 443 target_port 8443 nat66 new_len 4099 pods 2
    pod 2001:db8:b::1 weight 1 new-flow entries 1025 active flows 0 packets 0
    pod 2001:db8:b::2 weight 3 new-flow entries 3074 active flows 0 packets 0
    counters: existing flow packets 0, first packets 0, untracked 0, no pod 0
";

#[test]
fn loads_and_configures_the_readme_example() {
    let Some(vpp) = start("loads_and_configures_the_readme_example", Options::default()) else { return };
    let plugins = vpp.ctl("show plugins");
    assert!(plugins.contains("kp_plugin.so") && plugins.contains("kube-proxy (kp)"), "{plugins}");
    assert_eq!(vpp.ctl("show kp vip"), "kp: no VIPs configured\n");
    for line in example_lines() {
        let out = vpp.ctl(&line);
        assert_eq!(out, "", "{line}: {out}");
    }
    assert_eq!(vpp.ctl("show kp vip verbose"), EXAMPLE_VERBOSE);
    let summary = vpp.ctl("show kp vip 2001:db8::/32");
    assert_eq!(summary, "[2] 2001:db8::10/128 tcp+udp port 443 target_port 8443 nat66 new_len 4099 pods 2\n");
    let show = vpp.ctl("show kp");
    assert!(
        show.starts_with(
            "kp: 3 VIPs, 6 pods, 0 draining\n  flow table: 65536 buckets per thread, timeout 40 s, embryonic timeout 5 s\n"
        ),
        "{show}"
    );
    assert!(show.contains("thread 0: 65536 buckets, 0 of 196608 entries in use"), "{show}");
}

/// Hundreds of malformed lines: one clear error each, VPP keeps running,
/// and the configuration is exactly what it was.
#[test]
fn malformed_lines_change_nothing() {
    let Some(mut vpp) = start("malformed_lines_change_nothing", Options::default()) else { return };
    for line in example_lines() {
        vpp.ctl(&line);
    }
    let before = vpp.ctl("show kp vip verbose");
    let show_before = vpp.ctl("show kp");
    let mut bad: Vec<String> = Vec::new();
    let prefixes =
        ["", "192.0.2.10/33", "192.0.2.300/32", "2001:db8::10/129", "banana", "192.0.2.10/32", "::/0"];
    let tails = [
        "",
        "port",
        "port 0 target_port 1",
        "port 65536 target_port 1",
        "port 80 target_port 8080",
        "port 80 target_port 8080 nat66",
        "port 81 target_port 1 new_len 1000",
        "port 81 target_port 1 new_len 0",
        "port 81 target_port 1 new_len 99999999",
        "port 81 target_port 1 node_port 30080",
        "port 81 target_port 1 protocol sctp",
        "port 81 target_port 1 trailing garbage",
        "port 81 target_port 1 port 82",
        "port 99 del",
        "port 80 protocol udp target_port 9",
        "port 81 target_port 1 nat44 nat46",
        "port 81 target_port 1 new_len",
        "protocol",
        "port 81 target_port 70000",
        "port 81 del del",
    ];
    for p in prefixes {
        for t in tails {
            bad.push(format!("kp vip {p} {t}"));
        }
    }
    let pod_tails = [
        "",
        "203.0.113.9 weight",
        "203.0.113.9 weight x",
        "203.0.113.9 weight 1000001",
        "2001:db8:b::9",
        "port 99 203.0.113.9",
        "protocol tcp port 53 203.0.113.9",
        "203.0.113.77 del",
        "203.0.113.1 203.0.113.77 del",
        "203.0.113.9 flush",
        "weight 3 203.0.113.9",
        "203.0.113.9 203.0.113.9",
        "203.0.113.9 del 203.0.113.8",
        "203.0.113.1 weight 2 del",
        "203.0.113.999",
    ];
    for p in prefixes {
        for t in pod_tails {
            bad.push(format!("kp pod {p} {t}"));
        }
    }
    for t in [
        "",
        "buckets",
        "buckets 1000",
        "buckets 8",
        "buckets 1073741824",
        "timeout 0",
        "timeout 86401",
        "timeout -5",
        "buckets 1024 timeout 0",
        "foo 1",
    ] {
        bad.push(format!("kp conf {t}"));
    }
    for t in [
        "",
        "nat5 in pg0",
        "nat4",
        "nat4 in",
        "nat4 in nosuchif0",
        "nat4 out local0",
        "nat4 in local0 del",
        "nat6 in local0 del extra",
    ] {
        bad.push(format!("kp set interface {t}"));
    }
    bad.extend(
        ["show kp extra", "show kp vip verbose verbose", "show kp vip 192.0.2.0/99"].map(String::from),
    );
    assert!(bad.len() > 250, "{}", bad.len());
    eprintln!("{} malformed lines", bad.len());
    for line in &bad {
        let out = vpp.ctl(line);
        let first = out.lines().next().unwrap_or("");
        assert!(
            out.lines().count() == 1 && (first.starts_with("kp") || first.starts_with("show kp")),
            "{line:?} gave {out:?}"
        );
        assert!(!first.contains("unknown input") || first.contains('\''), "{line:?}: {first}");
    }
    assert!(vpp.is_running());
    assert_eq!(vpp.ctl("show kp vip verbose"), before);
    assert_eq!(vpp.ctl("show kp"), show_before);
}

#[test]
fn startup_conf_section_sets_the_flow_table() {
    let o = Options { extra: "kp { buckets 1024 timeout 30 }".into(), ..Default::default() };
    let Some(vpp) = start("startup_conf_section_sets_the_flow_table", o) else { return };
    let show = vpp.ctl("show kp");
    assert!(show.contains("flow table: 1024 buckets per thread, timeout 30 s"), "{show}");
    assert!(show.contains("thread 0: 1024 buckets, 0 of 3072 entries"), "{show}");
}

#[test]
fn malformed_startup_section_is_a_clear_error() {
    let Some(vpp) = installed_vpp("malformed_startup_section_is_a_clear_error") else { return };
    let o = Options { extra: "kp { buckets 1000 }".into(), ..Default::default() };
    let err = match Vpp::start(&vpp, o) {
        Ok(_) => panic!("VPP started with a malformed kp section"),
        Err(e) => e,
    };
    assert!(err.contains("buckets 1000 must be a power of two"), "{err}");
}

#[test]
fn workers_each_get_a_flow_table() {
    let o = Options { workers: 1, ..Default::default() };
    let Some(vpp) = start("workers_each_get_a_flow_table", o) else { return };
    vpp.ctl("kp conf buckets 4096");
    let show = vpp.ctl("show kp");
    assert!(show.contains("thread 0: 4096 buckets") && show.contains("thread 1: 4096 buckets"), "{show}");
}

/// VPP aborts when its stats segment runs out, and kp's counters grow in
/// it with every new pod index: a change that might not fit is refused
/// with a clear error, nothing changed, and VPP stays up. (A small
/// segment, so the cliff comes at tens of thousands of pods.)
#[test]
fn counters_never_overflow_the_stats_segment() {
    let o = Options { statseg: Some("4m"), ..Default::default() };
    let Some(mut vpp) = start("counters_never_overflow_the_stats_segment", o) else { return };
    let file = vpp.dir.join("many-pods.cli");
    let mut cli = String::new();
    // IPv6 pods: the documentation ranges hold too few IPv4 addresses.
    for v in 0..500u32 {
        cli += &format!(
            "kp vip 2001:db8:ffff::{v:x}/128 port 80 target_port 8080 node_port {} new_len 65536\n",
            30000 + v
        );
        cli += &format!("kp pod 2001:db8:ffff::{v:x}/128");
        for p in 0..1000u32 {
            cli += &format!(" 2001:db8:{v:x}::{p:x}");
        }
        cli += "\n";
    }
    std::fs::write(&file, &cli).unwrap();
    // exec stops at the first line refused.
    let out = vpp.ctl(&format!("exec {}", file.display()));
    assert!(vpp.is_running(), "VPP died: {}", vpp.output());
    assert!(out.contains("CLI line error"), "{out}");
    let show = vpp.ctl("show kp");
    let pods: usize = show.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!((10_000..500_000).contains(&pods) && pods % 1000 == 0, "whole lines only: {show}");
    // Refused again, with its reason; nothing changed.
    let more: String = (0..1000).map(|p| format!(" 2001:db8:fffe::{p:x}")).collect();
    let out = vpp.ctl(&format!("kp pod 2001:db8:ffff::/128{more}"));
    assert!(out.contains("the stats segment cannot hold the counters of this change"), "{out}");
    assert_eq!(vpp.ctl("show kp"), show);
    assert!(vpp.is_running());
}
