// SPDX-License-Identifier: GPL-2.0

//! Teardown: `reap` and `destroy`.

use super::*;

impl<P: TagPageSource> Arena<P> {
    /// Destroys the arena's contents: flushes the caches, and if nothing is allocated any more,
    /// hands every imported span to `release` and returns all pages to the page source (the
    /// arena is then empty and may be reused, without quantum caches). With live segments it returns
    /// [`VmemError::LiveSegments`] and changes nothing else.
    pub fn destroy(&mut self, release: &mut dyn FnMut(SpanRelease)) -> Result<(), VmemError> {
        self.reap(release);
        if self.hash.count > 0 {
            return Err(VmemError::LiveSegments {
                count: self.hash.count,
                bytes: self.stats.mem_inuse,
            });
        }
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
