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

    /// Undefines a type with no live allocation and returns its final statistics.
    pub fn undefine_type(&mut self, ty: MallocType) -> Result<TypeStats, MallocError> {
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
        self.buckets[..self.classes.count()]
            .iter()
            .fold((0, 0), |(n, l), b| {
                (n + b.stats.bad_links, l + b.stats.lost)
            })
    }

    /// Statistics of bucket `index` (0 = 16 bytes, up to `classes().count() - 1`).
    pub fn bucket_stats(&self, index: usize) -> Option<BucketStats> {
        self.buckets[..self.classes.count()]
            .get(index)
            .map(|b| b.stats)
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
        }
    }
}
