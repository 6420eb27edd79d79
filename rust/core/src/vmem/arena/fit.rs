// SPDX-License-Identifier: GPL-2.0

//! The fit policies: instant-fit, best-fit and next-fit searches.

use super::*;

impl<P: TagPageSource> Arena<P> {
    /// Finds a free segment and the address in it for request `pl` under `policy`.
    #[inline]
    pub(super) fn find_fit(
        &mut self,
        pl: &Placement,
        policy: Policy,
    ) -> Option<(NonNull<Seg>, usize)> {
        match policy {
            Policy::InstantFit => self.instant_fit(pl),
            Policy::BestFit => self.best_fit(pl),
            Policy::NextFit => self.next_fit(pl),
        }
    }

    /// First segment (in list order) of list `k` that fits `pl`.
    fn first_fit_in_list(&mut self, k: usize, pl: &Placement) -> Option<(NonNull<Seg>, usize)> {
        let mut cur = self.free.heads[k];
        while let Some(p) = cur {
            self.stats.search += 1;
            // SAFETY: freelist tags are valid.
            let s = unsafe { tag(p) };
            if let Some(a) = pl.place(s.start, s.size) {
                return Some((p, a));
            }
            cur = s.knext;
        }
        None
    }

    #[inline]
    fn instant_fit(&mut self, pl: &Placement) -> Option<(NonNull<Seg>, usize)> {
        let g = guaranteed_list(pl.size);
        if pl.is_trivial() {
            // The constant-time path: any segment on list >= g fits, take the head.
            if let Some(k) = self.free.first_nonempty_from(g) {
                let p = self.free.heads[k]?;
                // SAFETY: freelist tags are valid.
                return Some((p, unsafe { tag(p).start }));
            }
        } else {
            let mut k = g;
            while let Some(l) = self.free.first_nonempty_from(k) {
                if let Some(r) = self.first_fit_in_list(l, pl) {
                    return Some(r);
                }
                k = l + 1;
            }
        }
        // Nothing is guaranteed to fit: look at the list holding `size` itself.
        let f = list_of(pl.size);
        if f < g {
            return self.first_fit_in_list(f, pl);
        }
        None
    }

    fn best_fit(&mut self, pl: &Placement) -> Option<(NonNull<Seg>, usize)> {
        let mut k = list_of(pl.size);
        while let Some(l) = self.free.first_nonempty_from(k) {
            // (tag, placed address, segment size, segment start) of the best fit so far.
            let mut best: Option<(NonNull<Seg>, usize, usize, usize)> = None;
            let mut cur = self.free.heads[l];
            while let Some(p) = cur {
                self.stats.search += 1;
                // SAFETY: freelist tags are valid.
                let s = unsafe { tag(p) };
                if let Some(a) = pl.place(s.start, s.size) {
                    let better = match best {
                        None => true,
                        Some((_, _, bsize, bstart)) => {
                            s.size < bsize || (s.size == bsize && s.start < bstart)
                        }
                    };
                    if better {
                        best = Some((p, a, s.size, s.start));
                    }
                    if s.size == pl.size {
                        break; // nothing can fit better than an exact fit
                    }
                }
                cur = s.knext;
            }
            if let Some((p, a, _, _)) = best {
                return Some((p, a));
            }
            k = l + 1;
        }
        None
    }

    /// Next-fit: the first fit at or after the rotor address, wrapping around once.
    ///
    /// `rotor` is a hint: a tag at or before the rotor address (kept valid when tags are
    /// merged away); `rotor_addr` is where the last next-fit allocation ended.
    fn next_fit(&mut self, pl: &Placement) -> Option<(NonNull<Seg>, usize)> {
        let start = self.rotor.or(self.ahead)?;
        let after_rotor = Placement {
            min: pl.min.max(self.rotor_addr),
            trivial: false,
            ..*pl
        };
        let mut cur = start;
        let mut first = true;
        loop {
            // SAFETY: address-list tags are valid.
            let s = unsafe { tag(cur) };
            if s.kind == SegKind::Free {
                self.stats.search += 1;
                let p = if first { &after_rotor } else { pl };
                if let Some(a) = p.place(s.start, s.size) {
                    return Some((cur, a));
                }
            }
            first = false;
            cur = s.anext.or(self.ahead)?;
            if cur == start {
                break;
            }
        }
        // Wrapped around: the part of the starting segment before the rotor.
        // SAFETY: address-list tags are valid.
        let s = unsafe { tag(start) };
        if s.kind == SegKind::Free {
            if let Some(a) = pl.place(s.start, s.size) {
                return Some((start, a));
            }
        }
        None
    }
}
