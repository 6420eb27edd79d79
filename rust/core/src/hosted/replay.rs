// SPDX-License-Identifier: GPL-2.0

//! Replaying a kmalloc trace ([`trace_csv`](super::trace_csv)) through the malloc core on the
//! host, over the real backend (a vmem kmem arena importing naturally aligned chunks, as the
//! module's), and measuring what it holds.
//!
//! Every `alloc` row is a `malloc(bytes_req)` charged to one malloc type per `cache` value (folded
//! into one `other` type past [`MAX_TYPES`]` - 1` names), every `free` row frees what the
//! matching `alloc` got. Rows the replay cannot apply faithfully are skipped and counted, never
//! guessed at: `free_unknown` rows, zero-byte allocations (Linux's `ZERO_SIZE_PTR`; the core
//! refuses size 0), and `free` rows whose pointer is not live (possible only in a trace with
//! lost events). An `alloc` at an address still live means the trace lost that address's free:
//! the old allocation is freed first, and counted.
//!
//! # What is measured
//!
//! After every row, the pages held: what the kmem arena imported from the page source (data
//! pages of bucket clusters and page runs, page-map pages, DIAGNOSTIC pages, and free *slack*
//! pages inside imported chunks) plus the arena's own boundary-tag and hash pages. The peak is
//! the row where that sum is largest; at the peak the report gives each part, the live requested
//! bytes (utilization = live requested / held) and the metadata (page map, vmem tags and hash,
//! DIAGNOSTIC) per MiB held. At the end: the pages left after everything is freed, then after
//! [`Malloc::reclaim`], and per class the allocations and the clusters given back to kmem.
//!
//! With [`ReplayConfig::segregate_below`] the core is built with type-segregated buckets
//! ([`Malloc::set_segregation`]): what it holds then is measured the same way, the type buckets'
//! metadata pages counted as metadata. [`ReplayConfig::split_kmalloc`] spreads the trace's
//! `kmalloc` rows over that many malloc types, in turn per allocation. With
//! [`ReplayConfig::magazines`] every call goes through the glue's magazine layer first (one CPU,
//! per type and class: [`MagFront`]), so the objects resting in magazines and depots count.

use std::collections::HashMap;
use std::fmt;
use std::ptr::NonNull;

use crate::hosted::malloc_host_pages::{host_vmem_kmem, HostSpanSource};
use crate::hosted::trace_csv::{Trace, TraceOp};
use crate::hosted::vmem::HeapPages;
use crate::malloc::{
    KmemPages, Malloc, MallocError, MallocFlags, MallocType, SizeClasses, VmemKmem, MAX_TYPES,
    PAGE_SIZE, SEGREGATE_ALL,
};

use super::replay_front::{MagFront, Rules, TrimCounts};
use super::trace_csv::TraceRow;

type Kmem = VmemKmem<HeapPages, HostSpanSource>;

/// How to replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayConfig {
    /// The size-class mode.
    pub classes: SizeClasses,
    /// Bytes the kmem arena imports at a time (the module's chunk: 64 KiB by default).
    pub import_bytes: usize,
    /// Replay in DIAGNOSTIC mode (its side table then counts as metadata).
    pub diagnostic: bool,
    /// The core's segregation threshold ([`Malloc::set_segregation`]): classes of pieces smaller
    /// than this many bytes get one bucket per type. 0: off.
    pub segregate_below: usize,
    /// The trace's `kmalloc` rows (one cache name for every plain `kmalloc` caller) are spread
    /// over this many malloc types, in turn per allocation, as a pessimistic stand-in for the
    /// per-caller types a kernel using malloc types would have. 1: `kmalloc` is one type. Each
    /// extra type takes a slot the trace's caches could have had: caches past the room left are
    /// folded into `other`.
    pub split_kmalloc: usize,
    /// Put the kernel glue's magazine layer, one CPU, in front of the core
    /// ([`MagFront`](super::replay_front::MagFront)): objects resting in magazines and depots
    /// then count in the pages held, as in the module.
    pub magazines: bool,
    /// Which of the magazine layer's trimming rules apply with [`ReplayConfig::magazines`]
    /// (all of them, as in the kernel, by default).
    pub magazine_rules: Rules,
}

