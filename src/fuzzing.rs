//! Fuzzing harnesses with their oracles, shared by the cargo-fuzz targets
//! (`fuzz/`) and the normal test suite, which replays the committed seed
//! corpora and every input a fuzzer ever found (`fuzz/regressions/`)
//! through the same functions. Each harness panics when its oracle fails.

use crate::api::{self, Host, Msg};
use crate::config::{ConfigError, FlowConf, PodTarget, Protocol, VipKey, VipSpec, XlatChange};
use crate::control::{Applied, DataPathView, FlowTableStats, Kp, VipCounters};
use crate::dataplane::{Capture, Controller, ReplyVerdict, VecBatch, Verdict, Worker, MAX_BATCH};
use crate::nat::NatType;
use crate::packet::build::{emit, icmp_error, verify, verify_icmp, Spec};
use crate::packet::{self, proto, IpFamily};
use crate::xlat::Rfc6052Prefix;
use std::net::IpAddr;

/// The Services the data-path harness runs against: one of each NAT type
/// and one without pods, each with a NodePort.
struct Service {
    prefix: &'static str,
    addr: [u8; 16],
    family: IpFamily,
    pod_family: IpFamily,
    nat: NatType,
    pods: &'static [&'static str],
    node_port: u16,
}

const SERVICES: [Service; 5] = [
    Service {
        prefix: "192.0.2.10/32",
        addr: v4(192, 0, 2, 10),
        family: IpFamily::V4,
        pod_family: IpFamily::V4,
        nat: NatType::Nat44,
        pods: &["198.51.100.1", "198.51.100.2"],
        node_port: 30044,
    },
    Service {
        prefix: "192.0.2.46/32",
        addr: v4(192, 0, 2, 46),
        family: IpFamily::V4,
        pod_family: IpFamily::V6,
        nat: NatType::Nat46,
        pods: &["2001:db8:b::1", "2001:db8:b::2"],
        node_port: 30046,
    },
    Service {
        prefix: "2001:db8::10/128",
        addr: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10],
        family: IpFamily::V6,
        pod_family: IpFamily::V6,
        nat: NatType::Nat66,
        pods: &["2001:db8:a::1"],
        node_port: 30066,
    },
    Service {
        prefix: "2001:db8:64::10/128",
        addr: [0x20, 0x01, 0x0d, 0xb8, 0, 0x64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10],
        family: IpFamily::V6,
        pod_family: IpFamily::V4,
        nat: NatType::Nat64,
        pods: &["198.51.100.5"],
        node_port: 30064,
    },
    Service {
        prefix: "192.0.2.20/32",
        addr: v4(192, 0, 2, 20),
        family: IpFamily::V4,
        pod_family: IpFamily::V4,
        nat: NatType::Nat44,
        pods: &[],
        node_port: 30020,
    },
];

const VIP_PORT: u16 = 80;
const TARGET_PORT: u16 = 8080;

const fn v4(a: u8, b: u8, c: u8, d: u8) -> [u8; 16] {
    let mut x = [0u8; 16];
    x[0] = a;
    x[1] = b;
    x[2] = c;
    x[3] = d;
    x
}

fn controller() -> Controller {
    let mut c = Controller::new(2);
    c.set_flow(Some(64), Some(30)).expect("flow conf");
    c.set_reject(true);
    c.set_xlat(&XlatChange {
        nat46_prefix: Some(Rfc6052Prefix::new("2001:db8:46::".parse().unwrap(), 96).unwrap()),
        nat64_sources: Some(vec!["192.0.2.64".parse().unwrap()]),
        // Few ports, so inputs can exhaust them.
        nat64_ports: Some((40000, 40007)),
    })
    .expect("xlat conf");
    for s in &SERVICES {
        let spec = VipSpec {
            key: VipKey { prefix: s.prefix.parse().unwrap(), protocol: Protocol::Any, port: VIP_PORT },
            target_port: TARGET_PORT,
            node_port: s.node_port,
            nat: Some(s.nat),
            new_len: Some(64),
        };
        c.add_vip(&spec).expect("vip");
        let pods: Vec<(IpAddr, u32)> = s.pods.iter().map(|p| (p.parse().unwrap(), 1)).collect();
        if !pods.is_empty() {
            let t = PodTarget { prefix: spec.key.prefix, protocol: None, port: None };
            c.add_pods(&t, &pods).expect("pods");
        }
    }
    c
}

