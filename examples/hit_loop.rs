//! A profiling harness for the per-packet path: `cargo run --release
//! --example hit_loop [flows] [seconds] [nat44|nat66|nat64|nat46]` runs
//! batches of established flows of one NAT type in a loop (nothing else),
//! for `perf record` or callgrind.

use kp_plugin::config::{PodTarget, Protocol, VipKey, VipSpec, XlatChange};
use kp_plugin::dataplane::{Batch, Capture, Controller, DropReason, FlowOutcome, Verdict, Worker, MAX_BATCH};
use kp_plugin::nat::NatType;
use kp_plugin::packet::build::{emit, Spec};
use kp_plugin::packet::{proto, IpFamily};
use std::time::Instant;

/// Room in front of a packet, as a VPP buffer's pre-data has: nat46 grows
/// the header into it, nat64 shrinks it, without moving any bytes.
const HEADROOM: usize = 128;
const BUFFER: usize = 2048;

/// Packets in fixed buffers with headroom, as a VPP frame holds them, so
/// the family-changing NAT types cost here what they cost in VPP.
/// Packets of one family (IPv6 if `V6`), as a VPP node of one family's
/// arc gets them.
struct Buffers<const V6: bool> {
    bufs: Vec<[u8; BUFFER]>,
    /// By packet: (start, length) in its buffer.
    spans: Vec<(usize, usize)>,
}

impl<const V6: bool> Batch for Buffers<V6> {
    fn len(&self) -> usize {
        self.bufs.len()
    }
    fn packet(&mut self, i: usize) -> &mut [u8] {
        let (start, len) = self.spans[i];
        &mut self.bufs[i][start..start + len]
    }
    fn capture(&self, _i: usize) -> Capture {
        Capture::Prefix(0)
    }
    fn family(&self) -> Option<IpFamily> {
        Some(if V6 { IpFamily::V6 } else { IpFamily::V4 })
    }
    fn advance(&mut self, i: usize, by: usize) -> Option<&mut [u8]> {
        let (start, len) = self.spans[i];
        if by >= len {
            return None;
        }
        self.spans[i] = (start + by, len - by);
        Some(&mut self.bufs[i][start + by..start + len])
    }
    fn move_start(&mut self, i: usize, delta: isize) -> bool {
        let (start, len) = self.spans[i];
        match (start.checked_add_signed(delta), len.checked_add_signed(-delta)) {
            (Some(s), Some(l)) if s + l <= BUFFER => {
                self.spans[i] = (s, l);
                true
            }
            _ => false,
        }
    }
}

/// Packets restored from pristine copies before each pass (the rewrite is
/// in place).
struct Frame<const V6: bool> {
    pristine: Vec<Vec<u8>>,
    live: Buffers<V6>,
}

impl<const V6: bool> Frame<V6> {
    fn restore(&mut self) {
        for (i, p) in self.pristine.iter().enumerate() {
            self.live.bufs[i][HEADROOM..HEADROOM + p.len()].copy_from_slice(p);
            self.live.spans[i] = (HEADROOM, p.len());
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let flows: u32 = args.next().map_or(1024, |a| a.parse().unwrap());
    let seconds: f64 = args.next().map_or(5.0, |a| a.parse().unwrap());
    let kind = args.next().unwrap_or_else(|| "nat44".to_string());
    let (nat, vip, client_v6, pods_v6) = match kind.as_str() {
        "nat44" => (None, "10.96.0.10/32", false, false),
        "nat66" => (Some(NatType::Nat66), "2001:db8::10/128", true, true),
        "nat64" => (Some(NatType::Nat64), "2001:db8::10/128", true, false),
        "nat46" => (Some(NatType::Nat46), "10.96.0.10/32", false, true),
        other => panic!("unknown NAT type {other}"),
    };
    let mut ctl = Controller::new(1);
    // Twice as many buckets as flows, as the table would be sized.
    ctl.set_flow(Some(flows.next_power_of_two().max(16) * 2), Some(3600)).unwrap();
    if nat == Some(NatType::Nat64) {
        // 32 source addresses, as scripts/bench-vpp configures them.
        let sources = (1..=32u8).map(|i| std::net::Ipv4Addr::new(10, 201, 0, i)).collect();
        ctl.set_xlat(&XlatChange { nat64_sources: Some(sources), ..Default::default() }).unwrap();
    }
    let key = VipKey { prefix: vip.parse().unwrap(), protocol: Protocol::Any, port: 80 };
    ctl.add_vip(&VipSpec { key, target_port: 8080, node_port: 0, nat, new_len: Some(1024) }).unwrap();
    let pods: Vec<_> = (1..=16u8)
        .map(|i| {
            let a: std::net::IpAddr = if pods_v6 {
                format!("fd00::{i}").parse().unwrap()
            } else {
                std::net::IpAddr::from([10, 1, 0, i])
            };
            (a, 1)
        })
        .collect();
    ctl.add_pods(&PodTarget { prefix: key.prefix, protocol: None, port: None }, &pods).unwrap();
    let mut w = ctl.worker(0).unwrap();
    let payload = [0u8; 18];
    let vip_addr: Vec<u8> = match key.prefix.addr() {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    let packet = |f: u32| {
        if client_v6 {
            // As scripts/bench-vpp: one client, the flows its source ports.
            let src = "fd01::2".parse::<std::net::Ipv6Addr>().unwrap().octets();
            let sport = (f % 65535 + 1) as u16;
            emit(&Spec::new(IpFamily::V6, proto::UDP, &src, &vip_addr, (sport, 80)).payload(&payload))
        } else {
            let src = (0x0a00_0000u32 | f).to_be_bytes();
            emit(&Spec::new(IpFamily::V4, proto::UDP, &src, &vip_addr, (1234, 80)).payload(&payload))
        }
    };
    if client_v6 {
        run::<true>(&mut w, flows, seconds, packet);
    } else {
        run::<false>(&mut w, flows, seconds, packet);
    }
}

/// Established flows' packets (`packet` of each flow, of family IPv6 if
/// `V6`) through `w`, batch after batch, for `seconds`.
fn run<const V6: bool>(w: &mut Worker, flows: u32, seconds: f64, packet: impl Fn(u32) -> Vec<u8>) {
    let frames: Vec<Frame<V6>> = (0..flows)
        .collect::<Vec<_>>()
        .chunks(MAX_BATCH)
        .map(|c| {
            let pristine: Vec<Vec<u8>> = c.iter().map(|&f| packet(f)).collect();
            let live =
                Buffers { bufs: vec![[0; BUFFER]; pristine.len()], spans: vec![(0, 0); pristine.len()] };
            let mut f = Frame { live, pristine };
            f.restore();
            f
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
            f.restore();
            w.process(&mut f.live, 2, &mut v);
            packets += f.pristine.len() as u64;
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / packets as f64;
    // The figure means something only if every packet was a hit.
    let mut hits = 0;
    for f in frames.iter_mut() {
        f.restore();
        w.process(&mut f.live, 2, &mut v);
        hits += v[..f.pristine.len()]
            .iter()
            .filter(|v| matches!(v, Verdict::Forward { outcome: FlowOutcome::Hit, .. }))
            .count();
    }
    println!("{flows} flows: {ns:.1} ns/packet (including the copy-back), {packets} packets, {hits} hits of {flows}");
}
