// SPDX-License-Identifier: GPL-2.0

//! malloc+free pair cost per size: kmalloc43 (`NOWAIT`, `WAITOK`) against `kmalloc`/`kfree`
//! (`GFP_KERNEL`), measured interleaved in the same boot.
//!
//! Every call is what a C caller pays: one direct call of the allocator's entry, no wrapper in
//! between (`kernel_side`). `kmalloc` has two entries, and the table has a column for each: *K*,
//! a size known at run time (`__kmalloc_noprof`, which finds the cache from the size, as
//! `kmalloc43_malloc` finds its class: the P1 comparison), and *Kc*, a compile-time constant size
//! (`kmalloc(sizeof(...))`, most kernel call sites: the cache pointer loaded from
//! `kmalloc_caches` and a call of `__kmalloc_cache_noprof`, or `__kmalloc_large_noprof` above
//! 8 KiB). kmalloc43's entry is the same for both (`kmalloc43.h` has no constant-size path).
//!
//! Two loops per size and allocator: *hot* (allocate, free, repeat: the free list's head is
//! reused every time) and *batch* (allocate [`BATCH`] objects, then free them in the same order,
//! repeat). Each cell is the best of [`RUNS`] short runs; the runs go round all sizes and
//! allocators, so a disturbance of the (emulated) machine hits one run of everything, not one
//! allocator. The runs are short (one batch, [`HOT_PAIRS`] pairs: tens to hundreds of
//! microseconds) so that most of them fit between two preemptions of QEMU's vCPU thread on the
//! shared host; the best of many short runs is what the allocator costs undisturbed. Each
//! measured run follows an unmeasured one of the same loop, allocator and size ([`warmed`]), so
//! that no column pays for re-warming a class that another column then finds warm.
//!
//! Each size has a malloc type of its own ([`PAIR_TYPES`]), as each size has a cache of its own
//! in `kmalloc` (`kmalloc-16` ... `kmalloc-8k`; larger sizes go to the page allocator): what
//! kmalloc43 keeps per type (a CPU's credit and its cap, the high water that bounds grants, the
//! magazines and depots, the segregated buckets) then carries nothing from one size into the
//! next, and every size's runs start from the state its own previous runs left. With one type
//! for all sizes, the 16 B - 1 KiB batches ran on the credit that the 64 KiB runs before them had
//! left (up to 256 KiB under a 256 KiB cap: no grant and no slow free where a workload of that
//! size alone takes both; `Documentation/performance.rst`). What stays shared between sizes is
//! shared in both allocators: kmalloc43's pages and vmem arenas, the kernel's page allocator.

use kernel::ffi::c_void;
use kernel::prelude::*;

use crate::fixed::{larger, quotient, Hundredths, Tenths};
use crate::kernel_side::{self as ks, Elapsed, KmallocSlot, Stamp};
use crate::kmalloc43::ffi::{self, RawType};
use crate::kmalloc43::{MallocType, TypeRegistration};

/// Request sizes, bytes: every power of two from 16 B to 64 KiB.
pub(crate) const SIZES: [usize; 13] = [
    16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536,
];
/// One malloc type per size of [`SIZES`] (no limit), defined by [`define_types`].
static PAIR_TYPES: [MallocType; SIZES.len()] = [
    MallocType::new(c"bench-16", c"kmalloc43_bench pairs of 16 B", 0),
    MallocType::new(c"bench-32", c"kmalloc43_bench pairs of 32 B", 0),
    MallocType::new(c"bench-64", c"kmalloc43_bench pairs of 64 B", 0),
    MallocType::new(c"bench-128", c"kmalloc43_bench pairs of 128 B", 0),
    MallocType::new(c"bench-256", c"kmalloc43_bench pairs of 256 B", 0),
    MallocType::new(c"bench-512", c"kmalloc43_bench pairs of 512 B", 0),
    MallocType::new(c"bench-1k", c"kmalloc43_bench pairs of 1 KiB", 0),
    MallocType::new(c"bench-2k", c"kmalloc43_bench pairs of 2 KiB", 0),
    MallocType::new(c"bench-4k", c"kmalloc43_bench pairs of 4 KiB", 0),
    MallocType::new(c"bench-8k", c"kmalloc43_bench pairs of 8 KiB", 0),
    MallocType::new(c"bench-16k", c"kmalloc43_bench pairs of 16 KiB", 0),
    MallocType::new(c"bench-32k", c"kmalloc43_bench pairs of 32 KiB", 0),
    MallocType::new(c"bench-64k", c"kmalloc43_bench pairs of 64 KiB", 0),
];

