// SPDX-License-Identifier: GPL-2.0

//! [`Arena`]: an RAII handle to a kmalloc43 vmem arena (Bonwick & Adams' resource allocator),
//! created with [`ArenaBuilder`].

use core::{ffi::CStr, marker::PhantomData, ptr::NonNull};

use kernel::{
    error::{from_err_ptr, to_result},
    ffi::{c_uint, c_ulong, c_void},
    prelude::*,
};

use super::{
    ffi::{self, RawVmem},
    Constraints,
};

/// How an arena allocation searches (one policy) and whether it may sleep (one of
/// [`SLEEP`](Self::SLEEP) and [`NOSLEEP`](Self::NOSLEEP)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmFlags(c_uint);

impl VmFlags {
    /// Wait for space (a free or an add) instead of failing. Process context only.
    pub const SLEEP: Self = Self(ffi::KM43_VM_SLEEP);
    /// Fail at once with `ENOMEM` when there is no space.
    pub const NOSLEEP: Self = Self(ffi::KM43_VM_NOSLEEP);
    /// Instant fit (the default policy): constant-time, from the power-of-two free list.
    pub const INSTANT_FIT: Self = Self(ffi::KM43_VM_INSTANTFIT);
    /// Best fit: the smallest free segment that fits.
    pub const BEST_FIT: Self = Self(ffi::KM43_VM_BESTFIT);
    /// Next fit: round-robin after the last allocation (e.g. for IDs that should not be reused
    /// soon).
    pub const NEXT_FIT: Self = Self(ffi::KM43_VM_NEXTFIT);

    /// The `KM43_VM_*` bits.
    pub const fn bits(self) -> u32 {
        self.0
    }
}

impl core::ops::BitOr for VmFlags {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// Which segments [`Arena::walk`] visits and [`Arena::size`] counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegKinds(c_uint);

impl SegKinds {
    /// Allocated segments.
    pub const ALLOC: Self = Self(ffi::KM43_VMEM_ALLOC);
    /// Free segments.
    pub const FREE: Self = Self(ffi::KM43_VMEM_FREE);
    /// Both: the whole of the arena's spans.
    pub const ALL: Self = Self(ffi::KM43_VMEM_ALLOC | ffi::KM43_VMEM_FREE);
}

/// The parameters of a new arena; [`ArenaBuilder::build`] creates it.
///
/// ```ignore
/// let ids = ArenaBuilder::new(c"conn-ids").span(1, 1000).quantum(1).build()?;
/// let id = ids.alloc(1, VmFlags::NOSLEEP | VmFlags::NEXT_FIT)?;
/// ```
pub struct ArenaBuilder<'src> {
    name: &'static CStr,
    base: usize,
    size: usize,
    quantum: usize,
    qcache_max: usize,
    flags: VmFlags,
    source: Option<&'src Arena<'src>>,
}

impl<'src> ArenaBuilder<'src> {
    /// An arena named `name` (shown in `/sys/kernel/debug/kmalloc43/arenas`), with quantum 1,
    /// no initial span, no quantum caches and no source.
    pub fn new(name: &'static CStr) -> Self {
        Self {
            name,
            base: 0,
            size: 0,
            quantum: 1,
            qcache_max: 0,
            flags: VmFlags::SLEEP,
            source: None,
        }
    }

    /// The initial span `[base, base + size)`.
    pub fn span(mut self, base: usize, size: usize) -> Self {
        self.base = base;
        self.size = size;
        self
    }

    /// The unit of allocation (a power of two); every size and address is a multiple of it.
    pub fn quantum(mut self, quantum: usize) -> Self {
        self.quantum = quantum;
        self
    }

    /// Cache allocations up to this size (a multiple of the quantum, at most 16 quanta) in
    /// per-size quantum caches.
    pub fn qcache_max(mut self, qcache_max: usize) -> Self {
        self.qcache_max = qcache_max;
        self
    }

    /// Whether creation (and the initial span's boundary tags) may sleep.
    pub fn flags(mut self, flags: VmFlags) -> Self {
        self.flags = flags;
        self
    }

    /// Import spans from `source` when the arena runs out, and give wholly free spans back.
    /// `source` must outlive the new arena, which the lifetime enforces.
    pub fn source<'s>(self, source: &'s Arena<'s>) -> ArenaBuilder<'s>
    where
        'src: 's,
    {
        ArenaBuilder {
            name: self.name,
            base: self.base,
            size: self.size,
            quantum: self.quantum,
            qcache_max: self.qcache_max,
            flags: self.flags,
            source: Some(source),
        }
    }

