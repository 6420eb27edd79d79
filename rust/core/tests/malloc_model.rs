// SPDX-License-Identifier: GPL-2.0

//! Model-based property test: random malloc/free/realloc sequences over many types and sizes,
//! checked against a reference model after every operation (no overlap, alignment, contents,
//! exact statistics) and with `audit()` along the way. Double frees of recently freed allocations
//! are mixed in, with and without DIAGNOSTIC: each must fail and change nothing. So are frees
//! with the wrong type where the allocator can tell exactly (a type-segregated class or a page
//! run with segregation on, anything with DIAGNOSTIC): `WrongType` naming the owner, nothing
//! changed.
//!
//! The default run does about 100,000 operations (on the direct host backend and on the vmem
//! kmem arena, with and without DIAGNOSTIC, with segregation off, below 256 B and for every
//! class). `MALLOC_MODEL_OPS=1000000 cargo test --release
//! --test malloc_model -- --ignored` runs the long one.

#[macro_use]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::ptr::NonNull;

use kmalloc43_core::hosted::malloc_host_pages::{host_vmem_kmem, HostPages};
use kmalloc43_core::malloc::{
    KmemPages, Malloc, MallocError, MallocFlags, MallocType, SizeClasses, FINE_SIZES, MAXALLOCSAVE,
    PAGE_SIZE, SEGREGATE_ALL,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

#[derive(Clone, Copy, Debug)]
enum Op {
    Malloc {
        ty: usize,
        size: usize,
    },
    Free {
        pick: usize,
    },
    Realloc {
        pick: usize,
        size: usize,
    },
    /// Frees again one of the allocations freed since the last malloc or realloc.
    DoubleFree {
        pick: usize,
    },
    /// Frees a live allocation with another type (only where the allocator can tell).
    WrongFree {
        pick: usize,
        other: usize,
    },
}

/// The segregation thresholds the model runs with: off, the small classes, every class.
const THRESHOLDS: [usize; 3] = [0, 256, SEGREGATE_ALL];

fn size_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 1usize..=1024,                                   // the paper's common case
        2 => (0u32..=15).prop_map(|k| 1usize << k),           // exact powers of two
        1 => (1usize..=6, 0usize..=2).prop_map(|(n, d)| n * PAGE_SIZE + d - 1), // page boundaries
        1 => 1usize..=5 * PAGE_SIZE,
        1 => Just(0usize),
        2 => (prop::sample::select(FINE_SIZES), 0usize..=2).prop_map(|(c, d)| c + d - 1), // fine class edges
    ]
}

fn op_strategy(ntypes: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..ntypes, size_strategy()).prop_map(|(ty, size)| Op::Malloc { ty, size }),
        4 => any::<usize>().prop_map(|pick| Op::Free { pick }),
        1 => (any::<usize>(), size_strategy()).prop_map(|(pick, size)| Op::Realloc { pick, size }),
        1 => any::<usize>().prop_map(|pick| Op::DoubleFree { pick }),
        1 => (any::<usize>(), 1..ntypes).prop_map(|(pick, other)| Op::WrongFree { pick, other }),
    ]
}

/// Bytes charged for `size` in `mode`: the reference, from the class lists by a linear search
/// (independent of the allocator's lookup tables).
fn charge(mode: SizeClasses, size: usize) -> usize {
    if size <= MAXALLOCSAVE {
        match mode {
            SizeClasses::Pow2 => size.max(16).next_power_of_two(),
            SizeClasses::Fine => *FINE_SIZES.iter().find(|&&c| c >= size).unwrap(),
        }
    } else {
        size.div_ceil(PAGE_SIZE) * PAGE_SIZE
    }
}

#[derive(Default, Clone, Copy)]
struct ModelType {
    inuse: usize,
    memuse: usize,
    maxused: usize,
    calls: u64,
    limblocks: u64,
    limit: usize,
}

struct Live {
    size: usize,
    ty: usize,
    byte: u8,
}

struct Harness<K: KmemPages> {
    m: Malloc<K>,
    mode: SizeClasses,
    types: Vec<MallocType>,
    model: Vec<ModelType>,
    live: BTreeMap<usize, Live>,
    order: Vec<usize>,
    /// Allocations freed since the last malloc or realloc (their memory cannot have been reused
    /// yet), with their size and type index.
    freed: Vec<(usize, usize, usize)>,
    counter: u8,
}

