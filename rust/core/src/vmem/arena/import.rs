// SPDX-License-Identifier: GPL-2.0

//! Importing conveniences: the `*_importing` helpers that drive the import seam single-threaded.

use super::*;

impl<P: TagPageSource> Arena<P> {
    /// `alloc`, importing from `src` once if the arena has a source and needs a span.
    pub fn alloc_importing(
        &mut self,
        size: usize,
        flags: Flags,
        src: &mut impl SpanSource,
    ) -> Result<usize, VmemError> {
        match self.alloc(size, flags) {
            Err(VmemError::ImportNeeded(req)) => {
                let base = self.import_from(&req, src)?;
                self.retry_after_import(base, src, |a| a.alloc(size, flags))
            }
            r => r,
        }
    }

    /// `xalloc`, importing from `src` once if the arena has a source and needs a span.
    pub fn xalloc_importing(
        &mut self,
        size: usize,
        c: &Constraints,
        flags: Flags,
        src: &mut impl SpanSource,
    ) -> Result<usize, VmemError> {
        match self.xalloc(size, c, flags) {
            Err(VmemError::ImportNeeded(req)) => {
                let base = self.import_from(&req, src)?;
                self.retry_after_import(base, src, |a| a.xalloc(size, c, flags))
            }
            r => r,
        }
    }

    /// `free`, giving a wholly free imported span back to `src`.
    pub fn free_releasing(
        &mut self,
        addr: usize,
        size: usize,
        src: &mut impl SpanSource,
    ) -> Result<(), VmemError> {
        if let Some(r) = self.free(addr, size)? {
            src.release(r);
        }
        Ok(())
    }

    /// `xfree`, giving a wholly free imported span back to `src`.
    pub fn xfree_releasing(
        &mut self,
        addr: usize,
        size: usize,
        src: &mut impl SpanSource,
    ) -> Result<(), VmemError> {
        if let Some(r) = self.xfree(addr, size)? {
            src.release(r);
        }
        Ok(())
    }

    fn import_from(
        &mut self,
        req: &ImportRequest,
        src: &mut impl SpanSource,
    ) -> Result<usize, VmemError> {
        let mut size = req.size;
        let mut imported = src.import(req);
        if imported.is_err() && req.min_size < req.size {
            // The source cannot give the rounded span: try the smallest one that still does.
            size = req.min_size;
            imported = src.import(&ImportRequest { size, ..*req });
        }
        let base = imported.map_err(|e| {
            self.stats.fail += 1;
            match e {
                VmemError::ImportNeeded(_) => VmemError::NoSpace,
                e => e,
            }
        })?;
        if let Err(e) = self.add_imported(base, size) {
            src.release(SpanRelease { base, size });
            return Err(e);
        }
        Ok(base)
    }

    fn retry_after_import(
        &mut self,
        base: usize,
        src: &mut impl SpanSource,
        op: impl FnOnce(&mut Self) -> Result<usize, VmemError>,
    ) -> Result<usize, VmemError> {
        match op(self) {
            Err(VmemError::ImportNeeded(_)) => {
                // The span did not help after all (the source ignored a constraint): give it back.
                if let Some(r) = self.release_span_if_free(base) {
                    src.release(r);
                }
                self.stats.fail += 1;
                Err(VmemError::NoSpace)
            }
            r => r,
        }
    }

    /// Removes the imported span at `base` if it is wholly free.
    fn release_span_if_free(&mut self, base: usize) -> Option<SpanRelease> {
        let mut cur = self.spans;
        while let Some(s) = cur {
            // SAFETY: span-list tags are valid.
            let st = unsafe { tag(s) };
            if st.start == base {
                let seg = st.anext?;
                // SAFETY: address-list tags are valid.
                if unsafe { tag(seg).kind } != SegKind::Free {
                    return None;
                }
                // SAFETY: `seg` is free: take it off its freelist before checking the span.
                unsafe {
                    self.free.remove(seg);
                    let r = self.take_span_if_whole(seg);
                    if r.is_none() {
                        self.free.insert(seg);
                    }
                    return r;
                }
            }
            cur = st.knext;
        }
        None
    }
}
