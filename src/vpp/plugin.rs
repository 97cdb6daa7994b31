//! kp as a VPP plugin, the composition root: the registration VPP checks
//! before loading, the constructor that links kp's init function, config
//! function, CLI commands and nodes into VPP's lists, and the init
//! function that wires the pieces together.
//!
//! Callbacks run on VPP's main thread and catch panics, turning them into
//! VPP errors, so nothing unwinds into C.

use super::barrier::BarrierHeld;
use super::reg::{c_array, Registration};
use super::state::{apply_conf, global};
use super::sys;
use super::text::{guarded, take_line};
use crate::cli;
use core::ffi::c_char;
use core::ptr::null_mut;

/// The plugin registration VPP reads from the `.so` before loading it.
#[repr(transparent)]
pub struct PluginRegistration(sys::vlib_plugin_registration_t);
// SAFETY: immutable after link time; VPP only reads it.
unsafe impl Sync for PluginRegistration {}

#[no_mangle]
#[used]
#[link_section = ".vlib_plugin_registration"]
pub static vlib_plugin_registration: PluginRegistration =
    PluginRegistration(sys::vlib_plugin_registration_t {
        flags: 0,
        version: c_array(concat!(env!("CARGO_PKG_VERSION"), "")),
        // A prefix of VPP's "26.06-release".
        version_required: c_array("26.06"),
        overrides: [0; 256],
        early_init: core::ptr::null(),
        description: c"kube-proxy (kp)".as_ptr(),
        load_after: null_mut(),
    });

// ---------------------------------------------------------------- init

unsafe extern "C" fn kp_init(_vm: *mut sys::vlib_main_t) -> *mut sys::clib_error_t {
    guarded(|| {
        // SAFETY: vlib_thread_main is initialised before init functions run.
        let n_threads = unsafe { (*super::fns().vlib_thread_main()).n_vlib_mains }.max(1) as usize;
        // Before any flow is hashed: IPv6 flow signatures nobody can aim at.
        crate::flowtable::randomize_hash_secret();
        super::state::init(n_threads)?;
        super::fib::register();
        // Pod routes stack on kp's nodes, whose indices VPP has assigned
        // by now.
        super::route::register(super::node::node_indices())?;
        super::upkeep::register();
        super::api::register()
    })
}

static INIT: Registration<sys::_vlib_init_function_list_elt> =
    Registration::new(sys::_vlib_init_function_list_elt {
        next_init_function: null_mut(),
        f: Some(kp_init),
        name: c"kp_init".as_ptr() as *mut c_char,
        runs_before: null_mut(),
        runs_after: null_mut(),
        init_order: null_mut(),
    });

// ---------------------------------------------------------------- startup.conf `kp { ... }`

unsafe extern "C" fn kp_config(
    _vm: *mut sys::vlib_main_t,
    input: *mut sys::unformat_input_t,
) -> *mut sys::clib_error_t {
    // SAFETY: VPP passes the section's input (possibly empty).
    let body = unsafe { take_all(input) };
    guarded(|| {
        if body.trim().is_empty() {
            return Ok(());
        }
        let change = cli::parse_conf(&body).map_err(|e| format!("startup.conf kp {{ }}: {e}"))?;
        let g = global().ok_or("kp is not initialised")?;
        // SAFETY: config functions run on the main thread before the
        // workers start (so flow tables take their size here).
        let mut held = unsafe { BarrierHeld::assume() };
        apply_conf(g, change, &mut held).map_err(|e| format!("startup.conf kp {{ }}: {e}"))
    })
}

/// # Safety
/// As [`take_line`].
unsafe fn take_all(input: *mut sys::unformat_input_t) -> String {
    let mut all = String::new();
    loop {
        // SAFETY: per the contract.
        let (idx, len) = unsafe { ((*input).index as usize, super::text::vec_len((*input).buffer)) };
        if idx >= len {
            return all;
        }
        // SAFETY: per the contract.
        all.push_str(&unsafe { take_line(input) });
        all.push(' ');
    }
}

static CONFIG: Registration<sys::vlib_config_function_runtime_t> =
    Registration::new(sys::vlib_config_function_runtime_t {
        function: Some(kp_config),
        input: sys::unformat_input_t {
            buffer: null_mut(),
            index: 0,
            buffer_marks: null_mut(),
            fill_buffer: null_mut(),
            free: null_mut(),
            fill_buffer_arg: null_mut(),
        },
        next_registration: null_mut(),
        is_early: 0,
        name: c_array("kp"),
    });

// ---------------------------------------------------------------- constructor

/// Links kp's registrations into VPP's lists; runs inside `dlopen`.
extern "C" fn kp_register() {
    // Outside VPP (tests, benches) there is nothing to register with.
    let fns = match super::load() {
        Ok(f) => f,
        Err(e) => {
            if std::env::var_os("KP_DEBUG_LOAD").is_some() {
                eprintln!("kp: not registering: {e}");
            }
            return;
        }
    };
    // SAFETY: constructors run single-threaded inside dlopen, after VPP's
    // libraries are initialised; each record is 'static and linked once.
    unsafe {
        let vgm = fns.vlib_global_main();
        let init = INIT.get();
        (*init).next_init_function = (*vgm).init_function_registrations.cast();
        (*vgm).init_function_registrations = init.cast();
        let config = CONFIG.get();
        (*config).next_registration = (*vgm).config_function_registrations.cast();
        (*vgm).config_function_registrations = config.cast();
        super::cli::register_commands();
        super::node::register_nodes(vgm);
    }
}

#[used]
#[link_section = ".init_array"]
static KP_REGISTER: extern "C" fn() = kp_register;
