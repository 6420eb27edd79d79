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
//! - the whole 64 B `NOWAIT` pair, and `kmalloc`'s for scale (size known at run time, as in the
//!   pair table's K column; and a constant size, its Kc column); then each half on its own (the
//!   other half runs outside the timed region);
//! - *batches* of each size of [`BATCH_SIZES`]: [`BATCH`] allocations, then their [`BATCH`]
//!   frees (the pair table's batch loop), each half timed as a whole and divided by [`BATCH`],
//!   for kmalloc43 (`NOWAIT`, the pair table's type of the size) and `kmalloc`: a batch goes
//!   through the magazine exchanges with the
//!   depot and the fills and drains that a hot pair never reaches.
//!
//! What the pair costs beyond the export is the type lookup, the magazine fast path (or the
//! lock and the core when a call misses it): `Documentation/performance.rst` splits the core
//! and the magazine operations with callgrind on the host.

use kernel::ffi::c_void;
use kernel::prelude::*;

use crate::fixed::{quotient, Hundredths, Tenths};
use crate::kernel_side::{self as ks, Stamp};
use crate::kmalloc43::ffi::{self, RawType};
use crate::pairs::{Allocator, Kmalloc, Kmalloc43, KmallocConst, BATCH};

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
const PROBES: [&str; 11] = [
    "2 x out-of-line C call",
    "2 x C export + ABI (kmalloc43_free(NULL))",
    "2 x spin_lock_irqsave+unlock (reference)",
    "kmalloc43 NOWAIT pair (64 B)",
    "kmalloc pair (64 B)",
    "kmalloc pair, constant size (64 B)",
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

/// Sizes of the batch probes: a 60-round magazine class, a 28-round one, and one past the
/// credit a CPU keeps (a batch of 256 x 2 KiB is 512 KiB live).
pub(crate) const BATCH_SIZES: [usize; 3] = [64, 512, 2048];

/// The batch probes of a size, in print order: per object of a batch half.
const BATCH_PROBES: [&str; 4] = [
    "kmalloc43 NOWAIT batch malloc",
    "kmalloc43 batch free",
    "kmalloc batch alloc",
    "kfree batch",
];

/// Timed batches per batch probe.
const BATCHES: usize = 64;

/// Median cycles per probe, the empty region subtracted.
pub(crate) struct Breakdown {
    cycles: [u64; PROBES.len()],
    /// Per size of [`BATCH_SIZES`], median cycles per object of each half of a batch
    /// ([`BATCH_PROBES`]).
    batch: [[u64; BATCH_PROBES.len()]; BATCH_SIZES.len()],
}

/// Median cycles per object of the allocation half and of the free half of `a`'s batches
/// ([`BATCHES`] of them, after one unmeasured), each half timed as a whole.
fn batch_halves(a: &impl Allocator, size: usize, live: &mut [*mut c_void]) -> Result<[u64; 2]> {
    let mut allocs = KVVec::with_capacity(BATCHES, GFP_KERNEL)?;
    let mut frees = KVVec::with_capacity(BATCHES, GFP_KERNEL)?;
    for i in 0..=BATCHES {
        let t = Stamp::now();
        let mut failed = false;
        for slot in live.iter_mut() {
            *slot = a.alloc(size);
            failed |= slot.is_null();
        }
        let alloc = t.elapsed().cycles;
        let t = Stamp::now();
        for &p in live.iter() {
            // SAFETY: allocated by `a` above (or null, which both frees ignore), freed once.
            unsafe { a.free(p) };
        }
        let free = t.elapsed().cycles;
        if failed {
            return Err(ENOMEM);
        }
        if i > 0 {
            allocs.push(alloc, GFP_KERNEL)?;
            frees.push(free, GFP_KERNEL)?;
        }
    }
    Ok([
        middle(&allocs) / BATCH as u64,
        middle(&frees) / BATCH as u64,
    ])
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

/// Measures the probes with kmalloc43 type `ty`, the batch probes of `BATCH_SIZES[i]` with
/// `batch_types[i]`.
#[inline(never)]
pub(crate) fn run(
    ty: *mut RawType,
    batch_types: [*mut RawType; BATCH_SIZES.len()],
) -> Result<Breakdown> {
    let k43 = Kmalloc43 {
        ty,
        flags: ffi::KM43_NOWAIT,
    };
    let empty = median(|| {})?;
    let [k43_malloc, k43_free] = halves(&k43)?;
    let [kmalloc, kfree] = halves(&Kmalloc)?;
    let kc = KmallocConst(ks::KmallocSlot::of(SIZE).ok_or(EINVAL)?);
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
            let p = kc.alloc(SIZE);
            // SAFETY: just allocated by kmalloc (or null, which kfree ignores).
            unsafe { kc.free(p) };
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
    let mut live = KVec::with_capacity(BATCH, GFP_KERNEL)?;
    live.resize(BATCH, core::ptr::null_mut::<c_void>(), GFP_KERNEL)?;
    let mut batch = [[0; BATCH_PROBES.len()]; BATCH_SIZES.len()];
    for ((row, &size), ty) in batch.iter_mut().zip(BATCH_SIZES.iter()).zip(batch_types) {
        let k43 = Kmalloc43 {
            ty,
            flags: ffi::KM43_NOWAIT,
        };
        let [bm, bf] = batch_halves(&k43, size, &mut live)?;
        let [km, kf] = batch_halves(&Kmalloc, size, &mut live)?;
        *row = [bm, bf, km, kf];
    }
    Ok(Breakdown {
        cycles: raw.map(|c| c.saturating_sub(empty)),
        batch,
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
        pr_info!("   batches: median of {BATCHES} batches of {BATCH}, each half timed whole, per object\n");
        for (row, &size) in self.batch.iter().zip(BATCH_SIZES.iter()) {
            for (name, &c) in BATCH_PROBES.iter().zip(row.iter()) {
                let pct: Tenths = quotient(c * 100, pair);
                pr_info!("{:>33} {:>4} B | {:>8} | {:>9}\n", name, size, c, pct);
            }
            let [bm, bf, km, kf] = *row;
            let ratio: Hundredths = quotient(bm + bf, km + kf);
            pr_info!(
                "{:>33} {:>4} B | {:>8} | {:>9}\n",
                "k43 pair (x kmalloc's)",
                size,
                bm + bf,
                ratio
            );
        }
    }

    /// Prints the CSV rows.
    pub(crate) fn print_csv(&self) {
        for (name, &c) in PROBES.iter().zip(self.cycles.iter()) {
            pr_info!("CSV,breakdown,{name},median_cycles,{c},,\n");
        }
        for (row, &size) in self.batch.iter().zip(BATCH_SIZES.iter()) {
            for (name, &c) in BATCH_PROBES.iter().zip(row.iter()) {
                pr_info!("CSV,breakdown,{name} ({size} B per object),median_cycles,{c},,\n");
            }
        }
    }
}
