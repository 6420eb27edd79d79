// SPDX-License-Identifier: GPL-2.0

//! The per-CPU layer of one size class: a *loaded* and a *previous* magazine (Bonwick & Adams
//! 2001, section 3.1), with the paper's allocation and free algorithms.
//!
//! The previous magazine is always either full or empty, so a CPU that alternates allocations
//! and frees around a magazine boundary swaps the two instead of visiting the depot: at least
//! `M` allocations or frees (one magazine's worth) separate two depot visits.
//!
//! Nothing here locks: the caller runs the fast path on the owning CPU with interrupts off (and
//! the CPU's slot lock, see `rust/glue/percpu.rs`), and holds the depot's lock for the `*_depot`
//! calls.

use super::depot::Depot;
use super::mag::MagBox;

/// What [`CpuMagazines::unload_or_install`] did.
pub struct Unloaded {
    /// A magazine nobody needs any more (the caller frees it).
    pub spare: Option<MagBox>,
    /// The depot had an empty magazine: the CPU traded with it (the caller may trim the depot,
    /// as after any depot visit). `false`: a fresh magazine was used, the depot barely visited.
    pub traded: bool,
}

/// The loaded and previous magazines of one CPU for one size class.
#[derive(Default)]
pub struct CpuMagazines {
    loaded: Option<MagBox>,
    previous: Option<MagBox>,
}

impl CpuMagazines {
    /// A CPU with no magazine yet.
    pub const fn new() -> Self {
        Self {
            loaded: None,
            previous: None,
        }
    }

    /// Fast allocation: a round of the loaded magazine, or of the previous one (swapped in) when
    /// the loaded one is empty. `None`: both are empty (or missing), see
    /// [`CpuMagazines::reload_from_depot`].
    #[inline(always)]
    pub fn alloc(&mut self) -> Option<usize> {
        if let Some(r) = self.loaded.as_mut().and_then(|m| m.pop()) {
            return Some(r);
        }
        if self.previous.as_ref().is_some_and(|m| !m.is_empty()) {
            core::mem::swap(&mut self.loaded, &mut self.previous);
            return self.loaded.as_mut().and_then(|m| m.pop());
        }
        None
    }

    /// Fast free: into the loaded magazine, or into the previous one (swapped in) when the loaded
    /// one is full. `Err(round)`: both are full (or missing), see
    /// [`CpuMagazines::unload_to_depot`].
    #[inline(always)]
    pub fn free(&mut self, round: usize) -> Result<(), usize> {
        let round = match self.loaded.as_mut() {
            Some(m) => match m.push(round) {
                Ok(()) => return Ok(()),
                Err(r) => r,
            },
            None => round,
        };
        if self.previous.as_ref().is_some_and(|m| m.is_empty()) {
            core::mem::swap(&mut self.loaded, &mut self.previous);
            if let Some(m) = self.loaded.as_mut() {
                return m.push(round);
            }
        }
        Err(round)
    }

    /// Allocation miss, depot locked: trade the previous magazine (empty) for a full one from the
    /// depot; the loaded (empty) one becomes the previous. Returns whether a round is now ready.
    pub fn reload_from_depot(&mut self, depot: &mut Depot) -> bool {
        let Some(full) = depot.get_full() else {
            return false;
        };
        if let Some(prev) = self.previous.take() {
            depot.put(prev);
        }
        self.previous = self.loaded.replace(full);
        true
    }

    /// Free miss, depot locked: trade the previous magazine (full) for an empty one from the
    /// depot, or `spare` when the depot has none; the loaded (full) one becomes the previous.
    /// Returns `spare` if it was not needed, or `Err(spare)` when there was no empty magazine at
    /// all (`spare` was `None`: the caller allocates one, or frees to the layer below).
    pub fn unload_to_depot(
        &mut self,
        depot: &mut Depot,
        spare: Option<MagBox>,
    ) -> Result<Option<MagBox>, Option<MagBox>> {
        let (empty, spare) = match depot.get_empty() {
            Some(e) => (e, spare),
            None => match spare {
                Some(mut s) => {
                    s.set_cap(depot.magsize());
                    (s, None)
                }
                None => return Err(None),
            },
        };
        if let Some(prev) = self.previous.take() {
            depot.put(prev);
        }
        self.previous = self.loaded.replace(empty);
        Ok(spare)
    }

    /// Free miss, depot locked, for a caller that can make a magazine at once (the host models;
    /// the kernel glue must drop the depot lock to allocate one, which may fail, and keeps its own
    /// steps): [`CpuMagazines::unload_to_depot`], or, when the depot has no empty magazine,
    /// `fresh(magsize)` (a new empty magazine of the depot's size) installed where one is
    /// missing, else traded in as the spare. Afterwards the loaded magazine has room.
    pub fn unload_or_install(
        &mut self,
        depot: &mut Depot,
        fresh: impl FnOnce(usize) -> MagBox,
    ) -> Unloaded {
        match self.unload_to_depot(depot, None) {
            Ok(spare) => Unloaded {
                spare,
                traded: true,
            },
            Err(_) => {
                let m = fresh(depot.magsize());
                let spare = match self.install(m) {
                    Ok(()) => None,
                    // With a spare given the trade cannot fail; an unused one comes back.
                    Err(m) => self.unload_to_depot(depot, Some(m)).unwrap_or_else(|s| s),
                };
                Unloaded {
                    spare,
                    traded: false,
                }
            }
        }
    }

    /// The magazine to fill from the layer below after a miss the depot could not serve: the
    /// loaded one (empty then). `None` if the CPU has no magazine yet: install one with
    /// [`CpuMagazines::install`].
    pub fn loaded_mut(&mut self) -> Option<&mut MagBox> {
        self.loaded.as_mut()
    }

    /// Takes the previous magazine out (a free miss over the class budget, module `trim`: the
    /// caller gives its rounds back to the piece layer and frees it, or keeps it as a spare).
    pub fn take_previous(&mut self) -> Option<MagBox> {
        self.previous.take()
    }

    /// Installs a magazine where one is missing (loaded first, then previous); gives it back if
    /// both are present.
    pub fn install(&mut self, m: MagBox) -> Result<(), MagBox> {
        if self.loaded.is_none() {
            self.loaded = Some(m);
        } else if self.previous.is_none() {
            self.previous = Some(m);
        } else {
            return Err(m);
        }
        Ok(())
    }

    /// Takes both magazines out (flush); the caller empties them into the layer below.
    pub fn take(&mut self) -> [Option<MagBox>; 2] {
        [self.loaded.take(), self.previous.take()]
    }

    /// Whether the CPU holds no magazine at all (not even an empty one).
    pub fn is_empty(&self) -> bool {
        self.loaded.is_none() && self.previous.is_none()
    }

    /// Rounds held by this CPU.
    pub fn rounds(&self) -> usize {
        self.loaded.as_ref().map_or(0, |m| m.len()) + self.previous.as_ref().map_or(0, |m| m.len())
    }

    /// Calls `f` for every round held by this CPU.
    pub fn for_each_round(&self, mut f: impl FnMut(usize)) {
        for m in [&self.loaded, &self.previous].into_iter().flatten() {
            m.rounds().iter().for_each(|&r| f(r));
        }
    }
}
