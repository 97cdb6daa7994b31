//! The whole per-packet path without VPP: parse, classify, batched flow
//! lookup, Maglev on a miss, DNAT with checksums. Batches of 256 64-byte
//! frames (46-byte IPv4 packets), half TCP and half UDP, all of established
//! flows: `cargo bench --bench pipeline`. Criterion's throughput line gives
//! packets per second; time per iteration / 256 is ns per packet.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use kp_plugin::config::{PodTarget, Protocol, VipKey, VipSpec};
use kp_plugin::dataplane::{Capture, Controller, DropReason, VecBatch, Verdict, MAX_BATCH};
use kp_plugin::packet::build::{emit, Spec};
use kp_plugin::packet::{proto, IpFamily};

/// A 64-byte Ethernet frame carries a 46-byte IP packet.
const IP_LEN: usize = 46;

fn packet(flow: u32) -> Vec<u8> {
    let (protocol, hdr) = if flow % 2 == 0 { (proto::TCP, 40) } else { (proto::UDP, 28) };
    let payload = [0x5au8; IP_LEN];
    let src = (0x0a00_0000u32 | (flow >> 6)).to_be_bytes();
    let spec = Spec::new(IpFamily::V4, protocol, &src, &[10, 96, 0, 10], (1024 + (flow & 63) as u16, 80))
        .payload(&payload[..IP_LEN - hdr]);
    let p = emit(&spec);
    debug_assert_eq!(p.len(), IP_LEN);
    p
}

fn nat44_hit(c: &mut Criterion) {
    let mut g = c.benchmark_group("nat44_hit");
    g.throughput(Throughput::Elements(MAX_BATCH as u64));
    for (label, n_flows) in [("1K", 1u32 << 10), ("1M", 1 << 20)] {
        let mut ctl = Controller::new(1);
        // Twice as many buckets as flows, as a sized deployment would run.
        ctl.set_flow(Some(n_flows.next_power_of_two() * 2), Some(3600)).unwrap();
        let key = VipKey { prefix: "10.96.0.10/32".parse().unwrap(), protocol: Protocol::Any, port: 80 };
        ctl.add_vip(&VipSpec { key, target_port: 8080, node_port: 0, nat: None, new_len: Some(1024) })
            .unwrap();
        let pods: Vec<_> = (1..=16u8).map(|i| (std::net::IpAddr::from([10, 1, 0, i]), 1)).collect();
        ctl.add_pods(&PodTarget { prefix: key.prefix, protocol: None, port: None }, &pods).unwrap();
        let mut worker = ctl.worker(0).unwrap();
        let mut verdicts = [Verdict::Drop(DropReason::NoVip); MAX_BATCH];

        // Establish every flow.
        let packets: Vec<Vec<u8>> = (0..n_flows).map(packet).collect();
        for chunk in packets.chunks(MAX_BATCH) {
            let mut b = VecBatch::default();
            for p in chunk {
                b.push(p.clone(), Capture::Prefix(0));
            }
            worker.process(&mut b, 1, &mut verdicts);
        }
        // Batches of random established flows.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let batches: Vec<VecBatch> = (0..64)
            .map(|_| {
                let mut b = VecBatch::default();
                for _ in 0..MAX_BATCH {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b.push(packets[(x % u64::from(n_flows)) as usize].clone(), Capture::Prefix(0));
                }
                b
            })
            .collect();
        let mut i = 0;
        g.bench_function(BenchmarkId::from_parameter(label), |bench| {
            bench.iter_batched_ref(
                || {
                    i = (i + 1) % batches.len();
                    batches[i].clone()
                },
                |b| {
                    worker.process(b, 2, &mut verdicts);
                    assert!(matches!(verdicts[0], Verdict::Forward { .. }));
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, nat44_hit);
criterion_main!(benches);
