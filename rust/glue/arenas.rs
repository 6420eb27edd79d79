// SPDX-License-Identifier: GPL-2.0

//! vmem arenas created by client modules through the C ABI (`kmalloc43_vmem_*`).
//!
//! Each arena has its own `SpinLockIrq` (so `NOSLEEP` calls work in any context) and condition
//! variable. The import and release functions of the arena's source are called **without** the
//! lock held (vmem's `ImportNeeded`/`SpanRelease` seam), so a source may sleep (`KM43_VM_SLEEP`)
//! or be another kmalloc43 arena: arena locks never nest. A `KM43_VM_SLEEP` allocation that finds
//! no space and has nothing to import sleeps until a free or an add on the arena wakes it. The
//! import/sleep loop is the core's (`crate::wait::vmem_sleep`, tested on the host); [`VmArena`]
//! implements its trait with the lock, the condition variable and the client's source.
//!
//! All arenas share one lock class, so a walk callback (called under the lock) must not call into
//! any kmalloc43 arena.
//!
//! Ownership (`owners.rs`): an arena records its owning module. The source's functions are called
//! only inside a counted *source call* ([`VmArena::enter_source`]); [`VmArena::disown`] (when the
//! owner, or the module holding those functions, goes) stops new calls and waits for running
//! ones, after which the functions are never called again: imports fail (or `SLEEP` waits for a
//! free or an add), and spans that would have been released are kept, counted in
//! [`DISOWNED_SPANS`] (`totals`' `disowned_spans`).

use kernel::{
    ffi::{c_int, c_uint, c_ulong, c_void},
    new_condvar, new_mutex, new_spinlock_irq,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        lock::{spinlock::SpinLockIrqBackend, Guard},
        Arc, CondVar, Mutex, SpinLockIrq,
    },
};

use crate::heap::might_sleep;
use crate::kmalloc43_abi;
use crate::magazine::{CpuMagazines, Depot, MAG_ROUNDS};
use crate::magazines::{free_magazine, new_magazine};
use crate::malloc::ShownName;
use crate::pages::{PageCounters, TagPages};
use crate::percpu::{IrqsOff, PerCpu};
use crate::vmem::{
    Arena, ArenaConfig, Constraints, FastFree, Flags, ImportRequest, QcFront, SegKindSet,
    SpanRelease, VmemError, MAX_QCACHES, MAX_SLABS,
};
use crate::wait::{alloc_sleeping, import_span, wake_sleepers, VmemWait, VmemWaitError, WaitQueue};

/// `kmalloc43_vmem_import_t`.
pub(crate) type ImportFn = unsafe extern "C" fn(
    source: *mut c_void,
    size: usize,
    flags: c_uint,
    base: *mut c_ulong,
) -> c_int;
/// `kmalloc43_vmem_release_t`.
pub(crate) type ReleaseFn = unsafe extern "C" fn(source: *mut c_void, base: c_ulong, size: usize);

/// `KM43_VM_SLEEP`.
pub(crate) const VM_SLEEP: u32 = kmalloc43_abi::KM43_VM_SLEEP;
/// `KM43_VM_NOSLEEP`.
pub(crate) const VM_NOSLEEP: u32 = kmalloc43_abi::KM43_VM_NOSLEEP;
/// `KM43_VM_BESTFIT`.
pub(crate) const VM_BESTFIT: u32 = kmalloc43_abi::KM43_VM_BESTFIT;
/// `KM43_VM_NEXTFIT`.
pub(crate) const VM_NEXTFIT: u32 = kmalloc43_abi::KM43_VM_NEXTFIT;