/// The pair types, defined (undefined when the registrations drop, at unload).
pub(crate) struct PairTypes {
    regs: KVec<TypeRegistration>,
}

/// Defines one malloc type per size ([`PAIR_TYPES`]).
pub(crate) fn define_types() -> Result<PairTypes> {
    let mut regs = KVec::with_capacity(SIZES.len(), GFP_KERNEL)?;
    for t in &PAIR_TYPES {
        regs.push(t.define()?, GFP_KERNEL)?;
    }
    Ok(PairTypes { regs })
}

impl PairTypes {
    /// The C view of the type of `SIZES[i]`.
    pub(crate) fn raw(&self, i: usize) -> Result<*mut RawType> {
        self.regs[i].malloc_type().raw_defined()
    }

    /// The C view of the type of `size` (one of [`SIZES`]).
    pub(crate) fn of_size(&self, size: usize) -> Result<*mut RawType> {
        let i = SIZES.iter().position(|&s| s == size).ok_or(EINVAL)?;
        self.raw(i)
    }
}

/// Objects live at once in the batch loop.
pub(crate) const BATCH: usize = 256;
/// Rounds of the batch loop per run.
const BATCH_ROUNDS: usize = 1;
/// Pairs per run of the hot loop (as many as the batch loop).
pub(crate) const HOT_PAIRS: usize = BATCH * BATCH_ROUNDS;
/// Runs per cell; the fastest counts.
pub(crate) const RUNS: usize = 40;

/// An allocator under test.
pub(crate) trait Allocator {
    /// Allocates `size` bytes; null on failure.
    fn alloc(&self, size: usize) -> *mut c_void;
    /// Frees what [`Allocator::alloc`] returned.
    ///
    /// # Safety
    ///
    /// `p` came from `self.alloc` and is not used afterwards.
    unsafe fn free(&self, p: *mut c_void);
}

/// `kmalloc43_malloc(size, type, flags)` / `kmalloc43_free`.
pub(crate) struct Kmalloc43 {
    /// The bench's defined type.
    pub(crate) ty: *mut RawType,
    /// `KM43_NOWAIT` or `KM43_WAITOK`.
    pub(crate) flags: u32,
}

impl Allocator for Kmalloc43 {
    fn alloc(&self, size: usize) -> *mut c_void {
        // SAFETY: `ty` is the bench's defined type; module init and the bench kthreads are
        // process context without locks, which WAITOK needs.
        unsafe { ffi::kmalloc43_malloc(size, self.ty, self.flags) }
    }

    unsafe fn free(&self, p: *mut c_void) {
        // SAFETY: `p` came from kmalloc43_malloc with this type (caller).
        let _ = unsafe { ffi::kmalloc43_free(p, self.ty) };
    }
}

/// `kmalloc(size, GFP_KERNEL)` / `kfree` with a size known only at run time
/// (`__kmalloc_noprof`, [`ks::kmalloc`]).
pub(crate) struct Kmalloc;

impl Allocator for Kmalloc {
    #[inline(always)]
    fn alloc(&self, size: usize) -> *mut c_void {
        ks::kmalloc(size)
    }

    #[inline(always)]
    unsafe fn free(&self, p: *mut c_void) {
        // SAFETY: `p` came from kmalloc (caller).
        unsafe { ks::kfree(p) }
    }
}

/// `kmalloc(size, GFP_KERNEL)` / `kfree` with a compile-time constant size of at most 8 KiB:
/// `__kmalloc_cache_noprof` on the size's cache ([`ks::kmalloc_cached`]). `alloc` must be
/// called with the size of the slot.
pub(crate) struct KmallocConst(pub(crate) KmallocSlot);

