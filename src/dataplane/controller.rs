//! The control plane's side of the data plane: pod and VIP indices, their
//! lifecycle (drain, flush, garbage collection) and the snapshots workers
//! read. Runs on the main thread (in VPP: with the workers parked).

use super::{Dataplane, FastPodV4, PodRuntime, PodState, VipRuntime, Worker};
use crate::config::MAX_POD_INDICES;
use crate::config::{
    Config, ConfigError, FlowChange, FlowConf, PodTarget, VipKey, VipSpec, XlatChange, XlatConf,
};
use crate::flowtable::OutOfMemory;
use crate::maglev::{self, Table};
use crate::nat::Endpoint;
use crate::nat64::PortPool;
use crate::refcount::RefCounts;
use crate::reverse::{Replies, ReverseTable};
use crate::snapshot::SnapshotCell;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Control-plane state of one pod index.
#[derive(Debug, Clone, Copy)]
struct PodSlot {
    vip: u32,
    addr: IpAddr,
    /// The VIP's target port (kept: it outlives a deleted VIP).
    target_port: u16,
    /// Whether the VIP is IPv6 (its packets reach the pod from the VIP
    /// family's nodes).
    vip_v6: bool,
    state: PodState,
    /// Generation of the snapshot that stopped new flows to it.
    removed_at: u64,
}

/// Asked before a change that may need higher indices, with the number of
/// VIP and pod indices it may need: what the host keeps per index (VPP:
/// packet counters, in a stats segment of fixed size) must have room for
/// them. An error refuses the change before anything changed.
pub type IndexRoom = Box<dyn Fn(u32, u32) -> Result<(), ConfigError> + Send + Sync>;

/// Owns the configuration and everything derived from it; runs on the
/// main thread (in VPP: under the worker barrier).
pub struct Controller {
    config: Config,
    vip_index: BTreeMap<VipKey, u32>,
    free_vips: Vec<u32>,
    n_vips: u32,
    /// VIP prefix -> capture prefix index.
    prefix_index: BTreeMap<crate::config::IpPrefix, u32>,
    free_prefixes: Vec<u32>,
    pods: Vec<PodSlot>,
    pod_index: HashMap<(u32, IpAddr), u32>,
    free_pods: Vec<u32>,
    /// Pod indices that may be in use at once ([`MAX_POD_INDICES`]; lower in
    /// tests).
    pod_limit: usize,
    /// The host's say on higher indices (see [`IndexRoom`]).
    index_room: Option<IndexRoom>,
    tables: HashMap<u32, Arc<Table>>,
    /// Deleted VIP indices and the generation that deleted them, waiting
    /// for their pods to be freed before reuse.
    retired_vips: Vec<(u32, u64)>,
    /// Pod and VIP indices freed since the last `take_freed` (their
    /// counters must start from zero when reused).
    freed_pods: Vec<u32>,
    freed_vips: Vec<u32>,
    cell: Arc<SnapshotCell<Dataplane>>,
    refs: Arc<RefCounts>,
    reverse: Arc<ReverseTable>,
    /// Reply tables replaced by resizes, each with the flow-table
    /// generation that replaced it: kept until every worker has moved its
    /// flows out of the older flow tables (`settled`).
    older_reverse: Vec<(Arc<ReverseTable>, u64)>,
    flow_gen: u64,
    /// Per thread, written by the workers (see [`Worker`]'s resize).
    settled: Arc<[AtomicU64]>,
    /// nat64 source bindings (rebuilt, empty, when the pool changes).
    nat64: Option<Arc<PortPool>>,
    n_threads: usize,
}

/// The shared reply table for `flow`: as many slots as all workers' flow
/// tables together.
fn reverse_table(flow: &FlowConf, n_threads: usize) -> Result<ReverseTable, ConfigError> {
    let buckets = (flow.buckets as usize * n_threads.max(1)).next_power_of_two().min(1 << 26) as u32;
    ReverseTable::new(buckets).ok_or(ConfigError::OutOfMemory { bytes: buckets as u64 * 320 })
}

