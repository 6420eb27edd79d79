// SPDX-License-Identifier: GPL-2.0

//! The type interface of the allocator: define, undefine, limits and statistics.

use super::*;

impl<K: KmemPages> Malloc<K> {
    /// Defines a type (FreeBSD's `MALLOC_DEFINE`) with a limit in bytes (`usize::MAX`: none).
    pub fn define_type(
        &mut self,
        name: &'static str,
        description: &'static str,
        limit: usize,
    ) -> Result<MallocType, MallocError> {
        self.types.define(name, description, limit)
    }

    /// Undefines a type with no live allocation and returns its final statistics. Its own
    /// buckets (type-segregated classes) give their clusters back to kmem; refused with
    /// [`MallocError::TypeInUse`], nothing changed, while the type has a live allocation or
    /// while a magazine layer holds a piece or page run of the type's (module `segregate`).
    pub fn undefine_type(&mut self, ty: MallocType) -> Result<TypeStats, MallocError> {
        let st = *self.types.get(ty)?;
        if st.inuse != 0 {
            return Err(MallocError::TypeInUse {
                ty,
                inuse: st.inuse,
            });
        }
        self.release_type_buckets(ty)?;
        self.types.undefine(ty)
    }

    /// Changes a type's limit. Waiters of the type should be woken by the caller.
    pub fn set_limit(&mut self, ty: MallocType, limit: usize) -> Result<(), MallocError> {
        self.types.get_mut(ty)?.limit = limit;
        Ok(())
    }

    /// Statistics of a type.
    pub fn type_stats(&self, ty: MallocType) -> Result<TypeStats, MallocError> {
        self.types.get(ty).copied()
    }

    /// Every defined type with its statistics (for a `vmstat -m` style listing).
    pub fn types(&self) -> impl Iterator<Item = (MallocType, TypeStats)> + '_ {
        self.types.iter().map(|(t, s)| (t, *s))
    }

    /// The size classes ([`ClassTable::count`] of them; bucket `i` serves class `i`).
    pub fn classes(&self) -> &'static ClassTable {
        self.classes
    }

    /// Corrupt free-list links found and cut, and the free pieces lost with them, over all
    /// buckets (`bad_links` and `lost` of [`BucketStats`]).
    pub fn link_damage(&self) -> (u64, usize) {
        (0..self.classes.count())
            .filter_map(|i| self.bucket_stats(i))
            .fold((0, 0), |(n, l), s| (n + s.bad_links, l + s.lost))
    }

    /// Statistics of size class `index` (0 = 16 bytes, up to `classes().count() - 1`): its
    /// shared bucket's plus, for a type-segregated class, the sums over every type's bucket of
    /// the class (calls, pieces held and free, clusters given back, bad links, lost pieces; the
    /// counters of undefined types' buckets are kept). `highwat` is one bucket's.
    pub fn bucket_stats(&self, index: usize) -> Option<BucketStats> {
        let mut sum = self.buckets[..self.classes.count()].get(index)?.stats;
        let mut b = self.next_bucket(BucketId::shared(self.classes.count() - 1));
        while let Some(id) = b {
            if id.class == index {
                let s = self.bucket(id).stats;
                sum.calls += s.calls;
                sum.total += s.total;
                sum.totalfree += s.totalfree;
                sum.freed += s.freed;
                sum.bad_links += s.bad_links;
                sum.lost += s.lost;
            }
            b = self.next_bucket(id);
        }
        Some(sum)
    }

    /// Clusters of bucket `index` that stayed parked through an idle window but were not given
    /// back because the bucket's give-back budget (one per 200 allocations) was spent, counted
    /// once per window (module `giveback`).
    pub fn deferred_give_backs(&self, index: usize) -> Option<u64> {
        self.deferred[..self.classes.count()].get(index).copied()
    }

    /// Statistics of large allocations.
    pub fn large_stats(&self) -> LargeStats {
        self.large
    }

    /// Pages held, for data and for bookkeeping.
    pub fn memory_stats(&self) -> MemoryStats {
        MemoryStats {
            data_pages: self.data_pages,
            bookkeeping_pages: self.usage.meta_pages(),
            diag_pages: self.diag.meta_pages(),
            bucket_pages: self.seg.meta_pages(),
        }
    }
}
