// SPDX-License-Identifier: GPL-2.0

//! `/sys/kernel/debug/kmalloc43/`: the allocator's statistics and knobs (root only: debugfs
//! files are created 0400, writable ones 0600).
//!
//! | file         | content (header line, then one row per item; see `report`)              |
//! |--------------|--------------------------------------------------------------------------|
//! | `types`      | one row per malloc type (4.4BSD `vmstat -m` columns)                     |
//! | `buckets`    | one row per size class, its cluster and the mode; then a `large` row     |
//! | `arenas`     | one row per vmem arena: page arena, kmem arena, client arenas            |
//! | `totals`     | `Name Value` rows: pages taken/given, bookkeeping, errors, shrinker      |
//! | `diagnostic` | `0` or `1`; write `0`/`1` to switch DIAGNOSTIC mode                      |
//! | `drain`      | magazine layer per class (all types), then the interrupt fall-backs' counts; write `drain` or `1` to flush every magazine, `trim` to trim the depots to their working sets |
//! | `limits/<t>` | limit of type `t` in bytes (`0` = none); write a decimal to change it    |
//! | `aging_interval` | seconds between two timed aging passes (`0` = off, at most a day); write a decimal to change it (`crate::aging`) |
//!
//! Reports are formatted under the locks (formatting into the seq_file buffer does not sleep);
//! they contain counters only, never addresses.

use kernel::{
    debugfs::{Dir, File},
    fmt,
    prelude::*,
    sync::{atomic::Relaxed, Arc},
    uaccess::UserSliceReader,
};

use crate::aging::AgingWork;
use crate::arenas::{ArenaList, VmArena};
use crate::exact::BucketRow;
use crate::heap::Heap;
use crate::malloc::{KmemPages, NCLASSES, PAGE_SIZE};
use crate::report::{self, Totals};
use crate::vmem::Arena;

/// Data of the report files.
pub(crate) struct Reports {
    heap: Arc<Heap>,
    arenas: Arc<ArenaList>,
}

fn show_types(r: &Reports, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    writeln!(f, "{}", report::TYPES_HEADER)?;
    r.heap
        .for_each_type(|st, classes| report::write_type_row(f, st, classes))
}

fn show_buckets(r: &Reports, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    writeln!(f, "{}", report::BUCKETS_HEADER)?;
    r.heap.for_each_bucket(|classes, row| match row {
        BucketRow::Class(i, b) => report::write_bucket_row(f, b, classes, i),
        BucketRow::Large(l) => report::write_large_row(f, l, classes.mode()),
    })
}

/// The magazine layer, one row per class, summed over the types' depots: capacity of new
/// magazines (the largest), full and empty magazines in the depots, contended depot locks,
/// resizes and reaped magazines.
fn show_drain(h: &Arc<Heap>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    writeln!(
        f,
        "Class  Size  MagSize  Full  Empty  Contended  Resizes  Reaped"
    )?;
    for c in (0..NCLASSES).filter(|&c| h.front.in_use(c)) {
        let d = h.front.depot_stats(c);
        writeln!(
            f,
            "{:5} {:5} {:8} {:5} {:6} {:10} {:8} {:7}",
            c,
            h.front.charge(c),
            d.magsize,
            d.full,
            d.empty,
            d.contended,
            d.resizes,
            d.reaped
        )?;
    }
    writeln!(
        f,
        "Interrupt fall-backs: malloc {}, free {}",
        h.fallbacks.mallocs.load(Relaxed),
        h.fallbacks.frees.load(Relaxed)
    )?;
    let a = &h.aging;
    writeln!(
        f,
        "Timed aging: passes {}, rounds {}, clusters {}, pages {}",
        a.passes.load(Relaxed),
        a.rounds.load(Relaxed),
        a.clusters.load(Relaxed),
        a.pages.load(Relaxed)
    )
}

fn show_aging_interval(a: &Arc<AgingWork>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    writeln!(f, "{}", a.interval())
}

/// Sets the timed aging interval from written bytes (decimal seconds, `0`: off); `EINVAL`
/// (nothing changed) for anything else or more than
/// [`AGING_MAX_SECS`](crate::aging::AGING_MAX_SECS).
pub(crate) fn store_aging_bytes(a: &AgingWork, bytes: &[u8]) -> Result {
    let secs = report::parse_usize(bytes).map_err(|_| EINVAL)?;
    a.set_interval(u32::try_from(secs).map_err(|_| EINVAL)?)
}

/// Copies a write of at most `N` bytes from user space and hands it to `apply`; a longer write
/// is `EINVAL` (nothing applied).
fn apply_small_write<const N: usize>(
    reader: &mut UserSliceReader,
    apply: impl FnOnce(&[u8]) -> Result,
) -> Result {
    let mut buf = [0u8; N];
    let n = reader.len();
    let dst = buf.get_mut(..n).ok_or(EINVAL)?;
    reader.read_slice(dst)?;
    apply(dst)
}

fn store_aging_interval(a: &Arc<AgingWork>, reader: &mut UserSliceReader) -> Result {
    apply_small_write::<16>(reader, |b| store_aging_bytes(a, b))
}

/// Applies a write to `drain`: `drain` or `1` flushes every magazine (the heap's and the client arenas' quantum caches'), `trim` gives back what the
/// depots' working sets do not need; anything else is `EINVAL`.
pub(crate) fn store_drain_bytes(heap: &Heap, bytes: &[u8]) -> Result {
    let word = core::str::from_utf8(bytes).map_err(|_| EINVAL)?.trim();
    match word {
        "drain" | "1" => {
            heap.drain();
            if let Some(svc) = crate::service::service() {
                svc.arenas.drain();
            }
            Ok(())
        }
        "trim" => {
            heap.trim();
            Ok(())
        }
        _ => Err(EINVAL),
    }
}

