// SPDX-License-Identifier: GPL-2.0

//! Unit tests of the per-CPU magazine pair and the depot (Bonwick & Adams 2001, section 3).

use kmalloc43_core::hosted::magazines::{boxed_magazine, free_magazine};
use kmalloc43_core::magazine::marker::RoundKey;
use kmalloc43_core::magazine::{ClassMagazines, CpuMagazines, Depot, INTERVAL_OPS};
use kmalloc43_core::malloc::{may_be_free, MAX_CLASSES};

fn full(cap: usize, first: usize) -> kmalloc43_core::magazine::MagBox {
    let mut m = boxed_magazine(cap);
    for r in 0..cap {
        m.push(first + r * 16).unwrap();
    }
    m
}

fn empty_all(cpu: &mut CpuMagazines, depot: &mut Depot) {
    for mut m in cpu.take().into_iter().flatten() {
        m.take_rounds();
        free_magazine(m);
    }
    while let Some(mut m) = depot.take_any() {
        m.take_rounds();
        free_magazine(m);
    }
}

#[test]
fn alloc_swaps_in_a_full_previous_before_visiting_the_depot() {
    let mut cpu = CpuMagazines::new();
    let mut depot = Depot::new(2, 2);
    assert_eq!(cpu.alloc(), None, "no magazine yet");
    assert!(cpu.install(full(2, 0x100)).is_ok());
    assert!(cpu.install(full(2, 0x200)).is_ok());
    assert_eq!(cpu.rounds(), 4);
    // Four allocations: the loaded magazine, then the previous one swapped in.
    let got: Vec<usize> = (0..4).map(|_| cpu.alloc().unwrap()).collect();
    assert_eq!(got, [0x110, 0x100, 0x210, 0x200]);
    assert_eq!(cpu.alloc(), None);
    // The depot's full magazine replaces them; the empty previous goes to the depot.
    depot.put(full(2, 0x300));
    assert!(cpu.reload_from_depot(&mut depot));
    assert_eq!(cpu.alloc(), Some(0x310));
    assert_eq!(depot.stats().empty, 1);
    assert_eq!(depot.stats().full, 0);
    empty_all(&mut cpu, &mut depot);
}

#[test]
fn free_swaps_in_an_empty_previous_then_trades_a_full_one() {
    let mut cpu = CpuMagazines::new();
    let mut depot = Depot::new(2, 2);
    assert_eq!(cpu.free(0x10), Err(0x10), "no magazine yet");
    assert!(cpu.install(boxed_magazine(2)).is_ok());
    assert!(cpu.install(boxed_magazine(2)).is_ok());
    for r in [0x10, 0x20, 0x30, 0x40] {
        cpu.free(r).unwrap();
    }
    assert_eq!(cpu.free(0x50), Err(0x50), "both full");
    // No empty in the depot and no spare: the caller must supply one.
    assert!(matches!(cpu.unload_to_depot(&mut depot, None), Err(None)));
    let spare = cpu
        .unload_to_depot(&mut depot, Some(boxed_magazine(1)))
        .unwrap();
    assert!(spare.is_none(), "the spare was used");
    assert_eq!(depot.stats().full, 1, "the full previous went to the depot");
    cpu.free(0x50).unwrap();
    assert_eq!(cpu.rounds(), 3);
    empty_all(&mut cpu, &mut depot);
}

#[test]
fn depot_hands_out_empties_at_the_current_size() {
    let mut depot = Depot::new(2, 8);
    depot.put(boxed_magazine(2));
    for _ in 0..=kmalloc43_core::magazine::CONTENTION_LIMIT {
        depot.note_contention();
    }
    assert!(depot.update());
    let m = depot.get_empty().unwrap();
    assert_eq!(m.cap(), 3, "an empty magazine takes the grown size");
    free_magazine(m);
    assert_eq!(depot.stats().resizes, 1);
}

#[test]
fn depot_closes_intervals_by_itself_and_reaps_only_unused_magazines() {
    let mut depot = Depot::new(4, 4);
    for i in 0..3 {
        depot.put(full(4, 0x1000 * (i + 1)));
    }
    // Busy interval: one magazine goes out and back again and again; two stay put.
    for _ in 0..INTERVAL_OPS {
        let m = depot.get_full().unwrap();
        depot.put(m);
    }
    // The interval closed on its own (op count); the minimum was 2 full magazines.
    let mut reaped = Vec::new();
    while let Some(m) = depot.reap() {
        reaped.push(m);
    }
    assert_eq!(reaped.len(), 2, "only the two idle magazines are reaped");
    assert_eq!(depot.stats().full, 1, "the working set stays");
    for mut m in reaped {
        assert_eq!(m.take_rounds().len(), 4);
        free_magazine(m);
    }
    while let Some(mut m) = depot.take_any() {
        m.take_rounds();
        free_magazine(m);
    }
}

