// SPDX-License-Identifier: GPL-2.0

//! kmalloc43: the 4.3BSD kernel malloc on top of vmem arenas, as a loadable module.
//!
//! The allocator cores (`rust/core/src/{vmem,malloc,report}`) are mounted at the crate root under
//! the names they use for each other; the Linux glue lives in `rust/glue/`, one concept per file:
//!
//! * `pages`: the page allocator below everything (chunks, tag pages, counters, page arena);
//! * `heap`: malloc on kmem on the page arena under one lock, with the WAITOK protocol;
//! * `magazines`, `fastpath`, `aging`, `percpu`, `hint`: the per-CPU magazine layer in front of
//!   the heap (per-CPU slots, depots, exact per-CPU type ledgers, its trimming, page hints in
//!   `struct page`);
//! * `shrinker`: gives free memory back under memory pressure;
//! * `types`: the registry of C-ABI types (names copied, `limits/<type>` files);
//! * `arenas`: client vmem arenas; `service`: the global instance; `abi`: the C ABI (Rust side);
//! * `debugfs`: `/sys/kernel/debug/kmalloc43/`;
//! * `*_kunit`: the in-kernel test suites beside what they test (`CONFIG_KMALLOC43_KUNIT_TEST`),
//!   sharing `kunit_support`.
//!
//! `Documentation/linux.rst` describes the design. `page_cycle` below is the pipeline's smoke
//! test of the page allocator, kept for the pipeline's suite (it is not part of the C ABI).

use kernel::{
    debugfs::{Dir, File},
    ffi::c_char,
    fmt,
    page::{Page, PAGE_SIZE},
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc,
    },
    types::ScopeGuard,
};

use malloc::SizeClasses;

#[path = "core/src/vmem/mod.rs"]
pub mod vmem;

#[path = "core/src/malloc/mod.rs"]
pub mod malloc;

#[path = "core/src/magazine/mod.rs"]
pub mod magazine;

#[path = "core/src/report/mod.rs"]
pub mod report;

#[path = "core/src/wait/mod.rs"]
pub mod wait;

/// The C ABI as bindgen reads it from `include/kmalloc43.h` at build time (see
/// `include/kmalloc43_bindgen.mk`): the one source of truth for its structs, flags and
/// prototypes. The glue uses these types, and `glue/abi_check.rs` checks at compile time that the
/// Rust side of every exported function has the header's signature.
#[path = "kmalloc43_abi_generated.rs"]
pub mod kmalloc43_abi;

#[path = "glue/abi.rs"]
pub mod abi;
#[path = "glue/abi_check.rs"]
mod abi_check;
#[cfg(CONFIG_KMALLOC43_KUNIT_TEST)]
#[path = "glue/abi_kunit.rs"]
mod abi_kunit;
#[path = "glue/aging.rs"]
mod aging;
#[cfg(CONFIG_KMALLOC43_KUNIT_TEST)]
#[path = "glue/aging_kunit.rs"]
mod aging_kunit;
#[path = "glue/arenas.rs"]
mod arenas;
#[cfg(CONFIG_KMALLOC43_KUNIT_TEST)]
#[path = "glue/arenas_kunit.rs"]
mod arenas_kunit;
#[cfg(CONFIG_KMALLOC43_KUNIT_TEST)]
#[path = "glue/context_kunit.rs"]
mod context_kunit;
#[path = "glue/debugfs.rs"]
mod debugfs;
#[cfg(CONFIG_KMALLOC43_KUNIT_TEST)]
#[path = "glue/debugfs_kunit.rs"]
mod debugfs_kunit;
#[path = "glue/exact.rs"]
mod exact;
#[path = "glue/fallback.rs"]
mod fallback;
#[path = "glue/fastpath.rs"]
mod fastpath;
#[path = "glue/heap.rs"]
mod heap;
#[cfg(CONFIG_KMALLOC43_KUNIT_TEST)]
#[path = "glue/heap_kunit.rs"]
mod heap_kunit;
#[path = "glue/hint.rs"]
mod hint;
#[path = "glue/kmemleak.rs"]
mod kmemleak;
#[cfg(CONFIG_KMALLOC43_KUNIT_TEST)]
#[path = "glue/kunit_support.rs"]
mod kunit_support;
#[path = "glue/magazines.rs"]
mod magazines;
#[cfg(CONFIG_KMALLOC43_KUNIT_TEST)]
#[path = "glue/magazines_kunit.rs"]
mod magazines_kunit;
#[cfg(CONFIG_KMALLOC43_KUNIT_TEST)]
#[path = "glue/nested_kunit.rs"]
mod nested_kunit;
#[path = "glue/owners.rs"]
pub mod owners;
#[cfg(CONFIG_KMALLOC43_KUNIT_TEST)]
#[path = "glue/owners_kunit.rs"]
mod owners_kunit;
#[path = "glue/pages.rs"]
mod pages;
#[cfg(CONFIG_KMALLOC43_KUNIT_TEST)]
#[path = "glue/pages_kunit.rs"]
mod pages_kunit;
#[path = "glue/percpu.rs"]
mod percpu;
#[path = "glue/service.rs"]
mod service;
#[path = "glue/shrinker.rs"]
mod shrinker;
#[cfg(CONFIG_KMALLOC43_KUNIT_TEST)]
#[path = "glue/shrinker_kunit.rs"]
mod shrinker_kunit;
#[cfg(CONFIG_KMALLOC43_KUNIT_TEST)]
#[path = "glue/slotsync_kunit.rs"]
mod slotsync_kunit;
#[path = "glue/types.rs"]
mod types;
#[cfg(CONFIG_KMALLOC43_KUNIT_TEST)]
#[path = "glue/wrongtype_kunit.rs"]
mod wrongtype_kunit;

