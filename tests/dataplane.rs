//! The whole host-independent data path: controller, snapshots, worker.

use kp_plugin::config::{FlowChange, PodTarget, Protocol, VipKey, VipSpec, XlatChange};
use kp_plugin::dataplane::{
    Batch, Capture, Controller, DropReason, FlowOutcome, PodState, ReplyVerdict, VecBatch, Verdict, Worker,
};
use kp_plugin::nat::{NatError, NatType};
use kp_plugin::packet::build::{emit, icmp_error, icmp_error_quoting, verify, verify_icmp, Spec};
use kp_plugin::packet::{checksum, parse, proto, IpFamily};
use kp_plugin::xlat::Rfc6052Prefix;
use std::collections::HashMap;
use std::net::IpAddr;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn vip(prefix: &str, protocol: Protocol, port: u16, target: u16, node_port: u16) -> VipSpec {
    VipSpec {
        key: VipKey { prefix: prefix.parse().unwrap(), protocol, port },
        target_port: target,
        node_port,
        nat: None,
        new_len: None,
    }
}

fn all_ports(prefix: &str) -> PodTarget {
    PodTarget { prefix: prefix.parse().unwrap(), protocol: None, port: None }
}

fn v4(protocol: u8, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    emit(&Spec::new(IpFamily::V4, protocol, &src, &dst, (sport, dport)).payload(b"hello kp"))
}

/// Runs one packet; returns the verdict and the packet after processing.
fn run(w: &mut Worker, pkt: Vec<u8>, capture: Capture, now: u32) -> (Verdict, Vec<u8>) {
    let mut b = VecBatch::default();
    b.push(pkt, capture);
    let mut v = [Verdict::Drop(DropReason::NoVip); 1];
    w.process(&mut b, now, &mut v);
    (v[0], b.packets.pop().unwrap())
}

fn pod_of(c: &Controller, verdict: Verdict) -> IpAddr {
    let Verdict::Forward { pod, .. } = verdict else { panic!("dropped: {verdict:?}") };
    let dp = c.cell().load();
    let e = dp.pods[pod as usize].endpoint;
    match e.family {
        IpFamily::V4 => IpAddr::from([e.addr[0], e.addr[1], e.addr[2], e.addr[3]]),
        IpFamily::V6 => IpAddr::from(e.addr),
    }
}

fn setup() -> (Controller, Worker, Capture) {
    let mut c = Controller::new(1);
    c.add_vip(&vip("10.96.0.10/32", Protocol::Any, 80, 8080, 30080)).unwrap();
    c.add_pods(&all_ports("10.96.0.10/32"), &[(ip("10.1.0.1"), 1), (ip("10.1.0.2"), 1), (ip("10.1.0.3"), 1)])
        .unwrap();
    let w = c.worker(0).unwrap();
    let cap = Capture::Prefix(c.prefix_index(&"10.96.0.10/32".parse().unwrap()).unwrap());
    (c, w, cap)
}

#[test]
fn dnat_tcp_and_udp_with_valid_checksums() {
    let (c, mut w, cap) = setup();
    for protocol in [proto::TCP, proto::UDP] {
        let (v, out) = run(&mut w, v4(protocol, [192, 168, 0, 5], 40000, [10, 96, 0, 10], 80), cap, 1);
        let Verdict::Forward { outcome, .. } = v else { panic!("{v:?}") };
        assert_eq!(outcome, FlowOutcome::New);
        let p = parse(&out).unwrap();
        assert_eq!(IpAddr::from([p.dst[0], p.dst[1], p.dst[2], p.dst[3]]), pod_of(&c, v));
        assert_eq!(p.dst_port, 8080);
        assert_eq!((p.src[..4].to_vec(), p.src_port), (vec![192, 168, 0, 5], 40000));
        assert_eq!(verify(&out), Ok(()));
        // The same flow again is a hit, rewritten by the IPv4 fast lane:
        // the same bytes out.
        let (v, again) = run(&mut w, v4(protocol, [192, 168, 0, 5], 40000, [10, 96, 0, 10], 80), cap, 2);
        assert!(matches!(v, Verdict::Forward { outcome: FlowOutcome::Hit, .. }), "{v:?}");
        assert_eq!(again, out);
    }
}

#[test]
fn same_flow_same_pod_and_hits() {
    let (c, mut w, cap) = setup();
    let pkt = v4(proto::TCP, [192, 168, 0, 5], 40001, [10, 96, 0, 10], 80);
    let (first, _) = run(&mut w, pkt.clone(), cap, 1);
    for now in 2..10 {
        let (v, _) = run(&mut w, pkt.clone(), cap, now);
        assert_eq!(pod_of(&c, v), pod_of(&c, first));
        assert!(matches!(v, Verdict::Forward { outcome: FlowOutcome::Hit, .. }));
    }
}

#[test]
fn flows_spread_in_proportion_to_table_share() {
    let mut c = Controller::new(1);
    c.add_vip(&vip("10.96.0.10/32", Protocol::Udp, 53, 53, 0)).unwrap();
    c.add_pods(&all_ports("10.96.0.10/32"), &[(ip("10.1.0.1"), 1), (ip("10.1.0.2"), 3)]).unwrap();
    let mut w = c.worker(0).unwrap();
    let cap = Capture::Prefix(0);
    let mut count: HashMap<IpAddr, u32> = HashMap::new();
    for i in 0..10_000u32 {
        let src = [172, 16, (i >> 8) as u8, i as u8];
        let (v, out) = run(&mut w, v4(proto::UDP, src, 1000 + (i % 7) as u16, [10, 96, 0, 10], 53), cap, 1);
        assert_eq!(verify(&out), Ok(()));
        *count.entry(pod_of(&c, v)).or_default() += 1;
    }
    let share = f64::from(count[&ip("10.1.0.2")]) / 10_000.0;
    assert!((share - 0.75).abs() < 0.03, "weight-3 pod got {share}");
}

#[test]
fn unserved_port_protocol_and_bad_packets_are_dropped_with_reasons() {
    let mut c = Controller::new(1);
    c.add_vip(&vip("10.96.0.10/32", Protocol::Tcp, 80, 8080, 0)).unwrap();
    c.add_pods(&all_ports("10.96.0.10/32"), &[(ip("10.1.0.1"), 1)]).unwrap();
    let mut w = c.worker(0).unwrap();
    let cap = Capture::Prefix(0);
    let (v, _) = run(&mut w, v4(proto::TCP, [1, 1, 1, 1], 1, [10, 96, 0, 10], 81), cap, 1);
    assert_eq!(v, Verdict::Drop(DropReason::NoVip));
    let (v, _) = run(&mut w, v4(proto::UDP, [1, 1, 1, 1], 1, [10, 96, 0, 10], 80), cap, 1);
    assert_eq!(v, Verdict::Drop(DropReason::NoVip));
    let mut short = v4(proto::TCP, [1, 1, 1, 1], 1, [10, 96, 0, 10], 80);
    short.truncate(30);
    let (v, _) = run(&mut w, short, cap, 1);
    assert!(matches!(v, Verdict::Drop(DropReason::Packet(_))));
    // A capture index that does not exist (stale DPO) is not a crash.
    let (v, _) = run(&mut w, v4(proto::TCP, [1, 1, 1, 1], 1, [10, 96, 0, 10], 80), Capture::Prefix(99), 1);
    assert_eq!(v, Verdict::Drop(DropReason::NoVip));
}

#[test]
fn prefix_vip_serves_every_address_and_several_ports() {
    let mut c = Controller::new(1);
    c.add_vip(&vip("10.96.1.0/24", Protocol::Any, 80, 8080, 0)).unwrap();
    c.add_vip(&vip("10.96.1.0/24", Protocol::Any, 443, 8443, 0)).unwrap();
    c.add_pods(&all_ports("10.96.1.0/24"), &[(ip("10.1.0.1"), 1)]).unwrap();
    let mut w = c.worker(0).unwrap();
    for (host, port, target) in [(1u8, 80u16, 8080u16), (200, 443, 8443), (255, 80, 8080)] {
        let (v, out) =
            run(&mut w, v4(proto::TCP, [1, 1, 1, 1], 5, [10, 96, 1, host], port), Capture::Prefix(0), 1);
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
        assert_eq!(parse(&out).unwrap().dst_port, target);
    }
}

/// Flow entries keep no VIP index: when an address moves to another
/// Service (here a more specific VIP over a prefix VIP), its established
/// flows move to the new Service's pods instead of staying on the old.
#[test]
fn flows_follow_an_address_to_its_new_service() {
    let mut c = Controller::new(1);
    c.add_vip(&vip("10.96.1.0/24", Protocol::Any, 80, 8080, 0)).unwrap();
    c.add_pods(&all_ports("10.96.1.0/24"), &[(ip("10.1.0.1"), 1)]).unwrap();
    let mut w = c.worker(0).unwrap();
    let wide = Capture::Prefix(c.prefix_index(&"10.96.1.0/24".parse().unwrap()).unwrap());
    let flow = || v4(proto::TCP, [1, 1, 1, 1], 5, [10, 96, 1, 7], 80);
    let (v, _) = run(&mut w, flow(), wide, 1);
    assert_eq!(pod_of(&c, v), ip("10.1.0.1"));
    c.add_vip(&vip("10.96.1.7/32", Protocol::Any, 80, 9090, 0)).unwrap();
    c.add_pods(&all_ports("10.96.1.7/32"), &[(ip("10.1.0.2"), 1)]).unwrap();
    // The FIB now sends 10.96.1.7 to the /32's capture entry.
    let narrow = Capture::Prefix(c.prefix_index(&"10.96.1.7/32".parse().unwrap()).unwrap());
    let (v, out) = run(&mut w, flow(), narrow, 2);
    assert_eq!(pod_of(&c, v), ip("10.1.0.2"));
    assert!(matches!(v, Verdict::Forward { outcome: FlowOutcome::New, .. }), "{v:?}");
    assert_eq!(parse(&out).unwrap().dst_port, 9090);
    let (v, _) = run(&mut w, flow(), narrow, 3);
    assert!(matches!(v, Verdict::Forward { outcome: FlowOutcome::Hit, .. }), "{v:?}");
    assert_eq!(w.flows().live_entries(3), 1, "the entry moved, it was not duplicated");
}

#[test]
fn nodeport_reaches_the_same_pods() {
    let (c, mut w, _) = setup();
    let (v, out) =
        run(&mut w, v4(proto::TCP, [1, 2, 3, 4], 999, [192, 168, 1, 1], 30080), Capture::NodePort, 1);
    let p = parse(&out).unwrap();
    assert_eq!(p.dst_port, 8080);
    assert!(["10.1.0.1", "10.1.0.2", "10.1.0.3"].contains(&pod_of(&c, v).to_string().as_str()));
    let (v, _) =
        run(&mut w, v4(proto::TCP, [1, 2, 3, 4], 999, [192, 168, 1, 1], 30081), Capture::NodePort, 1);
    assert_eq!(v, Verdict::Drop(DropReason::NoVip));
}

/// A dual-stack Service: its IPv4 and IPv6 VIPs share one node port, and
/// NodePort traffic of each family reaches that family's pods.
#[test]
fn dual_stack_nodeport_goes_to_each_familys_pods() {
    let mut c = Controller::new(1);
    c.add_vip(&vip("10.96.0.10/32", Protocol::Tcp, 80, 8080, 30080)).unwrap();
    c.add_vip(&vip("2001:db8::10/128", Protocol::Tcp, 80, 8080, 30080)).unwrap();
    c.add_pods(&all_ports("10.96.0.10/32"), &[(ip("10.1.0.1"), 1)]).unwrap();
    c.add_pods(&all_ports("2001:db8::10/128"), &[(ip("fd00::1"), 1)]).unwrap();
    let mut w = c.worker(0).unwrap();
    let (v, _) =
        run(&mut w, v4(proto::TCP, [1, 2, 3, 4], 999, [192, 168, 1, 1], 30080), Capture::NodePort, 1);
    assert_eq!(pod_of(&c, v), ip("10.1.0.1"));
    let node6: [u8; 16] = ip("2001:db8:1::1").to_string().parse::<std::net::Ipv6Addr>().unwrap().octets();
    let client6: [u8; 16] = "2001:db8:2::2".parse::<std::net::Ipv6Addr>().unwrap().octets();
    let pkt = emit(&Spec::new(IpFamily::V6, proto::TCP, &client6, &node6, (999, 30080)).payload(b"x"));
    let (v, out) = run(&mut w, pkt, Capture::NodePort, 1);
    assert_eq!(pod_of(&c, v), ip("fd00::1"));
    assert_eq!(verify(&out), Ok(()));
}

#[test]
fn pod_removal_keeps_flows_flush_ends_them_and_gc_frees() {
    let (mut c, mut w, cap) = setup();
    let target = all_ports("10.96.0.10/32");
    // Find a flow on 10.1.0.1.
    let mut pkt = None;
    for sport in 1000..2000 {
        let p = v4(proto::TCP, [9, 9, 9, 9], sport, [10, 96, 0, 10], 80);
        let (v, _) = run(&mut w, p.clone(), cap, 1);
        if pod_of(&c, v) == ip("10.1.0.1") {
            pkt = Some(p);
            break;
        }
    }
    let pkt = pkt.unwrap();
    let idx = c.pod_index(0, &ip("10.1.0.1")).unwrap();
    assert!(c.refs().sum(idx) >= 1);

    c.del_pods(&target, &[ip("10.1.0.1")], false).unwrap();
    let (v, _) = run(&mut w, pkt.clone(), cap, 2);
    assert_eq!(pod_of(&c, v), ip("10.1.0.1"), "established flow stays on the draining pod");
    // New flows avoid it.
    for sport in 3000..3200 {
        let (v, _) = run(&mut w, v4(proto::TCP, [9, 9, 9, 8], sport, [10, 96, 0, 10], 80), cap, 2);
        assert_ne!(pod_of(&c, v), ip("10.1.0.1"));
    }
    assert_eq!(c.collect_garbage(), 0, "still referenced");
    assert_eq!(c.cell().load().pods[idx as usize].state, PodState::Draining);

    // Re-add (same index, flows carry on), delete again, then flush the
    // draining pod: the flow moves at once.
    c.add_pods(&target, &[(ip("10.1.0.1"), 1)]).unwrap();
    assert_eq!(c.pod_index(0, &ip("10.1.0.1")), Some(idx), "revived, same index");
    c.del_pods(&target, &[ip("10.1.0.1")], false).unwrap();
    assert!(c.del_pods(&target, &[ip("10.1.0.1")], false).is_err(), "already deleted");
    c.del_pods(&target, &[ip("10.1.0.1")], true).unwrap();
    assert!(c.del_pods(&target, &[ip("10.1.0.1")], true).is_err(), "already flushed");
    let (v, _) = run(&mut w, pkt.clone(), cap, 3);
    assert_ne!(pod_of(&c, v), ip("10.1.0.1"));
    // Sweeps run each batch; the flushed pod's references drain to 0.
    let sweeps = w.flows().n_buckets() / kp_plugin::dataplane::SWEEP_PER_BATCH + 1;
    for now in 4..(4 + sweeps) {
        run(&mut w, v4(proto::UDP, [1, 1, 1, 1], 1, [10, 96, 0, 10], 1), cap, now);
        if c.refs().sum(idx) == 0 {
            break;
        }
    }
    assert_eq!(c.refs().sum(idx), 0);
    assert_eq!(c.collect_garbage(), 1);
    assert_eq!(c.pod_index(0, &ip("10.1.0.1")), None);
    assert_eq!(c.cell().load().pods[idx as usize].state, PodState::Free);
}

#[test]
fn idle_flows_expire_and_release_their_pods() {
    let (mut c, mut w, cap) = setup();
    c.set_flow(None, Some(5)).unwrap();
    for sport in 0..50 {
        run(&mut w, v4(proto::TCP, [9, 9, 9, 9], sport, [10, 96, 0, 10], 80), cap, 1);
    }
    let total = |c: &Controller| (0..3).map(|p| c.refs().sum(p)).sum::<i64>();
    assert_eq!(total(&c), 50);
    assert_eq!(w.flows().live_entries(1), 50);
    // Past the timeout, sweeping releases every reference.
    let sweeps = w.flows().n_buckets() / kp_plugin::dataplane::SWEEP_PER_BATCH + 1;
    for now in 10..(10 + sweeps) {
        run(&mut w, v4(proto::UDP, [1, 1, 1, 1], 1, [10, 96, 0, 10], 1), cap, now);
    }
    assert_eq!(total(&c), 0);
    c.del_pods(&all_ports("10.96.0.10/32"), &[ip("10.1.0.2")], false).unwrap();
    assert_eq!(c.collect_garbage(), 1, "unreferenced draining pod is freed at once");
}

#[test]
fn vip_delete_stops_traffic_and_frees_state() {
    let (mut c, mut w, cap) = setup();
    // (Flows outlive the test's ticks: only the deletion may end them.)
    c.set_flow(Some(1024), Some(3600)).unwrap();
    run(&mut w, v4(proto::TCP, [9, 9, 9, 9], 7, [10, 96, 0, 10], 80), cap, 1);
    let (v, _) = run(&mut w, v4(proto::TCP, [9, 9, 9, 9], 7, [10, 96, 0, 10], 80), cap, 1);
    // A pod deleted earlier, still draining with this flow, ends with the
    // VIP too.
    c.del_pods(&all_ports("10.96.0.10/32"), &[pod_of(&c, v)], false).unwrap();
    assert_eq!(c.draining_pods().count(), 1);
    let key = VipKey { prefix: "10.96.0.10/32".parse().unwrap(), protocol: Protocol::Any, port: 80 };
    c.del_vip(&key).unwrap();
    let (v, _) = run(&mut w, v4(proto::TCP, [9, 9, 9, 9], 7, [10, 96, 0, 10], 80), cap, 2);
    assert_eq!(v, Verdict::Drop(DropReason::NoVip));
    // One whole sweep of the table.
    let sweeps = w.flows().n_buckets() / kp_plugin::dataplane::SWEEP_PER_BATCH + 1;
    for now in 3..(3 + sweeps) {
        run(&mut w, v4(proto::UDP, [1, 1, 1, 1], 1, [10, 96, 0, 10], 1), cap, now);
    }
    assert_eq!(c.collect_garbage(), 3);
    assert_eq!(c.draining_pods().count(), 0);
    // The VIP index is reusable now.
    assert_eq!(c.add_vip(&vip("10.96.0.11/32", Protocol::Any, 80, 80, 0)).unwrap(), 0);
}

