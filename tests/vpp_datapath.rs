//! kp's data path in real VPP 26.06 with packet-generator interfaces:
//! packets made and decoded with scapy (skipped without VPP).
//!
//! pg0 faces clients (198.51.100.0/24, 2001:db8:c::/64), pg1 faces pods
//! (203.0.113.0/24, 2001:db8:b::/64, static neighbours).

mod common;
use common::{installed_vpp, Options, Vpp};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> Option<PathBuf> {
    let p = root().join("target/venv/bin/python");
    if p.exists() {
        Some(p)
    } else {
        eprintln!("SKIPPED: no target/venv (scripts/setup-deps installs scapy when VPP is installed)");
        None
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Pkt {
    family: u8,
    proto: String,
    src: String,
    dst: String,
    sport: u16,
    dport: u16,
}

impl Pkt {
    /// pg_tool's list form of this packet.
    fn spec(&self) -> String {
        let p = self;
        format!("[{}, \"{}\", \"{}\", \"{}\", {}, {}]", p.family, p.proto, p.src, p.dst, p.sport, p.dport)
    }

    fn new(proto: &str, src: &str, sport: u16, dst: &str, dport: u16) -> Pkt {
        let family = if src.contains(':') { 6 } else { 4 };
        Pkt { family, proto: proto.into(), src: src.into(), dst: dst.into(), sport, dport }
    }
}

struct Lab {
    vpp: Vpp,
    py: PathBuf,
    /// MAC addresses of pg0 and pg1.
    macs: [String; 2],
    n: usize,
}

impl Lab {
    /// `vpp_get_stats dump` of the given stats-segment entries.
    fn stats(&self, names: &[&str]) -> String {
        let out = Command::new(common::vpp_prefix().join("bin/vpp_get_stats"))
            .arg("socket-name")
            .arg(self.vpp.dir.join("stats.sock"))
            .arg("dump")
            .args(names)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn start(test: &str, workers: usize) -> Option<Lab> {
        let bin = installed_vpp(test)?;
        let py = python()?;
        let vpp =
            Vpp::start(&bin, Options { workers, ..Default::default() }).unwrap_or_else(|e| panic!("{e}"));
        for cmd in [
            "create packet-generator interface pg0",
            "create packet-generator interface pg1",
            "set interface ip address pg0 198.51.100.1/24",
            "set interface ip address pg0 2001:db8:c::1/64",
            "set interface ip address pg1 203.0.113.254/24",
            "set interface ip address pg1 2001:db8:b::ff/64",
            "set interface state pg0 up",
            "set interface state pg1 up",
            // pg flows here are mostly one packet each, seconds apart on a
            // busy machine: keep them as long as established ones, so the
            // tests of affinity and draining see flows, not embryos (the
            // embryonic timeout has its own tests).
            "kp conf embryonic-timeout 40",
        ] {
            let out = vpp.ctl(cmd);
            assert!(out.trim().is_empty(), "{cmd}: {out}");
        }
        for i in 1..=9 {
            vpp.ctl(&format!("set ip neighbor pg1 203.0.113.{i} 02:00:00:00:01:0{i}"));
            vpp.ctl(&format!("set ip neighbor pg1 2001:db8:b::{i} 02:00:00:00:01:0{i}"));
        }
        vpp.ctl("set ip neighbor pg0 198.51.100.2 02:00:00:00:00:02");
        vpp.ctl("set ip neighbor pg0 198.51.100.3 02:00:00:00:00:03");
        vpp.ctl("set ip neighbor pg0 2001:db8:c::2 02:00:00:00:00:02");
        let mac = |i: &str| {
            let hw = vpp.ctl(&format!("show hardware-interfaces {i}"));
            hw.lines()
                .find_map(|l| l.trim().strip_prefix("Ethernet address "))
                .expect("pg MAC")
                .trim()
                .to_string()
        };
        let macs = [mac("pg0"), mac("pg1")];
        Some(Lab { vpp, py, macs, n: 0 })
    }

    fn ctl_ok(&self, cmd: &str) {
        let out = self.vpp.ctl(cmd);
        assert!(out.trim().is_empty(), "{cmd}: {out}");
    }

    /// Sends packets in on pg0; returns what left on pg1, decoded.
    fn send(&mut self, pkts: &[Pkt]) -> Vec<(Pkt, bool)> {
        self.send_on(0, 1, pkts)
    }

    /// Sends packets in on pg`inp`; returns what left on pg`out`, decoded.
    fn send_on(&mut self, inp: usize, outp: usize, pkts: &[Pkt]) -> Vec<(Pkt, bool)> {
        let list: Vec<String> = pkts.iter().map(Pkt::spec).collect();
        self.send_json(inp, outp, &list).into_iter().map(|v| decoded(&v)).collect()
    }

    /// Sends pg_tool packet specs (JSON list entries, or JSON strings
    /// holding scapy expressions) in on pg`inp`; returns pg_tool's decoding
    /// of what left on pg`outp`.
    fn send_json(&mut self, inp: usize, outp: usize, list: &[String]) -> Vec<serde_json::Value> {
        self.send_decoded(inp, outp, list, list.len(), "decode")
    }

    /// [`send_json`](Self::send_json) for specs that make `count` packets,
    /// decoded by pg_tool's `mode` (`decode`, or `reassemble`).
    fn send_decoded(
        &mut self,
        inp: usize,
        outp: usize,
        list: &[String],
        count: usize,
        mode: &str,
    ) -> Vec<serde_json::Value> {
        self.n += 1;
        let dir = &self.vpp.dir;
        let spec = dir.join(format!("spec{}.json", self.n));
        std::fs::write(
            &spec,
            format!("{{\"dst_mac\": \"{}\", \"packets\": [{}]}}", self.macs[inp], list.join(",")),
        )
        .unwrap();
        let inp_file = dir.join(format!("in{}.pcap", self.n));
        let st = Command::new(&self.py)
            .arg(root().join("tests/python/pg_tool.py"))
            .arg("make")
            .arg(&inp_file)
            .arg(&spec)
            .status()
            .unwrap();
        assert!(st.success());
        self.run_pcap(inp, outp, &inp_file, count, mode)
    }

    /// Sends `good` in on pg`inp` with `bad` hostile packets mixed in
    /// (pg_tool's `hostile`); returns what left on pg`outp` (waiting for
    /// as many packets as were good), decoded.
    fn send_hostile(
        &mut self,
        inp: usize,
        outp: usize,
        good: &[Pkt],
        bad: usize,
        seed: u64,
    ) -> Vec<(Pkt, bool)> {
        self.n += 1;
        let dir = &self.vpp.dir;
        let spec = dir.join(format!("spec{}.json", self.n));
        let list: Vec<String> = good.iter().map(Pkt::spec).collect();
        std::fs::write(
            &spec,
            format!(
                "{{\"dst_mac\": \"{}\", \"good\": [{}], \"bad\": {bad}, \"seed\": {seed}}}",
                self.macs[inp],
                list.join(",")
            ),
        )
        .unwrap();
        let inp_file = dir.join(format!("in{}.pcap", self.n));
        let st = Command::new(&self.py)
            .arg(root().join("tests/python/pg_tool.py"))
            .arg("hostile")
            .arg(&inp_file)
            .arg(&spec)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        // Hostile packets may leave too: capture until the stream is done.
        let all = good.len() + bad + 1;
        self.run_pcap(inp, outp, &inp_file, all, "decode")
            .into_iter()
            .filter(|v| v.get("proto").is_some())
            .map(|v| decoded(&v))
            .collect()
    }

    /// Plays `inp_file` in on pg`inp`, captures `count` packets on
    /// pg`outp`, decoded by pg_tool's `mode`.
    fn run_pcap(
        &mut self,
        inp: usize,
        outp: usize,
        inp_file: &Path,
        count: usize,
        mode: &str,
    ) -> Vec<serde_json::Value> {
        let out = self.vpp.dir.join(format!("out{}.pcap", self.n));
        let name = format!("s{}", self.n);
        self.ctl_ok(&format!("packet-generator new pcap {} source pg{inp} name {name}", inp_file.display()));
        self.ctl_ok(&format!("packet-generator capture pg{outp} pcap {} count {}", out.display(), count));
        self.ctl_ok(&format!("packet-generator enable-stream {name}"));
        // Wait for the stream to finish, then for what it sent to leave
        // (kp may send some packets a frame later: held fragments), and
        // close the capture (pg writes it frame by frame: a file that
        // exists may still grow).
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.vpp.stream_running(&name) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(200));
        self.vpp.ctl(&format!("packet-generator capture pg{outp} disable"));
        self.vpp.ctl(&format!("packet-generator delete {name}"));
        if !out.exists() {
            return Vec::new();
        }
        let o = Command::new(&self.py)
            .arg(root().join("tests/python/pg_tool.py"))
            .arg(mode)
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

/// A TCP/UDP packet as pg_tool decoded it, and whether its checksums
/// verify.
fn decoded(v: &serde_json::Value) -> (Pkt, bool) {
    let p = Pkt {
        family: v["family"].as_u64().unwrap() as u8,
        proto: v["proto"].as_str().unwrap().into(),
        src: v["src"].as_str().unwrap().into(),
        dst: v["dst"].as_str().unwrap().into(),
        sport: v["sport"].as_u64().unwrap() as u16,
        dport: v["dport"].as_u64().unwrap() as u16,
    };
    (p, v["l4_ok"].as_bool().unwrap() && v["ip_ok"].as_bool().unwrap())
}

fn assert_translated(sent: &[Pkt], got: &[(Pkt, bool)], pods: &[&str], target_port: u16) -> Vec<String> {
    assert_eq!(got.len(), sent.len(), "every packet reaches a pod");
    let mut chosen = Vec::new();
    for (s, (g, csum_ok)) in sent.iter().zip(got) {
        assert!(csum_ok, "checksums verify: {g:?}");
        assert_eq!((&g.src, g.sport, &g.proto), (&s.src, s.sport, &s.proto), "source untouched");
        assert_eq!(g.dport, target_port);
        assert!(pods.contains(&g.dst.as_str()), "{} is not a pod", g.dst);
        chosen.push(g.dst.clone());
    }
    chosen
}

#[test]
fn datapath_nat44_nat66_prefixes_affinity_removal() {
    let Some(mut lab) = Lab::start("datapath_nat44_nat66_prefixes_affinity_removal", 0) else { return };
    lab.ctl_ok("kp vip 192.0.2.10/32 port 80 target_port 8080");
    lab.ctl_ok("kp pod 192.0.2.10/32 203.0.113.1 203.0.113.2 203.0.113.3");
    lab.ctl_ok("kp vip 2001:db8:d::10/128 port 443 target_port 8443");
    lab.ctl_ok("kp pod 2001:db8:d::10/128 2001:db8:b::1 2001:db8:b::2");

    // TCP and UDP, IPv4 and IPv6.
    let v4: Vec<Pkt> = (0..20)
        .map(|i| Pkt::new(if i % 2 == 0 { "tcp" } else { "udp" }, "198.51.100.2", 2000 + i, "192.0.2.10", 80))
        .collect();
    let got = lab.send(&v4);
    let first = assert_translated(&v4, &got, &["203.0.113.1", "203.0.113.2", "203.0.113.3"], 8080);
    let v6: Vec<Pkt> = (0..20)
        .map(|i| {
            Pkt::new(if i % 2 == 0 { "tcp" } else { "udp" }, "2001:db8:c::2", 3000 + i, "2001:db8:d::10", 443)
        })
        .collect();
    let got = lab.send(&v6);
    assert_translated(&v6, &got, &["2001:db8:b::1", "2001:db8:b::2"], 8443);

    // The same flows again reach the same pods (and are counted as hits).
    let again = lab.send(&v4);
    assert_eq!(assert_translated(&v4, &again, &["203.0.113.1", "203.0.113.2", "203.0.113.3"], 8080), first);
    let show = lab.vpp.ctl("show kp vip verbose");
    assert!(show.contains("counters: existing flow packets 20, first packets 20"), "{show}");
    // The same counters in the stats segment.
    let stats = lab.stats(&["/kp/vip/first-packets", "/kp/vip/existing-flow-packets"]);
    assert!(stats.contains("[0 @ 0]: 20 packets /kp/vip/first-packets"), "{stats}");
    assert!(stats.contains("[0 @ 0]: 20 packets /kp/vip/existing-flow-packets"), "{stats}");

    // Unserved port: dropped and counted, nothing leaves.
    let bad = vec![Pkt::new("tcp", "198.51.100.2", 1, "192.0.2.10", 81)];
    assert!(lab.send(&bad).is_empty());
    assert!(lab.vpp.ctl("show errors").contains("no VIP for this protocol and port"));

    // Pod removal: established flows stay, new ones avoid it.
    let victim = first[0].clone();
    lab.ctl_ok(&format!("kp pod 192.0.2.10/32 {victim} del"));
    let again = lab.send(&v4);
    assert_eq!(assert_translated(&v4, &again, &["203.0.113.1", "203.0.113.2", "203.0.113.3"], 8080), first);
    let fresh: Vec<Pkt> =
        (0..50).map(|i| Pkt::new("tcp", "198.51.100.3", 5000 + i, "192.0.2.10", 80)).collect();
    let got = lab.send(&fresh);
    assert!(assert_translated(&fresh, &got, &["203.0.113.1", "203.0.113.2", "203.0.113.3"], 8080)
        .iter()
        .all(|p| *p != victim));
    assert!(lab.vpp.ctl("show kp vip verbose").contains("draining"));
    // ... and with flush its flows move at once.
    lab.ctl_ok(&format!("kp pod 192.0.2.10/32 {victim} del flush"));
    let moved = lab.send(&v4);
    assert!(assert_translated(&v4, &moved, &["203.0.113.1", "203.0.113.2", "203.0.113.3"], 8080)
        .iter()
        .all(|p| *p != victim));

    // Traces show a kp line per packet.
    lab.vpp.ctl("clear trace");
    lab.vpp.ctl("trace add pg-input 5");
    lab.send(&v4[..5]);
    let trace = lab.vpp.ctl("show trace");
    assert_eq!(trace.matches("kp: vip 0 192.0.2.10:80 -> pod").count(), 5, "{trace}");
    assert!(trace.contains("(existing flow), translated"), "{trace}");
    // The pod's route is tracked: translated packets go on to its
    // load-balance object, with no second FIB lookup.
    let after_kp = nodes_after(&trace, "kp4-nat4");
    assert_eq!(after_kp.len(), 5, "{trace}");
    assert!(after_kp.iter().all(|n| n == "ip4-load-balance"), "{after_kp:?}\n{trace}");
}

/// The graph node each packet of a `show trace` visited right after `node`.
fn nodes_after(trace: &str, node: &str) -> Vec<String> {
    // Node headers look like "00:00:01:234567: ip4-lookup".
    let headers: Vec<&str> = trace
        .lines()
        .filter_map(|l| {
            let (time, name) = l.trim().rsplit_once(": ")?;
            (time.len() == 15 && time.chars().all(|c| c.is_ascii_digit() || c == ':') && !name.contains(' '))
                .then_some(name)
        })
        .collect();
    headers.windows(2).filter(|w| w[0] == node).map(|w| w[1].to_string()).collect()
}

/// A deleted pod whose flows went idle is freed by kp's periodic upkeep,
/// with no traffic and no command to prompt it (`/kp/draining-pods` in the
/// stats segment tells; the harness sets `statseg { update-interval 1 }`).
#[test]
fn datapath_drained_pod_is_freed_without_commands() {
    let Some(mut lab) = Lab::start("datapath_drained_pod_is_freed_without_commands", 0) else { return };
    // (6 s: long enough that a slow machine still sees the pod drain
    // before its flows expire.)
    lab.ctl_ok("kp conf timeout 6");
    lab.ctl_ok("kp vip 192.0.2.10/32 port 80 target_port 8080");
    lab.ctl_ok("kp pod 192.0.2.10/32 203.0.113.1 203.0.113.2");
    let flows: Vec<Pkt> =
        (0..10).map(|i| Pkt::new("udp", "198.51.100.2", 7000 + i, "192.0.2.10", 80)).collect();
    let got = lab.send(&flows);
    let victim = assert_translated(&flows, &got, &["203.0.113.1", "203.0.113.2"], 8080)[0].clone();
    lab.ctl_ok(&format!("kp pod 192.0.2.10/32 {victim} del"));
    let gauge = |lab: &Lab| lab.stats(&["/kp/draining-pods"]);
    // Its flows are alive for 6 s: the upkeep (every second) sees it drain.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(gauge(&lab).contains("1.00 /kp/draining-pods"), "{}", gauge(&lab));
    // Then they expire, and it is freed without any command.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !gauge(&lab).contains("0.00 /kp/draining-pods") {
        assert!(std::time::Instant::now() < deadline, "still draining: {}", gauge(&lab));
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let show = lab.vpp.ctl("show kp");
    assert!(show.contains("1 pods, 0 draining"), "{show}");
}

/// kp forwards along the pod's tracked route (no second lookup, see the
/// trace check above); when that route changes, packets follow at once.
#[test]
fn datapath_pod_route_change_is_followed() {
    let Some(mut lab) = Lab::start("datapath_pod_route_change_is_followed", 0) else { return };
    lab.ctl_ok("kp vip 192.0.2.20/32 port 80 target_port 8080");
    lab.ctl_ok("kp pod 192.0.2.20/32 203.0.113.1");
    let flows: Vec<Pkt> =
        (0..5).map(|i| Pkt::new("udp", "198.51.100.2", 4000 + i, "192.0.2.20", 80)).collect();
    let got = lab.send_on(0, 1, &flows);
    assert_translated(&flows, &got, &["203.0.113.1"], 8080);
    // A more specific route sends the pod's traffic out of pg0 instead.
    lab.ctl_ok("ip route add 203.0.113.1/32 via 198.51.100.3 pg0");
    let got = lab.send_on(0, 0, &flows);
    assert_translated(&flows, &got, &["203.0.113.1"], 8080);
    // And back when it goes.
    lab.ctl_ok("ip route del 203.0.113.1/32 via 198.51.100.3 pg0");
    let got = lab.send_on(0, 1, &flows);
    assert_translated(&flows, &got, &["203.0.113.1"], 8080);
    // Tracking shows as the recursive-resolution source on the pod's /32.
    assert!(lab.vpp.ctl("show ip fib 203.0.113.1/32").contains("recursive-resolution"));
    // Deleting the VIP frees the pod (once upkeep has swept its flows) and
    // with it the tracking.
    lab.ctl_ok("kp vip 192.0.2.20/32 port 80 del");
    let deadline = Instant::now() + Duration::from_secs(15);
    while lab.vpp.ctl("show ip fib 203.0.113.1/32").contains("recursive-resolution") {
        assert!(Instant::now() < deadline, "{}", lab.vpp.ctl("show ip fib 203.0.113.1/32"));
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(lab.vpp.ctl("show kp").contains("0 pods, 0 draining"));
}

#[test]
fn datapath_prefix_vips_and_spread() {
    let Some(mut lab) = Lab::start("datapath_prefix_vips_and_spread", 0) else { return };
    lab.ctl_ok("kp conf buckets 16384");
    lab.ctl_ok("kp vip 192.0.2.128/25 protocol udp port 53 target_port 5353");
    lab.ctl_ok("kp pod 192.0.2.128/25 203.0.113.4 weight 1 203.0.113.5 weight 3");
    lab.ctl_ok("kp vip 2001:db8:d::100/120 protocol tcp port 80 target_port 8080");
    lab.ctl_ok("kp pod 2001:db8:d::100/120 2001:db8:b::4");
    // Every address of the prefixes is served.
    let v4: Vec<Pkt> = [128u32, 129, 205, 254, 255]
        .iter()
        .map(|h| Pkt::new("udp", "198.51.100.2", 999, &format!("192.0.2.{h}"), 53))
        .collect();
    let got = lab.send(&v4);
    assert_translated(&v4, &got, &["203.0.113.4", "203.0.113.5"], 5353);
    let v6: Vec<Pkt> = ["2001:db8:d::100", "2001:db8:d::1ff", "2001:db8:d::142"]
        .iter()
        .map(|d| Pkt::new("tcp", "2001:db8:c::2", 999, d, 80))
        .collect();
    let got = lab.send(&v6);
    assert_translated(&v6, &got, &["2001:db8:b::4"], 8080);

    // 10,000 flows spread in proportion to the table share (1:3).
    let flows: Vec<Pkt> = (0..10_000u32)
        .map(|i| {
            Pkt::new(
                "udp",
                &format!("198.51.100.{}", 2 + i % 250),
                1024 + (i / 250) as u16,
                "192.0.2.137",
                53,
            )
        })
        .collect();
    let got = lab.send(&flows);
    let chosen = assert_translated(&flows, &got, &["203.0.113.4", "203.0.113.5"], 5353);
    let mut count: HashMap<String, usize> = HashMap::new();
    chosen.into_iter().for_each(|p| *count.entry(p).or_default() += 1);
    let share = count["203.0.113.5"] as f64 / 10_000.0;
    assert!((share - 0.75).abs() < 0.03, "weight-3 pod got {share}");
}

#[test]
fn datapath_shared_pod_and_worker_thread() {
    let Some(mut lab) = Lab::start("datapath_shared_pod_and_worker_thread", 1) else { return };
    assert!(lab.vpp.ctl("show threads").contains("vpp_wk_0"));
    // Two Services selecting the same pods on the same target port.
    lab.ctl_ok("kp vip 192.0.2.10/32 port 80 target_port 8080");
    lab.ctl_ok("kp vip 192.0.2.20/32 port 80 target_port 8080");
    lab.ctl_ok("kp pod 192.0.2.10/32 203.0.113.1 203.0.113.2");
    lab.ctl_ok("kp pod 192.0.2.20/32 203.0.113.1 203.0.113.2");
    let pkts: Vec<Pkt> = (0..40)
        .map(|i| {
            Pkt::new(
                "tcp",
                "198.51.100.2",
                4000 + i,
                if i % 2 == 0 { "192.0.2.10" } else { "192.0.2.20" },
                80,
            )
        })
        .collect();
    let got = lab.send(&pkts);
    let first = assert_translated(&pkts, &got, &["203.0.113.1", "203.0.113.2"], 8080);
    let again = lab.send(&pkts);
    assert_eq!(assert_translated(&pkts, &again, &["203.0.113.1", "203.0.113.2"], 8080), first);
    let show = lab.vpp.ctl("show kp");
    assert!(
        show.contains("thread 1:") && !show.contains("thread 1: 65536 buckets, 0 of"),
        "flows on the worker: {show}"
    );
}

/// The pods' replies to translated packets.
fn replies(translated: &[(Pkt, bool)]) -> Vec<Pkt> {
    translated.iter().map(|(p, _)| Pkt::new(&p.proto, &p.dst, p.dport, &p.src, p.sport)).collect()
}

#[test]
fn datapath_replies_translated_back() {
    let Some(mut lab) = Lab::start("datapath_replies_translated_back", 1) else { return };
    lab.ctl_ok("kp set interface nat4 in pg1");
    lab.ctl_ok("kp set interface nat6 in pg1");
    // Two Services share the pods on one target port; a prefix VIP; IPv6.
    lab.ctl_ok("kp vip 192.0.2.10/32 port 80 target_port 8080");
    lab.ctl_ok("kp vip 192.0.2.20/32 port 81 target_port 8080");
    lab.ctl_ok("kp vip 192.0.2.128/25 protocol udp port 53 target_port 5353");
    lab.ctl_ok("kp vip 2001:db8:d::10/128 port 443 target_port 8443");
    lab.ctl_ok("kp pod 192.0.2.10/32 203.0.113.1 203.0.113.2");
    lab.ctl_ok("kp pod 192.0.2.20/32 203.0.113.1 203.0.113.2");
    lab.ctl_ok("kp pod 192.0.2.128/25 203.0.113.3");
    lab.ctl_ok("kp pod 2001:db8:d::10/128 2001:db8:b::1");
    let mut fwd = Vec::new();
    for i in 0..10u16 {
        fwd.push(Pkt::new("tcp", "198.51.100.2", 6000 + i, "192.0.2.10", 80));
        fwd.push(Pkt::new("udp", "198.51.100.2", 6100 + i, "192.0.2.20", 81));
        fwd.push(Pkt::new("udp", "198.51.100.3", 6200 + i, &format!("192.0.2.{}", 138 + i), 53));
        fwd.push(Pkt::new("tcp", "2001:db8:c::2", 6300 + i, "2001:db8:d::10", 443));
    }
    // v4 and v6 leave pg1 in separate captures; send each family alone.
    for family in [4u8, 6] {
        let sent: Vec<Pkt> = fwd.iter().filter(|p| p.family == family).cloned().collect();
        let translated = lab.send(&sent);
        assert_eq!(translated.len(), sent.len());
        let back = lab.send_on(1, 0, &replies(&translated));
        assert_eq!(back.len(), sent.len(), "every reply comes back to the client");
        for (s, (r, csum_ok)) in sent.iter().zip(&back) {
            assert!(csum_ok, "{r:?}");
            assert_eq!((&r.src, r.sport), (&s.dst, s.dport), "reply from what the client sent to");
            assert_eq!((&r.dst, r.dport), (&s.src, s.sport));
        }
    }
    let errors = lab.vpp.ctl("show errors");
    assert!(errors.contains("kp-nat4-in2out") && errors.contains("replies translated back"), "{errors}");
    // Traffic from pods that is not a reply passes untouched.
    let other = vec![Pkt::new("tcp", "203.0.113.1", 9999, "198.51.100.2", 7777)];
    let got = lab.send_on(1, 0, &other);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, other[0]);
    // Disabling reply translation is an ordinary state change.
    lab.ctl_ok("kp set interface nat4 in pg1 del");
    assert!(lab.vpp.ctl("kp set interface nat4 in pg1 del").contains("not enabled"));
}

#[test]
fn datapath_nodeport() {
    let Some(mut lab) = Lab::start("datapath_nodeport", 0) else { return };
    lab.ctl_ok("kp set interface nat4 in pg1");
    lab.ctl_ok("kp set interface nat6 in pg1");
    lab.ctl_ok("kp vip 192.0.2.10/32 port 80 target_port 8080 node_port 30080");
    lab.ctl_ok("kp vip 2001:db8:d::10/128 protocol udp port 53 target_port 5353 node_port 30053");
    lab.ctl_ok("kp pod 192.0.2.10/32 203.0.113.1 203.0.113.2");
    lab.ctl_ok("kp pod 2001:db8:d::10/128 2001:db8:b::1");
    assert!(lab.vpp.ctl("show kp").contains("NodePort capture on"));
    // TCP and UDP to the node's own addresses on the NodePort reach pods...
    for sent in [
        vec![
            Pkt::new("tcp", "198.51.100.2", 7000, "198.51.100.1", 30080),
            Pkt::new("udp", "198.51.100.2", 7001, "198.51.100.1", 30080),
        ],
        vec![Pkt::new("udp", "2001:db8:c::2", 7002, "2001:db8:c::1", 30053)],
    ] {
        let got = lab.send(&sent);
        let pods: &[&str] =
            if sent[0].family == 4 { &["203.0.113.1", "203.0.113.2"] } else { &["2001:db8:b::1"] };
        assert_translated(&sent, &got, pods, if sent[0].family == 4 { 8080 } else { 5353 });
        // ...and their replies come back from the node address and NodePort.
        let back = lab.send_on(1, 0, &replies(&got));
        assert_eq!(back.len(), sent.len());
        for (s, (r, ok)) in sent.iter().zip(&back) {
            assert!(ok);
            assert_eq!((&r.src, r.sport, &r.dst, r.dport), (&s.dst, s.dport, &s.src, s.sport));
        }
    }
    // Other traffic to the node's addresses is unaffected: UDP to another
    // port goes to VPP's own UDP stack (no listener), not to a pod.
    let before = lab.vpp.ctl("show errors");
    let got = lab.send(&[Pkt::new("udp", "198.51.100.2", 7003, "198.51.100.1", 5000)]);
    assert!(got.is_empty(), "{got:?}");
    let after = lab.vpp.ctl("show errors");
    assert_ne!(before, after);
    assert!(after.contains("No listener for dst port"), "{after}");
    // Without NodePort VIPs the capture goes away.
    lab.ctl_ok("kp vip 192.0.2.10/32 port 80 del");
    lab.ctl_ok("kp vip 2001:db8:d::10/128 protocol udp port 53 del");
    assert!(!lab.vpp.ctl("show kp").contains("NodePort capture on"));
}

/// What real stacks rarely send, made and checked by scapy: TCP to an IPv6
/// VIP behind hop-by-hop, routing and destination-options headers; an
/// ICMP "fragmentation needed" to the VIP about a reply, which must reach
/// the flow's pod about what the pod sent, every checksum verified by
/// scapy; and the same for IPv6's "packet too big".
#[test]
fn datapath_extension_headers_and_icmp_errors() {
    let Some(mut lab) = Lab::start("datapath_extension_headers_and_icmp_errors", 0) else { return };
    lab.ctl_ok("kp vip 192.0.2.10/32 port 80 target_port 8080");
    lab.ctl_ok("kp pod 192.0.2.10/32 203.0.113.1");
    lab.ctl_ok("kp vip 2001:db8::10/128 port 80 target_port 8080");
    lab.ctl_ok("kp pod 2001:db8::10/128 2001:db8:b::1");
    lab.ctl_ok("kp set interface nat4 in pg1");
    lab.ctl_ok("kp set interface nat6 in pg1");
    let q = |s: &str| serde_json::to_string(s).unwrap();
    // Extension headers before TCP.
    let got = lab.send_json(0, 1, &[q("IPv6(src='2001:db8:c::2', dst='2001:db8::10')/IPv6ExtHdrHopByHop()/IPv6ExtHdrRouting(addresses=[], segleft=0)/IPv6ExtHdrDestOpt()/TCP(sport=4000, dport=80, flags='S')/Raw(b'x')")]);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0]["dst"].as_str(), got[0]["dport"].as_u64()), (Some("2001:db8:b::1"), Some(8080)));
    assert_eq!((got[0]["l4_ok"].as_bool(), got[0]["ip_ok"].as_bool()), (Some(true), Some(true)));
    // A flow, and its reply (pod -> client, translated back on pg1's way).
    for (fwd, reply, err, inner_src) in [
        (
            "IP(src='198.51.100.2', dst='192.0.2.10')/TCP(sport=5000, dport=80, flags='S')",
            "IP(src='203.0.113.1', dst='198.51.100.2')/TCP(sport=8080, dport=5000, flags='SA')",
            "IP(src='198.51.100.3', dst='192.0.2.10')/ICMP(type=3, code=4, nexthopmtu=1400)/IP(src='192.0.2.10', dst='198.51.100.2', flags='DF')/TCP(sport=80, dport=5000, flags='A')",
            "203.0.113.1",
        ),
        (
            "IPv6(src='2001:db8:c::2', dst='2001:db8::10')/TCP(sport=5001, dport=80, flags='S')",
            "IPv6(src='2001:db8:b::1', dst='2001:db8:c::2')/TCP(sport=8080, dport=5001, flags='SA')",
            "IPv6(src='2001:db8:c::3', dst='2001:db8::10')/ICMPv6PacketTooBig(mtu=1400)/IPv6(src='2001:db8::10', dst='2001:db8:c::2')/TCP(sport=80, dport=5001, flags='A')",
            "2001:db8:b::1",
        ),
    ] {
        assert_eq!(lab.send_json(0, 1, &[q(fwd)]).len(), 1);
        let back = lab.send_json(1, 0, &[q(reply)]);
        assert_eq!(back.len(), 1, "{back:?}");
        let got = lab.send_json(0, 1, &[q(err)]);
        assert_eq!(got.len(), 1, "the error reaches the pod: {got:?}\n{}", lab.vpp.ctl("show errors"));
        let e = &got[0];
        assert_eq!(e["icmp"].as_bool(), Some(true), "{e}");
        assert_eq!(e["dst"].as_str(), Some(inner_src), "{e}");
        assert_eq!((e["inner_src"].as_str(), e["inner_sport"].as_u64()), (Some(inner_src), Some(8080)), "{e}");
        assert_eq!(e["ok"].as_bool(), Some(true), "scapy verifies every checksum: {e}");
    }
    assert!(lab.vpp.is_running());
}

/// VPP itself refuses a translated request: pg1 (the pods' link) is
/// narrower than the request, which may not be fragmented (IPv4 DF, and
/// IPv6). VPP's own "fragmentation needed" / "packet too big" goes back
/// to the client; kp's output feature makes its quote what the client
/// sent (to the VIP:port), every checksum verified by scapy. A TCP
/// request too big, and an expired TTL, too.
#[test]
fn datapath_vpp_own_icmp_errors_reach_the_client_translated() {
    let Some(mut lab) = Lab::start("datapath_vpp_own_icmp_errors_reach_the_client_translated", 0) else {
        return;
    };
    lab.ctl_ok("kp vip 192.0.2.10/32 protocol udp port 53 target_port 5353");
    lab.ctl_ok("kp pod 192.0.2.10/32 203.0.113.1");
    lab.ctl_ok("kp vip 192.0.2.10/32 port 80 target_port 8080");
    lab.ctl_ok("kp pod 192.0.2.10/32 port 80 203.0.113.1");
    lab.ctl_ok("kp vip 2001:db8::10/128 protocol udp port 53 target_port 5353");
    lab.ctl_ok("kp pod 2001:db8::10/128 2001:db8:b::1");
    lab.ctl_ok("set interface mtu packet 1300 pg1");
    let q = |s: &str| serde_json::to_string(s).unwrap();
    for (make, what, dport) in [
        ("IP(src='198.51.100.2', dst='192.0.2.10', flags='DF')/UDP(sport=6000, dport=53)/Raw(b'x'*1400)", "UDP, DF", 53),
        ("IP(src='198.51.100.2', dst='192.0.2.10', flags='DF')/TCP(sport=6001, dport=80, flags='A')/Raw(b'x'*1400)", "TCP, DF", 80),
        ("IPv6(src='2001:db8:c::2', dst='2001:db8::10')/UDP(sport=6002, dport=53)/Raw(b'x'*1400)", "IPv6 UDP", 53),
    ] {
        let got = lab.send_json(0, 0, &[q(make)]);
        assert_eq!(got.len(), 1, "{what}: the error comes back: {got:?}\n{}", lab.vpp.ctl("show errors"));
        let e = &got[0];
        assert_eq!(e["icmp"].as_bool(), Some(true), "{what}: {e}");
        let (vip, client) = if what.starts_with("IPv6") { ("2001:db8::10", "2001:db8:c::2") } else { ("192.0.2.10", "198.51.100.2") };
        assert_eq!(e["dst"].as_str(), Some(client), "{what}: {e}");
        assert_eq!((e["inner_dst"].as_str(), e["inner_dport"].as_u64()), (Some(vip), Some(dport)), "{what}: about what the client sent: {e}");
        assert_eq!(e["inner_src"].as_str(), Some(client), "{what}: {e}");
        assert_eq!(e["ok"].as_bool(), Some(true), "{what}: scapy verifies every checksum: {e}");
    }
    let errors = lab.vpp.ctl("show errors");
    let count = |node: &str| {
        let line = errors.lines().find(|l| l.contains(node) && l.contains("VPP's own ICMP errors"));
        line.and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
    };
    assert_eq!((count("kp4-icmp-out"), count("kp6-icmp-out")), (Some(2), Some(1)), "{errors}");
    // Time exceeded: a request that arrives with TTL 1.
    let got = lab.send_json(
        0,
        0,
        &[q("IP(src='198.51.100.2', dst='192.0.2.10', ttl=1)/UDP(sport=6003, dport=53)/Raw(b'x')")],
    );
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["inner_dst"].as_str(), Some("192.0.2.10"), "{:?}", got[0]);
    assert_eq!(got[0]["ok"].as_bool(), Some(true), "{:?}", got[0]);
    // Within the MTU the requests pass as ever.
    let got = lab.send_json(
        0,
        1,
        &[q("IP(src='198.51.100.2', dst='192.0.2.10', flags='DF')/UDP(sport=6004, dport=53)/Raw(b'x'*1200)")],
    );
    assert_eq!((got.len(), got.first().and_then(|g| g["dst"].as_str())), (1, Some("203.0.113.1")), "{got:?}");
    assert!(lab.vpp.is_running());
}

