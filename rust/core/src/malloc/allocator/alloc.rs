// SPDX-License-Identifier: GPL-2.0

//! `malloc`: classify, charge the type, take a piece from its class or a run of pages.

use super::*;

impl<K: KmemPages> Malloc<K> {
    /// Allocates `size` bytes charged to `ty` (the limit checked on the type's statistics:
    /// [`Own`]).
    ///
    /// Pieces up to [`MAXALLOCSAVE`](super::MAXALLOCSAVE) come from the size classes' buckets
    /// (aligned to their size in pow2 mode; to the largest power of two dividing the class size,
    /// at least 16 bytes, in fine mode); larger requests are whole pages, page-aligned.
    pub fn malloc(
        &mut self,
        size: usize,
        ty: MallocType,
        flags: MallocFlags,
    ) -> Result<NonNull<u8>, MallocError> {
        self.malloc_in(size, ty, flags, &mut Own)
    }

    /// [`Malloc::malloc`] with the limit checked and the usage counted by `account` (module
    /// `account`): the charge is decided first, and taken back, the high water with it, if no
    /// memory could be had.
    pub fn malloc_in<A: Account + ?Sized>(
        &mut self,
        size: usize,
        ty: MallocType,
        flags: MallocFlags,
        account: &mut A,
    ) -> Result<NonNull<u8>, MallocError> {
        if !flags.is_valid() {
            return Err(MallocError::BadFlags { bits: flags.bits() });
        }
        let class = classify(self.classes, size)?;
        let charge = class.charge(self.classes);
        let st = self.types.get_mut(ty)?;
        let high = st.maxused;
        account.charge(st, ty, charge, flags)?;
        let taken = match class {
            Class::Bucket(i) => self
                .bucket_or_shortage(i, ty, flags, size)
                .and_then(|b| self.alloc_piece(b, ty, flags, size)),
            Class::Large(n) => {
                let owner = self.run_owner(ty);
                self.alloc_large(n, ty, owner, flags, size)
            }
        };
        let st = self.types.get_mut(ty)?;
        let addr = match taken {
            Ok(a) => a,
            Err(e) => {
                // Under the caller's lock all along: the high water goes back as well.
                account.undo(st, charge, high);
                return Err(e);
            }
        };
        st.sizemask |= 1 << class.sizebit();
        if flags.contains(MallocFlags::ZERO) {
            // SAFETY: `addr` is a fresh allocation of `charge` bytes.
            unsafe { fill(addr, charge, 0) };
        }
        NonNull::new(addr as *mut u8).ok_or(MallocError::ForeignPointer { addr })
    }

    fn shortage(&mut self, ty: MallocType, flags: MallocFlags, size: usize) -> MallocError {
        if let Ok(st) = self.types.get_mut(ty) {
            st.mapblocks += 1;
        }
        if flags.contains(MallocFlags::NOWAIT) {
            MallocError::NoMemory { ty, size }
        } else {
            MallocError::WouldBlock {
                ty,
                reason: BlockReason::Arena,
            }
        }
    }

    /// The bucket pieces of class `i` for `ty` come from (made on first use), or the shortage
    /// of metadata to make it.
    #[inline]
    pub(in crate::malloc) fn bucket_or_shortage(
        &mut self,
        i: usize,
        ty: MallocType,
        flags: MallocFlags,
        size: usize,
    ) -> Result<BucketId, MallocError> {
        match self.bucket_for(i, ty) {
            Some(b) => Ok(b),
            None => Err(self.shortage(ty, flags, size)),
        }
    }

    /// The owner code a page run handed out to `ty` carries: the type's with segregation on, 0
    /// (none) with it off.
    pub(in crate::malloc) fn run_owner(&self, ty: MallocType) -> u8 {
        if self.seg.on() {
            owner_code(ty)
        } else {
            0
        }
    }

    /// Pages from kmem, reclaiming wholly free clusters once if kmem is exhausted. `align` (in
    /// pages) must be a power of two: 1, or a bucket's cluster pages.
    fn take_pages(&mut self, npages: usize, align: usize) -> Option<usize> {
        if !align.is_power_of_two() {
            return None;
        }
        let addr = match self.kmem.alloc_pages(npages, align) {
            Some(a) => a,
            None => {
                if self.reclaim() == 0 {
                    return None;
                }
                self.kmem.alloc_pages(npages, align)?
            }
        };
        // Masks, not `%`: a division by a runtime value is slow and, in the kernel build, an
        // objtool warning (the divide-error path does not return).
        let misaligned = addr & (PAGE_SIZE - 1) != 0 || (addr >> PAGE_SHIFT) & (align - 1) != 0;
        if addr == 0 || misaligned {
            // A supply breaking its contract: refuse the run rather than corrupt the map.
            return None;
        }
        Some(addr)
    }

