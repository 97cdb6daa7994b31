//! Thin OS layer: large zero-filled arrays straight from `mmap`.
//!
//! Flow tables are large (tens to hundreds of MiB per worker) and accessed
//! at random, so they are mapped directly with transparent huge pages
//! requested: one TLB entry then covers 2 MiB instead of 4 KiB, which is
//! what keeps a 1M-flow lookup close to a 1K-flow one. Mapping directly
//! also keeps them out of VPP's fixed-size main heap, and fresh anonymous
//! memory is already zero.
//!
//! A table read by every packet (flow-table buckets, reply-table heads)
//! can have all its pages faulted in when it is mapped
//! ([`prefault_hot_tables`], which the VPP plugin turns on): a first touch
//! of a huge page zeroes 2 MiB, and a frame of new flows into a fresh
//! 2^21-bucket table touched hundreds of them, keeping a worker in one
//! node call for over a second, past VPP's barrier timeout (VPP aborted:
//! "worker thread deadlock"). Faulting in up front costs the time once,
//! on the main thread, and turns a table too big for the machine into an
//! error instead of an out-of-memory kill later. Arrays touched once per
//! flow (reply slots) are [`ZeroedArray::sparse`]: small pages, faulted
//! in as used, 4 KiB at a time.
//!
//! It also holds the one cache prefetch hint every part of kp uses.

use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

static PREFAULT: AtomicBool = AtomicBool::new(false);

/// Whether [`ZeroedArray::new`] faults in every page of the arrays it
/// maps (the VPP plugin: workers must not stall on first touches; host
/// tests and fuzzing leave it off, to create tables cheaply).
pub fn prefault_hot_tables(on: bool) {
    PREFAULT.store(on, Ordering::Relaxed);
}

/// `madvise` advice (Linux 5.14): populate the range, writable, as a
/// write would; fails with ENOMEM rather than faulting later.
const MADV_POPULATE_WRITE: libc::c_int = 23;

/// Types for which the all-zero bit pattern is a valid value.
///
/// # Safety
/// Implementors must be plain data (integers and arrays of them), valid
/// when every byte is zero, with no `Drop`.
pub unsafe trait Zeroable {}

const HUGE_PAGE: usize = 2 << 20;

/// A fixed-length, zero-initialised array in its own anonymous mapping.
pub struct ZeroedArray<T: Zeroable> {
    ptr: NonNull<T>,
    len: usize,
    map_len: usize,
}

// SAFETY: the array owns its mapping exclusively, like a Box<[T]>.
unsafe impl<T: Zeroable + Send> Send for ZeroedArray<T> {}
// SAFETY: shared access only hands out &[T], like a Box<[T]>.
unsafe impl<T: Zeroable + Sync> Sync for ZeroedArray<T> {}

impl<T: Zeroable> ZeroedArray<T> {
    /// Maps `len` zeroed elements for access at random by every packet:
    /// huge pages when big, faulted in now if [`prefault_hot_tables`] is
    /// on. `None` if the kernel refuses.
    pub fn new(len: usize) -> Option<Self> {
        let a = Self::map(len, true)?;
        if PREFAULT.load(Ordering::Relaxed) && !a.populate() {
            return None;
        }
        Some(a)
    }

    /// Maps `len` zeroed elements that are touched once per use (a slot
    /// per flow): small pages, faulted in as they are first written.
    pub fn sparse(len: usize) -> Option<Self> {
        Self::map(len, false)
    }

    fn map(len: usize, hot: bool) -> Option<Self> {
        let bytes = len.checked_mul(core::mem::size_of::<T>())?.max(1);
        // Big hot tables in whole huge pages (fewer TLB misses); a small
        // one in small pages, so it neither costs nor zeroes 2 MiB on first
        // touch.
        let huge = hot && bytes >= HUGE_PAGE;
        let map_len = bytes.checked_next_multiple_of(if huge { HUGE_PAGE } else { 4096 })?;
        // SAFETY: an anonymous private mapping with no address hint has no
        // preconditions; the result is checked against MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        // SAFETY: advice on a range we just mapped; failure (no THP) is
        // harmless, the memory just stays in the pages it has.
        unsafe { libc::madvise(p, map_len, if huge { libc::MADV_HUGEPAGE } else { libc::MADV_NOHUGEPAGE }) };
        // Page-aligned, so aligned for any T with align <= 4096.
        debug_assert!(core::mem::align_of::<T>() <= 4096);
        Some(ZeroedArray { ptr: NonNull::new(p.cast())?, len, map_len })
    }

    /// Faults in every page now; false if the memory is not there.
    fn populate(&self) -> bool {
        let p = self.ptr.as_ptr().cast::<u8>();
        // SAFETY: advice on exactly our own mapping.
        if unsafe { libc::madvise(p.cast(), self.map_len, MADV_POPULATE_WRITE) } == 0 {
            return true;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return false;
        }
        // An older kernel: a write to each page faults it in (zero stays
        // zero, so the contents are unchanged).
        for off in (0..self.map_len).step_by(4096) {
            // SAFETY: `off` is inside our writable mapping.
            unsafe { p.add(off).write_volatile(0) };
        }
        true
    }
}

impl<T: Zeroable> Deref for ZeroedArray<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the mapping holds `len` zero-initialised (hence valid, by
        // `Zeroable`) elements and lives as long as `self`.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Zeroable> DerefMut for ZeroedArray<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes the access unique.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Zeroable> Drop for ZeroedArray<T> {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `new`, once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.map_len) };
    }
}

impl<T: Zeroable> core::fmt::Debug for ZeroedArray<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ZeroedArray(len {})", self.len)
    }
}

/// Hints the CPU to load the cache line at `p` (any address: a prefetch
/// is only a hint and never faults, so this is safe for every pointer).
#[inline(always)]
pub fn prefetch_ptr<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` never faults and reads no memory that the
    // program can observe, whatever the address; SSE is part of x86_64.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Hints the CPU to load the cache line holding `r`.
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    prefetch_ptr(r as *const T);
}

#[cfg(test)]
mod tests {
    use super::*;

    // SAFETY: u64 is valid when zero.
    unsafe impl Zeroable for u64 {}

    #[test]
    fn zeroed_writable_and_sized() {
        let mut a = ZeroedArray::<u64>::new(1 << 20).unwrap();
        assert_eq!(a.len(), 1 << 20);
        assert!(a.iter().step_by(4096).all(|&x| x == 0));
        a[12345] = 7;
        assert_eq!(a[12345], 7);
        assert_eq!(ZeroedArray::<u64>::new(0).unwrap().len(), 0);
        assert!(ZeroedArray::<u64>::new(usize::MAX / 4).is_none());
        let mut s = ZeroedArray::<u64>::sparse(1 << 20).unwrap();
        s[999] = 3;
        assert_eq!((s[999], s[1000]), (3, 0));
    }

    #[test]
    fn populated_arrays_are_zero() {
        let a = ZeroedArray::<u64>::map(3 << 20, true).unwrap();
        assert!(a.populate());
        assert!(a.iter().all(|&x| x == 0));
    }
}
