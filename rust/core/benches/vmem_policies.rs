// SPDX-License-Identifier: GPL-2.0
//! Cost of an xalloc+xfree pair in a fragmented arena, per fit policy, against a genalloc-style
//! bitmap first-fit and the `vmem` crate, at 100, 10,000 and 100,000 fragments.
//!
//! The mix: the arena holds N free holes of 1..=3 quanta, each followed by a one-quantum
//! allocated separator, and then a large free tail. Every pair asks for 4 quanta, which only
//! the tail can hold: the classic case where a search allocator (first-fit over a bitmap, like
//! Linux genalloc) walks all the fragmentation and vmem's freelists do not.
//!
//! Two more subjects time the quantum-cache path on the same arena (an `alloc`+`free` pair of the
//! same 4 quanta, cached): the plain quantum cache (`Arena::alloc`/`free` under what would be the
//! arena lock) and the magazine front (`QcFront`: one CPU's magazines, the exact slab-bit check).
//!
//! Run: `cargo bench --bench vmem_policies` (prints a ratio table at the end).

use std::alloc::{alloc, dealloc, Layout};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use kmalloc43_core::hosted::magazines::{boxed_magazine, free_magazine};
use kmalloc43_core::hosted::vmem::HeapPages;
use kmalloc43_core::magazine::{CpuMagazines, Depot};
use kmalloc43_core::vmem::{Arena, ArenaConfig, Constraints, FastFree, Flags, QcFront};

const Q: usize = 4096;
const BASE: usize = 1 << 32;
const REQUEST: usize = 4 * Q;
const FRAGMENTS: [usize; 3] = [100, 10_000, 100_000];

/// Hole size of fragment `i`, in quanta (deterministic, 1..=3).
fn hole(i: usize) -> usize {
    1 + (i.wrapping_mul(2_654_435_761) >> 7) % 3
}

fn span_size(n: usize) -> usize {
    (n * 4 + 1024) * Q
}

/// Builds the fragmented layout with `alloc`/`free` closures over sizes in bytes.
fn fragment(n: usize, mut alloc: impl FnMut(usize) -> usize, mut free: impl FnMut(usize, usize)) {
    let mut holes = Vec::with_capacity(n);
    for i in 0..n {
        let s = hole(i) * Q;
        holes.push((alloc(s), s));
        alloc(Q);
    }
    for (a, s) in holes {
        free(a, s);
    }
}

// ---- genalloc-style bitmap first-fit -------------------------------------------------------

/// One bit per quantum; allocation = first run of zero bits from the start (like Linux
/// `gen_pool_first_fit` over `bitmap_find_next_zero_area`).
struct BitmapFirstFit {
    words: Vec<u64>,
    nbits: usize,
}

impl BitmapFirstFit {
    fn new(nbits: usize) -> Self {
        BitmapFirstFit {
            words: vec![0; nbits.div_ceil(64)],
            nbits,
        }
    }
    fn bit(&self, i: usize) -> bool {
        self.words[i / 64] >> (i % 64) & 1 != 0
    }
    fn set_range(&mut self, start: usize, n: usize, v: bool) {
        for i in start..start + n {
            if v {
                self.words[i / 64] |= 1 << (i % 64);
            } else {
                self.words[i / 64] &= !(1 << (i % 64));
            }
        }
    }
    fn next_zero(&self, mut i: usize) -> usize {
        while i < self.nbits {
            let w = !self.words[i / 64] >> (i % 64);
            if w != 0 {
                return i + w.trailing_zeros() as usize;
            }
            i = (i / 64 + 1) * 64;
        }
        self.nbits
    }
    fn alloc(&mut self, size: usize) -> Option<usize> {
        let n = size / Q;
        let mut start = self.next_zero(0);
        while start + n <= self.nbits {
            match (start..start + n).find(|&j| self.bit(j)) {
                Some(j) => start = self.next_zero(j + 1),
                None => {
                    self.set_range(start, n, true);
                    return Some(BASE + start * Q);
                }
            }
        }
        None
    }
    fn free(&mut self, addr: usize, size: usize) {
        self.set_range((addr - BASE) / Q, size / Q, false);
    }
}

