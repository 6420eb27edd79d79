// SPDX-License-Identifier: GPL-2.0

//! Deterministic cost probe of a malloc+free pair through the magazine layer's core calls, the
//! *after* counterpart of `pair_cost` (run the same way, under `valgrind --tool=callgrind
//! --toggle-collect='*counted_pairs*'`, by `make bench-cost`).
//!
//! `mag_pair_cost <size> <pairs> [hot|batch]`: one CPU's magazines for the size's class over the
//! malloc core on host pages. The loop makes the core calls that `rust/glue/fastpath.rs` and
//! `rust/glue/magazines.rs` make, in their order: classify ([`size_class`]), the type ledger's
//! credit ([`LocalLedger::try_charge`], `note_class`, `try_uncharge`), the per-CPU magazines
//! ([`CpuMagazines`]), the round mark (`marker`), the double-free test of `free`
//! ([`PageCode::object_of`], [`may_be_free`]), and on a miss the depot
//! ([`Depot`]) and the piece layer ([`Malloc::take_for_magazine`],
//! [`Malloc::return_from_magazine`]). What only the kernel has (interrupts off, the per-CPU
//! slot lock, the page hint in `struct page`, the depot's spinlock) is timed in the guest by
//! `make bench` instead; here the page hint is the class the probe allocated.

use std::hint::black_box;

use kmalloc43_core::hosted::magazines::{boxed_magazine, free_magazine};
use kmalloc43_core::hosted::malloc_host_pages::HostPages;
use kmalloc43_core::magazine::ledger::Credit;
use kmalloc43_core::magazine::{
    ledger, marker, start_magsize, CpuMagazines, Depot, LocalLedger, MAG_ROUNDS,
};
use kmalloc43_core::malloc::{
    class_charge, may_be_free, size_class, Malloc, MallocFlags, MallocType, PageCode, PageHint,
    MAX_CLASSES,
};

/// The round mark's key, kept as the module keeps its per-boot one (here the public key: the
/// cost is the same, one load).
static ROUND_KEY: marker::KeyCell = marker::KeyCell::new();

/// Objects live at once in batch mode (as in the in-guest bench and `pair_cost`).
const BATCH: usize = 256;
/// The bytes of objects a magazine may hold (the first magazine size is the glue's,
/// `start_magsize`).
const MAG_BYTES: usize = 256 * 1024;

/// One CPU's view of one class: what the glue keeps per CPU and per class, and the class's depot.
struct Front {
    malloc: Box<Malloc<HostPages>>,
    ty: MallocType,
    c: usize,
    mags: CpuMagazines,
    depot: Depot,
    ledger: LocalLedger,
    credit: Credit,
}

impl Front {
    fn new(size: usize) -> Self {
        let mut malloc = Box::new(Malloc::new(HostPages::new()));
        let ty = malloc
            .define_type("probe", "magazine pair cost probe", usize::MAX)
            .expect("type");
        let c = size_class(malloc.classes(), size).expect("size has a magazine class");
        let max = (MAG_BYTES / class_charge(malloc.classes(), c)).clamp(1, MAG_ROUNDS);
        let start = start_magsize(class_charge(malloc.classes(), c));
        // Steady state: the CPU holds credit for every object the loop can have live (grants
        // happen under the heap lock, outside the fast path).
        let ledger = LocalLedger {
            key: ledger::key(ty),
            cap: ledger::CREDIT_MAX,
            ..LocalLedger::default()
        };
        let credit = Credit::new();
        assert!(credit.try_give(ledger::CREDIT_MAX / 2, ledger::CREDIT_MAX));
        Self {
            malloc,
            ty,
            c,
            mags: CpuMagazines::new(),
            depot: Depot::new(start.min(max), max),
            ledger,
            credit,
        }
    }

    /// `Heap::malloc`'s magazine path: classify, charge the credit, pop a round.
    #[inline(never)]
    fn malloc(&mut self, size: usize) -> usize {
        let c = size_class(self.malloc.classes(), size).expect("class");
        let charge = class_charge(self.malloc.classes(), c);
        assert!(
            self.ledger
                .try_charge(&self.credit, ledger::key(self.ty), charge),
            "credit"
        );
        let r = match self.mags.alloc() {
            Some(r) => r,
            None => self.reload(c),
        };
        // SAFETY: a round is a free object of ours, at least 16 bytes and aligned.
        unsafe { marker::unmark(r) };
        self.ledger.note_class(c);
        r
    }

