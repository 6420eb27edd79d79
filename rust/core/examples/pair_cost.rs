// SPDX-License-Identifier: GPL-2.0

//! Deterministic cost probe of a malloc+free pair through the malloc core, meant to run under
//! `valgrind --tool=callgrind --toggle-collect='*counted_pairs*'`: instruction counts do not
//! depend on timing, so the same path can be compared before and after a change, layer by layer
//! (`tools/bench/pair_cost.py`, `make bench-cost`, runs it and groups the counts by source file).
//!
//! `pair_cost <size> <pairs> [hot|batch] [BYTES|all]`: defines a type, warms the size's bucket
//! up, then `counted_pairs` does `pairs` pairs of `size` bytes: *hot* (allocate, free, repeat) or
//! *batch* (allocate 256, free them in order, repeat); the last argument is the core's
//! segregation threshold (`Malloc::set_segregation`, default 0: off). This is the core alone, as the kernel module runs
//! it under its lock: no C export, no type lookup, no lock (those are measured in the guest by
//! `make bench`, section 4). `mag_pair_cost` is the same probe through the magazine layer.

use std::hint::black_box;
use std::ptr::NonNull;

use kmalloc43_core::hosted::malloc_host_pages::HostPages;
use kmalloc43_core::malloc::{Malloc, MallocFlags, MallocType, SizeClasses, SEGREGATE_ALL};

/// Objects live at once in batch mode (as in the in-guest bench).
const BATCH: usize = 256;

/// The measured loop; callgrind collects inside it only.
#[inline(never)]
fn counted_pairs(
    m: &mut Malloc<HostPages>,
    ty: MallocType,
    size: usize,
    pairs: usize,
    batch: bool,
) {
    let mut live: Vec<NonNull<u8>> = Vec::with_capacity(BATCH);
    let mut done = 0;
    while done < pairs {
        let n = if batch { BATCH.min(pairs - done) } else { 1 };
        for _ in 0..n {
            live.push(
                m.malloc(black_box(size), ty, MallocFlags::NOWAIT)
                    .expect("malloc"),
            );
        }
        for p in live.drain(..) {
            m.free(black_box(p), ty).expect("free");
        }
        done += n;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(64);
    let pairs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let batch = args.get(3).is_some_and(|s| s == "batch");
    let below = match args.get(4).map(String::as_str) {
        Some("all") => SEGREGATE_ALL,
        a => a.and_then(|s| s.parse().ok()).unwrap_or(0),
    };
    let mut m = Box::new(Malloc::with_segregation(
        HostPages::new(),
        SizeClasses::DEFAULT,
        below,
    ));
    let ty = m
        .define_type("probe", "pair cost probe", usize::MAX)
        .expect("type");
    // Warm-up outside the counted loop: the bucket has its pages, the page map its entries.
    let warm: Vec<_> = (0..BATCH)
        .map(|_| m.malloc(size, ty, MallocFlags::NOWAIT).expect("malloc"))
        .collect();
    for p in warm {
        m.free(p, ty).expect("free");
    }
    counted_pairs(&mut m, ty, size, pairs, batch);
    black_box(&m);
}