/// What a data-path run did, so seeds can be shown to reach each path.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reached {
    pub forwarded: usize,
    pub forwarded_valid: usize,
    pub rejected: usize,
    pub replies: usize,
    pub icmp_translated: usize,
    /// By NAT type of the destination Service (nat44, nat46, nat66,
    /// nat64): valid requests translated.
    pub by_nat: [usize; 4],
}

/// A packet of the data-path harness and what it may be checked against.
struct Sent {
    bytes: Vec<u8>,
    capture: Capture,
    chained: Option<usize>,
    partial: bool,
    /// Built valid (every checksum right, whole, full checksum): a
    /// translation of it must be valid as well.
    valid: bool,
    /// An ICMP error (of this family) rather than TCP/UDP.
    icmp: Option<IpFamily>,
    /// The family its Service's pods have, when it was built for one.
    pod_family: Option<IpFamily>,
}

impl Sent {
    /// Whole, with a full checksum, nothing to check it against.
    fn untested(bytes: Vec<u8>, capture: Capture) -> Sent {
        Sent { bytes, capture, chained: None, partial: false, valid: false, icmp: None, pod_family: None }
    }
}

/// Where a record goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Forward,
    Reply,
}

/// The whole data path (both workers, forward and reply paths, all four
/// NAT types, NodePort, rejects, chains and partial checksums) over a
/// sequence of packet records. Record: `[control, length, bytes...]`;
/// `control & 7` says what the bytes are: raw packets (0 forward, 1
/// reply), a valid packet to a Service built from them (2), a valid reply
/// to an earlier translated packet (3), an ICMP error about an earlier
/// translated packet from the pods' side (4) or about an earlier
/// translated reply from the clients' side (5), an earlier output with one
/// byte changed (6, 7). Bit 3 sends the packet on worker 1, bit 6 ends the
/// batch after it; bit 7 stretches the length. Oracle: no panic; a valid
/// packet that is translated (or answered with a reject) is valid.
pub fn dataplane(data: &[u8]) -> Reached {
    let mut reached = Reached::default();
    let c = controller();
    let mut workers = [c.worker(0).expect("worker"), c.worker(1).expect("worker")];
    let mut history: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    let mut batches: [[Vec<Sent>; 2]; 2] = Default::default();
    let mut now = 1;
    let mut rest = data;
    while rest.len() >= 2 {
        let (ctl, len) = (rest[0], usize::from(rest[1]) << if rest[0] & 0x80 != 0 { 4 } else { 0 });
        let body = &rest[2..(2 + len).min(rest.len())];
        rest = &rest[2 + body.len()..];
        let thread = usize::from(ctl >> 3 & 1);
        if let Some((path, sent)) = record(ctl & 7, body, &history) {
            let b = &mut batches[thread][path as usize];
            b.push(sent);
            if b.len() == MAX_BATCH || ctl & 0x40 != 0 {
                run(&mut workers[thread], path, core::mem::take(b), now, &mut history, &mut reached);
                now += u32::from(ctl >> 4 & 3);
            }
        }
    }
    for (thread, w) in workers.iter_mut().enumerate() {
        for path in [Path::Forward, Path::Reply] {
            let b = core::mem::take(&mut batches[thread][path as usize]);
            run(w, path, b, now, &mut history, &mut reached);
        }
    }
    reached
}