#[test]
fn a_row_counts_its_own_allocations_per_class_and_holds_only_its_rounds() {
    let mut row = ClassMagazines::<4>::new();
    assert!(row.is_empty());
    assert_eq!(row.alloc(1), None, "no magazine yet");
    assert_eq!(row.calls(1), 0, "a miss is not a request");
    assert!(row.class(1).install(full(2, 0x100)).is_ok());
    assert!(!row.is_empty());
    assert_eq!(row.rounds(1), 2);
    assert_eq!(row.rounds(2), 0);
    assert!(row.holds(1, 0x110));
    assert!(!row.holds(2, 0x110), "another class of the row");
    assert!(!row.holds(1, 0x120));
    assert_eq!(row.alloc(1), Some(0x110));
    assert!(!row.holds(1, 0x110), "handed out");
    assert_eq!(row.alloc(2), None);
    row.count(3);
    assert_eq!((row.calls(1), row.calls(2), row.calls(3)), (1, 0, 1));
    assert_eq!(row.take_calls(1), 1);
    assert_eq!(row.calls(1), 0);
    assert_eq!(row.take_calls(3), 1);
    let mut taken = 0;
    for mut m in row.take(1).into_iter().flatten() {
        taken += m.take_rounds().len();
        free_magazine(m);
    }
    assert_eq!(taken, 1);
    assert!(row.is_empty(), "flushed and counted out");
}

#[test]
fn a_depot_is_small_enough_for_a_types_depots_to_fit_in_8_kib() {
    // The kernel keeps one depot per (type, class) under a 4-byte spinlock (without lockdep):
    // 64 classes of `8 + size_of::<Depot>()` bytes, plus the `Arc` header, within kmalloc-8k.
    assert!(64 * (8 + core::mem::size_of::<Depot>()) + 8 <= 8192);
}

#[test]
fn first_magazines_are_slubs_sheaves_below_256_bytes_whole_ones_to_a_page_never_below_the_floor() {
    use kmalloc43_core::magazine::{start_magsize, MAG_ROUNDS, MAG_START};
    // SLUB's calculate_sheaf_capacity() tiers (Linux 7.3), each rounded up to fill its sheaf,
    // but for 256 B to below a page: a whole magazine there (SLUB's 28 made 9 depot exchanges
    // each way per batch of 256, and 15 at 1-2 KiB made 17; the byte budget clamps it to 36-62
    // rounds below 1 KiB, 18-62 from 1 KiB).
    for (bytes, rounds) in [
        (16, 60),
        (64, 60),
        (255, 60),
        (256, MAG_ROUNDS),
        (1023, MAG_ROUNDS),
        (1024, MAG_ROUNDS),
        (4095, MAG_ROUNDS),
        (4096, MAG_START),
        (65536, MAG_START),
    ] {
        assert_eq!(start_magsize(bytes), rounds, "{bytes} bytes");
    }
    // Never more than a magazine holds.
    assert!(start_magsize(1) <= kmalloc43_core::magazine::MAG_ROUNDS);
}

/// The largest magazine of a class holds its byte budget in objects: 32 KiB of pieces below 1 KiB
/// and from a page (at most a magazine's 62 rounds), 64 KiB from 1 KiB to below a page (62 rounds
/// of 1 KiB, 32 of 2 KiB), 128 KiB of page runs; with `start_magsize`'s tiers the first
/// magazines from 256 B to below a page are that large.
#[test]
fn pieces_of_1_kib_and_up_get_magazines_of_64_kib() {
    use kmalloc43_core::magazine::{start_magsize, MAG_ROUNDS};
    use kmalloc43_core::malloc::{
        class_charge, magazine_rounds, size_class, SizeClasses, MAG_BYTES_BIG_PIECES,
        MAG_BYTES_PIECES,
    };
    for mode in [SizeClasses::Pow2, SizeClasses::Fine] {
        let t = mode.table();
        // (request, largest magazine, first magazine as the glue sizes it: start clamped)
        for (bytes, max, first) in [
            (64, MAG_ROUNDS, 60),
            (512, MAG_ROUNDS, MAG_ROUNDS),
            (1024, MAG_ROUNDS, MAG_ROUNDS),
            (2048, 32, 32),
            (4096, 8, 8),
            (8192, 4, 4),
            (65536, 2, 2),
        ] {
            let c = size_class(t, bytes).expect("a magazine class");
            assert_eq!(class_charge(t, c), bytes, "{mode:?} {bytes}");
            let rounds = magazine_rounds(t, c, MAG_ROUNDS);
            assert_eq!(rounds, max, "{mode:?} {bytes} bytes: largest");
            assert_eq!(
                start_magsize(bytes).min(rounds),
                first,
                "{mode:?} {bytes} bytes"
            );
        }
    }
    let fine = SizeClasses::Fine.table();
    let c = size_class(fine, 800).expect("a class");
    assert!(
        class_charge(fine, c) < 1024,
        "the class below 1 KiB keeps 32 KiB"
    );
    assert_eq!(
        magazine_rounds(fine, c, MAG_ROUNDS),
        MAG_BYTES_PIECES / class_charge(fine, c)
    );
    let c = size_class(fine, 3584).expect("a class");
    assert_eq!(
        magazine_rounds(fine, c, MAG_ROUNDS),
        MAG_BYTES_BIG_PIECES / 3584
    );
}