/// vmem flags from C flags: exactly one of SLEEP/NOSLEEP, at most one policy, no other bits.
pub(crate) fn vm_flags(bits: u32) -> Result<Flags> {
    let known = VM_SLEEP | VM_NOSLEEP | VM_BESTFIT | VM_NEXTFIT;
    let sleep = bits & VM_SLEEP != 0;
    if bits & !known != 0
        || sleep == (bits & VM_NOSLEEP != 0)
        || bits & (VM_BESTFIT | VM_NEXTFIT) == VM_BESTFIT | VM_NEXTFIT
    {
        return Err(EINVAL);
    }
    let mut f = if sleep { Flags::SLEEP } else { Flags::NOSLEEP };
    if bits & VM_BESTFIT != 0 {
        f = f | Flags::BEST_FIT;
    }
    if bits & VM_NEXTFIT != 0 {
        f = f | Flags::NEXT_FIT;
    }
    Ok(f)
}

/// The segment kinds of a C type mask (`KM43_VMEM_ALLOC | KM43_VMEM_FREE`).
pub(crate) fn kinds(mask: u32) -> Result<SegKindSet> {
    const ALLOC: u32 = kmalloc43_abi::KM43_VMEM_ALLOC;
    const FREE: u32 = kmalloc43_abi::KM43_VMEM_FREE;
    const BOTH: u32 = ALLOC | FREE;
    match mask {
        ALLOC => Ok(SegKindSet::ALLOC),
        FREE => Ok(SegKindSet::FREE),
        BOTH => Ok(SegKindSet::TOTAL),
        _ => Err(EINVAL),
    }
}

/// The errno of a vmem error.
pub(crate) fn vmem_errno(e: VmemError) -> Error {
    match e {
        VmemError::NoSpace | VmemError::ImportNeeded(_) | VmemError::NoTags => ENOMEM,
        VmemError::LiveSegments { .. } => EBUSY,
        _ => EINVAL,
    }
}

/// The name of a vmem error, for the log (its fields may be addresses: never printed).
pub(crate) fn vmem_what(e: &VmemError) -> &'static str {
    match e {
        VmemError::NoSpace => "no space",
        VmemError::ImportNeeded(_) => "import needed",
        VmemError::BadSize => "bad size",
        VmemError::BadConstraint(_) => "inconsistent constraints",
        VmemError::BadFree { .. } => "free of an unknown segment",
        VmemError::WrongSize { .. } => "free with the wrong size",
        VmemError::DoubleFree { .. } => "double free",
        VmemError::Overlap { .. } => "overlapping span",
        VmemError::BadSpan { .. } => "bad span",
        VmemError::NoTags => "no boundary tags",
        VmemError::BadConfig => "bad configuration",
        VmemError::LiveSegments { .. } => "live segments",
    }
}

/// Spans that disowned arenas gave up without calling a release function (it was gone): the
/// resources of modules that unloaded without destroying their arenas.
pub(crate) static DISOWNED_SPANS: Atomic<usize> = Atomic::new(0);

/// What the arena lock protects.
pub(crate) struct VmInner {
    /// The arena (boxed: see [`VmArena::new`]).
    pub(crate) arena: KBox<Arena<TagPages>>,
    /// Tasks sleeping for space.
    queue: WaitQueue,
    /// Calls of the source's functions in progress ([`VmArena::enter_source`]).
    source_calls: usize,
    /// The depots of the magazine front's quantum caches (empty without a front).
    depots: KVec<Depot>,
}

/// Rounds of a quantum-cache magazine at first (the depot grows it under contention).
const QC_MAG_START: usize = 15;

/// One CPU's magazines of a client arena's quantum caches.
pub(crate) struct QcSlot {
    mags: [CpuMagazines; MAX_QCACHES],
}

// SAFETY: all zero bytes are a valid `QcSlot`: no magazines (`Option<MagBox>` is a
// `repr(transparent)` `NonNull`, so zero is `None`).
unsafe impl pin_init::Zeroable for QcSlot {}