module! {
    type: Kmalloc43,
    name: "kmalloc43",
    authors: ["kmalloc43 developers"],
    description: "4.3BSD kernel malloc on vmem arenas",
    license: "GPL",
    params: {
        chunk_order: u32 {
            default: 4,
            description: "log2 of the pages imported from the page allocator at a time (0..=10; default 4 = 64 KiB)",
        },
        stress_ops: u64 {
            default: 200_000,
            description: "Random operations of the kmalloc43_magazines KUnit stress case (make stress: 10 million)",
        },
        diagnostic: bool {
            default: false,
            description: "Start in DIAGNOSTIC mode (poison, exact owner type); double frees are caught either way; switchable in debugfs",
        },
    },
}

extern "C" {
    /// The `classes=` module parameter (a C `charp` parameter: the Rust `module!` macro has no
    /// string parameters), or NULL if not given (exports file).
    fn kmalloc43_c_param_classes() -> *const c_char;
}

/// The size-class mode asked for with `classes=pow2|fine` (default [`SizeClasses::DEFAULT`]).
fn classes_param() -> Result<SizeClasses> {
    // SAFETY: the helper only reads the parameter's pointer.
    let p = unsafe { kmalloc43_c_param_classes() };
    if p.is_null() {
        return Ok(SizeClasses::DEFAULT);
    }
    // SAFETY: a non-NULL `charp` parameter is a NUL-terminated string that the module parameter
    // code keeps, unchanged (the parameter is read-only, 0444), while the module is loaded.
    let value = unsafe { CStr::from_char_ptr(p) };
    SizeClasses::parse(value.to_bytes()).ok_or_else(|| {
        pr_err!("classes={:?}: expected pow2 or fine\n", value);
        EINVAL
    })
}

/// Number of successful [`page_cycle`] calls since the module was loaded.
static PAGE_CYCLES: Atomic<usize> = Atomic::new(0);

/// Bytes written and read back at the end of the page by [`page_cycle`].
const PATTERN: [u8; 64] = [0xa5; 64];

/// Takes a page from the page allocator, writes [`PATTERN`] into its last bytes, reads it back
/// and gives the page back.
fn page_cycle() -> Result {
    let page = Page::alloc_page(GFP_KERNEL)?;
    let offset = PAGE_SIZE - PATTERN.len();
    let mut back = [0u8; PATTERN.len()];
    // SAFETY: `PATTERN` is valid for reading `PATTERN.len()` bytes, and nobody else can access
    // `page`, which this function has just allocated, so there is no data race.
    unsafe { page.write_raw(PATTERN.as_ptr(), offset, PATTERN.len())? };
    // SAFETY: `back` is valid for writing `back.len()` bytes and `page` is still private.
    unsafe { page.read_raw(back.as_mut_ptr(), offset, back.len())? };
    if back != PATTERN {
        return Err(EIO);
    }
    PAGE_CYCLES.fetch_add(1, Relaxed);
    Ok(())
}

/// Formats the `page_cycles` debugfs file.
fn show_page_cycles(_: &(), f: &mut fmt::Formatter<'_>) -> fmt::Result {
    writeln!(f, "{}", PAGE_CYCLES.load(Relaxed))
}

/// The loaded module: its debugfs files and the allocator service, torn down on unload.
struct Kmalloc43 {
    _page_cycles: Pin<KBox<File<()>>>,
    files: Option<debugfs::Debugfs>,
    shrinker: Option<shrinker::HeapShrinker>,
    /// The timed aging pass (its debugfs knob is in `files`).
    aging: Option<Arc<aging::AgingWork>>,
    notifier: Option<owners::ModuleNotifier>,
    counters: Arc<pages::PageCounters>,
    _debugfs: Dir,
}

