// SPDX-License-Identifier: GPL-2.0

//! The module's one allocator service: the heap, the type registry and the client arenas, found
//! by the C ABI through a global pointer.
//!
//! The pointer is set at the end of module init and cleared at the start of module exit. Client
//! modules that call the C ABI import our symbols, so the module loader holds a reference on
//! kmalloc43 for as long as they are loaded: exit cannot run while a call is in flight. KUnit
//! suites run after init (`MODULE_STATE_LIVE`) and before exit.

use core::{
    cell::UnsafeCell,
    ptr::null_mut,
    sync::atomic::{
        AtomicPtr,
        Ordering::{Acquire, Relaxed, Release},
    },
};

use kernel::{debugfs::Dir, ffi::c_void, prelude::*, sync::Arc};

use crate::arenas::{ArenaList, VmArena, VmConfig};
use crate::heap::Heap;
use crate::hint::HintMap;
use crate::magazines::FrontRef;
use crate::malloc::{arena_fate, ArenaNote};
use crate::types::TypeRegistry;

/// The allocator service of the loaded module.
pub(crate) struct Service {
    /// The heap behind `kmalloc43_malloc()`.
    pub(crate) heap: Arc<Heap>,
    /// Types defined through the C ABI.
    pub(crate) types: Pin<KBox<TypeRegistry>>,
    /// Client vmem arenas.
    pub(crate) arenas: Arc<ArenaList>,
}

/// `struct kmalloc43_fast` of the C file: what the fast paths read of the module's own data, on
/// one cache line (so one page: `Documentation/performance.rst`, "Fewer pages per pair"): the
/// published service, the two parts of it that `kmalloc43_malloc`/`free` use (so that they do
/// not read the `Service` itself), and what a page-hint read needs (`crate::hint`, set by the C
/// side).
/// `core`'s atomics rather than `kernel::sync::atomic::Atomic`, whose operations are
/// out-of-line C helper calls: on x86-64 an acquire load is one plain `mov` (issue 8).
#[repr(C)]
pub(crate) struct FastStatics {
    /// The published service (null before init completed and from the start of exit).
    service: AtomicPtr<Service>,
    /// `service`'s heap, published with it (and cleared with it).
    heap: AtomicPtr<Heap>,
    /// `service`'s type registry, written before `heap` is published.
    types: AtomicPtr<TypeRegistry>,
    /// `heap`'s [`FrontRef`], written before `heap` is published (the C side's `front[4]`).
    front: UnsafeCell<FrontWords>,
    /// What a page-hint read needs (`crate::hint`), set by the C side.
    #[cfg_attr(
        not(kmalloc43_inline_page_hint),
        expect(dead_code, reason = "read by the inline page hint only")
    )]
    hint: HintMap,
}

/// The C side's `front[4]`: room for a [`FrontRef`] (three or four words, by the slot lock's
/// build).
#[repr(C)]
union FrontWords {
    front: FrontRef<'static>,
    _words: [usize; 4],
}

const _: () = assert!(core::mem::size_of::<FrontWords>() == 4 * core::mem::size_of::<usize>());
const _: () =
    assert!(core::mem::offset_of!(FastStatics, hint) == 7 * core::mem::size_of::<usize>());

#[expect(
    improper_ctypes,
    reason = "the block's pointers are opaque to C, which never follows them"
)]
extern "C" {
    /// The C file's block, 64-byte aligned.
    pub(crate) static kmalloc43_fast: FastStatics;
}

/// The fast statics.
#[inline(always)]
fn fast() -> &'static FastStatics {
    // SAFETY: a static of the C file, as declared; its first three words are only accessed
    // atomically (here), the hint map is the C side's plain words (`crate::hint`).
    unsafe { &kmalloc43_fast }
}

/// The page hints' map on the fast statics' line, for `crate::hint::raw_page_hint`.
#[cfg(kmalloc43_inline_page_hint)]
#[inline(always)]
pub(crate) fn hint_map() -> *const HintMap {
    &raw const fast().hint
}

/// The loaded module's service, if init completed.
#[inline]
pub(crate) fn service() -> Option<&'static Service> {
    let p = fast().service.load(Acquire);
    // SAFETY: a non-null pointer was published by `publish` and stays valid until `retract`
    // (module exit), which cannot overlap a call (see the module documentation).
    unsafe { p.as_ref() }
}

/// The loaded module's heap, type registry and the heap's [`FrontRef`], if init completed: what
/// [`service`] would give, read from the fast statics' line without reading the `Service` or
/// the heap (the fast paths). The heap's pointer is their publication flag: its null test is the
/// `Option`'s.
#[inline(always)]
pub(crate) fn heap_and_types() -> Option<(
    &'static Heap,
    &'static TypeRegistry,
    &'static FrontRef<'static>,
)> {
    let f = fast();
    // SAFETY: a non-null `heap` was published by `publish` (a release store, after `types` and
    // `front` were written) and points into the service, valid until `retract` (module exit),
    // which cannot overlap a call (module documentation).
    let heap = unsafe { f.heap.load(Acquire).as_ref() }?;
    // SAFETY: as above: `types` and `front` (its `front` field, a `FrontRef` of this heap) were
    // written before `heap` was published, are never written while it is (a later `publish`
    // follows a `retract`), and are of the same service.
    Some(unsafe { (heap, &*f.types.load(Relaxed), &(*f.front.get()).front) })
}