impl Controller {
    /// A controller for `n_threads` data-plane threads.
    pub fn new(n_threads: usize) -> Controller {
        let config = Config::default();
        let reverse = Arc::new(reverse_table(&config.flow, n_threads).expect("default reply table"));
        let initial = Dataplane {
            reject: true,
            flow: config.flow,
            flow_gen: 0,
            reverse: Replies::new(Arc::clone(&reverse), Vec::new()),
            nat46_prefix: config.xlat.nat46_prefix,
            nat64: None,
            ipv6_vips: false,
            vips: Vec::new(),
            pods: Vec::new(),
            fast_v4: Vec::new(),
            prefixes: Vec::new(),
            node_ports: Vec::new(),
        };
        Controller {
            config,
            vip_index: BTreeMap::new(),
            free_vips: Vec::new(),
            n_vips: 0,
            prefix_index: BTreeMap::new(),
            free_prefixes: Vec::new(),
            pods: Vec::new(),
            pod_index: HashMap::new(),
            free_pods: Vec::new(),
            pod_limit: MAX_POD_INDICES as usize,
            index_room: None,
            tables: HashMap::new(),
            retired_vips: Vec::new(),
            freed_pods: Vec::new(),
            freed_vips: Vec::new(),
            cell: Arc::new(SnapshotCell::new(initial, n_threads)),
            refs: Arc::new(RefCounts::new(n_threads)),
            reverse,
            older_reverse: Vec::new(),
            flow_gen: 0,
            settled: (0..n_threads.max(1)).map(|_| AtomicU64::new(0)).collect(),
            nat64: None,
            n_threads,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn cell(&self) -> &Arc<SnapshotCell<Dataplane>> {
        &self.cell
    }

    pub fn refs(&self) -> &Arc<RefCounts> {
        &self.refs
    }

    /// A worker for data-plane thread `thread`.
    pub fn worker(&self, thread: usize) -> Result<Worker, OutOfMemory> {
        Worker::new(thread, &self.cell, &self.refs, &self.settled)
    }

    pub fn vip_index(&self, key: &VipKey) -> Option<u32> {
        self.vip_index.get(key).copied()
    }

    pub fn prefix_index(&self, prefix: &crate::config::IpPrefix) -> Option<u32> {
        self.prefix_index.get(prefix).copied()
    }

    /// The pod index of `addr` on a VIP, while it exists (also draining).
    pub fn pod_index(&self, vip: u32, addr: &IpAddr) -> Option<u32> {
        self.pod_index.get(&(vip, *addr)).copied()
    }

    /// Every pod index in use (configured or still draining), its address
    /// and whether its VIP is IPv6.
    pub fn live_pods(&self) -> impl Iterator<Item = (u32, IpAddr, bool)> + '_ {
        self.pods
            .iter()
            .enumerate()
            .filter(|(_, p)| p.state != PodState::Free)
            .map(|(i, p)| (i as u32, p.addr, p.vip_v6))
    }

    /// Pods still held by flows after their deletion.
    pub fn draining_pods(&self) -> impl Iterator<Item = (u32, IpAddr, PodState)> + '_ {
        self.pods
            .iter()
            .filter(|p| matches!(p.state, PodState::Draining | PodState::Flushed))
            .map(|p| (p.vip, p.addr, p.state))
    }

    /// Pod and VIP indices freed since the last call.
    pub fn take_freed(&mut self) -> (Vec<u32>, Vec<u32>) {
        (core::mem::take(&mut self.freed_pods), core::mem::take(&mut self.freed_vips))
    }

    /// How many VIP and pod indices are in use or were (sizes for
    /// per-index counters).
    pub fn index_bounds(&self) -> (u32, u32) {
        (self.n_vips, self.pods.len() as u32)
    }

    pub fn set_flow(&mut self, buckets: Option<u32>, timeout: Option<u32>) -> Result<(), ConfigError> {
        self.change_flow(&FlowChange { buckets, timeout, embryonic: None })
    }

    /// Buckets, timeout and embryonic timeout, all or nothing.
    pub fn change_flow(&mut self, change: &FlowChange) -> Result<(), ConfigError> {
        let mut next = self.config.clone();
        next.change_flow(change)?;
        if next.flow.buckets != self.config.flow.buckets {
            // Reply state gets a table of the new size too; until every
            // worker has drained its old flow table into its new one, the
            // old reply table is read as well (see `Worker`'s resize).
            let table = Arc::new(reverse_table(&next.flow, self.n_threads)?);
            self.retire_replies();
            self.flow_gen += 1;
            self.older_reverse.push((core::mem::replace(&mut self.reverse, table), self.flow_gen));
        }
        self.config.flow = next.flow;
        self.publish();
        Ok(())
    }

