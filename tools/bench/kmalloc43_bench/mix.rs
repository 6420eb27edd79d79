// SPDX-License-Identifier: GPL-2.0

//! Memory utilization (requested / required) for a mix like the one McKusick and Karels
//! measured: most requests small, many of them exact powers of two.
//!
//! [`OBJECTS`] requests, drawn by a fixed pseudo-random sequence (the same for both allocators):
//! 96% at most 1 KiB (half of them exact powers of two 16..1024, half any size 1..=1024),
//! 4% larger (half exact powers of two 2..16 KiB, half any size 1025..=16384). All are live
//! together; then three numbers per allocator:
//!
//! - *usable*: the bytes each object really occupies (`kmalloc43_usable_size`, `ksize`);
//! - *pages*: pages the buddy allocator lost while the mix was allocated (`NR_FREE_PAGES` before
//!   minus after), the same counter for both: slab pages for kmalloc, chunks, bucket pages and
//!   bookkeeping for kmalloc43. Pages on per-CPU lists and memory either allocator already had
//!   cached make this approximate (a few hundred KiB out of many MiB);
//! - utilization = requested / usable and requested / (pages * PAGE_SIZE).

use kernel::ffi::c_void;
use kernel::page::PAGE_SIZE;
use kernel::prelude::*;

use crate::fixed::{quotient, Hundredths};
use crate::kernel_side as ks;
use crate::kmalloc43::ffi::{self, RawType};

/// Objects in the mix.
pub(crate) const OBJECTS: usize = 32768;

/// xorshift64: a fixed, cheap sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `lo..=hi` (modulo bias is irrelevant here).
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

/// Every size of the mix, in order.
fn sizes() -> impl Iterator<Item = usize> {
    let mut rng = Rng(0x4b4d_414c_4c4f_4333);
    (0..OBJECTS).map(move |_| {
        let small = rng.next() % 100 < 96;
        let pow2 = rng.next() % 2 == 0;
        match (small, pow2) {
            (true, true) => 16 << rng.range(0, 6),
            (true, false) => rng.range(1, 1024),
            (false, true) => 2048 << rng.range(0, 3),
            (false, false) => rng.range(1025, 16384),
        }
    })
}

/// One allocator's result.
#[derive(Default)]
pub(crate) struct Usage {
    requested: u64,
    usable: u64,
    pages: u64,
    small: u64,
}

/// Allocates the whole mix with `alloc`, measures, frees it with `free`.
fn measure(
    alloc: impl Fn(usize) -> *mut c_void,
    usable: impl Fn(*mut c_void) -> usize,
    free: impl Fn(*mut c_void),
) -> Result<Usage> {
    let mut live = KVVec::with_capacity(OBJECTS, GFP_KERNEL)?;
    let mut u = Usage::default();
    let before = ks::free_pages();
    let mut result = Ok(());
    for size in sizes() {
        let p = alloc(size);
        if p.is_null() {
            result = Err(ENOMEM);
            break;
        }
        // Capacity is OBJECTS: never reallocates.
        if live.push(p, GFP_KERNEL).is_err() {
            free(p);
            result = Err(ENOMEM);
            break;
        }
        u.requested += size as u64;
        u.usable += usable(p) as u64;
        u.small += u64::from(size <= 1024);
    }
    u.pages = before.saturating_sub(ks::free_pages());
    for &p in live.iter() {
        free(p);
    }
    result.map(|()| u)
}

/// The kmalloc43 and kmalloc results.
pub(crate) struct MixUsage {
    k43: Usage,
    km: Usage,
}

/// Runs the mix with kmalloc43 type `ty` (WAITOK) and with kmalloc (GFP_KERNEL).
#[inline(never)]
pub(crate) fn run(ty: *mut RawType) -> Result<MixUsage> {
    let k43 = measure(
        // SAFETY: `ty` is defined; process context without locks (WAITOK).
        |size| unsafe { ffi::kmalloc43_malloc(size, ty, ffi::KM43_WAITOK) },
        // SAFETY: `p` is a live kmalloc43 allocation.
        |p| unsafe { ffi::kmalloc43_usable_size(p) },
        |p| {
            // SAFETY: `p` came from kmalloc43_malloc with `ty` and is freed once.
            let _ = unsafe { ffi::kmalloc43_free(p, ty) };
        },
    )?;
    let km = measure(
        ks::kmalloc,
        // SAFETY: `p` is a live kmalloc allocation.
        |p| unsafe { ks::ksize(p) },
        // SAFETY: `p` came from kmalloc and is freed once.
        |p| unsafe { ks::kfree(p) },
    )?;
    Ok(MixUsage { k43, km })
}

impl MixUsage {
    /// Prints the table.
    pub(crate) fn print(&self) {
        let u = &self.k43;
        pr_info!(
            "5. memory utilization, {OBJECTS} objects live at once: {} B requested, {}.{}% of them <= 1 KiB\n",
            u.requested,
            u.small * 100 / OBJECTS as u64,
            u.small * 1000 / OBJECTS as u64 % 10
        );
        pr_info!(
            "   (half of each class exact powers of two; same sequence for both allocators)\n"
        );
        pr_info!(
            "{:>9} | {:>10} {:>10} {:>7} | {:>6} {:>10} {:>7}\n",
            "allocator",
            "requested",
            "usable",
            "req/use",
            "pages",
            "page B",
            "req/pg"
        );
        for (name, u) in [("kmalloc43", &self.k43), ("kmalloc", &self.km)] {
            let page_bytes = u.pages * PAGE_SIZE as u64;
            let r1: Hundredths = quotient(u.requested, u.usable);
            let r2: Hundredths = quotient(u.requested, page_bytes);
            pr_info!(
                "{:>9} | {:>10} {:>10} {:>7} | {:>6} {:>10} {:>7}\n",
                name,
                u.requested,
                u.usable,
                r1,
                u.pages,
                page_bytes,
                r2
            );
        }
        pr_info!("   usable: kmalloc43_usable_size / ksize; pages: NR_FREE_PAGES drop while the mix was live\n");
    }
}
