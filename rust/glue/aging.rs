// SPDX-License-Identifier: GPL-2.0

//! The magazine layer's aging (`crate::magazine::trim`): every
//! [`AGE_ROUNDS`](crate::magazine::AGE_ROUNDS) rounds a CPU's magazines exchange with the piece
//! layer (fills, and magazines given back by the depots' trimming or the class budget), that CPU
//! gives back the magazines of every type and class that served no allocation since its last pass,
//! with what their depots' working sets no longer need, and folds the requests its rows served
//! into the piece layer's counters (whose give-back budget counts them). Slow paths only: the
//! fast paths neither count nor look.
//!
//! That clock advances only with traffic, so an idle CPU's magazines and an idle depot would
//! never be trimmed, nor would the piece layer's give-back windows end (they count operations
//! too). The *timed pass* (Bonwick and Adams' `kmem_update` / `vmem_update`, every
//! [`AGING_SECS`] seconds by default; `Documentation/magazines.rst`, "Timed aging"): a
//! deferrable delayed work ([`AgingWork`], the C side's `struct kmalloc43_aging`) that takes
//! each CPU's slot in turn and runs that CPU's aging pass, then lets the piece layer give back
//! by time what stayed parked for a whole period ([`Heap::timed_pass`]). The interval is the
//! root-writable debugfs file `aging_interval` (seconds, 0: off); unload stops the work before
//! the heap goes.

use core::{cell::Cell, ffi::c_void, ptr::NonNull};

use kernel::{
    ffi::c_uint,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc,
    },
};

use crate::heap::{might_sleep, Heap};
use crate::magazine::MagBox;
use crate::magazines::{CpuCache, Front};
use crate::malloc::NCLASSES;

impl Heap {
    /// Counts `rounds` that this CPU's magazines (its slot `cache`, held) exchanged with the
    /// piece layer; runs the aging pass once a window is over.
    #[inline]
    pub(crate) fn note_moved(&self, cache: &mut CpuCache, rounds: usize) {
        if cache.age.note(rounds) {
            self.age_pass(cache);
        }
    }

    /// This CPU's aging pass (its slot `cache` held): `Front::age`, the magazines it takes out
    /// given back, then the requests folded under the heap lock. Readers take every slot, so they
    /// see each request once, in a row or in the piece layer.
    #[cold]
    #[inline(never)]
    fn age_pass(&self, cache: &mut CpuCache) {
        self.age_giving(cache, &Cell::new(0));
    }

    /// A CPU's aging pass (its slot `cache` held, by its own CPU or by the timed pass), adding
    /// to `given` the pages that went back to the page allocator meanwhile; the rounds given
    /// back.
    fn age_giving(&self, cache: &mut CpuCache, given: &Cell<usize>) -> usize {
        let mut calls = [0u64; NCLASSES];
        let mut rounds = 0;
        Front::age(cache, &mut calls, |c, m| {
            rounds += self.give_back(c, m, given)
        });
        self.with_giving(given, |s| {
            for (c, &n) in calls.iter().enumerate() {
                if n != 0 {
                    s.malloc.add_magazine_calls(c, n);
                }
            }
        });
        rounds
    }

    /// Gives a magazine's rounds of class `c` back to the piece layer and frees it (this CPU's
    /// slot held; rounds of this heap, free).
    pub(crate) fn return_magazine(&self, c: usize, m: MagBox) {
        self.give_back(c, m, &Cell::new(0));
    }
}

/// Seconds between two timed passes when the module loads (Bonwick and Adams' `kmem_update`
/// and `vmem_update` run every 15 seconds); the debugfs file `aging_interval` changes it.
pub(crate) const AGING_SECS: u32 = 15;

/// Largest interval the `aging_interval` file takes (a day).
pub(crate) const AGING_MAX_SECS: u32 = 86_400;

/// What the timed passes did (debugfs `drain`, KUnit).
pub(crate) struct AgingStats {
    /// Timed passes run.
    pub(crate) passes: Atomic<usize>,
    /// Rounds they gave back from magazines and depots.
    pub(crate) rounds: Atomic<usize>,
    /// Clusters they gave back to kmem.
    pub(crate) clusters: Atomic<usize>,
    /// Pages the page allocator got back during them.
    pub(crate) pages: Atomic<usize>,
}

impl AgingStats {
    /// No pass yet.
    pub(crate) fn new() -> Self {
        Self {
            passes: Atomic::new(0),
            rounds: Atomic::new(0),
            clusters: Atomic::new(0),
            pages: Atomic::new(0),
        }
    }
}

/// What one timed pass gave back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TimedPass {
    /// Rounds of magazines and depots, back to the piece layer.
    pub(crate) rounds: usize,
    /// Clusters back to kmem.
    pub(crate) clusters: usize,
    /// Pages back to the page allocator.
    pub(crate) pages: usize,
}