impl ReplayConfig {
    /// The module's defaults with `classes`.
    pub fn new(classes: SizeClasses) -> Self {
        Self {
            classes,
            import_bytes: PAGE_SIZE << 4,
            diagnostic: false,
            segregate_below: 0,
            split_kmalloc: 1,
            magazines: false,
            magazine_rules: Rules::ALL,
        }
    }
}

/// Pages held, by use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Bucket clusters and page runs.
    pub data: usize,
    /// The page map (usage records and their hash table).
    pub page_map: usize,
    /// The DIAGNOSTIC side table.
    pub diag: usize,
    /// The type-segregated buckets and their tables.
    pub buckets: usize,
    /// The kmem arena's boundary tags.
    pub vmem_tags: usize,
    /// The kmem arena's hash table (and quantum-cache depots, if any).
    pub vmem_hash: usize,
    /// The chunk registry (module `chunks`).
    pub registry: usize,
    /// Free pages inside chunks the kmem arena imported (and inside the 256 KiB chunks that
    /// clusters are carved from).
    pub slack: usize,
}

impl Footprint {
    fn measure(m: &Malloc<Kmem>) -> Self {
        let ms = m.memory_stats();
        let k = m.kmem();
        let imported = k.source().bytes() / PAGE_SIZE;
        let registry = k.meta_pages();
        let used =
            ms.data_pages + ms.bookkeeping_pages + ms.diag_pages + ms.bucket_pages + registry;
        Footprint {
            data: ms.data_pages,
            page_map: ms.bookkeeping_pages,
            diag: ms.diag_pages,
            buckets: ms.bucket_pages,
            vmem_tags: k.arena().tag_pages(),
            vmem_hash: k.arena().pages_held() - k.arena().tag_pages(),
            registry,
            slack: imported.saturating_sub(used),
        }
    }

    /// Every page held.
    pub fn held(&self) -> usize {
        self.data + self.metadata() + self.slack
    }

    /// Metadata pages: page map, vmem tags and hash, chunk registry, DIAGNOSTIC, type buckets.
    pub fn metadata(&self) -> usize {
        self.page_map + self.vmem_tags + self.vmem_hash + self.registry + self.diag + self.buckets
    }
}

/// Allocations and give-backs of one class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassCounts {
    /// Piece size.
    pub size: usize,
    /// Allocations served.
    pub allocs: u64,
    /// Clusters given back to kmem (before the final reclaim).
    pub give_backs: u64,
    /// Idle parked clusters the give-back budget kept (per window).
    pub deferred: u64,
}

impl ClassCounts {
    /// Give-backs per 1,000 allocations (0 for an unused class).
    pub fn per_1000(&self) -> f64 {
        if self.allocs == 0 {
            0.0
        } else {
            self.give_backs as f64 * 1000.0 / self.allocs as f64
        }
    }
}

/// What a replay measured.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayReport {
    /// The configuration replayed.
    pub config: ReplayConfig,
    /// Rows in the trace.
    pub rows: usize,
    /// `malloc` calls made.
    pub allocs: u64,
    /// `free` calls made.
    pub frees: u64,
    /// `free_unknown` rows skipped.
    pub free_unknown: u64,
    /// Zero-byte `alloc` rows skipped (and their frees).
    pub zero_size: u64,
    /// `alloc` rows at an address still live (the old allocation was freed first).
    pub alloc_over_live: u64,
    /// `free` rows at an address not live (skipped).
    pub free_not_live: u64,
    /// Row (seq) of the peak.
    pub peak_row: usize,
    /// Pages held at the peak.
    pub peak: Footprint,
    /// Live requested bytes at the peak.
    pub peak_live_bytes: usize,
    /// Largest number of data pages at any row.
    pub max_data_pages: usize,
    /// Pages held after every live allocation was freed.
    pub after_free: Footprint,
    /// Pages held after every live allocation was freed and then the timed pass ran on the idle
    /// heap (its magazines, then [`Malloc::give_back_idle`]) until it changed nothing more.
    pub after_idle: Footprint,
    /// Timed passes that changed something ([`IDLE_PASSES`] at most).
    pub idle_passes: usize,
    /// Clusters the timed passes gave back to kmem.
    pub idle_give_backs: u64,
    /// Rounds the timed passes gave back from magazines and depots.
    pub idle_rounds: u64,
    /// Pages held after the timed passes, the magazines' flush and [`Malloc::reclaim`].
    pub after_reclaim: Footprint,
    /// Per class.
    pub classes: Vec<ClassCounts>,
    /// Large (page-run) allocations.
    pub large_allocs: u64,
    /// What the magazine layer's trimming rules did (all zero without magazines).
    pub trim: TrimCounts,
}

