//! VPP's clock (`vlib_time_now`, an inline function in VPP, so
//! reimplemented here from its definition over `clib_time_t`).

use super::sys;

/// Reads the CPU time-stamp counter.
#[inline(always)]
fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: rdtsc has no preconditions on x86_64.
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    0
}

/// Seconds since VPP started, on `vm`'s thread clock (`vlib_time_now`).
///
/// # Safety
/// `vm` is the calling thread's own `vlib_main_t`.
#[inline]
pub unsafe fn now(vm: *mut sys::vlib_main_t) -> f64 {
    // SAFETY: the thread's own vlib_main_t; its clock is only touched by it.
    let (ct, offset) = unsafe { (&mut (*vm).clib_time, (*vm).time_offset) };
    let n = rdtsc();
    let t = if (n.wrapping_sub(ct.last_verify_cpu_time)) >> ct.log2_clocks_per_frequency_verify != 0 {
        // SAFETY: VPP's own slow path, on the thread's own clock.
        unsafe { super::fns().clib_time_verify_frequency(ct) };
        ct.total_cpu_time
    } else {
        let t = ct.total_cpu_time.wrapping_add(n.wrapping_sub(ct.last_cpu_time));
        ct.total_cpu_time = t;
        ct.last_cpu_time = n;
        t
    };
    t as f64 * ct.seconds_per_clock + offset
}

/// The flow table's tick: whole seconds since start, plus one (so 0 is
/// never a live expiry).
///
/// # Safety
/// As [`now`].
#[inline]
pub unsafe fn ticks(vm: *mut sys::vlib_main_t) -> u32 {
    // SAFETY: per the contract.
    (unsafe { now(vm) } as u32).saturating_add(1)
}