const LIMITS: [usize; 6] = [
    usize::MAX,
    usize::MAX,
    usize::MAX,
    64 * 1024,
    usize::MAX,
    256 * 1024,
];

impl<K: KmemPages> Harness<K> {
    fn new(kmem: K, mode: SizeClasses, diag: bool, segregate_below: usize) -> Self {
        let mut m = Malloc::with_segregation(kmem, mode, segregate_below);
        m.set_diagnostic(diag).unwrap();
        let types = LIMITS
            .iter()
            .map(|&l| m.define_type("model", "model type", l).unwrap())
            .collect();
        let model = LIMITS
            .iter()
            .map(|&limit| ModelType {
                limit,
                ..Default::default()
            })
            .collect();
        Self {
            m,
            mode,
            types,
            model,
            live: BTreeMap::new(),
            order: Vec::new(),
            freed: Vec::new(),
            counter: 0,
        }
    }

    fn fill(&mut self, p: usize, size: usize) -> u8 {
        self.counter = self.counter.wrapping_add(1) | 1;
        // SAFETY: `p..p + size` is a live allocation the harness owns.
        unsafe { std::ptr::write_bytes(p as *mut u8, self.counter, size) };
        self.counter
    }

    fn check_contents(&self, p: usize, len: usize, byte: u8) {
        // SAFETY: `p..p + len` is a live allocation the harness owns.
        let s = unsafe { std::slice::from_raw_parts(p as *const u8, len) };
        assert!(s.iter().all(|&b| b == byte), "contents of {p:#x} changed");
    }

    fn check_placement(&self, p: usize, size: usize) {
        let c = charge(self.mode, size);
        // Natural alignment in pow2; the largest power of two dividing the class size in fine.
        let align = match self.mode {
            SizeClasses::Pow2 => c,
            SizeClasses::Fine => c & c.wrapping_neg(),
        };
        assert_eq!(
            p % align.min(PAGE_SIZE),
            0,
            "alignment of {p:#x} size {size}"
        );
        let np = NonNull::new(p as *mut u8).unwrap();
        assert_eq!(self.m.usable_size(np), Ok(c));
        if let Some((&q, l)) = self.live.range(..p).next_back() {
            assert!(q + charge(self.mode, l.size) <= p, "overlap with {q:#x}");
        }
        if let Some((&q, _)) = self.live.range(p..).next() {
            assert!(p + c <= q, "overlap with {q:#x}");
        }
    }

    fn do_malloc(&mut self, t: usize, size: usize) {
        self.freed.clear();
        let ty = self.types[t];
        let r = self.m.malloc(size, ty, MallocFlags::NOWAIT);
        if size == 0 {
            assert_eq!(r, Err(MallocError::ZeroSize));
            return;
        }
        let c = charge(self.mode, size);
        let mt = &mut self.model[t];
        if mt.memuse + c > mt.limit {
            assert_eq!(r, Err(MallocError::Limit { ty, charge: c }));
            mt.limblocks += 1;
            return;
        }
        let p = r.unwrap().as_ptr() as usize;
        mt.inuse += 1;
        mt.calls += 1;
        mt.memuse += c;
        mt.maxused = mt.maxused.max(mt.memuse);
        self.check_placement(p, size);
        let byte = self.fill(p, size);
        self.live.insert(p, Live { size, ty: t, byte });
        self.order.push(p);
    }

    fn take(&mut self, pick: usize) -> Option<(usize, Live)> {
        if self.order.is_empty() {
            return None;
        }
        let i = pick % self.order.len();
        let p = self.order.swap_remove(i);
        Some((p, self.live.remove(&p).unwrap()))
    }

    fn do_free(&mut self, pick: usize) {
        let Some((p, l)) = self.take(pick) else {
            return;
        };
        self.check_contents(p, l.size, l.byte);
        self.m
            .free(NonNull::new(p as *mut u8).unwrap(), self.types[l.ty])
            .unwrap();
        let mt = &mut self.model[l.ty];
        mt.inuse -= 1;
        mt.memuse -= charge(self.mode, l.size);
        self.freed.push((p, l.size, l.ty));
    }

