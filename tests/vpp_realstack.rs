//! kp in real VPP 26.06 between real Linux TCP/UDP stacks: a client and a
//! pod network namespace, each attached to VPP by a veth pair and VPP's
//! `af_packet` host-interface (skipped without VPP, without root, or
//! without `ip`).
//!
//! ```text
//!  ns client                   VPP                      ns pods
//!  198.51.100.2  --veth-- host-<c> | host-<p> --veth--  203.0.113.2, .3
//!  2001:db8:c::2           .1 / ::1  .1 / ::1           2001:db8:b::2, ::3
//!  VIPs 192.0.2.10 and 2001:db8:5::10, port 80 (TCP) and 53 (UDP)
//!  NodePort: VPP's client-side addresses, 30080 (TCP), 30053 (UDP)
//! ```
//!
//! Each pod address has its own server processes (bound to it), as a pod
//! has one address. Everything uses documentation addresses, and the lab
//! removes what it made (namespaces, veths, processes) when it ends.

mod common;
use common::{installed_vpp, Options, Vpp};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const VIP4: &str = "192.0.2.10";
const VIP6: &str = "2001:db8:5::10";
const NODE4: &str = "198.51.100.1";
const NODE6: &str = "2001:db8:c::1";
const PODS4: [&str; 2] = ["203.0.113.2", "203.0.113.3"];
const PODS6: [&str; 2] = ["2001:db8:b::2", "2001:db8:b::3"];
/// nat46 and nat64 VIPs (Mode::Xlat), and the nat64 source address.
const VIP46: &str = "192.0.2.46";
const VIP64: &str = "2001:db8:64::10";
const NAT64_SOURCE: &str = "192.0.2.64";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// How the lab's links are set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// The kernel's defaults: GSO/TSO and checksum offload on the veths.
    Offloads,
    /// Jumbo frames (MTU 9000 everywhere), offloads off: VPP chains them.
    Jumbo,
    /// VPP's links narrower (1400) than the hosts' (1500): PMTUD must work
    /// through the Service.
    Narrow,
    /// One worker: the client side polled by the main thread, the pod side
    /// by the worker, so requests and replies are on different threads.
    Threads,
    /// Offloads on, plus a nat46 VIP (IPv4 clients, IPv6 pods) and a
    /// nat64 VIP (IPv6 clients, IPv4 pods).
    Xlat,
}

fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{args:?}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

fn must(args: &[&str]) {
    if let Err(e) = sh(args) {
        panic!("{e}");
    }
}

/// Why this machine cannot run the lab, if it cannot.
fn lab_unavailable() -> Option<String> {
    if !sh(&["id", "-u"]).is_ok_and(|u| u.trim() == "0") {
        return Some("not root (network namespaces need it)".into());
    }
    if sh(&["ip", "-V"]).is_err() {
        return Some("no iproute2 `ip`".into());
    }
    let probe = format!("kpprobe{}", std::process::id());
    if let Err(e) = sh(&["ip", "netns", "add", &probe]) {
        return Some(format!("cannot create a network namespace: {e}"));
    }
    let _ = sh(&["ip", "netns", "del", &probe]);
    None
}

struct Lab {
    vpp: Vpp,
    py: PathBuf,
    /// Namespace names: client, pods.
    ns: [String; 2],
    /// Root-side veth names (VPP's host-interfaces): client, pods.
    veth: [String; 2],
    servers: Vec<Child>,
    mode: Mode,
}

impl Lab {
    fn start(test: &str, mode: Mode) -> Option<Lab> {
        let bin = installed_vpp(test)?;
        if let Some(why) = lab_unavailable() {
            eprintln!("SKIPPED {test}: {why}");
            return None;
        }
        let py = root().join("target/venv/bin/python");
        let py = if py.exists() { py } else { PathBuf::from("/usr/bin/python3") };
        let workers = if mode == Mode::Threads { 1 } else { 0 };
        let vpp =
            Vpp::start(&bin, Options { workers, plugins: vec!["af_packet_plugin.so"], ..Default::default() })
                .unwrap_or_else(|e| panic!("{e}"));
        // Short, unique names (interface names have 15 characters at most).
        let id = format!("{}{}", std::process::id() % 100000, mode as u8);
        let ns = [format!("kpc{id}"), format!("kpp{id}")];
        let veth = [format!("kc{id}"), format!("kp{id}")];
        let lab = Lab { vpp, py, ns, veth, servers: Vec::new(), mode };
        lab.plumb(mode);
        Some(lab)
    }