impl Allocator for KmallocConst {
    #[inline(always)]
    fn alloc(&self, size: usize) -> *mut c_void {
        ks::kmalloc_cached(self.0, size)
    }

    #[inline(always)]
    unsafe fn free(&self, p: *mut c_void) {
        // SAFETY: `p` came from kmalloc (caller).
        unsafe { ks::kfree(p) }
    }
}

/// `kmalloc(size, GFP_KERNEL)` / `kfree` with a compile-time constant size above 8 KiB:
/// `__kmalloc_large_noprof` ([`ks::kmalloc_large`]).
pub(crate) struct KmallocLarge;

impl Allocator for KmallocLarge {
    #[inline(always)]
    fn alloc(&self, size: usize) -> *mut c_void {
        ks::kmalloc_large(size)
    }

    #[inline(always)]
    unsafe fn free(&self, p: *mut c_void) {
        // SAFETY: `p` came from kmalloc (caller).
        unsafe { ks::kfree(p) }
    }
}

/// Hot loop: `HOT_PAIRS` times allocate then free.
fn hot<A: Allocator>(a: &A, size: usize) -> Result<Elapsed> {
    let t = Stamp::now();
    for _ in 0..HOT_PAIRS {
        let p = a.alloc(size);
        if p.is_null() {
            return Err(ENOMEM);
        }
        // SAFETY: just allocated by `a`.
        unsafe { a.free(p) };
    }
    Ok(t.elapsed())
}

/// Batch loop: `BATCH_ROUNDS` times allocate `BATCH` objects, then free them in order.
///
/// `live` holds the batch's pointers: [`BATCH`] slots on the heap, not on the module init's
/// stack, which every section's results already share.
fn batch<A: Allocator>(a: &A, size: usize, live: &mut [*mut c_void]) -> Result<Elapsed> {
    let t = Stamp::now();
    for _ in 0..BATCH_ROUNDS {
        let mut failed = false;
        for slot in live.iter_mut() {
            *slot = a.alloc(size);
            failed |= slot.is_null();
        }
        for slot in live.iter_mut() {
            if !slot.is_null() {
                // SAFETY: allocated by `a` above and freed once.
                unsafe { a.free(*slot) };
            }
        }
        if failed {
            return Err(ENOMEM);
        }
    }
    Ok(t.elapsed())
}

/// Runs `run` twice and returns the second interval: every measured cell follows an unmeasured
/// run of the same loop, allocator and size.
///
/// A size is touched again only after the twelve other sizes ran, and meanwhile kmalloc43's
/// working-set trim and give-back windows (and SLUB's own caches) may have taken that class's
/// spare magazines, clusters or slabs away. Without the warm-up the first column of a size paid
/// for re-warming the class and the next column of the same allocator found it warm (the
/// `NOWAIT` batch column was 5-20 % dearer than `WAITOK`'s, which followed it;
/// `Documentation/performance.rst`). With it every column, `kmalloc`'s included, is measured in
/// the same state: its own loop has just run at that size.
fn warmed(mut run: impl FnMut() -> Result<Elapsed>) -> Result<Elapsed> {
    run()?;
    run()
}

/// Columns of one loop: kmalloc43 NOWAIT, kmalloc43 WAITOK, kmalloc (size at run time), kmalloc
/// (constant size).
const COLUMNS: usize = 4;

/// The best interval of each size, loop (hot, batch) and allocator.
pub(crate) struct PairCosts {
    /// On the heap (2.5 KiB): the module's init stack holds every section's results, and the
    /// kernel stack is 16 KiB.
    best: KBox<[[[Option<Elapsed>; COLUMNS]; 2]; SIZES.len()]>,
}

fn keep_best(cell: &mut Option<Elapsed>, e: Elapsed) {
    *cell = Some(match *cell {
        Some(old) => old.min(e),
        None => e,
    });
}