impl Service {
    /// Builds the service; limit files go under `limits`.
    pub(crate) fn new(heap: Arc<Heap>, limits: Dir) -> Result<KBox<Self>> {
        let types = KBox::pin_init(TypeRegistry::new(heap.clone(), limits), GFP_KERNEL)?;
        Ok(KBox::new(
            Self {
                heap,
                types,
                arenas: ArenaList::new()?,
            },
            GFP_KERNEL,
        )?)
    }

    /// Makes `svc` the global service.
    pub(crate) fn publish(svc: KBox<Self>) {
        let f = fast();
        f.types.store(
            core::ptr::from_ref::<TypeRegistry>(&svc.types).cast_mut(),
            Relaxed,
        );
        // SAFETY: the service's heap lives as long as the service, which stays published (and
        // so the copy in use) until `retract`; nothing reads `front` before `heap` is published
        // below, and no call is in flight (init).
        unsafe {
            let heap = &*Arc::as_ptr(&svc.heap);
            f.front.get().write(FrontWords {
                front: heap.front.fast_ref(),
            });
        }
        f.heap.store(Arc::as_ptr(&svc.heap).cast_mut(), Release);
        f.service.store(KBox::into_raw(svc), Release);
    }

    /// Takes the global service back (module exit).
    pub(crate) fn retract() -> Option<KBox<Self>> {
        let f = fast();
        f.heap.store(null_mut(), Relaxed);
        let p = f.service.swap(null_mut(), Acquire);
        // SAFETY: `p` came from `KBox::into_raw` in `publish` and is no longer reachable.
        (!p.is_null()).then(|| unsafe { KBox::from_raw(p) })
    }

    /// Creates a client arena and lists it.
    pub(crate) fn create_arena(&self, cfg: &VmConfig<'_>) -> Result<*mut VmArena> {
        let vm = VmArena::new(cfg, self.heap.counters())?;
        let mut list = self.arenas.list.lock();
        list.reserve(1, GFP_KERNEL)?;
        // SAFETY: the arena stays pinned: it is only freed by `destroy_arena`, through
        // `Pin::new_unchecked(KBox::from_raw(..))`.
        let p = KBox::into_raw(unsafe { Pin::into_inner_unchecked(vm) });
        list.push_within_capacity(p as usize).map_err(|_| ENOMEM)?;
        Ok(p)
    }

    /// Destroys a client arena: `EBUSY` (arena intact) while segments are allocated, `EINVAL`
    /// for a pointer that is not a live arena.
    ///
    /// # Safety
    ///
    /// No other call may use `vm` concurrently, nor after success.
    pub(crate) unsafe fn destroy_arena(&self, vm: *mut VmArena) -> Result {
        let mut list = self.arenas.list.lock();
        let i = list.iter().position(|&p| p == vm as usize).ok_or(EINVAL)?;
        // SAFETY: listed, hence live.
        unsafe { &*vm }.destroy()?;
        let _ = list.remove(i);
        // SAFETY: from `KBox::into_raw` in `create_arena`, unlisted, unused from now on.
        drop(unsafe { KBox::from_raw(vm) });
        Ok(())
    }

    /// The module `module` goes (see `owners.rs`): each arena's fate is the core's
    /// ([`arena_fate`]: its arenas are orphaned, and every arena whose source functions are its
    /// own is disowned), each reported with `pr_err`.
    ///
    /// # Safety
    ///
    /// `module` is the going module, whose memory is still there.
    pub(crate) unsafe fn arenas_going(
        &self,
        module: *const c_void,
        name: &crate::owners::ModuleName,
    ) {
        if module.is_null() {
            return;
        }
        let list = self.arenas.list.lock();
        for &p in list.iter() {
            // SAFETY: listed, hence live (destroy unlists under this lock first).
            let vm = unsafe { &*(p as *const VmArena) };
            let sources_builtin = vm.sources_from_kmalloc43();
            // SAFETY: the caller's guarantee.
            let calls_into = !sources_builtin && unsafe { vm.calls_into(module) };
            let fate = arena_fate(vm.owner() == module, sources_builtin, calls_into);
            if fate.orphan {
                vm.orphan();
                let (segments, bytes) = vm.live();
                pr_err!(
                    "{}\n",
                    ArenaNote::Orphaned {
                        module: name,
                        arena: vm.inner.lock().arena.name(),
                        segments,
                        bytes
                    }
                );
            }
            if fate.disown {
                vm.disown();
                let (spans, bytes) = vm.imported();
                pr_err!(
                    "{}\n",
                    ArenaNote::Disowned {
                        module: name,
                        arena: vm.inner.lock().arena.name(),
                        spans,
                        bytes
                    }
                );
            }
        }
    }

    /// Destroys every client arena left at unload (those still in use are leaked). Clients import
    /// kmalloc43's symbols, so every client module is gone by now: no client import or release
    /// function is called (see `VmArena::destroy_disowned`).
    pub(crate) fn destroy_all_arenas(&self) {
        let mut list = self.arenas.list.lock();
        while let Some(p) = list.pop() {
            let vm = p as *mut VmArena;
            pr_warn!("client arena still exists at unload\n");
            // SAFETY: listed, hence live; unload means no client uses it, and no client
            // module is loaded any more: none of its functions may be called.
            if unsafe { &*vm }.destroy_disowned().is_ok() {
                // SAFETY: as in `destroy_arena`.
                drop(unsafe { KBox::from_raw(vm) });
            }
        }
    }
}
