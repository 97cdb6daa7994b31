//! A profiling harness for the per-packet path: `cargo run --release
//! --example hit_loop [flows] [seconds]` runs batches of established flows
//! in a loop (nothing else), for `perf record` or callgrind.

use kp_plugin::config::{PodTarget, Protocol, VipKey, VipSpec};
use kp_plugin::dataplane::{Capture, Controller, DropReason, VecBatch, Verdict, MAX_BATCH};
use kp_plugin::packet::build::{emit, Spec};
use kp_plugin::packet::{proto, IpFamily};
use std::time::Instant;

/// Packets restored from pristine copies before each pass (the rewrite is
/// in place).
struct Frame {
    pristine: Vec<Vec<u8>>,
    live: VecBatch,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let flows: u32 = args.next().map_or(1024, |a| a.parse().unwrap());
    let seconds: f64 = args.next().map_or(5.0, |a| a.parse().unwrap());
    let mut ctl = Controller::new(1);
    // Twice as many buckets as flows, as the table would be sized.
    ctl.set_flow(Some(flows.next_power_of_two().max(16) * 2), Some(3600)).unwrap();
    let key = VipKey { prefix: "10.96.0.10/32".parse().unwrap(), protocol: Protocol::Any, port: 80 };
    ctl.add_vip(&VipSpec { key, target_port: 8080, node_port: 0, nat: None, new_len: Some(1024) }).unwrap();
    let pods: Vec<_> = (1..=16u8).map(|i| (std::net::IpAddr::from([10, 1, 0, i]), 1)).collect();
    ctl.add_pods(&PodTarget { prefix: key.prefix, protocol: None, port: None }, &pods).unwrap();
    let mut w = ctl.worker(0).unwrap();
    let payload = [0u8; 18];
    let packet = |f: u32| {
        let src = (0x0a00_0000u32 | f).to_be_bytes();
        emit(&Spec::new(IpFamily::V4, proto::UDP, &src, &[10, 96, 0, 10], (1234, 80)).payload(&payload))
    };
    let frames: Vec<Frame> = (0..flows)
        .collect::<Vec<_>>()
        .chunks(MAX_BATCH)
        .map(|c| {
            let pristine: Vec<Vec<u8>> = c.iter().map(|&f| packet(f)).collect();
            let captures = vec![Capture::Prefix(0); pristine.len()];
            Frame { live: VecBatch { packets: pristine.clone(), captures, ..VecBatch::default() }, pristine }
        })
        .collect();
    let mut frames = frames;
    let mut v = [Verdict::Drop(DropReason::NoVip); MAX_BATCH];
    for f in frames.iter_mut() {
        w.process(&mut f.live, 1, &mut v);
    }
    let start = Instant::now();
    let mut packets = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        for f in frames.iter_mut() {
            for (l, p) in f.live.packets.iter_mut().zip(&f.pristine) {
                l.copy_from_slice(p);
            }
            w.process(&mut f.live, 2, &mut v);
            packets += f.pristine.len() as u64;
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / packets as f64;
    println!("{flows} flows: {ns:.1} ns/packet (including the copy-back), {packets} packets");
}