fn store_drain(h: &Arc<Heap>, reader: &mut UserSliceReader) -> Result {
    apply_small_write::<8>(reader, |b| store_drain_bytes(h, b))
}

/// One row of `arenas`, the arena shown as `name`.
fn arena_row<P: crate::vmem::TagPageSource>(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    a: &Arena<P>,
) -> fmt::Result {
    report::write_arena_row(f, name, a.quantum(), a.stats(), a.pages_held())
}

fn show_arenas(r: &Reports, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    writeln!(f, "{}", report::ARENAS_HEADER)?;
    r.heap.with(|s| {
        arena_row(f, s.pages().arena().name(), s.pages().arena())?;
        arena_row(f, s.kmem().name(), s.kmem())
    })?;
    let list = r.arenas.list.lock();
    for &p in list.iter() {
        // SAFETY: arenas stay allocated while on the list, which we hold locked.
        let vm = unsafe { &*(p as *const VmArena) };
        let g = vm.inner.lock();
        // A client arena whose owner went is `<name>(orphan)`, as an orphaned type.
        arena_row(f, vm.shown_name_of(&g.arena).as_str(), &g.arena)?;
    }
    Ok(())
}

/// The module's totals.
pub(crate) fn totals(heap: &Heap) -> Totals {
    let c = heap.counters();
    let (mem, arena_bytes, chunk_order, registry, (bad_links, lost_pieces)) = heap.with(|s| {
        (
            s.malloc.memory_stats(),
            s.pages().arena().stats().mem_total,
            s.pages().chunk_order(),
            s.malloc.kmem().meta_pages(),
            s.malloc.link_damage(),
        )
    });
    Totals {
        pages_taken: c.taken(),
        pages_given: c.given(),
        chunk_order,
        data_pages: mem.data_pages,
        bookkeeping_pages: mem.bookkeeping_pages,
        diag_pages: mem.diag_pages,
        // vmem's tags and hashes, and the cluster-chunk registry (the kmem backend's own).
        tag_pages: c.tag_pages() + registry,
        arena_bytes,
        errors: heap.errors(),
        bad_links,
        lost_pieces,
        shrinker_counts: heap.shrink.counts.load(Relaxed),
        shrinker_scans: heap.shrink.scans.load(Relaxed),
        shrinker_pages_freed: heap.shrink.pages.load(Relaxed),
        disowned_spans: crate::arenas::DISOWNED_SPANS.load(Relaxed),
    }
}

fn show_totals(r: &Reports, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    report::write_totals(f, &totals(&r.heap), PAGE_SIZE)
}

fn show_diagnostic(h: &Arc<Heap>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    writeln!(f, "{}", u8::from(h.with(|s| s.malloc.diagnostic())))
}

/// Switches DIAGNOSTIC mode from written bytes (`0`/`1`); `EINVAL` changes nothing.
pub(crate) fn store_diagnostic_bytes(heap: &Heap, bytes: &[u8]) -> Result {
    let on = report::parse_switch(bytes).map_err(|_| EINVAL)?;
    heap.set_diagnostic(on).map_err(|_| ENOMEM)
}

fn store_diagnostic(h: &Arc<Heap>, reader: &mut UserSliceReader) -> Result {
    apply_small_write::<8>(reader, |b| store_diagnostic_bytes(h, b))
}

/// The debugfs files (removed when dropped).
pub(crate) struct Debugfs {
    _types: Pin<KBox<File<Reports>>>,
    _buckets: Pin<KBox<File<Reports>>>,
    _arenas: Pin<KBox<File<Reports>>>,
    _totals: Pin<KBox<File<Reports>>>,
    _diagnostic: Pin<KBox<File<Arc<Heap>>>>,
    _drain: Pin<KBox<File<Arc<Heap>>>>,
    _aging: Pin<KBox<File<Arc<AgingWork>>>>,
}

impl Debugfs {
    /// Creates the report files in `dir`, and the knob of `aging`'s interval.
    pub(crate) fn new(
        dir: &Dir,
        heap: &Arc<Heap>,
        arenas: &Arc<ArenaList>,
        aging: &Arc<AgingWork>,
    ) -> Result<Self> {
        let data = || Reports {
            heap: heap.clone(),
            arenas: arenas.clone(),
        };
        Ok(Self {
            _types: KBox::pin_init(
                dir.read_callback_file(c"types", data(), &show_types),
                GFP_KERNEL,
            )?,
            _buckets: KBox::pin_init(
                dir.read_callback_file(c"buckets", data(), &show_buckets),
                GFP_KERNEL,
            )?,
            _arenas: KBox::pin_init(
                dir.read_callback_file(c"arenas", data(), &show_arenas),
                GFP_KERNEL,
            )?,
            _totals: KBox::pin_init(
                dir.read_callback_file(c"totals", data(), &show_totals),
                GFP_KERNEL,
            )?,
            _diagnostic: KBox::pin_init(
                dir.read_write_callback_file(
                    c"diagnostic",
                    heap.clone(),
                    &show_diagnostic,
                    &store_diagnostic,
                ),
                GFP_KERNEL,
            )?,
            _drain: KBox::pin_init(
                dir.read_write_callback_file(c"drain", heap.clone(), &show_drain, &store_drain),
                GFP_KERNEL,
            )?,
            _aging: KBox::pin_init(
                dir.read_write_callback_file(
                    c"aging_interval",
                    aging.clone(),
                    &show_aging_interval,
                    &store_aging_interval,
                ),
                GFP_KERNEL,
            )?,
        })
    }
}
