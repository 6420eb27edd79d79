// SPDX-License-Identifier: GPL-2.0

//! In-guest benchmarks of kmalloc43 against the kernel's own allocators, in the same boot.
//!
//! Built only by `make bench` (which boots it on the bench kernel, without lockdep and debug
//! options). At insmod, after kmalloc43 and its sample clients are loaded, it measures:
//!
//! 1. malloc+free pair cost per size: `kmalloc43_malloc`/`kmalloc43_free` (`NOWAIT`,
//!    `WAITOK`) against `kmalloc`/`kfree` (`GFP_KERNEL`), hot loop and batches ([`pairs`]);
//! 2. vmem `xalloc`+`xfree` against genalloc on a fragmented arena ([`fragments`]);
//! 3. memory utilization for a mix of mostly small requests ([`mix`]).
//!
//! and prints one table on the console between `KMALLOC43-BENCH-BEGIN` and
//! `KMALLOC43-BENCH-END`, which `tools/bench-guest.sh` extracts. Times come from `ktime_get_ns`
//! (and the cycle counter as a cross-check); under QEMU TCG both are emulated time, so only the
//! ratios between allocators measured in the same run mean anything.

use kernel::prelude::*;

/// The kmalloc43 client API (`rust/client/`).
#[path = "../../rust/client/kmalloc43.rs"]
pub mod kmalloc43;

#[path = "kmalloc43_bench/fixed.rs"]
mod fixed;
#[path = "kmalloc43_bench/fragments.rs"]
mod fragments;
#[path = "kmalloc43_bench/kernel_side.rs"]
mod kernel_side;
#[path = "kmalloc43_bench/mix.rs"]
mod mix;
#[path = "kmalloc43_bench/pairs.rs"]
mod pairs;

module! {
    type: Kmalloc43Bench,
    name: "kmalloc43_bench",
    authors: ["kmalloc43 developers"],
    description: "Benchmarks of kmalloc43 against kmalloc and genalloc in the same boot",
    license: "GPL",
}

kmalloc43::define_type!(
    /// Everything the benchmarks allocate from kmalloc43 (no limit).
    M_BENCH, c"bench", c"kmalloc43_bench allocations", 0
);

/// The loaded module: keeps the bench type defined until unload (it shows in kmstat).
struct Kmalloc43Bench {
    _ty: kmalloc43::TypeRegistration,
}

impl kernel::Module for Kmalloc43Bench {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let reg = M_BENCH.define()?;
        let ty = M_BENCH.raw_defined()?;
        let started = kernel_side::Stamp::now();
        // Memory first: the fewer free blocks the timing loops leave cached in either
        // allocator, the more the page counts say.
        let mix = mix::run(ty)?;
        let pairs = pairs::run(ty)?;
        let fragments = fragments::run()?;
        let secs = started.elapsed().ns / 1_000_000_000;

        pr_info!("KMALLOC43-BENCH-BEGIN\n");
        pr_info!("kmalloc43 in-guest benchmarks: kmalloc43 vs the kernel's allocators, same boot\n");
        pr_info!("QEMU TCG -smp 2: times are EMULATED; only the ratios (same run) count\n");
        pr_info!("kmalloc43 loaded with its defaults (diagnostic=0); benchmarks took {secs} s of guest time\n");
        pr_info!("\n");
        pairs.print();
        pr_info!("\n");
        fragments.print(kernel_side::genalloc_builtin());
        pr_info!("\n");
        mix.print();
        pr_info!("KMALLOC43-BENCH-END\n");
        Ok(Self { _ty: reg })
    }
}
