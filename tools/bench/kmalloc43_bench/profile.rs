// SPDX-License-Identifier: GPL-2.0

//! Long hot-pair loops for profiling the emulator from the host (section 32, never part of a
//! full run): where QEMU's host time goes for a kmalloc43 pair and for a `kmalloc` pair.
//!
//! Three loops of `profile_pairs` iterations each, one after the other on the module's CPU:
//!
//! - `k43`: `kmalloc43_malloc(64, bench, NOWAIT)` + `kmalloc43_free` (the hot pair of the pair
//!   table and of the cycle probes);
//! - `kmalloc`: `kmalloc(64, GFP_KERNEL)` + `kfree` with the size known at run time, as in the
//!   pair table's K column: direct calls of `__kmalloc_noprof` and `kfree`;
//! - `calls`: two out-of-line calls of a C function that does nothing, the loop and call
//!   overhead that both pairs include.
//!
//! Each loop is announced on the console before it starts and after it ends
//! (`KMALLOC43-PROFILE <loop> begin|end`), so that a host-side profiler (`perf record` of the
//! QEMU process, `tools/bench/tcg-profile.sh`) can cut its samples at those moments; the lines
//! also give the addresses of the fast paths, for a debugger attached to QEMU's gdb stub. The
//! guest time of each loop goes into the table (nanoseconds per iteration).

use kernel::prelude::*;

use crate::breakdown::SIZE;
use crate::fixed::{quotient, Hundredths};
use crate::kernel_side::{self as ks, Stamp};
use crate::kmalloc43::ffi::{self, RawType};
use crate::pairs::{Allocator, Kmalloc, Kmalloc43};

/// The loops, in run order.
const LOOPS: [&str; 3] = ["k43", "kmalloc", "calls"];

/// Guest nanoseconds of each loop of [`LOOPS`], and its length.
pub(crate) struct Profile {
    iterations: u32,
    ns: [u64; LOOPS.len()],
}

/// `iterations` hot pairs of `a`.
fn pairs(a: &impl Allocator, iterations: u32) -> Result {
    for _ in 0..iterations {
        let p = a.alloc(SIZE);
        if p.is_null() {
            return Err(ENOMEM);
        }
        // SAFETY: just allocated by `a`, freed once.
        unsafe { a.free(p) };
    }
    Ok(())
}

/// Runs loop `i` of [`LOOPS`] between its console marks; its guest nanoseconds.
fn timed(i: usize, f: impl FnOnce() -> Result) -> Result<u64> {
    pr_info!("KMALLOC43-PROFILE {} begin\n", LOOPS[i]);
    let t = Stamp::now();
    f()?;
    let ns = t.elapsed().ns;
    pr_info!("KMALLOC43-PROFILE {} end\n", LOOPS[i]);
    Ok(ns)
}

/// Runs the three loops of `iterations` each with kmalloc43 type `ty`.
#[inline(never)]
pub(crate) fn run(ty: *mut RawType, iterations: u32) -> Result<Profile> {
    let k43 = Kmalloc43 {
        ty,
        flags: ffi::KM43_NOWAIT,
    };
    let [kmalloc, kfree] = ks::kmalloc_entries();
    pr_info!(
        "KMALLOC43-PROFILE addresses kmalloc43_malloc={:#x} kmalloc43_free={:#x} kmalloc={:#x} kfree={:#x} iterations={}\n",
        ffi::kmalloc43_malloc as *const () as usize,
        ffi::kmalloc43_free as *const () as usize,
        kmalloc,
        kfree,
        iterations
    );
    let ns = [
        timed(0, || pairs(&k43, iterations))?,
        timed(1, || pairs(&Kmalloc, iterations))?,
        timed(2, || {
            for _ in 0..iterations {
                ks::call_nothing();
                ks::call_nothing();
            }
            Ok(())
        })?,
    ];
    Ok(Profile { iterations, ns })
}

impl Profile {
    /// Guest nanoseconds per iteration of loop `i`, in hundredths.
    fn per_iteration(&self, i: usize) -> Hundredths {
        quotient(self.ns[i], u64::from(self.iterations.max(1)))
    }

    /// Prints the table.
    pub(crate) fn print(&self) {
        pr_info!(
            "6. profile loops (section 32): {} iterations each, guest ns per iteration\n",
            self.iterations
        );
        for (i, name) in LOOPS.iter().enumerate() {
            pr_info!("{:>42} | {:>9}\n", name, self.per_iteration(i));
        }
        let ratio: Hundredths = quotient(self.ns[0], self.ns[1]);
        pr_info!("{:>42} | {:>9}\n", "k43 pair over kmalloc pair", ratio);
    }

    /// Prints the CSV rows.
    pub(crate) fn print_csv(&self) {
        for (i, name) in LOOPS.iter().enumerate() {
            pr_info!(
                "CSV,profile,{name},ns_per_iteration,{},,\n",
                self.per_iteration(i)
            );
        }
    }
}
