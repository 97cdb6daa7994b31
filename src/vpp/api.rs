//! Registers kp.api's messages with VPP's binary API and runs their
//! handlers: VPP hands over the message bytes, `crate::api` decodes and
//! applies them, and the replies go back to the client that asked, with
//! its context. Handlers are not marked mp-safe, so VPP holds the worker
//! barrier around them, as for CLI commands.

use super::barrier::BarrierHeld;
use super::state::{adopt_flow, global, sync_vpp, Global, WorkersView};
use super::{fns, sys};
use crate::api::{self, Host, Msg, MESSAGES};
use crate::control::{DataPathView, Kp};
use core::ffi::{c_char, c_void};
use std::ffi::CString;
use std::sync::atomic::{AtomicU16, Ordering};

/// kp's first message ID (IDs depend on plugin load order).
static BASE: AtomicU16 = AtomicU16::new(u16::MAX);

fn leak(s: String) -> *mut c_char {
    // VPP keeps these names by pointer for the life of the process.
    CString::new(s).expect("no NUL in message names").into_raw()
}

/// The calling thread's `api_main_t`. VPP's `my_api_main` is a
/// thread-local *pointer* to it; `dlsym` resolves the variable for the
/// calling thread.
fn api_main() -> Result<*mut sys::api_main_t, String> {
    let this = libloading::os::unix::Library::this();
    // SAFETY: looking up a data symbol runs no code; the variable holds a
    // valid pointer on the main thread, the only one that calls this.
    unsafe {
        let var = this.get::<*mut *mut sys::api_main_t>(b"my_api_main\0").map_err(|e| e.to_string())?;
        let am = **var;
        if am.is_null() {
            return Err("binary API: my_api_main is not set".into());
        }
        Ok(am)
    }
}

/// Called from kp's init function on the main thread.
pub fn register() -> Result<(), String> {
    let f = fns();
    let module = leak(format!("kp_{:08x}", crate::apigen::crc32(api::JSON.as_bytes(), 0)));
    // SAFETY: exported VPP function; the name is static.
    let base = unsafe { f.vl_msg_api_get_msg_ids(module, MESSAGES.len() as i32) };
    if base == u16::MAX {
        return Err("binary API: message IDs already taken (kp loaded twice?)".into());
    }
    BASE.store(base, Ordering::Relaxed);
    let am = api_main()?;
    for (i, (name, crc)) in MESSAGES.iter().enumerate() {
        let id = base + i as u16;
        let msg = Msg::from_offset(i as u16).expect("MESSAGES and Msg agree");
        let handler: *mut c_void =
            if msg.reply().is_some() { kp_api_handler as *mut c_void } else { core::ptr::null_mut() };
        let mut c = sys::vl_msg_api_msg_config_t {
            id: i32::from(id),
            name: leak(name.to_string()),
            crc: *crc,
            handler,
            cleanup: core::ptr::null_mut(),
            endian: core::ptr::null_mut(),
            format_fn: core::ptr::null_mut(),
            tojson: core::ptr::null_mut(),
            fromjson: core::ptr::null_mut(),
            calc_size: kp_api_calc_size as *mut c_void,
            size: msg.size() as i32,
            flags: 0,
        };
        // SAFETY: exported VPP functions called on the main thread during
        // init; the strings are leaked (static) as VPP requires.
        unsafe {
            f.vl_msg_api_add_msg_name_crc(am, leak(format!("{name}_{crc:08x}")), u32::from(id));
            f.vl_msg_api_config(&mut c);
        }
    }
    publish_json(am);
    Ok(())
}

/// Appends kp.api.json to `am->json_api_repr`, what `bootstrapapi`
/// clients read.
fn publish_json(am: *mut sys::api_main_t) {
    let f = fns();
    let json = leak(api::JSON.to_string());
    let attr = sys::vec_attr_t { heap: core::ptr::null_mut(), elt_sz: 8, hdr_sz: 0, align: 8 };
    // SAFETY: `json_api_repr` is a VPP vector of C strings owned by VPP;
    // it is grown with VPP's own vector function and the new slot set.
    unsafe {
        let v = (*am).json_api_repr;
        let len = super::text::vec_len(v);
        let v = f._vec_resize_internal(v.cast(), (len + 1) as u64, &attr) as *mut *mut c_char;
        *v.add(len) = json;
        (*am).json_api_repr = v;
    }
}

unsafe extern "C" fn kp_api_calc_size(msg: *mut c_void) -> sys::uword {
    // SAFETY: VPP passes a message of at least the 2-byte ID.
    let id = u16::from_be(unsafe { (msg as *const u16).read_unaligned() });
    let base = BASE.load(Ordering::Relaxed);
    id.checked_sub(base).and_then(Msg::from_offset).map_or(usize::MAX, Msg::size) as sys::uword
}