/// A VIP without pods in real VPP: a SYN gets a reset from the VIP:port
/// and a UDP datagram an ICMP port unreachable quoting it, both back out
/// of the client's interface, checked by scapy; `kp conf reject off`
/// turns that into counted drops.
#[test]
fn datapath_no_endpoints_reject() {
    let Some(mut lab) = Lab::start("datapath_no_endpoints_reject", 0) else { return };
    lab.ctl_ok("kp vip 192.0.2.10/32 port 80 target_port 8080");
    let q = |s: &str| serde_json::to_string(s).unwrap();
    let got = lab.send_json(
        0,
        0,
        &[q("IP(src='198.51.100.2', dst='192.0.2.10')/TCP(sport=5000, dport=80, flags='S', seq=7)")],
    );
    let rst: Vec<_> = got.iter().filter(|v| v["proto"].as_str() == Some("tcp")).collect();
    assert_eq!(rst.len(), 1, "{got:?}\n{}", lab.vpp.ctl("show errors"));
    assert_eq!((rst[0]["src"].as_str(), rst[0]["sport"].as_u64()), (Some("192.0.2.10"), Some(80)));
    assert_eq!((rst[0]["dst"].as_str(), rst[0]["dport"].as_u64()), (Some("198.51.100.2"), Some(5000)));
    assert_eq!((rst[0]["l4_ok"].as_bool(), rst[0]["ip_ok"].as_bool()), (Some(true), Some(true)));
    let got = lab.send_json(
        0,
        0,
        &[q("IP(src='198.51.100.2', dst='192.0.2.10')/UDP(sport=5001, dport=80)/Raw(b'query')")],
    );
    let icmp: Vec<_> = got.iter().filter(|v| v["icmp"].as_bool() == Some(true)).collect();
    assert_eq!(icmp.len(), 1, "{got:?}");
    assert_eq!(
        (icmp[0]["src"].as_str(), icmp[0]["dst"].as_str()),
        (Some("192.0.2.10"), Some("198.51.100.2"))
    );
    assert_eq!(
        (icmp[0]["inner_dst"].as_str(), icmp[0]["inner_dport"].as_u64()),
        (Some("192.0.2.10"), Some(80))
    );
    assert_eq!(icmp[0]["ok"].as_bool(), Some(true), "{:?}", icmp[0]);
    assert!(lab.vpp.ctl("show errors").contains("no pod: rejected (RST/ICMP sent)"));
    lab.ctl_ok("kp conf reject off");
    assert!(lab.vpp.ctl("show kp").contains("no endpoints: drop"));
    let got = lab.send_json(
        0,
        0,
        &[q("IP(src='198.51.100.2', dst='192.0.2.10')/TCP(sport=5002, dport=80, flags='S')")],
    );
    assert!(got.iter().all(|v| v["proto"].as_str() != Some("tcp")), "{got:?}");
    assert!(lab.vpp.ctl("show errors").contains("no pod takes new flows (dropped)"));
}