/// Runs the pair benchmarks, each size with its own type of `types`.
#[inline(never)]
pub(crate) fn run(types: &PairTypes) -> Result<PairCosts> {
    let mut nowait = KVec::with_capacity(SIZES.len(), GFP_KERNEL)?;
    let mut waitok = KVec::with_capacity(SIZES.len(), GFP_KERNEL)?;
    for i in 0..SIZES.len() {
        let ty = types.raw(i)?;
        nowait.push(
            Kmalloc43 {
                ty,
                flags: ffi::KM43_NOWAIT,
            },
            GFP_KERNEL,
        )?;
        waitok.push(
            Kmalloc43 {
                ty,
                flags: ffi::KM43_WAITOK,
            },
            GFP_KERNEL,
        )?;
    }
    let mut costs = PairCosts {
        best: KBox::new([[[None; COLUMNS]; 2]; SIZES.len()], GFP_KERNEL)?,
    };
    let mut live = KVec::with_capacity(BATCH, GFP_KERNEL)?;
    live.resize(BATCH, core::ptr::null_mut::<c_void>(), GFP_KERNEL)?;
    for _ in 0..RUNS {
        for (i, (row, &size)) in costs.best.iter_mut().zip(SIZES.iter()).enumerate() {
            let (nowait, waitok) = (&nowait[i], &waitok[i]);
            keep_best(&mut row[0][0], warmed(|| hot(nowait, size))?);
            keep_best(&mut row[0][1], warmed(|| hot(waitok, size))?);
            keep_best(&mut row[0][2], warmed(|| hot(&Kmalloc, size))?);
            let kc = match KmallocSlot::of(size) {
                Some(slot) => warmed(|| hot(&KmallocConst(slot), size))?,
                None => warmed(|| hot(&KmallocLarge, size))?,
            };
            keep_best(&mut row[0][3], kc);
            keep_best(&mut row[1][0], warmed(|| batch(nowait, size, &mut live))?);
            keep_best(&mut row[1][1], warmed(|| batch(waitok, size, &mut live))?);
            keep_best(&mut row[1][2], warmed(|| batch(&Kmalloc, size, &mut live))?);
            let kc = match KmallocSlot::of(size) {
                Some(slot) => warmed(|| batch(&KmallocConst(slot), size, &mut live))?,
                None => warmed(|| batch(&KmallocLarge, size, &mut live))?,
            };
            keep_best(&mut row[1][3], kc);
        }
    }
    Ok(costs)
}

/// Nanoseconds per pair of a cell.
fn ns(e: Option<Elapsed>) -> Tenths {
    quotient(
        e.map_or(0, |e| e.ns),
        if e.is_some() { HOT_PAIRS as u64 } else { 0 },
    )
}

/// kmalloc43 over kmalloc, by wall time and by cycles.
fn ratio(k43: Option<Elapsed>, km: Option<Elapsed>, cycles: bool) -> Hundredths {
    match (k43, km) {
        (Some(a), Some(b)) if cycles => quotient(a.cycles, b.cycles),
        (Some(a), Some(b)) => quotient(a.ns, b.ns),
        _ => quotient(0, 0),
    }
}

/// P1: the largest kmalloc43/kmalloc ratio allowed for a size, in hundredths.
pub(crate) fn p1_limit(size: usize) -> u64 {
    match size {
        0..=2048 => 100,
        2049..=8192 => 120,
        _ => 150,
    }
}

/// `met` or `MISSED`: whether `num / den <= limit / 100`.
pub(crate) fn verdict(num: u64, den: u64, limit: u64) -> &'static str {
    if den != 0 && u128::from(num) * 100 <= u128::from(den) * u128::from(limit) {
        "met"
    } else {
        "MISSED"
    }
}

impl PairCosts {
    /// The worst (largest) kmalloc43/kmalloc ratio of a row (hot and batch, NOWAIT and WAITOK),
    /// as (kmalloc43 ns, kmalloc ns).
    fn worst(row: &[[Option<Elapsed>; COLUMNS]; 2]) -> (u64, u64) {
        let mut worst = (0u64, 1u64);
        for l in row {
            for k43 in &l[..2] {
                let cell = (
                    k43.map_or(u64::MAX / 200, |e| e.ns),
                    l[2].map_or(1, |e| e.ns),
                );
                worst = larger(worst, cell);
            }
        }
        worst
    }