    /// A double free must fail and change nothing: `DoubleFree` for a bucket piece, or
    /// `ForeignPointer` once its cluster (or its large run) went back to kmem.
    fn do_double_free(&mut self, pick: usize) {
        if self.freed.is_empty() {
            return;
        }
        let (p, size, t) = self.freed[pick % self.freed.len()];
        let r = self
            .m
            .free(NonNull::new(p as *mut u8).unwrap(), self.types[t]);
        let ok = match r {
            Err(MallocError::DoubleFree { addr, ty }) => {
                let named = if self.m.diagnostic() {
                    ty == Some(self.types[t])
                } else {
                    ty.is_none()
                };
                addr == p && size <= MAXALLOCSAVE && named
            }
            Err(MallocError::ForeignPointer { addr }) => addr == p,
            _ => false,
        };
        assert!(ok, "double free of {p:#x} (size {size}): {r:?}");
    }

    /// Frees live allocation `pick` with type `other` types further on, where the allocator
    /// can tell exactly: it must be `WrongType` naming the owner, and change nothing.
    fn do_wrong_free(&mut self, pick: usize, other: usize) {
        if self.order.is_empty() {
            return;
        }
        let p = self.order[pick % self.order.len()];
        let l = &self.live[&p];
        let c = charge(self.mode, l.size);
        let below = self.m.segregate_below();
        let exact = self.m.diagnostic()
            || (l.size <= MAXALLOCSAVE && c < below)
            || (l.size > MAXALLOCSAVE && below != 0);
        if !exact {
            return;
        }
        let (owner, given) = (
            self.types[l.ty],
            self.types[(l.ty + other) % self.types.len()],
        );
        let r = self.m.free(NonNull::new(p as *mut u8).unwrap(), given);
        assert_eq!(
            r,
            Err(MallocError::WrongType {
                addr: p,
                given,
                owner: Some(owner)
            }),
            "wrong-type free of {p:#x} (size {}, threshold {below})",
            l.size
        );
        self.check_contents(p, l.size, l.byte);
    }

    fn do_realloc(&mut self, pick: usize, size: usize) {
        let Some((p, l)) = self.take(pick) else {
            return;
        };
        self.freed.clear();
        let ty = self.types[l.ty];
        let ptr = NonNull::new(p as *mut u8).unwrap();
        let r = self.m.realloc(ptr, size, ty, MallocFlags::NOWAIT);
        let (old_c, new_c) = (
            charge(self.mode, l.size),
            if size == 0 {
                0
            } else {
                charge(self.mode, size)
            },
        );
        let mt = &mut self.model[l.ty];
        let expect_fail = if size == 0 {
            Some(MallocError::ZeroSize)
        } else if old_c != new_c && mt.memuse + new_c > mt.limit {
            mt.limblocks += 1;
            Some(MallocError::Limit { ty, charge: new_c })
        } else {
            None
        };
        if let Some(e) = expect_fail {
            assert_eq!(r, Err(e));
            self.live.insert(p, l);
            self.order.push(p);
            return;
        }
        let q = r.unwrap().as_ptr() as usize;
        if old_c == new_c {
            assert_eq!(q, p, "same size class stays in place");
        } else {
            self.freed.push((p, l.size, l.ty));
            mt.calls += 1;
            mt.memuse = mt.memuse - old_c + new_c;
            mt.maxused = mt.maxused.max(mt.memuse + old_c);
        }
        self.check_contents(q, l.size.min(size), l.byte);
        self.check_placement(q, size);
        let byte = self.fill(q, size);
        self.live.insert(
            q,
            Live {
                size,
                ty: l.ty,
                byte,
            },
        );
        self.order.push(q);
    }

    fn check_stats(&self) {
        for (t, mt) in self.model.iter().enumerate() {
            let st = self.m.type_stats(self.types[t]).unwrap();
            assert_eq!(
                (st.inuse, st.memuse, st.calls, st.limblocks),
                (mt.inuse, mt.memuse, mt.calls, mt.limblocks),
                "stats of type {t}"
            );
            assert!(st.maxused >= mt.memuse && st.maxused <= mt.maxused.max(mt.memuse));
        }
    }

