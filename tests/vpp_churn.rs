//! Churn under load in real VPP 26.06 (skipped without VPP): one worker
//! carries about a million established UDP flows (pg, 251 client
//! addresses x 3,989 ports) to a Service of 16 pods while
//! `tests/python/churn.py` makes more than 1,000 configuration changes
//! through the CLI and the binary API: pods added, re-weighted and deleted,
//! original pods deleted without flush, other Services added and deleted,
//! flow-table resizes, timeouts. Every pass of the traffic is captured and
//! compared flow by flow with a capture taken before the churn.

mod common;
use common::{apidir, installed_vpp, root, venv_python, Options, Vpp};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Client addresses (198.51.100.0-250) times source ports (1024-5012): pg
/// counts both up with every packet, and the two counts are coprime, so
/// one pass of this many packets is this many distinct flows.
const FLOWS: usize = 251 * 3989;
const CHANGES: usize = 1000;

struct Lab {
    vpp: Vpp,
    py: PathBuf,
    rounds: usize,
}

impl Lab {
    fn ctl_ok(&self, cmd: &str) {
        let out = self.vpp.ctl(cmd);
        assert!(out.trim().is_empty(), "{cmd}: {out}");
    }

    /// One pass of every flow; captured on pg1 into the returned file.
    fn pass(&mut self) -> PathBuf {
        self.send(FLOWS, "UDP: 198.51.100.0 - 198.51.100.250 -> 192.0.2.10 UDP: 1024 - 5012 -> 80", true)
    }