    /// Creates the arena. `EINVAL` for a bad configuration, `ENOMEM` for no memory.
    ///
    /// Context: process context; may sleep with [`VmFlags::SLEEP`].
    pub fn build(self) -> Result<Arena<'src>> {
        let (import, release, source): (ffi::ImportFn, ffi::ReleaseFn, _) = match self.source {
            Some(src) => (
                Some(ffi::kmalloc43_vmem_import_from_arena),
                Some(ffi::kmalloc43_vmem_release_to_arena),
                src.ptr.as_ptr().cast::<c_void>(),
            ),
            None => (None, None, core::ptr::null_mut()),
        };
        // SAFETY: `name` is a `'static` NUL-terminated string; `source`, when given, is a live
        // arena that outlives the new one (`'src`), paired with kmalloc43's own import/release
        // functions for arena sources; the owner is this module.
        let p = unsafe {
            ffi::kmalloc43_vmem_create_owned(
                super::this_module(),
                self.name.as_char_ptr(),
                self.base as c_ulong,
                self.size,
                self.quantum,
                import,
                release,
                source,
                self.qcache_max,
                self.flags.bits(),
            )
        };
        let p = from_err_ptr(p)?;
        let ptr = NonNull::new(p).ok_or(ENOMEM)?;
        // INVARIANT: `ptr` is a live arena that nothing else destroys.
        Ok(Arena {
            ptr,
            name: self.name,
            _source: PhantomData,
        })
    }
}

/// A vmem arena: a set of integer ranges (addresses, IDs, ...) to allocate from. Destroyed on
/// drop; if segments are still allocated then, kmalloc43 refuses, the arena is leaked and the
/// refusal logged (`pr_err!` with the count).
///
/// All methods take `&self`: kmalloc43 locks the arena internally, so an `Arena` can be shared
/// between threads.
///
/// # Invariants
///
/// `ptr` is a live arena created by `kmalloc43_vmem_create`, owned by this handle; its source
/// arena (if any) lives for `'src`.
pub struct Arena<'src> {
    ptr: NonNull<RawVmem>,
    name: &'static CStr,
    _source: PhantomData<&'src ()>,
}

// SAFETY: kmalloc43 serializes every operation on an arena with the arena's lock, so the handle
// may be used and dropped from any thread.
unsafe impl Send for Arena<'_> {}
// SAFETY: Same as `Send`: shared use from several threads is serialized by kmalloc43.
unsafe impl Sync for Arena<'_> {}