    /// `ip netns exec <ns> ...` for namespace 0 (client) or 1 (pods).
    fn in_ns(&self, which: usize, args: &[&str]) -> Result<String, String> {
        let mut a = vec!["ip", "netns", "exec", &self.ns[which]];
        a.extend_from_slice(args);
        sh(&a)
    }

    /// A command that prints nothing when it works (`create
    /// host-interface` prints the new interface's name).
    fn ctl_ok(&self, cmd: &str) {
        let out = self.vpp.ctl(cmd);
        let quiet = if cmd.starts_with("create host-interface") {
            out.trim().starts_with("host-")
        } else {
            out.trim().is_empty()
        };
        assert!(quiet, "{cmd}: {out}");
    }

    fn plumb(&self, mode: Mode) {
        let host_mtu = match mode {
            Mode::Jumbo => "9000",
            _ => "1500",
        };
        let vpp_mtu = match mode {
            Mode::Jumbo => "9000",
            Mode::Narrow => "1400",
            _ => "1500",
        };
        let peers = ["c0", "p0"];
        let addrs: [(&[&str], &str, &str); 2] = [
            (&["198.51.100.2/24", "2001:db8:c::2/64"], "198.51.100.1", "2001:db8:c::1"),
            (
                &["203.0.113.2/24", "203.0.113.3/24", "2001:db8:b::2/64", "2001:db8:b::3/64"],
                "203.0.113.1",
                "2001:db8:b::1",
            ),
        ];
        for i in 0..2 {
            let (ns, veth, peer) = (&self.ns[i], &self.veth[i], peers[i]);
            must(&["ip", "netns", "add", ns]);
            must(&[
                "ip", "link", "add", veth, "mtu", host_mtu, "type", "veth", "peer", "name", peer, "mtu",
                host_mtu, "netns", ns,
            ]);
            must(&["ip", "link", "set", veth, "up"]);
            // No IPv6 of the host's own on VPP's side of the veth.
            let _ = sh(&["sysctl", "-qw", &format!("net.ipv6.conf.{veth}.disable_ipv6=1")]);
            self.in_ns(i, &["ip", "link", "set", "lo", "up"]).unwrap();
            self.in_ns(i, &["ip", "link", "set", peer, "up"]).unwrap();
            for a in addrs[i].0 {
                let mut cmd = vec!["ip", "addr", "add", a, "dev", peer];
                if a.contains(':') {
                    cmd.push("nodad");
                }
                self.in_ns(i, &cmd).unwrap();
            }
            if mode == Mode::Jumbo {
                // The hosts' offloads off (VPP's own side of the veths
                // keeps its defaults: af_packet stops seeing frames when
                // they are off there, kp or not).
                let off = [
                    "ethtool", "-K", peer, "tso", "off", "gso", "off", "gro", "off", "tx", "off", "rx", "off",
                ];
                self.in_ns(i, &off).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        // The client reaches the VIPs (and only them) through VPP; the pods
        // send everything back through VPP.
        self.in_ns(0, &["ip", "route", "add", "192.0.2.0/24", "via", addrs[0].1]).unwrap();
        self.in_ns(0, &["ip", "route", "add", "203.0.113.0/24", "via", addrs[0].1]).unwrap();
        self.in_ns(0, &["ip", "-6", "route", "add", "2001:db8:5::/64", "via", addrs[0].2]).unwrap();
        self.in_ns(0, &["ip", "-6", "route", "add", "2001:db8:64::/64", "via", addrs[0].2]).unwrap();
        self.in_ns(0, &["ip", "-6", "route", "add", "2001:db8:b::/64", "via", addrs[0].2]).unwrap();
        self.in_ns(1, &["ip", "route", "add", "default", "via", addrs[1].1]).unwrap();
        self.in_ns(1, &["ip", "-6", "route", "add", "default", "via", addrs[1].2]).unwrap();

        let (c, p) = (format!("host-{}", self.veth[0]), format!("host-{}", self.veth[1]));
        for (veth, vif, a4, a6) in [
            (&self.veth[0], &c, "198.51.100.1/24", "2001:db8:c::1/64"),
            (&self.veth[1], &p, "203.0.113.1/24", "2001:db8:b::1/64"),
        ] {
            self.ctl_ok(&format!("create host-interface name {veth}"));
            self.ctl_ok(&format!("set interface mtu packet {vpp_mtu} {vif}"));
            self.ctl_ok(&format!("set interface state {vif} up"));
            self.ctl_ok(&format!("set interface ip address {vif} {a4}"));
            self.ctl_ok(&format!("set interface ip address {vif} {a6}"));
        }
        if mode == Mode::Threads {
            self.ctl_ok(&format!("set interface rx-placement {c} queue 0 main"));
            self.ctl_ok(&format!("set interface rx-placement {p} queue 0 worker 0"));
        }
        for cmd in [
            format!("kp vip {VIP4}/32 protocol tcp port 80 target_port 8080 node_port 30080"),
            format!("kp vip {VIP4}/32 protocol udp port 53 target_port 5353 node_port 30053"),
            format!("kp vip {VIP6}/128 protocol tcp port 80 target_port 8080 node_port 30080"),
            format!("kp vip {VIP6}/128 protocol udp port 53 target_port 5353 node_port 30053"),
            format!("kp pod {VIP4}/32 {} {}", PODS4[0], PODS4[1]),
            format!("kp pod {VIP6}/128 {} {}", PODS6[0], PODS6[1]),
            format!("kp set interface nat4 in {p}"),
            format!("kp set interface nat6 in {p}"),
        ] {
            self.ctl_ok(&cmd);
        }
        if mode == Mode::Xlat {
            for cmd in [
                format!("kp conf nat46 prefix 2001:db8:46::/96 nat64 source {NAT64_SOURCE}"),
                format!("kp vip {VIP46}/32 protocol tcp port 80 target_port 8080 node_port 30046 nat46"),
                format!("kp vip {VIP46}/32 protocol udp port 53 target_port 5353 node_port 30046 nat46"),
                format!("kp vip {VIP64}/128 protocol tcp port 80 target_port 8080 node_port 30064 nat64"),
                format!("kp vip {VIP64}/128 protocol udp port 53 target_port 5353 node_port 30064 nat64"),
                format!("kp pod {VIP46}/32 {} {}", PODS6[0], PODS6[1]),
                format!("kp pod {VIP64}/128 {} {}", PODS4[0], PODS4[1]),
            ] {
                self.ctl_ok(&cmd);
            }
        }
    }

    /// Starts the pods' TCP and UDP servers (one per pod address each).
    fn serve(&mut self) {
        for a in PODS4.iter().chain(&PODS6) {
            for (cmd, port) in [("serve", "8080"), ("serve-udp", "5353")] {
                let child = Command::new("ip")
                    .args(["netns", "exec", &self.ns[1]])
                    .arg(&self.py)
                    .arg(root().join("tests/python/netload.py"))
                    .args([cmd, "--bind", a, "--port", port])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("starting a server");
                self.servers.push(child);
            }
        }
        // Until every server listens.
        for _ in 0..50 {
            let tcp = self.in_ns(1, &["ss", "-Htln", "sport", "= :8080"]).unwrap_or_default();
            let udp = self.in_ns(1, &["ss", "-Huln", "sport", "= :5353"]).unwrap_or_default();
            if tcp.lines().count() == 4 && udp.lines().count() == 4 {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the pod servers did not start");
    }

    /// Runs a netload client in the client namespace; its JSON result.
    fn client(&self, args: &[&str]) -> serde_json::Value {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns[0]])
            .arg(&self.py)
            .arg(root().join("tests/python/netload.py"))
            .args(args)
            .output()
            .expect("running a client");
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim())
            .unwrap_or_else(|_| panic!("client {args:?}: {text} {}", String::from_utf8_lossy(&out.stderr)))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
        for ns in &self.ns {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
        for v in &self.veth {
            let _ = sh(&["ip", "link", "del", v]);
        }
    }
}

/// What one mode must pass: bulk TCP both ways through each VIP and
/// NodePort, and UDP, both families; plain routing to a pod for
/// comparison. Returns the failures (empty: all passed).
fn transfers(lab: &Lab, udp_sizes: &[usize]) -> Vec<String> {
    let mut targets = Vec::new();
    for (vip, node, pod) in [(VIP4, NODE4, PODS4[0]), (VIP6, NODE6, PODS6[0])] {
        targets.extend([(vip, "80", "53"), (node, "30080", "30053"), (pod, "8080", "5353")]);
    }
    transfers_to(lab, &targets, udp_sizes)
}

/// Bulk TCP both ways and UDP to each (host, TCP port, UDP port). Where
/// packets can outgrow VPP's links (narrower links; nat46's fragments
/// gaining 28 bytes), a datagram lost to Path MTU Discovery is sent again
/// (each way may lose one).
fn transfers_to(lab: &Lab, targets: &[(&str, &str, &str)], udp_sizes: &[usize]) -> Vec<String> {
    let retries = if matches!(lab.mode, Mode::Narrow | Mode::Xlat) { "2" } else { "0" };
    let mut failed = Vec::new();
    let mut check = |what: String, r: serde_json::Value, peer: &str| {
        let ok = r["ok"].as_bool() == Some(true);
        let right_peer = r.get("peer").is_none_or(|p| p.as_str() == Some(peer));
        if !ok || !right_peer {
            failed.push(format!("{what}: {r}"));
        }
    };
    {
        for &(host, tcp, udp) in targets {
            let down =
                lab.client(&["get", "--host", host, "--port", tcp, "--bytes", "8388608", "--timeout", "10"]);
            check(format!("8 MiB from {host}:{tcp}"), down, host);
            let up =
                lab.client(&["put", "--host", host, "--port", tcp, "--bytes", "4194304", "--timeout", "10"]);
            check(format!("4 MiB to {host}:{tcp}"), up, host);
            for size in udp_sizes {
                let size = size.to_string();
                let r = lab.client(&[
                    "udp",
                    "--host",
                    host,
                    "--port",
                    udp,
                    "--size",
                    &size,
                    "--count",
                    "10",
                    "--timeout",
                    "1",
                    "--retries",
                    retries,
                ]);
                check(format!("UDP {size} bytes x10 to {host}:{udp}"), r, host);
            }
        }
    }
    failed
}

fn run_mode(test: &str, mode: Mode, udp_sizes: &[usize]) {
    let Some(mut lab) = Lab::start(test, mode) else { return };
    lab.serve();
    let failed = transfers(&lab, udp_sizes);
    let errors = lab.vpp.ctl("show errors");
    assert!(failed.is_empty(), "{mode:?}: {} failed:\n{}\n{errors}", failed.len(), failed.join("\n"));
    // kp did the translating (and plain routing passed it by).
    let runtime = lab.vpp.ctl("show runtime");
    for node in ["kp4-nat4", "kp6-nat6", "kp4-nodeport", "kp6-nodeport", "kp-nat4-in2out", "kp-nat6-in2out"] {
        assert!(runtime.contains(node), "{node} never ran:\n{runtime}");
    }
    assert!(lab.vpp.is_running());
}

#[test]
fn realstack_offloads_on() {
    run_mode("realstack_offloads_on", Mode::Offloads, &[100, 1400, 4000]);
}

#[test]
fn realstack_jumbo_frames() {
    run_mode("realstack_jumbo_frames", Mode::Jumbo, &[100, 8000, 30000]);
}

#[test]
fn realstack_requests_and_replies_on_different_threads() {
    run_mode("realstack_requests_and_replies_on_different_threads", Mode::Threads, &[100, 1400, 4000]);
}

#[test]
fn realstack_vpp_links_narrower_than_the_hosts() {
    // 1450: one frame for the hosts, too big for VPP's links, which refuse
    // it (IPv4 DF, IPv6) with their own ICMP errors; 4000: fragments the
    // hosts make at 1500, refused alike.
    run_mode("realstack_vpp_links_narrower_than_the_hosts", Mode::Narrow, &[100, 1300, 1450, 4000]);
}

#[test]
fn realstack_nat46_and_nat64_with_offloads_on() {
    let Some(mut lab) = Lab::start("realstack_nat46_and_nat64_with_offloads_on", Mode::Xlat) else { return };
    lab.serve();
    let targets =
        [(VIP46, "80", "53"), (NODE4, "30046", "30046"), (VIP64, "80", "53"), (NODE6, "30064", "30064")];
    // 4000: fragments that cross families (IPv4 ones gain 28 bytes and
    // are refused by VPP's 1500-byte links: PMTUD through the translated
    // ICMP errors makes the senders fragment smaller).
    let failed = transfers_to(&lab, &targets, &[100, 1400, 4000]);
    let errors = lab.vpp.ctl("show errors");
    assert!(failed.is_empty(), "{} failed:\n{}\n{errors}", failed.len(), failed.join("\n"));
    let runtime = lab.vpp.ctl("show runtime");
    for node in ["kp4-nat6", "kp6-nat4", "kp4-nodeport", "kp6-nodeport", "kp-nat4-in2out", "kp-nat6-in2out"] {
        assert!(runtime.contains(node), "{node} never ran:\n{runtime}");
    }
    let show = lab.vpp.ctl("show kp");
    assert!(show.contains(&format!("nat64 source: {NAT64_SOURCE}")), "{show}");
    assert!(lab.vpp.is_running());
}
