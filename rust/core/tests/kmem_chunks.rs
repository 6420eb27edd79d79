// SPDX-License-Identifier: GPL-2.0

//! The chunk layer of the vmem kmem backend: page runs of 1 to 8 pages carved from 256 KiB chunks
//! by a buddy allocator. Runs are aligned to their size, never overlap, are real memory; freeing
//! everything merges back to whole chunks, one spare is kept and `trim` gives it back, so the
//! source ends up holding nothing.

#[macro_use]
mod common;

use std::collections::BTreeMap;

use common::Rng;
use kmalloc43_core::hosted::malloc_host_pages::host_vmem_kmem;
use kmalloc43_core::malloc::{KmemPages, CHUNK_PAGES, PAGE_SIZE};

#[test]
fn buddy_runs_are_aligned_disjoint_and_all_come_back() {
    let mut k = host_vmem_kmem(64 * 1024, None);
    let mut live: BTreeMap<usize, usize> = BTreeMap::new();
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    for step in 0..20_000 {
        if live.is_empty() || r.below(100) < 55 {
            let npages = 1 << r.below(4);
            let a = k.alloc_pages(npages, npages).expect("run");
            assert_eq!(
                a % (npages * PAGE_SIZE),
                0,
                "run of {npages} pages misaligned"
            );
            if let Some((&q, &n)) = live.range(..a).next_back() {
                assert!(q + n * PAGE_SIZE <= a, "overlap at step {step}");
            }
            if let Some((&q, _)) = live.range(a..).next() {
                assert!(a + npages * PAGE_SIZE <= q, "overlap at step {step}");
            }
            // Real, writable memory: its first and last bytes.
            // SAFETY: the run is ours until freed.
            unsafe {
                *(a as *mut u8) = 0xa5;
                *((a + npages * PAGE_SIZE - 1) as *mut u8) = 0x5a;
            }
            live.insert(a, npages);
        } else {
            let i = r.below(live.len());
            let (&a, &n) = live.iter().nth(i).unwrap();
            live.remove(&a);
            // SAFETY: `a` is a run of `n` pages from `alloc_pages`, freed once.
            unsafe { k.free_pages(a, n) };
        }
        // Every page of every chunk is either live or free in a chunk.
        let used: usize = live.values().sum();
        assert_eq!(
            k.chunks() * CHUNK_PAGES,
            used + k.chunk_free_pages(),
            "chunk pages lost at step {step}"
        );
    }
    for (a, n) in std::mem::take(&mut live) {
        // SAFETY: as above.
        unsafe { k.free_pages(a, n) };
    }
    // Everything merged back: at most the spare chunk is left, and trim returns it.
    assert!(k.chunks() <= 1);
    assert_eq!(k.chunk_free_pages(), k.chunks() * CHUNK_PAGES);
    k.trim();
    assert_eq!(k.chunks(), 0);
    assert_eq!(k.chunk_registry_pages(), 0);
    assert_eq!(k.source().bytes(), 0, "the source got every chunk back");
    assert_eq!(k.arena().audit(), Ok(()));
}

#[test]
fn large_and_unaligned_runs_bypass_the_chunks() {
    let mut k = host_vmem_kmem(64 * 1024, None);
    let three = k.alloc_pages(3, 1).unwrap();
    let sixteen = k.alloc_pages(16, 16).unwrap();
    assert_eq!(
        k.chunks(),
        0,
        "runs other than 1-8 pages aligned to their size go to the arena"
    );
    let one = k.alloc_pages(1, 1).unwrap();
    assert_eq!(k.chunks(), 1);
    assert_eq!(k.chunk_free_pages(), CHUNK_PAGES - 1);
    // SAFETY: each run is returned once with its size.
    unsafe {
        k.free_pages(three, 3);
        k.free_pages(sixteen, 16);
        k.free_pages(one, 1);
    }
    assert_eq!(k.chunk_free_pages(), CHUNK_PAGES, "the chunk is the spare");
    k.trim();
    assert_eq!(k.source().bytes(), 0);
}
