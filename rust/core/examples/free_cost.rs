// SPDX-License-Identifier: GPL-2.0

//! Deterministic cost probe for `free` (and `malloc`), meant to run under
//! `valgrind --tool=callgrind`: instruction counts do not depend on timing.
//!
//! `free_cost <mode> <n>` allocates `n` 64-byte pieces (`mode = alloc`), or allocates them and
//! then frees them (`mode = free`): every other piece first, then the rest, so that most frees
//! land in a page that already has free pieces (the case where the non-DIAGNOSTIC double-free
//! check reads the piece's links). Instructions per free =
//! (Ir(free) - Ir(alloc)) / n. Add `diag` as a third argument to run with DIAGNOSTIC on.

use std::hint::black_box;

use kmalloc43_core::hosted::malloc_host_pages::HostPages;
use kmalloc43_core::malloc::{Malloc, MallocFlags};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("free", String::as_str);
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(4096);
    let diag = args.get(3).is_some_and(|s| s == "diag");
    let mut m = Box::new(Malloc::new(HostPages::new()));
    m.set_diagnostic(diag).expect("diagnostic");
    let ty = m
        .define_type("probe", "cost probe", usize::MAX)
        .expect("type");
    let ptrs: Vec<_> = (0..n)
        .map(|_| m.malloc(64, ty, MallocFlags::NOWAIT).expect("malloc"))
        .collect();
    if mode == "free" {
        for p in ptrs.iter().step_by(2).chain(ptrs.iter().skip(1).step_by(2)) {
            m.free(black_box(*p), ty).expect("free");
        }
    }
    black_box(&m);
}