fn record(kind: u8, body: &[u8], history: &[Vec<Vec<u8>>; 2]) -> Option<(Path, Sent)> {
    let byte = |i: usize| body.get(i).copied().unwrap_or(0);
    let raw = |capture| Sent::untested(body.to_vec(), capture);
    let earlier = |h: &Vec<Vec<u8>>| (!h.is_empty()).then(|| h[usize::from(byte(0)) % h.len()].clone());
    Some(match kind {
        0 => (Path::Forward, raw(capture_of(byte(0)))),
        1 => (Path::Reply, raw(Capture::NodePort)),
        2 => {
            let s = &SERVICES[usize::from(byte(0)) % SERVICES.len()];
            let nodeport = byte(1) & 1 != 0;
            let protocol = if byte(1) & 2 != 0 { proto::TCP } else { proto::UDP };
            let client: Vec<u8> = match s.family {
                IpFamily::V4 => vec![203, 0, 113, byte(2)],
                IpFamily::V6 => [&[0x20, 0x01, 0x0d, 0xb8, 0xc, 0][..], &[0; 9], &[byte(2)]].concat(),
            };
            let n = if s.family == IpFamily::V4 { 4 } else { 16 };
            let (dst, port) = if nodeport {
                (if s.family == IpFamily::V4 { v4(192, 0, 2, 1) } else { s.addr }, s.node_port)
            } else {
                (s.addr, VIP_PORT)
            };
            let payload = body.get(4..).unwrap_or(&[]);
            let mut spec =
                Spec::new(s.family, protocol, &client, &dst[..n], (u16::from(byte(3)) + 1024, port))
                    .payload(payload);
            spec.udp_no_checksum = byte(1) & 4 != 0 && s.family == IpFamily::V4;
            let bytes = emit(&spec);
            // Bit 3: a chain whose first buffer holds `byte(1) >> 4` * 8
            // bytes past the headers; bit 4: an offloaded (partial) sum.
            let chained = (byte(1) & 8 != 0).then(|| n * 2 + 28 + usize::from(byte(1) >> 4) * 8);
            let chained = chained.filter(|&h| h < bytes.len());
            let partial = byte(1) & 16 != 0;
            let capture = if nodeport { Capture::NodePort } else { capture_of_service(s) };
            let valid = chained.is_none() && !partial;
            (
                Path::Forward,
                Sent { bytes, capture, chained, partial, valid, icmp: None, pod_family: Some(s.pod_family) },
            )
        }
        3 => {
            let out = earlier(&history[Path::Forward as usize])?;
            let p = packet::parse(&out).ok()?;
            let n = if p.family == IpFamily::V4 { 4 } else { 16 };
            let spec = Spec::new(p.family, p.protocol, &p.dst[..n], &p.src[..n], (p.dst_port, p.src_port))
                .payload(body.get(1..).unwrap_or(&[]));
            let bytes = emit(&spec);
            (
                Path::Reply,
                Sent {
                    bytes,
                    capture: Capture::NodePort,
                    chained: None,
                    partial: false,
                    valid: true,
                    icmp: None,
                    pod_family: None,
                },
            )
        }
        4 | 5 => {
            let (from_path, to_path) =
                if kind == 4 { (Path::Forward, Path::Reply) } else { (Path::Reply, Path::Forward) };
            let about = earlier(&history[from_path as usize])?;
            let p = packet::parse(&about).ok()?;
            let n = if p.family == IpFamily::V4 { 4 } else { 16 };
            // From a router on the way, to the quoted packet's source.
            let router: Vec<u8> = if n == 4 {
                vec![198, 51, 100, 254]
            } else {
                [&[0x20, 0x01, 0x0d, 0xb8, 0xf][..], &[0; 11]].concat()
            };
            let (t, code) = match (p.family, byte(1) % 3) {
                (IpFamily::V4, 0) => (3, 4), // fragmentation needed
                (IpFamily::V4, 1) => (3, 3), // port unreachable
                (IpFamily::V4, _) => (11, 0),
                (IpFamily::V6, 0) => (2, 0), // packet too big
                (IpFamily::V6, 1) => (1, 4),
                (IpFamily::V6, _) => (3, 0),
            };
            let bytes = icmp_error(p.family, &router, &p.src[..n], t, code, 1400, &about);
            let capture = if to_path == Path::Forward { capture_of(byte(2)) } else { Capture::NodePort };
            (
                to_path,
                Sent {
                    bytes,
                    capture,
                    chained: None,
                    partial: false,
                    valid: true,
                    icmp: Some(p.family),
                    pod_family: None,
                },
            )
        }
        _ => {
            let path = if kind == 6 { Path::Forward } else { Path::Reply };
            let mut bytes = earlier(&history[path as usize])?;
            if !bytes.is_empty() {
                let at = usize::from(u16::from_le_bytes([byte(1), byte(2)])) % bytes.len();
                bytes[at] ^= byte(3).max(1);
            }
            let capture = capture_of(byte(4));
            (path, Sent::untested(bytes, capture))
        }
    })
}

