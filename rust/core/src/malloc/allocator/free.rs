// SPDX-License-Identifier: GPL-2.0

//! `free`: find the allocation from its address, check it, uncharge the type, give the piece back.

use super::*;

impl<K: KmemPages> Malloc<K> {
    /// Finds the allocation `addr` starts, or says why it is not one.
    pub(in crate::malloc) fn locate(&self, addr: usize) -> Result<Located, MallocError> {
        let page = addr >> PAGE_SHIFT;
        let Some(first) = self.usage.slot(page) else {
            return Err(MallocError::ForeignPointer { addr });
        };
        let (head, slot) = match first.get() {
            Usage::Cont { back } => (page - back, self.usage.slot(page - back)),
            _ => (page, Some(first)),
        };
        let usage = slot.map_or(Usage::None, |s| s.get());
        match usage {
            Usage::Bucket { index, owner, free } if index < self.classes.count() => {
                let Some(bucket) = self.type_bucket(index, owner) else {
                    return Err(MallocError::ForeignPointer { addr });
                };
                let pos = self.classes.position(index, addr);
                if pos.index >= self.classes.pieces(index) {
                    // In the cluster's unused tail: inside no piece.
                    return Err(MallocError::ForeignPointer { addr });
                }
                if pos.start != addr {
                    return Err(MallocError::InteriorPointer {
                        addr,
                        start: pos.start,
                    });
                }
                Ok(Located {
                    class: Class::Bucket(index),
                    head,
                    piece: pos.index,
                    free,
                    owner,
                    bucket,
                    slot,
                })
            }
            Usage::Large { npages, owner } => {
                let start = head << PAGE_SHIFT;
                if start != addr {
                    return Err(MallocError::InteriorPointer { addr, start });
                }
                Ok(Located {
                    class: Class::Large(npages),
                    head,
                    piece: 0,
                    free: 0,
                    owner,
                    bucket: BucketId::shared(0),
                    slot,
                })
            }
            _ => Err(MallocError::ForeignPointer { addr }),
        }
    }

    /// The DIAGNOSTIC tag of a located allocation.
    pub(super) fn tag_of(&self, loc: &Located) -> u16 {
        match loc.class {
            Class::Bucket(_) => self.diag.piece_tag(loc.head, loc.piece),
            Class::Large(_) => self.diag.large_tag(loc.head),
        }
    }

    /// Checks that `loc` is live and owned by `ty` (as far as the mode can tell).
    ///
    /// Liveness is exact in both modes: DIAGNOSTIC reads the side table, otherwise a bucket piece
    /// is checked against its free list in O(1) ([`listed`](super::listed)). A large run is live
    /// whenever `locate` finds it: freeing one clears its records, so freeing it again is
    /// [`MallocError::ForeignPointer`] (no memory says it was ours) until its pages are reused.
    ///
    /// The owner is exact, in both modes, for a piece of a type-segregated class and for a page
    /// run handed out with segregation on: the record names the owner (module `segregate`).
    /// DIAGNOSTIC's side table names it too, for every allocation made while it was on. For a
    /// piece of a shared class without DIAGNOSTIC, nothing stores its type (pieces of one
    /// cluster belong to many types), so a wrong type is caught only when the given type's
    /// counters could not cover the free: no live allocation of that size class's charge left.
    ///
    /// The type's usage (`account`) is asked only when no owner is recorded: a recorded owner
    /// that matches decides the type exactly, and a live allocation of it is in its usage.
    pub(super) fn check_live<A: Account + ?Sized>(
        &self,
        addr: usize,
        loc: &Located,
        ty: MallocType,
        freeing: bool,
        account: &mut A,
    ) -> Result<(), MallocError> {
        let st = self.types.get(ty)?;
        if self.diag.enabled {
            let tag = self.tag_of(loc);
            let owner = tag & !LIVE;
            if tag & LIVE == 0 {
                return Err(if freeing {
                    MallocError::DoubleFree {
                        addr,
                        ty: self.types.handle(owner as usize),
                    }
                } else {
                    MallocError::NotAllocated { addr }
                });
            }
            if owner != OWNER_UNKNOWN && owner as usize != ty.index() {
                return Err(MallocError::WrongType {
                    addr,
                    given: ty,
                    owner: self.types.handle(owner as usize),
                });
            }
        } else if let Class::Bucket(_) = loc.class {
            if self.is_listed(loc.bucket, addr, loc.head, loc.free) {
                return Err(if freeing {
                    MallocError::DoubleFree { addr, ty: None }
                } else {
                    MallocError::NotAllocated { addr }
                });
            }
        }
        if loc.owner != 0 && loc.owner != owner_code(ty) {
            return Err(MallocError::WrongType {
                addr,
                given: ty,
                owner: self.types.handle(loc.owner as usize - 1),
            });
        }
        if loc.owner == 0 && !account.covers(st, loc.class.charge(self.classes)) {
            return Err(MallocError::WrongType {
                addr,
                given: ty,
                owner: None,
            });
        }
        Ok(())
    }