// ---- the vmem crate ---------------------------------------------------------------------------

/// Boundary tags for the `vmem` crate: a free list of tags in front of the global allocator, as
/// a kernel user of the crate would put a slab cache there (so the crate is not charged a
/// `malloc`/`free` per split and merge).
#[derive(Default)]
struct TagCache {
    free: Cell<Option<NonNull<vmem::Bt>>>,
}

// SAFETY: hands out distinct blocks sized and aligned for `Bt`; a freed block is reused (its
// first word holds the free-list link) only after the crate gave it back.
unsafe impl vmem::Allocator for TagCache {
    fn allocate(&self) -> Option<NonNull<vmem::Bt>> {
        match self.free.get() {
            Some(p) => {
                // SAFETY: `p` is a block on our free list, its first word the next link.
                self.free
                    .set(unsafe { p.as_ptr().cast::<Option<NonNull<vmem::Bt>>>().read() });
                Some(p)
            }
            // SAFETY: `Bt` has a non-zero size.
            None => NonNull::new(unsafe { alloc(Layout::new::<vmem::Bt>()) }.cast()),
        }
    }
    unsafe fn deallocate(&self, ptr: NonNull<vmem::Bt>) {
        // SAFETY: the crate gives back a block from `allocate`, large and aligned enough for a
        // pointer, no longer in use.
        unsafe {
            ptr.as_ptr()
                .cast::<Option<NonNull<vmem::Bt>>>()
                .write(self.free.get())
        };
        self.free.set(Some(ptr));
    }
}

impl Drop for TagCache {
    fn drop(&mut self) {
        while let Some(p) = self.free.get() {
            // SAFETY: as in `allocate`; every block came from `alloc` with this layout.
            unsafe {
                self.free
                    .set(p.as_ptr().cast::<Option<NonNull<vmem::Bt>>>().read());
                dealloc(p.as_ptr().cast(), Layout::new::<vmem::Bt>());
            }
        }
    }
}

/// A lock for a single-threaded bench (our arena takes no lock either; the kernel puts one
/// around both): a flag that catches re-entry.
#[derive(Default)]
struct ThreadLock(Cell<bool>);

/// Guard of [`ThreadLock`].
struct ThreadGuard<'a>(&'a Cell<bool>);

impl Drop for ThreadGuard<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

// SAFETY: the `Cell` makes the lock `!Sync`, so only one thread can reach it, and re-entry while
// the guard is alive panics: access through the guard is unique.
unsafe impl vmem::Lock for ThreadLock {
    type Guard<'a> = ThreadGuard<'a>;
    fn lock(&self) -> ThreadGuard<'_> {
        assert!(!self.0.replace(true), "vmem crate arena re-entered");
        ThreadGuard(&self.0)
    }
}

type CrateArena = vmem::Arena<'static, 'static, TagCache, ThreadLock>;

// ---- subjects ---------------------------------------------------------------------------------

/// A fragmented allocator and the measured operation: one xalloc+xfree pair of `REQUEST`.
trait Subject {
    fn pair(&mut self);
}

struct Ours(Arena<HeapPages>, Flags);

impl Subject for Ours {
    fn pair(&mut self) {
        let x = self
            .0
            .xalloc(black_box(REQUEST), &Constraints::default(), self.1)
            .unwrap();
        self.0.xfree(x, REQUEST).unwrap();
    }
}

impl Subject for BitmapFirstFit {
    fn pair(&mut self) {
        let x = self.alloc(black_box(REQUEST)).unwrap();
        self.free(x, REQUEST);
    }
}

impl Subject for CrateArena {
    fn pair(&mut self) {
        let l = vmem::Layout::from_size_align(black_box(REQUEST), Q).unwrap();
        let x = self.xalloc(l, vmem::AllocPolicy::InstantFit).unwrap();
        self.free(x).unwrap();
    }
}

/// The plain quantum cache: `alloc`+`free` of `REQUEST` (cached) through the arena.
struct QcachePlain(Arena<HeapPages>);

