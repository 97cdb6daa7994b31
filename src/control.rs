//! The control plane shared by the CLI and the binary API: applies
//! [`Change`]s to the [`Controller`] and renders `show` output.
//!
//! Runs on VPP's main thread with the workers parked at the barrier; every
//! change is validated completely before anything is modified, so a
//! rejected command leaves the configuration exactly as it was.

use crate::config::{ConfigError, FlowChange, IpPrefix, PodTarget, VipKey, VipSpec, XlatChange};
use crate::dataplane::Controller;
use crate::packet::IpFamily;
use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::IpAddr;

/// A configuration change, as the CLI and the binary API both ask for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Conf(FlowChange),
    /// Whether VIPs without pods reject new flows (else drop them).
    Reject(bool),
    /// The nat46 prefix and nat64 source pool.
    Xlat(XlatChange),
    AddVip(VipSpec),
    DelVip(VipKey),
    AddPods {
        target: PodTarget,
        pods: Vec<(IpAddr, u32)>,
    },
    DelPods {
        target: PodTarget,
        pods: Vec<IpAddr>,
        flush: bool,
    },
}

/// Per-VIP data-path counters (summed over threads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VipCounters {
    /// Packets of established flows.
    pub existing: u64,
    /// First packets of new flows.
    pub first: u64,
    /// Packets forwarded without a flow-table entry (bucket full).
    pub untracked: u64,
    /// Packets dropped because no pod takes new flows.
    pub no_pod: u64,
}

/// One worker thread's flow table, for `show kp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowTableStats {
    pub thread: usize,
    pub buckets: u32,
    pub capacity: usize,
    /// Live entries of this table.
    pub live: usize,
    /// Bytes of its IPv6 key array (0 without one: no IPv6 VIPs so far).
    pub ipv6_key_bytes: usize,
    /// While flows are still moving out of the table a resize replaced:
    /// the live entries left there (not in `live`, nor in `capacity`).
    pub old_table: Option<usize>,
}

/// What `show` needs from the running data path.
pub trait DataPathView {
    fn flow_tables(&self) -> Vec<FlowTableStats>;
    fn vip_counters(&self, vip: u32) -> VipCounters;
    fn pod_packets(&self, pod: u32) -> u64;
    /// The data path's current tick (seconds; views without a clock are
    /// at the first tick).
    fn now(&self) -> u32 {
        1
    }
}

/// Interfaces with reply translation enabled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interfaces {
    /// (family, sw_if_index, name)
    pub enabled: BTreeSet<(u8, u32, String)>,
    /// Interfaces whose local addresses capture NodePort traffic (all of
    /// them while any VIP has a NodePort).
    pub nodeport: BTreeSet<u32>,
    /// Interfaces whose output translates VPP's own ICMP errors about kp
    /// flows (all of them while any nat44/nat66 VIP exists).
    pub icmp_out: BTreeSet<u32>,
    /// Installed reply captures of nat46/nat64 flows: the nat46 prefix and
    /// the nat64 source addresses, while VIPs of their type exist.
    pub xlat_captures: BTreeSet<IpPrefix>,
}

/// The whole control-plane state of kp.
pub struct Kp {
    pub controller: Controller,
    pub interfaces: Interfaces,
}

/// What happened to a change: the VIPs whose FIB capture must change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// VIP prefixes that gained their first VIP (install capture).
    pub prefixes_added: Vec<(IpPrefix, u32)>,
    /// VIP prefixes that lost their last VIP (remove capture).
    pub prefixes_removed: Vec<(IpPrefix, u32)>,
}

impl Kp {
    /// Whether any VIP has a NodePort (then the node's own addresses
    /// capture NodePort traffic).
    pub fn wants_nodeport(&self) -> bool {
        self.controller.config().vips.values().any(|v| v.node_port != 0)
    }

    /// Whether any VIP's pods are of its own family (nat44/nat66): VPP's
    /// own ICMP errors about their requests go straight to the client,
    /// and the interfaces' output must translate them.
    pub fn wants_icmp_out(&self) -> bool {
        self.controller.config().vips.values().any(|v| !v.nat.translates())
    }

    /// Where replies of nat46/nat64 flows arrive (see
    /// [`Interfaces::xlat_captures`]).
    pub fn wanted_xlat_captures(&self) -> BTreeSet<IpPrefix> {
        let c = self.controller.config();
        let has = |nat| c.vips.values().any(|v| v.nat == nat);
        let mut want = BTreeSet::new();
        if has(crate::nat::NatType::Nat46) {
            want.insert(IpPrefix::from(c.xlat.nat46_prefix));
        }
        if has(crate::nat::NatType::Nat64) {
            want.extend(c.xlat.nat64_sources.iter().map(|a| IpPrefix::host(IpAddr::V4(*a))));
        }
        want
    }

