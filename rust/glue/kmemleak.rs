// SPDX-License-Identifier: GPL-2.0

//! kmemleak sees kmalloc43's objects (`CONFIG_DEBUG_KMEMLEAK`; every call is a no-op without it).
//!
//! Every piece and large run handed to a client is a kmemleak object from `malloc` until `free`,
//! as SLUB's objects are: kmemleak scans it for pointers (so memory referenced only from inside a
//! kmalloc43 object is not reported) and reports it if nothing references it. Objects resting in
//! the magazines, the depots or the free lists are not kmemleak objects, and the pages kmalloc43
//! takes for itself come from the page allocator, which kmemleak does not track: kmalloc43's own
//! metadata is never scanned nor reported.
//!
//! The calls sit where an object crosses the API boundary: [`Heap::malloc`] registers what it
//! returns, [`Heap::free`] unregisters a live object's start before the object can become anybody
//! else's (once it is in a magazine another CPU may take it, and kmemleak refuses overlapping
//! objects) and registers it again if the free is refused (a wrong type). An object start whose
//! first word is this boot's round mark is the exception: with the magazines on, its free is
//! refused by the mark at once, whether it is a round (not a kmemleak object) or a live look-alike
//! (a kmemleak object; `usable_size` cannot tell, it answers `NotAllocated` for both), so it is not
//! unregistered before the verdict and kmemleak's view stays right for both: a leaked look-alike
//! is still reported. The C side is in `kmalloc43_exports.c` (the kmemleak API is C-only).

use core::ptr::NonNull;

use crate::heap::Heap;
use crate::hint::page_hint;
use crate::magazines::round_key;
use crate::malloc::{MallocError, MallocType};

extern "C" {
    /// `kmemleak_alloc(ptr, size, 1, GFP_ATOMIC)`.
    fn kmalloc43_c_kmemleak_alloc(ptr: *const u8, size: usize);
    /// `kmemleak_free(ptr)` (silent for an address that is not an object).
    fn kmalloc43_c_kmemleak_free(ptr: *const u8);
    /// `kmemleak_not_leak(ptr)`.
    fn kmalloc43_c_kmemleak_not_leak(ptr: *const u8);
}

/// Whether kmalloc43 tells kmemleak about its objects (`CONFIG_DEBUG_KMEMLEAK`).
pub(crate) const KMEMLEAK: bool = cfg!(CONFIG_DEBUG_KMEMLEAK);

/// Registers the `len` bytes at `addr`, just handed to a client, as a kmemleak object.
#[inline]
pub(crate) fn alloc(addr: usize, len: usize) {
    if KMEMLEAK {
        // SAFETY: `addr` starts a live allocation of `len` bytes that is not a kmemleak object.
        unsafe { kmalloc43_c_kmemleak_alloc(addr as *const u8, len) };
        #[cfg(CONFIG_KMALLOC43_KUNIT_TEST)]
        watch::told(addr, true);
    }
}

/// Unregisters the object at `addr`, which must be a kmalloc43 object's start (kmemleak warns
/// about an address inside another object).
#[inline]
pub(crate) fn free(addr: usize) {
    if KMEMLEAK {
        // SAFETY: kmemleak only looks `addr` up; the caller passes an object's start.
        unsafe { kmalloc43_c_kmemleak_free(addr as *const u8) };
        #[cfg(CONFIG_KMALLOC43_KUNIT_TEST)]
        watch::told(addr, false);
    }
}

/// What the glue last told kmemleak about one watched address (KUnit: kmemleak has no query API).
#[cfg(CONFIG_KMALLOC43_KUNIT_TEST)]
pub(crate) mod watch {
    use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    /// The watched address (0: none).
    static ADDR: AtomicUsize = AtomicUsize::new(0);
    /// 1: last registered, 0: last unregistered (or not told since the watch began), of `ADDR`.
    static OBJECT: AtomicUsize = AtomicUsize::new(0);

    /// Records a registration (`object`) or unregistration of `addr` if it is watched.
    pub(super) fn told(addr: usize, object: bool) {
        if ADDR.load(Relaxed) == addr {
            OBJECT.store(usize::from(object), Relaxed);
        }
    }

    /// Watches `addr`, which is a kmemleak object (`object`) or not right now.
    pub(crate) fn start(addr: usize, object: bool) {
        OBJECT.store(usize::from(object), Relaxed);
        ADDR.store(addr, Relaxed);
    }

    /// Whether the watched address is a kmemleak object by what the glue told kmemleak.
    pub(crate) fn object() -> bool {
        OBJECT.load(Relaxed) == 1
    }

    /// Stops watching.
    pub(crate) fn stop() {
        ADDR.store(0, Relaxed);
    }
}

/// Tells kmemleak never to report the object at `ptr` (still scanned): for memory leaked on
/// purpose, such as a KUnit case's heap torn down with a live allocation.
#[cfg_attr(not(CONFIG_KMALLOC43_KUNIT_TEST), expect(dead_code))]
pub(crate) fn not_leak(ptr: NonNull<u8>) {
    if KMEMLEAK {
        // SAFETY: kmemleak only looks `ptr` up.
        unsafe { kmalloc43_c_kmemleak_not_leak(ptr.as_ptr()) };
    }
}

impl Heap {
    /// Frees an allocation of type `ty` (any context); wakes tasks waiting at a limit.
    ///
    /// With kmemleak, the object stops being a kmemleak object before the free, and is registered
    /// again if the free is refused while the object stays live (a wrong type). Only an object
    /// start is passed to kmemleak (an arbitrary bad pointer, a stack address say, may lie inside
    /// some other kmemleak object, which kmemleak warns about): see [`Heap::object_start`].
    /// A first word that is the round mark, magazines on (no DIAGNOSTIC), is refused at once
    /// changing nothing: kmemleak is left as it is (a round is no object, a look-alike stays one).
    #[inline(always)]
    pub(crate) fn free(&self, ptr: NonNull<u8>, ty: MallocType) -> Result<(), MallocError> {
        if KMEMLEAK && self.object_start(ptr) {
            let addr = ptr.as_ptr() as usize;
            // SAFETY: `addr` starts an object of ours (live or free): readable.
            let word0 = unsafe { (addr as *const usize).read() };
            if word0 == round_key().mark_of(addr) && !self.with(|s| s.malloc.diagnostic()) {
                let r = self.free_object(ptr, ty);
                if r.is_ok() {
                    // DIAGNOSTIC came on meanwhile and the core freed a look-alike.
                    free(addr);
                }
                return r;
            }
            free(addr);
            let r = self.free_object(ptr, ty);
            if r.is_err() {
                if let Ok(len) = self.usable_size(ptr) {
                    alloc(addr, len);
                }
            }
            return r;
        }
        self.free_object(ptr, ty)
    }

    /// Whether `ptr` is where a kmalloc43 object starts (live or free): a piece boundary or run
    /// start by its page's hint (no lock), else a live allocation the core knows (heap lock).
    fn object_start(&self, ptr: NonNull<u8>) -> bool {
        let addr = ptr.as_ptr() as usize;
        match page_hint(addr).filter(|code| code.class().is_some()) {
            Some(code) => code.starts_object(self.front.table, addr),
            None => self.with(|s| s.malloc.usable_size(ptr)).is_ok(),
        }
    }
}
