//! "The workers are parked" as a type.
//!
//! Much of kp's VPP-side state is owned by the workers while they run and
//! may be touched by the main thread only while VPP's worker barrier holds
//! them (or before they start). [`BarrierHeld`] is the proof of that: it
//! can only be made where the condition is known to hold (inside a
//! callback VPP runs under the barrier, or by taking the barrier with
//! [`Barrier::sync`]), and everything that needs the condition asks for it.
//! Taking it `&mut` also makes two such accesses exclusive of each other.

use super::sys;
use core::marker::PhantomData;

/// Proof that the caller is the main thread and no worker runs: VPP holds
/// the worker barrier, or the workers have not started yet.
pub struct BarrierHeld<'a> {
    /// Not `Send` or `Sync` (the proof is only good on the main thread);
    /// covariant in `'a`, so a borrow of it can be shortened.
    _main_thread: PhantomData<(&'a (), *const ())>,
}

impl BarrierHeld<'_> {
    /// # Safety
    /// Main thread, and either VPP holds the worker barrier for as long as
    /// the token lives (CLI commands and API handlers not marked mp-safe)
    /// or the workers have not started (init and config functions).
    pub unsafe fn assume<'a>() -> BarrierHeld<'a> {
        BarrierHeld { _main_thread: PhantomData }
    }
}

/// The worker barrier, taken by kp itself and held until dropped (also
/// when unwinding, so a bug cannot leave the workers parked for good).
pub struct Barrier(*mut sys::vlib_main_t);

impl Barrier {
    /// # Safety
    /// Main thread, `vm` its vlib_main_t, the barrier not already held.
    pub unsafe fn sync(vm: *mut sys::vlib_main_t) -> Barrier {
        // SAFETY: per the contract; exported by libvlib.
        unsafe { super::fns().vlib_worker_thread_barrier_sync_int(vm, c"kp".as_ptr()) };
        Barrier(vm)
    }

    /// The proof, for as long as this guard holds the barrier.
    pub fn held(&mut self) -> BarrierHeld<'_> {
        // SAFETY: this guard holds the barrier on the main thread until it
        // is dropped, which the token's borrow of it outlives not.
        unsafe { BarrierHeld::assume() }
    }
}

impl Drop for Barrier {
    fn drop(&mut self) {
        // SAFETY: the barrier this guard took, on the same thread.
        unsafe { super::fns().vlib_worker_thread_barrier_release(self.0) };
    }
}
