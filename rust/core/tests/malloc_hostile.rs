// SPDX-License-Identifier: GPL-2.0

//! A client's use-after-free over the free list's links, without DIAGNOSTIC: every decoded link
//! is validated before it is followed; a bad one is counted, reported once and cut, never
//! followed, and no pointer is handed out twice.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::ptr::NonNull;

use kmalloc43_core::hosted::malloc_host_pages::HostPages;
use kmalloc43_core::malloc::{Malloc, MallocFlags, MallocType, SizeClasses, SEGREGATE_ALL};

const NOWAIT: MallocFlags = MallocFlags::NOWAIT;
/// The kernel's LIST_POISON1 and LIST_POISON2 (x86_64, no POISON_POINTER_DELTA).
const LIST_POISON: [usize; 2] = [0xdead_0000_0000_0100, 0xdead_0000_0000_0122];

fn setup(mode: SizeClasses) -> (Malloc<HostPages>, MallocType) {
    setup_segregated(mode, 0)
}

/// As `setup`, with the core's segregation threshold `below` (the type's own buckets then take
/// the scribbles).
fn setup_segregated(mode: SizeClasses, below: usize) -> (Malloc<HostPages>, MallocType) {
    let mut m = Malloc::with_segregation(HostPages::new(), mode, below);
    let ty = m.define_type("hostile", "scribbles", usize::MAX).unwrap();
    (m, ty)
}

fn bucket_of(m: &Malloc<HostPages>, p: NonNull<u8>) -> usize {
    let size = m.usable_size(p).unwrap();
    (0..)
        .find(|&i| m.bucket_stats(i).unwrap().size == size)
        .unwrap()
}

/// Frees `freed` pieces of 64 bytes (keeping `kept` live in the same clusters), writes `words`
/// over the first words of the last piece freed (the list's head), then mallocs until the class
/// refills. Checks: no pointer twice, one bad link counted and reported once, audit clean.
fn scribble_head(mode: SizeClasses, freed: usize, words: [usize; 2]) {
    scribble_head_segregated(mode, 0, freed, words);
}

/// `scribble_head` with the core's segregation threshold `below`.
fn scribble_head_segregated(mode: SizeClasses, below: usize, freed: usize, words: [usize; 2]) {
    let (mut m, ty) = setup_segregated(mode, below);
    let mut kept = vec![m.malloc(64, ty, NOWAIT).unwrap()];
    let i = bucket_of(&m, kept[0]);
    // Empty the list, so that exactly the pieces freed below are on it.
    while m.bucket_stats(i).unwrap().totalfree != 0 {
        kept.push(m.malloc(64, ty, NOWAIT).unwrap());
    }
    let gone: Vec<_> = (0..freed)
        .map(|_| m.malloc(64, ty, NOWAIT).unwrap())
        .collect();
    while m.bucket_stats(i).unwrap().totalfree != 0 {
        kept.push(m.malloc(64, ty, NOWAIT).unwrap());
    }
    for &p in &gone {
        m.free(p, ty).unwrap();
    }
    let head = *gone.last().unwrap();
    // SAFETY: the test plays a client writing over a piece it freed (memory of the host supply,
    // still mapped).
    unsafe { (head.as_ptr() as *mut [usize; 2]).write(words) };
    let free_before = m.bucket_stats(i).unwrap().totalfree;
    let mut live: HashSet<usize> = kept.iter().map(|p| p.as_ptr() as usize).collect();
    let mut got = Vec::new();
    for _ in 0..free_before + 8 {
        let p = m.malloc(64, ty, NOWAIT).unwrap();
        assert!(live.insert(p.as_ptr() as usize), "{p:?} handed out twice");
        got.push(p);
    }
    let s = m.bucket_stats(i).unwrap();
    assert_eq!(s.bad_links, 1, "the bad link is counted once");
    assert_eq!(s.lost, freed - 1, "the pieces after the head are cut off");
    assert_eq!(
        m.take_bad_link(),
        Some((i, head.as_ptr() as usize)),
        "reported"
    );
    assert_eq!(m.take_bad_link(), None, "reported once");
    m.audit().unwrap();
    for p in got.into_iter().chain(kept) {
        m.free(p, ty).unwrap();
    }
    m.audit().unwrap();
    // Every piece is free again (listed or lost): reclaim gives every cluster back, the lost
    // pieces' included, without following their links.
    assert!(m.reclaim() > 0);
    m.audit().unwrap();
    let s = m.bucket_stats(i).unwrap();
    assert_eq!((s.total, s.totalfree, s.lost), (0, 0, 0));
    assert_eq!(m.memory_stats().data_pages, 0, "no page kept");
}

