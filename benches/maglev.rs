//! Maglev table build time: `cargo bench --bench maglev`.
//! Goal for `build/65537/1000`: under 1 ms (the paper reports 1.8 ms).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use kp_plugin::maglev::{Backend, Table};

fn pods(n: u32) -> Vec<Backend> {
    (0..n)
        .map(|i| {
            let mut addr = [0u8; 16];
            addr[..4].copy_from_slice(&[10, 1, (i >> 8) as u8, i as u8]);
            Backend { addr, weight: 1, id: i }
        })
        .collect()
}

fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("build");
    for (m, n) in [(65537u32, 1000u32), (1024, 10), (65536, 1000), (1048576, 10000)] {
        let backends = pods(n);
        g.bench_with_input(BenchmarkId::new(m.to_string(), n), &backends, |b, backends| {
            b.iter(|| Table::build(black_box(backends), m))
        });
    }
    g.finish();
}

criterion_group!(benches, build);
criterion_main!(benches);