impl Subject for QcachePlain {
    fn pair(&mut self) {
        let x = self
            .0
            .alloc(black_box(REQUEST), Flags::INSTANT_FIT)
            .unwrap();
        self.0.free(x, REQUEST).unwrap();
    }
}

/// The magazine front over the same arena (without depots of its own), one CPU.
struct QcacheMagazine {
    arena: Arena<HeapPages>,
    front: QcFront,
    cpu: CpuMagazines,
    depot: Depot,
}

impl Subject for QcacheMagazine {
    fn pair(&mut self) {
        let i = self.front.cache_index(black_box(REQUEST)).unwrap();
        let x = match self.front.alloc(i, &mut self.cpu) {
            Some(x) => x,
            None => {
                let mut spare = Some(boxed_magazine(62));
                let x = self.front.refill(
                    i,
                    &mut self.cpu,
                    &mut self.depot,
                    &mut self.arena,
                    &mut spare,
                );
                if let Some(m) = spare {
                    free_magazine(m);
                }
                x.unwrap()
            }
        };
        match self.front.free(i, &mut self.cpu, x).unwrap() {
            FastFree::Done => {}
            FastFree::Full(a) => {
                let mut spare = Some(boxed_magazine(62));
                self.front
                    .unload(i, &mut self.cpu, &mut self.depot, &mut spare, a);
                if let Some(m) = spare {
                    free_magazine(m);
                }
            }
            FastFree::NotCached => unreachable!("a slab object"),
        }
    }
}

impl Drop for QcacheMagazine {
    fn drop(&mut self) {
        let i = self.front.cache_index(REQUEST).unwrap();
        self.front.flush_cpu(i, &mut self.cpu, free_magazine);
        self.front.flush_depot(i, &mut self.depot, free_magazine);
        self.front.release_idle(&mut self.arena, &mut |_| {});
        self.arena.audit().unwrap();
    }
}

fn ours(n: usize, flags: Flags) -> Ours {
    Ours(fragmented(n, 0), flags)
}

/// The fragmented arena of `n` fragments, with quantum caches up to `qcache_max`.
fn fragmented(n: usize, qcache_max: usize) -> Arena<HeapPages> {
    let cfg = ArenaConfig {
        name: "bench",
        quantum: Q,
        qcache_max,
        span: Some((BASE, span_size(n))),
        ..Default::default()
    };
    let a = RefCell::new(Arena::new(&cfg, HeapPages::new()).unwrap());
    let cons = Constraints::default();
    fragment(
        n,
        |s| a.borrow_mut().xalloc(s, &cons, Flags::INSTANT_FIT).unwrap(),
        |x, s| {
            a.borrow_mut().xfree(x, s).unwrap();
        },
    );
    let a = a.into_inner();
    a.audit().unwrap();
    a
}

fn qcache_plain(n: usize) -> QcachePlain {
    QcachePlain(fragmented(n, REQUEST))
}

fn qcache_magazine(n: usize) -> QcacheMagazine {
    QcacheMagazine {
        arena: fragmented(n, 0),
        front: QcFront::new(Q, REQUEST),
        cpu: CpuMagazines::new(),
        depot: Depot::new(15, 62),
    }
}

fn bitmap(n: usize) -> BitmapFirstFit {
    let bm = RefCell::new(BitmapFirstFit::new(span_size(n) / Q));
    fragment(
        n,
        |s| bm.borrow_mut().alloc(s).unwrap(),
        |x, s| bm.borrow_mut().free(x, s),
    );
    bm.into_inner()
}

fn crate_arena(n: usize) -> CrateArena {
    let ca = CrateArena::create("bench", Q, None, TagCache::default()).unwrap();
    ca.add_span(BASE, span_size(n)).unwrap();
    fragment(
        n,
        |s| ca.alloc(s, vmem::AllocPolicy::InstantFit).unwrap(),
        |x, _| ca.free(x).unwrap(),
    );
    ca
}