both_modes! {
fn list_poison_over_a_freed_head_is_cut_not_followed(mode) {
    scribble_head(mode, 6, LIST_POISON);
}
}

both_modes! {
fn zeroed_links_of_a_freed_head_are_cut_not_followed(mode) {
    scribble_head(mode, 6, [0, 0]);
}
}

both_modes! {
fn a_scribbled_last_piece_loses_nothing(mode) {
    scribble_head(mode, 1, LIST_POISON);
}
}

both_modes! {
fn a_link_to_a_live_piece_is_refused(mode) {
    let (mut m, ty) = setup(mode);
    let live = m.malloc(64, ty, NOWAIT).unwrap();
    let a = m.malloc(64, ty, NOWAIT).unwrap();
    let b = m.malloc(64, ty, NOWAIT).unwrap();
    let i = bucket_of(&m, live);
    m.free(a, ty).unwrap();
    m.free(b, ty).unwrap();
    // A raw pointer to a live piece of the same class, as a stale client might write.
    // SAFETY: as in `scribble_head`.
    unsafe { (b.as_ptr() as *mut usize).write(live.as_ptr() as usize) };
    let p = m.malloc(64, ty, NOWAIT).unwrap();
    let q = m.malloc(64, ty, NOWAIT).unwrap();
    assert_ne!(q, live, "the live piece is not handed out");
    assert_ne!(p, q);
    assert_eq!(m.bucket_stats(i).unwrap().bad_links, 1);
    m.audit().unwrap();
}
}

both_modes! {
fn scribbles_in_a_types_own_buckets_are_cut_too(mode) {
    scribble_head_segregated(mode, SEGREGATE_ALL, 6, LIST_POISON);
    scribble_head_segregated(mode, SEGREGATE_ALL, 1, [0, 0]);
    scribble_parked(mode, SEGREGATE_ALL);
}
}

both_modes! {
fn scribbles_over_parked_and_listed_clusters_are_never_followed(mode) {
    scribble_parked(mode, 0);
}
}

/// Scribbles over the first piece of 40 clusters, parked and listed, with the core's
/// segregation threshold `below`.
fn scribble_parked(mode: SizeClasses, below: usize) {
    let (mut m, ty) = setup_segregated(mode, below);
    let first = m.malloc(64, ty, NOWAIT).unwrap();
    let i = bucket_of(&m, first);
    let cluster = m.classes().cluster_bytes(i);
    let n = m.bucket_stats(i).unwrap().elmpercl;
    let mut all = vec![first];
    while all.len() < 40 * n {
        all.push(m.malloc(64, ty, NOWAIT).unwrap());
    }
    for &p in &all {
        m.free(p, ty).unwrap();
    }
    // Wholly free clusters beyond the high water are parked, the rest are on the free list.
    let s = m.bucket_stats(i).unwrap();
    assert!(s.totalfree > s.highwat);
    // The client writes over the first words of the first piece of every cluster it used, and
    // of some pieces in the middle of the list.
    let mut bases: Vec<usize> = all
        .iter()
        .map(|p| p.as_ptr() as usize & !(cluster - 1))
        .collect();
    bases.dedup();
    for (k, &b) in bases.iter().enumerate() {
        let words = if k % 2 == 0 { LIST_POISON } else { [0, 0] };
        // SAFETY: as in `scribble_head`.
        unsafe { (b as *mut [usize; 2]).write(words) };
    }
    let mut live = HashSet::new();
    let mut got = Vec::new();
    for _ in 0..all.len() + n {
        let p = m.malloc(64, ty, NOWAIT).unwrap();
        assert!(live.insert(p.as_ptr() as usize), "{p:?} handed out twice");
        got.push(p);
    }
    m.audit().unwrap();
    let s = m.bucket_stats(i).unwrap();
    assert!(s.bad_links >= 2, "the list and the parked list");
    assert!(m.take_bad_link().is_some());
    for p in got {
        m.free(p, ty).unwrap();
    }
    m.audit().unwrap();
    m.reclaim();
    m.audit().unwrap();
    let s = m.bucket_stats(i).unwrap();
    assert_eq!((s.total, s.totalfree, s.lost), (0, 0, 0));
    assert_eq!(m.memory_stats().data_pages, 0, "no page kept");
}
