// SPDX-License-Identifier: GPL-2.0

//! malloc benchmark, printed as tables in one run:
//! 1. malloc+free pair cost per size vs the host system allocator on the same sequence (a
//!    yardstick only), on the direct host backend and on the vmem kmem arena;
//! 2. utilization = requested / required on the paper's mix (95-98% of requests <= 1 KB, many
//!    exact powers of two) and on a uniform mix;
//! 3. bookkeeping bytes per MB managed.
//!
//! Run: `cargo bench --bench malloc_bench`.

use std::alloc::{alloc, dealloc, Layout};
use std::hint::black_box;
use std::ptr::NonNull;
use std::time::Instant;

use kmalloc43_core::hosted::malloc_host_pages::{host_vmem_kmem, HostPages};
use kmalloc43_core::malloc::{KmemPages, Malloc, MallocFlags, MallocType, SizeClasses, PAGE_SIZE};

const NOWAIT: MallocFlags = MallocFlags::NOWAIT;

/// Tiny deterministic generator (xorshift64*), so every allocator sees the same sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn ns_per_pair(pairs: usize, f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_nanos() as f64 / pairs as f64
}

/// Pair cost in a batch pattern: allocate `batch` pieces, free them, repeat.
fn pairs_malloc<K: KmemPages>(
    m: &mut Malloc<K>,
    ty: MallocType,
    size: usize,
    rounds: usize,
    batch: usize,
) -> f64 {
    let mut v: Vec<NonNull<u8>> = Vec::with_capacity(batch);
    // Warm up: the first round takes pages from kmem.
    for _ in 0..batch {
        v.push(m.malloc(size, ty, NOWAIT).unwrap());
    }
    for p in v.drain(..) {
        m.free(p, ty).unwrap();
    }
    ns_per_pair(rounds * batch, || {
        for _ in 0..rounds {
            for _ in 0..batch {
                v.push(black_box(m.malloc(size, ty, NOWAIT).unwrap()));
            }
            for p in v.drain(..) {
                m.free(p, ty).unwrap();
            }
        }
    })
}

fn pairs_system(size: usize, rounds: usize, batch: usize) -> f64 {
    let layout = Layout::from_size_align(size, 16).unwrap();
    let mut v: Vec<*mut u8> = Vec::with_capacity(batch);
    ns_per_pair(rounds * batch, || {
        for _ in 0..rounds {
            for _ in 0..batch {
                // SAFETY: non-zero size.
                v.push(black_box(unsafe { alloc(layout) }));
            }
            for p in v.drain(..) {
                // SAFETY: allocated above with `layout`.
                unsafe { dealloc(p, layout) };
            }
        }
    })
}

fn pair_table() {
    println!("== malloc+free pair cost (ns/pair; batches of 64, and batch 1 = the fast path) ==");
    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9}",
        "size",
        "bsd-host",
        "bsd-vmem",
        "fine-vmem",
        "system",
        "host/sys",
        "vmem/sys",
        "fine/sys",
        "bsd-1",
        "system-1",
        "ratio-1"
    );
    let mut mh = Malloc::with_classes(HostPages::new(), SizeClasses::Pow2);
    let th = mh.define_type("bench", "", usize::MAX).unwrap();
    let mut mv = Malloc::with_classes(host_vmem_kmem(256 * 1024, None), SizeClasses::Pow2);
    let tv = mv.define_type("bench", "", usize::MAX).unwrap();
    let mut mf = Malloc::with_classes(host_vmem_kmem(256 * 1024, None), SizeClasses::Fine);
    let tf = mf.define_type("bench", "", usize::MAX).unwrap();
    let sizes = [
        16,
        32,
        64,
        128,
        256,
        512,
        1024,
        2048,
        4096,
        8192,
        3 * PAGE_SIZE,
        16 * PAGE_SIZE,
    ];
    for size in sizes {
        let rounds = if size > 8192 { 300 } else { 3000 };
        let h = pairs_malloc(&mut mh, th, size, rounds, 64);
        let v = pairs_malloc(&mut mv, tv, size, rounds, 64);
        let f = pairs_malloc(&mut mf, tf, size, rounds, 64);
        let s = pairs_system(size, rounds, 64);
        let h1 = pairs_malloc(&mut mh, th, size, rounds * 64, 1);
        let s1 = pairs_system(size, rounds * 64, 1);
        println!(
            "{size:>8} {h:>10.1} {v:>10.1} {f:>10.1} {s:>10.1} {:>9.2} {:>9.2} {:>9.2} | {h1:>9.1} {s1:>9.1} {:>9.2}",
            h / s,
            v / s,
            f / s,
            h1 / s1
        );
    }
}

