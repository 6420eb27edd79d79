// SPDX-License-Identifier: GPL-2.0

//! The kernel glue's magazine layer, one CPU, in front of the host replay
//! ([`super::replay`]): per (type, class) a loaded and a previous magazine
//! ([`CpuMagazines`]) and a depot ([`Depot`]) sized as the glue sizes them
//! ([`start_magsize`], [`magazine_rounds`]), filled with [`Malloc::take_for_magazine`] (at most
//! [`MAG_START`] rounds per fill), emptied with [`Malloc::return_from_magazine`], trimmed as the
//! glue trims on depot visits ([`Depot::reap`]). It lets the replay measure on the host what the
//! objects resting in magazines and depots cost in pages (`make replay` measures the same in the
//! guest, against a magazines-off run). Not modelled: a second CPU, the type ledgers (the
//! replay's types have no limit), the round marks.

use std::collections::HashMap;
use std::ptr::NonNull;

use crate::hosted::magazines::{boxed_magazine, free_magazine};
use crate::magazine::{start_magsize, CpuMagazines, Depot, MagBox, MAG_ROUNDS};
use crate::malloc::{
    class_charge, magazine_rounds, size_class, KmemPages, Malloc, MallocError, MallocFlags,
    MallocType,
};

/// One (type, class)'s magazines and depot.
struct Row {
    mags: CpuMagazines,
    depot: Depot,
}

/// The simulated magazine layer.
#[derive(Default)]
pub struct MagFront {
    rows: HashMap<(u32, usize), Row>,
}

/// A round as the object pointer the replay keeps (rounds are never 0).
fn obj(a: usize) -> NonNull<u8> {
    NonNull::new(a as *mut u8).expect("a magazine round is never null")
}

/// Gives a magazine's rounds back to the piece layer and frees it.
fn give_back<K: KmemPages>(m: &mut Malloc<K>, c: usize, mut mag: MagBox) {
    // SAFETY: every round is an object of class `c` taken with `take_for_magazine` and freed by
    // the replay (nothing uses it).
    unsafe { m.return_from_magazine(c, mag.take_rounds()) };
    free_magazine(mag);
}

impl MagFront {
    /// An empty layer.
    pub fn new() -> Self {
        Self::default()
    }

    fn row<K: KmemPages>(&mut self, m: &Malloc<K>, ty: MallocType, c: usize) -> &mut Row {
        self.rows.entry((ty.to_raw(), c)).or_insert_with(|| {
            let classes = m.classes();
            let max = magazine_rounds(classes, c, MAG_ROUNDS);
            let start = start_magsize(class_charge(classes, c)).min(max);
            Row {
                mags: CpuMagazines::new(),
                depot: Depot::new(start, max),
            }
        })
    }

    /// An object of `bytes` for `ty`: from the magazines, the depot, or a fill (as the glue's
    /// local path); sizes without a magazine class go to `malloc`.
    pub fn malloc<K: KmemPages>(
        &mut self,
        m: &mut Malloc<K>,
        bytes: usize,
        ty: MallocType,
    ) -> Result<NonNull<u8>, MallocError> {
        let Some(c) = size_class(m.classes(), bytes) else {
            return m.malloc(bytes, ty, MallocFlags::NOWAIT);
        };
        let row = self.row(m, ty, c);
        if let Some(a) = row.mags.alloc() {
            return Ok(obj(a));
        }
        if row.mags.reload_from_depot(&mut row.depot) {
            let reaped = row.depot.reap();
            let a = row.mags.alloc();
            if let Some(r) = reaped {
                give_back(m, c, r);
            }
            if let Some(a) = a {
                return Ok(obj(a));
            }
        }
        let size = row.depot.magsize();
        if row.mags.loaded_mut().is_none() {
            if let Err(spare) = row.mags.install(boxed_magazine(size)) {
                free_magazine(spare);
            }
        }
        let mag = row
            .mags
            .loaded_mut()
            .expect("a loaded magazine was installed");
        if mag.is_empty() {
            mag.set_cap(size);
        }
        let n = m.take_for_magazine(c, ty, MallocFlags::NOWAIT, mag.fill_room())?;
        mag.commit(n);
        Ok(obj(row
            .mags
            .alloc()
            .expect("a fill took at least one object")))
    }

    /// Frees `addr`, an object of `bytes` from [`MagFront::malloc`] for `ty`: into the
    /// magazines, trading a full one with the depot (or a new empty magazine) as the glue does.
    pub fn free<K: KmemPages>(
        &mut self,
        m: &mut Malloc<K>,
        p: NonNull<u8>,
        bytes: usize,
        ty: MallocType,
    ) -> Result<(), MallocError> {
        let Some(c) = size_class(m.classes(), bytes) else {
            return m.free(p, ty);
        };
        let addr = p.as_ptr() as usize;
        let row = self.row(m, ty, c);
        let Err(addr) = row.mags.free(addr) else {
            return Ok(());
        };
        let mut reaped = None;
        let spare = match row.mags.unload_to_depot(&mut row.depot, None) {
            Ok(s) => {
                reaped = row.depot.reap();
                s
            }
            Err(_) => {
                let fresh = boxed_magazine(row.depot.magsize());
                match row.mags.install(fresh) {
                    Ok(()) => None,
                    Err(fresh) => row
                        .mags
                        .unload_to_depot(&mut row.depot, Some(fresh))
                        .unwrap_or_else(|s| s),
                }
            }
        };
        if let Some(s) = spare {
            free_magazine(s);
        }
        let pushed = row.mags.free(addr);
        if let Some(r) = reaped {
            give_back(m, c, r);
        }
        match pushed {
            Ok(()) => Ok(()),
            Err(a) => {
                // SAFETY: `a` is an object of class `c` taken for a magazine, freed by the replay.
                unsafe { m.return_from_magazine(c, &[a]) };
                Ok(())
            }
        }
    }

    /// Rounds held in magazines and depots.
    pub fn rounds(&self) -> usize {
        self.rows
            .values()
            .map(|r| r.mags.rounds() + r.depot.rounds())
            .sum()
    }

    /// Flushes every magazine back to the piece layer (the glue's drain) and frees them.
    pub fn flush<K: KmemPages>(&mut self, m: &mut Malloc<K>) {
        for ((_, c), mut row) in self.rows.drain() {
            for mag in row.mags.take().into_iter().flatten() {
                give_back(m, c, mag);
            }
            while let Some(mag) = row.depot.take_any() {
                give_back(m, c, mag);
            }
        }
    }
}