impl Heap {
    /// The timed pass (`Documentation/magazines.rst`, "Timed aging"; task context: the periodic
    /// work, or a KUnit case calling it directly). Each CPU's slot in turn, not all at once:
    /// that CPU's aging pass ([`Heap::age_pass`]: idle magazines and what idle depots' working
    /// sets no longer need go back, requests folded), as the clock of rounds exchanged would
    /// run it if that CPU had traffic. Then, under the heap lock, the piece layer's give-back
    /// by time ([`crate::malloc::Malloc::give_back_idle`], with the operation count of the
    /// previous pass), and the chunks that became free go to the page allocator.
    pub(crate) fn timed_pass(&self) -> TimedPass {
        might_sleep();
        let given = Cell::new(0);
        let mut rounds = 0;
        for cpu in 0..self.front.cpus.len() {
            if let Some(mut cache) = self.front.cpus.lock_cpu(cpu) {
                rounds += self.age_giving(&mut cache, &given);
            }
        }
        let clusters = self.with_giving(&given, |s| {
            let n = s.malloc.give_back_idle(s.timed_since);
            s.timed_since = s.malloc.op_count();
            n
        });
        let pass = TimedPass {
            rounds,
            clusters,
            pages: given.get(),
        };
        let st = &self.aging;
        st.rounds.fetch_add(pass.rounds, Relaxed);
        st.clusters.fetch_add(pass.clusters, Relaxed);
        st.pages.fetch_add(pass.pages, Relaxed);
        st.passes.fetch_add(1, Relaxed);
        pass
    }
}

/// The C side's timed-aging work (opaque).
#[repr(C)]
struct CAging {
    _opaque: [u8; 0],
}

extern "C" {
    fn kmalloc43_c_aging_new(heap: *const c_void, secs: c_uint) -> *mut CAging;
    fn kmalloc43_c_aging_interval(a: *mut CAging) -> c_uint;
    fn kmalloc43_c_aging_set(a: *mut CAging, secs: c_uint);
    fn kmalloc43_c_aging_free(a: *mut CAging);
}

/// The work's callback: one timed pass of its heap.
///
/// # Safety
///
/// `heap` is the heap of an [`AgingWork`], alive until `kmalloc43_c_aging_free` returned
/// (which disables the work and waits for a running pass).
#[no_mangle]
pub(crate) unsafe extern "C" fn kmalloc43_rust_aging_run(heap: *const c_void) {
    // SAFETY: the caller's guarantee: a live heap.
    let heap = unsafe { &*heap.cast::<Heap>() };
    heap.timed_pass();
}

/// A heap's timed pass, run every [`AgingWork::interval`] seconds by a deferrable delayed work
/// (it does not wake an idle CPU by itself).
///
/// # Invariants
///
/// `raw` comes from `kmalloc43_c_aging_new` for the heap `heap` keeps alive, and is freed (the
/// work disabled, a running pass finished) before `heap` is dropped.
pub(crate) struct AgingWork {
    raw: NonNull<CAging>,
    heap: Arc<Heap>,
}

// SAFETY: the C side orders the interval's changes under its own lock and frees only through
// `&mut self` (drop); the heap is `Sync`.
unsafe impl Send for AgingWork {}
// SAFETY: as above: `&AgingWork` reads or sets the interval, under the C side's lock.
unsafe impl Sync for AgingWork {}

impl AgingWork {
    /// Starts `heap`'s timed pass every `secs` seconds (0: off until set; process context).
    pub(crate) fn new(heap: Arc<Heap>, secs: u32) -> Result<Self> {
        if secs > AGING_MAX_SECS {
            return Err(EINVAL);
        }
        let data = Arc::as_ptr(&heap).cast::<c_void>();
        // SAFETY: `data` stays valid while the work exists (`heap` is kept until `drop` freed
        // it, which waits for a running pass).
        let raw = unsafe { kmalloc43_c_aging_new(data, secs) };
        let raw = NonNull::new(raw).ok_or(ENOMEM)?;
        Ok(Self { raw, heap })
    }

    /// Its heap.
    pub(crate) fn heap(&self) -> &Arc<Heap> {
        &self.heap
    }

    /// Seconds between two passes (0: off).
    pub(crate) fn interval(&self) -> u32 {
        // SAFETY: `raw` is live (type invariant).
        unsafe { kmalloc43_c_aging_interval(self.raw.as_ptr()) }
    }

    /// Sets the interval (process context): the next pass `secs` seconds from now, or none
    /// (0); `EINVAL` above [`AGING_MAX_SECS`], nothing changed.
    pub(crate) fn set_interval(&self, secs: u32) -> Result {
        if secs > AGING_MAX_SECS {
            return Err(EINVAL);
        }
        // SAFETY: `raw` is live (type invariant).
        unsafe { kmalloc43_c_aging_set(self.raw.as_ptr(), secs) };
        Ok(())
    }
}

impl Drop for AgingWork {
    fn drop(&mut self) {
        // SAFETY: `raw` is live and freed once, here (type invariant); the call returns once no
        // pass runs and none can be queued, before `heap` is dropped.
        unsafe { kmalloc43_c_aging_free(self.raw.as_ptr()) };
    }
}
