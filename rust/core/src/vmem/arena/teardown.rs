// SPDX-License-Identifier: GPL-2.0

//! Teardown: `reap` and `destroy`.

use super::*;

impl<P: TagPageSource> Arena<P> {
    /// Destroys the arena's contents: flushes the caches, and if nothing is allocated any more,
    /// hands every imported span to `release` and returns all pages to the page source (the
    /// arena is then empty and may be reused, without quantum caches). With live segments it returns
    /// [`VmemError::LiveSegments`] and changes nothing else.
    pub fn destroy(&mut self, release: &mut dyn FnMut(SpanRelease)) -> Result<(), VmemError> {
        // Checked before anything changes: segments resting in the quantum caches' depots are
        // allocated in the hash but nobody's; any other allocated segment refuses the destroy,
        // and then the caches stay filled and no span is released (the release function may
        // belong to a client that must not be called, see `Documentation/linux.rst`).
        let (cached, cached_bytes) = (0..self.depots.ncaches).fold((0, 0), |(n, b), i| {
            let len = self.depots.len[i];
            (n + len, b + len * (i + 1) * self.quantum)
        });
        if self.hash.count > cached {
            return Err(VmemError::LiveSegments {
                count: self.hash.count - cached,
                bytes: self.stats.mem_inuse - cached_bytes,
            });
        }
        self.reap(release);
        debug_assert_eq!(self.hash.count, 0);
        let mut cur = self.spans;
        while let Some(s) = cur {
            // SAFETY: span-list tags are valid.
            let st = unsafe { tag(s) };
            if st.kind == SegKind::ImportedSpan {
                release(SpanRelease {
                    base: st.start,
                    size: st.size,
                });
            }
            cur = st.knext;
        }
        self.release_pages();
        Ok(())
    }

    /// Convenience `destroy` that releases imported spans to `src`.
    pub fn destroy_releasing(&mut self, src: &mut impl SpanSource) -> Result<(), VmemError> {
        self.destroy(&mut |r| src.release(r))
    }

    fn release_pages(&mut self) {
        self.hash.release_all(&mut self.pages);
        self.depots.release(&mut self.pages);
        self.tags.release_all(&mut self.pages);
        self.ahead = None;
        self.atail = None;
        self.spans = None;
        self.rotor = None;
        self.rotor_addr = 0;
        self.free = FreeLists::new();
        let keep = Stats {
            mem_inuse: 0,
            mem_import: 0,
            mem_total: 0,
            ..self.stats
        };
        self.stats = keep;
    }
}