fn capture_of(b: u8) -> Capture {
    match usize::from(b) % (SERVICES.len() + 1) {
        i if i < SERVICES.len() => Capture::Prefix(i as u32),
        _ => Capture::NodePort,
    }
}

fn capture_of_service(s: &Service) -> Capture {
    let i = SERVICES.iter().position(|x| x.prefix == s.prefix).unwrap();
    Capture::Prefix(i as u32)
}

fn run(
    w: &mut Worker,
    path: Path,
    sent: Vec<Sent>,
    now: u32,
    history: &mut [Vec<Vec<u8>>; 2],
    reached: &mut Reached,
) {
    if sent.is_empty() {
        return;
    }
    let mut b = VecBatch::default();
    for s in &sent {
        match s.chained {
            Some(head) => b.push_chained(&s.bytes, head, s.partial, s.capture),
            None => {
                b.push(s.bytes.clone(), s.capture);
                *b.partial.last_mut().unwrap() = s.partial;
            }
        }
    }
    match path {
        Path::Forward => {
            let mut v = [Verdict::Drop(crate::dataplane::DropReason::NoVip); MAX_BATCH];
            w.process(&mut b, now, &mut v);
            for (i, s) in sent.iter().enumerate() {
                let out = &b.packets[i];
                match v[i] {
                    Verdict::Forward { vip, .. } => {
                        reached.forwarded += 1;
                        reached.icmp_translated += usize::from(s.icmp.is_some());
                        if s.valid {
                            reached.forwarded_valid += 1;
                            if let Some(n) = reached.by_nat.get_mut(vip as usize) {
                                *n += 1;
                            }
                            check(out, s.icmp, "translated request");
                            if s.icmp.is_none() {
                                let p = packet::parse(out).unwrap();
                                assert_eq!(p.dst_port, TARGET_PORT, "the pod's port");
                                assert_eq!(Some(p.family), s.pod_family, "the pods' family");
                            }
                        }
                        if s.chained.is_none() {
                            history[Path::Forward as usize].push(out.clone());
                        }
                    }
                    Verdict::Reject { .. } if s.valid => {
                        reached.rejected += 1;
                        let family =
                            if out.first().map(|b| b >> 4) == Some(6) { IpFamily::V6 } else { IpFamily::V4 };
                        if packet::parse(out).is_ok() {
                            assert_eq!(verify(out), Ok(()), "TCP reset");
                        } else {
                            assert_eq!(verify_icmp(out, family), Ok(()), "ICMP port unreachable");
                        }
                    }
                    _ => {}
                }
            }
        }
        Path::Reply => {
            let mut v = [ReplyVerdict::NotKp; MAX_BATCH];
            w.process_replies(&mut b, now, &mut v);
            for (i, s) in sent.iter().enumerate() {
                let out = &b.packets[i];
                match v[i] {
                    ReplyVerdict::Translated { .. } | ReplyVerdict::TranslatedTo { .. } => {
                        reached.replies += 1;
                        reached.icmp_translated += usize::from(s.icmp.is_some());
                        if s.valid {
                            check(out, s.icmp, "translated reply");
                        }
                        history[Path::Reply as usize].push(out.clone());
                    }
                    ReplyVerdict::NotKp => {
                        assert_eq!(out, &s.bytes, "a packet that is not kp's is untouched")
                    }
                    ReplyVerdict::Held => unreachable!("this harness's batches cannot hold packets"),
                }
            }
        }
    }
    for h in history.iter_mut() {
        if h.len() > 64 {
            h.drain(..h.len() - 64);
        }
    }
}