/// The VPP side of an API request: what `crate::api` needs of VPP, with
/// the workers parked for as long as it lives.
struct VppHost<'a> {
    g: &'a Global,
    /// The one proof for the whole request: `show` data borrows it shared,
    /// a flow-table resize exclusively.
    held: core::cell::RefCell<BarrierHeld<'a>>,
}

impl VppHost<'_> {
    fn with_view<T>(&self, f: impl FnOnce(&WorkersView) -> T) -> T {
        let held = self.held.borrow();
        f(&WorkersView::new(self.g, &held))
    }
}

impl DataPathView for VppHost<'_> {
    fn flow_tables(&self) -> Vec<crate::control::FlowTableStats> {
        self.with_view(|v| v.flow_tables())
    }

    fn vip_counters(&self, vip: u32) -> crate::control::VipCounters {
        self.with_view(|v| v.vip_counters(vip))
    }

    fn pod_packets(&self, pod: u32) -> u64 {
        self.with_view(|v| v.pod_packets(pod))
    }

    fn now(&self) -> u32 {
        self.with_view(|v| v.now())
    }
}

impl Host for VppHost<'_> {
    fn interface_name(&self, sw_if_index: u32) -> Option<String> {
        super::text::sw_if_index_name(sw_if_index)
    }

    fn resize_flow_tables(&self, _: crate::config::FlowConf) -> Result<(), crate::config::ConfigError> {
        // The workers take the size the controller just published.
        adopt_flow(self.g, &mut self.held.borrow_mut())
    }

    fn prepare(&self, change: &crate::control::Change) -> Result<(), crate::config::ConfigError> {
        super::state::prepare_change(self.g, change, &mut self.held.borrow_mut())
    }

    fn applied(&self, kp: &mut Kp, applied: &crate::control::Applied) {
        sync_vpp(kp, applied, &self.held.borrow());
    }

    fn set_reply_feature(&self, family: crate::packet::IpFamily, sw_if_index: u32, enable: bool) -> bool {
        let v6 = family == crate::packet::IpFamily::V6;
        super::feature::set_reply_feature(v6, sw_if_index, enable, &self.held.borrow()).is_ok()
    }
}

unsafe extern "C" fn kp_api_handler(msg: *mut c_void) {
    let base = BASE.load(Ordering::Relaxed);
    // SAFETY: VPP checked the message is at least `calc_size` bytes, which
    // is this message's full size.
    let (m, bytes, client_index) = unsafe {
        let id = u16::from_be((msg as *const u16).read_unaligned());
        let Some(m) = id.checked_sub(base).and_then(Msg::from_offset) else { return };
        let bytes = core::slice::from_raw_parts(msg as *const u8, m.size());
        (m, bytes, (msg as *const u8).add(2).cast::<u32>().read_unaligned())
    };
    let replies = std::panic::catch_unwind(|| {
        let g = global()?;
        let mut kp = g.kp.lock();
        // SAFETY: kp's handlers are not mp-safe: VPP runs them on the main
        // thread with the worker barrier held.
        let held = unsafe { BarrierHeld::assume() };
        let host = VppHost { g, held: core::cell::RefCell::new(held) };
        Some(api::handle(&mut kp, m, bytes, &host, &host))
    });
    let Ok(Some(replies)) = replies else { return };
    let f = fns();
    // SAFETY: VPP's registration lookup (vl_api_client_index_to_registration
    // is inline in VPP; this is its body) and message allocation/sending,
    // on the main thread inside the API dispatcher.
    unsafe {
        let h = u32::from_be(client_index);
        let rp = if f.vl_socket_api_registration_handle_is_valid(h) != 0 {
            f.vl_socket_api_client_handle_to_registration(h)
        } else {
            f.vl_mem_api_client_index_to_registration(client_index)
        };
        if rp.is_null() {
            return;
        }
        for r in replies {
            let len = 2 + r.body.len();
            let out = f.vl_msg_api_alloc(len as i32) as *mut u8;
            if out.is_null() {
                return;
            }
            out.cast::<u16>().write_unaligned((base + r.msg.offset()).to_be());
            core::ptr::copy_nonoverlapping(r.body.as_ptr(), out.add(2), r.body.len());
            if (*rp).registration_type > sys::KP_REGISTRATION_TYPE_SHMEM {
                f.vl_socket_api_send(rp, out);
            } else {
                let mut elem = out;
                f.vl_msg_api_send_shmem((*rp).vl_input_queue, (&mut elem as *mut *mut u8).cast());
            }
        }
    }
}