/// `free`'s one-load test under several round keys: the mark under the heap's key is suspect (a
/// round: a double free), the mark under any other key is not, and neither are zero, the piece's
/// own address or other aligned pointers (a mark never looks like a free-list link either: the
/// two keys' low nibbles differ), for a bucket class and a page-run class.
#[test]
fn only_the_mark_under_the_heap_s_key_is_a_round() {
    let keys = [
        RoundKey::PUBLIC,
        RoundKey::from_random(0),
        RoundKey::from_random(u64::MAX),
        RoundKey::from_random(0x0123_4567_89ab_cdef),
    ];
    let addr = 0x1_0000_2040usize;
    for c in [0, 5, MAX_CLASSES, MAX_CLASSES + 3] {
        for k in keys {
            assert!(may_be_free(c, addr, k.mark_of(addr), k));
            for other in keys.into_iter().filter(|&o| o != k) {
                assert!(!may_be_free(c, addr, k.mark_of(addr), other));
            }
            for plain in [0, addr, addr + 16, 0x1000, usize::MAX & !0xf] {
                assert!(!may_be_free(c, addr, plain, k), "{plain:#x} under {k:?}");
            }
        }
    }
}

/// Aging (`magazine::trim`): a pass looks at the classes a slow path marked, takes the
/// magazines of one that served nothing since the last look, keeps a class in use, and forgets
/// a class once it holds nothing and its depot is empty.
#[test]
fn aging_looks_at_marked_classes_and_takes_idle_magazines() {
    let mut row = ClassMagazines::<8>::new();
    assert_eq!(row.active_classes().count(), 0);
    row.activate(3);
    assert!(row.class(3).install(full(4, 0x1000)).is_ok());
    row.activate(5);
    assert!(row.class(5).install(boxed_magazine(4)).is_ok());
    assert_eq!(row.alloc(5), None);
    assert_eq!(row.class(5).free(0x2000), Ok(()));
    assert_eq!(row.alloc(5), Some(0x2000));
    assert_eq!(row.active_classes().collect::<Vec<_>>(), [3, 5]);
    // Class 3 served nothing: its magazine comes out, its depot is to be visited.
    let idle = row.take_idle(3);
    assert_eq!(idle.calls, 0);
    assert!(idle.visit_depot);
    let mut mags = idle.mags.expect("idle");
    let mut m = mags[0].take().expect("the loaded magazine");
    assert_eq!(m.take_rounds().len(), 4);
    free_magazine(m);
    // Class 5 served one: its request is taken, its magazine stays.
    let used = row.take_idle(5);
    assert_eq!(used.calls, 1);
    assert!(used.mags.is_none());
    // The depot still held magazines: class 3 stays marked until a visit finds it empty.
    row.depot_aged(3, true);
    assert_eq!(row.active_classes().collect::<Vec<_>>(), [3, 5]);
    assert!(row.take_idle(3).visit_depot);
    row.depot_aged(3, false);
    assert_eq!(row.active_classes().collect::<Vec<_>>(), [5]);
    // A fill's folded requests count as use at the next look.
    assert_eq!(row.take_calls(5), 0);
    assert!(row.take_idle(5).mags.is_none());
    let idle = row.take_idle(5);
    assert!(
        idle.visit_depot,
        "it had a magazine: its depot may hold more"
    );
    for m in idle.mags.expect("idle now").into_iter().flatten() {
        free_magazine(m);
    }
    row.depot_aged(5, false);
    assert_eq!(row.active_classes().count(), 0, "nothing left to age");
    assert!(row.is_empty());
}

#[test]
fn a_free_miss_unloads_to_the_depot_else_installs_a_fresh_magazine_else_trades_it_in() {
    let mut depot = Depot::new(2, 2);
    let mut made = 0;
    let mut fresh = |cap: usize| {
        made += 1;
        boxed_magazine(cap)
    };
    // No magazine at all and an empty depot: a fresh one is installed, no trade.
    let mut first = CpuMagazines::new();
    let u = first.unload_or_install(&mut depot, &mut fresh);
    assert!(!u.traded && u.spare.is_none());
    assert!(first.free(0x100).is_ok());
    // Both full, the depot without an empty one: the fresh one is traded in as the spare, the
    // full previous one goes to the depot.
    let mut cpu = CpuMagazines::new();
    assert!(cpu.install(full(2, 0x200)).is_ok());
    assert!(cpu.install(full(2, 0x300)).is_ok());
    let u = cpu.unload_or_install(&mut depot, &mut fresh);
    assert!(!u.traded && u.spare.is_none());
    assert!(cpu.free(0x400).is_ok());
    assert_eq!(depot.stats().full, 1);
    // An empty magazine in the depot: traded for, nothing made.
    depot.put(boxed_magazine(2));
    assert!(cpu.free(0x410).is_ok());
    assert_eq!(cpu.free(0x420), Err(0x420));
    let u = cpu.unload_or_install(&mut depot, &mut fresh);
    assert!(u.traded && u.spare.is_none());
    assert!(cpu.free(0x420).is_ok());
    assert_eq!(made, 2);
    for c in [&mut first, &mut cpu] {
        empty_all(c, &mut depot);
    }
}
