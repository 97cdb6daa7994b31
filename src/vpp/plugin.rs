//! kp as a VPP plugin: the registration VPP checks before loading, the
//! constructors that link kp's init function, config function and CLI
//! commands into VPP's lists, and the callbacks VPP calls.
//!
//! Callbacks run on VPP's main thread. CLI commands are registered without
//! `is_mp_safe`, so VPP holds the worker barrier around them: workers are
//! parked while kp changes state. Every callback catches panics and turns
//! them into VPP errors, so nothing unwinds into C.

use super::node::FrameScratch;
use super::reg::{c_array, Registration};
use super::sys;
use super::text::{cli_output, error, take_line};
use crate::cli::{self, Command};
use crate::control::{DataPathView, FlowTableStats, Kp, VipCounters};
use crate::dataplane::Worker;
use core::cell::UnsafeCell;
use core::ffi::c_char;
use core::ptr::null_mut;
use parking_lot::Mutex;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

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

/// State shared by the callbacks.
pub struct Global {
    pub kp: Mutex<Kp>,
    pub workers: Box<[WorkerCell]>,
}

/// A worker's state, and the per-frame arrays its nodes fill (kept here
/// so a frame starts without initialising or copying kilobytes). Its own
/// thread uses it inside the node; the main thread reads the worker only
/// under the worker barrier.
pub struct WorkerCell {
    worker: UnsafeCell<Worker>,
    frame: UnsafeCell<Box<FrameScratch>>,
}
// SAFETY: see the type's comment: never accessed by two threads at once.
unsafe impl Sync for WorkerCell {}

impl WorkerCell {
    fn new(worker: Worker) -> WorkerCell {
        WorkerCell { worker: UnsafeCell::new(worker), frame: UnsafeCell::new(FrameScratch::new()) }
    }

    /// # Safety
    /// The caller is the owning thread inside its node, or the main thread
    /// with the worker barrier held.
    #[allow(clippy::mut_from_ref)] // exclusivity is the caller's contract
    pub unsafe fn get(&self) -> &mut Worker {
        // SAFETY: exclusive by the contract above.
        unsafe { &mut *self.worker.get() }
    }

    /// The worker and its frame arrays.
    ///
    /// # Safety
    /// The caller is the owning thread inside one of its kp nodes.
    #[allow(clippy::mut_from_ref)] // exclusivity is the caller's contract
    pub unsafe fn with_frame(&self) -> (&mut Worker, &mut FrameScratch) {
        // SAFETY: exclusive by the contract above; two distinct cells.
        unsafe { (&mut *self.worker.get(), &mut *self.frame.get()) }
    }
}

static GLOBAL: OnceLock<Global> = OnceLock::new();

pub fn global() -> Option<&'static Global> {
    GLOBAL.get()
}

/// Runs a callback body, turning a panic into a VPP error.
fn guarded(f: impl FnOnce() -> Result<(), String>) -> *mut sys::clib_error_t {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => null_mut(),
        Ok(Err(msg)) => error(&msg),
        Err(_) => error("internal error (a bug in kp; the configuration is unchanged)"),
    }
}

// ---------------------------------------------------------------- init

unsafe extern "C" fn kp_init(_vm: *mut sys::vlib_main_t) -> *mut sys::clib_error_t {
    guarded(|| {
        // SAFETY: vlib_thread_main is initialised before init functions run.
        let n_threads = unsafe { (*super::fns().vlib_thread_main()).n_vlib_mains }.max(1) as usize;
        let kp = Kp::new(n_threads);
        let workers = (0..n_threads)
            .map(|t| kp.controller.worker(t).map(WorkerCell::new))
            .collect::<Result<Box<[_]>, _>>()
            .map_err(|e| format!("cannot allocate flow tables ({} bytes per thread)", e.bytes))?;
        GLOBAL.set(Global { kp: Mutex::new(kp), workers }).map_err(|_| "kp initialised twice".to_string())?;
        super::fib::register();
        super::route::register()?;
        register_maintenance();
        super::api::register()
    })
}

// ---------------------------------------------------------------- maintenance

/// Buckets of each flow table a maintenance run sweeps while pods drain:
/// 2 MiB of buckets, about a millisecond with workers parked.
const IDLE_SWEEP_BUCKETS: u32 = 1 << 15;

/// Stats-segment index of the `/kp/draining-pods` gauge.
static DRAINING_GAUGE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(u32::MAX);

