// SPDX-License-Identifier: GPL-2.0

//! A cluster-occupancy model of type-segregated small classes, run beside a trace replay
//! ([`replay`](super::replay)) to estimate what segregation would cost in memory held.
//!
//! Exact wrong-type detection without DIAGNOSTIC needs each live piece's type. The design
//! `Documentation/malloc.rst` proposes gives every cluster of a class below a threshold to one
//! malloc type (its type recorded with the cluster, so free checks it with one compare), and a
//! tag byte per piece only from the threshold up. The core does not build it; this model
//! measures its price on real traffic before it is built.
//!
//! # The model
//!
//! Two cluster pools are simulated side by side on the same rows, both with the core's class
//! table (piece size, pieces per cluster, cluster pages):
//!
//! * *shared*: one pool per class (what the core does);
//! * *segregated*: one pool per (type, class) for the classes below the threshold, one per class
//!   from the threshold up.
//!
//! A pool hands out pieces last-freed-first from its free list (the core's bucket list is LIFO),
//! carves a new cluster when the list is empty, and gives a cluster back as soon as all its
//! pieces are free. The core parks wholly free clusters and gives them back under an aging
//! budget, so the model holds fewer idle clusters than the core in both pools alike: it
//! measures the *difference* segregation makes (partly used clusters per type), which the
//! replay adds to the pages the real core held at each row. Large (page-run) allocations are
//! not modelled (segregation does not touch them).

use std::collections::HashMap;

use crate::malloc::ClassTable;

/// One simulated cluster.
struct Cluster {
    /// Pieces handed out and not freed.
    used: usize,
    /// Given back (its stale entries in the free list are skipped).
    gone: bool,
}

/// The clusters of one pool (one class, or one (type, class)).
#[derive(Default)]
struct Pool {
    /// The cluster of every free piece, last freed on top.
    free: Vec<usize>,
}

/// Where a modelled allocation lives.
#[derive(Clone, Copy)]
struct Placement {
    class: usize,
    pool: (usize, usize),
    cluster: usize,
}

/// One cluster-occupancy simulation (shared or segregated).
struct Occupancy {
    /// Types are kept apart in classes `< below` (as an index in the class table).
    below: usize,
    pools: HashMap<(usize, usize), Pool>,
    clusters: Vec<Cluster>,
    /// Clusters held per class.
    held: Vec<usize>,
    /// Data pages held (all classes).
    pages: usize,
}

impl Occupancy {
    fn new(classes: usize, below: usize) -> Self {
        Self {
            below,
            pools: HashMap::new(),
            clusters: Vec::new(),
            held: vec![0; classes],
            pages: 0,
        }
    }

    fn alloc(&mut self, table: &ClassTable, class: usize, ty: usize) -> Placement {
        let key = (if class < self.below { ty } else { usize::MAX }, class);
        let pool = self.pools.entry(key).or_default();
        loop {
            if let Some(c) = pool.free.pop() {
                if self.clusters[c].gone {
                    continue;
                }
                self.clusters[c].used += 1;
                return Placement {
                    class,
                    pool: key,
                    cluster: c,
                };
            }
            let c = self.clusters.len();
            self.clusters.push(Cluster {
                used: 0,
                gone: false,
            });
            pool.free
                .extend(std::iter::repeat_n(c, table.pieces(class)));
            self.held[class] += 1;
            self.pages += table.cluster_pages(class);
        }
    }

    fn free(&mut self, table: &ClassTable, at: Placement) {
        let c = &mut self.clusters[at.cluster];
        c.used -= 1;
        if c.used == 0 {
            c.gone = true;
            self.held[at.class] -= 1;
            // Its entries in the free list are skipped when they come up (ids are not reused).
            self.pages -= table.cluster_pages(at.class);
        } else if let Some(pool) = self.pools.get_mut(&at.pool) {
            pool.free.push(at.cluster);
        }
    }
}

/// A modelled live allocation: where it sits in each simulation.
#[derive(Clone, Copy)]
pub struct ModelPiece {
    shared: Placement,
    segregated: Placement,
}

