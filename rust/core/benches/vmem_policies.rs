// SPDX-License-Identifier: GPL-2.0
//! Cost of an xalloc+xfree pair in a fragmented arena, per fit policy, against a genalloc-style
//! bitmap first-fit and the `vmem` crate, at 100, 10,000 and 100,000 fragments.
//!
//! The mix: the arena holds N free holes of 1..=3 quanta, each followed by a one-quantum
//! allocated separator, and then a large free tail. Every pair asks for 4 quanta, which only
//! the tail can hold: the classic case where a search allocator (first-fit over a bitmap, like
//! Linux genalloc) walks all the fragmentation and vmem's freelists do not.
//!
//! Run: `cargo bench --bench vmem_policies` (prints a ratio table at the end).

use std::alloc::{alloc, dealloc, Layout};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use kmalloc43_core::hosted::vmem::HeapPages;
use kmalloc43_core::vmem::{Arena, ArenaConfig, Constraints, Flags};

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

/// Boundary tags for the `vmem` crate from the global allocator.
struct TagHeap;

// SAFETY: hands out distinct, properly sized and aligned blocks and frees them with the same layout.
unsafe impl vmem::Allocator for TagHeap {
    fn allocate(&self) -> Option<NonNull<vmem::Bt>> {
        // SAFETY: `Bt` has a non-zero size.
        NonNull::new(unsafe { alloc(Layout::new::<vmem::Bt>()) }.cast())
    }
    unsafe fn deallocate(&self, ptr: NonNull<vmem::Bt>) {
        // SAFETY: allocated above with this layout.
        unsafe { dealloc(ptr.as_ptr().cast(), Layout::new::<vmem::Bt>()) }
    }
}

type CrateArena = vmem::Arena<'static, 'static, TagHeap, std::sync::Mutex<()>>;

// ---- measurement ------------------------------------------------------------------------------

thread_local! {
    static RESULTS: RefCell<BTreeMap<(String, usize), Vec<f64>>> = const { RefCell::new(BTreeMap::new()) };
}

/// Times `iters` pairs with `pair` and records ns per pair.
fn timed(name: &str, n: usize, iters: u64, mut pair: impl FnMut()) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        pair();
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

const POLICIES: [(&str, Flags); 3] = [
    ("instant-fit", Flags::INSTANT_FIT),
    ("best-fit", Flags::BEST_FIT),
    ("next-fit", Flags::NEXT_FIT),
];

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("xalloc+xfree");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(800));
    for n in FRAGMENTS {
        for (name, flags) in POLICIES {
            let cfg = ArenaConfig {
                name: "bench",
                quantum: Q,
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
            let mut a = a.into_inner();
            a.audit().unwrap();
            g.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter_custom(|iters| {
                    timed(name, n, iters, || {
                        let x = a.xalloc(black_box(REQUEST), &cons, flags).unwrap();
                        a.xfree(x, REQUEST).unwrap();
                    })
                })
            });
            a.audit().unwrap();
        }
        let bm = RefCell::new(BitmapFirstFit::new(span_size(n) / Q));
        fragment(
            n,
            |s| bm.borrow_mut().alloc(s).unwrap(),
            |x, s| bm.borrow_mut().free(x, s),
        );
        let mut bm = bm.into_inner();
        g.bench_function(BenchmarkId::new("bitmap-first-fit", n), |b| {
            b.iter_custom(|iters| {
                timed("bitmap-first-fit", n, iters, || {
                    let x = bm.alloc(black_box(REQUEST)).unwrap();
                    bm.free(x, REQUEST);
                })
            })
        });
        let ca = CrateArena::create("bench", Q, None, TagHeap).unwrap();
        ca.add_span(BASE, span_size(n)).unwrap();
        fragment(
            n,
            |s| ca.alloc(s, vmem::AllocPolicy::InstantFit).unwrap(),
            |x, _| ca.free(x).unwrap(),
        );
        let layout = vmem::Layout::from_size_align(REQUEST, Q).unwrap();
        g.bench_function(BenchmarkId::new("vmem-crate-instant-fit", n), |b| {
            b.iter_custom(|iters| {
                timed("vmem-crate-instant-fit", n, iters, || {
                    let l = vmem::Layout::from_size_align(black_box(REQUEST), Q).unwrap();
                    let x = ca.xalloc(l, vmem::AllocPolicy::InstantFit).unwrap();
                    ca.free(x).unwrap();
                })
            })
        });
        let _ = layout;
    }
    g.finish();
}

fn report() {
    let names = [
        "instant-fit",
        "best-fit",
        "next-fit",
        "bitmap-first-fit",
        "vmem-crate-instant-fit",
    ];
    println!("\n== xalloc+xfree pair, ns (median of samples) ==");
    print!("{:<24}", "fragments");
    for n in FRAGMENTS {
        print!("{n:>12}");
    }
    println!("{:>14}", "100k/100");
    for name in names {
        print!("{name:<24}");
        for n in FRAGMENTS {
            print!("{:>12.1}", median(name, n));
        }
        println!("{:>13.2}x", median(name, 100_000) / median(name, 100));
    }
    let ifit = |n| median("instant-fit", n);
    println!("\n== ratios (targets in brackets) ==");
    println!(
        "instant-fit flatness 100k/100:          {:>8.2}x  [<= 1.3x]",
        ifit(100_000) / ifit(100)
    );
    for n in FRAGMENTS {
        println!(
            "bitmap first-fit / instant-fit @{n:>6}:  {:>8.1}x  [>= 20x at 10k]",
            median("bitmap-first-fit", n) / ifit(n)
        );
    }
    for n in FRAGMENTS {
        println!(
            "vmem crate / instant-fit       @{n:>6}:  {:>8.2}x  [>= 2x]",
            median("vmem-crate-instant-fit", n) / ifit(n)
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    report();
}
