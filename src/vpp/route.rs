//! Pod route tracking, as VPP's own load balancer does it: every pod
//! address kp forwards to is tracked in the FIB (`fib_entry_track`), and its
//! forwarding is stacked as a DPO on each kp node that sends to it. A
//! translated packet then goes straight to the pod's load-balance object
//! (next node and `adj_index[VLIB_TX]` from the stacked DPO) without a
//! second full FIB lookup. When the pod's route changes, VPP walks back to
//! kp's FIB node and the DPOs are stacked again.
//!
//! Workers read one packed word per pod index ([`NextHops`]); everything
//! else is main-thread state, changed with the worker barrier held.

use super::barrier::BarrierHeld;
use super::{fns, sys};
use crate::mem::{Zeroable, ZeroedArray};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;

/// Pod indices (and so distinct pod addresses) whose forwarding can be
/// tracked: every pod index.
const MAX_TRACKED: usize = crate::config::MAX_POD_INDICES as usize;

/// Set in a packed next hop that is valid.
const VALID: u64 = 1 << 63;

/// Set in a packed next hop stacked from a node of an IPv6 VIP.
const VIP_V6: u64 = 1 << 62;
/// Set in a packed next hop to an IPv6 pod.
const POD_V6: u64 = 1 << 61;

/// A stacked DPO as workers read it: `VALID | VIP_V6? | POD_V6? |
/// next_node << 32 | dpoi_index`, or 0 for "not tracked: use the lookup
/// node".
#[derive(Default)]
struct PodNextHops {
    /// From the VIP node of the pod's NAT type (`kp4-nat4`, `kp4-nat6`,
    /// `kp6-nat6`, `kp6-nat4`).
    vip: AtomicU64,
    /// From the NodePort node of the VIP's family.
    nodeport: AtomicU64,
}
// SAFETY: atomics whose all-zero state means "not tracked".
unsafe impl Zeroable for PodNextHops {}

/// Slots of route records, by route index; VPP finds kp's FIB nodes here.
struct RouteSlot(AtomicPtr<TrackedRoute>);
// SAFETY: a null pointer.
unsafe impl Zeroable for RouteSlot {}

struct Tables {
    pods: ZeroedArray<PodNextHops>,
    routes: ZeroedArray<RouteSlot>,
}

static TABLES: OnceLock<Tables> = OnceLock::new();
static FIB_NODE_TYPE: AtomicU32 = AtomicU32::new(u32::MAX);

/// The graph nodes pod routes are stacked on: the VIP node of each NAT
/// type and the NodePort node of each VIP family.
#[derive(Debug, Clone, Copy)]
pub struct NodeIndices {
    /// By [VIP family][pod family], IPv4 first: kp4-nat4, kp4-nat6,
    /// kp6-nat4, kp6-nat6.
    pub vip: [[u32; 2]; 2],
    /// By VIP family: kp4-nodeport, kp6-nodeport.
    pub nodeport: [u32; 2],
}

static NODES: OnceLock<NodeIndices> = OnceLock::new();

/// A tracked pod address: kp's FIB node (first, so VPP's pointer to it is a
/// pointer to the record) and the DPOs stacked on the address's forwarding.
#[repr(C)]
struct TrackedRoute {
    node: sys::fib_node_t,
    addr: IpAddr,
    v6: bool,
    fib_entry: u32,
    sibling: u32,
    /// By VIP family (IPv4 first): stacked from the VIP node and from the
    /// NodePort node.
    from_vip: [sys::dpo_id_t; 2],
    from_nodeport: [sys::dpo_id_t; 2],
    /// Pod indices with this address (two VIPs can share a pod), and
    /// whether each one's VIP is IPv6.
    pods: Vec<(u32, bool)>,
}

/// Main-thread bookkeeping.
#[derive(Default)]
struct Book {
    by_addr: HashMap<IpAddr, u32>,
    /// Pod index -> (route, the pod's address and VIP family when tracked).
    route_of_pod: HashMap<u32, (u32, IpAddr, bool)>,
    free: Vec<u32>,
    next: u32,
}

static BOOK: parking_lot::Mutex<Option<Book>> = parking_lot::Mutex::new(None);

