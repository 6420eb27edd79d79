// SPDX-License-Identifier: GPL-2.0

//! The magazine layer's aging (`crate::magazine::trim`): every
//! [`AGE_ROUNDS`](crate::magazine::AGE_ROUNDS) rounds a CPU's magazines exchange with the piece
//! layer (fills, and magazines given back by the depots' trimming or the class budget), that CPU
//! gives back the magazines of every type and class that served no allocation since its last pass,
//! with what their depots' working sets no longer need, and folds the requests its rows served
//! into the piece layer's counters (whose give-back budget counts them). Slow paths only: the
//! fast paths neither count nor look.

use crate::heap::Heap;
use crate::magazine::MagBox;
use crate::magazines::{release_magazine, CpuCache, Front};
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
        let mut calls = [0u64; NCLASSES];
        Front::age(cache, &mut calls, |c, m| self.return_magazine(c, m));
        self.with(|s| {
            for (c, &n) in calls.iter().enumerate() {
                if n != 0 {
                    s.malloc.add_magazine_calls(c, n);
                }
            }
        });
    }

    /// Gives a magazine's rounds of class `c` back to the piece layer and frees it (this CPU's
    /// slot held; rounds of this heap, free).
    pub(crate) fn return_magazine(&self, c: usize, mut m: MagBox) {
        let r = m.take_rounds();
        // SAFETY: rounds of class `c` from this heap's magazines, free.
        self.with(|s| unsafe { s.malloc.return_from_magazine(c, r) });
        release_magazine(m);
    }
}
