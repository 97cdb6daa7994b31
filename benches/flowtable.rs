//! Flow-table lookups in batches of 256, the VPP frame size:
//! `cargo bench --bench flowtable`. Each iteration looks up 256 random
//! established flows (all hits) with the steps the worker's pipeline uses
//! (bucket prefetch from the hash, then the bucket compare that decides an
//! IPv4 hit, some packets later); criterion's throughput line gives the
//! per-lookup rate. Goal: `lookup_hit/1M` within 1.5x of `lookup_hit/1K`,
//! i.e. the batch prefetching hides DRAM latency.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kp_plugin::flowtable::{FlowKey, FlowTable, Hit};
use kp_plugin::packet::{proto, IpFamily, Parsed};

const BATCH: usize = 256;

fn key(i: u32) -> FlowKey {
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&(0x0a00_0000 | (i >> 4)).to_be_bytes());
    let mut dst = [0u8; 16];
    dst[..4].copy_from_slice(&[10, 96, 0, 1]);
    let p = Parsed {
        family: IpFamily::V4,
        protocol: proto::UDP,
        src,
        dst,
        src_port: 1024 + (i & 15) as u16,
        dst_port: 53,
        l4_offset: 20,
        l4_len: 8,
    };
    FlowKey::new(0, &p)
}

/// A simple deterministic xorshift for the access order.
fn order(n: usize, len: usize) -> Vec<usize> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        })
        .collect()
}

fn lookup_hit(c: &mut Criterion) {
    let mut g = c.benchmark_group("lookup_hit");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (label, n) in [("1K", 1usize << 10), ("1M", 1 << 20)] {
        // Twice as many buckets as flows, as a sized deployment would run.
        let buckets = (n as u32).next_power_of_two() * 2;
        let mut t = FlowTable::new(buckets, 1_000_000).unwrap();
        let keys: Vec<FlowKey> =
            (0..n as u32).map(key).filter(|k| t.insert(k, k.hash(), 1, 1).is_ok()).collect();
        // 64 batches of random established flows, cycled through.
        let idx = order(keys.len(), BATCH * 64);
        let batches: Vec<Vec<FlowKey>> =
            idx.chunks(BATCH).map(|c| c.iter().map(|&i| keys[i]).collect()).collect();
        let mut hashes = [0u64; BATCH];
        let mut out = [None::<Hit>; BATCH];
        let mut b = 0;
        // As in the worker: each lookup finishes LEAD packets after its
        // bucket prefetch went out.
        const LEAD: usize = 24;
        g.bench_function(BenchmarkId::from_parameter(label), |bench| {
            bench.iter(|| {
                let keys = &batches[b];
                for j in 0..BATCH + LEAD {
                    if j < BATCH {
                        hashes[j] = keys[j].hash();
                        t.prefetch_bucket(hashes[j]);
                    }
                    if j >= LEAD {
                        let i = j - LEAD;
                        let (h, id) = (hashes[i], keys[i].compact());
                        let c = t.candidates(h, id, 2);
                        // (A flow whose first bucket was full lives in its
                        // second: the worker's general path finds it.)
                        out[i] = t.hit(h, c, 2, true).or_else(|| t.hit_other(h, id, 2, true));
                    }
                }
                b = (b + 1) % batches.len();
                assert!(out.iter().all(Option::is_some));
            })
        });
    }
    g.finish();
}

criterion_group!(benches, lookup_hit);
criterion_main!(benches);