    /// Whether the VIPs of `prefix` are nat46/nat64 (all of them are, or
    /// none: one NAT type per prefix).
    pub fn prefix_translates(&self, prefix: &IpPrefix) -> bool {
        self.controller.config().vips.values().any(|v| v.key.prefix == *prefix && v.nat.translates())
    }

    pub fn new(n_threads: usize) -> Kp {
        Kp { controller: Controller::new(n_threads), interfaces: Interfaces::default() }
    }

    /// Applies a configuration change. Errors are one line of text.
    pub fn apply(&mut self, cmd: &Change) -> Result<Applied, String> {
        self.apply_typed(cmd).map_err(|e| e.to_string())
    }

    /// [`Kp::apply`] with the error as a value (the API maps it to retvals).
    pub fn apply_typed(&mut self, cmd: &Change) -> Result<Applied, ConfigError> {
        let c = &mut self.controller;
        let mut applied = Applied::default();
        let e = |e: ConfigError| e;
        match cmd {
            Change::Conf(f) => c.change_flow(f).map_err(e)?,
            Change::Reject(on) => c.set_reject(*on),
            Change::Xlat(x) => c.set_xlat(x).map_err(e)?,
            Change::AddVip(spec) => {
                let had = c.prefix_index(&spec.key.prefix).is_some();
                c.add_vip(spec).map_err(e)?;
                if !had {
                    let idx = c.prefix_index(&spec.key.prefix).expect("just added");
                    applied.prefixes_added.push((spec.key.prefix, idx));
                }
            }
            Change::DelVip(key) => {
                let idx = c.prefix_index(&key.prefix);
                c.del_vip(key).map_err(e)?;
                if let (Some(idx), None) = (idx, c.prefix_index(&key.prefix)) {
                    applied.prefixes_removed.push((key.prefix, idx));
                }
            }
            Change::AddPods { target, pods } => c.add_pods(target, pods).map_err(e)?,
            Change::DelPods { target, pods, flush } => c.del_pods(target, pods, *flush).map_err(e)?,
        }
        // A good moment to free pods nothing references any more.
        self.controller.collect_garbage();
        Ok(applied)
    }

    /// `kp conf` with the flow tables following it: `resize` makes them
    /// take the new configuration. If it cannot, the old values are put
    /// back (tables included) and the change is refused: nothing changed.
    pub fn apply_conf(
        &mut self,
        change: FlowChange,
        mut resize: impl FnMut(crate::config::FlowConf) -> Result<(), ConfigError>,
    ) -> Result<(), ConfigError> {
        let old = self.controller.config().flow;
        self.apply_typed(&Change::Conf(change))?;
        if let Err(e) = resize(self.controller.config().flow) {
            self.apply_typed(&Change::Conf(FlowChange::to(old)))?;
            let _ = resize(old);
            return Err(e);
        }
        Ok(())
    }

    /// `show kp`
    pub fn show(&mut self, view: &dyn DataPathView) -> String {
        self.controller.collect_garbage();
        let c = &self.controller;
        let flow = c.config().flow;
        let mut s = String::new();
        let n_vips = c.config().vips.len();
        let n_pods: usize = c.config().vips.values().map(|v| v.pods.len()).sum();
        let _ = writeln!(s, "kp: {n_vips} VIPs, {n_pods} pods, {} draining", c.draining_pods().count());
        let _ = writeln!(
            s,
            "  flow table: {} buckets per thread, timeout {} s, embryonic timeout {} s",
            flow.buckets,
            flow.timeout,
            flow.embryonic.min(flow.timeout)
        );
        let _ = writeln!(
            s,
            "  no endpoints: {}",
            if c.config().no_endpoint_drop {
                "drop"
            } else {
                "reject (TCP reset, ICMP port unreachable; at most 1000/s per thread)"
            }
        );
        let x = &c.config().xlat;
        let _ = writeln!(s, "  nat46 prefix: {}", x.nat46_prefix);
        let sources: Vec<String> = x.nat64_sources.iter().map(|a| a.to_string()).collect();
        let _ = match c.nat64_pool() {
            None => writeln!(s, "  nat64 source: none"),
            Some(pool) => writeln!(
                s,
                "  nat64 source: {} ports {}-{} ({} live bindings)",
                sources.join(","),
                x.nat64_ports.0,
                x.nat64_ports.1,
                pool.live_bindings(view.now(), crate::nat64::binding_lifetime(c.config().flow.timeout))
            ),
        };
        for t in view.flow_tables() {
            let pct = if t.capacity == 0 { 0.0 } else { 100.0 * t.live as f64 / t.capacity as f64 };
            let _ = writeln!(
                s,
                "  thread {}: {} buckets, {} of {} entries in use ({pct:.1}%){}{}",
                t.thread,
                t.buckets,
                t.live,
                t.capacity,
                match t.ipv6_key_bytes {
                    0 => String::new(),
                    b => format!(", IPv6 keys {} MiB", b.div_ceil(1 << 20)),
                },
                match t.old_table {
                    Some(n) => format!(", resizing: {n} flows still in the old table"),
                    None => String::new(),
                }
            );
        }
        if !self.interfaces.nodeport.is_empty() {
            let _ = writeln!(s, "  NodePort capture on {} interfaces", self.interfaces.nodeport.len());
        }
        if self.interfaces.enabled.is_empty() {
            let _ = writeln!(s, "  reply translation: no interfaces");
        }
        for (fam, _, name) in &self.interfaces.enabled {
            let _ = writeln!(s, "  reply translation nat{fam} in {name}");
        }
        s
    }

