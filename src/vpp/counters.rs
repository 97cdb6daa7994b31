//! kp's per-VIP and per-pod packet counters: VPP simple counters (one row
//! per thread, in the stats segment), which the nodes add to and `show`
//! and the dumps sum.

use super::barrier::BarrierHeld;
use super::reg::Registration;
use super::{fns, sys};
use crate::control::VipCounters;
use core::ffi::c_char;
/// A VPP simple counter (per thread, in the stats segment).
pub struct Counter(Registration<sys::vlib_simple_counter_main_t>);

impl Counter {
    const fn new(name: &'static core::ffi::CStr, stat: &'static core::ffi::CStr) -> Counter {
        Counter(Registration::new(sys::vlib_simple_counter_main_t {
            counters: core::ptr::null_mut(),
            name: name.as_ptr() as *mut c_char,
            stat_segment_name: stat.as_ptr() as *mut c_char,
            stats_entry_index: 0,
        }))
    }

    /// Makes every index up to `index` valid (new ones start at zero).
    pub fn validate(&self, index: u32, _: &BarrierHeld) {
        // SAFETY: VPP's own validation grows every thread's vector.
        unsafe { fns().vlib_validate_simple_counter(self.0.get(), index) };
    }

    /// Sets `index` back to zero on every thread.
    pub fn zero(&self, index: u32, held: &BarrierHeld) {
        self.validate(index, held);
        // SAFETY: the rows were just validated to hold `index`; workers are
        // parked.
        unsafe {
            let rows = (*self.0.get()).counters;
            for t in 0..super::text::vec_len(rows) {
                *(*rows.add(t)).add(index as usize) = 0;
            }
        }
    }

    /// The sum over threads (0 for an index never validated).
    pub fn sum(&self, index: u32) -> u64 {
        // SAFETY: rows are VPP vectors; out-of-range indices are skipped.
        unsafe {
            let rows = (*self.0.get()).counters;
            (0..super::text::vec_len(rows))
                .map(|t| {
                    let row = *rows.add(t);
                    if (index as usize) < super::text::vec_len(row) {
                        *row.add(index as usize)
                    } else {
                        0
                    }
                })
                .sum()
        }
    }

    /// The calling thread's row, for adding to indices that were validated.
    ///
    /// # Safety
    /// `thread` is the caller's thread index.
    #[inline(always)]
    pub(super) unsafe fn row(&self, thread: usize) -> *mut u64 {
        // SAFETY: per the contract; VPP validates a row per thread.
        unsafe { *(*self.0.get()).counters.add(thread) }
    }

    /// Adds on the calling thread's row.
    ///
    /// # Safety
    /// `thread` is the caller's thread index and `index` was validated.
    #[inline(always)]
    pub(super) unsafe fn add(&self, thread: usize, index: u32, n: u64) {
        // SAFETY: per the contract: each thread writes only its own row.
        unsafe {
            let row = *(*self.0.get()).counters.add(thread);
            *row.add(index as usize) += n;
        }
    }
}

pub static VIP_EXISTING: Counter = Counter::new(c"kp-vip-existing", c"/kp/vip/existing-flow-packets");
pub static VIP_FIRST: Counter = Counter::new(c"kp-vip-first", c"/kp/vip/first-packets");
pub static VIP_UNTRACKED: Counter = Counter::new(c"kp-vip-untracked", c"/kp/vip/untracked-packets");
pub static VIP_NO_POD: Counter = Counter::new(c"kp-vip-no-pod", c"/kp/vip/no-pod-packets");
pub static POD_PACKETS: Counter = Counter::new(c"kp-pod-packets", c"/kp/pod/packets");

pub fn vip_counters(vip: u32) -> VipCounters {
    VipCounters {
        existing: VIP_EXISTING.sum(vip),
        first: VIP_FIRST.sum(vip),
        untracked: VIP_UNTRACKED.sum(vip),
        no_pod: VIP_NO_POD.sum(vip),
    }
}