/// The pods' stacked next hops, as a node reads them (fetch once per frame).
pub struct NextHops(&'static [PodNextHops]);

impl NextHops {
    pub fn get() -> NextHops {
        NextHops(TABLES.get().map_or(&[], |t| &t.pods[..]))
    }

    /// `pod`'s next hop from a VIP node (`nodeport` false) or a NodePort
    /// node of VIP family `vip_v6`, for a packet to a pod of family
    /// `pod_v6`: `Some((next_index, adj_index))` when tracked and stacked
    /// from that very node.
    #[inline(always)]
    pub fn of(&self, pod: u32, nodeport: bool, vip_v6: bool, pod_v6: bool) -> Option<(u16, u32)> {
        let slot = self.0.get(pod as usize)?;
        let w = if nodeport { &slot.nodeport } else { &slot.vip }.load(Ordering::Relaxed);
        let tag = VALID | if vip_v6 { VIP_V6 } else { 0 } | if pod_v6 { POD_V6 } else { 0 };
        (w & (VALID | VIP_V6 | POD_V6) == tag).then_some(((w >> 32 & 0xffff) as u16, w as u32))
    }
}

fn pack(d: &sys::dpo_id_t, vip_v6: bool, pod_v6: bool) -> u64 {
    VALID
        | if vip_v6 { VIP_V6 } else { 0 }
        | if pod_v6 { POD_V6 } else { 0 }
        | (u64::from(d.dpoi_next_node) << 32)
        | u64::from(d.dpoi_index)
}

unsafe extern "C" fn fib_node_get(index: u32) -> *mut sys::fib_node_t {
    TABLES
        .get()
        .and_then(|t| t.routes.get(index as usize))
        .map_or(core::ptr::null_mut(), |s| s.0.load(Ordering::Relaxed).cast())
}

unsafe extern "C" fn fib_node_last_lock(_: *mut sys::fib_node_t) {}

unsafe extern "C" fn fib_node_back_walk(
    node: *mut sys::fib_node_t,
    _ctx: *mut sys::fib_node_back_walk_ctx_t,
) -> core::ffi::c_int {
    // SAFETY: VPP hands back the node of one of kp's live records (the
    // node is the record's first field); main thread, barrier held.
    unsafe { restack(&mut *node.cast::<TrackedRoute>()) };
    sys::KP_FIB_NODE_BACK_WALK_CONTINUE as core::ffi::c_int
}

static VFT: super::reg::Registration<sys::fib_node_vft_t> =
    super::reg::Registration::new(sys::fib_node_vft_t {
        fnv_get: Some(fib_node_get),
        fnv_last_lock: Some(fib_node_last_lock),
        fnv_back_walk: Some(fib_node_back_walk),
        fnv_mem_show: None,
    });

/// Registers kp's FIB node type and maps the tables (init function, once
/// VPP has numbered kp's nodes).
pub fn register(nodes: NodeIndices) -> Result<(), String> {
    let _ = NODES.set(nodes);
    let pods = ZeroedArray::new(MAX_TRACKED).ok_or("cannot map the pod next-hop table")?;
    let routes = ZeroedArray::new(MAX_TRACKED).ok_or("cannot map the pod route table")?;
    let _ = TABLES.set(Tables { pods, routes });
    *BOOK.lock() = Some(Book::default());
    // SAFETY: exported; the vft is copied by VPP.
    let t = unsafe { fns().fib_node_register_new_type(c"kp-pod".as_ptr(), VFT.get()) };
    FIB_NODE_TYPE.store(u32::from(t), Ordering::Relaxed);
    Ok(())
}

/// Stacks a record's DPOs on its address's current forwarding and
/// publishes them for its pods.
///
/// # Safety
/// Main thread, barrier held; `r` is a live record.
unsafe fn restack(r: &mut TrackedRoute) {
    let f = fns();
    let Some(nodes) = NODES.get() else { return };
    let pod_family = usize::from(r.v6);
    // From the nodes of both VIP families: nat44 and nat64 VIPs (or nat66
    // and nat46) can share a pod address.
    // SAFETY: per the contract; the FIB entry is tracked by this record.
    let fwd = unsafe { f.fib_entry_contribute_ip_forwarding(r.fib_entry) };
    for vip_family in 0..2 {
        // SAFETY: as above; `fwd` is the entry's current forwarding.
        unsafe {
            f.dpo_stack_from_node(nodes.vip[vip_family][pod_family], &mut r.from_vip[vip_family], fwd);
            f.dpo_stack_from_node(nodes.nodeport[vip_family], &mut r.from_nodeport[vip_family], fwd);
        }
    }
    let Some(t) = TABLES.get() else { return };
    for &(p, vip_v6) in &r.pods {
        if let Some(slot) = t.pods.get(p as usize) {
            let vf = usize::from(vip_v6);
            slot.vip.store(pack(&r.from_vip[vf], vip_v6, r.v6), Ordering::Relaxed);
            slot.nodeport.store(pack(&r.from_nodeport[vf], vip_v6, r.v6), Ordering::Relaxed);
        }
    }
}

/// Brings tracking in line with the pods that exist: new pod indices get
/// their address tracked (shared per address), freed ones are forgotten
/// and an address nobody uses any more is untracked. Main thread, worker
/// barrier held.
pub fn sync(live: impl Iterator<Item = (u32, IpAddr, bool)>, _: &BarrierHeld) {
    let Some(t) = TABLES.get() else { return };
    let mut guard = BOOK.lock();
    let Some(book) = guard.as_mut() else { return };
    let live: HashMap<u32, (IpAddr, bool)> = live.map(|(p, a, v6)| (p, (a, v6))).collect();
    // Gone: freed, or freed and reused for another address since.
    let gone: Vec<u32> = book
        .route_of_pod
        .iter()
        .filter(|(p, (_, addr, v6))| live.get(p) != Some(&(*addr, *v6)))
        .map(|(&p, _)| p)
        .collect();
    for pod in gone {
        let (route, _, _) = book.route_of_pod.remove(&pod).expect("listed");
        if let Some(slot) = t.pods.get(pod as usize) {
            slot.vip.store(0, Ordering::Relaxed);
            slot.nodeport.store(0, Ordering::Relaxed);
        }
        let ptr = t.routes[route as usize].0.load(Ordering::Relaxed);
        // SAFETY: a live record, main thread.
        let r = unsafe { &mut *ptr };
        r.pods.retain(|&(p, _)| p != pod);
        if r.pods.is_empty() {
            untrack(book, t, route);
        }
    }
    for (&pod, &(addr, vip_v6)) in &live {
        if book.route_of_pod.contains_key(&pod) || pod as usize >= MAX_TRACKED {
            continue;
        }
        let route = match book.by_addr.get(&addr) {
            Some(&r) => r,
            None => match track(book, t, addr) {
                Some(r) => r,
                None => continue,
            },
        };
        book.route_of_pod.insert(pod, (route, addr, vip_v6));
        let ptr = t.routes[route as usize].0.load(Ordering::Relaxed);
        // SAFETY: a live record, main thread, barrier held.
        unsafe {
            (*ptr).pods.push((pod, vip_v6));
            restack(&mut *ptr);
        }
    }
}

fn track(book: &mut Book, t: &Tables, addr: IpAddr) -> Option<u32> {
    let route = book.free.pop().or_else(|| {
        ((book.next as usize) < MAX_TRACKED).then(|| {
            book.next += 1;
            book.next - 1
        })
    })?;
    let prefix = crate::config::IpPrefix::host(addr);
    let (pfx, proto) = super::fib::fib_prefix(&prefix);
    let empty = sys::dpo_id_t { dpoi_type: 0, dpoi_proto: 0, dpoi_next_node: 0, dpoi_index: 0 };
    let r = Box::into_raw(Box::new(TrackedRoute {
        node: sys::fib_node_t { fn_type: 0, _pad0: 0, fn_pad: 0, fn_children: 0, fn_locks: 0 },
        addr,
        v6: addr.is_ipv6(),
        fib_entry: u32::MAX,
        sibling: u32::MAX,
        from_vip: [empty, empty],
        from_nodeport: [empty, empty],
        pods: Vec::new(),
    }));
    // VPP may ask for the node while tracking starts: publish it first.
    t.routes[route as usize].0.store(r, Ordering::Relaxed);
    let f = fns();
    // SAFETY: exported FIB functions, main thread, barrier held; the
    // record stays at this address until untracked.
    unsafe {
        f.fib_node_init(&mut (*r).node, FIB_NODE_TYPE.load(Ordering::Relaxed) as u8);
        let fib_index = f.fib_table_find(proto, 0);
        let mut sibling = u32::MAX;
        let fei = f.fib_entry_track(
            fib_index,
            &pfx,
            FIB_NODE_TYPE.load(Ordering::Relaxed) as u8,
            route,
            &mut sibling,
        );
        (*r).fib_entry = fei;
        (*r).sibling = sibling;
    }
    book.by_addr.insert(addr, route);
    Some(route)
}

fn untrack(book: &mut Book, t: &Tables, route: u32) {
    let ptr = t.routes[route as usize].0.load(Ordering::Relaxed);
    let f = fns();
    // SAFETY: a live record being retired, main thread, barrier held: no
    // worker runs, and no pod index points at it any more.
    unsafe {
        f.fib_entry_untrack((*ptr).fib_entry, (*ptr).sibling);
        for d in (*ptr).from_vip.iter_mut().chain((*ptr).from_nodeport.iter_mut()) {
            f.dpo_reset(d);
        }
        t.routes[route as usize].0.store(core::ptr::null_mut(), Ordering::Relaxed);
        book.by_addr.remove(&(*ptr).addr);
        drop(Box::from_raw(ptr));
    }
    book.free.push(route);
}
