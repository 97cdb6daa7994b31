//! Lock-free per-thread reference counts.
//!
//! Each worker thread counts, per pod index, how many of *its* flow-table
//! entries point at that pod: +1 when it inserts or repoints an entry to the
//! pod, -1 when an entry pointing at it is evicted, swept or repointed
//! away. Only the owning thread ever writes its counters, so an update is a
//! plain relaxed load and store on memory no other thread writes: no
//! atomic read-modify-write, no shared cache line.
//!
//! The control plane reads the sum over all threads. Reading never resets
//! anything (these are gauges, not statistics counters), and a thread's
//! counters only grow: storage comes in fixed chunks that the owner
//! allocates on first use and publishes with a release store, so a reader
//! sees either no chunk (all zero) or a fully initialised one, and nothing
//! is ever moved or freed while threads run.
//!
//! # When may a removed pod's state be freed?
//!
//! A summed count of 0 alone is not enough: a worker may have looked the pod
//! up in a Maglev table that still contained it and be about to insert a
//! flow (and increment) right now. The rule kp applies
//! ([`crate::dataplane::Controller::collect_garbage`]):
//!
//! 1. the pod is no longer in any published table (it was deleted, or its
//!    VIP was), and
//! 2. every worker has been quiescent (outside a packet batch) at some point
//!    since that table was published, so no worker still holds a table that
//!    contains the pod ([`crate::snapshot`]), and
//! 3. after 1 and 2, the sum of its per-thread counts is 0.
//!
//! Only then is its index returned to the free list and possibly reused by
//! a new pod. Counts are read after the quiescence check with acquire
//! ordering, so every increment made before a worker's quiescent point is
//! seen; and after step 1 no new increment can happen.

use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicI32, AtomicPtr, Ordering};

/// Counters per chunk.
const CHUNK: usize = 1024;
/// Indices this structure can count: every pod index.
pub const MAX_INDEX: u32 = crate::config::MAX_POD_INDICES;
/// Chunks per thread: enough for [`MAX_INDEX`] indices.
const MAX_CHUNKS: usize = (MAX_INDEX as usize).div_ceil(CHUNK);

type Chunk = [AtomicI32; CHUNK];

struct ThreadCounts {
    chunks: Box<[AtomicPtr<Chunk>]>,
}

impl ThreadCounts {
    fn new() -> Self {
        ThreadCounts { chunks: (0..MAX_CHUNKS).map(|_| AtomicPtr::new(core::ptr::null_mut())).collect() }
    }

    #[inline(always)]
    fn chunk(&self, c: usize) -> Option<&Chunk> {
        let p = self.chunks[c].load(Ordering::Acquire);
        // SAFETY: a non-null pointer was produced by `Box::into_raw` in
        // `chunk_or_grow`, published with release ordering, and is only
        // freed in `Drop`, which needs `&mut self`.
        unsafe { p.as_ref() }
    }

    #[inline(always)]
    fn chunk_or_grow(&self, c: usize) -> &Chunk {
        if let Some(chunk) = self.chunk(c) {
            return chunk;
        }
        let fresh: Box<Chunk> = Box::new(core::array::from_fn(|_| AtomicI32::new(0)));
        let p = Box::into_raw(fresh);
        // Only the owning thread grows its own counts, so nobody else can
        // have installed a chunk here meanwhile.
        self.chunks[c].store(p, Ordering::Release);
        // SAFETY: just allocated and published; freed only in `Drop`.
        unsafe { &*p }
    }
}

impl Drop for ThreadCounts {
    fn drop(&mut self) {
        for slot in self.chunks.iter_mut() {
            let p = *slot.get_mut();
            if !p.is_null() {
                // SAFETY: each non-null pointer came from `Box::into_raw`
                // and is dropped exactly once, here.
                drop(unsafe { Box::from_raw(p) });
            }
        }
    }
}

/// Per-thread reference counts for up to [`MAX_INDEX`] indices.
pub struct RefCounts {
    threads: Box<[CachePadded<ThreadCounts>]>,
}

impl RefCounts {
    pub fn new(n_threads: usize) -> RefCounts {
        RefCounts { threads: (0..n_threads.max(1)).map(|_| CachePadded::new(ThreadCounts::new())).collect() }
    }

    /// Adds `delta` to `thread`'s count for `index`.
    ///
    /// Contract: only thread `thread` calls this for `thread` (each worker
    /// passes its own index). Breaking it cannot cause undefined behaviour,
    /// but concurrent updates to one counter could then be lost.
    #[inline(always)]
    pub fn add(&self, thread: usize, index: u32, delta: i32) {
        let i = index as usize;
        let counter = &self.threads[thread].chunk_or_grow(i / CHUNK)[i % CHUNK];
        counter.store(counter.load(Ordering::Relaxed) + delta, Ordering::Relaxed);
    }

    /// The count of one thread.
    pub fn get(&self, thread: usize, index: u32) -> i32 {
        let i = index as usize;
        self.threads[thread].chunk(i / CHUNK).map_or(0, |c| c[i % CHUNK].load(Ordering::Acquire))
    }

    /// The sum over all threads. Never resets anything.
    pub fn sum(&self, index: u32) -> i64 {
        (0..self.threads.len()).map(|t| i64::from(self.get(t, index))).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_up_and_down_and_sums() {
        let r = RefCounts::new(3);
        r.add(0, 5, 2);
        r.add(1, 5, 3);
        r.add(2, 5, -1);
        assert_eq!(r.sum(5), 4);
        assert_eq!(r.sum(5), 4, "summing does not reset");
        assert_eq!(r.get(1, 5), 3);
        assert_eq!(r.sum(6), 0);
        r.add(0, MAX_INDEX - 1, 1);
        assert_eq!(r.sum(MAX_INDEX - 1), 1);
    }

    #[test]
    fn threads_count_concurrently_without_losing_updates() {
        let r = Arc::new(RefCounts::new(4));
        let start = Arc::new(std::sync::Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let r = Arc::clone(&r);
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    start.wait();
                    // Every thread counts the same indices: only keeping
                    // each thread's counters apart makes the total exact.
                    for round in 0..2_000_000u32 {
                        let idx = round % 8;
                        r.add(t, idx, 1);
                        if round % 2 == 1 {
                            r.add(t, idx, -1);
                        }
                    }
                })
            })
            .collect();
        // Read while they write: sums are never negative (each thread only
        // decrements what it incremented before).
        for _ in 0..100 {
            assert!((0..5000).step_by(97).all(|i| r.sum(i) >= 0));
        }
        for h in handles {
            h.join().unwrap();
        }
        let total: i64 = (0..5000).map(|i| r.sum(i)).sum();
        assert_eq!(total, 4 * 1_000_000);
    }
}