    /// Prints the table.
    pub(crate) fn print(&self) {
        pr_info!("1. malloc+free pair, ns per pair (best of {RUNS} runs of {HOT_PAIRS} pairs)\n");
        pr_info!("   hot = alloc,free repeated; batch = {BATCH} allocs then {BATCH} frees\n");
        pr_info!("   N = kmalloc43 NOWAIT, W = kmalloc43 WAITOK, K = kmalloc GFP_KERNEL; N/K, W/K = kmalloc43/kmalloc\n");
        pr_info!(
            "   every call direct, as from C; K: size known at run time (__kmalloc_noprof),\n"
        );
        pr_info!(
            "   Kc: constant size (__kmalloc_cache_noprof, above 8 KiB __kmalloc_large_noprof)\n"
        );
        pr_info!("   P1 target: worst of the four ratios to K <= 1.00 (16 B-2 KiB), 1.20 (4-8 KiB), 1.50 (16-64 KiB)\n");
        pr_info!(
            "{:>6} | {:>7} {:>7} {:>7} {:>7} {:>5} {:>5} {:>5} | {:>7} {:>7} {:>7} {:>7} {:>5} {:>5} {:>5} | {:>7} | {:>11}\n",
            "size", "hot N", "hot W", "hot K", "hot Kc", "N/K", "W/K", "N/Kc", "batch N", "batch W",
            "batch K", "batch Kc", "N/K", "W/K", "N/Kc", "N/K cyc", "P1"
        );
        for (row, &size) in self.best.iter().zip(SIZES.iter()) {
            let [h, b] = row;
            let (wa, wb) = Self::worst(row);
            let limit = p1_limit(size);
            pr_info!(
                "{:>6} | {:>7} {:>7} {:>7} {:>7} {:>5} {:>5} {:>5} | {:>7} {:>7} {:>7} {:>7} {:>5} {:>5} {:>5} | {:>7} | {:>4} {:>6}\n",
                size,
                ns(h[0]),
                ns(h[1]),
                ns(h[2]),
                ns(h[3]),
                ratio(h[0], h[2], false),
                ratio(h[1], h[2], false),
                ratio(h[0], h[3], false),
                ns(b[0]),
                ns(b[1]),
                ns(b[2]),
                ns(b[3]),
                ratio(b[0], b[2], false),
                ratio(b[1], b[2], false),
                ratio(b[0], b[3], false),
                ratio(h[0], h[2], true),
                Hundredths { num: limit, den: 100 },
                verdict(wa, wb, limit),
            );
        }
        pr_info!("   N/K cyc: hot N/K from the cycle counter (get_cycles) instead of ktime\n");
    }

    /// Prints the CSV rows (`section,case,metric,value,target,verdict`).
    pub(crate) fn print_csv(&self) {
        for (row, &size) in self.best.iter().zip(SIZES.iter()) {
            let names = [
                ["hot_nowait", "hot_waitok"],
                ["batch_nowait", "batch_waitok"],
            ];
            for (l, names) in row.iter().zip(names.iter()) {
                for (k43, name) in l[..2].iter().zip(names.iter()) {
                    pr_info!("CSV,pairs,{size},{name},{},,\n", ratio(*k43, l[2], false));
                    pr_info!(
                        "CSV,pairs,{size},{name}_const,{},,\n",
                        ratio(*k43, l[3], false)
                    );
                }
            }
            let (wa, wb) = Self::worst(row);
            let limit = p1_limit(size);
            pr_info!(
                "CSV,target,P1 {size} B,worst kmalloc43/kmalloc,{},<={},{}\n",
                Hundredths { num: wa, den: wb },
                Hundredths {
                    num: limit,
                    den: 100
                },
                verdict(wa, wb, limit)
            );
        }
    }
}
