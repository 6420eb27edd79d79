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

    /// Statistics of size class `index` (0 = 16 bytes, up to `classes().count() - 1`), exact:
    /// the class's counters (calls, clusters given back, bad links: kept per class, over all
    /// its buckets, those of undefined types included) and the sums of the pieces held, free
    /// and lost over its shared bucket and, for a type-segregated class, every type's bucket of
    /// it. `highwat` is the shared bucket's (a type's own keeps one cluster).
    pub fn bucket_stats(&self, index: usize) -> Option<BucketStats> {
        let c = self.counts[..self.classes.count()].get(index)?;
        let mut sum = BucketStats {
            size: self.classes.size(index),
            calls: c.calls,
            total: 0,
            totalfree: 0,
            elmpercl: self.classes.pieces(index),
            highwat: shared_highwat(self.classes, index),
            freed: c.freed,
            bad_links: c.bad_links,
            lost: 0,
        };
        let mut b = Some(BucketId::shared(index));
        while let Some(id) = b {
            let s = self.bucket(id);
            sum.total += s.total;
            sum.totalfree += s.totalfree;
            sum.lost += s.lost;
            b = self.next_bucket_of_class(id);
        }
        Some(sum)
    }

    /// Clusters of bucket `index` that stayed parked through an idle window but were not given
    /// back because the class's give-back budget (one per 200 allocations) was spent, counted
    /// once per window (module `giveback`).
    pub fn deferred_give_backs(&self, index: usize) -> Option<u64> {
        self.counts[..self.classes.count()]
            .get(index)
            .map(|c| c.deferred)
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