    /// Whether new flows to a VIP without pods are rejected (the default)
    /// or dropped silently.
    pub fn set_reject(&mut self, reject: bool) {
        self.config.no_endpoint_drop = !reject;
        self.publish();
    }

    /// The nat46 prefix and the nat64 source pool (see
    /// [`Config::set_xlat`]). A new pool starts with no bindings.
    pub fn set_xlat(&mut self, change: &XlatChange) -> Result<(), ConfigError> {
        let mut next = self.config.clone();
        next.set_xlat(change)?;
        if next.xlat.nat64_pool() != self.config.xlat.nat64_pool() {
            self.nat64 = nat64_pool(&next.xlat, self.n_threads)?;
        }
        self.config.xlat = next.xlat;
        self.publish();
        Ok(())
    }

    /// The nat64 bindings, for `show kp`.
    pub fn nat64_pool(&self) -> Option<&PortPool> {
        self.nat64.as_deref()
    }

    /// Lets the host refuse changes that need VIP or pod indices it has no
    /// room for (see `IndexRoom`).
    pub fn set_index_room(&mut self, room: IndexRoom) {
        self.index_room = Some(room);
    }

    /// Asks the host whether `vips` VIP and `pods` pod indices fit.
    fn check_room(&self, vips: u32, pods: usize) -> Result<(), ConfigError> {
        match &self.index_room {
            Some(room) => room(vips, u32::try_from(pods).unwrap_or(u32::MAX)),
            None => Ok(()),
        }
    }

    /// Adds a VIP; returns its index.
    pub fn add_vip(&mut self, spec: &VipSpec) -> Result<u32, ConfigError> {
        let vips = if self.free_vips.is_empty() { self.n_vips + 1 } else { self.n_vips };
        self.check_room(vips, self.pods.len())?;
        self.config.add_vip(spec)?;
        let idx = self.free_vips.pop().unwrap_or_else(|| {
            self.n_vips += 1;
            self.n_vips - 1
        });
        self.vip_index.insert(spec.key, idx);
        if !self.prefix_index.contains_key(&spec.key.prefix) {
            let p = self.free_prefixes.pop().unwrap_or(self.prefix_index.len() as u32);
            self.prefix_index.insert(spec.key.prefix, p);
        }
        self.rebuild_table(idx, &spec.key);
        self.publish();
        Ok(idx)
    }

    /// Deletes a VIP: its pods are flushed (their flows end) and freed once
    /// no flow references them.
    pub fn del_vip(&mut self, key: &VipKey) -> Result<(), ConfigError> {
        self.config.del_vip(key)?;
        let idx = self.vip_index.remove(key).expect("configured VIP has an index");
        // Its pods end with it, also those deleted earlier and still
        // draining: no packet can reach their flows any more.
        for p in self.pods.iter_mut().filter(|p| p.vip == idx && p.state != PodState::Free) {
            p.state = PodState::Flushed;
        }
        self.tables.remove(&idx);
        if !self.config.vips.keys().any(|k| k.prefix == key.prefix) {
            if let Some(p) = self.prefix_index.remove(&key.prefix) {
                self.free_prefixes.push(p);
            }
        }
        // The VIP index is reused only after garbage collection has freed
        // its pods, so stale flow entries can never point into a new VIP.
        let g = self.publish();
        for p in self.pods.iter_mut().filter(|p| p.vip == idx && p.state == PodState::Flushed) {
            p.removed_at = g;
        }
        self.retired_vips.push((idx, g));
        Ok(())
    }

    /// Adds pods (or updates weights) on every VIP the target selects.
    pub fn add_pods(&mut self, t: &PodTarget, pods: &[(IpAddr, u32)]) -> Result<(), ConfigError> {
        // Refused before anything changes if the new pod indices might not
        // fit (counting every address as new on every VIP it lands on).
        let in_use = self.pods.len() - self.free_pods.len();
        let most_new = self.config.targets(t)?.len().saturating_mul(pods.len());
        if in_use.saturating_add(most_new) > self.pod_limit {
            return Err(ConfigError::TooManyPods { max: self.pod_limit as u32 });
        }
        let grown = self.pods.len() + most_new.saturating_sub(self.free_pods.len());
        self.check_room(self.n_vips, grown)?;
        let keys = self.config.add_pods(t, pods)?;
        for k in &keys {
            let vip = self.vip_index[k];
            for &(addr, _) in pods {
                match self.pod_index.get(&(vip, addr)) {
                    // Re-added while draining: its flows carry on.
                    Some(&p) => self.pods[p as usize].state = PodState::Active,
                    None => {
                        let target_port = self.config.vips[k].target_port;
                        let vip_v6 = k.prefix.family() == crate::packet::IpFamily::V6;
                        let slot = PodSlot {
                            vip,
                            addr,
                            target_port,
                            vip_v6,
                            state: PodState::Active,
                            removed_at: 0,
                        };
                        let p = match self.free_pods.pop() {
                            Some(p) => {
                                self.pods[p as usize] = slot;
                                p
                            }
                            None => {
                                self.pods.push(slot);
                                (self.pods.len() - 1) as u32
                            }
                        };
                        self.pod_index.insert((vip, addr), p);
                    }
                }
            }
            self.rebuild_table(vip, k);
        }
        self.publish();
        Ok(())
    }

