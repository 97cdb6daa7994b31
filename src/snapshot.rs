//! Publishing immutable data-plane snapshots to worker threads.
//!
//! The control plane builds a complete new [`crate::dataplane::Dataplane`]
//! (VIPs, Maglev tables, pods) and publishes it in one step; a worker sees
//! either the old or the new snapshot, never a half-built one, and takes no
//! lock per packet.
//!
//! - `publish` swaps an `Arc` under a mutex and bumps a generation number.
//! - Each worker's [`Reader`] caches an `Arc`. At the start of a batch it
//!   announces the generation it runs with (its *active* generation) and,
//!   only if the generation moved, clones the new `Arc` (taking the mutex:
//!   once per change, not per packet). At the end of the batch it
//!   announces that it is idle.
//! - [`SnapshotCell::quiescent_since`] tells the control plane whether every
//!   worker is idle or already running a generation at least `g`; the pod
//!   garbage collector relies on it (see [`crate::refcount`]).
//!
//! Announcing uses sequentially consistent operations on each worker's own
//! cache line (two per batch): the worker stores its active generation and
//! then re-reads the current one; the publisher stores the new generation
//! and then reads the workers'. One of the two always sees the other, so a
//! worker can never be considered idle while it uses a snapshot older
//! than the one the collector asked about. In VPP, control-plane changes
//! happen under the worker barrier, where every worker is idle anyway.

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A worker that is not inside a batch.
const IDLE: u64 = u64::MAX;

pub struct SnapshotCell<T> {
    current: Mutex<Arc<T>>,
    generation: AtomicU64,
    active: Box<[CachePadded<AtomicU64>]>,
}

impl<T> SnapshotCell<T> {
    pub fn new(initial: T, n_readers: usize) -> Self {
        SnapshotCell {
            current: Mutex::new(Arc::new(initial)),
            generation: AtomicU64::new(1),
            active: (0..n_readers.max(1)).map(|_| CachePadded::new(AtomicU64::new(IDLE))).collect(),
        }
    }

    /// Publishes `next`; returns its generation.
    pub fn publish(&self, next: T) -> u64 {
        let mut cur = self.current.lock();
        *cur = Arc::new(next);
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The latest snapshot (for the control plane and `show` commands).
    pub fn load(&self) -> Arc<T> {
        Arc::clone(&self.current.lock())
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// A reader for worker `thread`; each worker must use its own index.
    pub fn reader(&self, thread: usize) -> Reader<T> {
        assert!(thread < self.active.len());
        Reader { thread, cached: self.load(), seen: 0 }
    }

    /// True when no worker can still be using a snapshot older than
    /// generation `g`: each is idle or runs `g` or later.
    pub fn quiescent_since(&self, g: u64) -> bool {
        self.active.iter().all(|a| a.load(Ordering::SeqCst) >= g)
    }
}

/// A worker's handle: its cached snapshot and its announcement slot.
pub struct Reader<T> {
    thread: usize,
    cached: Arc<T>,
    seen: u64,
}

impl<T> Reader<T> {
    /// Starts a batch: announces the generation and returns the snapshot
    /// to use for the whole batch. Dropping the guard ends the batch.
    #[inline]
    pub fn enter<'a>(&'a mut self, cell: &'a SnapshotCell<T>) -> Active<'a, T> {
        let slot = &cell.active[self.thread];
        let g = loop {
            let g = cell.generation.load(Ordering::SeqCst);
            slot.store(g, Ordering::SeqCst);
            if cell.generation.load(Ordering::SeqCst) == g {
                break g;
            }
        };
        if g != self.seen {
            // At least generation g (possibly newer): never older than what
            // was announced.
            self.cached = cell.load();
            self.seen = g;
        }
        Active { snapshot: &self.cached, slot }
    }

    /// The snapshot of the last batch (outside a batch: for traces and
    /// diagnostics of what that batch did).
    pub fn cached(&self) -> &T {
        &self.cached
    }
}

/// The snapshot in use during one batch.
pub struct Active<'a, T> {
    snapshot: &'a Arc<T>,
    slot: &'a AtomicU64,
}

impl<T> core::ops::Deref for Active<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.snapshot
    }
}

impl<T> Drop for Active<'_, T> {
    fn drop(&mut self) {
        self.slot.store(IDLE, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_old_until_they_enter_again() {
        let cell = SnapshotCell::new(vec![1u32], 2);
        let mut r = cell.reader(0);
        {
            let a = r.enter(&cell);
            assert_eq!(*a, vec![1]);
            let g = cell.publish(vec![2, 2]);
            // The reader is inside a batch on the old generation.
            assert!(!cell.quiescent_since(g));
            assert_eq!(*a, vec![1], "a batch keeps its snapshot");
        }
        assert!(cell.quiescent_since(cell.generation()));
        let a = r.enter(&cell);
        assert_eq!(*a, vec![2, 2]);
        assert!(cell.quiescent_since(cell.generation()), "active on the latest counts");
    }

    #[test]
    fn never_half_built_under_concurrent_publishing() {
        // Every published vector is internally consistent (all elements
        // equal its length); readers must never see anything else.
        let cell = Arc::new(SnapshotCell::new(vec![1u64], 2));
        let readers: Vec<_> = (0..2)
            .map(|t| {
                let cell = Arc::clone(&cell);
                std::thread::spawn(move || {
                    let mut r = cell.reader(t);
                    let mut last = 0;
                    for _ in 0..20_000 {
                        let a = r.enter(&cell);
                        let n = a.len() as u64;
                        assert!(a.iter().all(|&x| x == n));
                        assert!(n >= last, "generations only move forward");
                        last = n;
                    }
                })
            })
            .collect();
        for n in 2..500u64 {
            cell.publish(vec![n; n as usize]);
        }
        for h in readers {
            h.join().unwrap();
        }
    }
}