    /// `show kp vip [<prefix>] [verbose]`
    pub fn show_vips(&mut self, prefix: Option<IpPrefix>, verbose: bool, view: &dyn DataPathView) -> String {
        self.controller.collect_garbage();
        let c = &self.controller;
        let dp = c.cell().load();
        let mut s = String::new();
        let mut selected: Vec<(&VipKey, &crate::config::Vip)> = c
            .config()
            .vips
            .iter()
            .filter(|(k, _)| prefix.is_none_or(|p| p == k.prefix || p.contains(&k.prefix.addr())))
            .collect();
        // Operators read VIPs by address, then port.
        selected.sort_by_key(|(k, _)| (k.prefix, k.port, k.protocol));
        if selected.is_empty() {
            return match prefix {
                None => "kp: no VIPs configured\n".into(),
                Some(p) => format!("kp: no VIP matches {p}\n"),
            };
        }
        for (key, vip) in selected {
            let idx = c.vip_index(key).expect("configured VIPs have an index");
            let node_port =
                if vip.node_port == 0 { String::new() } else { format!(" node_port {}", vip.node_port) };
            let _ = writeln!(
                s,
                "[{idx}] {} {} port {} target_port {}{node_port} {} new_len {} pods {}",
                key.prefix,
                key.protocol.name(),
                key.port,
                vip.target_port,
                vip.nat,
                vip.new_len,
                vip.pods.len()
            );
            if !verbose {
                continue;
            }
            let table = dp.vips.get(idx as usize).and_then(|v| v.as_ref()).map(|v| v.table.clone());
            for (addr, weight) in &vip.pods {
                let pod = c.pod_index(idx, addr).expect("configured pods have an index");
                let entries = table.as_ref().map_or(0, |t| t.count(pod));
                let _ = writeln!(
                    s,
                    "    pod {addr} weight {weight} new-flow entries {entries} active flows {} packets {}",
                    c.refs().sum(pod),
                    view.pod_packets(pod)
                );
            }
            for (v, addr, state) in c.draining_pods() {
                if v == idx {
                    let pod = c.pod_index(idx, &addr).expect("draining pods keep their index");
                    let _ = writeln!(
                        s,
                        "    pod {addr} {} active flows {}",
                        if state == crate::dataplane::PodState::Flushed { "flushed" } else { "draining" },
                        c.refs().sum(pod)
                    );
                }
            }
            let k = view.vip_counters(idx);
            let _ = writeln!(
                s,
                "    counters: existing flow packets {}, first packets {}, untracked {}, no pod {}",
                k.existing, k.first, k.untracked, k.no_pod
            );
        }
        s
    }