const POLICIES: [(&str, Flags); 3] = [
    ("instant-fit", Flags::INSTANT_FIT),
    ("best-fit", Flags::BEST_FIT),
    ("next-fit", Flags::NEXT_FIT),
];

const BITMAP: &str = "bitmap-first-fit";
const CRATE: &str = "vmem-crate-instant-fit";
const QC_PLAIN: &str = "qcache-plain";
const QC_MAG: &str = "qcache-magazine";

/// Every subject's name, in report order.
const NAMES: [&str; 7] = [
    "instant-fit",
    "best-fit",
    "next-fit",
    BITMAP,
    CRATE,
    QC_PLAIN,
    QC_MAG,
];

/// Builds subject `name` at `n` fragments and hands it to `f`.
fn with_subject<R>(name: &str, n: usize, f: impl SubjectFn<R>) -> R {
    match name {
        BITMAP => f.call(&mut bitmap(n)),
        CRATE => f.call(&mut crate_arena(n)),
        QC_PLAIN => f.call(&mut qcache_plain(n)),
        QC_MAG => f.call(&mut qcache_magazine(n)),
        _ => {
            let (_, flags) = POLICIES
                .into_iter()
                .find(|(p, _)| *p == name)
                .expect("unknown subject");
            let mut s = ours(n, flags);
            let r = f.call(&mut s);
            s.0.audit().unwrap();
            r
        }
    }
}

/// A generic callback over subjects (monomorphised per subject: no dynamic call in the loop).
trait SubjectFn<R> {
    fn call<S: Subject>(self, s: &mut S) -> R;
}

// ---- wall time (criterion) --------------------------------------------------------------------

thread_local! {
    static RESULTS: RefCell<BTreeMap<(String, usize), Vec<f64>>> = const { RefCell::new(BTreeMap::new()) };
}

/// Times `iters` pairs and records ns per pair.
fn timed<S: Subject>(name: &str, n: usize, iters: u64, s: &mut S) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        s.pair();
    }
    let d = t.elapsed();
    RESULTS.with(|r| {
        r.borrow_mut()
            .entry((name.to_string(), n))
            .or_default()
            .push(d.as_nanos() as f64 / iters as f64)
    });
    d
}

fn median(name: &str, n: usize) -> f64 {
    RESULTS.with(|r| {
        let r = r.borrow();
        let mut v = r.get(&(name.to_string(), n)).cloned().unwrap_or_default();
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    })
}

struct Criterion1<'a, 'c> {
    g: &'a mut criterion::BenchmarkGroup<'c, criterion::measurement::WallTime>,
    name: &'a str,
    n: usize,
}

impl SubjectFn<()> for Criterion1<'_, '_> {
    fn call<S: Subject>(self, s: &mut S) {
        let (name, n) = (self.name, self.n);
        self.g.bench_function(BenchmarkId::new(name, n), |b| {
            b.iter_custom(|iters| timed(name, n, iters, s))
        });
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("xalloc+xfree");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(800));
    for n in FRAGMENTS {
        for name in NAMES {
            with_subject(name, n, Criterion1 { g: &mut g, name, n });
        }
    }
    g.finish();
}

// ---- instruction counts (callgrind) -----------------------------------------------------------

/// Environment variable that turns this binary into the driver: `name,fragments,pairs`.
const DRIVER_ENV: &str = "VMEM_BENCH_DRIVER";

/// Pairs per instruction-count run (the bitmap's pairs are long and just as deterministic).
fn counted_pairs_of(name: &str) -> usize {
    if name == BITMAP {
        20
    } else {
        2000
    }
}

/// The measured loop; callgrind collects inside it only (`--toggle-collect`).
#[inline(never)]
fn counted_pairs<S: Subject>(s: &mut S, pairs: usize) {
    for _ in 0..pairs {
        s.pair();
    }
}

struct Driver(usize);

impl SubjectFn<()> for Driver {
    fn call<S: Subject>(self, s: &mut S) {
        s.pair(); // warm: the first pair may populate tags or the hash
        counted_pairs(s, self.0);
    }
}