/// The model: a shared and a segregated simulation fed the same calls.
pub struct SegregationModel {
    table: &'static ClassTable,
    /// Threshold in bytes: classes of pieces smaller than this are segregated by type.
    pub threshold: usize,
    shared: Occupancy,
    segregated: Occupancy,
}

impl SegregationModel {
    /// A model over `table`, segregating the classes whose piece size is below `threshold`.
    pub fn new(table: &'static ClassTable, threshold: usize) -> Self {
        let below = (0..table.count())
            .take_while(|&i| table.size(i) < threshold)
            .count();
        Self {
            table,
            threshold,
            // The shared simulation segregates no class.
            shared: Occupancy::new(table.count(), 0),
            segregated: Occupancy::new(table.count(), below),
        }
    }

    /// Models `malloc(bytes)` of type `ty`; `None` for a large (page-run) request.
    pub fn alloc(&mut self, bytes: usize, ty: usize) -> Option<ModelPiece> {
        let class = self.table.index(bytes)?;
        Some(ModelPiece {
            shared: self.shared.alloc(self.table, class, ty),
            segregated: self.segregated.alloc(self.table, class, ty),
        })
    }

    /// Models the free of `piece`.
    pub fn free(&mut self, piece: ModelPiece) {
        self.shared.free(self.table, piece.shared);
        self.segregated.free(self.table, piece.segregated);
    }

    /// Data pages segregation adds now (negative if it saves some).
    pub fn extra_pages(&self) -> isize {
        self.segregated.pages as isize - self.shared.pages as isize
    }

    /// Data pages of the shared simulation (to compare with the real core's).
    pub fn shared_pages(&self) -> usize {
        self.shared.pages
    }

    /// Bytes a tag byte per piece slot of every held cluster from the threshold up would take
    /// now (the clusters are the same in both simulations there).
    pub fn tag_bytes_above(&self) -> usize {
        (self.segregated.below..self.table.count())
            .map(|i| self.segregated.held[i] * self.table.pieces(i))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::malloc::SizeClasses;

    #[test]
    fn two_types_never_share_a_small_cluster() {
        let table = SizeClasses::Fine.table();
        let mut m = SegregationModel::new(table, 256);
        let a = m.alloc(64, 1).unwrap();
        let b = m.alloc(64, 2).unwrap();
        assert_ne!(a.segregated.cluster, b.segregated.cluster);
        assert_eq!(a.shared.cluster, b.shared.cluster);
        let pages = table.cluster_pages(table.index(64).unwrap()) as isize;
        assert_eq!(m.extra_pages(), pages);
        m.free(a);
        m.free(b);
        assert_eq!(m.extra_pages(), 0);
        assert_eq!(m.shared_pages(), 0);
    }

    #[test]
    fn classes_from_the_threshold_up_are_shared() {
        let table = SizeClasses::Fine.table();
        let mut m = SegregationModel::new(table, 256);
        let a = m.alloc(512, 1).unwrap();
        let b = m.alloc(512, 2).unwrap();
        assert_eq!(a.segregated.cluster, b.segregated.cluster);
        assert_eq!(m.extra_pages(), 0);
        let i = table.index(512).unwrap();
        assert_eq!(m.tag_bytes_above(), table.pieces(i));
        assert!(m.alloc(1 << 20, 1).is_none());
    }

    #[test]
    fn a_freed_piece_is_reused_before_a_new_cluster() {
        let table = SizeClasses::Pow2.table();
        let mut m = SegregationModel::new(table, 128);
        let i = table.index(32).unwrap();
        let first: Vec<_> = (0..table.pieces(i))
            .map(|_| m.alloc(32, 3).unwrap())
            .collect();
        let one = table.cluster_pages(i);
        assert_eq!(m.shared_pages(), one);
        m.free(first[5]);
        let again = m.alloc(32, 3).unwrap();
        assert_eq!(m.shared_pages(), one);
        assert_eq!(again.segregated.cluster, first[0].segregated.cluster);
    }
}