/// Periodic upkeep, hooked on VPP's stats collector (VPP's own `cnat` does
/// the same): it runs on the main thread every `statseg { update-interval }`
/// (10 s by default), so deleted pods are freed once their last flow has
/// gone even when nobody types a command, and NodePort capture reaches
/// interfaces created since the last change.
fn register_maintenance() {
    // SAFETY: exported stats functions, called from an init function; the
    // registration record is copied by VPP.
    unsafe {
        let gauge =
            (super::fns().vlib_stats_add_gauge)(c"%s".as_ptr() as *mut c_char, c"/kp/draining-pods".as_ptr());
        DRAINING_GAUGE.store(gauge, std::sync::atomic::Ordering::Relaxed);
        let mut reg = sys::vlib_stats_collector_reg_t {
            collect_fn: Some(kp_maintenance),
            entry_index: gauge,
            vector_index: 0,
            private_data: 0,
        };
        super::fns().vlib_stats_register_collector_fn(&mut reg);
    }
}

/// The worker barrier, held until dropped (also when unwinding, so a bug
/// cannot leave the workers parked for good).
struct Barrier(*mut sys::vlib_main_t);

impl Barrier {
    /// # Safety
    /// Main thread, `vm` its vlib_main_t.
    unsafe fn sync(vm: *mut sys::vlib_main_t) -> Barrier {
        // SAFETY: per the contract; exported.
        unsafe { super::fns().vlib_worker_thread_barrier_sync_int(vm, c"kp-maintenance".as_ptr()) };
        Barrier(vm)
    }
}

impl Drop for Barrier {
    fn drop(&mut self) {
        // SAFETY: the barrier this guard took, on the same thread.
        unsafe { super::fns().vlib_worker_thread_barrier_release(self.0) };
    }
}

unsafe extern "C" fn kp_maintenance(_data: *mut sys::vlib_stats_collector_data_t) {
    // Nothing may unwind into VPP; a failure here only delays upkeep.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let Some(g) = global() else { return };
        let (pending, nodeport) = {
            let kp = g.kp.lock();
            (kp.controller.draining_pods().count(), nodeport_missing(&kp))
        };
        let gauge = DRAINING_GAUGE.load(std::sync::atomic::Ordering::Relaxed);
        // SAFETY: main thread (the collector process); exported functions.
        unsafe {
            let vm = super::fns().vlib_get_main_not_inline();
            let draining = if pending > 0 || nodeport {
                // Counters and features change only with workers parked.
                let _barrier = Barrier::sync(vm);
                if pending > 0 {
                    // Without traffic nothing sweeps the flow tables: go
                    // through a slice of each (bounded, as workers wait).
                    let now = super::time::ticks(vm);
                    for cell in g.workers.iter() {
                        cell.get().sweep_idle(IDLE_SWEEP_BUCKETS, now);
                    }
                }
                let mut kp = g.kp.lock();
                kp.controller.collect_garbage();
                sync_vpp(&mut kp, &Default::default());
                kp.controller.draining_pods().count()
            } else {
                0
            };
            super::fns().vlib_stats_set_gauge(gauge, draining as u64);
        }
    }));
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
        let cmd = cli::parse_conf(&body).map_err(|e| format!("startup.conf kp {{ }}: {e}"))?;
        let g = global().ok_or("kp is not initialised")?;
        // Flow tables take their size from the configuration here, before
        // workers start.
        apply_conf(g, &cmd).map_err(|e| format!("startup.conf kp {{ }}: {e}"))
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

/// Resizes every worker's flow table to `flow` now.
pub fn adopt_flow(g: &Global, flow: crate::config::FlowConf) -> Result<(), crate::config::ConfigError> {
    for cell in g.workers.iter() {
        // SAFETY: called on the main thread before workers start (config
        // function) or with the worker barrier held (CLI and API).
        let w = unsafe { cell.get() };
        w.adopt_flow_conf(flow)
            .map_err(|e| crate::config::ConfigError::OutOfMemory { bytes: e.bytes as u64 })?;
    }
    Ok(())
}