    fn run(&mut self, ops: &[Op]) {
        for (n, op) in ops.iter().enumerate() {
            match *op {
                Op::Malloc { ty, size } => self.do_malloc(ty, size),
                Op::Free { pick } => self.do_free(pick),
                Op::Realloc { pick, size } => self.do_realloc(pick, size),
                Op::DoubleFree { pick } => self.do_double_free(pick),
                Op::WrongFree { pick, other } => self.do_wrong_free(pick, other),
            }
            if n % 97 == 0 {
                self.check_stats();
            }
            if n % 1009 == 0 {
                self.m.audit().unwrap();
            }
        }
        self.check_stats();
        self.m.audit().unwrap();
        while !self.order.is_empty() {
            self.do_free(0);
        }
        self.check_stats();
        self.m.audit().unwrap();
        for t in &self.types {
            assert_eq!(self.m.type_stats(*t).unwrap().memuse, 0);
        }
        // Types without live allocations undefine, their own buckets' clusters going back:
        // then every data page and every type bucket is gone.
        for t in std::mem::take(&mut self.types) {
            self.m.undefine_type(t).unwrap();
        }
        self.m.reclaim();
        self.m.audit().unwrap();
        let ms = self.m.memory_stats();
        assert_eq!((ms.data_pages, ms.bucket_pages), (0, 0));
    }
}

/// Runs `total` operations as sequences of `len`, half in each size-class mode, on both backends,
/// diag on every other case, each case with one of the segregation thresholds.
fn run_model(total: usize, len: usize) {
    for mode in [SizeClasses::Pow2, SizeClasses::Fine] {
        run_model_mode(mode, total / 2, len);
    }
}

fn run_model_mode(mode: SizeClasses, total: usize, len: usize) {
    let cases = (total / len).max(1) as u32;
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        prop::collection::vec(op_strategy(LIMITS.len()), len),
        any::<bool>(),
        any::<bool>(),
        prop::sample::select(&THRESHOLDS[..]),
    );
    runner
        .run(&strategy, |(ops, vmem, diag, seg)| {
            if vmem {
                let mut h = Harness::new(host_vmem_kmem(64 * 1024, None), mode, diag, seg);
                h.run(&ops);
                drop(h.m);
            } else {
                let mut h = Harness::new(HostPages::new(), mode, diag, seg);
                h.run(&ops);
                assert_eq!(h.m.kmem().data_pages(), h.m.memory_stats().data_pages);
            }
            Ok(())
        })
        .unwrap();
}

fn ops_from_env(default: usize) -> usize {
    std::env::var("MALLOC_MODEL_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn model_100k_ops() {
    run_model(ops_from_env(100_000), 2_000);
}

#[test]
#[ignore = "long: 1,000,000 operations; run with --ignored"]
fn model_1m_ops() {
    run_model(ops_from_env(1_000_000), 5_000);
}

both_modes! {
fn vmem_backend_returns_pages_to_the_source(mode) {
    let mut m = Malloc::with_classes(host_vmem_kmem(64 * 1024, None), mode);
    let ty = m.define_type("v", "", usize::MAX).unwrap();
    let mut ptrs = HashMap::new();
    for i in 0..4000usize {
        let size = 16 << (i % 9);
        ptrs.insert(i, m.malloc(size, ty, MallocFlags::NOWAIT).unwrap());
    }
    let big = m.malloc(40 * PAGE_SIZE, ty, MallocFlags::NOWAIT).unwrap();
    assert!(m.kmem().source().bytes() > 0);
    m.audit().unwrap();
    for (_, p) in ptrs {
        m.free(p, ty).unwrap();
    }
    m.free(big, ty).unwrap();
    m.reclaim();
    m.audit().unwrap();
    assert_eq!(m.memory_stats().data_pages, 0);
    let held = m.kmem().source().bytes();
    // Only the page map's remaining metadata pages (its unshrunk hash table) stay imported.
    assert!(held <= 64 * 1024 * 2, "source still holds {held} bytes");
}}