impl kernel::Module for Kmalloc43 {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        // Before KUnit runs the suites (once init returned): their slow cases.
        #[cfg(CONFIG_KMALLOC43_KUNIT_TEST)]
        kunit_support::mark_slow(
            _module,
            &[
                aging_kunit::SLOW,
                magazines_kunit::SLOW,
                shrinker_kunit::SLOW,
                slotsync_kunit::SLOW,
            ],
        )?;
        // Before the first heap: every round of this boot is marked with it.
        magazines::init_round_key();
        // A failed load drops the heaps it made: their chunks' give-backs are `call_rcu`
        // callbacks, this module's code, which must have run before the module's text goes.
        let give_backs = ScopeGuard::new(pages::wait_for_give_backs);
        page_cycle()?;
        let order = module_parameters::chunk_order.value();
        if order > pages::MAX_CHUNK_ORDER {
            pr_err!(
                "chunk_order={} is above {}\n",
                order,
                pages::MAX_CHUNK_ORDER
            );
            return Err(EINVAL);
        }
        let heap = heap::Heap::with_classes(
            order,
            classes_param()?,
            module_parameters::diagnostic.value(),
        )?;
        let counters = heap.counters().clone();
        let debugfs = Dir::new(c"kmalloc43");
        let page_cycles = KBox::pin_init(
            debugfs.read_callback_file(c"page_cycles", (), &show_page_cycles),
            GFP_KERNEL,
        )?;
        let shrinker = shrinker::HeapShrinker::new(heap.clone(), c"kmalloc43")?;
        let aging = Arc::new(
            aging::AgingWork::new(heap.clone(), aging::AGING_SECS)?,
            GFP_KERNEL,
        )?;
        let svc = service::Service::new(heap, debugfs.subdir(c"limits"))?;
        let files = debugfs::Debugfs::new(&debugfs, &svc.heap, &svc.arenas, &aging)?;
        service::Service::publish(svc);
        // Last: the notifier finds the service. On failure the service is torn down again.
        let notifier = match owners::ModuleNotifier::register() {
            Ok(n) => n,
            Err(e) => {
                drop(files);
                drop(service::Service::retract());
                return Err(e);
            }
        };
        // The fast path Kbuild compiled in (its cfgs, see Kbuild): make check requires each of
        // its kernels to report the one it expects (tools/expected-fast-path).
        pr_info!(
            "loaded; chunk order {}, page cycle ok; slot lock: {}, page hint: {}\n",
            order,
            if cfg!(kmalloc43_inline_slot_lock) {
                "inline"
            } else {
                "C helpers"
            },
            if cfg!(kmalloc43_inline_page_hint) {
                "inline"
            } else {
                "C helper"
            }
        );
        give_backs.dismiss();
        Ok(Self {
            _page_cycles: page_cycles,
            files: Some(files),
            shrinker: Some(shrinker),
            aging: Some(aging),
            notifier: Some(notifier),
            counters,
            _debugfs: debugfs,
        })
    }
}

impl Drop for Kmalloc43 {
    fn drop(&mut self) {
        // First: no module notification runs from here on (unregistering waits for one running).
        drop(self.notifier.take());
        drop(self.files.take());
        // No shrinker pass runs from here on (`shrinker_free` waits for one running).
        drop(self.shrinker.take());
        // No timed pass either: the knob went with `files`, so this is the work's last
        // reference; dropping it disables the work and waits for a running pass.
        drop(self.aging.take());
        if let Some(svc) = service::Service::retract() {
            svc.destroy_all_arenas();
            // Magazines back to the buckets, per-CPU counters into the core: exact from here on.
            svc.heap.drain();
            let live = svc
                .heap
                .with(|s| s.malloc.types().map(|(_, st)| st.inuse).sum::<usize>());
            if live != 0 {
                pr_warn!(
                    "{} allocations still live at unload: their pages are leaked\n",
                    live
                );
            }
            drop(svc);
        }
        // Every chunk handed over is in the page allocator (and no callback of this module's
        // code is pending) before the verdict.
        pages::wait_for_give_backs();
        let (taken, given) = (self.counters.taken(), self.counters.given());
        let deferred = self.counters.deferred();
        let verdict = if taken == given && deferred == 0 {
            ""
        } else {
            " (LEAK)"
        };
        pr_info!(
            "unloaded after {} page cycles; pages taken {}, given back {}{}\n",
            PAGE_CYCLES.load(Relaxed),
            taken,
            given,
            verdict
        );
    }
}

#[cfg(CONFIG_KMALLOC43_KUNIT_TEST)]
#[kunit_tests(kmalloc43)]
mod tests {
    use super::*;

    #[test]
    fn page_cycle_succeeds_and_counts() -> Result {
        let before = PAGE_CYCLES.load(Relaxed);
        page_cycle()?;
        assert_eq!(PAGE_CYCLES.load(Relaxed), before + 1);
        Ok(())
    }
}