/// Applies `kp conf` and sizes the flow tables; on failure nothing changes.
fn apply_conf(g: &Global, cmd: &Command) -> Result<(), String> {
    g.kp.lock().apply_conf(cmd, |flow| adopt_flow(g, flow)).map_err(|e| e.to_string())
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

// ---------------------------------------------------------------- CLI

#[derive(Clone, Copy)]
#[repr(usize)]
enum Cli {
    Conf,
    Vip,
    Pod,
    SetInterface,
    Show,
}

const CLI_TABLE: [(Cli, &core::ffi::CStr, &core::ffi::CStr); 5] = [
    (Cli::Conf, c"kp conf", c"kp conf [buckets <n>] [timeout <s>]"),
    (
        Cli::Vip,
        c"kp vip",
        c"kp vip <prefix> [protocol tcp|udp] port <n> target_port <n> [node_port <n>] [nat44|nat46|nat64|nat66] [new_len <n>] [del]",
    ),
    (
        Cli::Pod,
        c"kp pod",
        c"kp pod <vip-prefix> [protocol tcp|udp] [port <n>] <address> [weight <w>] [<address> [weight <w>]]... [del [flush]]",
    ),
    (Cli::SetInterface, c"kp set interface", c"kp set interface nat4|nat6 in <interface> [del]"),
    (Cli::Show, c"show kp", c"show kp [vip [<prefix>] [verbose]]"),
];

const fn cli_command(path: &core::ffi::CStr, help: &core::ffi::CStr, arg: Cli) -> sys::vlib_cli_command_t {
    sys::vlib_cli_command_t {
        path: path.as_ptr() as *mut c_char,
        short_help: help.as_ptr() as *mut c_char,
        long_help: null_mut(),
        function: Some(kp_cli),
        function_arg: arg as sys::uword,
        is_mp_safe: 0,
        sub_commands: null_mut(),
        sub_command_index_by_name: null_mut(),
        sub_command_positions: null_mut(),
        sub_rule_index_by_name: null_mut(),
        sub_rules: null_mut(),
        next_cli_command: null_mut(),
        hit_counter: 0,
    }
}

static CLI_COMMANDS: [Registration<sys::vlib_cli_command_t>; 5] = [
    Registration::new(cli_command(CLI_TABLE[0].1, CLI_TABLE[0].2, CLI_TABLE[0].0)),
    Registration::new(cli_command(CLI_TABLE[1].1, CLI_TABLE[1].2, CLI_TABLE[1].0)),
    Registration::new(cli_command(CLI_TABLE[2].1, CLI_TABLE[2].2, CLI_TABLE[2].0)),
    Registration::new(cli_command(CLI_TABLE[3].1, CLI_TABLE[3].2, CLI_TABLE[3].0)),
    Registration::new(cli_command(CLI_TABLE[4].1, CLI_TABLE[4].2, CLI_TABLE[4].0)),
];

unsafe extern "C" fn kp_cli(
    vm: *mut sys::vlib_main_t,
    input: *mut sys::unformat_input_t,
    cmd: *mut sys::vlib_cli_command_t,
) -> *mut sys::clib_error_t {
    // SAFETY: VPP passes its live input and the (copied) command record.
    let (line, which) = unsafe { (take_line(input), (*cmd).function_arg) };
    let mut out = String::new();
    let err = guarded(|| {
        let g = global().ok_or("kp is not initialised")?;
        out = run_cli(g, vm, which, &line)?;
        Ok(())
    });
    if !out.is_empty() {
        // SAFETY: `vm` is the handler's own vlib_main_t.
        unsafe { cli_output(vm, &out) };
    }
    err
}

fn run_cli(g: &Global, vm: *mut sys::vlib_main_t, which: sys::uword, line: &str) -> Result<String, String> {
    let which =
        CLI_TABLE.iter().find(|(c, _, _)| *c as usize == which as usize).ok_or("unknown kp command")?.0;
    let view = WorkersView { g, vm };
    match which {
        Cli::Conf => {
            apply_conf(g, &cli::parse_conf(line)?)?;
            Ok(String::new())
        }
        Cli::Vip => {
            let mut kp = g.kp.lock();
            let applied = kp.apply(&cli::parse_vip(line)?)?;
            sync_vpp(&mut kp, &applied);
            Ok(String::new())
        }
        Cli::Pod => {
            let mut kp = g.kp.lock();
            let applied = kp.apply(&cli::parse_pod(line)?)?;
            sync_vpp(&mut kp, &applied);
            Ok(String::new())
        }
        Cli::SetInterface => {
            let Command::SetInterface { family, interface, enable } = cli::parse_set_interface(line)? else {
                unreachable!("parse_set_interface returns SetInterface")
            };
            let sw_if_index = super::text::sw_if_index(&interface)
                .ok_or_else(|| format!("unknown interface '{interface}'"))?;
            let mut kp = g.kp.lock();
            kp.set_interface(family, sw_if_index, &interface, enable)?;
            if let Err(rv) =
                super::node::set_reply_feature(family == crate::packet::IpFamily::V6, sw_if_index, enable)
            {
                let _ = kp.set_interface(family, sw_if_index, &interface, !enable);
                return Err(format!("VPP refused the feature on {interface} (error {rv})"));
            }
            Ok(String::new())
        }
        Cli::Show => {
            let cmd = cli::parse_show(line)?;
            let mut kp = g.kp.lock();
            let out = match cmd {
                Command::ShowVip { prefix, verbose } => kp.show_vips(prefix, verbose, &view),
                _ => kp.show(&view),
            };
            // `show` collects garbage; freed indices restart their counters.
            sync_vpp(&mut kp, &Default::default());
            Ok(out)
        }
    }
}

/// Brings VPP in line with a change: FIB capture entries for VIP prefixes
/// that appeared or went, and per-index counters sized, and zeroed for
/// indices that were freed (so a reused index starts from 0). Main
/// thread, worker barrier held.
pub fn sync_vpp(kp: &mut Kp, applied: &crate::control::Applied) {
    use super::node::{POD_PACKETS, VIP_EXISTING, VIP_FIRST, VIP_NO_POD, VIP_UNTRACKED};
    for (prefix, capture) in &applied.prefixes_added {
        super::fib::add(prefix, *capture);
    }
    for (prefix, _) in &applied.prefixes_removed {
        super::fib::remove(prefix);
    }
    let vips = [&VIP_EXISTING, &VIP_FIRST, &VIP_UNTRACKED, &VIP_NO_POD];
    let (freed_pods, freed_vips) = kp.controller.take_freed();
    let (n_vips, n_pods) = kp.controller.index_bounds();
    for c in vips {
        freed_vips.iter().for_each(|&v| c.zero(v));
        n_vips.checked_sub(1).into_iter().for_each(|v| c.validate(v));
    }
    freed_pods.iter().for_each(|&p| POD_PACKETS.zero(p));
    n_pods.checked_sub(1).into_iter().for_each(|p| POD_PACKETS.validate(p));
    super::route::sync(kp.controller.live_pods());
    sync_nodeport(kp);
}

/// NodePort capture follows the configuration: on every interface while
/// any VIP has a NodePort (interfaces created since are picked up at the
/// next change), off everywhere otherwise.
fn sync_nodeport(kp: &mut Kp) {
    let want = kp.wants_nodeport();
    let enabled = &mut kp.interfaces.nodeport;
    if !want {
        for sw in core::mem::take(enabled) {
            let _ = super::node::set_nodeport_feature(sw, false);
        }
        return;
    }
    for sw in existing_interfaces() {
        if !enabled.contains(&sw) && super::node::set_nodeport_feature(sw, true).is_ok() {
            enabled.insert(sw);
        }
    }
}

/// Whether NodePort capture is wanted on an interface that lacks it (one
/// created since the last change). Main thread; needs no barrier.
fn nodeport_missing(kp: &Kp) -> bool {
    kp.wants_nodeport() && existing_interfaces().iter().any(|sw| !kp.interfaces.nodeport.contains(sw))
}

/// The interfaces that exist. Main thread.
fn existing_interfaces() -> Vec<u32> {
    // Interfaces are numbered densely from 0 (with holes for deleted
    // ones); stop after a long run of unknown indices.
    let (mut found, mut sw, mut misses) = (Vec::new(), 0u32, 0);
    while misses < 64 {
        if super::text::sw_if_index_name(sw).is_some() {
            misses = 0;
            found.push(sw);
        } else {
            misses += 1;
        }
        sw += 1;
    }
    found
}

/// `show` data from the workers (read under the barrier).
pub struct WorkersView<'a> {
    g: &'a Global,
    vm: *mut sys::vlib_main_t,
}