impl<'src> Arena<'src> {
    /// The arena's name.
    pub fn name(&self) -> &'static CStr {
        self.name
    }

    /// Adds the span `[base, base + size)`. `EINVAL` if it overlaps a span or wraps,
    /// `ENOMEM` for no boundary tags.
    pub fn add(&self, base: usize, size: usize, flags: VmFlags) -> Result {
        // SAFETY: `self.ptr` is a live arena (type invariant); kmalloc43 validates the rest.
        to_result(unsafe { ffi::kmalloc43_vmem_add(self.ptr.as_ptr(), base, size, flags.bits()) })
    }

    /// Allocates `size` (rounded up to the quantum) and returns the start. `ENOMEM` if there is
    /// no space with [`VmFlags::NOSLEEP`]; with [`VmFlags::SLEEP`] waits for space.
    pub fn alloc(&self, size: usize, flags: VmFlags) -> Result<usize> {
        let mut addr: c_ulong = 0;
        // SAFETY: `self.ptr` is a live arena and `addr` is valid for writing.
        to_result(unsafe {
            ffi::kmalloc43_vmem_alloc(self.ptr.as_ptr(), size, flags.bits(), &mut addr)
        })?;
        Ok(addr)
    }

    /// Frees a segment [`Arena::alloc`] returned. `EINVAL` for an unknown segment or a size
    /// that differs from the allocation's (nothing changes then).
    pub fn free(&self, addr: usize, size: usize) -> Result {
        // SAFETY: `self.ptr` is a live arena; kmalloc43 validates `addr` and `size`.
        to_result(unsafe { ffi::kmalloc43_vmem_free(self.ptr.as_ptr(), addr, size) })
    }

    /// Allocates `size` under `constraints` (alignment, phase, boundary not to cross, address
    /// range). `EINVAL` for inconsistent constraints, `ENOMEM` as for [`Arena::alloc`].
    pub fn xalloc(&self, size: usize, constraints: &Constraints, flags: VmFlags) -> Result<usize> {
        let c = constraints;
        let mut addr: c_ulong = 0;
        // SAFETY: `self.ptr` is a live arena and `addr` is valid for writing.
        to_result(unsafe {
            ffi::kmalloc43_vmem_xalloc(
                self.ptr.as_ptr(),
                size,
                c.align,
                c.phase,
                c.nocross,
                c.min_addr,
                c.max_addr,
                flags.bits(),
                &mut addr,
            )
        })?;
        Ok(addr)
    }

    /// Frees a segment [`Arena::xalloc`] returned. Errors as for [`Arena::free`].
    pub fn xfree(&self, addr: usize, size: usize) -> Result {
        // SAFETY: `self.ptr` is a live arena; kmalloc43 validates `addr` and `size`.
        to_result(unsafe { ffi::kmalloc43_vmem_xfree(self.ptr.as_ptr(), addr, size) })
    }

    /// Allocates like [`Arena::alloc`], returning a [`Segment`] that frees itself when dropped.
    pub fn alloc_segment(&self, size: usize, flags: VmFlags) -> Result<Segment<'_, 'src>> {
        let addr = self.alloc(size, flags)?;
        Ok(Segment {
            arena: self,
            addr,
            size,
            constrained: false,
        })
    }

    /// Allocates like [`Arena::xalloc`], returning a [`Segment`] that frees itself when
    /// dropped.
    pub fn xalloc_segment(
        &self,
        size: usize,
        constraints: &Constraints,
        flags: VmFlags,
    ) -> Result<Segment<'_, 'src>> {
        let addr = self.xalloc(size, constraints, flags)?;
        Ok(Segment {
            arena: self,
            addr,
            size,
            constrained: true,
        })
    }

    /// Calls `f(base, size)` for each segment of the given kinds, in address order.
    ///
    /// `f` runs under the arena's spinlock: it must not sleep and must not call into this arena
    /// (that would deadlock).
    pub fn walk<F: FnMut(usize, usize)>(&self, kinds: SegKinds, mut f: F) -> Result {
        /// Calls the closure behind `arg` for one segment.
        ///
        /// # Safety
        ///
        /// `arg` must point to a live `F` not otherwise borrowed for the duration of the call.
        unsafe extern "C" fn trampoline<F: FnMut(usize, usize)>(
            arg: *mut c_void,
            base: c_ulong,
            size: usize,
        ) {
            // SAFETY: `walk` passes a pointer to its `f`, exclusively borrowed for the walk.
            let f = unsafe { &mut *arg.cast::<F>() };
            f(base, size);
        }
        let arg: *mut F = &mut f;
        // SAFETY: `self.ptr` is a live arena; `trampoline::<F>` matches the callback type and
        // `arg` points to `f`, which outlives the call and is borrowed by nothing else.
        to_result(unsafe {
            ffi::kmalloc43_vmem_walk(
                self.ptr.as_ptr(),
                kinds.0,
                Some(trampoline::<F>),
                arg.cast(),
            )
        })
    }

    /// Total bytes of the segments of the given kinds.
    pub fn size(&self, kinds: SegKinds) -> usize {
        // SAFETY: `self.ptr` is a live arena (type invariant).
        unsafe { ffi::kmalloc43_vmem_size(self.ptr.as_ptr(), kinds.0) }
    }
}

impl Drop for Arena<'_> {
    fn drop(&mut self) {
        // SAFETY: `self.ptr` is a live arena owned by this handle; no `Segment` borrows it any
        // more (they borrow the handle), and child arenas, which borrow it, are gone.
        let ret = unsafe { ffi::kmalloc43_vmem_destroy(self.ptr.as_ptr()) };
        if ret != 0 {
            pr_err!(
                "kmalloc43: arena {:?} not destroyed ({:?}): {} bytes still allocated; leaked\n",
                self.name,
                Error::from_errno(ret),
                self.size(SegKinds::ALLOC)
            );
        }
    }
}

/// A segment allocated from an [`Arena`], freed (with the right call: `free` or `xfree`) when
/// dropped.
pub struct Segment<'a, 'src> {
    arena: &'a Arena<'src>,
    addr: usize,
    size: usize,
    constrained: bool,
}

impl Segment<'_, '_> {
    /// The start of the segment.
    pub fn addr(&self) -> usize {
        self.addr
    }

    /// The size that was asked for.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Gives up ownership: the segment stays allocated and must be freed with
    /// [`Arena::free`] (or [`Arena::xfree`] if it came from `xalloc_segment`).
    pub fn into_raw(self) -> (usize, usize) {
        let seg = core::mem::ManuallyDrop::new(self);
        (seg.addr, seg.size)
    }
}

impl Drop for Segment<'_, '_> {
    fn drop(&mut self) {
        let ret = if self.constrained {
            self.arena.xfree(self.addr, self.size)
        } else {
            self.arena.free(self.addr, self.size)
        };
        if let Err(e) = ret {
            pr_err!(
                "kmalloc43: arena {:?}: freeing a segment of {} bytes failed: {:?}\n",
                self.arena.name,
                self.size,
                e
            );
        }
    }
}