    /// Frees the allocation at `ptr`, which must have been allocated with type `ty`. No size is
    /// needed: it is found from the page's usage record.
    pub fn free(&mut self, ptr: NonNull<u8>, ty: MallocType) -> Result<(), MallocError> {
        self.free_in(ptr, ty, &mut Own)
    }

    /// [`Malloc::free`] with the usage uncharged from `account` (module `account`).
    pub fn free_in<A: Account + ?Sized>(
        &mut self,
        ptr: NonNull<u8>,
        ty: MallocType,
        account: &mut A,
    ) -> Result<(), MallocError> {
        let addr = ptr.as_ptr() as usize;
        self.types.get(ty)?;
        let loc = self.locate(addr)?;
        self.check_live(addr, &loc, ty, true, account)?;
        account.uncharge(self.types.get_mut(ty)?, loc.class.charge(self.classes));
        match loc.class {
            Class::Bucket(i) => self.free_piece(i, addr, &loc, ty),
            Class::Large(n) => self.free_large(addr, n, &loc),
        }
        Ok(())
    }

    /// Gives back the live piece `addr` of class `i` (located as `loc`) to its bucket; `ty`
    /// names the type that freed it in DIAGNOSTIC's side table.
    pub(in crate::malloc) fn free_piece(
        &mut self,
        i: usize,
        addr: usize,
        loc: &Located,
        ty: MallocType,
    ) {
        let b = loc.bucket;
        let size = self.classes.size(i);
        if self.diag.enabled {
            self.diag
                .set_piece_tag(loc.head, loc.piece, ty.index() as u16);
            // SAFETY: `addr` is a piece of ours that the caller gave up.
            unsafe { diag::poison(addr, size) };
        }
        let free = loc.free + 1;
        if let Some(slot) = loc.slot {
            slot.set(Usage::Bucket {
                index: i,
                owner: b.owner,
                free,
            });
        }
        let bucket = self.bucket_mut(b);
        // SAFETY: `addr` is a piece of bucket `b` that was live (`check_live`: the side table, or
        // `is_listed`), so it is not on the list.
        unsafe { bucket.push(addr) };
        bucket.totalfree += 1;
        if free == self.classes.pieces(i) {
            // Parked, not given back at once (module `giveback`).
            self.cluster_emptied(b, loc.head);
        }
        self.tick();
    }

    /// Gives back the live run of `n` pages at `addr` (located as `loc`) to kmem.
    pub(in crate::malloc) fn free_large(&mut self, addr: usize, n: usize, loc: &Located) {
        let head = loc.head;
        if self.diag.enabled {
            self.diag.remove_large(head);
        }
        self.usage.clear_run(&mut self.kmem, head, n);
        // SAFETY: the run came from kmem with `n` pages and is no longer referenced.
        unsafe { self.kmem.free_pages(addr, n) };
        self.run_disowned(loc.owner);
        self.data_pages -= n;
        self.large.inuse -= 1;
        self.large.pages -= n;
    }

    /// Gives a wholly free cluster of bucket `b` back to kmem.
    fn release_cluster(&mut self, b: BucketId, head: usize) {
        let n = self.classes.pieces(b.class);
        let size = self.classes.size(b.class);
        let base = head << PAGE_SHIFT;
        for k in 0..n {
            // SAFETY: the cluster is wholly free, so each of its pieces is on the list.
            unsafe { self.bucket_mut(b).unlink(base + k * size) };
        }
        self.give_back(b, head);
    }

    /// Gives every wholly free cluster of every bucket back to kmem, whatever the high water
    /// (done automatically before reporting kmem exhausted). Returns the clusters released.
    pub fn reclaim(&mut self) -> usize {
        let mut released = 0;
        let mut b = Some(self.first_bucket());
        while let Some(id) = b {
            released += self.release_bucket(id);
            b = self.next_bucket(id);
        }
        self.kmem.trim();
        released
    }

    /// Gives every wholly free cluster of bucket `b`, parked or listed, back to kmem. Returns
    /// how many.
    pub(in crate::malloc) fn release_bucket(&mut self, b: BucketId) -> usize {
        let mut released = self.release_parked_of(b);
        self.validate_list(b);
        if self.bucket(b).lost != 0 {
            // Its wholly free records may count lost pieces (see `cluster_emptied`).
            return released + self.recover_lost(b);
        }
        let i = b.class;
        let n = self.classes.pieces(i);
        // `kept` is the last piece seen whose cluster stays; releasing a cluster never unlinks
        // it, so the walk resumes after it.
        let mut kept = 0;
        let mut p = self.bucket(b).head;
        while p != 0 {
            let head = self.classes.position(i, p).head;
            let wholly_free =
                matches!(self.usage.get(head), Usage::Bucket { free, .. } if free == n);
            if wholly_free {
                self.release_cluster(b, head);
                released += 1;
                p = if kept == 0 {
                    self.bucket(b).head
                } else {
                    // SAFETY: `kept` is still on the list.
                    unsafe { Bucket::next(kept) }
                };
            } else {
                kept = p;
                // SAFETY: `p` is on the list.
                p = unsafe { Bucket::next(p) };
            }
        }
        released
    }
}
