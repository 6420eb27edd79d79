// SPDX-License-Identifier: GPL-2.0

//! DIAGNOSTIC: poisoning and exact ownership checks, switched on and off at run time.

use super::*;

impl<K: KmemPages> Malloc<K> {
    /// Whether DIAGNOSTIC mode is on.
    pub fn diagnostic(&self) -> bool {
        self.diag.enabled
    }

    /// Switches DIAGNOSTIC mode. Switching on tags existing allocations as "type unknown" and
    /// poisons every free piece; switching off gives the side table back.
    pub fn set_diagnostic(&mut self, on: bool) -> Result<(), MallocError> {
        if on == self.diag.enabled {
            return Ok(());
        }
        if !on {
            self.diag_off();
            return Ok(());
        }
        self.diag.enabled = true;
        let mut ok = true;
        {
            let diag = &mut self.diag;
            let kmem = &mut self.kmem;
            let classes = self.classes;
            self.usage.for_each(|page, u| {
                if !ok {
                    return;
                }
                let tag = LIVE | OWNER_UNKNOWN;
                ok = match u {
                    Usage::Bucket { index, .. } => diag
                        .add_cluster(kmem, page, classes.pieces(index), tag)
                        .is_ok(),
                    Usage::Large { .. } => diag.add_large(kmem, page, tag).is_ok(),
                    _ => true,
                };
            });
        }
        if !ok {
            self.diag_off();
            return Err(MallocError::NoMetadata);
        }
        let mut b = Some(self.first_bucket());
        while let Some(id) = b {
            let i = id.class;
            let size = self.classes.size(i);
            let mut p = self.bucket(id).head;
            while p != 0 {
                let pos = self.classes.position(i, p);
                let (head, k) = (pos.head, pos.index);
                self.diag.set_piece_tag(head, k, OWNER_NONE);
                // SAFETY: `p` is a free piece on the list.
                unsafe {
                    diag::poison(p, size);
                    p = Bucket::next(p);
                }
            }
            b = self.next_bucket(id);
        }
        self.diag_mark_parked();
        Ok(())
    }

    pub(super) fn diag_off(&mut self) {
        let usage = &self.usage;
        self.diag.clear(&mut self.kmem, |page| {
            matches!(usage.get(page), Usage::Bucket { .. })
        });
    }

    /// Whether `p` is a free piece of bucket `b` according to the map and the side table.
    fn is_free_piece(&self, b: BucketId, p: usize) -> bool {
        match self.locate(p) {
            Ok(loc) if loc.class == Class::Bucket(b.class) && loc.owner == b.owner => {
                self.tag_of(&loc) & LIVE == 0
            }
            _ => false,
        }
    }

    /// DIAGNOSTIC: validates the head piece of bucket `b` before it is handed out.
    pub(super) fn diag_check_head(&mut self, b: BucketId) -> Result<(), MallocError> {
        let i = b.class;
        let piece = self.bucket(b).head;
        let size = self.classes.size(i);
        // SAFETY: the list is non-empty.
        let (next, prev) = unsafe { self.bucket(b).head_links() };
        let bad = if prev != 0 {
            Some(W)
        } else if next != 0
            // SAFETY: `next` is read only once it is known to be a free piece of ours.
            && (!self.is_free_piece(b, next) || unsafe { Bucket::prev(next) } != piece)
        {
            Some(0)
        } else {
            // SAFETY: the head is a free piece of ours.
            unsafe { diag::check_poison(piece, size) }
        };
        let Some(offset) = bad else {
            return Ok(());
        };
        let pos = self.classes.position(i, piece);
        let owner = self.diag.piece_tag(pos.head, pos.index) & !LIVE;
        self.rebuild_free_list(b);
        Err(MallocError::ModifiedAfterFree {
            addr: piece,
            offset,
            ty: self.types.handle(owner as usize),
        })
    }

    /// DIAGNOSTIC: rebuilds bucket `b`'s free list (and its poison) from the side table, after a
    /// client scribbled over a free piece.
    fn rebuild_free_list(&mut self, b: BucketId) {
        // Every free piece goes back on the list, parked clusters' included.
        self.forget_parked(b);
        let i = b.class;
        let n = self.classes.pieces(i);
        let size = self.classes.size(i);
        let mut head = 0;
        let diag = &self.diag;
        self.usage.for_each(|page, u| {
            if matches!(u, Usage::Bucket { index, owner, .. } if index == i && owner == b.owner) {
                for k in (0..n).rev() {
                    if diag.piece_tag(page, k) & LIVE == 0 {
                        let p = (page << PAGE_SHIFT) + k * size;
                        // SAFETY: the side table says `p` is a free piece of ours.
                        unsafe {
                            diag::poison(p, size);
                            Bucket::link_at_head(&mut head, p);
                        }
                    }
                }
            }
        });
        self.bucket_mut(b).head = head;
    }
}