fn check(out: &[u8], icmp: Option<IpFamily>, what: &str) {
    match icmp {
        None => assert_eq!(verify(out), Ok(()), "{what}"),
        Some(_) => {
            // (Of the other family for nat46/nat64.)
            let family = if out.first().map(|b| b >> 4) == Some(6) { IpFamily::V6 } else { IpFamily::V4 };
            assert_eq!(verify_icmp(out, family), Ok(()), "{what}");
        }
    }
}

/// The CLI parsers over any text, and what they accept applied to a
/// control plane. Oracle: no panic; a refused change changes nothing.
pub fn cli(data: &[u8]) {
    let Ok(line) = core::str::from_utf8(data) else { return };
    let _ = crate::cli::parse_conf_all(line);
    let _ = crate::cli::parse_set_interface(line);
    let _ = crate::cli::parse_show(line);
    let mut kp = Kp::new(1);
    let _ =
        kp.apply(&crate::cli::parse_vip("192.0.2.10/32 port 80 target_port 8080 node_port 30080").unwrap());
    for change in [crate::cli::parse_vip(line), crate::cli::parse_pod(line)].into_iter().flatten() {
        let before = kp.controller.config().clone();
        if kp.apply(&change).is_err() {
            assert_eq!(kp.controller.config(), &before, "a refused change changed the configuration");
        }
    }
}

struct NoTraffic;

impl DataPathView for NoTraffic {
    fn flow_tables(&self) -> Vec<FlowTableStats> {
        vec![FlowTableStats { buckets: 16, capacity: 64, ..Default::default() }]
    }
    fn vip_counters(&self, _: u32) -> VipCounters {
        VipCounters { existing: 0, first: 0, untracked: 0, no_pod: 0 }
    }
    fn pod_packets(&self, _: u32) -> u64 {
        0
    }
}

impl Host for NoTraffic {
    fn interface_name(&self, sw_if_index: u32) -> Option<String> {
        (sw_if_index == 1).then(|| "pg0".into())
    }
    fn resize_flow_tables(&self, _: FlowConf) -> Result<(), ConfigError> {
        Ok(())
    }
    fn applied(&self, _: &mut Kp, _: &Applied) {}
    fn set_reply_feature(&self, _: IpFamily, _: u32, _: bool) -> bool {
        true
    }
}

/// The binary-API decoder: a sequence of messages, `[message, length,
/// bytes...]`, each handled as VPP would hand it over. Oracle: no panic;
/// exactly the replies the message has; a reply with a negative retval
/// changed nothing.
pub fn api(data: &[u8]) {
    let mut kp = Kp::new(1);
    let mut rest = data;
    while rest.len() >= 3 {
        let m = api::MESSAGES.len();
        let msg = Msg::from_offset(u16::from(rest[0]) % m as u16).unwrap();
        let len = usize::from(u16::from_le_bytes([rest[1], rest[2]]));
        let body = &rest[3..(3 + len).min(rest.len())];
        rest = &rest[3 + body.len()..];
        let before = kp.controller.config().clone();
        let replies = api::handle(&mut kp, msg, body, &NoTraffic, &NoTraffic);
        for r in &replies {
            assert_eq!(r.body.len() + 2, r.msg.size(), "{:?} reply of the wrong size", r.msg);
        }
        if let Some(r) = replies.last() {
            let retval = r.body.get(4..8).map(|b| i32::from_be_bytes(b.try_into().unwrap()));
            if retval.is_some_and(|rv| rv < 0) {
                assert_eq!(kp.controller.config(), &before, "{msg:?} failed but changed the configuration");
            }
        }
    }
}

/// The `.api` parser of the generator over any text. Oracle: no panic,
/// and what parses can be emitted.
pub fn apigen(data: &[u8]) {
    let Ok(text) = core::str::from_utf8(data) else { return };
    if let Ok(a) = crate::apigen::Api::parse("fuzz", text, &|_| None) {
        let _ = a.messages();
        let _ = a.wire_sizes();
        let _ = a.to_json();
    }
}