    /// Takes a piece from bucket `b` (for `ty`: its DIAGNOSTIC tag and, in a shortage, the
    /// request the caller is told about).
    #[inline]
    pub(in crate::malloc) fn alloc_piece(
        &mut self,
        b: BucketId,
        ty: MallocType,
        flags: MallocFlags,
        size: usize,
    ) -> Result<usize, MallocError> {
        if self.bucket(b).head == 0 && !self.unpark(b) && !self.refill(b) {
            return Err(self.shortage(ty, flags, size));
        }
        if self.diag.enabled {
            self.diag_check_head(b)?;
        } else {
            self.check_head_link(b);
        }
        let bucket = self.bucket_mut(b);
        // SAFETY: the list is non-empty and its head's `next` link was validated (DIAGNOSTIC:
        // rebuilt from the side table if it was not; otherwise cut if it was not).
        let piece = unsafe { bucket.pop() };
        bucket.totalfree -= 1;
        let pos = self.classes.position(b.class, piece);
        let (head, k) = (pos.head, pos.index);
        if let Some(slot) = self.usage.slot(head) {
            if let Usage::Bucket { index, owner, free } = slot.get() {
                slot.set(Usage::Bucket {
                    index,
                    owner,
                    free: free.saturating_sub(1),
                });
            }
        }
        self.counts[b.class].calls += 1;
        if self.diag.enabled {
            self.diag.set_piece_tag(head, k, LIVE | ty.index() as u16);
        }
        self.tick();
        Ok(piece)
    }

    /// Takes a cluster from kmem for bucket `b` (its record names `b`'s owner) and carves it
    /// into free pieces. False if kmem is exhausted.
    fn refill(&mut self, b: BucketId) -> bool {
        let i = b.class;
        let np = self.classes.cluster_pages(i);
        let Some(base) = self.take_pages(np, np) else {
            return false;
        };
        let head = base >> PAGE_SHIFT;
        let n = self.classes.pieces(i);
        let record = Usage::Bucket {
            index: i,
            owner: b.owner,
            free: n,
        };
        if self
            .usage
            .register_run(&mut self.kmem, head, np, record)
            .is_err()
        {
            // SAFETY: the run was just taken from kmem and is referenced nowhere.
            unsafe { self.kmem.free_pages(base, np) };
            return false;
        }
        if self.diag.enabled
            && self
                .diag
                .add_cluster(&mut self.kmem, head, n, OWNER_NONE)
                .is_err()
        {
            self.usage.clear_run(&mut self.kmem, head, np);
            // SAFETY: as above.
            unsafe { self.kmem.free_pages(base, np) };
            return false;
        }
        self.data_pages += np;
        let size = self.classes.size(i);
        // Push the highest piece first so that the lowest is handed out first.
        for k in (0..n).rev() {
            let piece = base + k * size;
            // SAFETY: `piece` is a piece of a cluster we own, not yet on any list.
            unsafe {
                if self.diag.enabled {
                    diag::poison(piece, size);
                }
                self.bucket_mut(b).push(piece);
            }
        }
        let b = self.bucket_mut(b);
        b.total += n;
        b.totalfree += n;
        true
    }

    /// Takes a run of `n` pages from kmem whose record names owner code `owner` (for `ty`: its
    /// DIAGNOSTIC tag and, in a shortage, the request the caller is told about).
    pub(in crate::malloc) fn alloc_large(
        &mut self,
        n: usize,
        ty: MallocType,
        owner: u8,
        flags: MallocFlags,
        size: usize,
    ) -> Result<usize, MallocError> {
        let Some(base) = self.take_pages(n, 1) else {
            return Err(self.shortage(ty, flags, size));
        };
        let head = base >> PAGE_SHIFT;
        let record = Usage::Large { npages: n, owner };
        let registered = self
            .usage
            .register_run(&mut self.kmem, head, n, record)
            .is_ok();
        let tagged = registered
            && (!self.diag.enabled
                || self
                    .diag
                    .add_large(&mut self.kmem, head, LIVE | ty.index() as u16)
                    .is_ok());
        if !tagged {
            if registered {
                self.usage.clear_run(&mut self.kmem, head, n);
            }
            // SAFETY: the run was just taken from kmem and is referenced nowhere.
            unsafe { self.kmem.free_pages(base, n) };
            return Err(self.shortage(ty, flags, size));
        }
        self.data_pages += n;
        self.run_owned(owner);
        self.large.calls += 1;
        self.large.inuse += 1;
        self.large.pages += n;
        Ok(base)
    }
}