    /// Deletes pods: new flows avoid them at once; established flows keep
    /// them until idle, or end now with `flush`.
    pub fn del_pods(&mut self, t: &PodTarget, pods: &[IpAddr], flush: bool) -> Result<(), ConfigError> {
        // With flush, a pod already deleted (draining) can still have its
        // flows ended; everything is checked before anything changes.
        let keys = self.config.targets(t)?;
        let draining = |c: &Controller, k: &VipKey, a: &IpAddr| {
            flush
                && c.vip_index
                    .get(k)
                    .and_then(|v| c.pod_index.get(&(*v, *a)))
                    .is_some_and(|&p| c.pods[p as usize].state == PodState::Draining)
        };
        if pods.is_empty() {
            return Err(ConfigError::NoPods);
        }
        for k in &keys {
            for a in pods {
                if !self.config.vips[k].pods.contains_key(a) && !draining(self, k, a) {
                    return Err(ConfigError::UnknownPod { pod: *a, vip: *k });
                }
            }
        }
        let mut changed = Vec::new();
        for k in &keys {
            let vip = self.vip_index[k];
            for addr in pods {
                self.config.remove_pod(k, addr);
                let p = self.pod_index[&(vip, *addr)];
                self.pods[p as usize].state = if flush { PodState::Flushed } else { PodState::Draining };
                changed.push(p);
            }
            self.rebuild_table(vip, k);
        }
        let g = self.publish();
        for p in changed {
            self.pods[p as usize].removed_at = g;
        }
        Ok(())
    }

    /// Frees deleted pods that nothing can reference any more (the rule in
    /// [`crate::refcount`]), and VIP indices whose pods are all gone.
    /// Returns how many pods were freed.
    pub fn collect_garbage(&mut self) -> usize {
        let mut freed = 0;
        for i in 0..self.pods.len() {
            let p = self.pods[i];
            let deleted = matches!(p.state, PodState::Draining | PodState::Flushed);
            if deleted && self.cell.quiescent_since(p.removed_at) && self.refs.sum(i as u32) == 0 {
                self.pods[i].state = PodState::Free;
                self.pod_index.remove(&(p.vip, p.addr));
                self.free_pods.push(i as u32);
                self.freed_pods.push(i as u32);
                freed += 1;
            }
        }
        let pods = &self.pods;
        let mut reusable = Vec::new();
        self.retired_vips.retain(|&(v, g)| {
            let done =
                self.cell.quiescent_since(g) && !pods.iter().any(|p| p.vip == v && p.state != PodState::Free);
            if done {
                reusable.push(v);
            }
            !done
        });
        self.freed_vips.extend(&reusable);
        self.free_vips.extend(reusable);
        if self.retire_replies() | (freed > 0) {
            self.publish();
        }
        freed
    }

    /// Drops the reply tables no worker needs any more; returns whether
    /// there were any.
    fn retire_replies(&mut self) -> bool {
        let before = self.older_reverse.len();
        let settled = &self.settled;
        self.older_reverse.retain(|&(_, gen)| settled.iter().any(|s| s.load(Ordering::Acquire) < gen));
        self.older_reverse.len() != before
    }

    /// Whether a flow-table resize is still being drained by some worker.
    pub fn resizing(&self) -> bool {
        !self.older_reverse.is_empty()
    }

    fn rebuild_table(&mut self, vip: u32, key: &VipKey) {
        let v = &self.config.vips[key];
        let backends: Vec<maglev::Backend> = v
            .pods
            .iter()
            .map(|(addr, &weight)| maglev::Backend {
                addr: addr_bytes(addr),
                weight,
                id: self.pod_index[&(vip, *addr)],
            })
            .collect();
        self.tables.insert(vip, Arc::new(Table::build(&backends, v.new_len)));
    }