/// Fragmented UDP datagrams (IPv4 fragments, the IPv6 fragment header), as
/// scapy's own fragmenter makes them, in order and not: every fragment
/// reaches the pod with its address, and scapy's reassembly of what left
/// gives the translated datagram with a right checksum. Fragments that
/// come before their first are held until it comes (the last first, the
/// first in the middle, the first in a later frame), both ways; without
/// their first they are dropped once the fragment timeout has passed.
#[test]
fn datapath_fragments_reach_the_pod() {
    let Some(mut lab) = Lab::start("datapath_fragments_reach_the_pod", 0) else { return };
    lab.ctl_ok("kp vip 192.0.2.10/32 protocol udp port 53 target_port 5353");
    lab.ctl_ok("kp pod 192.0.2.10/32 203.0.113.1");
    lab.ctl_ok("kp vip 2001:db8::10/128 protocol udp port 53 target_port 5353");
    lab.ctl_ok("kp pod 2001:db8::10/128 2001:db8:b::1");
    lab.ctl_ok("kp set interface nat4 in pg1");
    lab.ctl_ok("kp set interface nat6 in pg1");
    let q = |s: &str| serde_json::to_string(s).unwrap();
    let v4 = |sport: u16, id: u16| {
        format!("fragment(IP(src='198.51.100.2', dst='192.0.2.10', id={id})/UDP(sport={sport}, dport=53)/Raw(bytes(range(256))*16), fragsize=1000)")
    };
    let v6 = |sport: u16, id: u16| {
        format!("fragment6(IPv6(src='2001:db8:c::2', dst='2001:db8::10')/IPv6ExtHdrFragment(id={id})/UDP(sport={sport}, dport=53)/Raw(bytes(range(256))*16), 1280)")
    };
    let orders = [("", "in order"), ("[::-1]", "last first"), ("[2:] + _f[:2]", "first in the middle")];
    for (k, (order, what)) in orders.iter().enumerate() {
        let k = k as u16;
        for (make, n, pod) in
            [(v4(5000 + k, 77 + k), 5, "203.0.113.1"), (v6(5000 + k, 78 + k), 4, "2001:db8:b::1")]
        {
            let expr = if order.contains("_f") {
                format!("(lambda _f: _f{order})({make})")
            } else {
                format!("({make}){order}")
            };
            let got = lab.send_decoded(0, 1, &[q(&expr)], n, "reassemble");
            assert_eq!(got.len(), 1, "{what}: one datagram: {got:?}\n{}", lab.vpp.ctl("show errors"));
            let d = &got[0];
            assert_eq!(d["fragments"].as_u64(), Some(n as u64), "{what}: {d}");
            assert_eq!(d["same_dst"].as_bool(), Some(true), "{what}: every fragment to the pod: {d}");
            assert_eq!((d["dst"].as_str(), d["dport"].as_u64()), (Some(pod), Some(5353)), "{what}: {d}");
            assert_eq!(d["l4_ok"].as_bool(), Some(true), "{what}: {d}");
        }
    }
    // The first fragment in a later frame: the others wait for it.
    for (make, n, pod) in [(v4(5100, 90), 5, "203.0.113.1"), (v6(5100, 91), 4, "2001:db8:b::1")] {
        let early = lab.send_decoded(0, 1, &[q(&format!("({make})[1:]"))], n - 1, "reassemble");
        assert!(early.is_empty(), "held, not sent: {early:?}");
        let got = lab.send_decoded(0, 1, &[q(&format!("({make})[:1]"))], n, "reassemble");
        assert_eq!(got.len(), 1, "{got:?}\n{}", lab.vpp.ctl("show errors"));
        assert_eq!(
            (got[0]["dst"].as_str(), got[0]["l4_ok"].as_bool()),
            (Some(pod), Some(true)),
            "{:?}",
            got[0]
        );
        assert_eq!(got[0]["fragments"].as_u64(), Some(n as u64));
    }
    // The pods' fragmented replies, the last fragment first: back from the
    // VIP (the flows are the in-order datagrams' above).
    for (make, n, vip) in [
        ("fragment(IP(src='203.0.113.1', dst='198.51.100.2', id=300)/UDP(sport=5353, dport=5000)/Raw(bytes(range(256))*16), fragsize=1000)[::-1]", 5, "192.0.2.10"),
        ("fragment6(IPv6(src='2001:db8:b::1', dst='2001:db8:c::2')/IPv6ExtHdrFragment(id=301)/UDP(sport=5353, dport=5000)/Raw(bytes(range(256))*16), 1280)[::-1]", 4, "2001:db8::10"),
    ] {
        let got = lab.send_decoded(1, 0, &[q(make)], n, "reassemble");
        assert_eq!(got.len(), 1, "{got:?}\n{}", lab.vpp.ctl("show errors"));
        let d = &got[0];
        assert_eq!((d["src"].as_str(), d["sport"].as_u64()), (Some(vip), Some(53)), "{d}");
        assert_eq!((d["l4_ok"].as_bool(), d["fragments"].as_u64()), (Some(true), Some(n as u64)), "{d}");
    }
    // Without their first: held, then dropped once the timeout has passed
    // (when the node next runs), counted.
    let before = lab.vpp.ctl("show errors");
    // (show errors cuts descriptions to their first 35 characters.)
    let given_up = "IP fragment whose first fragment di";
    assert!(!before.contains(given_up), "{before}");
    let none = lab.send_decoded(0, 1, &[q(&format!("({})[1:]", v4(5200, 95)))], 4, "reassemble");
    assert!(none.is_empty(), "{none:?}");
    std::thread::sleep(Duration::from_millis(2500));
    let one = lab.send_decoded(0, 1, &[q(&v4(5201, 96))], 5, "reassemble");
    assert_eq!(one.len(), 1, "{one:?}");
    let errors = lab.vpp.ctl("show errors");
    let line = errors.lines().find(|l| l.contains(given_up)).unwrap_or_else(|| panic!("{errors}"));
    assert_eq!(line.split_whitespace().next(), Some("4"), "{line}");
}

