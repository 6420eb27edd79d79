// SPDX-License-Identifier: GPL-2.0

//! The quantum caches and the per-CPU magazine seam (`magazine_fill`/`magazine_drain`).

use super::*;

impl<P: TagPageSource> Arena<P> {
    /// Flushes the quantum-cache depots back into the arena; `release` receives imported spans
    /// that became wholly free.
    pub fn reap(&mut self, release: &mut dyn FnMut(SpanRelease)) {
        for i in 0..self.depots.ncaches {
            let size = (i + 1) * self.quantum;
            while let Some(addr) = self.depots.pop(i) {
                if let Ok(Some(r)) = self.free_seg::<true>(addr, size) {
                    release(r);
                }
            }
        }
    }

    /// The index of the quantum cache for magazines of `size`, or `BadSize` if `size` is not a
    /// quantum-cached size of this arena.
    fn magazine_cache(&self, size: usize) -> Result<usize, VmemError> {
        if !self.depots.is_active()
            || size == 0
            || size & (self.quantum - 1) != 0
            || size > self.qcache_max
        {
            return Err(VmemError::BadSize);
        }
        Ok(self.qcache_index(size))
    }

    /// Fills `mag` with rounds from the depot (or fresh allocations); returns the rounds held.
    /// Fails only if the magazine's size is not quantum-cached or nothing at all could be had.
    pub fn magazine_fill(&mut self, mag: &mut Magazine) -> Result<usize, VmemError> {
        let size = mag.size();
        let i = self.magazine_cache(size)?;
        while !mag.is_full() {
            let addr = match self.depots.pop(i) {
                Some(a) => a,
                None => match self.xalloc_seg(size, &Constraints::default(), Flags::INSTANT_FIT) {
                    Ok((a, seg)) => {
                        // SAFETY: a valid, freshly allocated tag.
                        unsafe { tag_mut(seg).kind = SegKind::Cached };
                        a
                    }
                    Err(e) if mag.is_empty() => return Err(e),
                    Err(_) => break,
                },
            };
            if mag.push(addr).is_err() {
                break;
            }
        }
        Ok(mag.len())
    }

    /// Empties `mag` into the depot, freeing what does not fit; `release` receives imported
    /// spans that became wholly free. Rounds that are not cached integers of this arena are
    /// dropped and reported (the first one) as an error after the magazine is emptied.
    pub fn magazine_drain(
        &mut self,
        mag: &mut Magazine,
        release: &mut dyn FnMut(SpanRelease),
    ) -> Result<(), VmemError> {
        let size = mag.size();
        let i = self.magazine_cache(size)?;
        let mut result = Ok(());
        while let Some(addr) = mag.pop() {
            let (found, steps) = self.hash.find(addr);
            self.note_lookup(steps);
            // SAFETY: hash tags are valid.
            let ok = found
                .is_some_and(|s| unsafe { tag(s).kind == SegKind::Cached && tag(s).size == size });
            if !ok {
                if result.is_ok() {
                    result = Err(VmemError::BadFree { addr, size });
                }
                continue;
            }
            if !self.depots.push(i, addr) {
                if let Ok(Some(r)) = self.free_seg::<true>(addr, size) {
                    release(r);
                }
            }
        }
        result
    }
}
