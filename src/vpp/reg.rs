//! Registration objects VPP links into its global lists.
//!
//! VPP writes the `next` fields of registrations it is handed, so they must
//! live in writable memory for the life of the process; and the pointers
//! they contain make them `!Sync`. `Registration` is the one place that
//! asserts this is fine.

use core::cell::UnsafeCell;

/// A static registration record that VPP may write to.
#[repr(transparent)]
pub struct Registration<T>(UnsafeCell<T>);

// SAFETY: registrations are written only by VPP's single-threaded start-up
// (constructors and list linking) and read afterwards; kp never touches
// them from two threads at once.
unsafe impl<T> Sync for Registration<T> {}

impl<T> Registration<T> {
    pub const fn new(v: T) -> Self {
        Registration(UnsafeCell::new(v))
    }

    pub const fn get(&self) -> *mut T {
        self.0.get()
    }
}

/// A fixed-size C char array from a string, at compile time (for the
/// plugin registration's inline strings).
pub const fn c_array<const N: usize>(s: &str) -> [core::ffi::c_char; N] {
    let b = s.as_bytes();
    assert!(b.len() < N);
    let mut out = [0 as core::ffi::c_char; N];
    let mut i = 0;
    while i < b.len() {
        out[i] = b[i] as core::ffi::c_char;
        i += 1;
    }
    out
}
