//! A SYN flood against established flows: `cargo run --release --example
//! flood [established] [flood]` sets up `established` TCP connections
//! (SYN, then the handshake's ACK), sends `flood` SYNs from distinct
//! random sources, then the established flows again, and reports how many
//! kept their entry (and pod), the cost per flood packet, and what the
//! table holds once the embryonic timeout has passed. For callgrind:
//! `--collect-atstart=no --toggle-collect='*flood_phase*'` counts the
//! flood alone.

use kp_plugin::config::{PodTarget, Protocol, VipKey, VipSpec};
use kp_plugin::dataplane::{
    Capture, Controller, DropReason, FlowOutcome, VecBatch, Verdict, Worker, MAX_BATCH,
};
use kp_plugin::packet::build::{emit, Spec};
use kp_plugin::packet::{proto, IpFamily};
use std::time::Instant;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

fn tcp(src: u32, sport: u16, flags: u8) -> Vec<u8> {
    let mut s = Spec::new(IpFamily::V4, proto::TCP, &src.to_be_bytes(), &[10, 96, 0, 10], (sport, 80));
    s.tcp_flags = flags;
    emit(&s)
}

/// Runs `pkts` in batches; returns the verdicts.
fn run(w: &mut Worker, pkts: &[Vec<u8>], now: u32) -> Vec<Verdict> {
    let mut out = Vec::with_capacity(pkts.len());
    let mut v = [Verdict::Drop(DropReason::NoVip); MAX_BATCH];
    for chunk in pkts.chunks(MAX_BATCH) {
        let mut b = VecBatch::default();
        for p in chunk {
            b.push(p.clone(), Capture::Prefix(0));
        }
        w.process(&mut b, now, &mut v);
        out.extend_from_slice(&v[..chunk.len()]);
    }
    out
}

/// The flood alone, its batches built beforehand (for callgrind).
#[inline(never)]
fn flood_phase(w: &mut Worker, batches: &mut [VecBatch], now: u32) -> Vec<Verdict> {
    let mut out = Vec::with_capacity(batches.len() * MAX_BATCH);
    let mut v = [Verdict::Drop(DropReason::NoVip); MAX_BATCH];
    for b in batches {
        w.process(b, now, &mut v);
        out.extend_from_slice(&v[..b.packets.len()]);
    }
    out
}

fn main() {
    let mut args = std::env::args().skip(1);
    let established: u32 = args.next().map_or(500_000, |a| a.parse().unwrap());
    let flood: u32 = args.next().map_or(1_000_000, |a| a.parse().unwrap());
    let mut ctl = Controller::new(1);
    // Twice as many buckets as established flows, as the table would be sized.
    ctl.set_flow(Some((established * 2).next_power_of_two().max(16)), Some(3600)).unwrap();
    let key = VipKey { prefix: "10.96.0.10/32".parse().unwrap(), protocol: Protocol::Any, port: 80 };
    ctl.add_vip(&VipSpec { key, target_port: 8080, node_port: 0, nat: None, new_len: Some(1024) }).unwrap();
    let pods: Vec<_> = (1..=16u8).map(|i| (std::net::IpAddr::from([10, 1, 0, i]), 1)).collect();
    ctl.add_pods(&PodTarget { prefix: key.prefix, protocol: None, port: None }, &pods).unwrap();
    let mut w = ctl.worker(0).unwrap();
    let est_src = |f: u32| 0x0a00_0000u32 | f;
    let syns: Vec<_> = (0..established).map(|f| tcp(est_src(f), 1234, SYN)).collect();
    let acks: Vec<_> = (0..established).map(|f| tcp(est_src(f), 1234, ACK)).collect();
    let first = run(&mut w, &syns, 1);
    run(&mut w, &acks, 1);
    let pod_of = |v: &Verdict| match v {
        Verdict::Forward { pod, outcome, .. } => Some((*pod, *outcome)),
        _ => None,
    };
    let tracked = first.iter().filter(|v| matches!(pod_of(v), Some((_, FlowOutcome::New)))).count();
    // The flood: distinct sources outside the established ones.
    let mut x = 0x9e37_79b9u32;
    let flood_pkts: Vec<_> = (0..flood)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            tcp(0xc000_0000 | (x >> 2), (x & 0xffff) as u16 | 1024, SYN)
        })
        .collect();
    let mut batches: Vec<VecBatch> = flood_pkts
        .chunks(MAX_BATCH)
        .map(|c| {
            let mut b = VecBatch::default();
            for p in c {
                b.push(p.clone(), Capture::Prefix(0));
            }
            b
        })
        .collect();
    let t = Instant::now();
    let fv = flood_phase(&mut w, &mut batches, 2);
    let ns = t.elapsed().as_nanos() as f64 / f64::from(flood.max(1));
    let untracked = fv.iter().filter(|v| matches!(pod_of(v), Some((_, FlowOutcome::Untracked)))).count();
    // The established flows again: hits, on the same pod.
    let again = run(&mut w, &acks, 3);
    let kept = first
        .iter()
        .zip(&again)
        .filter(|(a, b)| {
            matches!((pod_of(a), pod_of(b)), (Some((p, FlowOutcome::New)), Some((q, FlowOutcome::Hit))) if p == q)
        })
        .count();
    let live_after = w.flows().live_entries(2 + 5);
    println!(
        "{established} established ({tracked} tracked), {flood} flood SYNs: {:.1} ns/flood packet, {untracked} \
         flood SYNs untracked (table full), {kept} of {tracked} established flows kept their entry and pod, \
         {live_after} entries live after the embryonic timeout (capacity {})",
        ns,
        w.flows().capacity()
    );
}