impl<'a> WorkersView<'a> {
    /// For callers on the main thread without a `vm` at hand (API handlers).
    pub fn main_thread(g: &'a Global) -> Self {
        // SAFETY: exported; returns the main thread's vlib_main_t.
        WorkersView { g, vm: unsafe { super::fns().vlib_get_main_not_inline() } }
    }
}

impl DataPathView for WorkersView<'_> {
    fn flow_tables(&self) -> Vec<FlowTableStats> {
        self.g
            .workers
            .iter()
            .enumerate()
            .map(|(thread, cell)| {
                // SAFETY: CLI handlers run with the worker barrier held.
                let w = unsafe { cell.get() };
                // SAFETY: the CLI handler's own (main-thread) vlib_main_t.
                let now = unsafe { crate::vpp::time::ticks(self.vm) };
                let t = w.flows();
                FlowTableStats {
                    thread,
                    buckets: t.n_buckets(),
                    capacity: t.capacity(),
                    live: t.live_entries(now),
                }
            })
            .collect()
    }

    fn vip_counters(&self, vip: u32) -> VipCounters {
        super::node::vip_counters(vip)
    }

    fn pod_packets(&self, pod: u32) -> u64 {
        super::node::POD_PACKETS.sum(pod)
    }
}

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
        for cmd in &CLI_COMMANDS {
            fns.vlib_cli_command_registration_helper(cmd.get());
        }
        super::node::register_nodes(vgm);
    }
}

#[used]
#[link_section = ".init_array"]
static KP_REGISTER: extern "C" fn() = kp_register;
