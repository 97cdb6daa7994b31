//! kp's per-VIP and per-pod packet counters: VPP simple counters (one row
//! per thread, in the stats segment), which the nodes add to and `show`
//! and the dumps sum.

use super::barrier::BarrierHeld;
use super::reg::Registration;
use super::{fns, sys};
use crate::config::ConfigError;
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

    /// Indices validated so far (0 before the first validation).
    fn len(&self) -> usize {
        // SAFETY: rows are VPP vectors (a null one has length 0); every
        // row has the same length.
        unsafe {
            let rows = (*self.0.get()).counters;
            if super::text::vec_len(rows) == 0 {
                0
            } else {
                super::text::vec_len(*rows)
            }
        }
    }

    /// Stats-segment bytes growing to `indices` takes at worst: per row
    /// (one per thread), VPP reallocates the row to 1.5 times its new
    /// length, the old one still allocated while it copies.
    fn growth_bytes(&self, indices: u32, rows: usize) -> u64 {
        let have = self.len() as u64;
        let want = u64::from(indices);
        if want <= have {
            return 0;
        }
        rows as u64 * (want * 8 * 3 / 2 + have * 8)
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

/// Stats-segment bytes kp leaves for VPP itself (interface, node and error
/// counters of what is added later): a sixteenth of the segment.
const STATS_RESERVE_DIVISOR: u64 = 16;

/// Whether the stats segment can hold kp's counters for `vips` VIP and
/// `pods` pod indices (VPP aborts when the segment runs out, so a change
/// that might need more is refused before anything changes). Main thread.
pub fn room_for(vips: u32, pods: u32) -> Result<(), ConfigError> {
    let f = fns();
    // SAFETY: vlib_thread_main is VPP's global thread table.
    let rows = unsafe { (*f.vlib_thread_main()).n_vlib_mains }.max(1) as usize;
    let own = [&VIP_EXISTING, &VIP_FIRST, &VIP_UNTRACKED, &VIP_NO_POD]
        .iter()
        .map(|c| c.growth_bytes(vips, rows))
        .sum::<u64>()
        + POD_PACKETS.growth_bytes(pods, rows);
    if own == 0 {
        return Ok(());
    }
    // Every VIP and pod address is also a FIB entry kp routes by, with a
    // load-balance object whose two combined counters (/net/route/to and
    // /via, 16 bytes per thread each) VPP grows in the same segment, and
    // reallocates whole (1.5 times) when they fill. kp cannot see their
    // capacity, so it leaves room for that at any change that grows.
    let routes = rows as u64 * 2 * 16 * 3 / 2 * (u64::from(vips) + u64::from(pods));
    let needed = own + routes;
    // SAFETY: vlib_stats_main is VPP's stats segment, set up before any
    // plugin runs; its heap is a clib heap, read on the main thread (the
    // only one that allocates in it).
    let (size, free) = unsafe {
        let seg = f.vlib_stats_main();
        let mut usage: sys::clib_mem_usage_t = core::mem::zeroed();
        f.clib_mem_get_heap_usage((*seg).heap, &mut usage);
        ((*seg).memory_size.max(0) as u64, usage.bytes_free)
    };
    let free = free.saturating_sub(size / STATS_RESERVE_DIVISOR);
    if needed > free {
        return Err(ConfigError::CounterMemory { needed, free });
    }
    Ok(())
}
