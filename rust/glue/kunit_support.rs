// SPDX-License-Identifier: GPL-2.0

//! What the module's KUnit suites share: private heaps, types, audits, a second context.
//!
//! The suites live next to the glue they test (`*_kunit.rs` beside each file of `rust/glue/`),
//! behind `CONFIG_KMALLOC43_KUNIT_TEST`, and run at insmod in the guest (after init, so the
//! global service exists). Each covers one concept; every bad input asserts its error and then
//! runs the audits (malloc core, kmem arena, page arena, client arenas). Tests use private
//! heaps (`Heap::new`), so their page counters are exact, except where they test the C ABI,
//! which always goes to the module's service.
//!
//! | suite                | file               | covers                                          |
//! |----------------------|--------------------|-------------------------------------------------|
//! | `kmalloc43_pages`    | `pages_kunit.rs`   | chunk import/release, counters, teardown        |
//! | `kmalloc43_malloc`   | `heap_kunit.rs`    | sizes, alignment, realloc, ZERO, GFP_KERNEL     |
//! | `kmalloc43_limits`   | `heap_kunit.rs`    | NOWAIT at a limit, WAITOK sleeping and woken    |
//! | `kmalloc43_diag`     | `abi_kunit.rs`     | bad malloc/free input, C ABI type errors        |
//! | `kmalloc43_debugfs`  | `debugfs_kunit.rs` | limit and switch parsing through the writes     |
//! | `kmalloc43_vmem`     | `arenas_kunit.rs`  | client arenas through the C ABI                 |
//! | `kmalloc43_contexts` | `context_kunit.rs` | NOWAIT calls in every context the header allows |
//! | `kmalloc43_owners`   | `owners_kunit.rs`  | a going owner: orphans, adoption, disowning     |
//! | `kmalloc43_wrongtype`| `wrongtype_kunit.rs` | wrong-type frees refused exactly, both modes  |

pub(crate) use core::ptr::NonNull;

pub(crate) use kernel::{
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, Completion,
    },
    time::{delay::fsleep, Delta},
    workqueue,
};

pub(crate) use crate::heap::Heap;
pub(crate) use crate::malloc::{MallocError, MallocFlags, MallocType, SizeClasses, MAX_ALLOC_SIZE};

pub(crate) const WAITOK: MallocFlags = MallocFlags::WAITOK;
pub(crate) const NOWAIT: MallocFlags = MallocFlags::NOWAIT;

/// A private heap with 4-page chunks, DIAGNOSTIC on or off.
pub(crate) fn heap(diagnostic: bool) -> Arc<Heap> {
    Heap::new(2, diagnostic).expect("heap")
}

/// A private heap with 4-page chunks and the size classes `classes`, DIAGNOSTIC on or off.
pub(crate) fn heap_with(classes: SizeClasses, diagnostic: bool) -> Arc<Heap> {
    Heap::with_classes(2, classes, diagnostic).expect("heap")
}

/// Both size-class modes: the suites that exercise buckets run in each.
pub(crate) const MODES: [SizeClasses; 2] = [SizeClasses::Pow2, SizeClasses::Fine];

/// Defines a type on a private heap (`limit` 0: none).
pub(crate) fn ty(h: &Heap, name: &'static str, limit: usize) -> MallocType {
    let limit = if limit == 0 { usize::MAX } else { limit };
    h.define_type(name, "kunit", limit).expect("define")
}

/// Asserts the heap is consistent.
pub(crate) fn audit(h: &Heap) {
    assert_eq!(h.audit(), Ok(()));
}

/// Sleeps until `cond` holds, at most about two seconds; whether it held.
pub(crate) fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if cond() {
            return true;
        }
        fsleep(Delta::from_millis(10));
    }
    cond()
}

/// What a second context reports back.
#[pin_data]
pub(crate) struct Shared {
    #[pin]
    pub(crate) done: Completion,
    pub(crate) finished: Atomic<usize>,
    pub(crate) addr: Atomic<usize>,
}

impl Shared {
    pub(crate) fn new() -> Arc<Self> {
        Arc::pin_init(
            pin_init!(Shared {
                done <- Completion::new(),
                finished: Atomic::new(0),
                addr: Atomic::new(0),
            }),
            GFP_KERNEL,
        )
        .expect("shared")
    }
}

/// Runs `f` on the system workqueue; its address result lands in the returned `Shared`.
pub(crate) fn spawn(f: impl FnOnce() -> usize + Send + 'static) -> Arc<Shared> {
    let shared = Shared::new();
    let s = shared.clone();
    workqueue::system()
        .try_spawn(GFP_KERNEL, move || {
            s.addr.store(f(), Relaxed);
            s.finished.store(1, Relaxed);
            s.done.complete_all();
        })
        .expect("spawn");
    shared
}