/// nat46 and nat64 datagrams in fragments, both ways, in order and the
/// last fragment first: every fragment crosses families (scapy reassembles
/// what left and checks the transport checksum), replies come back from
/// the VIP.
/// A fragmented datagram as it should come out: family, fragment count,
/// source (a port `None`: any) and destination.
struct Datagram<'a> {
    family: u64,
    fragments: u64,
    src: (&'a str, Option<u16>),
    dst: (&'a str, u16),
}

/// Sends one fragmented datagram (`make`, scapy; `sent` fragments) from pg
/// interface `from`, and checks that it comes out on `to` reassembled as
/// one datagram as `want` says, its transport checksum valid. Returns it.
fn fragmented_through(
    lab: &mut Lab,
    (from, to): (usize, usize),
    make: &str,
    sent: usize,
    want: &Datagram,
) -> serde_json::Value {
    let got = lab.send_decoded(from, to, &[serde_json::to_string(make).unwrap()], sent, "reassemble");
    assert_eq!(got.len(), 1, "{make}: {got:?}\n{}", lab.vpp.ctl("show errors"));
    let d = got.into_iter().next().unwrap();
    assert_eq!(
        (d["family"].as_u64(), d["fragments"].as_u64()),
        (Some(want.family), Some(want.fragments)),
        "{d}"
    );
    assert_eq!(d["src"].as_str(), Some(want.src.0), "{d}");
    if let Some(port) = want.src.1 {
        assert_eq!(d["sport"].as_u64(), Some(u64::from(port)), "{d}");
    }
    assert_eq!(
        (d["dst"].as_str(), d["dport"].as_u64()),
        (Some(want.dst.0), Some(u64::from(want.dst.1))),
        "{d}"
    );
    assert_eq!(d["l4_ok"].as_bool(), Some(true), "{d}");
    d
}

#[test]
fn datapath_nat46_nat64_fragments_both_ways() {
    let Some(mut lab) = Lab::start("datapath_nat46_nat64_fragments_both_ways", 0) else { return };
    lab.ctl_ok("kp conf nat46 prefix 2001:db8:46::/96 nat64 source 192.0.2.1 nat64 ports 40000-40063");
    lab.ctl_ok("kp vip 192.0.2.46/32 protocol udp port 53 target_port 5353 nat46");
    lab.ctl_ok("kp pod 192.0.2.46/32 2001:db8:b::1");
    lab.ctl_ok("kp vip 2001:db8:64::10/128 protocol udp port 53 target_port 5353 nat64");
    lab.ctl_ok("kp pod 2001:db8:64::10/128 203.0.113.3");
    let data = "Raw(bytes(range(256))*16)";
    for (k, order) in [(0u16, ""), (1, "[::-1]")] {
        // nat46: IPv4 fragments to IPv6 ones, and the pod's back.
        let make = format!("fragment(IP(src='198.51.100.2', dst='192.0.2.46', id={})/UDP(sport={}, dport=53)/{data}, fragsize=1000){order}", 500 + k, 5000 + k);
        let to = Datagram {
            family: 6,
            fragments: 5,
            src: ("2001:db8:46::c633:6402", Some(5000 + k)),
            dst: ("2001:db8:b::1", 5353),
        };
        fragmented_through(&mut lab, (0, 1), &make, 5, &to);
        let make = format!("fragment6(IPv6(src='2001:db8:b::1', dst='2001:db8:46::c633:6402')/IPv6ExtHdrFragment(id={})/UDP(sport=5353, dport={})/{data}, 1280){order}", 600 + k, 5000 + k);
        let to = Datagram {
            family: 4,
            fragments: 4,
            src: ("192.0.2.46", Some(53)),
            dst: ("198.51.100.2", 5000 + k),
        };
        fragmented_through(&mut lab, (1, 0), &make, 4, &to);
        // nat64: IPv6 fragments to IPv4 ones from the nat64 source (any
        // of its ports), and the pod's back to the client.
        let make = format!("fragment6(IPv6(src='2001:db8:c::2', dst='2001:db8:64::10')/IPv6ExtHdrFragment(id={})/UDP(sport={}, dport=53)/{data}, 1280){order}", 700 + k, 6000 + k);
        let to = Datagram { family: 4, fragments: 4, src: ("192.0.2.1", None), dst: ("203.0.113.3", 5353) };
        let d = fragmented_through(&mut lab, (0, 1), &make, 4, &to);
        let port = d["sport"].as_u64().unwrap();
        assert!((40000..=40063).contains(&port), "{d}");
        let make = format!("fragment(IP(src='203.0.113.3', dst='192.0.2.1', id={})/UDP(sport=5353, dport={port})/{data}, fragsize=1000){order}", 800 + k);
        let to = Datagram {
            family: 6,
            fragments: 5,
            src: ("2001:db8:64::10", Some(53)),
            dst: ("2001:db8:c::2", 6000 + k),
        };
        fragmented_through(&mut lab, (1, 0), &make, 5, &to);
    }
    let errors = lab.vpp.ctl("show errors");
    assert!(!errors.contains("cannot cross families") && !errors.contains("first fragment di"), "{errors}");
    assert!(lab.vpp.is_running());
}

#[test]
fn datapath_nat46_nat64_translate_both_ways() {
    let Some(mut lab) = Lab::start("datapath_nat46_nat64_translate_both_ways", 0) else { return };
    lab.ctl_ok("kp conf nat46 prefix 2001:db8:46::/96 nat64 source 192.0.2.1 nat64 ports 40000-40007");
    lab.ctl_ok("kp vip 192.0.2.46/32 port 80 target_port 8080 node_port 30046 nat46");
    lab.ctl_ok("kp pod 192.0.2.46/32 2001:db8:b::1 2001:db8:b::2");
    // A nat44 VIP beside it.
    lab.ctl_ok("kp vip 192.0.2.44/32 port 80 target_port 8080");
    lab.ctl_ok("kp pod 192.0.2.44/32 203.0.113.1");
    lab.ctl_ok("kp vip 2001:db8:64::10/128 port 80 target_port 8080 nat64");
    lab.ctl_ok("kp pod 2001:db8:64::10/128 203.0.113.3");
    let show = lab.vpp.ctl("show kp");
    assert!(show.contains("nat46 prefix: 2001:db8:46::/96"), "{show}");
    assert!(show.contains("nat64 source: 192.0.2.1 ports 40000-40007"), "{show}");

    // nat46: IPv4 clients to IPv6 pods, from their embedded addresses.
    let mut sent = Vec::new();
    for i in 0..4u16 {
        sent.push(Pkt::new("tcp", "198.51.100.2", 7000 + i, "192.0.2.46", 80));
        sent.push(Pkt::new("udp", "198.51.100.2", 7100 + i, "192.0.2.46", 80));
    }
    // ... and through the NodePort on pg0's own address.
    sent.push(Pkt::new("tcp", "198.51.100.2", 7200, "198.51.100.1", 30046));
    let got = lab.send(&sent);
    assert_eq!(got.len(), sent.len(), "{}", lab.vpp.ctl("show errors"));
    for (s, (g, ok)) in sent.iter().zip(&got) {
        assert!(ok, "checksums verify: {g:?}");
        assert_eq!(g.family, 6);
        assert_eq!((g.src.as_str(), g.sport), ("2001:db8:46::c633:6402", s.sport), "{g:?}");
        assert!(["2001:db8:b::1", "2001:db8:b::2"].contains(&g.dst.as_str()) && g.dport == 8080, "{g:?}");
    }
    let back = lab.send_on(1, 0, &replies(&got));
    assert_eq!(back.len(), sent.len(), "every reply comes back\n{}", lab.vpp.ctl("show errors"));
    for (s, (r, ok)) in sent.iter().zip(&back) {
        assert!(ok, "{r:?}");
        assert_eq!(r.family, 4);
        assert_eq!((&r.src, r.sport), (&s.dst, s.dport), "from what the client sent to");
        assert_eq!((&r.dst, r.dport), (&s.src, s.sport));
    }
    // An IPv6 router on the pods' side says the first request was too
    // big: the client gets fragmentation needed, from the VIP, about what
    // it sent; scapy verifies every checksum.
    let q = |s: &str| serde_json::to_string(s).unwrap();
    let err = format!(
        "IPv6(src='2001:db8:b::9', dst='2001:db8:46::c633:6402')/ICMPv6PacketTooBig(mtu=1300)/IPv6(src='2001:db8:46::c633:6402', dst='{}')/TCP(sport=7000, dport=8080, flags='A')",
        got[0].0.dst
    );
    let e = lab.send_json(1, 0, &[q(&err)]);
    assert_icmp_error(&lab, &e, ("192.0.2.46", "198.51.100.2"), ("198.51.100.2", 7000), ("192.0.2.46", 80));
    // The nat44 VIP beside it is untouched by all this.
    let plain = vec![Pkt::new("tcp", "198.51.100.2", 7300, "192.0.2.44", 80)];
    let got44 = lab.send(&plain);
    assert_translated(&plain, &got44, &["203.0.113.1"], 8080);

    // nat64: IPv6 clients to IPv4 pods, from the nat64 source and a port
    // of the pool.
    let sent: Vec<Pkt> = vec![
        Pkt::new("tcp", "2001:db8:c::2", 8000, "2001:db8:64::10", 80),
        Pkt::new("udp", "2001:db8:c::2", 8001, "2001:db8:64::10", 80),
    ];
    let got = lab.send(&sent);
    assert_eq!(got.len(), 2, "{}", lab.vpp.ctl("show errors"));
    for (g, ok) in &got {
        assert!(ok, "{g:?}");
        assert_eq!(
            (g.family, g.src.as_str(), g.dst.as_str(), g.dport),
            (4, "192.0.2.1", "203.0.113.3", 8080)
        );
        assert!((40000..=40007).contains(&g.sport), "{g:?}");
    }
    let back = lab.send_on(1, 0, &replies(&got));
    assert_eq!(back.len(), 2, "{}", lab.vpp.ctl("show errors"));
    for (s, (r, ok)) in sent.iter().zip(&back) {
        assert!(ok, "{r:?}");
        assert_eq!((r.family, &r.src, r.sport), (6, &s.dst, s.dport));
        assert_eq!((&r.dst, r.dport), (&s.src, s.sport));
    }
    // An IPv4 router on the pods' side says the TCP request was too big:
    // the client gets packet too big (MTU 20 bytes more), from the VIP,
    // about what it sent.
    let err = format!(
        "IP(src='203.0.113.9', dst='192.0.2.1')/ICMP(type=3, code=4, nexthopmtu=1400)/IP(src='192.0.2.1', dst='203.0.113.3', flags='DF')/TCP(sport={}, dport=8080, flags='A')",
        got[0].0.sport
    );
    let e = lab.send_json(1, 0, &[q(&err)]);
    assert_icmp_error(
        &lab,
        &e,
        ("2001:db8:64::10", "2001:db8:c::2"),
        ("2001:db8:c::2", 8000),
        ("2001:db8:64::10", 80),
    );
    // The pool has 8 ports: 6 more flows get one, the 7th and 8th do not
    // (counted), and the established flows keep theirs.
    let more: Vec<Pkt> =
        (0..8).map(|i| Pkt::new("udp", "2001:db8:c::2", 8100 + i, "2001:db8:64::10", 80)).collect();
    let got_more = lab.send(&more);
    assert_eq!(got_more.len(), 6, "{}", lab.vpp.ctl("show errors"));
    let errors = lab.vpp.ctl("show errors");
    assert!(errors.contains("nat64: no source port free"), "{errors}");
    let again = lab.send(&sent);
    let ports: Vec<u16> = got.iter().map(|(g, _)| g.sport).collect();
    assert_eq!(
        again.iter().map(|(g, _)| g.sport).collect::<Vec<_>>(),
        ports,
        "established flows keep their ports"
    );
    // A stray packet to the nat64 source is dropped, counted.
    let stray = vec![Pkt::new("tcp", "203.0.113.3", 8080, "192.0.2.1", 40000 + 9)];
    assert!(lab.send_on(1, 0, &stray).is_empty());
    let errors = lab.vpp.ctl("show errors");
    assert!(
        errors.contains("kp4-nat64-reply") && errors.contains("to a nat46/nat64 address of no live"),
        "{errors}"
    );
    let runtime = lab.vpp.ctl("show runtime");
    for node in ["kp4-nat6", "kp6-nat4", "kp6-nat46-reply", "kp4-nat64-reply"] {
        assert!(runtime.contains(node), "{node} ran: {runtime}");
    }
    // Settings in use cannot change; the refusal changes nothing.
    let out = lab.vpp.ctl("kp conf nat46 prefix 2001:db8:47::/96");
    assert!(out.contains("cannot change while VIP"), "{out}");
    assert!(lab.vpp.ctl("show kp").contains("nat46 prefix: 2001:db8:46::/96"));
}

/// `got` is one ICMP error, every checksum verified by scapy, from and to
/// `outer`, quoting a packet from `inner_src` to `inner_dst`.
fn assert_icmp_error(
    lab: &Lab,
    got: &[serde_json::Value],
    outer: (&str, &str),
    inner_src: (&str, u64),
    inner_dst: (&str, u64),
) {
    assert_eq!(got.len(), 1, "{}", lab.vpp.ctl("show errors"));
    let e = &got[0];
    assert_eq!((e["icmp"].as_bool(), e["ok"].as_bool()), (Some(true), Some(true)), "{e}");
    assert_eq!((e["src"].as_str(), e["dst"].as_str()), (Some(outer.0), Some(outer.1)), "{e}");
    assert_eq!(
        (e["inner_src"].as_str(), e["inner_sport"].as_u64()),
        (Some(inner_src.0), Some(inner_src.1)),
        "{e}"
    );
    assert_eq!(
        (e["inner_dst"].as_str(), e["inner_dport"].as_u64()),
        (Some(inner_dst.0), Some(inner_dst.1)),
        "{e}"
    );
}

/// The sum of kp's drop counters in `show errors` (every kp node).
fn kp_drops(errors: &str) -> u64 {
    errors
        .lines()
        .filter(|l| l.contains("kp") && l.contains("error"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Hostile packets in real VPP: pg_tool's hostile mix (random bytes,
/// truncated headers, lying IHL and lengths, TCP data offset below 5,
/// zero-length UDP, endless IPv6 extension chains, overlapping and endless
/// fragments, flipped bits) to a VIP, to a NodePort and through the reply
/// feature, 40 for every good packet. VPP stays up, kp counts drops, and
/// every good packet (both families, TCP and UDP, VIP and NodePort, and
/// the replies) is delivered translated with valid checksums.
#[test]
fn datapath_hostile_packets_among_good_flows() {
    let Some(mut lab) = Lab::start("datapath_hostile_packets_among_good_flows", 1) else { return };
    lab.ctl_ok("kp set interface nat4 in pg1");
    lab.ctl_ok("kp set interface nat6 in pg1");
    lab.ctl_ok("kp vip 192.0.2.10/32 port 80 target_port 8080 node_port 30080");
    lab.ctl_ok("kp vip 2001:db8:d::10/128 port 80 target_port 8080 node_port 30081");
    lab.ctl_ok("kp pod 192.0.2.10/32 203.0.113.1 203.0.113.2");
    lab.ctl_ok("kp pod 2001:db8:d::10/128 2001:db8:b::1 2001:db8:b::2");
    let before = kp_drops(&lab.vpp.ctl("show errors"));
    let mut sent_total = 0;
    for (family, vip, node, client, node_port, pods) in [
        (4u8, "192.0.2.10", "198.51.100.1", "198.51.100.2", 30080, ["203.0.113.1", "203.0.113.2"]),
        (6, "2001:db8:d::10", "2001:db8:c::1", "2001:db8:c::2", 30081, ["2001:db8:b::1", "2001:db8:b::2"]),
    ] {
        let mut good = Vec::new();
        for i in 0..20u16 {
            let proto = if i % 2 == 0 { "tcp" } else { "udp" };
            good.push(Pkt::new(proto, client, 20000 + i, vip, 80));
            good.push(Pkt::new(proto, client, 21000 + i, node, node_port));
        }
        let bad = 40 * good.len();
        sent_total += bad;
        let got = lab.send_hostile(0, 1, &good, bad, u64::from(family));
        assert!(lab.vpp.is_running(), "VPP died: {}", lab.vpp.output());
        // Every good packet arrives, translated, checksums right. What else
        // leaves towards the pods is translated too (a hostile packet that
        // still parses as a flow's is forwarded; its checksum stays as
        // wrong as it came).
        let mut translated = Vec::new();
        for s in &good {
            let g =
                got.iter().find(|(g, ok)| *ok && g.src == s.src && g.sport == s.sport && g.proto == s.proto);
            let Some((g, _)) = g else { panic!("family {family}: {s:?} did not arrive: {got:?}") };
            assert!(pods.contains(&g.dst.as_str()) && g.dport == 8080, "{g:?}");
            translated.push((g.clone(), true));
        }
        for (g, _) in &got {
            assert!(pods.contains(&g.dst.as_str()) && g.dport == 8080, "untranslated to the pods: {g:?}");
        }
        // The pods' replies, with hostile ones mixed in, come back from
        // what the client sent to. (A hostile one kp cannot parse, a TCP
        // data offset below 5 say, is not kp's: it passes untouched.)
        let back = lab.send_hostile(1, 0, &replies(&translated), bad, 100 + u64::from(family));
        assert!(lab.vpp.is_running(), "VPP died: {}", lab.vpp.output());
        for s in &good {
            let want = Pkt::new(&s.proto, &s.dst, s.dport, &s.src, s.sport);
            assert!(back.contains(&(want.clone(), true)), "family {family}: no reply {want:?}: {back:?}");
        }
    }
    let errors = lab.vpp.ctl("show errors");
    let dropped = kp_drops(&errors) - before;
    eprintln!("hostile: {sent_total} sent, {dropped} counted by kp's nodes\n{errors}");
    assert!(dropped > (sent_total / 10) as u64, "kp counts what it drops: {errors}");
    assert!(lab.vpp.is_running());
}