/// Driver mode: builds one subject and runs `pairs` pairs (under callgrind, or by hand to
/// profile: `VMEM_BENCH_DRIVER=instant-fit,100000,2000 valgrind --tool=callgrind <bench binary>`).
fn drive(spec: &str) {
    let mut it = spec.split(',');
    let name = it.next().unwrap_or_default().to_string();
    let n = it.next().and_then(|v| v.parse().ok()).unwrap_or(100);
    let pairs = it
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(counted_pairs_of(&name));
    with_subject(&name, n, Driver(pairs));
}

/// Instructions per pair of `name` at `n` fragments, counted by callgrind in `counted_pairs`;
/// `None` if valgrind is not installed or fails.
fn instructions_per_pair(name: &str, n: usize) -> Option<f64> {
    let exe = std::env::current_exe().ok()?;
    let pairs = counted_pairs_of(name);
    let out = std::process::Command::new("valgrind")
        .args([
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            "--collect-atstart=no",
            "--toggle-collect=*counted_pairs*",
        ])
        .arg(exe)
        .env(DRIVER_ENV, format!("{name},{n},{pairs}"))
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().find(|l| l.contains("Collected :"))?;
    let total: f64 = line.rsplit(':').next()?.trim().parse().ok()?;
    Some(total / pairs as f64)
}

// ---- report -----------------------------------------------------------------------------------

fn report() {
    let icount = std::env::var_os("VMEM_BENCH_NO_ICOUNT").is_none();
    let mut ir = BTreeMap::new();
    if icount {
        for n in FRAGMENTS {
            for name in NAMES {
                if let Some(v) = instructions_per_pair(name, n) {
                    ir.insert((name, n), v);
                }
            }
        }
    }
    let irv = |name: &str, n: usize| ir.get(&(name, n)).copied().unwrap_or(f64::NAN);
    println!("\n== xalloc+xfree pair: ns (median of samples) | instructions (callgrind) ==");
    print!("{:<24}", "fragments");
    for n in FRAGMENTS {
        print!("{:>11}ns{:>9}ir", n, "");
    }
    println!("{:>12}{:>8}", "100k/100 ns", "ir");
    for name in NAMES {
        print!("{name:<24}");
        for n in FRAGMENTS {
            print!("{:>13.1}{:>11.0}", median(name, n), irv(name, n));
        }
        println!(
            "{:>11.2}x{:>7.2}x",
            median(name, 100_000) / median(name, 100),
            irv(name, 100_000) / irv(name, 100)
        );
    }
    if ir.is_empty() {
        println!("(no instruction counts: valgrind not found or VMEM_BENCH_NO_ICOUNT set)");
    }
    let ratio = |other: &str, n: usize| {
        (
            median(other, n) / median("instant-fit", n),
            irv(other, n) / irv("instant-fit", n),
        )
    };
    println!("\n== ratios: wall time | instructions (targets in brackets) ==");
    println!(
        "instant-fit flatness 100k/100:          {:>8.2}x | {:>8.2}x  [<= 1.3x]",
        median("instant-fit", 100_000) / median("instant-fit", 100),
        irv("instant-fit", 100_000) / irv("instant-fit", 100)
    );
    for n in FRAGMENTS {
        let (t, i) = ratio(BITMAP, n);
        println!("bitmap first-fit / instant-fit @{n:>6}:  {t:>8.1}x | {i:>8.1}x  [>= 20x at 10k]");
    }
    for n in FRAGMENTS {
        let (t, i) = ratio(CRATE, n);
        println!("vmem crate / instant-fit       @{n:>6}:  {t:>8.2}x | {i:>8.2}x  [>= 2x]");
    }
    for n in FRAGMENTS {
        let t = median(QC_PLAIN, n) / median(QC_MAG, n);
        let i = irv(QC_PLAIN, n) / irv(QC_MAG, n);
        println!("qcache plain / magazine front  @{n:>6}:  {t:>8.2}x | {i:>8.2}x  (alloc+free, cached size)");
    }
}

fn main() {
    if let Ok(spec) = std::env::var(DRIVER_ENV) {
        drive(&spec);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    report();
}