/// The per-CPU magazine front of a client arena with quantum caches (`crate::vmem::QcFront`):
/// the fast paths take this CPU's slot only; misses and flushes take the arena lock, then the
/// slot(s) (lock order: arena lock -> slot locks; a fast path never takes the arena lock while it
/// holds its slot). The slots are taken with interrupts off ([`IrqsOff`]): with a slot held
/// under the arena lock, a slot whose holder an interrupt could freeze would be a cross-CPU
/// deadlock (a task holding the arena lock on one CPU waiting for the slot of another, whose
/// holder is frozen under an interrupt spinning on the arena lock).
struct QcMags {
    front: KBox<QcFront>,
    cpus: PerCpu<QcSlot, (), IrqsOff>,
}

/// A client's arena (`struct kmalloc43_vmem`).
#[pin_data]
pub(crate) struct VmArena {
    #[pin]
    pub(crate) inner: SpinLockIrq<VmInner>,
    #[pin]
    wakeup: CondVar,
    import: Option<ImportFn>,
    release: Option<ReleaseFn>,
    source: *mut c_void,
    /// The owning module (`struct module *`, identity only); 0 for built-in code, and once the
    /// owner went (an orphan).
    owner: Atomic<usize>,
    /// The owner went without destroying it: shown as `<name>(orphan)`.
    orphaned: Atomic<bool>,
    /// The source's functions are never called again (written under the lock).
    disowned: Atomic<bool>,
    /// The magazine front of the quantum caches (`qcache_max > 0`).
    qc: Option<QcMags>,
}

/// A call of the source's functions in progress; ends on drop.
pub(crate) struct SourceCall<'a> {
    vm: &'a VmArena,
}

impl Drop for SourceCall<'_> {
    fn drop(&mut self) {
        let mut g = self.vm.inner.lock();
        g.source_calls -= 1;
        if g.source_calls == 0 && self.vm.disowned.load(Relaxed) {
            // `disown` waits for this.
            self.vm.wakeup.notify_all();
        }
    }
}

// SAFETY: `source` is an opaque cookie only passed back to the client's functions, which the C
// ABI requires to be callable from any task; everything else is lock-protected.
unsafe impl Send for VmArena {}
// SAFETY: as above.
unsafe impl Sync for VmArena {}

/// Parameters of [`VmArena::new`].
pub(crate) struct VmConfig<'a> {
    pub(crate) name: &'a str,
    pub(crate) base: usize,
    pub(crate) size: usize,
    pub(crate) quantum: usize,
    pub(crate) qcache_max: usize,
    pub(crate) import: Option<ImportFn>,
    pub(crate) release: Option<ReleaseFn>,
    pub(crate) source: *mut c_void,
    /// The owning module (`struct module *`), NULL for built-in code.
    pub(crate) owner: *const c_void,
}

