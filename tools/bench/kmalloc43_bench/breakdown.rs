// SPDX-License-Identifier: GPL-2.0

//! Where a kmalloc43 pair's cycles go, seen from a caller: medians of [`SAMPLES`] single
//! operations timed with the cycle counter (`get_cycles`), each minus the median of an empty
//! timed region.
//!
//! A caller can time only what it can call, so the layers are measured by what they cost alone:
//!
//! - *C call*: two out-of-line calls of a C function that does nothing (a pair is two calls);
//! - *C export + ABI*: `kmalloc43_free(NULL, type)` twice: the exported C wrapper, which returns
//!   at once for NULL;
//! - *a lock*: two uncontended `spin_lock_irqsave`/`spin_unlock_irqrestore` rounds on a lock of
//!   this module: what the per-CPU slot lock's work costs a pair (interrupts off, a `cmpxchg`, a
//!   release store, interrupts back on), and the heap lock when a call takes it;
//! - *interrupt toggles*: two `local_irq_save`/`local_irq_restore` rounds, the lock's interrupt
//!   part alone (under TCG re-enabling interrupts ends a translation block);
//! - the whole 64 B `NOWAIT` pair, and `kmalloc`'s for scale; then each half on its own (the
//!   other half runs outside the timed region).
//!
//! What the pair costs beyond the export is the type lookup, the magazine fast path (or the
//! lock and the core when a call misses it): `Documentation/performance.rst` splits the core
//! and the magazine operations with callgrind on the host.

use kernel::prelude::*;

use crate::fixed::{quotient, Tenths};
use crate::kernel_side::{self as ks, Stamp};
use crate::kmalloc43::ffi::{self, RawType};
use crate::pairs::{Allocator, Kmalloc, Kmalloc43};

/// Timed samples per probe.
const SAMPLES: usize = 4096;
/// Request size of the pairs.
pub(crate) const SIZE: usize = 64;

/// Median cycles of `SAMPLES` runs of `op`.
fn median(mut op: impl FnMut()) -> Result<u64> {
    let mut v = KVVec::with_capacity(SAMPLES, GFP_KERNEL)?;
    for _ in 0..SAMPLES {
        let t = Stamp::now();
        op();
        v.push(t.elapsed().cycles, GFP_KERNEL)?;
    }
    Ok(middle(&v))
}

/// The element that would sit at index `len / 2` if `v` were sorted, by bisection on the value
/// (no sort: 64 counting passes at most).
fn middle(v: &[u64]) -> u64 {
    let (mut lo, mut hi) = (0u64, v.iter().copied().max().unwrap_or(0));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if v.iter().filter(|&&x| x <= mid).count() > v.len() / 2 {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// The probes, in print order.
const PROBES: [&str; 10] = [
    "2 x out-of-line C call",
    "2 x C export + ABI (kmalloc43_free(NULL))",
    "2 x spin_lock_irqsave+unlock (reference)",
    "kmalloc43 NOWAIT pair (64 B)",
    "kmalloc pair (64 B)",
    "2 x local_irq_save+restore (reference)",
    "kmalloc43 NOWAIT malloc alone (64 B)",
    "kmalloc43 free alone (64 B)",
    "kmalloc alone (64 B)",
    "kfree alone (64 B)",
];

/// Median cycles of `SAMPLES` runs of `timed`, each prepared by `before` and followed by
/// `after` outside the timed region (one half of a pair timed on its own).
fn median_half<P, Q>(
    mut before: impl FnMut() -> P,
    mut timed: impl FnMut(P) -> Q,
    mut after: impl FnMut(Q),
) -> Result<u64> {
    let mut v = KVVec::with_capacity(SAMPLES, GFP_KERNEL)?;
    for _ in 0..SAMPLES {
        let p = before();
        let t = Stamp::now();
        let q = timed(p);
        v.push(t.elapsed().cycles, GFP_KERNEL)?;
        after(q);
    }
    Ok(middle(&v))
}

/// Median cycles per probe, the empty region subtracted.
pub(crate) struct Breakdown {
    cycles: [u64; PROBES.len()],
}

/// Median cycles of the allocation alone and of the free alone of `a`'s pairs.
fn halves(a: &impl Allocator) -> Result<[u64; 2]> {
    Ok([
        // SAFETY: `p` was just allocated by `a` (or is null, which both frees ignore).
        median_half(|| (), |()| a.alloc(SIZE), |p| unsafe { a.free(p) })?,
        // SAFETY: as above.
        median_half(|| a.alloc(SIZE), |p| unsafe { a.free(p) }, |()| ())?,
    ])
}

/// Measures the probes with kmalloc43 type `ty`.
pub(crate) fn run(ty: *mut RawType) -> Result<Breakdown> {
    let k43 = Kmalloc43 {
        ty,
        flags: ffi::KM43_NOWAIT,
    };
    let empty = median(|| {})?;
    let [k43_malloc, k43_free] = halves(&k43)?;
    let [kmalloc, kfree] = halves(&Kmalloc)?;
    let raw = [
        median(|| {
            ks::call_nothing();
            ks::call_nothing();
        })?,
        median(|| {
            // SAFETY: freeing NULL is a no-op that returns 0; `ty` is defined.
            unsafe {
                ffi::kmalloc43_free(core::ptr::null_mut(), ty);
                ffi::kmalloc43_free(core::ptr::null_mut(), ty);
            }
        })?,
        median(|| {
            ks::lock_round();
            ks::lock_round();
        })?,
        median(|| {
            let p = k43.alloc(SIZE);
            // SAFETY: just allocated by `k43` (or null, which kmalloc43_free ignores).
            unsafe { k43.free(p) };
        })?,
        median(|| {
            let p = Kmalloc.alloc(SIZE);
            // SAFETY: just allocated by kmalloc (or null, which kfree ignores).
            unsafe { Kmalloc.free(p) };
        })?,
        median(|| {
            ks::irq_round();
            ks::irq_round();
        })?,
        k43_malloc,
        k43_free,
        kmalloc,
        kfree,
    ];
    Ok(Breakdown {
        cycles: raw.map(|c| c.saturating_sub(empty)),
    })
}

impl Breakdown {
    /// Prints the table.
    pub(crate) fn print(&self) {
        let pair = self.cycles[3];
        pr_info!("4. where a kmalloc43 pair's cycles go, as a caller sees it (median of {SAMPLES}, get_cycles, empty region subtracted)\n");
        pr_info!("{:>42} | {:>8} | {:>9}\n", "probe", "cycles", "% of k43");
        for (name, &c) in PROBES.iter().zip(self.cycles.iter()) {
            let pct: Tenths = quotient(c * 100, pair);
            pr_info!("{:>42} | {:>8} | {:>9}\n", name, c, pct);
        }
        let rest = pair.saturating_sub(self.cycles[1]);
        let pct: Tenths = quotient(rest * 100, pair);
        pr_info!(
            "{:>42} | {:>8} | {:>9}\n",
            "pair beyond the export: type, fast path",
            rest,
            pct
        );
    }

    /// Prints the CSV rows.
    pub(crate) fn print_csv(&self) {
        for (name, &c) in PROBES.iter().zip(self.cycles.iter()) {
            pr_info!("CSV,breakdown,{name},median_cycles,{c},,\n");
        }
    }
}
