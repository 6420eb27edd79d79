// SPDX-License-Identifier: GPL-2.0

//! vmem against the kernel's genalloc on a fragmented arena: xalloc+xfree pair cost.
//!
//! Both allocators manage the same span of [`UNIT`]-sized units (addresses only, never touched).
//! The span is first filled one unit at a time, then every other unit of the first `2 * F` is
//! freed, leaving `F` one-unit holes between allocated units, and the last [`TAIL`] units are
//! freed as one free segment. Then, repeatedly:
//!
//! - *1 unit*: allocate and free one unit (any hole fits);
//! - *2 units*: allocate and free two units: no hole fits, only the tail. vmem's instant fit
//!   takes it from the free list of the next power of two, in constant time; genalloc's first
//!   fit walks its bitmap across all `F` holes.

use kernel::prelude::*;

use crate::fixed::{quotient, Tenths, Thousandths};
use crate::kernel_side::{Elapsed, GenPool, Stamp};
use crate::kmalloc43::{Arena, ArenaBuilder, Constraints, VmFlags};

/// Bytes per unit: vmem's quantum, genalloc's `1 << min_alloc_order`.
const UNIT_ORDER: u32 = 12;
/// Bytes per unit.
const UNIT: usize = 1 << UNIT_ORDER;
/// Free units at the end of the span.
const TAIL: usize = 64;
/// First address of the span (never dereferenced; genalloc takes 0 as failure).
const BASE: usize = 1 << 32;
/// Fragment counts.
pub(crate) const FRAGMENTS: [usize; 2] = [100, 10_000];
/// Pairs per run.
const PAIRS: usize = 1024;
/// Runs per cell; the fastest counts.
const RUNS: usize = 3;

/// An address allocator under test.
trait Space {
    /// `size` bytes anywhere, or `None`.
    fn alloc(&self, size: usize) -> Option<usize>;
    /// Frees what [`Space::alloc`] returned.
    fn free(&self, addr: usize, size: usize);
}

impl Space for Arena<'_> {
    fn alloc(&self, size: usize) -> Option<usize> {
        self.xalloc(size, &Constraints::new(), VmFlags::NOSLEEP | VmFlags::INSTANT_FIT).ok()
    }

    fn free(&self, addr: usize, size: usize) {
        let _ = self.xfree(addr, size);
    }
}

impl Space for GenPool {
    fn alloc(&self, size: usize) -> Option<usize> {
        GenPool::alloc(self, size)
    }

    fn free(&self, addr: usize, size: usize) {
        // SAFETY: only called with ranges this module allocated from `self` and still holds.
        unsafe { GenPool::free(self, addr, size) }
    }
}

/// A space fragmented as described above; frees what it holds on drop.
struct Fragmented<S: Space> {
    space: S,
    /// Allocated units (addresses), each [`UNIT`] bytes.
    held: KVVec<usize>,
}

impl<S: Space> Fragmented<S> {
    /// Fills `space` (`2 * fragments + TAIL` units) and frees the holes and the tail.
    fn new(space: S, fragments: usize) -> Result<Self> {
        let units = 2 * fragments + TAIL;
        let mut me = Self { space, held: KVVec::with_capacity(units, GFP_KERNEL)? };
        while let Some(addr) = me.space.alloc(UNIT) {
            me.held.push(addr, GFP_KERNEL)?;
        }
        if me.held.len() != units {
            pr_err!("filled {} units, expected {units}\n", me.held.len());
            return Err(EINVAL);
        }
        let mut kept = KVVec::with_capacity(fragments, GFP_KERNEL)?;
        for &addr in me.held.iter() {
            let index = (addr - BASE) / UNIT;
            if index < 2 * fragments && index % 2 == 1 {
                kept.push(addr, GFP_KERNEL)?;
            } else {
                me.space.free(addr, UNIT);
            }
        }
        me.held = kept;
        Ok(me)
    }

    /// `PAIRS` allocate+free pairs of `units` units.
    fn pairs(&self, units: usize) -> Result<Elapsed> {
        let t = Stamp::now();
        for _ in 0..PAIRS {
            let addr = self.space.alloc(units * UNIT).ok_or(ENOMEM)?;
            self.space.free(addr, units * UNIT);
        }
        Ok(t.elapsed())
    }
}

impl<S: Space> Drop for Fragmented<S> {
    fn drop(&mut self) {
        for &addr in self.held.iter() {
            self.space.free(addr, UNIT);
        }
    }
}

/// Best time per fragment count, request (1 unit, 2 units) and allocator (vmem, genalloc).
pub(crate) struct FragmentCosts {
    best: [[[u64; 2]; 2]; FRAGMENTS.len()],
}

/// Runs the fragmentation benchmark.
pub(crate) fn run() -> Result<FragmentCosts> {
    let mut costs = FragmentCosts { best: [[[u64::MAX; 2]; 2]; FRAGMENTS.len()] };
    for (row, &fragments) in costs.best.iter_mut().zip(FRAGMENTS.iter()) {
        let span = (2 * fragments + TAIL) * UNIT;
        let arena = ArenaBuilder::new(c"kmalloc43_bench").span(BASE, span).quantum(UNIT).build()?;
        let vmem = Fragmented::new(arena, fragments)?;
        let genalloc = Fragmented::new(GenPool::new(UNIT_ORDER, BASE, span)?, fragments)?;
        for _ in 0..RUNS {
            for (units, cell) in [1, 2].into_iter().zip(row.iter_mut()) {
                cell[0] = cell[0].min(vmem.pairs(units)?.ns);
                cell[1] = cell[1].min(genalloc.pairs(units)?.ns);
            }
        }
    }
    Ok(costs)
}

impl FragmentCosts {
    /// Prints the table.
    pub(crate) fn print(&self, genalloc_builtin: bool) {
        pr_info!("2. vmem xalloc+xfree vs genalloc gen_pool_alloc+gen_pool_free, ns per pair\n");
        pr_info!("   F one-unit holes between allocated units, {TAIL} free units at the end; unit {UNIT} B\n");
        pr_info!("   vmem: instant fit (kmalloc43_vmem_xalloc NOSLEEP); genalloc: first fit (default)\n");
        if genalloc_builtin {
            pr_info!("   genalloc: the kernel's (CONFIG_GENERIC_ALLOCATOR=y)\n");
        } else {
            pr_info!("   genalloc: lib/genalloc.c of this kernel's tree compiled unchanged into the bench module\n");
            pr_info!("   (CONFIG_GENERIC_ALLOCATOR is a hidden symbol, not set in this kernel)\n");
        }
        pr_info!("   best of {RUNS} runs of {PAIRS} pairs; ratio = vmem/genalloc\n");
        pr_info!(
            "{:>9} | {:>9} {:>9} {:>6} | {:>9} {:>9} {:>6}\n",
            "fragments", "1u vmem", "1u genal", "ratio", "2u vmem", "2u genal", "ratio"
        );
        for (row, fragments) in self.best.iter().zip(FRAGMENTS.iter()) {
            let ns = |v: u64| -> Tenths { quotient(v, PAIRS as u64) };
            let r = |c: [u64; 2]| -> Thousandths { quotient(c[0], c[1]) };
            pr_info!(
                "{:>9} | {:>9} {:>9} {:>6} | {:>9} {:>9} {:>6}\n",
                fragments,
                ns(row[0][0]),
                ns(row[0][1]),
                r(row[0]),
                ns(row[1][0]),
                ns(row[1][1]),
                r(row[1]),
            );
        }
    }
}
