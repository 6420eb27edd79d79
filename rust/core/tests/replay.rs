// SPDX-License-Identifier: GPL-2.0

//! The host replay of a kmalloc trace (`kmreplay`'s engine) on the small fixture
//! `tests/data/kmtrace-fixture.csv`, in both size-class modes: every row accounted for, the
//! measurements consistent with each other, nothing left after reclaim.

use std::io::BufReader;

use kmalloc43_core::hosted::replay::{replay, ReplayConfig};
use kmalloc43_core::hosted::trace_csv::{read_trace, Trace, TraceOp};
use kmalloc43_core::malloc::{SizeClasses, SEGREGATE_ALL};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/kmtrace-fixture.csv"
);

fn fixture() -> Trace {
    read_trace(BufReader::new(std::fs::File::open(FIXTURE).unwrap())).unwrap()
}

#[test]
fn fixture_replays_in_both_modes_and_accounts_for_every_row() {
    let t = fixture();
    let count = |op| t.rows.iter().filter(|r| r.op == op).count() as u64;
    let zero = t
        .rows
        .iter()
        .filter(|r| r.op == TraceOp::Alloc && r.bytes_req == 0)
        .count() as u64;
    for mode in [SizeClasses::Pow2, SizeClasses::Fine] {
        let r = replay(&t, ReplayConfig::new(mode)).unwrap();
        assert_eq!(r.config.classes, mode);
        assert_eq!(r.rows, t.rows.len());
        assert_eq!(r.free_unknown, count(TraceOp::FreeUnknown));
        assert_eq!(r.zero_size, zero);
        assert_eq!(r.allocs, count(TraceOp::Alloc) - zero);
        // Every traced free frees something (the fixture frees all it allocates).
        assert_eq!(r.frees + r.free_not_live, count(TraceOp::Free) - zero);
        assert_eq!(r.free_not_live, 0);
        assert_eq!(r.alloc_over_live, 0);
        // The peak is consistent with itself.
        assert!(r.peak.held() >= r.peak.data && r.peak.data > 0);
        assert!(r.max_data_pages >= r.peak.data);
        let u = r.utilization();
        assert!(u > 0.0 && u <= 1.0, "utilization {u}");
        assert!(r.peak_live_bytes <= r.peak.data * 4096);
        // Counts per class add up to the calls made.
        let bucket_allocs: u64 = r.classes.iter().map(|c| c.allocs).sum();
        assert_eq!(bucket_allocs + r.large_allocs, r.allocs);
        assert_eq!(r.classes.len(), mode.table().count());
        // Everything freed and reclaimed: no data page left.
        assert_eq!(r.after_reclaim.data, 0);
        assert!(r.after_reclaim.held() <= r.after_free.held());
        // The report prints every part.
        let text = r.to_string();
        for want in [
            "peak pages held",
            "utilization at the peak",
            "metadata per MiB",
            "pages left after everything is freed",
            "give-backs per class",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
    }
}

/// `segregate_below` builds the core with type-segregated buckets: the replay still frees
/// everything and gives every page back, the type buckets count as metadata, and segregating
/// never needs fewer data pages than sharing on this fixture.
#[test]
fn segregated_replay_measures_the_real_core() {
    let t = fixture();
    for mode in [SizeClasses::Pow2, SizeClasses::Fine] {
        let plain = replay(&t, ReplayConfig::new(mode)).unwrap();
        assert_eq!(plain.peak.buckets, 0);
        for (threshold, split) in [(256, 1), (SEGREGATE_ALL, 1), (SEGREGATE_ALL, 4)] {
            let cfg = ReplayConfig {
                segregate_below: threshold,
                split_kmalloc: split,
                ..ReplayConfig::new(mode)
            };
            let r = replay(&t, cfg).unwrap();
            assert_eq!((r.allocs, r.frees), (plain.allocs, plain.frees));
            assert!(r.peak.buckets > 0, "type buckets held at the peak");
            assert!(r.max_data_pages >= plain.max_data_pages);
            assert_eq!(r.after_reclaim.data, 0);
            assert!(r.to_string().contains("segregate-below="));
        }
    }
}

/// `magazines` puts the glue's magazine layer (one CPU) in front of the core: the same calls,
/// objects resting in magazines and depots never make the core hold fewer data pages, and once
/// everything is freed and the magazines flushed, reclaim gives every page back.
#[test]
fn magazine_front_replay_holds_the_rounds() {
    let t = fixture();
    for mode in [SizeClasses::Pow2, SizeClasses::Fine] {
        let base = ReplayConfig {
            segregate_below: SEGREGATE_ALL,
            ..ReplayConfig::new(mode)
        };
        let plain = replay(&t, base).unwrap();
        let r = replay(
            &t,
            ReplayConfig {
                magazines: true,
                ..base
            },
        )
        .unwrap();
        assert_eq!((r.allocs, r.frees), (plain.allocs, plain.frees));
        assert!(r.max_data_pages >= plain.max_data_pages);
        assert_eq!(r.after_reclaim.data, 0);
        assert!(r.to_string().contains("magazines=1cpu"));
    }
}

/// The magazine layer's trimming rules (`magazine::trim`), on the front the replay uses: 40 types
/// each take eight 1 KiB objects and free them, then go idle while one type grows to 4,000
/// objects of 64 bytes. With the rules, each type's fills took two pages of pieces (four per
/// fill) and the aging passes that the growing type's fills drive give every idle round back to
/// the buckets; without them each type took four pages (fifteen pieces) and the rounds stay.
#[test]
fn trimming_gives_idle_types_rounds_back() {
    use kmalloc43_core::hosted::malloc_host_pages::host_vmem_kmem;
    use kmalloc43_core::hosted::replay_front::{MagFront, Rules};
    use kmalloc43_core::malloc::{size_class, Malloc, PAGE_SIZE};

    let run = |rules: Rules| {
        let kmem = host_vmem_kmem(PAGE_SIZE << 4, None);
        let mut m = Box::new(Malloc::with_segregation(
            kmem,
            SizeClasses::Fine,
            SEGREGATE_ALL,
        ));
        let types: Vec<_> = (0..41)
            .map(|_| m.define_type("t", "", usize::MAX).unwrap())
            .collect();
        let mut f = MagFront::with_rules(rules);
        let k1 = size_class(m.classes(), 1024).unwrap();
        let mut taken = 0;
        for &ty in &types[1..] {
            let objs: Vec<_> = (0..8)
                .map(|_| f.malloc(&mut m, 1024, ty).unwrap())
                .collect();
            taken = m.memory_stats().data_pages;
            for o in objs {
                f.free(&mut m, o, 1024, ty).unwrap();
            }
        }
        let busy: Vec<_> = (0..4000)
            .map(|_| f.malloc(&mut m, 64, types[0]).unwrap())
            .collect();
        let b = m.bucket_stats(k1).unwrap();
        let held_1k = b.total - b.totalfree;
        let counts = f.trim_counts();
        for o in busy {
            f.free(&mut m, o, 64, types[0]).unwrap();
        }
        f.flush(&mut m);
        m.reclaim();
        assert_eq!(m.memory_stats().data_pages, 0, "every page back");
        (taken, held_1k, counts)
    };
    let (taken, held, counts) = run(Rules::ALL);
    assert_eq!(taken, 40 * 2, "a fill takes a page of 1 KiB pieces");
    assert_eq!(held, 0, "every idle 1 KiB round went back");
    assert!(counts.passes > 0 && counts.aged >= 40 * 8, "{counts:?}");
    let (taken, held, counts) = run(Rules::NONE);
    assert_eq!(
        taken,
        40 * 4,
        "fifteen pieces per fill: four pages per type"
    );
    assert!(
        held >= 40 * 8,
        "{held} 1 KiB pieces rest in magazines and depots"
    );
    assert_eq!(counts.passes, 0);
}