    /// Both magazines empty: a full one from the depot, or fill one from the piece layer.
    #[cold]
    #[inline(never)]
    fn reload(&mut self, c: usize) -> usize {
        if !self.mags.reload_from_depot(&mut self.depot) {
            let mut m = match self.depot.get_empty() {
                Some(m) => m,
                None => boxed_magazine(self.depot.magsize()),
            };
            let n = self
                .malloc
                .take_for_magazine(c, self.ty, MallocFlags::NOWAIT, m.fill_room())
                .expect("fill");
            m.commit(n);
            // Installed as the loaded or the previous magazine (full: the next pop swaps), or,
            // with both in place, traded through the depot.
            if let Err(m) = self.mags.install(m) {
                self.depot.put(m);
                assert!(self.mags.reload_from_depot(&mut self.depot));
            }
        }
        self.mags.alloc().expect("a round after reload")
    }

    /// `Heap::free`'s magazine path: class from the page hint, the double-free test, uncharge
    /// into the credit, push the round.
    #[inline(never)]
    fn free(&mut self, addr: usize) {
        let hint = if self.c < MAX_CLASSES {
            PageHint::Bucket {
                class: self.c,
                owner: self.ty.index() as u8 + 1,
            }
        } else {
            PageHint::Large {
                npages: self.c - MAX_CLASSES + 1,
                owner: self.ty.index() as u8 + 1,
            }
        };
        let code = black_box(PageCode::of(hint, 0));
        let c = code
            .object_of(self.malloc.classes(), self.ty.index(), addr)
            .expect("an object of the type's");
        let charge = class_charge(self.malloc.classes(), c);
        // SAFETY: an object of ours the probe allocated, at least 16 bytes and aligned.
        let word0 = unsafe { (addr as *const usize).read() };
        // One load, as the module reads its per-boot key.
        let key = ROUND_KEY.get();
        assert!(!may_be_free(c, addr, word0, key), "double free");
        assert!(self
            .ledger
            .try_uncharge(&self.credit, ledger::key(self.ty), charge, true));
        // SAFETY: as above.
        unsafe { marker::mark(addr, key) };
        if let Err(a) = self.mags.free(addr) {
            self.unload(a);
        }
    }

    /// Both magazines full: an empty one from the depot (or a new one), then push.
    #[cold]
    #[inline(never)]
    fn unload(&mut self, addr: usize) {
        if let Some(s) = self
            .mags
            .unload_or_install(&mut self.depot, boxed_magazine)
            .spare
        {
            free_magazine(s);
        }
        self.mags.free(addr).expect("room after unload");
    }
}

/// The measured loop; callgrind collects inside it only.
#[inline(never)]
fn counted_pairs(f: &mut Front, size: usize, pairs: usize, batch: bool) {
    let mut live: Vec<usize> = Vec::with_capacity(BATCH);
    let mut done = 0;
    while done < pairs {
        let n = if batch { BATCH.min(pairs - done) } else { 1 };
        for _ in 0..n {
            live.push(f.malloc(black_box(size)));
        }
        for p in live.drain(..) {
            f.free(black_box(p));
        }
        done += n;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(64);
    let pairs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let batch = args.get(3).is_some_and(|s| s == "batch");
    let mut f = Front::new(size);
    // Warm-up outside the counted loop: magazines filled, the depot stocked.
    counted_pairs_warm(&mut f, size);
    counted_pairs(&mut f, size, pairs, batch);
    black_box(&f.ledger);
}

/// Two batches before counting, so that the counted loop sees the steady state.
fn counted_pairs_warm(f: &mut Front, size: usize) {
    for _ in 0..2 {
        let live: Vec<usize> = (0..BATCH).map(|_| f.malloc(size)).collect();
        for p in live {
            f.free(p);
        }
    }
}