impl VmArena {
    /// A new arena (process context).
    pub(crate) fn new(cfg: &VmConfig<'_>, counters: &Arc<PageCounters>) -> Result<Pin<KBox<Self>>> {
        if cfg.import.is_some() != cfg.release.is_some() {
            return Err(EINVAL);
        }
        // The arena's own checks of `qcache_max` (a multiple of the quantum, at most
        // `MAX_QCACHES` of them), before the front takes the quantum caches' place.
        let q = cfg.quantum;
        if cfg.qcache_max != 0
            && (!q.is_power_of_two()
                || cfg.qcache_max & (q - 1) != 0
                || cfg.qcache_max / q > MAX_QCACHES)
        {
            return Err(EINVAL);
        }
        let qc = if cfg.qcache_max != 0 {
            Some(QcMags {
                front: {
                    let mut b = KBox::<QcFront>::new_uninit(GFP_KERNEL)?;
                    // SAFETY: the box's memory is valid for writes of a `QcFront` and aligned;
                    // `init_in_place` initialises all of it, so `assume_init` is sound.
                    unsafe {
                        QcFront::init_in_place(b.as_mut_ptr(), q, cfg.qcache_max);
                        b.assume_init()
                    }
                },
                cpus: PerCpu::new()?,
            })
        } else {
            None
        };
        let mut depots = KVec::new();
        if let Some(qc) = &qc {
            for _ in 0..qc.front.ncaches() {
                depots.push(Depot::new(QC_MAG_START, MAG_ROUNDS), GFP_KERNEL)?;
            }
        }
        let arena_cfg = ArenaConfig {
            name: cfg.name,
            quantum: cfg.quantum,
            // The front is the quantum cache (`QcFront::destroy` wants no depots of the arena).
            qcache_max: 0,
            import_quantum: cfg.import.map(|_| cfg.quantum),
            span: (cfg.size != 0).then_some((cfg.base, cfg.size)),
        };
        let init_arena = |slot: *mut Arena<TagPages>| {
            // SAFETY: `slot` is valid for writes and aligned (pin-init contract); on `Err`
            // `Arena::init_in_place` leaves it uninitialised, as `init_from_closure` requires.
            unsafe { Arena::init_in_place(slot, &arena_cfg, TagPages::new(counters)) }
                .map_err(vmem_errno)
        };
        // SAFETY: the closure initialises the slot on `Ok` and leaves it uninitialised on `Err`;
        // an arena is not pinned.
        let init_arena = unsafe { pin_init::init_from_closure(init_arena) };
        // The arena (about 1 KiB) is built in place in a box of its own: the lock takes its data
        // by an infallible initialiser (`Lock::new`), and building an arena can fail.
        let arena = KBox::init(init_arena, GFP_KERNEL)?;
        KBox::pin_init(
            pin_init!(VmArena {
                inner <- new_spinlock_irq!(
                    VmInner { arena, queue: WaitQueue::new(), source_calls: 0, depots },
                    "kmalloc43_vmem"
                ),
                wakeup <- new_condvar!("kmalloc43_vmem_wait"),
                import: cfg.import,
                release: cfg.release,
                source: cfg.source,
                owner: Atomic::new(cfg.owner as usize),
                orphaned: Atomic::new(false),
                disowned: Atomic::new(false),
                qc,
            }),
            GFP_KERNEL,
        )
    }