/// With no traffic at all, `sweep_idle` (run by kp's periodic upkeep) is
/// what releases a deleted VIP's flows, so its pods can be freed.
#[test]
fn idle_sweep_releases_flows_without_traffic() {
    let (mut c, mut w, cap) = setup();
    for sport in 0..20 {
        run(&mut w, v4(proto::TCP, [9, 9, 9, 9], sport, [10, 96, 0, 10], 80), cap, 1);
    }
    let key = VipKey { prefix: "10.96.0.10/32".parse().unwrap(), protocol: Protocol::Any, port: 80 };
    c.del_vip(&key).unwrap();
    assert_eq!(c.collect_garbage(), 0, "the flows still hold their pods");
    let buckets = w.flows().n_buckets();
    // Half the table, then the rest: the sweep goes on where it stopped.
    w.sweep_idle(buckets / 2, 2);
    w.sweep_idle(buckets - buckets / 2, 2);
    assert_eq!(c.collect_garbage(), 3);
    assert_eq!(w.flows().live_entries(2), 0);
}

#[test]
fn ipv6_nat66() {
    let mut c = Controller::new(1);
    c.add_vip(&vip("2001:db8::/120", Protocol::Any, 80, 8080, 0)).unwrap();
    c.add_pods(&all_ports("2001:db8::/120"), &[(ip("fd00::1"), 1), (ip("fd00::2"), 1)]).unwrap();
    let mut w = c.worker(0).unwrap();
    let mut dst = [0u8; 16];
    dst[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    dst[15] = 0x42;
    let src = [0xfe; 16];
    for protocol in [proto::TCP, proto::UDP] {
        let pkt = emit(&Spec::new(IpFamily::V6, protocol, &src, &dst, (5555, 80)).payload(b"v6"));
        let (v, out) = run(&mut w, pkt, Capture::Prefix(0), 1);
        let p = parse(&out).unwrap();
        assert_eq!(IpAddr::from(p.dst), pod_of(&c, v));
        assert_eq!(p.dst_port, 8080);
        assert_eq!(verify(&out), Ok(()));
    }
}

fn xlat_setup(nat: NatType, prefix: &str, pods: &[&str], threads: usize) -> Controller {
    let mut c = Controller::new(threads);
    c.set_xlat(&XlatChange {
        nat46_prefix: Some(Rfc6052Prefix::new("2001:db8:46::".parse().unwrap(), 96).unwrap()),
        nat64_sources: Some(vec!["192.0.2.1".parse().unwrap()]),
        nat64_ports: Some((40000, 40063)),
    })
    .unwrap();
    let mut s = vip(prefix, Protocol::Any, 80, 8080, 30080);
    s.nat = Some(nat);
    c.add_vip(&s).unwrap();
    let pods: Vec<(IpAddr, u32)> = pods.iter().map(|p| (ip(p), 1)).collect();
    c.add_pods(&all_ports(prefix), &pods).unwrap();
    c
}

/// A batch that says which family its packets come in (as a VPP node of
/// one family's arc does) is handled exactly as one that says nothing,
/// even for packets of the other family: the hint only skips the other
/// fast lane's test. Every NAT type, new flows then established ones, and
/// packets the fast lanes leave to the general path (IPv4 options).
#[test]
fn a_batchs_family_hint_changes_no_verdict_and_no_byte() {
    let services = [
        ("2001:db8:64::10/128", Some(NatType::Nat64), "198.51.100.5"),
        ("10.96.0.10/32", None, "198.51.100.4"),
        ("10.96.0.46/32", Some(NatType::Nat46), "2001:db8:6::1"),
        ("2001:db8:66::10/128", Some(NatType::Nat66), "2001:db8:6::2"),
    ];
    let setup = || {
        let mut c = xlat_setup(NatType::Nat64, services[0].0, &[services[0].2], 1);
        for (prefix, nat, pod) in &services[1..] {
            let mut s = vip(prefix, Protocol::Any, 80, 8080, 0);
            s.nat = *nat;
            c.add_vip(&s).unwrap();
            c.add_pods(&all_ports(prefix), &[(ip(pod), 1)]).unwrap();
        }
        let w = c.worker(0).unwrap();
        (c, w)
    };
    let options = [1u8; 8];
    let packets = |c: &Controller| -> Vec<(Vec<u8>, Capture)> {
        (0..16u16)
            .map(|f| {
                let (prefix, _, _) = services[usize::from(f % 4)];
                let net: kp_plugin::config::IpPrefix = prefix.parse().unwrap();
                let capture = Capture::Prefix(c.prefix_index(&net).unwrap());
                let protocol = if f % 8 < 4 { proto::UDP } else { proto::TCP };
                let pkt = match net.addr() {
                    IpAddr::V4(dst) => {
                        let mut spec = Spec::new(
                            IpFamily::V4,
                            protocol,
                            &[198, 51, 100, 9],
                            &dst.octets(),
                            (4000 + f, 80),
                        )
                        .payload(b"hello kp");
                        if f >= 12 {
                            spec.ipv4_options = &options;
                        }
                        emit(&spec)
                    }
                    IpAddr::V6(dst) => {
                        let src = "2001:db8:c::9".parse::<std::net::Ipv6Addr>().unwrap().octets();
                        emit(
                            &Spec::new(IpFamily::V6, protocol, &src, &dst.octets(), (4000 + f, 80))
                                .payload(b"hello kp"),
                        )
                    }
                };
                (pkt, capture)
            })
            .collect()
    };
    let rounds = |family: Option<IpFamily>| {
        let (c, mut w) = setup();
        (1..=3)
            .map(|now| {
                let mut b = VecBatch { family, ..Default::default() };
                for (pkt, capture) in packets(&c) {
                    b.push(pkt, capture);
                }
                let mut v = vec![Verdict::Drop(DropReason::NoVip); b.packets.len()];
                w.process(&mut b, now, &mut v);
                (v, b.packets)
            })
            .collect::<Vec<_>>()
    };
    let unhinted = rounds(None);
    for (now, (verdicts, out)) in unhinted.iter().enumerate() {
        for (v, pkt) in verdicts.iter().zip(out) {
            let Verdict::Forward { outcome, .. } = v else { panic!("round {now}: {v:?}") };
            assert_eq!(*outcome == FlowOutcome::Hit, now > 0, "round {now}");
            assert_eq!(verify(pkt), Ok(()));
            assert_eq!(parse(pkt).unwrap().dst_port, 8080);
        }
    }
    for family in [IpFamily::V4, IpFamily::V6] {
        assert_eq!(rounds(Some(family)), unhinted, "hinted {family:?}");
    }
}

#[test]
fn nat46_translates_both_ways_with_valid_checksums() {
    let c = xlat_setup(NatType::Nat46, "192.0.2.10/32", &["2001:db8:b::1", "2001:db8:b::2"], 2);
    let (mut w0, mut w1) = (c.worker(0).unwrap(), c.worker(1).unwrap());
    for protocol in [proto::TCP, proto::UDP] {
        let mut spec = Spec::new(IpFamily::V4, protocol, &[198, 51, 100, 7], &[192, 0, 2, 10], (40000, 80));
        spec.ipv4_options = &[1, 1, 1, 1]; // NOPs: dropped by the translation
        spec = spec.payload(b"hello kp");
        let (v, out) = run(&mut w0, emit(&spec), Capture::Prefix(0), 1);
        assert!(matches!(v, Verdict::Forward { outcome: FlowOutcome::New, .. }), "{v:?}");
        let p = parse(&out).unwrap();
        assert_eq!(p.family, IpFamily::V6);
        assert_eq!(IpAddr::from(p.dst), pod_of(&c, v));
        assert_eq!(p.dst_port, 8080);
        assert_eq!(IpAddr::from(p.src), ip("2001:db8:46::198.51.100.7"));
        assert_eq!(p.src_port, 40000);
        assert_eq!(out[7], 64, "hop limit from the TTL");
        assert_eq!(out.len(), 40 + p.l4_len as usize);
        assert_eq!(verify(&out), Ok(()));
        // The pod's reply, on the other worker, is the client's IPv4 packet
        // from the VIP.
        let (rv, back) = run_replies(&mut w1, vec![reply_to(&out)]);
        assert!(matches!(rv[0], ReplyVerdict::TranslatedTo { vip: 0, v6: false }), "{rv:?}");
        let r = parse(&back[0]).unwrap();
        assert_eq!(r.family, IpFamily::V4);
        assert_eq!((&r.src[..4], r.src_port), (&[192u8, 0, 2, 10][..], 80));
        assert_eq!((&r.dst[..4], r.dst_port), (&[198u8, 51, 100, 7][..], 40000));
        assert_eq!(&back[0][6..8], &[0x40, 0], "don't fragment");
        assert_eq!(verify(&back[0]), Ok(()));
    }
    // An IPv4 UDP datagram without a checksum gets one (IPv6 needs it).
    let mut spec = Spec::new(IpFamily::V4, proto::UDP, &[198, 51, 100, 8], &[192, 0, 2, 10], (5000, 80));
    spec.udp_no_checksum = true;
    let (_, out) = run(&mut w0, emit(&spec.payload(b"no checksum")), Capture::Prefix(0), 1);
    assert_ne!(&out[46..48], &[0, 0]);
    assert_eq!(verify(&out), Ok(()));
}

/// An established nat46 flow's packets take the fast lane: each comes out
/// exactly as the same packet did when it opened the flow (full and
/// offloaded checksums, TCP and UDP; a UDP datagram without a checksum
/// gets one computed either way), and a flushed pod's flow moves on to a
/// live pod rather than reaching the gone one.
#[test]
fn nat46_established_flows_translate_as_their_first_packet() {
    let mut c = xlat_setup(NatType::Nat46, "192.0.2.10/32", &["2001:db8:b::1", "2001:db8:b::2"], 1);
    let mut w = c.worker(0).unwrap();
    let mut sport = 41000;
    for protocol in [proto::TCP, proto::UDP] {
        for (partial, no_checksum) in [(false, false), (true, false), (false, true)] {
            if no_checksum && protocol == proto::TCP {
                continue;
            }
            sport += 1;
            let mut spec =
                Spec::new(IpFamily::V4, protocol, &[198, 51, 100, 9], &[192, 0, 2, 10], (sport, 80));
            spec.udp_no_checksum = no_checksum;
            let mut pkt = emit(&spec.payload(b"established"));
            pkt[8] = 33; // TTL, and the header checksum to match
            pkt[10..12].fill(0);
            let c = checksum::checksum(&pkt[..20]);
            pkt[10..12].copy_from_slice(&c.to_be_bytes());
            let send = |w: &mut Worker| {
                let mut b = VecBatch::default();
                b.push_chained(&pkt, pkt.len(), partial, Capture::Prefix(0));
                let mut v = [Verdict::Drop(DropReason::NoVip); 1];
                w.process(&mut b, 1, &mut v);
                (v[0], b.packets.pop().unwrap())
            };
            let (first, want) = send(&mut w);
            assert!(matches!(first, Verdict::Forward { outcome: FlowOutcome::New, .. }), "{first:?}");
            let (then, got) = send(&mut w);
            assert!(matches!(then, Verdict::Forward { outcome: FlowOutcome::Hit, .. }), "{then:?}");
            assert_eq!(got, want, "protocol {protocol} partial {partial} no checksum {no_checksum}");
            if !partial {
                assert_eq!(verify(&got), Ok(()));
            }
            assert_eq!(got[7], 33, "hop limit from the TTL");
        }
    }
    // The flow of the last packet, its pod flushed: it goes on to the other.
    let spec = Spec::new(IpFamily::V4, proto::TCP, &[198, 51, 100, 9], &[192, 0, 2, 10], (sport + 1, 80));
    let pkt = emit(&spec.payload(b"moving"));
    let (v, _) = run(&mut w, pkt.clone(), Capture::Prefix(0), 1);
    let gone = pod_of(&c, v);
    c.del_pods(&all_ports("192.0.2.10/32"), &[gone], true).unwrap();
    let (v, out) = run(&mut w, pkt, Capture::Prefix(0), 2);
    assert!(matches!(v, Verdict::Forward { outcome: FlowOutcome::New, .. }), "{v:?}");
    assert_ne!(pod_of(&c, v), gone);
    assert_eq!(IpAddr::from(parse(&out).unwrap().dst), pod_of(&c, v));
    assert_eq!(verify(&out), Ok(()));
}

/// A worker's flow table holds no IPv6 key array (3 cache lines a bucket)
/// while there are only IPv4 VIPs; with an IPv6 VIP it gets one, even one
/// added after the worker started, and IPv6 flows are tracked.
#[test]
fn ipv6_key_arrays_come_with_ipv6_vips() {
    let mut c = Controller::new(1);
    c.add_vip(&vip("192.0.2.10/32", Protocol::Any, 80, 8080, 0)).unwrap();
    c.add_pods(&all_ports("192.0.2.10/32"), &[(ip("198.51.100.1"), 1)]).unwrap();
    let mut w = c.worker(0).unwrap();
    let pkt = emit(&Spec::new(IpFamily::V4, proto::TCP, &[203, 0, 113, 1], &[192, 0, 2, 10], (1000, 80)));
    let (v, _) = run(&mut w, pkt, Capture::Prefix(0), 1);
    assert!(matches!(v, Verdict::Forward { outcome: FlowOutcome::New, .. }), "{v:?}");
    assert!(!w.flows().has_keys(), "IPv4 only: no key array");
    c.add_vip(&vip("2001:db8::10/128", Protocol::Any, 80, 8080, 0)).unwrap();
    c.add_pods(&all_ports("2001:db8::10/128"), &[(ip("2001:db8:b::1"), 1)]).unwrap();
    let client = [0x20, 0x01, 0x0d, 0xb8, 0, 0xc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let vip6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
    let pkt = emit(&Spec::new(IpFamily::V6, proto::UDP, &client, &vip6, (1000, 80)).payload(b"six"));
    let (v, _) = run(&mut w, pkt.clone(), Capture::Prefix(1), 2);
    assert!(matches!(v, Verdict::Forward { outcome: FlowOutcome::New, .. }), "{v:?}");
    assert!(w.flows().has_keys());
    let (v, _) = run(&mut w, pkt, Capture::Prefix(1), 2);
    assert!(matches!(v, Verdict::Forward { outcome: FlowOutcome::Hit, .. }), "tracked: {v:?}");
}

/// Established IPv6 flows (nat66 and nat64) take the IPv6 fast lane: each
/// packet comes out exactly as the same packet did when it opened the
/// flow, with full and offloaded checksums, any traffic class and hop
/// limit; one with an extension header takes the general lane to the
/// same pod.
/// What a trace shows of a packet, its destination before translation, is
/// there for every packet of a traced batch: new flows and hits, IPv4 and
/// IPv6, the address within a prefix VIP. Untraced, an IPv6 fast-lane
/// hit's key is never built, and the worker says it has none.
#[test]
fn traced_batches_keep_each_packets_original_destination() {
    let dst6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0x66, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42];
    let client6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0xc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    let cases = [
        (NatType::Nat44, "192.0.2.128/25", &["203.0.113.5"][..], 4),
        (NatType::Nat66, "2001:db8:66::/120", &["2001:db8:b::1"][..], 6),
        (NatType::Nat64, "2001:db8:66::/120", &["203.0.113.5"][..], 6),
    ];
    for (nat, prefix, pods, family) in cases {
        let c = xlat_setup(nat, prefix, pods, 1);
        let mut w = c.worker(0).unwrap();
        let mut want = [0u8; 16];
        let pkt = if family == 4 {
            want[..4].copy_from_slice(&[192, 0, 2, 200]);
            v4(proto::TCP, [198, 51, 100, 7], 7000, [192, 0, 2, 200], 80)
        } else {
            want = dst6;
            emit(&Spec::new(IpFamily::V6, proto::TCP, &client6, &dst6, (7000, 80)).payload(b"v6"))
        };
        for (now, tracing, outcome) in
            [(1, true, FlowOutcome::New), (2, true, FlowOutcome::Hit), (3, false, FlowOutcome::Hit)]
        {
            let mut b = VecBatch { tracing, ..Default::default() };
            b.push(pkt.clone(), Capture::Prefix(0));
            let mut v = [Verdict::Drop(DropReason::NoVip); 1];
            w.process(&mut b, now, &mut v);
            assert!(
                matches!(v[0], Verdict::Forward { outcome: o, .. } if o == outcome),
                "{nat:?} {:?}",
                v[0]
            );
            let shown = w.batch_original_dst(0);
            if tracing || family == 4 {
                assert_eq!(shown, Some((family, want, 80)), "{nat:?} at {now}");
            } else {
                assert_eq!(shown, None, "{nat:?} untraced");
            }
        }
    }
}

#[test]
fn ipv6_established_flows_translate_as_their_first_packet() {
    let vip6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0x66, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
    let client = [0x20, 0x01, 0x0d, 0xb8, 0, 0xc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    for (nat, pods) in [
        (NatType::Nat66, &["2001:db8:b::1", "2001:db8:b::2"][..]),
        (NatType::Nat64, &["198.51.100.5", "198.51.100.6"][..]),
    ] {
        let c = xlat_setup(nat, "2001:db8:66::10/128", pods, 1);
        let mut w = c.worker(0).unwrap();
        let mut sport = 6000;
        for protocol in [proto::TCP, proto::UDP] {
            for partial in [false, true] {
                sport += 1;
                let mut pkt =
                    emit(&Spec::new(IpFamily::V6, protocol, &client, &vip6, (sport, 80)).payload(b"v6"));
                pkt[0] = 0x6a; // traffic class 0xa5, a flow label
                pkt[1] = 0x5f;
                pkt[7] = 21; // hop limit
                let send = |w: &mut Worker, pkt: &[u8]| {
                    let mut b = VecBatch::default();
                    b.push_chained(pkt, pkt.len(), partial, Capture::Prefix(0));
                    let mut v = [Verdict::Drop(DropReason::NoVip); 1];
                    w.process(&mut b, 1, &mut v);
                    (v[0], b.packets.pop().unwrap())
                };
                let (first, want) = send(&mut w, &pkt);
                assert!(
                    matches!(first, Verdict::Forward { outcome: FlowOutcome::New, .. }),
                    "{nat:?} {first:?}"
                );
                let (then, got) = send(&mut w, &pkt);
                assert!(
                    matches!(then, Verdict::Forward { outcome: FlowOutcome::Hit, .. }),
                    "{nat:?} {then:?}"
                );
                assert_eq!(got, want, "{nat:?} protocol {protocol} partial {partial}");
                if !partial {
                    assert_eq!(verify(&got), Ok(()));
                }
                let p = parse(&got).unwrap();
                let dst = match p.family {
                    IpFamily::V4 => IpAddr::from([p.dst[0], p.dst[1], p.dst[2], p.dst[3]]),
                    IpFamily::V6 => IpAddr::from(p.dst),
                };
                assert_eq!(dst, pod_of(&c, then));
                assert_eq!(p.dst_port, 8080);
                // A hop-by-hop options header (8 bytes of padding) in front
                // of the transport header: the general lane, the same pod.
                let mut ext = pkt[..40].to_vec();
                ext[6] = 0;
                ext.extend_from_slice(&[protocol, 0, 1, 4, 0, 0, 0, 0]);
                ext.extend_from_slice(&pkt[40..]);
                let plen = (ext.len() - 40) as u16;
                ext[4..6].copy_from_slice(&plen.to_be_bytes());
                if !partial {
                    assert_eq!(verify(&ext), Ok(()), "the packet sent");
                }
                let (v, out) = send(&mut w, &ext);
                assert!(matches!(v, Verdict::Forward { outcome: FlowOutcome::Hit, .. }), "{nat:?} {v:?}");
                assert_eq!(pod_of(&c, v), pod_of(&c, then));
                if !partial {
                    assert_eq!(verify(&out), Ok(()), "{nat:?} protocol {protocol}");
                }
            }
        }
    }
}

#[test]
fn nat46_gso_partial_checksums_and_chains() {
    let c = xlat_setup(NatType::Nat46, "192.0.2.10/32", &["2001:db8:b::1"], 1);
    let mut w = c.worker(0).unwrap();
    let payload = vec![7u8; 3000];
    let whole = emit(
        &Spec::new(IpFamily::V4, proto::TCP, &[198, 51, 100, 7], &[192, 0, 2, 10], (40000, 80))
            .payload(&payload),
    );
    // The partial sum the sender left: the pseudo-header alone.
    let p = parse(&whole).unwrap();
    let mut partial = whole.clone();
    let ph =
        checksum::pseudo_header_v4(&[198, 51, 100, 7], &[192, 0, 2, 10], proto::TCP, u32::from(p.l4_len));
    partial[36..38].copy_from_slice(&checksum::fold(ph).to_be_bytes());
    let mut b = VecBatch::default();
    b.push_chained(&partial, 200, true, Capture::Prefix(0));
    let mut v = [Verdict::Drop(DropReason::NoVip); 1];
    w.process(&mut b, 1, &mut v);
    assert!(matches!(v[0], Verdict::Forward { .. }), "{v:?}");
    let head = &b.packets[0];
    assert_eq!(head.len(), 220, "the header grew by 20 bytes in the first buffer");
    let src: [u8; 16] = head[8..24].try_into().unwrap();
    let dst: [u8; 16] = head[24..40].try_into().unwrap();
    let want = checksum::fold(checksum::pseudo_header_v6(&src, &dst, proto::TCP, u32::from(p.l4_len)));
    assert_eq!(u16::from_be_bytes([head[56], head[57]]), want, "the partial sum is the new pseudo-header's");
    assert_eq!(u16::from_be_bytes([head[4], head[5]]), p.l4_len);
    // Without a checksum, a chained UDP datagram cannot get one: dropped.
    let mut spec = Spec::new(IpFamily::V4, proto::UDP, &[198, 51, 100, 7], &[192, 0, 2, 10], (40001, 80));
    spec.udp_no_checksum = true;
    let big = emit(&spec.payload(&payload));
    let mut b = VecBatch::default();
    b.push_chained(&big, 200, false, Capture::Prefix(0));
    w.process(&mut b, 1, &mut v);
    assert_eq!(v[0], Verdict::Drop(DropReason::Nat(NatError::ChecksumNeedsWholeDatagram)));
}

#[test]
fn nat64_binds_source_ports_and_maps_replies_back() {
    let c = xlat_setup(NatType::Nat64, "2001:db8:64::10/128", &["198.51.100.5"], 2);
    let (mut w0, mut w1) = (c.worker(0).unwrap(), c.worker(1).unwrap());
    let client = ip("2001:db8:c::7");
    let IpAddr::V6(c6) = client else { panic!() };
    let vip6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0x64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
    for protocol in [proto::TCP, proto::UDP] {
        let pkt =
            emit(&Spec::new(IpFamily::V6, protocol, &c6.octets(), &vip6, (5555, 80)).payload(b"v6 to v4"));
        let (v, out) = run(&mut w0, pkt.clone(), Capture::Prefix(0), 1);
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
        let p = parse(&out).unwrap();
        assert_eq!(p.family, IpFamily::V4);
        assert_eq!((&p.dst[..4], p.dst_port), (&[198u8, 51, 100, 5][..], 8080));
        assert_eq!(&p.src[..4], &[192, 0, 2, 1]);
        assert!((40000..40032).contains(&p.src_port), "thread 0's half of the ports: {}", p.src_port);
        assert_eq!(verify(&out), Ok(()));
        // The flow keeps its port.
        let (_, again) = run(&mut w0, pkt, Capture::Prefix(0), 2);
        assert_eq!(parse(&again).unwrap().src_port, p.src_port);
        // The reply, on the other worker, goes back to the client from the
        // VIP.
        let (rv, back) = run_replies(&mut w1, vec![reply_to(&out)]);
        assert!(matches!(rv[0], ReplyVerdict::TranslatedTo { vip: 0, v6: true }), "{rv:?}");
        let r = parse(&back[0]).unwrap();
        assert_eq!((IpAddr::from(r.src), r.src_port), (IpAddr::from(vip6), 80));
        assert_eq!((IpAddr::from(r.dst), r.dst_port), (client, 5555));
        assert_eq!(verify(&back[0]), Ok(()));
    }
    // A packet to the source address at a port with no flow is not a reply.
    let stray = v4(proto::TCP, [198, 51, 100, 5], 8080, [192, 0, 2, 1], 40031);
    let (rv, out) = run_replies(&mut w1, vec![stray.clone()]);
    assert_eq!(rv[0], ReplyVerdict::NotKp);
    assert_eq!(out[0], stray);
}

#[test]
fn nat64_port_exhaustion_refuses_new_flows_only() {
    let c = xlat_setup(NatType::Nat64, "2001:db8:64::10/128", &["198.51.100.5"], 1);
    let mut w = c.worker(0).unwrap();
    let vip6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0x64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
    let flow = |n: u16| {
        emit(&Spec::new(
            IpFamily::V6,
            proto::UDP,
            &[0x20, 1, 0xd, 0xb8, 0, 0xc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7],
            &vip6,
            (n, 80),
        ))
    };
    let mut ports = HashMap::new();
    for n in 0..64 {
        let (v, out) = run(&mut w, flow(1000 + n), Capture::Prefix(0), 1);
        assert!(matches!(v, Verdict::Forward { .. }), "flow {n}: {v:?}");
        ports.insert(n, parse(&out).unwrap().src_port);
    }
    assert_eq!(ports.values().collect::<std::collections::HashSet<_>>().len(), 64);
    let (v, _) = run(&mut w, flow(2000), Capture::Prefix(0), 2);
    assert_eq!(v, Verdict::Drop(DropReason::Nat(NatError::PortsExhausted)));
    for n in 0..64 {
        let (_, out) = run(&mut w, flow(1000 + n), Capture::Prefix(0), 3);
        assert_eq!(parse(&out).unwrap().src_port, ports[&n], "an established flow keeps its port");
    }
    // Idle past the timeout (40 s) and the note's trust (10 s more) since
    // their bindings were last confirmed (at 1, when they were made: at 3
    // their notes were fresh), the ports are free for new flows; not
    // before.
    let (v, _) = run(&mut w, flow(2000), Capture::Prefix(0), 1 + 49);
    assert_eq!(v, Verdict::Drop(DropReason::Nat(NatError::PortsExhausted)));
    let (v, _) = run(&mut w, flow(2000), Capture::Prefix(0), 1 + 50);
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
}

/// A nat64 flow that trusts its note confirms its binding only every 11
/// ticks (at a 40 s timeout), yet the binding outlives the flow: a flow
/// with packets at ticks 1..=15 (confirmed at 1 and 12) holds its port
/// until its entry expires at 55 — at 54 the pool's 63 other ports go to
/// new flows, the 64th new flow is refused and the flow's replies still
/// map back. (When ports return: `nat64_port_exhaustion_refuses_new_flows_only`.)
#[test]
fn nat64_binding_outlives_its_flow_between_confirmations() {
    let c = xlat_setup(NatType::Nat64, "2001:db8:64::10/128", &["198.51.100.5"], 1);
    let mut w = c.worker(0).unwrap();
    let vip6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0x64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
    let client = [0x20, 1, 0xd, 0xb8, 0, 0xc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    let flow = |n: u16| emit(&Spec::new(IpFamily::V6, proto::UDP, &client, &vip6, (n, 80)).payload(b"x"));
    let (_, first) = run(&mut w, flow(999), Capture::Prefix(0), 1);
    let port = parse(&first).unwrap().src_port;
    for now in 1..=15 {
        let (v, out) = run(&mut w, flow(999), Capture::Prefix(0), now);
        assert!(matches!(v, Verdict::Forward { outcome: FlowOutcome::Hit, .. }), "tick {now}: {v:?}");
        assert_eq!(parse(&out).unwrap().src_port, port, "tick {now}");
    }
    for n in 0..63 {
        let (v, out) = run(&mut w, flow(2000 + n), Capture::Prefix(0), 54);
        assert!(matches!(v, Verdict::Forward { .. }), "flow {n}: {v:?}");
        assert_ne!(parse(&out).unwrap().src_port, port, "flow {n} took the live flow's port");
    }
    let (v, _) = run(&mut w, flow(3000), Capture::Prefix(0), 54);
    assert_eq!(v, Verdict::Drop(DropReason::Nat(NatError::PortsExhausted)));
    let mut b = VecBatch::default();
    b.push(reply_to(&first), Capture::Prefix(0));
    let mut rv = [ReplyVerdict::NotKp; 1];
    w.process_replies(&mut b, 54, &mut rv);
    assert!(matches!(rv[0], ReplyVerdict::TranslatedTo { v6: true, .. }), "replies at 54: {rv:?}");
}

/// An established nat64 flow reads its binding once in a while (the note
/// beside its key covers up to 10 ticks at a 40 s timeout), yet the binding lives as
/// long as the flow has packets: replies still map back and no new flow
/// takes its port, long after the binding's first stamp would have
/// expired. A new pool (after the VIP was removed and added back) gives
/// the flow a source of the new pool at once, within the same tick.
#[test]
fn nat64_established_flows_keep_their_binding_live_across_ticks() {
    let c = xlat_setup(NatType::Nat64, "2001:db8:64::10/128", &["198.51.100.5"], 1);
    let mut c = c;
    let mut w = c.worker(0).unwrap();
    let vip6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0x64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
    let client = [0x20, 1, 0xd, 0xb8, 0, 0xc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    let flow = |n: u16| emit(&Spec::new(IpFamily::V6, proto::UDP, &client, &vip6, (n, 80)).payload(b"x"));
    let (v, first) = run(&mut w, flow(999), Capture::Prefix(0), 1);
    assert!(matches!(v, Verdict::Forward { outcome: FlowOutcome::New, .. }), "{v:?}");
    let port = parse(&first).unwrap().src_port;
    // Ticks 30 s apart (the timeout is 40 s), several packets in each.
    for now in [1, 1, 1, 30, 30, 59, 88, 88] {
        let (v, out) = run(&mut w, flow(999), Capture::Prefix(0), now);
        assert!(matches!(v, Verdict::Forward { outcome: FlowOutcome::Hit, .. }), "tick {now}: {v:?}");
        let p = parse(&out).unwrap();
        assert_eq!((&p.src[..4], p.src_port), (&[192u8, 0, 2, 1][..], port), "tick {now}");
        assert_eq!(verify(&out), Ok(()));
    }
    let mut b = VecBatch::default();
    b.push(reply_to(&first), Capture::Prefix(0));
    let mut rv = [ReplyVerdict::NotKp; 1];
    w.process_replies(&mut b, 88, &mut rv);
    assert!(
        matches!(rv[0], ReplyVerdict::TranslatedTo { v6: true, .. }),
        "the binding is live at 88: {rv:?}"
    );
    // The other 63 ports go to new flows; then the pool is full: the
    // flow's port was not given away.
    for n in 0..63 {
        let (v, out) = run(&mut w, flow(2000 + n), Capture::Prefix(0), 88);
        assert!(matches!(v, Verdict::Forward { .. }), "flow {n}: {v:?}");
        assert_ne!(parse(&out).unwrap().src_port, port);
    }
    let (v, _) = run(&mut w, flow(3000), Capture::Prefix(0), 88);
    assert_eq!(v, Verdict::Drop(DropReason::Nat(NatError::PortsExhausted)));

    // A new pool: the VIP goes, the pool changes, the VIP comes back.
    let key = VipKey { prefix: "2001:db8:64::10/128".parse().unwrap(), protocol: Protocol::Any, port: 80 };
    c.del_vip(&key).unwrap();
    c.set_xlat(&XlatChange { nat64_sources: Some(vec!["192.0.2.2".parse().unwrap()]), ..Default::default() })
        .unwrap();
    let mut s = vip("2001:db8:64::10/128", Protocol::Any, 80, 8080, 30080);
    s.nat = Some(NatType::Nat64);
    c.add_vip(&s).unwrap();
    c.add_pods(&all_ports("2001:db8:64::10/128"), &[(ip("198.51.100.5"), 1)]).unwrap();
    for _ in 0..2 {
        let (v, out) = run(&mut w, flow(999), Capture::Prefix(0), 88);
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
        assert_eq!(&parse(&out).unwrap().src[..4], &[192u8, 0, 2, 2], "a source of the new pool");
        assert_eq!(verify(&out), Ok(()));
        // ... that is the flow's binding there (not what its note in the
        // old pool's layout would name): its replies map back.
        let (rv, back) = run_replies(&mut w, vec![reply_to(&out)]);
        assert!(matches!(rv[0], ReplyVerdict::TranslatedTo { v6: true, .. }), "{rv:?}");
        assert_eq!(&parse(&back[0]).unwrap().dst[..], &client[..]);
    }
}

#[test]
fn xlat_settings_are_validated_and_held_while_in_use() {
    let mut c = Controller::new(1);
    let mut s = vip("2001:db8:64::10/128", Protocol::Any, 80, 8080, 0);
    s.nat = Some(NatType::Nat64);
    let e = c.add_vip(&s).unwrap_err();
    assert!(e.to_string().contains("kp conf nat64 source"), "{e}");
    let bad = XlatChange { nat64_ports: Some((2000, 1000)), ..Default::default() };
    assert!(c.set_xlat(&bad).is_err());
    let good = XlatChange { nat64_sources: Some(vec!["192.0.2.1".parse().unwrap()]), ..Default::default() };
    c.set_xlat(&good).unwrap();
    c.add_vip(&s).unwrap();
    let change = XlatChange { nat64_sources: Some(vec![]), ..Default::default() };
    let e = c.set_xlat(&change).unwrap_err();
    assert!(e.to_string().contains("cannot change while VIP"), "{e}");
    assert_eq!(c.config().xlat.nat64_sources.len(), 1, "nothing changed");
    // One NAT type per VIP prefix.
    let mut other = vip("2001:db8:64::10/128", Protocol::Any, 81, 8080, 0);
    other.nat = Some(NatType::Nat66);
    assert!(c.add_vip(&other).unwrap_err().to_string().contains("needs a prefix of its own"));
}

#[test]
fn no_pod_is_a_counted_drop_and_full_buckets_forward_untracked() {
    let mut c = Controller::new(1);
    c.add_vip(&vip("10.96.0.10/32", Protocol::Any, 80, 8080, 0)).unwrap();
    // (Rejecting instead: `no_endpoints_reject_as_kube_proxy_does`.)
    c.set_reject(false);
    let mut w = c.worker(0).unwrap();
    let (v, _) = run(&mut w, v4(proto::TCP, [1, 1, 1, 1], 1, [10, 96, 0, 10], 80), Capture::Prefix(0), 1);
    assert_eq!(v, Verdict::Drop(DropReason::NoPod));

    c.add_pods(&all_ports("10.96.0.10/32"), &[(ip("10.1.0.1"), 1)]).unwrap();
    c.set_flow(Some(16), None).unwrap();
    // 16 buckets x 3 slots: far more flows than that must still be forwarded.
    let mut untracked = 0;
    for i in 0..500u16 {
        let (v, out) =
            run(&mut w, v4(proto::TCP, [1, 1, 1, 1], i, [10, 96, 0, 10], 80), Capture::Prefix(0), 1);
        assert_eq!(verify(&out), Ok(()));
        match v {
            Verdict::Forward { outcome: FlowOutcome::Untracked, .. } => untracked += 1,
            Verdict::Forward { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(w.flows().n_buckets(), 16, "kp conf reached the worker");
    assert_eq!(untracked, 500 - 16 * kp_plugin::flowtable::ENTRIES_PER_BUCKET);
}

#[test]
fn shared_pod_between_two_services() {
    let mut c = Controller::new(1);
    c.add_vip(&vip("10.96.0.10/32", Protocol::Any, 80, 8080, 0)).unwrap();
    c.add_vip(&vip("10.96.0.20/32", Protocol::Any, 80, 8080, 0)).unwrap();
    for p in ["10.96.0.10/32", "10.96.0.20/32"] {
        c.add_pods(&all_ports(p), &[(ip("10.1.0.1"), 1)]).unwrap();
    }
    let mut w = c.worker(0).unwrap();
    let a = run(&mut w, v4(proto::TCP, [1, 1, 1, 1], 1, [10, 96, 0, 10], 80), Capture::Prefix(0), 1);
    let b = run(&mut w, v4(proto::TCP, [1, 1, 1, 1], 1, [10, 96, 0, 20], 80), Capture::Prefix(1), 1);
    let (Verdict::Forward { vip: va, pod: pa, .. }, Verdict::Forward { vip: vb, pod: pb, .. }) = (a.0, b.0)
    else {
        panic!()
    };
    assert_ne!(va, vb);
    assert_ne!(pa, pb, "one pod index per (VIP, pod): counters and lifetimes are per Service");
    assert_eq!(parse(&a.1).unwrap().dst, parse(&b.1).unwrap().dst);
}

/// The pod's reply to a translated packet.
fn reply_to(translated: &[u8]) -> Vec<u8> {
    let p = parse(translated).unwrap();
    let fam = p.family;
    let n = if fam == IpFamily::V4 { 4 } else { 16 };
    emit(&Spec::new(fam, p.protocol, &p.dst[..n], &p.src[..n], (p.dst_port, p.src_port)).payload(b"reply"))
}

fn run_replies(w: &mut Worker, pkts: Vec<Vec<u8>>) -> (Vec<ReplyVerdict>, Vec<Vec<u8>>) {
    let mut b = VecBatch::default();
    for p in pkts {
        b.push(p, Capture::Prefix(0));
    }
    let mut v = vec![ReplyVerdict::NotKp; b.len()];
    w.process_replies(&mut b, 1, &mut v);
    (v, b.packets)
}

#[test]
fn replies_are_translated_back_on_any_worker() {
    let mut c = Controller::new(2);
    c.add_vip(&vip("10.96.0.10/32", Protocol::Any, 80, 8080, 30080)).unwrap();
    c.add_pods(&all_ports("10.96.0.10/32"), &[(ip("10.1.0.1"), 1), (ip("10.1.0.2"), 1)]).unwrap();
    let mut w0 = c.worker(0).unwrap();
    let mut w1 = c.worker(1).unwrap();
    for protocol in [proto::TCP, proto::UDP] {
        let (_, fwd) =
            run(&mut w0, v4(protocol, [192, 168, 0, 5], 40000, [10, 96, 0, 10], 80), Capture::Prefix(0), 1);
        // The reply comes back on the other worker.
        let (v, out) = run_replies(&mut w1, vec![reply_to(&fwd)]);
        assert!(matches!(v[0], ReplyVerdict::Translated { vip: 0 }), "{v:?}");
        let p = parse(&out[0]).unwrap();
        assert_eq!((&p.src[..4], p.src_port), (&[10u8, 96, 0, 10][..], 80));
        assert_eq!((&p.dst[..4], p.dst_port), (&[192u8, 168, 0, 5][..], 40000));
        assert_eq!(verify(&out[0]), Ok(()));
    }
    // NodePort replies come back from the node address and NodePort.
    let (_, fwd) =
        run(&mut w0, v4(proto::TCP, [1, 2, 3, 4], 999, [192, 168, 1, 1], 30080), Capture::NodePort, 1);
    let (_, out) = run_replies(&mut w1, vec![reply_to(&fwd)]);
    let p = parse(&out[0]).unwrap();
    assert_eq!((&p.src[..4], p.src_port), (&[192u8, 168, 1, 1][..], 30080));
    // Traffic that is not a kp reply passes untouched.
    let other = v4(proto::TCP, [10, 1, 0, 1], 8080, [192, 168, 0, 99], 5555);
    let (v, out) = run_replies(&mut w1, vec![other.clone(), vec![0x45, 0, 0]]);
    assert_eq!(v, vec![ReplyVerdict::NotKp, ReplyVerdict::NotKp]);
    assert_eq!(out[0], other);
    assert_eq!(out[1], vec![0x45, 0, 0]);
}

#[test]
fn shared_pod_replies_go_back_to_the_right_service() {
    let mut c = Controller::new(1);
    c.add_vip(&vip("10.96.0.10/32", Protocol::Any, 80, 8080, 0)).unwrap();
    c.add_vip(&vip("10.96.0.20/32", Protocol::Any, 443, 8080, 0)).unwrap();
    for p in ["10.96.0.10/32", "10.96.0.20/32"] {
        c.add_pods(&all_ports(p), &[(ip("10.1.0.1"), 1)]).unwrap();
    }
    let mut w = c.worker(0).unwrap();
    let (_, a) = run(&mut w, v4(proto::TCP, [9, 9, 9, 9], 1111, [10, 96, 0, 10], 80), Capture::Prefix(0), 1);
    let (_, b) = run(&mut w, v4(proto::TCP, [9, 9, 9, 9], 2222, [10, 96, 0, 20], 443), Capture::Prefix(1), 1);
    let (_, out) = run_replies(&mut w, vec![reply_to(&b), reply_to(&a)]);
    let (rb, ra) = (parse(&out[0]).unwrap(), parse(&out[1]).unwrap());
    assert_eq!((&rb.src[..4], rb.src_port), (&[10u8, 96, 0, 20][..], 443));
    assert_eq!((&ra.src[..4], ra.src_port), (&[10u8, 96, 0, 10][..], 80));
}

#[test]
fn reply_state_ends_with_the_flow() {
    let (mut c, mut w, cap) = setup();
    let (v, fwd) = run(&mut w, v4(proto::UDP, [9, 9, 9, 9], 7, [10, 96, 0, 10], 80), cap, 1);
    let pod = pod_of(&c, v);
    c.del_pods(&all_ports("10.96.0.10/32"), &[pod], true).unwrap();
    // Sweeping drops the flushed flow and its reply state.
    let sweeps = w.flows().n_buckets() / kp_plugin::dataplane::SWEEP_PER_BATCH + 1;
    for now in 2..(2 + sweeps) {
        run(&mut w, v4(proto::UDP, [1, 1, 1, 1], 1, [10, 96, 0, 10], 1), cap, now);
    }
    let (v, _) = run_replies(&mut w, vec![reply_to(&fwd)]);
    assert_eq!(v[0], ReplyVerdict::NotKp);
    assert_eq!(c.cell().load().reverse.len(), 0);
}

#[test]
fn ipv6_replies() {
    let mut c = Controller::new(1);
    c.add_vip(&vip("2001:db8::/120", Protocol::Any, 80, 8080, 0)).unwrap();
    c.add_pods(&all_ports("2001:db8::/120"), &[(ip("fd00::1"), 1)]).unwrap();
    let mut w = c.worker(0).unwrap();
    let mut dst = [0u8; 16];
    dst[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    dst[15] = 0x42;
    let pkt = emit(&Spec::new(IpFamily::V6, proto::TCP, &[0xfe; 16], &dst, (5555, 80)).payload(b"v6"));
    let (_, fwd) = run(&mut w, pkt, Capture::Prefix(0), 1);
    let (v, out) = run_replies(&mut w, vec![reply_to(&fwd)]);
    assert!(matches!(v[0], ReplyVerdict::Translated { .. }));
    let p = parse(&out[0]).unwrap();
    assert_eq!((p.src, p.src_port), (dst, 80), "the exact prefix address the client used");
    assert_eq!(verify(&out[0]), Ok(()));
}

/// Every packet of a batch gets its own verdict, whatever its path (fast
/// hit, new flow, IPv6, no VIP, bad packet), so a reused verdict array
/// never leaks an earlier frame's answer.
#[test]
fn every_packet_gets_a_fresh_verdict() {
    let (mut c, mut w, cap) = setup();
    c.add_vip(&vip("fd00::10/128", Protocol::Any, 80, 8080, 0)).unwrap();
    c.add_pods(&all_ports("fd00::10/128"), &[(ip("fd01::1"), 1)]).unwrap();
    let cap6 = Capture::Prefix(c.prefix_index(&"fd00::10/128".parse().unwrap()).unwrap());
    let v6 = |sport: u16| {
        emit(&Spec::new(IpFamily::V6, proto::TCP, &ip6(1), &ip6(0x10), (sport, 80)).payload(b"x"))
    };
    let batch = |round: u16| {
        let mut b = VecBatch::default();
        for i in 0..40u16 {
            let sport = 1000 + i + round * 7 % 3;
            match i % 5 {
                0 => b.push(v6(sport), cap6),
                1 => b.push(v4(proto::UDP, [1, 1, 1, 1], sport, [10, 96, 0, 10], 81), cap),
                2 => b.push(vec![0x45; 10], cap),
                _ => b.push(v4(proto::TCP, [1, 1, 1, 1], sport, [10, 96, 0, 10], 80), cap),
            }
        }
        b
    };
    // A verdict no real packet gets here.
    let sentinel = Verdict::Forward { vip: 999, pod: 999, outcome: FlowOutcome::Untracked };
    for round in 0..3 {
        let mut b = batch(round);
        let mut v = [sentinel; 40];
        w.process(&mut b, 1 + u32::from(round), &mut v);
        assert!(v.iter().all(|&x| x != sentinel), "round {round}: {v:?}");
        assert!(v.iter().step_by(5).all(|x| matches!(x, Verdict::Forward { .. })), "IPv6 forwarded");
        assert!(v.iter().skip(3).step_by(5).all(|x| matches!(x, Verdict::Forward { .. })), "IPv4 forwarded");
    }
}

fn ip6(last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[15] = last;
    a
}

/// The pod-index limit is one constant: a pod at the highest index is
/// accepted and its flows are translated (reference counts, flow entries
/// and reply state all hold it); one more pod is refused with the limit
/// named, and nothing changes.
#[test]
fn pod_at_the_highest_index_carries_traffic_and_one_more_is_refused() {
    use kp_plugin::config::{ConfigError, MAX_POD_INDICES};
    let mut c = Controller::new(1);
    let mut big = vip("10.96.0.0/32", Protocol::Udp, 53, 5353, 0);
    big.new_len = Some(1 << 22);
    c.add_vip(&big).unwrap();
    // Every index but the last, on one VIP (addresses 10.0.0.0 up).
    let fill: Vec<(IpAddr, u32)> =
        (0..MAX_POD_INDICES - 1).map(|i| (IpAddr::from((0x0a00_0000u32 + i).to_be_bytes()), 1)).collect();
    c.add_pods(&all_ports("10.96.0.0/32"), &fill).unwrap();
    drop(fill);
    c.add_vip(&vip("10.96.0.10/32", Protocol::Any, 80, 8080, 0)).unwrap();
    c.add_pods(&all_ports("10.96.0.10/32"), &[(ip("192.0.2.7"), 1)]).unwrap();
    let vip_index =
        c.vip_index(&VipKey { prefix: "10.96.0.10/32".parse().unwrap(), protocol: Protocol::Any, port: 80 });
    let last = c.pod_index(vip_index.unwrap(), &ip("192.0.2.7")).unwrap();
    assert_eq!(last, MAX_POD_INDICES - 1);

    let mut w = c.worker(0).unwrap();
    let cap = Capture::Prefix(c.prefix_index(&"10.96.0.10/32".parse().unwrap()).unwrap());
    for now in [1, 2] {
        let (v, out) = run(&mut w, v4(proto::TCP, [198, 51, 100, 1], 40000, [10, 96, 0, 10], 80), cap, now);
        let want = if now == 1 { FlowOutcome::New } else { FlowOutcome::Hit };
        assert!(
            matches!(v, Verdict::Forward { pod, outcome, .. } if pod == last && outcome == want),
            "{v:?}"
        );
        let p = parse(&out).unwrap();
        assert_eq!((&p.dst[..4], p.dst_port), (&[192, 0, 2, 7][..], 8080));
        verify(&out).unwrap();
    }
    assert_eq!(c.refs().sum(last), 1);

    let before = c.config().clone();
    assert_eq!(
        c.add_pods(&all_ports("10.96.0.10/32"), &[(ip("192.0.2.8"), 1)]),
        Err(ConfigError::TooManyPods { max: MAX_POD_INDICES })
    );
    assert_eq!(c.config(), &before);
}

proptest::proptest! {
    /// `Worker::process` over random batches of a small set of flows (TCP
    /// and UDP, IPv4 and IPv6, the same new flow several times in one
    /// batch): every packet is translated to a pod of its VIP with correct
    /// checksums, a flow keeps its pod across and within batches, and the
    /// pods' reference counts equal the flows the table holds.
    #[test]
    fn worker_over_random_batches_keeps_flows_on_their_pods(
        batches in proptest::collection::vec(proptest::collection::vec(0u32..40, 1..64), 1..8),
    ) {
        let mut c = Controller::new(1);
        c.add_vip(&vip("10.96.0.10/32", Protocol::Any, 80, 8080, 0)).unwrap();
        c.add_vip(&vip("2001:db8::10/128", Protocol::Any, 80, 8080, 0)).unwrap();
        let pods4 = [ip("10.1.0.1"), ip("10.1.0.2"), ip("10.1.0.3")];
        let pods6 = [ip("2001:db8:1::1"), ip("2001:db8:1::2")];
        c.add_pods(&all_ports("10.96.0.10/32"), &pods4.map(|a| (a, 1))).unwrap();
        c.add_pods(&all_ports("2001:db8::10/128"), &pods6.map(|a| (a, 1))).unwrap();
        let mut w = c.worker(0).unwrap();
        let cap4 = Capture::Prefix(c.prefix_index(&"10.96.0.10/32".parse().unwrap()).unwrap());
        let cap6 = Capture::Prefix(c.prefix_index(&"2001:db8::10/128".parse().unwrap()).unwrap());
        let packet = |flow: u32| -> (Vec<u8>, Capture) {
            let protocol = if flow % 2 == 0 { proto::TCP } else { proto::UDP };
            let sport = 40000 + flow as u16;
            if flow % 4 < 2 {
                (v4(protocol, [198, 51, 100, (flow % 7) as u8], sport, [10, 96, 0, 10], 80), cap4)
            } else {
                let mut src = [0u8; 16];
                src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
                src[15] = (flow % 7) as u8;
                let dst: [u8; 16] = "2001:db8::10".parse::<std::net::Ipv6Addr>().unwrap().octets();
                let spec = Spec::new(IpFamily::V6, protocol, &src, &dst, (sport, 80)).payload(b"hello kp");
                (emit(&spec), cap6)
            }
        };
        let mut pod_of_flow: HashMap<u32, IpAddr> = HashMap::new();
        for (round, flows) in batches.iter().enumerate() {
            let mut b = VecBatch::default();
            for &f in flows {
                let (p, cap) = packet(f);
                b.push(p, cap);
            }
            let mut v = vec![Verdict::Drop(DropReason::NoVip); flows.len()];
            w.process(&mut b, 1 + round as u32, &mut v);
            for (i, &f) in flows.iter().enumerate() {
                let pod = pod_of(&c, v[i]);
                let out = &b.packets[i];
                verify(out).unwrap();
                let p = parse(out).unwrap();
                let dst = if p.family == IpFamily::V4 {
                    IpAddr::from([p.dst[0], p.dst[1], p.dst[2], p.dst[3]])
                } else {
                    IpAddr::from(p.dst)
                };
                proptest::prop_assert_eq!((dst, p.dst_port), (pod, 8080));
                let mine: &[IpAddr] = if f % 4 < 2 { &pods4 } else { &pods6 };
                proptest::prop_assert!(mine.contains(&pod));
                proptest::prop_assert_eq!(*pod_of_flow.entry(f).or_insert(pod), pod, "flow {} moved", f);
            }
        }
        let dp = c.cell().load();
        let refs: i64 = (0..dp.pods.len() as u32).map(|p| c.refs().sum(p)).sum();
        proptest::prop_assert_eq!(refs, pod_of_flow.len() as i64);
    }
}

/// A packet whose L4 checksum field holds what a sender with checksum
/// offload writes there: the pseudo-header sum, not complemented.
fn with_partial_checksum(mut pkt: Vec<u8>) -> Vec<u8> {
    let p = parse(&pkt).unwrap();
    let at = usize::from(p.l4_offset) + if p.protocol == proto::TCP { 16 } else { 6 };
    let len = u32::from(p.l4_len);
    let sum = match p.family {
        IpFamily::V4 => checksum::pseudo_header_v4(
            &p.src[..4].try_into().unwrap(),
            &p.dst[..4].try_into().unwrap(),
            p.protocol,
            len,
        ),
        IpFamily::V6 => checksum::pseudo_header_v6(&p.src, &p.dst, p.protocol, len),
    };
    pkt[at..at + 2].copy_from_slice(&checksum::fold(sum).to_be_bytes());
    pkt
}

/// Checks a packet whose L4 checksum is a partial sum: it must be the
/// pseudo-header sum of the packet's (new) addresses.
fn verify_partial(pkt: &[u8]) -> Result<(), String> {
    let again = with_partial_checksum(pkt.to_vec());
    if again == pkt {
        Ok(())
    } else {
        Err("the partial checksum does not match the new pseudo-header".into())
    }
}

/// Packets as VPP hands over jumbo frames and GSO super-frames: only the
/// first buffer is seen (the rest of the chain is never read), the length
/// is the chain's, the L4 checksum full or a partial (offload) sum. Both
/// directions, both families, TCP and UDP; and headers that do not fit in
/// the first buffer are a counted drop of their own.
#[test]
fn chained_and_offloaded_packets_are_translated_both_ways() {
    let mut c = Controller::new(1);
    c.add_vip(&vip("10.96.0.10/32", Protocol::Any, 80, 8080, 30080)).unwrap();
    c.add_pods(&all_ports("10.96.0.10/32"), &[(ip("10.1.0.1"), 1)]).unwrap();
    c.add_vip(&vip("2001:db8::10/128", Protocol::Any, 80, 8080, 30081)).unwrap();
    c.add_pods(&all_ports("2001:db8::10/128"), &[(ip("fd00::1"), 1)]).unwrap();
    let mut w = c.worker(0).unwrap();
    let payload: Vec<u8> = (0..60000u32).map(|i| (i * 7) as u8).collect();
    let clients: [(IpFamily, &[u8], &[u8]); 2] = [
        (IpFamily::V4, &[192, 168, 0, 5], &[10, 96, 0, 10]),
        (
            IpFamily::V6,
            &[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
            &[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10],
        ),
    ];
    let mut sport = 40000;
    for (family, client, vip_addr) in clients {
        let cap = Capture::Prefix(
            c.prefix_index(
                &if family == IpFamily::V4 { "10.96.0.10/32" } else { "2001:db8::10/128" }.parse().unwrap(),
            )
            .unwrap(),
        );
        for protocol in [proto::TCP, proto::UDP] {
            for partial in [false, true] {
                sport += 1;
                let mut whole =
                    emit(&Spec::new(family, protocol, client, vip_addr, (sport, 80)).payload(&payload));
                if partial {
                    whole = with_partial_checksum(whole);
                }
                let check = |pkt: &[u8]| if partial { verify_partial(pkt) } else { verify(pkt) };
                let head = 128;
                let mut b = VecBatch::default();
                b.push_chained(&whole, head, partial, cap);
                let mut v = [Verdict::Drop(DropReason::NoVip)];
                w.process(&mut b, 1, &mut v);
                assert!(
                    matches!(v[0], Verdict::Forward { outcome: FlowOutcome::New, .. }),
                    "{family:?} {protocol} partial {partial}: {v:?}"
                );
                // The first buffer, translated, followed by the untouched rest.
                let mut out = b.packets[0].clone();
                out.extend_from_slice(&whole[head..]);
                let p = parse(&out).unwrap();
                assert_eq!(p.dst_port, 8080);
                assert_eq!(
                    if family == IpFamily::V4 {
                        IpAddr::from([p.dst[0], p.dst[1], p.dst[2], p.dst[3]])
                    } else {
                        IpAddr::from(p.dst)
                    },
                    pod_of(&c, v[0])
                );
                assert_eq!(check(&out), Ok(()), "{family:?} {protocol} partial {partial}");

                // The pod's big reply, chained too, goes back from the VIP.
                let n = if family == IpFamily::V4 { 4 } else { 16 };
                let mut reply = emit(
                    &Spec::new(family, protocol, &p.dst[..n], &p.src[..n], (p.dst_port, p.src_port))
                        .payload(&payload),
                );
                if partial {
                    reply = with_partial_checksum(reply);
                }
                let mut b = VecBatch::default();
                b.push_chained(&reply, head, partial, Capture::Prefix(0));
                let mut rv = [ReplyVerdict::NotKp];
                w.process_replies(&mut b, 1, &mut rv);
                assert!(matches!(rv[0], ReplyVerdict::Translated { .. }), "{rv:?}");
                let mut back = b.packets[0].clone();
                back.extend_from_slice(&reply[head..]);
                let r = parse(&back).unwrap();
                assert_eq!((&r.src[..n], r.src_port), (vip_addr, 80));
                assert_eq!(check(&back), Ok(()));
            }
        }
    }
    // A first buffer that ends inside the TCP header: dropped, and said why.
    let whole = emit(
        &Spec::new(IpFamily::V4, proto::TCP, &[192, 168, 0, 5], &[10, 96, 0, 10], (1, 80)).payload(&payload),
    );
    let cap = Capture::Prefix(c.prefix_index(&"10.96.0.10/32".parse().unwrap()).unwrap());
    let mut b = VecBatch::default();
    b.push_chained(&whole, 30, false, cap);
    let mut v = [Verdict::Drop(DropReason::NoVip)];
    w.process(&mut b, 1, &mut v);
    assert_eq!(v[0], Verdict::Drop(DropReason::Packet(kp_plugin::packet::Error::SplitHeaders)));
    // A chain shorter than the IP header says: truncated.
    let mut b = VecBatch::default();
    b.push_chained(&whole[..whole.len() - 1], 128, false, cap);
    w.process(&mut b, 1, &mut v);
    assert_eq!(v[0], Verdict::Drop(DropReason::Packet(kp_plugin::packet::Error::Truncated)));
}

/// Splits an IP packet (no IPv4 options, no IPv6 extension headers) into
/// fragments of at most `mtu` bytes, as a sending host does.
fn fragments_of(pkt: &[u8], mtu: usize, id: u32) -> Vec<Vec<u8>> {
    let v6 = pkt[0] >> 4 == 6;
    let hlen = if v6 { 40 } else { 20 };
    let payload = &pkt[hlen..];
    let per = (mtu - hlen - if v6 { 8 } else { 0 }) / 8 * 8;
    let mut out = Vec::new();
    for (k, chunk) in payload.chunks(per).enumerate() {
        let offset = k * per;
        let more = offset + chunk.len() < payload.len();
        let mut f = pkt[..hlen].to_vec();
        if v6 {
            let next = f[6];
            f[6] = proto::FRAGMENT;
            let word = ((offset as u16) & !7) | more as u16;
            f.extend_from_slice(&[next, 0]);
            f.extend_from_slice(&word.to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
            f.extend_from_slice(chunk);
            let plen = (f.len() - 40) as u16;
            f[4..6].copy_from_slice(&plen.to_be_bytes());
        } else {
            f.extend_from_slice(chunk);
            let total = f.len() as u16;
            f[2..4].copy_from_slice(&total.to_be_bytes());
            f[4..6].copy_from_slice(&(id as u16).to_be_bytes());
            let word = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
            f[6..8].copy_from_slice(&word.to_be_bytes());
            f[10..12].copy_from_slice(&[0, 0]);
            let c = checksum::checksum(&f[..20]);
            f[10..12].copy_from_slice(&c.to_be_bytes());
        }
        out.push(f);
    }
    out
}

/// Puts fragments back together (as the receiving host does).
fn reassemble(frags: &[Vec<u8>]) -> Vec<u8> {
    let v6 = frags[0][0] >> 4 == 6;
    let mut head = frags[0][..if v6 { 40 } else { 20 }].to_vec();
    let mut payload = Vec::new();
    for f in frags {
        let (at, body) = if v6 { (40 + 8, &f[48..]) } else { (20, &f[20..]) };
        let _ = at;
        payload.extend_from_slice(body);
    }
    if v6 {
        head[6] = frags[0][40];
        let plen = payload.len() as u16;
        head[4..6].copy_from_slice(&plen.to_be_bytes());
    } else {
        let total = (20 + payload.len()) as u16;
        head[2..4].copy_from_slice(&total.to_be_bytes());
        head[6..8].copy_from_slice(&[0, 0]);
        head[10..12].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&head[..20]);
        head[10..12].copy_from_slice(&c.to_be_bytes());
    }
    head.extend_from_slice(&payload);
    head
}

/// A UDP datagram too big for the link reaches a pod in fragments, every
/// one translated (the first by its ports, the others by their datagram's
/// identity), and so does the pod's fragmented reply, back from the VIP.
/// Both families; a fragment whose first fragment was never seen is a
/// counted drop.
#[test]
fn fragmented_datagrams_are_translated_both_ways() {
    let mut c = Controller::new(1);
    c.add_vip(&vip("10.96.0.10/32", Protocol::Udp, 53, 5353, 0)).unwrap();
    c.add_pods(&all_ports("10.96.0.10/32"), &[(ip("10.1.0.1"), 1), (ip("10.1.0.2"), 1)]).unwrap();
    c.add_vip(&vip("2001:db8::10/128", Protocol::Udp, 53, 5353, 0)).unwrap();
    c.add_pods(&all_ports("2001:db8::10/128"), &[(ip("fd00::1"), 1), (ip("fd00::2"), 1)]).unwrap();
    let mut w = c.worker(0).unwrap();
    let payload: Vec<u8> = (0..5000u32).map(|i| (i * 13) as u8).collect();
    let v6c: [u8; 16] = "2001:db8:2::2".parse::<std::net::Ipv6Addr>().unwrap().octets();
    let v6v: [u8; 16] = "2001:db8::10".parse::<std::net::Ipv6Addr>().unwrap().octets();
    let cases: [(IpFamily, &[u8], &[u8], &str); 2] = [
        (IpFamily::V4, &[192, 168, 0, 5], &[10, 96, 0, 10], "10.96.0.10/32"),
        (IpFamily::V6, &v6c, &v6v, "2001:db8::10/128"),
    ];
    for (family, client, vip_addr, prefix) in cases {
        let cap = Capture::Prefix(c.prefix_index(&prefix.parse().unwrap()).unwrap());
        for sport in [40000u16, 40001, 40002] {
            let whole = emit(&Spec::new(family, proto::UDP, client, vip_addr, (sport, 53)).payload(&payload));
            let frags = fragments_of(&whole, 1500, u32::from(sport));
            assert_eq!(frags.len(), 4);
            let mut b = VecBatch::default();
            for f in &frags {
                b.push(f.clone(), cap);
            }
            let mut v = vec![Verdict::Drop(DropReason::NoVip); frags.len()];
            w.process(&mut b, 1, &mut v);
            let pods: Vec<u32> = v
                .iter()
                .map(|v| match v {
                    Verdict::Forward { pod, .. } => *pod,
                    other => panic!("{family:?}: {other:?}"),
                })
                .collect();
            assert!(pods.iter().all(|&p| p == pods[0]), "one datagram, one pod: {pods:?}");
            let out = reassemble(&b.packets);
            assert_eq!(verify(&out), Ok(()));
            // Every fragment carries the pod's address (and IPv4's header
            // checksum is right in each).
            let dst_at = if family == IpFamily::V4 { 16..20 } else { 24..40 };
            for f in &b.packets {
                assert_eq!(f[dst_at.clone()], out[dst_at.clone()]);
                if family == IpFamily::V4 {
                    assert_eq!(checksum::checksum(&f[..20]), 0, "IPv4 header checksum");
                }
            }
            let p = parse(&out).unwrap();
            let n = if family == IpFamily::V4 { 4 } else { 16 };
            assert_eq!(p.dst_port, 5353);
            assert_eq!(
                if n == 4 {
                    IpAddr::from([p.dst[0], p.dst[1], p.dst[2], p.dst[3]])
                } else {
                    IpAddr::from(p.dst)
                },
                pod_of(&c, v[0])
            );
            // The pod answers with a datagram as big, fragmented by its host.
            let reply = emit(
                &Spec::new(family, proto::UDP, &p.dst[..n], &p.src[..n], (5353, sport)).payload(&payload),
            );
            let rfrags = fragments_of(&reply, 1500, 7);
            let mut b = VecBatch::default();
            for f in &rfrags {
                b.push(f.clone(), Capture::Prefix(0));
            }
            let mut rv = vec![ReplyVerdict::NotKp; rfrags.len()];
            w.process_replies(&mut b, 1, &mut rv);
            assert!(rv.iter().all(|v| matches!(v, ReplyVerdict::Translated { .. })), "{rv:?}");
            let back = reassemble(&b.packets);
            assert_eq!(verify(&back), Ok(()));
            let src_at = if family == IpFamily::V4 { 12..16 } else { 8..24 };
            for f in &b.packets {
                assert_eq!(&f[src_at.clone()], vip_addr);
            }
            let r = parse(&back).unwrap();
            assert_eq!((&r.src[..n], r.src_port), (vip_addr, 53));
        }
        // A datagram's later fragments without its first: counted drops.
        let whole = emit(&Spec::new(family, proto::UDP, client, vip_addr, (41000, 53)).payload(&payload));
        let frags = fragments_of(&whole, 1500, 999);
        let (v, _) = run(&mut w, frags[2].clone(), cap, 1);
        assert_eq!(v, Verdict::Drop(DropReason::Packet(kp_plugin::packet::Error::Fragment)));
        // ... and the record of a datagram expires.
        let (v, _) = run(&mut w, frags[0].clone(), cap, 10);
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
        let (v, _) = run(&mut w, frags[1].clone(), cap, 10);
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
        let (v, _) = run(&mut w, frags[3].clone(), cap, 10 + kp_plugin::fragment::TIMEOUT);
        assert_eq!(v, Verdict::Drop(DropReason::Packet(kp_plugin::packet::Error::Fragment)));
    }
}

/// A host that can hold packets (as kp's VPP nodes hold buffers): runs
/// batches and gives back what leaves in order, released fragments
/// translated after the batch that released them.
#[derive(Default)]
struct HoldingHost {
    held: HashMap<u32, Vec<u8>>,
    next_handle: u32,
}

/// What left a [`HoldingHost`] batch.
#[derive(Debug, PartialEq)]
enum Out {
    /// Sent on (`Some(pod)` translated to, from the request path).
    Sent(Vec<u8>),
    /// A held fragment given up.
    GivenUp(Vec<u8>),
    Dropped,
}

impl HoldingHost {
    fn requests(&mut self, w: &mut Worker, pkts: &[Vec<u8>], cap: Capture, now: u32) -> Vec<Out> {
        let mut b = self.batch(pkts, cap);
        let mut v = vec![Verdict::Drop(DropReason::NoVip); pkts.len()];
        w.process(&mut b, now, &mut v);
        let mut out = Vec::new();
        for (i, v) in v.iter().enumerate() {
            match v {
                Verdict::Forward { .. } => out.push(Out::Sent(b.packets[i].clone())),
                Verdict::Held => {
                    self.held.insert(b.hold_base.unwrap() + i as u32, b.packets[i].clone());
                }
                _ => out.push(Out::Dropped),
            }
        }
        self.released(w, &mut out);
        out
    }

    fn replies(&mut self, w: &mut Worker, pkts: &[Vec<u8>], now: u32) -> Vec<Out> {
        let mut b = self.batch(pkts, Capture::Prefix(0));
        let mut v = vec![ReplyVerdict::NotKp; pkts.len()];
        w.process_replies(&mut b, now, &mut v);
        let mut out = Vec::new();
        for (i, v) in v.iter().enumerate() {
            match v {
                ReplyVerdict::Held => {
                    self.held.insert(b.hold_base.unwrap() + i as u32, b.packets[i].clone());
                }
                _ => out.push(Out::Sent(b.packets[i].clone())),
            }
        }
        self.released(w, &mut out);
        out
    }

    fn batch(&mut self, pkts: &[Vec<u8>], cap: Capture) -> VecBatch {
        let mut b = VecBatch { hold_base: Some(self.next_handle), ..Default::default() };
        self.next_handle += pkts.len() as u32;
        for p in pkts {
            b.push(p.clone(), cap);
        }
        b
    }

    fn released(&mut self, w: &mut Worker, out: &mut Vec<Out>) {
        let mut rel = Vec::new();
        w.take_released(0, |r| rel.push(r));
        for r in rel {
            let mut pkt = self.held.remove(&r.ticket.handle).expect("a released packet was held");
            if r.apply(&mut pkt) {
                out.push(Out::Sent(pkt));
            } else {
                out.push(Out::GivenUp(pkt));
            }
        }
    }
}

fn sent(out: &[Out]) -> Vec<Vec<u8>> {
    out.iter()
        .filter_map(|o| match o {
            Out::Sent(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

/// Puts fragments in offset order (a receiving host reassembles so).
fn by_offset(mut frags: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    frags.sort_by_key(|f| {
        if f[0] >> 4 == 6 {
            u16::from_be_bytes([f[42], f[43]]) & !7
        } else {
            u16::from_be_bytes([f[6], f[7]]) & 0x1fff
        }
    });
    frags
}

/// Fragments that come before their datagram's first one are held until
/// it comes (in the same batch or a later one), then translated as their
/// datagram, both ways and in both families; without a first fragment
/// they are given up after the fragment timeout; the fragments of a
/// datagram that is not kp's are given up at once when its first comes,
/// and later ones are not held.
#[test]
fn fragments_before_their_first_are_held_until_it_comes() {
    let mut c = Controller::new(1);
    c.add_vip(&vip("192.0.2.10/32", Protocol::Udp, 53, 5353, 0)).unwrap();
    c.add_pods(&all_ports("192.0.2.10/32"), &[(ip("203.0.113.1"), 1), (ip("203.0.113.2"), 1)]).unwrap();
    c.add_vip(&vip("2001:db8::10/128", Protocol::Udp, 53, 5353, 0)).unwrap();
    c.add_pods(&all_ports("2001:db8::10/128"), &[(ip("2001:db8:1::1"), 1), (ip("2001:db8:1::2"), 1)])
        .unwrap();
    let mut w = c.worker(0).unwrap();
    let mut host = HoldingHost::default();
    let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    let v6c = "2001:db8:2::2".parse::<std::net::Ipv6Addr>().unwrap().octets();
    let v6v = "2001:db8::10".parse::<std::net::Ipv6Addr>().unwrap().octets();
    let cases: [(IpFamily, &[u8], &[u8], &str); 2] = [
        (IpFamily::V4, &[198, 51, 100, 5], &[192, 0, 2, 10], "192.0.2.10/32"),
        (IpFamily::V6, &v6c, &v6v, "2001:db8::10/128"),
    ];
    for (family, client, vip_addr, prefix) in cases {
        let n = if family == IpFamily::V4 { 4 } else { 16 };
        let cap = Capture::Prefix(c.prefix_index(&prefix.parse().unwrap()).unwrap());
        // The last first, all in one batch.
        let whole = emit(&Spec::new(family, proto::UDP, client, vip_addr, (40000, 53)).payload(&payload));
        let mut frags = fragments_of(&whole, 1500, 1);
        frags.reverse();
        let out = host.requests(&mut w, &frags, cap, 1);
        assert_eq!(out.len(), 4, "{family:?}: {out:?}");
        assert!(out.iter().all(|o| matches!(o, Out::Sent(_))), "{out:?}");
        assert_eq!(w.held_fragments(), 0);
        let there = reassemble(&by_offset(sent(&out)));
        assert_eq!(verify(&there), Ok(()));
        let p = parse(&there).unwrap();
        assert_eq!(p.dst_port, 5353);
        // The first in a later batch.
        let whole = emit(&Spec::new(family, proto::UDP, client, vip_addr, (40001, 53)).payload(&payload));
        let frags = fragments_of(&whole, 1500, 2);
        let out = host.requests(&mut w, &frags[1..], cap, 1);
        assert!(out.is_empty(), "held: {out:?}");
        assert_eq!(w.held_fragments(), 3);
        let out = host.requests(&mut w, &frags[..1], cap, 2);
        assert_eq!(out.len(), 4);
        let there = reassemble(&by_offset(sent(&out)));
        assert_eq!(verify(&there), Ok(()));
        let q = parse(&there).unwrap();
        assert_eq!(&q.src[..n], client);
        // The pod's reply, last fragment first: back from the VIP.
        let reply =
            emit(&Spec::new(family, proto::UDP, &q.dst[..n], client, (5353, 40001)).payload(&payload));
        let mut rfrags = fragments_of(&reply, 1500, 9);
        rfrags.rotate_left(1);
        let out = host.replies(&mut w, &rfrags, 2);
        assert_eq!(out.len(), 4);
        let back = reassemble(&by_offset(sent(&out)));
        assert_eq!(verify(&back), Ok(()));
        let r = parse(&back).unwrap();
        assert_eq!((&r.src[..n], r.src_port), (vip_addr, 53));
        // No first fragment: given up once the timeout has passed.
        let whole = emit(&Spec::new(family, proto::UDP, client, vip_addr, (40002, 53)).payload(&payload));
        let frags = fragments_of(&whole, 1500, 3);
        assert!(host.requests(&mut w, &frags[1..3], cap, 5).is_empty());
        assert!(host.requests(&mut w, &[], cap, 5 + kp_plugin::fragment::TIMEOUT - 1).is_empty());
        let out = host.requests(&mut w, &[], cap, 5 + kp_plugin::fragment::TIMEOUT);
        assert_eq!(out, [Out::GivenUp(frags[1].clone()), Out::GivenUp(frags[2].clone())]);
        assert_eq!(w.held_fragments(), 0);
        // A datagram that is not kp's (no reply of a kp flow): its held
        // fragment is given up as its first comes, untouched; a later one
        // is not held.
        let other = emit(&Spec::new(family, proto::UDP, client, vip_addr, (7, 7)).payload(&payload));
        let ofrags = fragments_of(&other, 1500, 4);
        assert!(host.replies(&mut w, &ofrags[2..3], 20).is_empty());
        let out = host.replies(&mut w, &ofrags[..1], 20);
        assert_eq!(out, [Out::Sent(ofrags[0].clone()), Out::GivenUp(ofrags[2].clone())]);
        assert_eq!(host.replies(&mut w, &ofrags[3..], 20), [Out::Sent(ofrags[3].clone())]);
        assert_eq!(w.held_fragments(), 0);
    }
    // Holding has a bound: beyond it, a counted drop.
    let whole = emit(
        &Spec::new(IpFamily::V4, proto::UDP, &[198, 51, 100, 6], &[192, 0, 2, 10], (1, 53)).payload(&payload),
    );
    let cap = Capture::Prefix(c.prefix_index(&"192.0.2.10/32".parse().unwrap()).unwrap());
    let mut dropped = 0;
    for id in 0..kp_plugin::fragment::HOLD_CAPACITY as u32 + 10 {
        let frags = fragments_of(&whole, 1500, 100 + id);
        dropped += host.requests(&mut w, &frags[1..2], cap, 30).len();
    }
    assert_eq!(dropped, 10);
    assert_eq!(w.held_fragments(), kp_plugin::fragment::HOLD_CAPACITY);
}

/// nat46 and nat64 datagrams too big for one packet, both ways: each
/// fragment crosses families (IPv4 fragments get an IPv6 Fragment header
/// with the same identification, offset and M flag; IPv6 fragments lose
/// it), the first with its ports and checksum translated; what the pod
/// (or client) reassembles is the translated datagram, checksum right.
/// In order, and the last fragment first (held until the first comes).
#[test]
fn nat46_and_nat64_fragments_cross_families_both_ways() {
    let payload: Vec<u8> = (0..5000u32).map(|i| (i * 11) as u8).collect();
    let at = |f: &[u8]| if f[0] >> 4 == 6 { (8..24, 24..40) } else { (12..16, 16..20) };
    for nat in [NatType::Nat46, NatType::Nat64] {
        let (c, client, vip_addr, mtu_in, mtu_back) = match nat {
            NatType::Nat46 => (
                xlat_setup(nat, "192.0.2.10/32", &["2001:db8:b::1"], 1),
                vec![198u8, 51, 100, 7],
                vec![192u8, 0, 2, 10],
                1500,
                1280,
            ),
            _ => (
                xlat_setup(nat, "2001:db8:64::10/128", &["198.51.100.5"], 1),
                "2001:db8:c::7".parse::<std::net::Ipv6Addr>().unwrap().octets().to_vec(),
                "2001:db8:64::10".parse::<std::net::Ipv6Addr>().unwrap().octets().to_vec(),
                1280,
                1500,
            ),
        };
        let mut w = c.worker(0).unwrap();
        let mut host = HoldingHost::default();
        let family = if client.len() == 4 { IpFamily::V4 } else { IpFamily::V6 };
        for (k, reversed) in [(0u16, false), (1, true)] {
            let sport = 5000 + k;
            let whole =
                emit(&Spec::new(family, proto::UDP, &client, &vip_addr, (sport, 80)).payload(&payload));
            let mut frags = fragments_of(&whole, mtu_in, 70 + u32::from(k));
            if reversed {
                frags.reverse();
            }
            let out = host.requests(&mut w, &frags, Capture::Prefix(0), 1);
            let forward = sent(&out);
            assert_eq!(forward.len(), frags.len(), "{nat:?} reversed={reversed}: {out:?}");
            for f in &forward {
                assert_ne!(f[0] >> 4, whole[0] >> 4, "{nat:?}: every fragment crosses families");
            }
            let there = reassemble(&by_offset(forward.clone()));
            assert_eq!(verify(&there), Ok(()), "{nat:?}: the pod's reassembly verifies");
            let p = parse(&there).unwrap();
            assert_eq!(p.dst_port, 8080);
            assert_eq!(&there[p.l4_offset as usize + 8..], &payload[..]);
            let (src_at, dst_at) = at(&there);
            for f in &forward {
                assert_eq!(f[at(f).0], there[src_at.clone()], "{nat:?}: one source");
                assert_eq!(f[at(f).1], there[dst_at.clone()], "{nat:?}: one destination");
            }
            // The identification survives (IPv6's is 32 bits, IPv4's 16).
            let id = 70 + u32::from(k);
            for f in &forward {
                let got = if f[0] >> 4 == 6 {
                    u32::from_be_bytes([f[44], f[45], f[46], f[47]])
                } else {
                    u32::from(u16::from_be_bytes([f[4], f[5]]))
                };
                assert_eq!(got, id & if f[0] >> 4 == 6 { u32::MAX } else { 0xffff });
            }
            // The pod answers as big, fragmented by its host, the last
            // fragment first for the second datagram.
            let reply = emit(
                &Spec::new(
                    if family == IpFamily::V4 { IpFamily::V6 } else { IpFamily::V4 },
                    proto::UDP,
                    &there[dst_at.clone()],
                    &there[src_at.clone()],
                    (8080, p.src_port),
                )
                .payload(&payload),
            );
            let mut rfrags = fragments_of(&reply, mtu_back, 900 + u32::from(k));
            if reversed {
                rfrags.reverse();
            }
            let out = host.replies(&mut w, &rfrags, 1);
            let back = sent(&out);
            assert_eq!(back.len(), rfrags.len(), "{nat:?}: {out:?}");
            let back = reassemble(&by_offset(back));
            assert_eq!(verify(&back), Ok(()), "{nat:?}: the client's reassembly verifies");
            let r = parse(&back).unwrap();
            let n = client.len();
            assert_eq!((&r.src[..n], r.src_port), (&vip_addr[..], 80), "{nat:?}: from the VIP");
            assert_eq!((&r.dst[..n], r.dst_port), (&client[..], sport), "{nat:?}: to the client");
            assert_eq!(w.held_fragments(), 0);
        }
    }
}

/// An IPv6 router refuses a nat46 flow's fragment as too big: the IPv4
/// client is told an MTU 28 bytes smaller (the 20 the header grows by and
/// the Fragment header's 8), so that its next fragments fit once
/// translated.
#[test]
fn too_big_for_a_translated_fragment_asks_for_28_bytes_less() {
    let c = xlat_setup(NatType::Nat46, "192.0.2.10/32", &["2001:db8:b::1"], 1);
    let mut w = c.worker(0).unwrap();
    let payload = vec![5u8; 3000];
    let whole = emit(
        &Spec::new(IpFamily::V4, proto::UDP, &[198, 51, 100, 7], &[192, 0, 2, 10], (4000, 80))
            .payload(&payload),
    );
    let frags = fragments_of(&whole, 1500, 33);
    let mut host = HoldingHost::default();
    let first = sent(&host.requests(&mut w, &frags[..1], Capture::Prefix(0), 1)).remove(0);
    assert_eq!(first.len(), 1528, "1500 bytes of IPv4 fragment: 1528 of IPv6");
    let router = "2001:db8:b::ff".parse::<std::net::Ipv6Addr>().unwrap().octets();
    let err = icmp_error_quoting(IpFamily::V6, &router, &first[8..24], (2, 0, 1500), &first[..64]);
    let (rv, out) = run_replies(&mut w, vec![err]);
    assert!(matches!(rv[0], ReplyVerdict::TranslatedTo { v6: false, .. }), "{rv:?}");
    let e = &out[0];
    assert_eq!((e[20], e[21]), (3, 4), "fragmentation needed");
    assert_eq!(u16::from_be_bytes([e[26], e[27]]), 1472);
    assert_eq!(verify_icmp(e, IpFamily::V4), Ok(()));
}

/// The quoted packet's (src, sport, dst, dport) in an ICMP error.
fn quoted(pkt: &[u8], family: IpFamily) -> (Vec<u8>, u16, Vec<u8>, u16) {
    let (inner, n, l4) = if family == IpFamily::V4 { (28, 4, 48) } else { (48, 16, 88) };
    let (s, d) = if family == IpFamily::V4 { (inner + 12, inner + 16) } else { (inner + 8, inner + 24) };
    let port = |at: usize| u16::from_be_bytes([pkt[at], pkt[at + 1]]);
    (pkt[s..s + n].to_vec(), port(l4), pkt[d..d + n].to_vec(), port(l4 + 2))
}

/// PMTUD through a Service, both ways. A router on the pods' side says the
/// client's packet (client -> pod, after DNAT) was too big: the client
/// gets it about what it sent (client -> VIP:port). A router on the
/// clients' side (or VPP itself) says the pod's reply (VIP -> client, after
/// translation) was too big: the error goes to the pod, about what the pod
/// sent (pod -> client). A port-unreachable from the pod itself comes from
/// the VIP. Every checksum is verified from scratch; an error about no kp
/// flow passes untouched, and one to a VIP about no flow is dropped.
#[test]
fn icmp_errors_about_service_flows_are_translated_both_ways() {
    let mut c = Controller::new(2);
    c.add_vip(&vip("10.96.0.10/32", Protocol::Any, 80, 8080, 0)).unwrap();
    c.add_pods(&all_ports("10.96.0.10/32"), &[(ip("10.1.0.1"), 1), (ip("10.1.0.2"), 1)]).unwrap();
    c.add_vip(&vip("2001:db8::10/128", Protocol::Any, 80, 8080, 0)).unwrap();
    c.add_pods(&all_ports("2001:db8::10/128"), &[(ip("fd00::1"), 1), (ip("fd00::2"), 1)]).unwrap();
    let mut w0 = c.worker(0).unwrap();
    let mut w1 = c.worker(1).unwrap();
    let o6 = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets().to_vec();
    // (family, client, VIP, a router, VIP prefix, "too big" type and code)
    type Case<'a> = (IpFamily, Vec<u8>, Vec<u8>, Vec<u8>, &'a str, u8, u8);
    let cases: [Case; 2] = [
        (IpFamily::V4, vec![192, 168, 0, 5], vec![10, 96, 0, 10], vec![172, 16, 0, 1], "10.96.0.10/32", 3, 4),
        (
            IpFamily::V6,
            o6("2001:db8:2::5"),
            o6("2001:db8::10"),
            o6("2001:db8:99::1"),
            "2001:db8::10/128",
            2,
            0,
        ),
    ];
    for (family, client, vip_addr, router, prefix, too_big, code) in cases {
        let cap = Capture::Prefix(c.prefix_index(&prefix.parse().unwrap()).unwrap());
        for protocol in [proto::TCP, proto::UDP] {
            let request =
                emit(&Spec::new(family, protocol, &client, &vip_addr, (40000, 80)).payload(&[7; 1200]));
            let (v, fwd) = run(&mut w0, request.clone(), cap, 1);
            let pod = pod_of(&c, v);
            let pod_addr: Vec<u8> = match pod {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            // 1. About the request, from a router past VPP, to the client:
            //    translated on the reply path (here on the other worker).
            let err = icmp_error(family, &router, &client, too_big, code, 1400, &fwd);
            let (rv, out) = run_replies(&mut w1, vec![err]);
            assert!(matches!(rv[0], ReplyVerdict::Translated { .. }), "{family:?} {protocol}: {rv:?}");
            verify_icmp(&out[0], family).unwrap();
            assert_eq!(quoted(&out[0], family), (client.clone(), 40000, vip_addr.clone(), 80));
            let at = if family == IpFamily::V4 { 12..16 } else { 8..24 };
            assert_eq!(out[0][at.clone()], router[..], "a router's error keeps its source");
            // ... and the quoted transport checksum still matches the quoted
            // packet as the client sent it.
            let l4 = if family == IpFamily::V4 { 48 } else { 88 };
            let csum = if protocol == proto::TCP { 16 } else { 6 };
            let req_l4 = if family == IpFamily::V4 { 20 } else { 40 };
            if csum < 8 {
                assert_eq!(out[0][l4 + csum..l4 + csum + 2], request[req_l4 + csum..req_l4 + csum + 2]);
            }
            // 2. From the pod itself (port unreachable): from the VIP.
            let unreach = if family == IpFamily::V4 { (3, 3) } else { (1, 4) };
            let err = icmp_error(family, &pod_addr, &client, unreach.0, unreach.1, 0, &fwd);
            let (_, out) = run_replies(&mut w1, vec![err]);
            verify_icmp(&out[0], family).unwrap();
            assert_eq!(out[0][at.clone()], vip_addr[..], "the pod's own error comes from the VIP");

            // 3. About the reply (VIP -> client), to the VIP: to the pod,
            //    about what it sent; on either worker.
            let reply = reply_to(&fwd);
            let (_, back) = run_replies(&mut w1, vec![reply]);
            for w in [&mut w0, &mut w1] {
                let err = icmp_error(family, &router, &vip_addr, too_big, code, 1400, &back[0]);
                let (v, out) = run(w, err, cap, 1);
                assert!(matches!(v, Verdict::Forward { .. }), "{family:?} {protocol}: {v:?}");
                assert_eq!(pod_of(&c, v), pod);
                verify_icmp(&out, family).unwrap();
                let dst_at = if family == IpFamily::V4 { 16..20 } else { 24..40 };
                assert_eq!(out[dst_at], pod_addr[..]);
                assert_eq!(quoted(&out, family), (pod_addr.clone(), 8080, client.clone(), 40000));
            }
        }
        // An error about a flow kp never saw: untouched on the reply path,
        // dropped when sent to a VIP.
        let stranger = emit(&Spec::new(family, proto::TCP, &client, &router, (1, 2)).payload(b"x"));
        let err = icmp_error(family, &router, &client, too_big, code, 1400, &stranger);
        let (rv, out) = run_replies(&mut w1, vec![err.clone()]);
        assert_eq!((rv[0], &out[0]), (ReplyVerdict::NotKp, &err));
        let about_vip = emit(&Spec::new(family, proto::TCP, &vip_addr, &client, (80, 1)).payload(b"x"));
        let err = icmp_error(family, &router, &vip_addr, too_big, code, 1400, &about_vip);
        let (v, _) = run(&mut w0, err, cap, 1);
        assert!(matches!(v, Verdict::Drop(_)), "{v:?}");
    }
}

/// A VIP without pods answers new flows as kube-proxy does: a TCP reset
/// (from the VIP:port, acknowledging the SYN) or ICMP port unreachable
/// (quoting the datagram), every checksum verified; at most
/// REJECTS_PER_TICK a tick per thread; `reject off` drops them instead.
#[test]
fn no_endpoints_reject_as_kube_proxy_does() {
    let mut c = Controller::new(1);
    c.add_vip(&vip("10.96.0.10/32", Protocol::Any, 80, 8080, 0)).unwrap();
    c.add_vip(&vip("2001:db8::10/128", Protocol::Any, 80, 8080, 0)).unwrap();
    let mut w = c.worker(0).unwrap();
    let o6 = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets().to_vec();
    for (family, client, vip_addr, prefix) in [
        (IpFamily::V4, vec![192, 168, 0, 5], vec![10, 96, 0, 10], "10.96.0.10/32"),
        (IpFamily::V6, o6("2001:db8:2::5"), o6("2001:db8::10"), "2001:db8::10/128"),
    ] {
        let cap = Capture::Prefix(c.prefix_index(&prefix.parse().unwrap()).unwrap());
        let n = client.len();
        // TCP SYN (seq 1000): RST+ACK, ack 1001, from the VIP.
        let mut syn = emit(&Spec::new(family, proto::TCP, &client, &vip_addr, (40000, 80)));
        let tcp_at = if family == IpFamily::V4 { 20 } else { 40 };
        syn[tcp_at + 4..tcp_at + 8].copy_from_slice(&1000u32.to_be_bytes());
        syn[tcp_at + 13] = 0x02;
        let (v, rst) = run(&mut w, syn, cap, 1);
        assert_eq!(
            v,
            Verdict::Reject {
                vip: c
                    .vip_index(&VipKey { prefix: prefix.parse().unwrap(), protocol: Protocol::Any, port: 80 })
                    .unwrap()
            }
        );
        assert_eq!(verify(&rst), Ok(()), "{family:?} reset checksums");
        let p = parse(&rst).unwrap();
        assert_eq!(
            (&p.src[..n], p.src_port, &p.dst[..n], p.dst_port),
            (&vip_addr[..], 80, &client[..], 40000)
        );
        assert_eq!(rst[tcp_at + 13], 0x14, "RST+ACK");
        assert_eq!(u32::from_be_bytes(rst[tcp_at + 8..tcp_at + 12].try_into().unwrap()), 1001);
        assert_eq!(rst.len(), tcp_at + 20);
        // UDP: port unreachable, quoting the datagram.
        let dgram = emit(&Spec::new(family, proto::UDP, &client, &vip_addr, (40001, 80)).payload(b"query"));
        let (v, icmp) = run(&mut w, dgram.clone(), cap, 1);
        assert!(matches!(v, Verdict::Reject { .. }), "{v:?}");
        verify_icmp(&icmp, family).unwrap();
        let hl = if family == IpFamily::V4 { 20 } else { 40 };
        assert_eq!(icmp[hl..hl + 2], if family == IpFamily::V4 { [3, 3] } else { [1, 4] });
        assert_eq!(&icmp[hl + 8..], &dgram[..], "quotes the datagram");
        let src_at = if family == IpFamily::V4 { 12..16 } else { 8..24 };
        assert_eq!(icmp[src_at], vip_addr[..]);
    }
    // The budget: a tick's rejects are bounded; the next tick has more.
    let cap = Capture::Prefix(c.prefix_index(&"10.96.0.10/32".parse().unwrap()).unwrap());
    let mut rejected = 0;
    for k in 0..(kp_plugin::dataplane::REJECTS_PER_TICK + 50) {
        let (v, _) =
            run(&mut w, v4(proto::TCP, [192, 168, 1, 1], 1024 + k as u16, [10, 96, 0, 10], 80), cap, 5);
        rejected += matches!(v, Verdict::Reject { .. }) as u32;
    }
    assert_eq!(rejected, kp_plugin::dataplane::REJECTS_PER_TICK);
    let (v, _) = run(&mut w, v4(proto::TCP, [192, 168, 1, 1], 9, [10, 96, 0, 10], 80), cap, 6);
    assert!(matches!(v, Verdict::Reject { .. }));
    // Switched off: silent (counted) drops.
    c.set_reject(false);
    let (v, _) = run(&mut w, v4(proto::TCP, [192, 168, 1, 1], 10, [10, 96, 0, 10], 80), cap, 7);
    assert_eq!(v, Verdict::Drop(DropReason::NoPod));
}

/// Echo requests to a VIP are not answered (as nftables-mode kube-proxy
/// does not; a VIP is a Service, not a host): a counted drop, as any
/// protocol kp does not translate.
#[test]
fn echo_requests_to_a_vip_are_not_answered() {
    let (_c, mut w, cap) = setup();
    let mut echo = vec![0x45, 0, 0, 28, 0, 1, 0, 0, 64, proto::ICMP, 0, 0, 192, 168, 0, 5, 10, 96, 0, 10];
    let c = checksum::checksum(&echo);
    echo[10..12].copy_from_slice(&c.to_be_bytes());
    echo.extend_from_slice(&[8, 0, 0xf7, 0xfe, 0, 1, 0, 0]);
    let (v, out) = run(&mut w, echo.clone(), cap, 1);
    assert_eq!(v, Verdict::Drop(DropReason::Packet(kp_plugin::packet::Error::UnsupportedProtocol)));
    assert_eq!(out, echo, "untouched");
}

fn tcp(src: [u8; 4], sport: u16, flags: u8) -> Vec<u8> {
    let mut s = Spec::new(IpFamily::V4, proto::TCP, &src, &[10, 96, 0, 10], (sport, 80));
    s.tcp_flags = flags;
    emit(&s)
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

fn outcome(w: &mut Worker, pkt: Vec<u8>, cap: Capture, now: u32) -> FlowOutcome {
    match run(w, pkt, cap, now).0 {
        Verdict::Forward { outcome, .. } => outcome,
        v => panic!("{v:?}"),
    }
}

/// A flood of new flows (SYNs from random sources) fills the table but
/// pushes out no established flow, and is gone after the embryonic
/// timeout; a flow whose SYNs are never answered stays embryonic, one
/// that sent its handshake's ACK lives the full timeout.
#[test]
fn syn_flood_keeps_established_flows_and_expires_soon() {
    let (mut c, _, cap) = setup();
    c.set_flow(Some(1024), Some(40)).unwrap();
    assert_eq!(c.config().flow.embryonic, 5, "default embryonic timeout");
    let mut w = c.worker(0).unwrap();
    // 200 established connections: SYN, then the ACK of the handshake.
    let est: Vec<([u8; 4], u16)> =
        (0..200u16).map(|k| ([192, 168, (k >> 8) as u8, k as u8], 1000 + k)).collect();
    let mut tracked = Vec::new();
    for &(src, sport) in &est {
        if outcome(&mut w, tcp(src, sport, SYN), cap, 1) == FlowOutcome::New {
            tracked.push((src, sport));
        }
    }
    assert!(tracked.len() > 190, "{} of 200 tracked", tracked.len());
    for &(src, sport) in &tracked {
        assert_eq!(outcome(&mut w, tcp(src, sport, ACK), cap, 1), FlowOutcome::Hit);
    }
    // The flood: 50,000 SYNs from random sources, 16x the table.
    let mut x = 0x9e37_79b9u32;
    let mut untracked = 0;
    for _ in 0..50_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let src = [100, (x >> 16) as u8, (x >> 8) as u8, x as u8];
        if outcome(&mut w, tcp(src, (x >> 3) as u16 | 1024, SYN), cap, 2) == FlowOutcome::Untracked {
            untracked += 1;
        }
    }
    assert!(untracked > 40_000, "the table filled up ({untracked} untracked)");
    // Every established flow is still there.
    for &(src, sport) in &tracked {
        assert_eq!(outcome(&mut w, tcp(src, sport, ACK), cap, 3), FlowOutcome::Hit, "{src:?}:{sport}");
    }
    // After the embryonic timeout only the established flows are left.
    assert_eq!(w.flows().live_entries(2 + 5), tracked.len());
    // A SYN retransmitted keeps a flow embryonic; an ACK establishes it.
    let (lonely, answered) = (([198, 18, 0, 1], 5000), ([198, 18, 0, 2], 5000));
    for (src, sport) in [lonely, answered] {
        assert_eq!(outcome(&mut w, tcp(src, sport, SYN), cap, 10), FlowOutcome::New);
    }
    assert_eq!(outcome(&mut w, tcp(lonely.0, lonely.1, SYN), cap, 13), FlowOutcome::Hit);
    assert_eq!(outcome(&mut w, tcp(answered.0, answered.1, ACK), cap, 13), FlowOutcome::Hit);
    // 13 + 5: the unanswered one is new again; the other one lives on.
    assert_eq!(outcome(&mut w, tcp(lonely.0, lonely.1, SYN), cap, 18), FlowOutcome::New);
    assert_eq!(outcome(&mut w, tcp(answered.0, answered.1, ACK), cap, 18), FlowOutcome::Hit);
    // UDP: the second datagram establishes.
    let udp = v4(proto::UDP, [198, 18, 0, 3], 53, [10, 96, 0, 10], 80);
    assert_eq!(outcome(&mut w, udp.clone(), cap, 20), FlowOutcome::New);
    assert_eq!(outcome(&mut w, udp.clone(), cap, 21), FlowOutcome::Hit);
    assert_eq!(outcome(&mut w, udp, cap, 30), FlowOutcome::Hit, "established: 21 + 40");
    // The embryonic timeout is configurable, and never beyond the timeout.
    let bad = FlowChange { embryonic: Some(0), ..Default::default() };
    assert!(c.change_flow(&bad).is_err());
    assert_eq!(c.config().flow.embryonic, 5, "nothing changed");
    c.change_flow(&FlowChange { embryonic: Some(60), ..Default::default() }).unwrap();
    let _ = outcome(&mut w, tcp([198, 18, 0, 4], 1, SYN), cap, 31);
    assert_eq!((w.flows().timeout(), w.flows().embryonic_timeout()), (40, 40));
}

/// The host may refuse changes that need more VIP or pod indices than it
/// has room for (VPP: counters in its fixed-size stats segment); the
/// change is refused whole, nothing changed, and smaller ones still pass.
#[test]
fn host_room_for_indices_is_asked_before_anything_changes() {
    use std::sync::{Arc, Mutex};
    let mut c = Controller::new(1);
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&asked);
    c.set_index_room(Box::new(move |vips, pods| {
        seen.lock().unwrap().push((vips, pods));
        if pods > 4 || vips > 2 {
            Err(kp_plugin::config::ConfigError::CounterMemory { needed: 1, free: 0 })
        } else {
            Ok(())
        }
    }));
    c.add_vip(&vip("10.96.0.10/32", Protocol::Any, 80, 8080, 0)).unwrap();
    let target = all_ports("10.96.0.10/32");
    c.add_pods(&target, &[(ip("10.1.0.1"), 1), (ip("10.1.0.2"), 1), (ip("10.1.0.3"), 1)]).unwrap();
    let before = c.config().clone();
    let five: Vec<(IpAddr, u32)> = (4..=5).map(|k| (ip(&format!("10.1.0.{k}")), 1)).collect();
    let e = c.add_pods(&target, &five).unwrap_err();
    assert!(matches!(e, kp_plugin::config::ConfigError::CounterMemory { .. }), "{e}");
    assert!(e.to_string().contains("statseg"), "{e}");
    assert_eq!(c.config(), &before, "nothing changed");
    c.add_pods(&target, &five[..1]).unwrap();
    c.add_vip(&vip("10.96.0.11/32", Protocol::Any, 80, 8080, 0)).unwrap();
    assert!(c.add_vip(&vip("10.96.0.12/32", Protocol::Any, 80, 8080, 0)).is_err());
    // What was asked: (VIP indices, pod indices) each change may need.
    assert_eq!(asked.lock().unwrap()[..3], [(1, 0), (1, 3), (1, 5)]);
}

/// Every configurable limit at its maximum: accepted, with traffic still
/// right; one beyond it refused with an error naming the limit, nothing
/// changed.
#[test]
fn every_limit_at_its_maximum() {
    use kp_plugin::config::{ConfigError, MAX_TIMEOUT};
    use kp_plugin::flowtable::MAX_BUCKETS;
    use kp_plugin::maglev::{MAX_NEW_LEN, MAX_WEIGHT};
    use kp_plugin::nat64::MAX_SOURCES;
    let mut c = Controller::new(1);
    // Flow table: the most buckets, the longest timeouts.
    c.change_flow(&FlowChange {
        buckets: Some(MAX_BUCKETS),
        timeout: Some(MAX_TIMEOUT),
        embryonic: Some(MAX_TIMEOUT),
    })
    .unwrap();
    let before = c.config().clone();
    for bad in [
        FlowChange { buckets: Some(MAX_BUCKETS * 2), ..Default::default() },
        FlowChange { timeout: Some(MAX_TIMEOUT + 1), ..Default::default() },
        FlowChange { embryonic: Some(MAX_TIMEOUT + 1), ..Default::default() },
    ] {
        let e = c.change_flow(&bad).unwrap_err();
        assert!(matches!(e, ConfigError::BadBuckets(_) | ConfigError::BadTimeout(_)), "{e}");
        assert_eq!(c.config(), &before, "{bad:?} changed nothing");
    }
    // The longest Maglev table, the heaviest weight.
    let mut s = vip("10.96.0.10/32", Protocol::Any, 80, 8080, 30080);
    s.new_len = Some(MAX_NEW_LEN);
    c.add_vip(&s).unwrap();
    let mut too_long = vip("10.96.0.11/32", Protocol::Any, 80, 8080, 30081);
    too_long.new_len = Some(MAX_NEW_LEN * 2);
    let e = c.add_vip(&too_long).unwrap_err();
    assert!(e.to_string().contains("new_len"), "{e}");
    let target = all_ports("10.96.0.10/32");
    c.add_pods(&target, &[(ip("10.1.0.1"), MAX_WEIGHT), (ip("10.1.0.2"), 1)]).unwrap();
    let before = c.config().clone();
    assert!(matches!(
        c.add_pods(&target, &[(ip("10.1.0.3"), MAX_WEIGHT + 1)]),
        Err(ConfigError::BadWeight(_))
    ));
    assert_eq!(c.config(), &before);
    // nat64: every source address, every port.
    let sources: Vec<std::net::Ipv4Addr> =
        (0..MAX_SOURCES as u32).map(|i| std::net::Ipv4Addr::from(0xc000_0200u32 + i)).collect();
    c.set_xlat(&XlatChange {
        nat64_sources: Some(sources.clone()),
        nat64_ports: Some((1, 65535)),
        ..Default::default()
    })
    .unwrap();
    let mut more = sources.clone();
    more.push("192.0.2.200".parse().unwrap());
    let before = c.config().clone();
    let e = c.set_xlat(&XlatChange { nat64_sources: Some(more), ..Default::default() }).unwrap_err();
    assert!(matches!(e, ConfigError::TooManyNat64Sources), "{e}");
    assert!(c.set_xlat(&XlatChange { nat64_ports: Some((0, 65535)), ..Default::default() }).is_err());
    assert_eq!(c.config(), &before);
    let mut s64 = vip("2001:db8:64::10/128", Protocol::Any, 80, 8080, 30064);
    s64.nat = Some(NatType::Nat64);
    c.add_vip(&s64).unwrap();
    c.add_pods(&all_ports("2001:db8:64::10/128"), &[(ip("198.51.100.5"), 1)]).unwrap();
    // Traffic at the maximum: the heavy pod takes (nearly) all new flows,
    // and the packets are right.
    let mut w = c.worker(0).unwrap();
    assert_eq!(w.flows().n_buckets(), MAX_BUCKETS);
    let cap = Capture::Prefix(c.prefix_index(&"10.96.0.10/32".parse().unwrap()).unwrap());
    let mut heavy = 0;
    for k in 0..200u16 {
        let (v, out) = run(
            &mut w,
            v4(proto::TCP, [203, 0, 113, (k % 200) as u8], 10_000 + k, [10, 96, 0, 10], 80),
            cap,
            1,
        );
        assert_eq!(verify(&out), Ok(()));
        heavy += usize::from(pod_of(&c, v) == ip("10.1.0.1"));
    }
    assert!(heavy >= 199, "weight {MAX_WEIGHT} against 1: {heavy} of 200");
    let cap64 = Capture::Prefix(c.prefix_index(&"2001:db8:64::10/128".parse().unwrap()).unwrap());
    let vip6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0x64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
    let client = [0x20, 0x01, 0x0d, 0xb8, 0xc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    let pkt = emit(&Spec::new(IpFamily::V6, proto::UDP, &client, &vip6, (5555, 80)).payload(b"64"));
    let (v, out) = run(&mut w, pkt, cap64, 1);
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    assert_eq!(verify(&out), Ok(()));
    let p = parse(&out).unwrap();
    assert!(sources.contains(&std::net::Ipv4Addr::from([p.src[0], p.src[1], p.src[2], p.src[3]])), "{p:?}");
}

/// The quoted packet's (src, sport, dst, dport) in an ICMP error, and its
/// type, code and MTU field.
fn icmp_parts(pkt: &[u8]) -> (IpAddr, u16, IpAddr, u16, u8, u8, u32) {
    let family = if pkt[0] >> 4 == 4 { IpFamily::V4 } else { IpFamily::V6 };
    let icmp = if family == IpFamily::V4 { 20 } else { 40 };
    let (s, sport, d, dport) = quoted(pkt, family);
    let addr = |a: Vec<u8>| match <[u8; 4]>::try_from(a.as_slice()) {
        Ok(v4) => IpAddr::from(v4),
        Err(_) => IpAddr::from(<[u8; 16]>::try_from(a.as_slice()).unwrap()),
    };
    let mtu = u32::from_be_bytes(pkt[icmp + 4..icmp + 8].try_into().unwrap());
    (addr(s), sport, addr(d), dport, pkt[icmp], pkt[icmp + 1], mtu)
}

fn outer(pkt: &[u8]) -> (IpAddr, IpAddr) {
    if pkt[0] >> 4 == 4 {
        let s: [u8; 4] = pkt[12..16].try_into().unwrap();
        let d: [u8; 4] = pkt[16..20].try_into().unwrap();
        (IpAddr::from(s), IpAddr::from(d))
    } else {
        let s: [u8; 16] = pkt[8..24].try_into().unwrap();
        let d: [u8; 16] = pkt[24..40].try_into().unwrap();
        (IpAddr::from(s), IpAddr::from(d))
    }
}

/// ICMP errors of nat64 and nat46 flows cross the families (RFC 7915 §4.2,
/// §5.2), so PMTUD and port unreachables work through such a Service: from
/// the pods' side, about a translated request, to the client about what
/// it sent; and from the clients' side, about a translated reply, to the
/// pod about what it sent. Types, codes and the MTU (20
/// bytes apart) are mapped; every checksum is verified from scratch.
#[test]
fn nat46_nat64_icmp_errors_cross_families() {
    // nat64: an IPv4 router on the pods' side says the request was too big.
    let c = xlat_setup(NatType::Nat64, "2001:db8:64::10/128", &["198.51.100.5"], 2);
    let (mut w0, mut w1) = (c.worker(0).unwrap(), c.worker(1).unwrap());
    let client = [0x20, 0x01, 0x0d, 0xb8, 0xc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    let vip6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0x64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
    let req = emit(&Spec::new(IpFamily::V6, proto::TCP, &client, &vip6, (5555, 80)).payload(&[1; 100]));
    let (_, out) = run(&mut w0, req, Capture::Prefix(0), 1);
    let (src, _) = outer(&out);
    for (t, code, want) in [(3u8, 4u8, (2u8, 0u8, 1420u32)), (3, 3, (1, 4, 0)), (11, 0, (3, 0, 0))] {
        let err = icmp_error(IpFamily::V4, &[198, 51, 100, 254], &out[12..16], t, code, 1400, &out);
        let (rv, back) = run_replies(&mut w1, vec![err]);
        assert_eq!(rv[0], ReplyVerdict::TranslatedTo { vip: 0, v6: true }, "type {t} code {code}");
        let e = &back[0];
        assert_eq!(verify_icmp(e, IpFamily::V6), Ok(()));
        assert_eq!(outer(e), (IpAddr::from(vip6), IpAddr::from(client)), "from the VIP to the client");
        let (qs, qsp, qd, qdp, et, ec, mtu) = icmp_parts(e);
        assert_eq!((qs, qsp, qd, qdp), (IpAddr::from(client), 5555, IpAddr::from(vip6), 80), "what it sent");
        assert_eq!((et, ec), (want.0, want.1));
        if want.2 != 0 {
            assert_eq!(mtu, want.2, "IPv4's 1400 is IPv6's 1420");
        }
        assert_ne!(src, IpAddr::from(vip6));
    }
    // nat64, the other way: the pod's reply, translated, is too big on the
    // clients' side (an IPv6 router): the pod gets fragmentation needed
    // from the nat64 source, about what it sent (pod -> source:port).
    let (_, replied) = run_replies(&mut w1, vec![reply_to(&out)]);
    let router6 = [0x20, 0x01, 0x0d, 0xb8, 0xc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe];
    let err = icmp_error(IpFamily::V6, &router6, &vip6, 2, 0, 1300, &replied[0]);
    // (On the other worker than the flow's: the binding is found anyway.)
    let (v, e) = run(&mut w1, err, Capture::Prefix(0), 2);
    assert!(matches!(v, Verdict::Forward { vip: 0, .. }), "{v:?}");
    assert_eq!(verify_icmp(&e, IpFamily::V4), Ok(()));
    let (source, pod) = (outer(&out).0, ip("198.51.100.5"));
    assert_eq!(outer(&e), (source, pod));
    let (qs, qsp, qd, qdp, et, ec, mtu) = icmp_parts(&e);
    let sport = u16::from_be_bytes([out[20], out[21]]);
    assert_eq!((qs, qsp, qd, qdp), (pod, 8080, source, sport), "what the pod sent");
    assert_eq!((et, ec, mtu & 0xffff), (3, 4, 1280));
    // About a flow that has no binding: not translated.
    let stray = emit(&Spec::new(IpFamily::V6, proto::TCP, &vip6, &client, (80, 5999)));
    let err = icmp_error(IpFamily::V6, &router6, &vip6, 2, 0, 1300, &stray);
    let (v, _) = run(&mut w1, err, Capture::Prefix(0), 2);
    assert_eq!(v, Verdict::Drop(DropReason::Nat(NatError::TranslationNotSupported)));
    // nat46: an IPv6 router on the pods' side, and an IPv4 one on the
    // clients' side.
    let c = xlat_setup(NatType::Nat46, "192.0.2.10/32", &["2001:db8:b::1"], 2);
    let (mut w0, mut w1) = (c.worker(0).unwrap(), c.worker(1).unwrap());
    let req = v4(proto::UDP, [198, 51, 100, 7], 40000, [192, 0, 2, 10], 80);
    let req_copy = req.clone();
    let (_, out) = run(&mut w0, req, Capture::Prefix(0), 1);
    let router6 = [0x20, 0x01, 0x0d, 0xb8, 0xb, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe];
    let err = icmp_error(IpFamily::V6, &router6, &out[8..24], 2, 0, 1300, &out);
    let (rv, back) = run_replies(&mut w1, vec![err]);
    assert_eq!(rv[0], ReplyVerdict::TranslatedTo { vip: 0, v6: false });
    let e = &back[0];
    assert_eq!(verify_icmp(e, IpFamily::V4), Ok(()));
    assert_eq!(outer(e), (ip("192.0.2.10"), ip("198.51.100.7")));
    let (qs, qsp, qd, qdp, et, ec, mtu) = icmp_parts(e);
    assert_eq!((qs, qsp, qd, qdp), (ip("198.51.100.7"), 40000, ip("192.0.2.10"), 80));
    assert_eq!((et, ec, mtu & 0xffff), (3, 4, 1280), "packet too big 1300 is fragmentation needed 1280");
    assert_eq!(&e[54..56], &req_copy[26..28], "the quoted UDP checksum is the client's own again");
    // The pod's reply, translated, then too big on the clients' side.
    let (_, replied) = run_replies(&mut w1, vec![reply_to(&out)]);
    let err = icmp_error(IpFamily::V4, &[203, 0, 113, 1], &[192, 0, 2, 10], 3, 4, 1200, &replied[0]);
    let (v, e) = run(&mut w0, err, Capture::Prefix(0), 2);
    assert!(matches!(v, Verdict::Forward { vip: 0, .. }), "{v:?}");
    assert_eq!(verify_icmp(&e, IpFamily::V6), Ok(()));
    let embedded = |a: &str| ip(&format!("2001:db8:46::{a}"));
    assert_eq!(outer(&e), (embedded("203.0.113.1"), ip("2001:db8:b::1")), "to the pod");
    let (qs, qsp, qd, qdp, et, ec, mtu) = icmp_parts(&e);
    assert_eq!((qs, qsp, qd, qdp), (ip("2001:db8:b::1"), 8080, embedded("198.51.100.7"), 40000));
    assert_eq!((et, ec, mtu), (2, 0, 1280), "1200 + 20 is below IPv6's minimum");
}

/// Runs `pkts` in batches of at most `MAX_BATCH`; returns each verdict and
/// packet after processing.
fn run_batches(w: &mut Worker, pkts: &[(Vec<u8>, Capture)], now: u32) -> Vec<(Verdict, Vec<u8>)> {
    let mut out = Vec::with_capacity(pkts.len());
    for chunk in pkts.chunks(kp_plugin::dataplane::MAX_BATCH) {
        let mut b = VecBatch::default();
        for (p, cap) in chunk {
            b.push(p.clone(), *cap);
        }
        let mut v = vec![Verdict::Drop(DropReason::NoVip); chunk.len()];
        w.process(&mut b, now, &mut v);
        out.extend(v.into_iter().zip(b.packets));
    }
    out
}

/// `kp conf buckets` on a loaded table: every established flow keeps its
/// pod (though Maglev now picks others for half of them) and its replies
/// are still translated, on both workers; the old tables drain (moved by
/// their own packets and a few buckets a batch) and are freed; pod
/// references follow the flows exactly, also for flows a shrunk table has
/// no room for.
#[test]
fn resizes_keep_established_flows_on_their_pods() {
    let mut c = Controller::new(2);
    c.add_vip(&vip("10.96.0.10/32", Protocol::Any, 80, 8080, 0)).unwrap();
    c.add_vip(&vip("fd00::10/128", Protocol::Any, 80, 8080, 0)).unwrap();
    // (A timeout longer than the test's ticks: nothing expires on its own.)
    c.set_flow(Some(1 << 10), Some(10_000)).unwrap();
    c.add_pods(&all_ports("10.96.0.10/32"), &[(ip("10.1.0.1"), 1), (ip("10.1.0.2"), 1)]).unwrap();
    c.add_pods(&all_ports("fd00::10/128"), &[(ip("fd01::1"), 1), (ip("fd01::2"), 1)]).unwrap();
    let mut workers = [c.worker(0).unwrap(), c.worker(1).unwrap()];
    let vip6: [u8; 16] = "fd00::10".parse::<std::net::Ipv6Addr>().unwrap().octets();
    let flows: Vec<Vec<(Vec<u8>, Capture)>> = (0..2u32)
        .map(|t| {
            (0..1000u32)
                .map(|i| {
                    let src = [172, 16 + t as u8, (i >> 8) as u8, i as u8];
                    if i % 2 == 0 {
                        (v4(proto::UDP, src, 1000 + i as u16, [10, 96, 0, 10], 80), Capture::Prefix(0))
                    } else {
                        let mut s6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                        s6[12..].copy_from_slice(&src);
                        let pkt =
                            emit(&Spec::new(IpFamily::V6, proto::TCP, &s6, &vip6, (1000, 80)).payload(b"x"));
                        (pkt, Capture::Prefix(1))
                    }
                })
                .collect()
        })
        .collect();
    let dst_of = |out: &[u8]| parse(out).unwrap().dst;
    let mut pods: Vec<Vec<[u8; 16]>> = Vec::new();
    let mut tracked = Vec::new();
    for (w, f) in workers.iter_mut().zip(flows) {
        let out = run_batches(w, &f, 1);
        // A second packet establishes each flow (a first one alone is
        // embryonic, soon expired).
        run_batches(w, &f, 1);
        // (A bucket may be full already: such flows are not tracked.)
        let new: Vec<bool> = out
            .iter()
            .map(|(v, _)| matches!(v, Verdict::Forward { outcome: FlowOutcome::New, .. }))
            .collect();
        assert!(new.iter().filter(|&&n| n).count() > 950);
        pods.push(out.iter().zip(&new).filter(|(_, &n)| n).map(|((_, p), _)| dst_of(p)).collect());
        tracked.push(f.into_iter().zip(&new).filter(|(_, &n)| n).map(|(p, _)| p).collect::<Vec<_>>());
    }
    let flows = tracked;
    let n_tracked = flows[0].len() + flows[1].len();
    // New pods: Maglev would now send many of these flows elsewhere.
    c.add_pods(&all_ports("10.96.0.10/32"), &[(ip("10.1.0.3"), 1), (ip("10.1.0.4"), 1)]).unwrap();
    c.add_pods(&all_ports("fd00::10/128"), &[(ip("fd01::3"), 1), (ip("fd01::4"), 1)]).unwrap();
    let live_refs = |c: &Controller| -> i64 {
        let dp = c.cell().load();
        (0..dp.pods.len() as u32).map(|p| c.refs().sum(p)).sum()
    };
    let check = |w: &mut Worker, f: &[(Vec<u8>, Capture)], pods: &[[u8; 16]], now: u32| {
        let out = run_batches(w, f, now);
        let mut replies = Vec::new();
        let bad: Vec<_> = out
            .iter()
            .enumerate()
            .filter(|(_, (v, _))| !matches!(v, Verdict::Forward { outcome: FlowOutcome::Hit, .. }))
            .map(|(i, (v, p))| (i, *v, parse(p).unwrap().family))
            .collect();
        assert!(bad.is_empty(), "{} of {} at {now}: {:?}", bad.len(), out.len(), &bad[..bad.len().min(4)]);
        for ((v, pkt), pod) in out.iter().zip(pods) {
            assert!(matches!(v, Verdict::Forward { outcome: FlowOutcome::Hit, .. }), "{v:?} at {now}");
            assert_eq!(&dst_of(pkt), pod, "a flow changed pod");
            replies.push(reply_to(pkt));
        }
        let rv: Vec<ReplyVerdict> = replies
            .chunks(kp_plugin::dataplane::MAX_BATCH)
            .flat_map(|r| run_replies(w, r.to_vec()).0)
            .collect();
        let lost: Vec<_> =
            rv.iter().enumerate().filter(|(_, v)| !matches!(v, ReplyVerdict::Translated { .. })).collect();
        assert!(
            lost.is_empty(),
            "replies lost at {now}: {} of {}: {:?}",
            lost.len(),
            rv.len(),
            &lost[..lost.len().min(5)]
        );
    };

    // Grow: worker 0 sees its flows right after the resize (each moves on
    // its own miss), worker 1 first drains without them.
    c.set_flow(Some(1 << 12), None).unwrap();
    check(&mut workers[0], &flows[0], &pods[0], 2);
    assert!(workers[0].draining() && c.resizing());
    let idle = (v4(proto::UDP, [1, 1, 1, 1], 1, [10, 96, 0, 99], 1), Capture::Prefix(0));
    for now in 2..2 + (1 << 10) / kp_plugin::dataplane::DRAIN_PER_BATCH {
        run_batches(&mut workers[1], std::slice::from_ref(&idle), now);
        run_batches(&mut workers[0], std::slice::from_ref(&idle), now);
    }
    assert!(!workers[0].draining() && !workers[1].draining(), "old tables drained and freed");
    assert_eq!(c.cell().load().reverse.n_older(), 1, "the old reply table waits for the controller");
    c.collect_garbage();
    assert!(!c.resizing());
    assert_eq!(c.cell().load().reverse.n_older(), 0, "then goes");
    for (t, w) in workers.iter_mut().enumerate() {
        check(w, &flows[t], &pods[t], 300);
        assert_eq!(w.flows().n_buckets(), 1 << 12);
        assert_eq!(w.live_flows(300), flows[t].len());
    }
    assert_eq!(live_refs(&c), n_tracked as i64);
    assert_eq!(c.cell().load().reverse.len(), n_tracked);

    // Two resizes before the workers see either: the first drain is done at
    // once, the second as before.
    c.set_flow(Some(1 << 11), None).unwrap();
    c.set_flow(Some(1 << 13), None).unwrap();
    for (t, w) in workers.iter_mut().enumerate() {
        check(w, &flows[t], &pods[t], 301);
        w.sweep_idle(u32::MAX, 301);
        assert!(!w.draining());
    }
    c.collect_garbage();
    assert!(!c.resizing());

    // Away and back to the same size before the workers see it: the reply
    // tables were replaced all the same, so the flows must still move.
    c.set_flow(Some(1 << 12), None).unwrap();
    c.set_flow(Some(1 << 13), None).unwrap();
    for (t, w) in workers.iter_mut().enumerate() {
        w.sweep_idle(u32::MAX, 301);
        assert_eq!(w.flows().n_buckets(), 1 << 13);
        c.collect_garbage();
        check(w, &flows[t], &pods[t], 301);
    }
    assert!(!c.resizing());

    // Shrink below what fits (64 buckets x 3 entries per worker): flows
    // without room end, their references and reply state with them.
    c.set_flow(Some(64), None).unwrap();
    for w in workers.iter_mut() {
        w.sweep_idle(u32::MAX, 302);
    }
    c.collect_garbage();
    let live: usize = workers.iter().map(|w| w.live_flows(302)).sum();
    assert!(live <= 2 * 64 * kp_plugin::flowtable::ENTRIES_PER_BUCKET && live > 0, "{live}");
    assert_eq!(live_refs(&c), live as i64, "one reference per live flow");
    // (The shrunk reply table is three quarters full here: about 1% of
    // its inserts find both buckets full, and those replies would pass
    // untranslated, as for any new flow.)
    let replies = c.cell().load().reverse.len();
    assert!(replies <= live && replies * 100 >= live * 97, "{replies} reply entries for {live} flows");
}

/// A shorter timeout while nat64 flows are established: a flow noted
/// under the long one (whose note's epochs were four ticks long) is not
/// taken at its old note's word under the new one, where that note reads
/// as just made. Its binding expired under the new timeout and another
/// flow took the port, so the flow must not leave from it (here it is
/// refused: the pool is full).
#[test]
fn nat64_notes_of_an_old_timeout_are_not_trusted() {
    let mut c = xlat_setup(NatType::Nat64, "2001:db8:64::10/128", &["198.51.100.5"], 1);
    c.set_flow(None, Some(3600)).unwrap();
    let mut w = c.worker(0).unwrap();
    let vip6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0x64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
    let client = [0x20, 1, 0xd, 0xb8, 0, 0xc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    let flow = |n: u16| emit(&Spec::new(IpFamily::V6, proto::UDP, &client, &vip6, (n, 80)).payload(b"x"));
    // Noted at tick 4: epoch 1 of four-tick epochs.
    let (v, first) = run(&mut w, flow(999), Capture::Prefix(0), 4);
    assert!(matches!(v, Verdict::Forward { outcome: FlowOutcome::New, .. }), "{v:?}");
    let (_, again) = run(&mut w, flow(999), Capture::Prefix(0), 5);
    assert!(matches!(run(&mut w, flow(999), Capture::Prefix(0), 5).0, Verdict::Forward { .. }));
    let port = parse(&first).unwrap().src_port;
    assert_eq!(parse(&again).unwrap().src_port, port);
    c.set_flow(None, Some(40)).unwrap();
    // At 1025 (epoch 1025 mod 1024 = 1 of one-tick epochs) the flow's
    // entry still lives (until 3605), its binding (last stamped at 4,
    // lifetime now 50) does not: 64 new flows take all 64 ports.
    let mut taken = std::collections::HashSet::new();
    for n in 0..64 {
        let (v, out) = run(&mut w, flow(2000 + n), Capture::Prefix(0), 1025);
        assert!(matches!(v, Verdict::Forward { .. }), "flow {n}: {v:?}");
        taken.insert(parse(&out).unwrap().src_port);
    }
    assert!(taken.contains(&port), "the old flow's port went to a new flow");
    let (v, out) = run(&mut w, flow(999), Capture::Prefix(0), 1025);
    if let Verdict::Forward { .. } = v {
        panic!("the old flow left from port {} of another flow", parse(&out).unwrap().src_port);
    }
    assert_eq!(v, Verdict::Drop(DropReason::Nat(NatError::PortsExhausted)));
}