    /// Records reply translation on an interface (resolved by the caller).
    pub fn set_interface(
        &mut self,
        family: IpFamily,
        sw_if_index: u32,
        name: &str,
        enable: bool,
    ) -> Result<(), String> {
        let fam = if family == IpFamily::V4 { 4 } else { 6 };
        let entry = (fam, sw_if_index, name.to_string());
        if enable {
            if !self.interfaces.enabled.insert(entry) {
                return Err(format!("nat{fam} reply translation is already enabled on {name}"));
            }
        } else if !self.interfaces.enabled.remove(&entry) {
            return Err(format!("nat{fam} reply translation is not enabled on {name}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{parse_pod, parse_vip};

    struct NoTraffic;
    impl DataPathView for NoTraffic {
        fn flow_tables(&self) -> Vec<FlowTableStats> {
            vec![FlowTableStats { buckets: 16, capacity: 64, ..Default::default() }]
        }
        fn vip_counters(&self, _: u32) -> VipCounters {
            VipCounters::default()
        }
        fn pod_packets(&self, _: u32) -> u64 {
            0
        }
    }

    #[test]
    fn conf_that_cannot_be_sized_changes_nothing() {
        let mut kp = Kp::new(1);
        let before = kp.controller.config().flow;
        let change = crate::cli::parse_conf("buckets 1024 timeout 7").unwrap();
        let sized = std::cell::RefCell::new(Vec::new());
        let err = kp
            .apply_conf(change, |f: crate::config::FlowConf| {
                sized.borrow_mut().push(f.buckets);
                if f.buckets == 1024 {
                    Err(ConfigError::OutOfMemory { bytes: 1 })
                } else {
                    Ok(())
                }
            })
            .unwrap_err();
        assert_eq!(err, ConfigError::OutOfMemory { bytes: 1 });
        assert_eq!(kp.controller.config().flow, before);
        assert_eq!(*sized.borrow(), vec![1024, before.buckets], "tables put back too");
        kp.apply_conf(change, |_| Ok(())).unwrap();
        assert_eq!(kp.controller.config().flow.timeout, 7);
    }

    /// While a resize drains the old table, `show kp` counts this table's
    /// entries against this table's capacity, and the old table's apart.
    #[test]
    fn show_counts_a_draining_table_apart() {
        struct Resizing;
        impl DataPathView for Resizing {
            fn flow_tables(&self) -> Vec<FlowTableStats> {
                vec![FlowTableStats {
                    thread: 0,
                    buckets: 16,
                    capacity: 48,
                    live: 12,
                    ipv6_key_bytes: 3 << 20,
                    old_table: Some(700),
                }]
            }
            fn vip_counters(&self, _: u32) -> VipCounters {
                VipCounters::default()
            }
            fn pod_packets(&self, _: u32) -> u64 {
                0
            }
        }
        let show = Kp::new(1).show(&Resizing);
        assert!(
            show.contains("thread 0: 16 buckets, 12 of 48 entries in use (25.0%), IPv6 keys 3 MiB, resizing: 700 flows still in the old table"),
            "{show}"
        );
        assert!(Kp::new(1)
            .show(&NoTraffic)
            .contains("thread 0: 16 buckets, 0 of 64 entries in use (0.0%)\n"));
    }

    #[test]
    fn show_with_no_vips_says_so() {
        let mut kp = Kp::new(1);
        assert_eq!(kp.show_vips(None, true, &NoTraffic), "kp: no VIPs configured\n");
    }

    #[test]
    fn prefixes_added_and_removed_once() {
        let mut kp = Kp::new(1);
        let a = kp.apply(&parse_vip("10.96.0.0/24 port 80 target_port 8080").unwrap()).unwrap();
        assert_eq!(a.prefixes_added.len(), 1);
        let b = kp.apply(&parse_vip("10.96.0.0/24 port 443 target_port 8443").unwrap()).unwrap();
        assert!(b.prefixes_added.is_empty(), "second port on the same prefix");
        let c = kp.apply(&parse_vip("10.96.0.0/24 port 80 del").unwrap()).unwrap();
        assert!(c.prefixes_removed.is_empty());
        let d = kp.apply(&parse_vip("10.96.0.0/24 port 443 del").unwrap()).unwrap();
        assert_eq!(d.prefixes_removed, a.prefixes_added);
    }

    #[test]
    fn verbose_lists_pods_with_table_shares() {
        let mut kp = Kp::new(1);
        kp.apply(&parse_vip("10.96.0.10/32 port 80 target_port 8080 node_port 30080").unwrap()).unwrap();
        kp.apply(&parse_pod("10.96.0.10/32 10.1.0.1 10.1.0.2 weight 3").unwrap()).unwrap();
        let out = kp.show_vips(None, true, &NoTraffic);
        assert_eq!(
            out,
            "[0] 10.96.0.10/32 tcp+udp port 80 target_port 8080 node_port 30080 nat44 new_len 1024 pods 2\n\
             \x20   pod 10.1.0.1 weight 1 new-flow entries 256 active flows 0 packets 0\n\
             \x20   pod 10.1.0.2 weight 3 new-flow entries 768 active flows 0 packets 0\n\
             \x20   counters: existing flow packets 0, first packets 0, untracked 0, no pod 0\n"
        );
    }
}