    /// Starts a call of the source's functions (lock not held), unless the arena is disowned.
    fn enter_source(&self) -> Option<SourceCall<'_>> {
        let mut g = self.inner.lock();
        if self.disowned.load(Relaxed) {
            return None;
        }
        g.source_calls += 1;
        Some(SourceCall { vm: self })
    }

    /// Gives a released span back to the source (lock not held). `false` if the span was kept
    /// instead (disowned: counted in [`DISOWNED_SPANS`]).
    fn give_back(&self, span: Option<SpanRelease>) -> bool {
        let (Some(span), Some(release)) = (span, self.release) else {
            return true;
        };
        let Some(_call) = self.enter_source() else {
            DISOWNED_SPANS.fetch_add(1, Relaxed);
            return false;
        };
        // SAFETY: the client's release function with its own cookie and a span its import
        // function returned; not disowned, so its module is still there until `_call` ends.
        unsafe { release(self.source, span.base as c_ulong, span.size) };
        true
    }

    /// The owning module (`struct module *`), NULL for built-in code and orphans.
    pub(crate) fn owner(&self) -> *const c_void {
        self.owner.load(Relaxed) as *const c_void
    }

    /// Forgets the owner (it went): the arena is an orphan, kept for whoever holds its handle,
    /// and shown as `<name>(orphan)` (`crate::malloc::ArenaFate` says why it is not adopted).
    pub(crate) fn orphan(&self) {
        self.owner.store(0, Relaxed);
        self.orphaned.store(true, Relaxed);
    }

    /// The name reports and messages show: `<name>(orphan)` once the owner went (takes the
    /// lock).
    pub(crate) fn shown_name(&self) -> ShownName {
        self.shown_name_of(&self.inner.lock().arena)
    }

    /// [`VmArena::shown_name`] with the lock held (`arena` is this arena's).
    pub(crate) fn shown_name_of(&self, arena: &Arena<TagPages>) -> ShownName {
        ShownName::of(arena.name(), self.orphaned.load(Relaxed))
    }

    /// Whether the source's functions lie in `module`'s memory.
    ///
    /// # Safety
    ///
    /// `module` is loaded or going (its memory is still there).
    pub(crate) unsafe fn calls_into(&self, module: *const c_void) -> bool {
        let import = self.import.map(|f| f as usize);
        let release = self.release.map(|f| f as usize);
        [import, release]
            .into_iter()
            .flatten()
            // SAFETY: the caller's guarantee.
            .any(|f| unsafe { crate::owners::within_module(f, module) })
    }

    /// Disowns the source: from the return on, none of its functions is called again (calls in
    /// progress are waited for). Imports fail (`SLEEP` allocations wait for a free or an add),
    /// released spans are kept. Process context (may sleep). `false` if it already was.
    pub(crate) fn disown(&self) -> bool {
        let mut g = self.inner.lock();
        if self.disowned.load(Relaxed) {
            return false;
        }
        self.disowned.store(true, Relaxed);
        while g.source_calls > 0 {
            self.wakeup.wait(&mut g);
        }
        true
    }

    /// Segments allocated now (quantum-cached ones included) and their size.
    pub(crate) fn live(&self) -> (usize, usize) {
        let (mut n, mut bytes) = (0, 0);
        self.walk(SegKindSet::ALLOC, |_, size| {
            n += 1;
            bytes += size;
        });
        (n, bytes)
    }

    /// Spans imported from the source and not released: their number and size.
    pub(crate) fn imported(&self) -> (usize, usize) {
        let g = self.inner.lock();
        let s = g.arena.stats();
        (s.import.saturating_sub(s.release), s.mem_import)
    }

    /// Allocates with `op`, importing and sleeping as the flags allow.
    fn alloc_with(
        &self,
        cflags: u32,
        op: impl Fn(&mut Arena<TagPages>, Flags) -> Result<usize, VmemError>,
    ) -> Result<usize> {
        let flags = vm_flags(cflags)?;
        if flags.contains(Flags::SLEEP) {
            might_sleep();
        }
        alloc_sleeping(self, flags, op).map_err(|e| match e {
            VmemWaitError::Vmem(e) => vmem_errno(e),
            VmemWaitError::Import(e) => e,
        })
    }

    /// `vmem_alloc`: a quantum-cached size from this CPU's magazine, else from the depot or a
    /// slab (arena lock; a slab may be imported from the source first), else the arena itself.
    pub(crate) fn alloc(&self, size: usize, cflags: u32) -> Result<usize> {
        if let Some(qc) = &self.qc {
            if let Some(i) = qc.front.cache_index(size) {
                let flags = vm_flags(cflags)?;
                let need_spare = {
                    let mut slot = qc.cpus.local();
                    if let Some(a) = qc.front.alloc(i, &mut slot.mags[i]) {
                        return Ok(a);
                    }
                    slot.mags[i].loaded_mut().is_none()
                };
                if qc.front.bypass_miss() {
                    return self.alloc_with(cflags, |a, f| a.alloc(size, f));
                }
                let mut r = self.refill(qc, i, need_spare);
                if let Err(VmemError::ImportNeeded(req)) = r {
                    let sleep = flags.contains(Flags::SLEEP);
                    if sleep {
                        might_sleep();
                    }
                    if self.has_source() && import_span(self, &req, sleep).is_ok() {
                        r = self.refill(qc, i, need_spare);
                    }
                }
                match r {
                    Ok(a) => return Ok(a),
                    Err(_) => qc.front.refill_failed(),
                }
            }
        }
        self.alloc_with(cflags, |a, f| a.alloc(size, f))
    }

    /// Allocation miss of quantum cache `i` (takes the arena lock, then this CPU's slot).
    fn refill(&self, qc: &QcMags, i: usize, need_spare: bool) -> Result<usize, VmemError> {
        let mut spare = if need_spare {
            new_magazine(QC_MAG_START)
        } else {
            None
        };
        let r = {
            let mut g = self.inner.lock();
            let inner = &mut *g;
            let mut slot = qc.cpus.local();
            qc.front.refill(
                i,
                &mut slot.mags[i],
                &mut inner.depots[i],
                &mut inner.arena,
                &mut spare,
            )
        };
        if let Some(m) = spare {
            free_magazine(m);
        }
        r
    }

    /// `vmem_xalloc`.
    pub(crate) fn xalloc(&self, size: usize, c: &Constraints, cflags: u32) -> Result<usize> {
        self.alloc_with(cflags, |a, f| a.xalloc(size, c, f))
    }

    /// `vmem_free` / `vmem_xfree`.
    #[link_section = ".text.kmalloc43_vmem"]
    pub(crate) fn free(&self, addr: usize, size: usize, x: bool) -> Result {
        let mut checked = None;
        if let Some(qc) = &self.qc {
            if let Some(i) = qc.front.cache_index(size) {
                let r = qc.front.free(i, &mut qc.cpus.local().mags[i], addr);
                match r {
                    Ok(FastFree::Done) => return Ok(()),
                    Ok(FastFree::Full(a)) => {
                        let mut spare = new_magazine(QC_MAG_START);
                        {
                            let mut g = self.inner.lock();
                            let mut slot = qc.cpus.local();
                            qc.front
                                .unload(i, &mut slot.mags[i], &mut g.depots[i], &mut spare, a);
                        }
                        if let Some(m) = spare {
                            free_magazine(m);
                        }
                        return Ok(());
                    }
                    Ok(FastFree::NotCached) => {}
                    Err(e) => checked = Some(e),
                }
            }
        }
        let mut g = self.inner.lock();
        let r = if let Some(e) = checked {
            Err(e)
        } else if let Some(qc) = &self.qc {
            qc.front.arena_free(&mut g.arena, addr, size)
        } else if x {
            g.arena.xfree(addr, size)
        } else {
            g.arena.free(addr, size)
        };
        if r.is_ok() {
            wake_sleepers(self, &mut g);
        }
        drop(g);
        match r {
            Ok(span) => {
                let _ = self.give_back(span);
                Ok(())
            }
            Err(e) => {
                pr_err!(
                    "vmem {}: free refused: {}\n",
                    self.shown_name(),
                    vmem_what(&e)
                );
                Err(vmem_errno(e))
            }
        }
    }

    /// `vmem_add`.
    pub(crate) fn add(&self, base: usize, size: usize) -> Result {
        let mut g = self.inner.lock();
        g.arena.add(base, size).map_err(vmem_errno)?;
        wake_sleepers(self, &mut g);
        Ok(())
    }

    /// `vmem_size`.
    pub(crate) fn size(&self, which: SegKindSet) -> usize {
        self.inner.lock().arena.size(which)
    }

    /// `vmem_walk`: `f` runs under the lock.
    pub(crate) fn walk(&self, which: SegKindSet, f: impl FnMut(usize, usize)) {
        self.inner.lock().arena.walk(which, f)
    }

    /// Checks the arena's invariants.
    #[cfg_attr(
        not(CONFIG_KMALLOC43_KUNIT_TEST),
        expect(dead_code, reason = "used by the KUnit suites")
    )]
    pub(crate) fn audit(&self) -> Result<(), &'static str> {
        self.inner.lock().arena.audit().map_err(|e| e.what)
    }

    /// Whether the source's functions are kmalloc43's arena-source functions (a child of another
    /// kmalloc43 arena), or there are none: they stay callable as long as kmalloc43 is loaded.
    pub(crate) fn sources_from_kmalloc43(&self) -> bool {
        let import = self.import.is_none_or(|f| {
            let f = f as *const ();
            f == crate::kmalloc43_abi::kmalloc43_vmem_import_from_arena as *const ()
                || f == crate::abi::kmalloc43_rust_vmem_import_from_arena as *const ()
        });
        let release = self.release.is_none_or(|f| {
            let f = f as *const ();
            f == crate::kmalloc43_abi::kmalloc43_vmem_release_to_arena as *const ()
                || f == crate::abi::kmalloc43_rust_vmem_release_to_arena as *const ()
        });
        import && release
    }

    /// Empties every CPU's magazines and the depots into their slabs (arena lock held).
    fn flush_front(qc: &QcMags, inner: &mut VmInner) {
        let mut all = qc.cpus.all();
        for cpu in 0..all.len() {
            let slot = all.get(cpu);
            for (i, m) in slot.mags.iter_mut().enumerate().take(qc.front.ncaches()) {
                qc.front.flush_cpu(i, m, free_magazine);
            }
        }
        drop(all);
        for (i, d) in inner.depots.iter_mut().enumerate() {
            qc.front.flush_depot(i, d, free_magazine);
        }
    }

    /// Flushes the quantum caches' magazines and gives idle slabs back to the arena (and spans
    /// that became wholly free to the source): debugfs `drain`.
    pub(crate) fn drain(&self) -> Result {
        if self.qc.is_none() {
            return Ok(());
        }
        let g = self.reclaim_front(self.inner.lock(), GFP_KERNEL)?.0;
        drop(g);
        Ok(())
    }

    /// Flushes the quantum caches' magazines and depots into their slabs and the idle slabs
    /// into the arena, and gives the spans that became wholly free back to the source, the
    /// arena lock released meanwhile (taken on entry and on return); wakes sleepers. Whether
    /// the arena got anything back. `ENOMEM` (nothing changed) if there is no memory for the
    /// list of spans to give back.
    fn reclaim_front<'a>(
        &'a self,
        locked: Guard<'a, VmInner, SpinLockIrqBackend>,
        gfp: kernel::alloc::Flags,
    ) -> Result<(Guard<'a, VmInner, SpinLockIrqBackend>, bool)> {
        let Some(qc) = &self.qc else {
            return Ok((locked, false));
        };
        drop(locked);
        let mut released = KVec::<SpanRelease>::with_capacity(MAX_SLABS, gfp)?;
        let mut g = self.inner.lock();
        let before = g.arena.stats().mem_inuse;
        Self::flush_front(qc, &mut g);
        qc.front.release_idle(&mut g.arena, &mut |span| {
            let _ = released.push_within_capacity(span);
        });
        let gave = g.arena.stats().mem_inuse < before;
        wake_sleepers(self, &mut g);
        drop(g);
        for span in released.drain_all() {
            let _ = self.give_back(Some(span));
        }
        Ok((self.inner.lock(), gave))
    }

    /// Destroys the arena's contents, giving imported spans back (unless disowned: then they are
    /// kept and counted): `EBUSY` (nothing changes) if segments are still allocated. The caller
    /// then frees the arena.
    pub(crate) fn destroy(&self) -> Result {
        might_sleep();
        let spans = {
            let g = self.inner.lock();
            let s = g.arena.stats();
            s.import.saturating_sub(s.release)
        };
        let mut released = KVec::<SpanRelease>::with_capacity(spans, GFP_KERNEL)?;
        let mut g = self.inner.lock();
        let mut push = |span| {
            if released.push_within_capacity(span).is_err() {
                pr_err!("arena destroyed while in use; span leaked\n");
            }
        };
        let r = if let Some(qc) = &self.qc {
            // Rounds in magazines are nobody's: flushed home first (the arena does not change),
            // then the front decides on what clients hold.
            Self::flush_front(qc, &mut g);
            qc.front.destroy(&mut g.arena, &mut push)
        } else {
            g.arena.destroy(&mut push)
        };
        drop(g);
        let kept = released
            .drain_all()
            .filter(|span| !self.give_back(Some(*span)))
            .count();
        if kept != 0 {
            pr_err!(
                "vmem {}: {} imported spans kept at destroy: the source's release function is gone\n",
                self.shown_name(),
                kept
            );
        }
        r.map_err(|e| {
            if let VmemError::LiveSegments { count, bytes } = e {
                pr_err!("vmem destroy refused: {count} segments ({bytes} bytes) still allocated\n");
            }
            vmem_errno(e)
        })
    }

    /// [`VmArena::destroy`] at kmalloc43's unload, when every client module has unloaded: a
    /// client's functions are disowned first, so none is called.
    pub(crate) fn destroy_disowned(&self) -> Result {
        if !self.sources_from_kmalloc43() {
            self.disown();
        }
        self.destroy()
    }
}

