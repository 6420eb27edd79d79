// SPDX-License-Identifier: GPL-2.0

//! What one CPU's magazines may keep of a class, over every type that uses it, and how idle
//! magazines go back (`Documentation/magazines.rst`, "Trimming").
//!
//! Magazines are kept per (type, class) (module `row`), so a CPU holds up to two magazines of a
//! class for every type that used the class there, and a depot per (type, class) keeps its own
//! working set. On a trace with many types (`make replay`, 64 types) the objects resting there
//! cost more pages than SLUB's per-cache sheaves, and none of their clusters could go back to
//! kmem. Three rules bound it, none of them on the fast path:
//!
//! * **A fill takes at most a page of objects** ([`fill_rounds`]): a type's first allocation of a
//!   class on a CPU (and every allocation the depot cannot serve) takes at most one page's worth
//!   of pieces from the piece layer, at least one and at most [`MAG_START`]; a magazine grows to
//!   its size through frees. Fifteen 1 KiB pieces would tie up four clusters of a type that may
//!   never need more than one.
//! * **A class budget per CPU, shared by the types** ([`class_budget`], [`over_budget`]): when a
//!   free finds both of its type's magazines full, and this CPU's magazines of the class hold, over
//!   all types, at least the budget while other types hold some of it, the full previous magazine's
//!   rounds go back to the piece layer instead of to the depot. The budget is the class's byte
//!   budget (`malloc::magazine_rounds`: 32 KiB of pieces, 128 KiB of page runs), at least two
//!   magazines of the class: one type alone never meets it, so a single type's batches trade with
//!   the depot as before.
//! * **Aging** ([`AgeClock`], `ClassMagazines::take_idle`): every [`AGE_ROUNDS`] rounds that a
//!   CPU's magazines exchanged with the piece layer (fills, rounds given back), the CPU looks at its
//!   magazines of every type and class: those that served no allocation since the last look give
//!   their rounds back to the piece layer, and the depot of such an idle (type, class) closes an
//!   interval and gives back what stayed out of its working set (Bonwick's working-set trimming,
//!   driven by this clock when the depot itself is idle). Their clusters can then empty and go back
//!   to kmem under the piece layer's own give-back rules.

use super::depot::{Depot, MAG_START};
use crate::malloc::PAGE_SIZE;

/// Rounds exchanged between one CPU's magazines and the piece layer (filled or given back) per
/// aging window.
pub const AGE_ROUNDS: u32 = 512;

/// Bytes of objects one fill takes from the piece layer at most (at least one object).
pub const FILL_BYTES: usize = PAGE_SIZE;

/// Rounds one fill of a magazine takes from the piece layer, for objects of `object_bytes`: a
/// page's worth, at least one, at most [`MAG_START`].
pub const fn fill_rounds(object_bytes: usize) -> usize {
    // No division that could trap (objtool in 7.3 does not know the panic never returns).
    let n = match FILL_BYTES.checked_div(object_bytes) {
        Some(n) => n,
        None => MAG_START,
    };
    if n == 0 {
        1
    } else if n > MAG_START {
        MAG_START
    } else {
        n
    }
}

/// Rounds one CPU's loaded and previous magazines of a class may hold over all types before a
/// free miss gives rounds back to the piece layer: `max_rounds` (the class's byte budget in
/// objects, `malloc::magazine_rounds`, a depot's [`Depot::max_magsize`]), at least two magazines
/// of `magsize` rounds (its [`Depot::magsize`]), what one type holds at most.
pub const fn class_budget(max_rounds: usize, magsize: usize) -> usize {
    let two = 2 * magsize;
    if max_rounds > two {
        max_rounds
    } else {
        two
    }
}

/// Whether a free miss of one type's magazines (holding `row_rounds` rounds of the class, both
/// full) must give its previous magazine's rounds back to the piece layer: this CPU's magazines of
/// the class hold `cpu_rounds` over all types (`row_rounds` included), at least `budget`, and
/// other types hold some of them. A type alone is never over budget.
pub const fn over_budget(cpu_rounds: usize, row_rounds: usize, budget: usize) -> bool {
    cpu_rounds > row_rounds && cpu_rounds >= budget
}

/// [`class_budget`] of the class whose depot is `d` (its byte budget and magazine size).
pub fn depot_budget(d: &Depot) -> usize {
    class_budget(d.max_magsize(), d.magsize())
}

/// One CPU's aging clock: rounds exchanged with the piece layer since the last aging pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgeClock {
    moved: u32,
}

impl AgeClock {
    /// A clock at the start of a window.
    pub const fn new() -> Self {
        Self { moved: 0 }
    }

    /// Counts `rounds` exchanged with the piece layer; `true` once [`AGE_ROUNDS`] were counted
    /// since the last `true` (the caller then runs an aging pass), and the clock starts over.
    pub fn note(&mut self, rounds: usize) -> bool {
        let r = u32::try_from(rounds).unwrap_or(u32::MAX);
        self.moved = self.moved.saturating_add(r);
        if self.moved < AGE_ROUNDS {
            return false;
        }
        self.moved = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_is_a_page_of_objects_within_one_and_mag_start() {
        assert_eq!(fill_rounds(16), MAG_START);
        assert_eq!(fill_rounds(256), MAG_START);
        assert_eq!(fill_rounds(512), 8);
        assert_eq!(fill_rounds(1024), 4);
        assert_eq!(fill_rounds(2048), 2);
        assert_eq!(fill_rounds(4096), 1);
        assert_eq!(fill_rounds(65536), 1);
        assert_eq!(fill_rounds(0), MAG_START);
    }

    #[test]
    fn the_budget_is_at_least_two_magazines_and_a_lone_type_never_meets_it() {
        assert_eq!(class_budget(512, 60), 512);
        assert_eq!(class_budget(16, 15), 30);
        assert!(!over_budget(30, 30, 30), "one type alone");
        assert!(over_budget(31, 30, 30));
        assert!(!over_budget(29, 10, 30));
    }

    #[test]
    fn the_clock_rings_once_per_window() {
        let mut c = AgeClock::new();
        assert!(!c.note(AGE_ROUNDS as usize - 1));
        assert!(c.note(1));
        assert!(!c.note(1));
        assert!(c.note(usize::MAX), "saturates instead of wrapping");
        assert_eq!(c, AgeClock::new());
    }
}