    /// Builds and publishes the snapshot; returns its generation.
    fn publish(&mut self) -> u64 {
        let mut vips: Vec<Option<VipRuntime>> = vec![None; self.n_vips as usize];
        let mut prefixes = vec![Vec::new(); self.prefix_index.len() + self.free_prefixes.len()];
        let mut node_ports = Vec::new();
        for (key, &idx) in &self.vip_index {
            let v = &self.config.vips[key];
            vips[idx as usize] = Some(VipRuntime {
                key: *key,
                nat: v.nat,
                target_port: v.target_port,
                node_port: v.node_port,
                table: Arc::clone(&self.tables[&idx]),
            });
            prefixes[self.prefix_index[&key.prefix] as usize].push((key.protocol, key.port, idx));
            if v.node_port != 0 {
                node_ports.push((v.node_port, key.prefix.family(), key.protocol, idx));
            }
        }
        node_ports.sort_unstable();
        let pods: Vec<PodRuntime> = self
            .pods
            .iter()
            .map(|p| PodRuntime { vip: p.vip, endpoint: endpoint(&p.addr, p.target_port), state: p.state })
            .collect();
        let fast_v4 = pods.iter().map(FastPodV4::of).collect();
        let older = self.older_reverse.iter().map(|(t, _)| Arc::clone(t)).collect();
        let reverse = Replies::new(Arc::clone(&self.reverse), older);
        self.cell.publish(Dataplane {
            flow: self.config.flow,
            flow_gen: self.flow_gen,
            reject: !self.config.no_endpoint_drop,
            reverse,
            nat46_prefix: self.config.xlat.nat46_prefix,
            nat64: self.nat64.clone(),
            ipv6_vips: self.vip_index.keys().any(|k| k.prefix.family() == crate::packet::IpFamily::V6),
            vips,
            pods,
            fast_v4,
            prefixes,
            node_ports,
        })
    }
}

/// The nat64 source pool of `x` (`None` without source addresses).
fn nat64_pool(x: &XlatConf, n_threads: usize) -> Result<Option<Arc<PortPool>>, ConfigError> {
    if x.nat64_sources.is_empty() {
        return Ok(None);
    }
    let sources: Vec<[u8; 4]> = x.nat64_sources.iter().map(|a| a.octets()).collect();
    let (lo, hi) = x.nat64_ports;
    PortPool::new(&sources, lo, hi, n_threads.max(1))
        .map(|p| Some(Arc::new(p)))
        .ok_or(ConfigError::OutOfMemory { bytes: sources.len() as u64 * (u64::from(hi - lo) + 1) * 64 })
}

fn addr_bytes(a: &IpAddr) -> [u8; 16] {
    let mut b = [0u8; 16];
    match a {
        IpAddr::V4(v4) => b[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => b = v6.octets(),
    }
    b
}

fn endpoint(a: &IpAddr, port: u16) -> Endpoint {
    match a {
        IpAddr::V4(v4) => Endpoint::v4(v4.octets(), port),
        IpAddr::V6(v6) => Endpoint::v6(v6.octets(), port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Protocol;

    #[test]
    fn pods_beyond_the_index_limit_are_refused_and_nothing_changes() {
        let mut ctl = Controller::new(1);
        ctl.pod_limit = 3;
        let key = VipKey { prefix: "10.96.0.10/32".parse().unwrap(), protocol: Protocol::Any, port: 80 };
        ctl.add_vip(&VipSpec { key, target_port: 8080, node_port: 0, nat: None, new_len: None }).unwrap();
        let target = PodTarget { prefix: key.prefix, protocol: None, port: None };
        let pod = |i: u8| (IpAddr::from([10, 1, 0, i]), 1);
        ctl.add_pods(&target, &[pod(1), pod(2)]).unwrap();
        let before = ctl.config().clone();
        assert_eq!(ctl.add_pods(&target, &[pod(3), pod(4)]), Err(ConfigError::TooManyPods { max: 3 }));
        assert_eq!(ctl.config(), &before);
        assert_eq!(ctl.live_pods().count(), 2);
        // One more fits.
        ctl.add_pods(&target, &[pod(3)]).unwrap();
        assert_eq!(ctl.live_pods().count(), 3);
    }
}
