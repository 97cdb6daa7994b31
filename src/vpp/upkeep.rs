//! Periodic upkeep on the main thread: frees deleted pods once their last
//! flow is gone, and reaches interfaces created since the last change.

use super::barrier::Barrier;
use super::state::{features_missing, global, sync_vpp};
use super::sys;
use core::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Buckets of each flow table a maintenance run sweeps (and drains, after
/// a resize) while pods drain: 8 MiB of buckets, a few milliseconds with
/// workers parked; a table of 2^20 buckets is gone through in 8 runs.
const IDLE_SWEEP_BUCKETS: u32 = 1 << 17;

/// Stats-segment index of the `/kp/draining-pods` gauge.
static DRAINING_GAUGE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(u32::MAX);

/// Periodic upkeep, hooked on VPP's stats collector (VPP's own `cnat` does
/// the same): it runs on the main thread every `statseg { update-interval }`
/// (10 s by default), so deleted pods are freed once their last flow has
/// gone even when nobody types a command, and NodePort capture reaches
/// interfaces created since the last change.
pub fn register() {
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

unsafe extern "C" fn kp_maintenance(_data: *mut sys::vlib_stats_collector_data_t) {
    // Nothing may unwind into VPP; a failure here only delays upkeep.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let Some(g) = global() else { return };
        let (pending, resizing, features) = {
            let kp = g.kp.lock();
            (kp.controller.draining_pods().count(), kp.controller.resizing(), features_missing(&kp))
        };
        let gauge = DRAINING_GAUGE.load(std::sync::atomic::Ordering::Relaxed);
        // SAFETY: main thread (the collector process); exported functions.
        unsafe {
            let vm = super::fns().vlib_get_main_not_inline();
            let draining = if pending > 0 || resizing || features {
                // Counters and features change only with workers parked.
                let mut barrier = Barrier::sync(vm);
                let mut held = barrier.held();
                if pending > 0 || resizing {
                    // Without traffic nothing sweeps the flow tables (or
                    // drains the ones a resize replaced): go through a
                    // slice of each (bounded, as workers wait).
                    let now = super::time::ticks(vm);
                    for cell in g.workers.iter() {
                        cell.parked_mut(&mut held).sweep_idle(IDLE_SWEEP_BUCKETS, now);
                    }
                }
                let mut kp = g.kp.lock();
                kp.controller.collect_garbage();
                sync_vpp(&mut kp, &Default::default(), &held);
                kp.controller.draining_pods().count()
            } else {
                0
            };
            super::fns().vlib_stats_set_gauge(gauge, draining as u64);
        }
    }));
}