impl ReplayReport {
    /// Live requested bytes / bytes held, at the peak.
    pub fn utilization(&self) -> f64 {
        self.peak_live_bytes as f64 / (self.peak.held() * PAGE_SIZE).max(1) as f64
    }

    /// Metadata bytes per MiB held, at the peak.
    pub fn metadata_per_mib(&self) -> f64 {
        per_mib(self.peak.metadata(), self.peak.held())
    }

    /// The class with the most give-backs per 1,000 allocations.
    pub fn worst_give_backs(&self) -> Option<ClassCounts> {
        self.classes
            .iter()
            .copied()
            .max_by(|a, b| a.per_1000().total_cmp(&b.per_1000()))
    }
}

/// Why a replay stopped.
#[derive(Debug)]
pub enum ReplayError {
    /// The allocator refused a call it should have served (the host supply is unlimited).
    Malloc {
        /// Row of the call.
        seq: usize,
        /// The error.
        error: MallocError,
    },
    /// Setting up the allocator (DIAGNOSTIC, the types) failed.
    Types(MallocError),
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Malloc { seq, error } => write!(f, "row {seq}: {error:?}"),
            ReplayError::Types(e) => write!(f, "setting up the allocator: {e:?}"),
        }
    }
}

impl std::error::Error for ReplayError {}

/// A live allocation of the replay.
struct Live {
    addr: NonNull<u8>,
    bytes: usize,
    ty: MallocType,
}