impl VmemWait for VmArena {
    type Tags = TagPages;
    type Locked<'a> = Guard<'a, VmInner, SpinLockIrqBackend>;
    type ImportError = Error;

    fn lock(&self) -> Self::Locked<'_> {
        self.inner.lock()
    }

    fn arena<'l>(locked: &'l mut Self::Locked<'_>) -> &'l mut Arena<TagPages> {
        &mut locked.arena
    }

    fn queue<'l>(locked: &'l mut Self::Locked<'_>) -> &'l mut WaitQueue {
        &mut locked.queue
    }

    fn wait<'a>(&'a self, mut locked: Self::Locked<'a>) -> Self::Locked<'a> {
        self.wakeup.wait(&mut locked);
        locked
    }

    fn notify_all(&self) {
        self.wakeup.notify_all();
    }

    fn has_source(&self) -> bool {
        self.import.is_some() && !self.disowned.load(Relaxed)
    }

    fn import(&self, req: &ImportRequest, sleep: bool) -> Result<usize> {
        let import = self.import.ok_or(ENOMEM)?;
        let _call = self.enter_source().ok_or(ENOMEM)?;
        let mut base: c_ulong = 0;
        let cflags = if sleep { VM_SLEEP } else { VM_NOSLEEP };
        // SAFETY: the client's import function with its cookie, without our lock; not disowned,
        // so its module is still there until `_call` ends.
        let rc = unsafe { import(self.source, req.size, cflags, &mut base) };
        if rc != 0 {
            return Err(if (-4095..0).contains(&rc) {
                Error::from_errno(rc)
            } else {
                ENOMEM
            });
        }
        Ok(base as usize)
    }

    fn release(&self, span: SpanRelease) {
        let _ = self.give_back(Some(span));
    }

    fn reclaim_cached<'a>(
        &'a self,
        locked: Self::Locked<'a>,
        sleep: bool,
    ) -> (Self::Locked<'a>, bool) {
        let gfp = if sleep {
            GFP_KERNEL
        } else {
            GFP_NOWAIT | __GFP_NOWARN
        };
        match self.reclaim_front(locked, gfp) {
            Ok(r) => r,
            // No memory for the span list: nothing was flushed.
            Err(_) => (self.inner.lock(), false),
        }
    }
}

/// The list of live client arenas (for debugfs).
#[pin_data]
pub(crate) struct ArenaList {
    /// Addresses of the `VmArena`s (each leaked from a `Pin<KBox>` until destroy).
    #[pin]
    pub(crate) list: Mutex<KVec<usize>>,
}

impl ArenaList {
    /// Flushes the quantum-cache magazines of every client arena (debugfs `drain`).
    pub(crate) fn drain(&self) {
        let list = self.list.lock();
        for &p in list.iter() {
            // SAFETY: arenas stay allocated while on the list, which we hold locked.
            let vm = unsafe { &*(p as *const VmArena) };
            if vm.drain().is_err() {
                pr_warn!(
                    "vmem {}: drain: no memory for the span list\n",
                    vm.shown_name()
                );
            }
        }
    }

    /// An empty list.
    pub(crate) fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(ArenaList {
                list <- new_mutex!(KVec::new(), "kmalloc43_arenas"),
            }),
            GFP_KERNEL,
        )
    }
}