    /// Sends `n` packets of a pg stream (`data`, at ip4-input); captured
    /// on pg1 into the returned file if `capture`.
    fn send(&mut self, n: usize, data: &str, capture: bool) -> PathBuf {
        self.rounds += 1;
        let (name, out) = (format!("r{}", self.rounds), self.vpp.dir.join(format!("r{}.pcap", self.rounds)));
        self.ctl_ok(&format!(
            "packet-generator new {{ name {name} limit {n} size 46-46 interface pg0 node ip4-input \
             data {{ {data} incrementing 18 }} }}"
        ));
        if capture {
            self.ctl_ok(&format!("packet-generator capture pg1 pcap {} count {n}", out.display()));
        }
        self.ctl_ok(&format!("packet-generator enable-stream {name}"));
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.vpp.stream_running(&name) {
            assert!(Instant::now() < deadline, "pass {name} did not finish");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Anything short of `count` is written when the capture stops.
        std::thread::sleep(Duration::from_millis(300));
        if capture {
            self.vpp.ctl("packet-generator capture pg1 disable");
        }
        self.vpp.ctl(&format!("packet-generator delete {name}"));
        out
    }

    /// churn.py `compare` of a pass against the reference pass.
    fn compare(&self, reference: &Path, pass: &Path, deleted: &Path) -> serde_json::Value {
        let o = Command::new(&self.py)
            .arg(root().join("tests/python/churn.py"))
            .args(["compare".as_ref(), reference.as_os_str(), pass.as_os_str(), deleted.as_os_str()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// The count of one `show errors` reason of kp4-nat4.
    fn errors(&self, reason: &str) -> u64 {
        self.vpp
            .ctl("show errors")
            .lines()
            .filter(|l| l.contains("kp4-nat4") && l.contains(reason))
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// `show kp`'s first line: VIPs, pods, draining.
    fn summary(&self) -> String {
        self.vpp.ctl("show kp").lines().next().unwrap_or_default().to_string()
    }

    /// The main heap's bytes in use (`show memory main-heap`).
    fn heap_used(&self) -> u64 {
        let text = self.vpp.ctl("show memory main-heap");
        let used = text.split("used: ").nth(1).and_then(|s| s.split([',', ' ', '\n']).next()).unwrap_or("");
        parse_size(used).unwrap_or_else(|| panic!("no used size in {text}"))
    }

    fn wait_for(&self, what: &str, secs: u64, ok: impl Fn(&Lab) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !ok(self) {
            assert!(Instant::now() < deadline, "{what}: {}\n{}", self.summary(), self.vpp.ctl("show kp"));
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// "1.23M" / "456.7k" / "12G" / "789" as bytes.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1e3),
        'm' | 'M' => (&s[..s.len() - 1], 1e6),
        'g' | 'G' => (&s[..s.len() - 1], 1e9),
        _ => (s, 1.0),
    };
    num.parse::<f64>().ok().map(|v| (v * mult) as u64)
}

impl Lab {
    /// VPP with one worker, pg0 facing clients, pg1 facing pods
    /// (203.0.113.1-254, static neighbours), `conf` applied.
    fn start(test: &str, conf: &[&str]) -> Option<Lab> {
        let bin = installed_vpp(test)?;
        let py = venv_python(test)?;
        let vpp = Vpp::start(&bin, Options { workers: 1, statseg: Some("64m"), ..Default::default() })
            .unwrap_or_else(|e| panic!("{e}"));
        let lab = Lab { vpp, py, rounds: 0 };
        for cmd in [
            "create packet-generator interface pg0",
            "create packet-generator interface pg1",
            "set interface ip address pg0 198.51.100.254/24",
            "set interface ip address pg1 203.0.113.254/24",
            "set interface state pg0 up",
            "set interface state pg1 up",
        ]
        .iter()
        .chain(conf)
        {
            lab.ctl_ok(cmd);
        }
        for i in 1..=254 {
            lab.ctl_ok(&format!("set ip neighbor pg1 203.0.113.{i} 02:00:00:00:01:{i:02x}"));
        }
        Some(lab)
    }

    /// Live entries of worker 1's flow table (`show kp`).
    fn live_flows(&self) -> u64 {
        let show = self.vpp.ctl("show kp");
        let line =
            show.lines().find(|l| l.trim_start().starts_with("thread 1:")).expect("thread 1 in show kp");
        line.split("buckets, ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().parse().unwrap()
    }

    /// kp4-nat4's clocks per packet since the last `clear runtime`.
    fn clocks_per_packet(&self) -> f64 {
        let rt = self.vpp.ctl("show runtime");
        let line =
            rt.lines().find(|l| l.trim_start().starts_with("kp4-nat4 ")).expect("kp4-nat4 in show runtime");
        line.split_whitespace().nth(5).unwrap().parse().unwrap()
    }
}

/// A flood of a million new flows (TCP SYNs from 1,001,239 sources and
/// ports, as fast as pg sends) into a table holding a quarter of a
/// million established flows: none of them is pushed out or moves, and
/// the flood's entries are gone once the embryonic timeout has passed.
#[test]
fn syn_flood_keeps_established_flows_and_leaves_soon() {
    let test = "syn_flood_keeps_established_flows_and_leaves_soon";
    // 2^18 buckets of 3: 786,432 entries, the established flows a third
    // of them; the flood more than fills the rest.
    let Some(mut lab) =
        Lab::start(test, &["kp conf buckets 262144", "kp vip 192.0.2.10/32 port 80 target_port 8080"])
    else {
        return;
    };
    lab.ctl_ok(&format!(
        "kp pod 192.0.2.10/32 {}",
        (1..=16).map(|i| format!("203.0.113.{i}")).collect::<Vec<_>>().join(" ")
    ));
    // 251 addresses x 1,009 ports (coprime): 253,259 UDP flows, two
    // packets each (established).
    const ESTABLISHED: usize = 251 * 1009;
    let udp = "UDP: 198.51.100.0 - 198.51.100.250 -> 192.0.2.10 UDP: 1024 - 2032 -> 80";
    let first = lab.send(ESTABLISHED, udp, true);
    let reference = lab.send(ESTABLISHED, udp, true);
    let none = lab.vpp.dir.join("none.json");
    std::fs::write(&none, "{\"deleted_originals\": []}").unwrap();
    let base = lab.compare(&first, &reference, &none);
    assert_eq!(
        (base["flows"].as_u64(), base["moved"].as_u64()),
        (Some(ESTABLISHED as u64), Some(0)),
        "{base}"
    );
    let before = lab.live_flows();
    assert_eq!(before, ESTABLISHED as u64, "every established flow has an entry");

    lab.ctl_ok("clear runtime");
    lab.send(FLOWS, "TCP: 198.51.100.0 - 198.51.100.250 -> 192.0.2.10 TCP: 10000 - 13988 -> 80 SYN", false);
    let clocks = lab.clocks_per_packet();
    let during = lab.live_flows();
    let untracked = lab.errors("without a flow entry");

    let after = lab.send(ESTABLISHED, udp, true);
    let r = lab.compare(&reference, &after, &none);
    eprintln!(
        "SYN flood of {FLOWS} new flows: kp4-nat4 {clocks} clocks/packet; entries {before} before, {during} \
         right after ({untracked} flood packets untracked, their buckets full); established after: {r}"
    );
    assert_eq!((r["flows"].as_u64(), r["moved"].as_u64()), (Some(ESTABLISHED as u64), Some(0)), "{r}");
    assert!(during > before, "the flood took the free entries");
    // Embryonic entries live 5 s: then only the established flows are left.
    lab.wait_for("flood entries expired", 30, |l| l.live_flows() == ESTABLISHED as u64);
    assert!(lab.vpp.is_running());
}

#[test]
fn churn_under_a_million_flows_moves_no_flow() {
    // Room for every flow (2^21 buckets of 3), and nothing expires during
    // the test.
    let conf = [
        "kp conf buckets 2097152 timeout 600 embryonic-timeout 600",
        "kp vip 192.0.2.10/32 protocol udp port 80 target_port 8080",
    ];
    let Some(mut lab) = Lab::start("churn_under_a_million_flows_moves_no_flow", &conf) else { return };
    let originals: Vec<String> = (1..=16).map(|i| format!("203.0.113.{i}")).collect();
    lab.ctl_ok(&format!("kp pod 192.0.2.10/32 {}", originals.join(" ")));
    let (rss_empty, heap_empty) = (lab.vpp.rss_kb(), lab.heap_used());

    // Two passes: the first creates the flows, the second (the reference)
    // finds them all established.
    let first = lab.pass();
    let untracked_before = lab.errors("without a flow entry");
    let reference = lab.pass();
    let untracked = lab.errors("without a flow entry") - untracked_before;
    let none = lab.vpp.dir.join("none.json");
    std::fs::write(&none, "{\"deleted_originals\": []}").unwrap();
    let base = lab.compare(&first, &reference, &none);
    eprintln!("reference pass: {base}; untracked flows (bucket full): {untracked}");
    assert_eq!(base["flows"], FLOWS, "every flow came through: {base}");
    assert_eq!(base["moved"], 0, "{base}");
    assert_eq!(base["pods"], 16, "{base}");
    std::fs::remove_file(&first).unwrap();
    let (rss_loaded, heap_loaded) = (lab.vpp.rss_kb(), lab.heap_used());
    let summary_loaded = lab.summary();

    // The churn, with traffic passing meanwhile; each pass compared.
    let done = lab.vpp.dir.join("churn.json");
    let api = apidir(&lab.vpp.dir);
    let mut churn = Command::new(&lab.py)
        .arg(root().join("tests/python/churn.py"))
        .arg("changes")
        .arg(&lab.vpp.cli)
        .arg(common::vpp_prefix().join("bin/vppctl"))
        .arg(&lab.vpp.api)
        .arg(&api)
        .arg(CHANGES.to_string())
        .arg("7")
        .arg(&done)
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut passes = Vec::new();
    let status = loop {
        let pass = lab.pass();
        let r = lab.compare(&reference, &pass, &none);
        std::fs::remove_file(&pass).unwrap();
        eprintln!("pass during churn at {:?}: {r}", started.elapsed());
        passes.push(r);
        assert!(lab.vpp.is_running(), "VPP died:\n{}", lab.vpp.output());
        if let Some(status) = churn.try_wait().unwrap() {
            break status;
        }
    };
    assert!(status.success(), "churn.py failed\nVPP: {}", lab.vpp.output());
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&done).unwrap()).unwrap();
    eprintln!("churn: {report} in {:?}", started.elapsed());
    assert!(report["changes"].as_u64().unwrap() >= CHANGES as u64, "{report}");
    assert!(passes.len() >= 2, "traffic passed only {} times during the churn", passes.len());

    // After it: every flow still there, on its pod; those of the deleted
    // originals too.
    let after = lab.pass();
    let r = lab.compare(&reference, &after, &done);
    eprintln!("pass after churn: {r}");
    passes.push(r.clone());
    std::fs::remove_file(&after).unwrap();
    for p in &passes {
        assert_eq!(p["flows"], FLOWS, "{p}");
        // Only flows kp holds no entry for (full buckets, counted) may
        // follow Maglev to another pod.
        assert!(p["moved"].as_u64().unwrap() <= untracked, "flows moved: {p}; untracked: {untracked}");
    }
    let deleted = report["deleted_originals"].as_array().unwrap().len();
    assert!(deleted > 0 && r["flows_of_deleted_pods_kept"].as_u64().unwrap() > 0, "{report} {r}");

    // Pods deleted during the churn are freed once no flow holds them; the
    // deleted originals still carry flows and stay, draining.
    lab.wait_for("churn pods freed", 60, |l| {
        l.summary() == format!("kp: 1 VIPs, {} pods, {deleted} draining", 16 - deleted)
    });
    // The table of the last resize is drained (by traffic and upkeep) and
    // freed.
    lab.wait_for("resize drained", 120, |l| !l.vpp.ctl("show kp").contains("resizing"));
    // The replaced tables go once every thread has let go of the snapshots
    // that still named them (idle threads do at the next upkeep run).
    let rss_drained = lab.vpp.rss_kb();
    let settled = Instant::now() + Duration::from_secs(30);
    while lab.vpp.rss_kb() > rss_loaded + rss_loaded / 10 && Instant::now() < settled {
        std::thread::sleep(Duration::from_millis(500));
    }
    let (rss_after, heap_after) = (lab.vpp.rss_kb(), lab.heap_used());
    eprintln!(
        "RSS when the last resize had drained: {rss_drained} kB; {:?} later: {rss_after} kB",
        Instant::now() + Duration::from_secs(30) - settled
    );
    eprintln!(
        "memory: RSS {rss_empty} kB empty, {rss_loaded} kB with 1M flows, {rss_after} kB after the churn; \
         main heap {heap_empty} -> {heap_loaded} -> {heap_after} bytes; {summary_loaded} -> {}",
        lab.summary()
    );
    assert!(heap_after <= heap_loaded + heap_loaded / 20, "main heap grew: {heap_loaded} -> {heap_after}");
    assert!(rss_after <= rss_loaded + rss_loaded / 10, "RSS grew: {rss_loaded} -> {rss_after} kB");

    // The Service goes: every pod ends with its flows and is freed.
    lab.ctl_ok("kp vip 192.0.2.10/32 protocol udp port 80 del");
    lab.wait_for("all pods freed", 120, |l| l.summary() == "kp: 0 VIPs, 0 pods, 0 draining");
    eprintln!(
        "after the Service's deletion: {} RSS {} kB main heap {}",
        lab.summary(),
        lab.vpp.rss_kb(),
        lab.heap_used()
    );
    assert!(lab.vpp.is_running());
}