/// A malloc type name from a cache name: at most 31 printable characters, no `/` or space.
fn type_name(cache: &str) -> &'static str {
    let name: String = cache
        .chars()
        .take(crate::report::NAME_MAX)
        .map(|c| {
            if c.is_ascii_graphic() && c != '/' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Box::leak(name.into_boxed_str())
}

/// One malloc type per cache name, the names past the table's room folded into `other`, and
/// `split - 1` more types for the `kmalloc` rows.
fn define_types(
    m: &mut Malloc<Kmem>,
    trace: &Trace,
    split: usize,
) -> Result<(Vec<MallocType>, Vec<MallocType>), ReplayError> {
    let room = MAX_TYPES.saturating_sub(split);
    let mut types = Vec::with_capacity(trace.caches.len());
    let mut other = None;
    for (i, cache) in trace.caches.iter().enumerate() {
        let ty = if i < room {
            m.define_type(type_name(cache), "replayed kmem cache", usize::MAX)
        } else if let Some(o) = other {
            Ok(o)
        } else {
            let o = m.define_type("other", "replayed kmem caches (folded)", usize::MAX);
            other = o.as_ref().ok().copied();
            o
        };
        types.push(ty.map_err(ReplayError::Types)?);
    }
    let extra = (1..split)
        .map(|_| m.define_type("kmalloc_split", "replayed kmalloc callers", usize::MAX))
        .collect::<Result<_, _>>()
        .map_err(ReplayError::Types)?;
    Ok((types, extra))
}

/// Timed passes applied after the trace's last free at most ([`ReplayReport::after_idle`]).
pub const IDLE_PASSES: usize = 8;

/// The glue's timed pass (`Documentation/magazines.rst`, "Timed aging") applied to an idle heap,
/// as its periodic work would run it with no call in between: the magazine layer's aging pass
/// ([`MagFront::timed_pass`]), then [`Malloc::give_back_idle`] with the operation count of the
/// previous pass (the first: the count at the last free). Stops once two passes in a row changed
/// nothing, or after [`IDLE_PASSES`]; returns the passes that changed something.
fn idle(m: &mut Malloc<Kmem>, mut front: Option<&mut MagFront>) -> usize {
    let state = |m: &Malloc<Kmem>, front: &Option<&mut MagFront>| {
        (
            Footprint::measure(m),
            front.as_ref().map_or(0, |f| f.rounds()),
        )
    };
    let mut since = m.op_count();
    let (mut useful, mut quiet) = (0, 0);
    for pass in 1..=IDLE_PASSES {
        let before = state(m, &front);
        if let Some(f) = front.as_deref_mut() {
            f.timed_pass(m);
        }
        m.give_back_idle(since);
        since = m.op_count();
        if state(m, &front) == before {
            quiet += 1;
            if quiet == 2 {
                break;
            }
        } else {
            (useful, quiet) = (pass, 0);
        }
    }
    useful
}

/// Replays `trace` with `config` and measures it.
pub fn replay(trace: &Trace, config: ReplayConfig) -> Result<ReplayReport, ReplayError> {
    let kmem = host_vmem_kmem(config.import_bytes, None);
    let mut m = Box::new(Malloc::with_segregation(
        kmem,
        config.classes,
        config.segregate_below,
    ));
    m.set_diagnostic(config.diagnostic)
        .map_err(ReplayError::Types)?;
    let split = config.split_kmalloc.max(1);
    let (types, kmalloc_types) = define_types(&mut m, trace, split)?;
    let mut r = ReplayReport {
        config,
        rows: trace.rows.len(),
        allocs: 0,
        frees: 0,
        free_unknown: 0,
        zero_size: 0,
        alloc_over_live: 0,
        free_not_live: 0,
        peak_row: 0,
        peak: Footprint::default(),
        peak_live_bytes: 0,
        max_data_pages: 0,
        after_free: Footprint::default(),
        after_idle: Footprint::default(),
        idle_passes: 0,
        idle_give_backs: 0,
        idle_rounds: 0,
        after_reclaim: Footprint::default(),
        classes: Vec::new(),
        large_allocs: 0,
        trim: TrimCounts::default(),
    };
    let kmalloc = trace.caches.iter().position(|c| c == "kmalloc");
    let mut kmalloc_calls = 0usize;
    let mut type_of = |cache: u32| {
        if Some(cache as usize) == kmalloc && split > 1 {
            kmalloc_calls += 1;
            match kmalloc_calls % split {
                0 => types[cache as usize],
                k => kmalloc_types[k - 1],
            }
        } else {
            types[cache as usize]
        }
    };
    let mut live: HashMap<u64, Live> = HashMap::new();
    let mut zero: HashMap<u64, ()> = HashMap::new();
    let mut live_bytes = 0usize;
    let mut front = config
        .magazines
        .then(|| MagFront::with_rules(config.magazine_rules));
    let free = |m: &mut Malloc<Kmem>, front: &mut Option<MagFront>, seq: usize, l: Live| {
        match front {
            Some(f) => f.free(m, l.addr, l.bytes, l.ty),
            None => m.free(l.addr, l.ty),
        }
        .map_err(|error| ReplayError::Malloc { seq, error })
    };
    for (seq, row) in trace.rows.iter().enumerate() {
        let TraceRow {
            op,
            ptr,
            bytes_req,
            cache,
            ..
        } = *row;
        match op {
            TraceOp::FreeUnknown => r.free_unknown += 1,
            TraceOp::Alloc if bytes_req == 0 => {
                r.zero_size += 1;
                zero.insert(ptr, ());
            }
            TraceOp::Alloc => {
                if let Some(old) = live.remove(&ptr) {
                    r.alloc_over_live += 1;
                    live_bytes -= old.bytes;
                    free(&mut m, &mut front, seq, old)?;
                    r.frees += 1;
                }
                zero.remove(&ptr);
                let ty = type_of(cache);
                let addr = match front.as_mut() {
                    Some(f) => f.malloc(&mut m, bytes_req, ty),
                    None => m.malloc(bytes_req, ty, MallocFlags::NOWAIT),
                }
                .map_err(|error| ReplayError::Malloc { seq, error })?;
                r.allocs += 1;
                live_bytes += bytes_req;
                live.insert(
                    ptr,
                    Live {
                        addr,
                        bytes: bytes_req,
                        ty,
                    },
                );
            }
            TraceOp::Free => match live.remove(&ptr) {
                Some(l) => {
                    live_bytes -= l.bytes;
                    free(&mut m, &mut front, seq, l)?;
                    r.frees += 1;
                }
                None if zero.remove(&ptr).is_some() => {}
                None => r.free_not_live += 1,
            },
        }
        let now = Footprint::measure(&m);
        r.max_data_pages = r.max_data_pages.max(now.data);
        if now.held() > r.peak.held() {
            r.peak = now;
            r.peak_row = seq;
            r.peak_live_bytes = live_bytes;
        }
    }
    let end = trace.rows.len();
    // In the trace's pointer order, not the hash map's (random per process): the frees' order
    // decides which clusters empty and park, so the give-back counts below are reproducible.
    let mut left: Vec<(u64, Live)> = live.drain().collect();
    left.sort_unstable_by_key(|&(ptr, _)| ptr);
    for (_, l) in left {
        free(&mut m, &mut front, end, l)?;
    }
    r.after_free = Footprint::measure(&m);
    if let Some(f) = front.as_ref() {
        r.trim = f.trim_counts();
    }
    let freed = |m: &Malloc<Kmem>| -> Vec<u64> {
        (0..m.classes().count())
            .map(|i| m.bucket_stats(i).map_or(0, |b| b.freed))
            .collect()
    };
    let before_idle = freed(&m);
    r.idle_passes = idle(&mut m, front.as_mut());
    r.after_idle = Footprint::measure(&m);
    let timed: Vec<u64> = freed(&m)
        .iter()
        .zip(&before_idle)
        .map(|(a, b)| a - b)
        .collect();
    r.idle_give_backs = timed.iter().sum();
    if let Some(f) = front.as_mut() {
        r.idle_rounds = f.trim_counts().aged - r.trim.aged;
        f.flush(&mut m);
    }
    // Give-backs over the replay, not the timed passes' after it nor the final reclaim's.
    let table = m.classes();
    r.classes = (0..table.count())
        .filter_map(|i| Some((i, m.bucket_stats(i)?, m.deferred_give_backs(i)?)))
        .map(|(i, b, deferred)| ClassCounts {
            size: b.size,
            allocs: b.calls,
            give_backs: b.freed - timed.get(i).copied().unwrap_or(0),
            deferred,
        })
        .collect();
    m.reclaim();
    r.after_reclaim = Footprint::measure(&m);
    r.large_allocs = m.large_stats().calls;
    Ok(r)
}

fn pct(x: f64) -> f64 {
    x * 100.0
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.peak;
        let kib = |pages: usize| pages * PAGE_SIZE / 1024;
        write!(f, "classes={}", self.config.classes.name())?;
        if self.config.diagnostic {
            write!(f, " diagnostic=1")?;
        }
        match self.config.segregate_below {
            0 => {}
            SEGREGATE_ALL => write!(f, " segregate-below=all")?,
            t => write!(f, " segregate-below={t}")?,
        }
        if self.config.split_kmalloc > 1 {
            write!(f, " split-kmalloc={}", self.config.split_kmalloc)?;
        }
        if self.config.magazines {
            let r = self.config.magazine_rules;
            write!(f, " magazines=1cpu")?;
            if r != Rules::ALL {
                write!(
                    f,
                    " rules={}",
                    [
                        (r.page_fills, "fill"),
                        (r.class_budget, "budget"),
                        (r.aging, "aging")
                    ]
                    .iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, n)| *n)
                    .collect::<Vec<_>>()
                    .join(",")
                )?;
                if r == Rules::NONE {
                    write!(f, "none")?;
                }
            }
        }
        writeln!(f)?;
        writeln!(
            f,
            "  calls: {} malloc, {} free; skipped: {} free_unknown, {} zero-size, {} free of a dead pointer; {} alloc over a live pointer",
            self.allocs, self.frees, self.free_unknown, self.zero_size, self.free_not_live, self.alloc_over_live
        )?;
        writeln!(
            f,
            "  peak pages held: {} ({} KiB) at row {}: data {}, metadata {} (page map {}, vmem tags {}, vmem hash {}, chunk registry {}, diag {}, type buckets {}), free slack {}",
            p.held(), kib(p.held()), self.peak_row, p.data, p.metadata(), p.page_map, p.vmem_tags, p.vmem_hash, p.registry, p.diag, p.buckets, p.slack
        )?;
        writeln!(f, "  peak data pages (any row): {}", self.max_data_pages)?;
        writeln!(
            f,
            "  utilization at the peak: {:.1} % ({} live requested bytes / {} bytes held)",
            pct(self.utilization()),
            self.peak_live_bytes,
            p.held() * PAGE_SIZE
        )?;
        writeln!(
            f,
            "  metadata per MiB held at the peak: {:.0} B (page map {:.0}, vmem tags {:.0}, vmem hash {:.0}, chunk registry {:.0}, diag {:.0}, type buckets {:.0})",
            self.metadata_per_mib(),
            per_mib(p.page_map, p.held()),
            per_mib(p.vmem_tags, p.held()),
            per_mib(p.vmem_hash, p.held()),
            per_mib(p.registry, p.held()),
            per_mib(p.diag, p.held()),
            per_mib(p.buckets, p.held())
        )?;
        let (a, b) = (&self.after_free, &self.after_reclaim);
        writeln!(
            f,
            "  pages left after everything is freed: {} (data {}, metadata {}, slack {}); after reclaim: {} (data {}, metadata {}, slack {})",
            a.held(), a.data, a.metadata(), a.slack, b.held(), b.data, b.metadata(), b.slack
        )?;
        let i = &self.after_idle;
        writeln!(
            f,
            "  pages left after the timed pass on the idle heap: {} (data {}, metadata {}, slack {}): {} passes, {} rounds and {} clusters given back",
            i.held(), i.data, i.metadata(), i.slack, self.idle_passes, self.idle_rounds, self.idle_give_backs
        )?;
        writeln!(
            f,
            "  cluster give-backs per class (size: allocations, give-backs, per 1,000, deferred by the budget):"
        )?;
        for c in &self.classes {
            if c.allocs > 0 || c.give_backs > 0 {
                writeln!(
                    f,
                    "    {:>5}: {:>9} {:>7} {:>7.2} {:>7}",
                    c.size,
                    c.allocs,
                    c.give_backs,
                    c.per_1000(),
                    c.deferred
                )?;
            }
        }
        writeln!(f, "    large: {:>9} allocations", self.large_allocs)?;
        if self.config.magazines {
            let t = &self.trim;
            writeln!(
                f,
                "  magazine trimming: {} aging passes gave back {} rounds; {} free misses over the class budget gave back {} rounds",
                t.passes, t.aged, t.spills, t.spilled
            )?;
        }
        if let Some(w) = self.worst_give_backs() {
            writeln!(
                f,
                "  worst give-back rate: {:.2} per 1,000 allocations ({} B class)",
                w.per_1000(),
                w.size
            )?;
        }
        Ok(())
    }
}

/// Bytes per MiB of `part` pages in `whole` pages.
fn per_mib(part: usize, whole: usize) -> f64 {
    part as f64 * (1 << 20) as f64 / whole.max(1) as f64
}