/// Sizes of the paper's observation: 96% of requests <= 1 KB, half of those exact powers of two.
fn paper_size(r: &mut Rng) -> usize {
    match r.below(100) {
        0..=47 => 16 << r.below(7),            // exact powers of two, 16..1024
        48..=95 => 1 + r.below(1024),          // other small requests
        _ => 1025 + r.below(16 * 1024 - 1024), // the rare big ones
    }
}

/// A size generator.
type SizeFn = fn(&mut Rng) -> usize;

fn uniform_size(r: &mut Rng) -> usize {
    1 + r.below(16 * 1024)
}

/// Steady state of `live` allocations with random replacement; returns
/// (requested, data bytes held, bookkeeping bytes).
fn utilization<K: KmemPages>(
    kmem: K,
    mode: SizeClasses,
    live: usize,
    steps: usize,
    size: SizeFn,
) -> (usize, usize, usize) {
    let mut m = Malloc::with_classes(kmem, mode);
    let ty = m.define_type("util", "", usize::MAX).unwrap();
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut v: Vec<(NonNull<u8>, usize)> = Vec::new();
    for _ in 0..live {
        let s = size(&mut r);
        v.push((m.malloc(s, ty, NOWAIT).unwrap(), s));
    }
    for _ in 0..steps {
        let i = r.below(v.len());
        let (p, _) = v.swap_remove(i);
        m.free(p, ty).unwrap();
        let s = size(&mut r);
        v.push((m.malloc(s, ty, NOWAIT).unwrap(), s));
    }
    let requested = v.iter().map(|x| x.1).sum();
    let st = m.memory_stats();
    let out = (
        requested,
        st.data_pages * PAGE_SIZE,
        st.bookkeeping_pages * PAGE_SIZE,
    );
    for (p, _) in v {
        m.free(p, ty).unwrap();
    }
    out
}

fn utilization_table() {
    println!();
    println!(
        "== utilization = requested / required (steady state, 20000 live, 200000 replacements) =="
    );
    println!(
        "{:>22} {:>12} {:>12} {:>10} {:>12} {:>12}",
        "mix", "requested", "required", "util", "bookkeeping", "bytes/MB"
    );
    let mixes: [(&str, SizeFn); 2] = [
        ("paper (96% <= 1 KB)", paper_size),
        ("uniform 1..16 KiB", uniform_size),
    ];
    for (name, f) in mixes {
        for (backend, (req, data, book)) in [SizeClasses::Pow2, SizeClasses::Fine]
            .into_iter()
            .flat_map(|mode| {
                [
                    (
                        format!("host {}", mode.name()),
                        utilization(HostPages::new(), mode, 20_000, 200_000, f),
                    ),
                    (
                        format!("vmem {}", mode.name()),
                        utilization(host_vmem_kmem(256 * 1024, None), mode, 20_000, 200_000, f),
                    ),
                ]
            })
        {
            let required = data + book;
            let per_mb = book as f64 / (data as f64 / (1024.0 * 1024.0));
            println!(
                "{:>22} {req:>12} {required:>12} {:>9.1}% {book:>12} {per_mb:>12.0}",
                format!("{name} [{backend}]"),
                100.0 * req as f64 / required as f64
            );
        }
    }
}

fn bookkeeping_table() {
    println!();
    println!("== bookkeeping (page map) bytes per MB managed; paper: 4096 with 1 KB pages; target <= 2048 ==");
    println!(
        "{:>21} {:>12} {:>12} {:>10}",
        "managed", "data pages", "meta bytes", "bytes/MB"
    );
    for mb in [1usize, 16, 64, 256] {
        bookkeeping_row(mb, "host", HostPages::new());
        bookkeeping_row(mb, "vmem", host_vmem_kmem(256 * 1024, None));
    }
}

/// One row: fill `mb` megabytes with 3-page runs and 256-byte pieces, report metadata per MB.
fn bookkeeping_row<K: KmemPages>(mb: usize, backend: &str, kmem: K) {
    {
        let mut m = Malloc::new(kmem);
        let ty = m.define_type("bk", "", usize::MAX).unwrap();
        // Whole pages scattered by the system allocator, plus a share of small pieces.
        let mut v = Vec::new();
        while m.memory_stats().data_pages * PAGE_SIZE < mb << 20 {
            v.push(m.malloc(PAGE_SIZE * 3, ty, NOWAIT).unwrap());
            for _ in 0..8 {
                v.push(m.malloc(256, ty, NOWAIT).unwrap());
            }
        }
        let st = m.memory_stats();
        let meta = st.bookkeeping_pages * PAGE_SIZE;
        let per_mb = meta as f64 / (st.data_pages as f64 * PAGE_SIZE as f64 / (1 << 20) as f64);
        println!(
            "{:>12}MB [{backend}] {:>12} {meta:>12} {per_mb:>10.0}",
            mb, st.data_pages
        );
        for p in v {
            m.free(p, ty).unwrap();
        }
    }
}

fn main() {
    pair_table();
    utilization_table();
    bookkeeping_table();
}
