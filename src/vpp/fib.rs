//! VIP capture through VPP's FIB, as VPP's own load balancer does: each VIP
//! prefix gets an exclusive FIB entry whose DPO (of kp's own DPO type)
//! sends matching packets, from any interface, to `kp4-nat4` / `kp6-nat6`.
//! The DPO index is the prefix's capture index in the data-plane snapshot;
//! the node finds it in `vnet_buffer(b)->ip.adj_index[VLIB_TX]`.

use super::barrier::BarrierHeld;
use super::reg::Registration;
use super::text::{format_append, va_arg_u64, VaList};
use super::{fns, sys};
use crate::config::IpPrefix;
use core::ffi::c_char;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};

/// Node names per DPO protocol (IP4 = 0, IP6 = 1), NULL-terminated lists
/// kept by VPP by pointer.
struct NodeNames([*const c_char; 2]);
// SAFETY: immutable pointers to static strings.
unsafe impl Sync for NodeNames {}
struct PerProto([*const *const c_char; sys::KP_DPO_PROTO_NUM as usize]);
// SAFETY: as above.
unsafe impl Sync for PerProto {}

const fn per_proto(ip4: &'static NodeNames, ip6: &'static NodeNames) -> PerProto {
    PerProto([
        ip4.0.as_ptr(),
        ip6.0.as_ptr(),
        core::ptr::null(),
        core::ptr::null(),
        core::ptr::null(),
        core::ptr::null(),
    ])
}

static KP4_NAT4: NodeNames = NodeNames([c"kp4-nat4".as_ptr(), core::ptr::null()]);
static KP6_NAT6: NodeNames = NodeNames([c"kp6-nat6".as_ptr(), core::ptr::null()]);
static KP4_NAT6: NodeNames = NodeNames([c"kp4-nat6".as_ptr(), core::ptr::null()]);
static KP6_NAT4: NodeNames = NodeNames([c"kp6-nat4".as_ptr(), core::ptr::null()]);
static KP4_NAT64_REPLY: NodeNames = NodeNames([c"kp4-nat64-reply".as_ptr(), core::ptr::null()]);
static KP6_NAT46_REPLY: NodeNames = NodeNames([c"kp6-nat46-reply".as_ptr(), core::ptr::null()]);
/// One DPO type per [`Capture`] kind: the type picks the node.
static NODES: [PerProto; 3] = [
    per_proto(&KP4_NAT4, &KP6_NAT6),
    per_proto(&KP4_NAT6, &KP6_NAT4),
    per_proto(&KP4_NAT64_REPLY, &KP6_NAT46_REPLY),
];

/// What a capture entry sends to kp, and so which nodes get it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Capture {
    /// A prefix of nat44/nat66 VIPs: `kp4-nat4` / `kp6-nat6`.
    Vip = 0,
    /// A prefix of nat46/nat64 VIPs: `kp4-nat6` / `kp6-nat4`.
    XlatVip = 1,
    /// nat64 source addresses and the nat46 prefix, where translated
    /// flows' replies arrive: `kp4-nat64-reply` / `kp6-nat46-reply`.
    XlatReply = 2,
}

unsafe extern "C" fn dpo_lock(_: *mut sys::dpo_id_t) {}
unsafe extern "C" fn dpo_unlock(_: *mut sys::dpo_id_t) {}

unsafe extern "C" fn format_kp_dpo(s: *mut u8, args: *mut sys::va_list) -> *mut u8 {
    // SAFETY: VPP calls this as format(s, "%U", fn, index, indent).
    unsafe {
        let index = va_arg_u64(args.cast::<VaList>()) as u32;
        let _indent = va_arg_u64(args.cast::<VaList>());
        format_append(s, &format!("kp capture {index}"))
    }
}

static VFT: Registration<sys::dpo_vft_t> = Registration::new(sys::dpo_vft_t {
    dv_lock: Some(dpo_lock),
    dv_unlock: Some(dpo_unlock),
    dv_format: Some(format_kp_dpo),
    dv_mem_show: core::ptr::null_mut(),
    dv_get_next_node: core::ptr::null_mut(),
    dv_get_urpf: core::ptr::null_mut(),
    dv_get_mtu: core::ptr::null_mut(),
    dv_mk_interpose: core::ptr::null_mut(),
});

static DPO_TYPES: [AtomicU32; 3] = [const { AtomicU32::new(u32::MAX) }; 3];
static FIB_SOURCE: AtomicU32 = AtomicU32::new(u32::MAX);

/// Registers kp's DPO type and FIB source (init function, main thread).
pub fn register() {
    let f = fns();
    // SAFETY: exported VPP functions; the vft is copied, the node lists
    // are static.
    unsafe {
        for (nodes, t) in NODES.iter().zip(&DPO_TYPES) {
            let dpo_type = f.dpo_register_new_type(VFT.get(), nodes.0.as_ptr());
            t.store(u32::from(dpo_type), Ordering::Relaxed);
        }
        let src = f.fib_source_allocate(
            c"kp".as_ptr(),
            sys::KP_FIB_SOURCE_PRIORITY_HI as u8,
            sys::KP_FIB_SOURCE_BH_SIMPLE,
        );
        FIB_SOURCE.store(u32::from(src), Ordering::Relaxed);
    }
}

pub(super) fn fib_prefix(p: &IpPrefix) -> (sys::fib_prefix_t, u8) {
    let mut addr = [0u8; 16];
    let proto = match p.addr() {
        IpAddr::V4(a) => {
            addr[12..].copy_from_slice(&a.octets());
            sys::KP_FIB_PROTOCOL_IP4
        }
        IpAddr::V6(a) => {
            addr = a.octets();
            sys::KP_FIB_PROTOCOL_IP6
        }
    };
    let pfx = sys::fib_prefix_t {
        fp_len: u16::from(p.prefix_len()),
        fp_proto: proto as u8,
        _pad: 0,
        fp_addr: sys::kp_ip46_address_t { as_u8: addr },
    };
    (pfx, proto as u8)
}

/// Installs a capture entry for `prefix` in the default table, sending
/// its packets to the `kind`'s node with DPO index `capture` (a VIP
/// prefix's capture index). Main thread, worker barrier held.
pub fn add(prefix: &IpPrefix, kind: Capture, capture: u32, _: &BarrierHeld) {
    let f = fns();
    let (pfx, proto) = fib_prefix(prefix);
    // SAFETY: exported FIB functions with valid records, under the barrier.
    unsafe {
        let fib_index = f.fib_table_find(proto, 0);
        let mut dpo = sys::dpo_id_t { dpoi_type: 0, dpoi_proto: 0, dpoi_next_node: 0, dpoi_index: 0 };
        f.dpo_set(&mut dpo, DPO_TYPES[kind as usize].load(Ordering::Relaxed) as u8, proto, capture);
        f.fib_table_entry_special_dpo_add(
            fib_index,
            &pfx,
            FIB_SOURCE.load(Ordering::Relaxed) as u8,
            sys::KP_FIB_ENTRY_FLAG_EXCLUSIVE as u16,
            &dpo,
        );
        f.dpo_reset(&mut dpo);
    }
}

/// Removes a capture entry.
pub fn remove(prefix: &IpPrefix, _: &BarrierHeld) {
    let f = fns();
    let (pfx, proto) = fib_prefix(prefix);
    // SAFETY: as in `add`.
    unsafe {
        let fib_index = f.fib_table_find(proto, 0);
        f.fib_table_entry_special_remove(fib_index, &pfx, FIB_SOURCE.load(Ordering::Relaxed) as u8);
    }
}
