// SPDX-License-Identifier: GPL-2.0

//! Fuzz target: arbitrary sequences of malloc/free/realloc, bad frees (foreign, interior, double
//! free of recently freed memory with DIAGNOSTIC on or off, wrong type), limit changes and
//! DIAGNOSTIC toggles, in both size-class modes (bit 1 of the first byte), with type segregation
//! off, below 256 B or for every class (bits 2-3). Every call must return (no panic), the
//! contents of live allocations must survive, and `audit()` must pass throughout; a wrong-type
//! free of a segregated piece or run is `WrongType` naming the owner.

#![no_main]

use std::ptr::NonNull;

use kmalloc43_core::hosted::malloc_host_pages::{host_vmem_kmem, HostPages};
use kmalloc43_core::malloc::{
    KmemPages, Malloc, MallocError, MallocFlags, MallocType, SizeClasses, MAXALLOCSAVE, PAGE_SIZE,
    SEGREGATE_ALL,
};
use libfuzzer_sys::fuzz_target;

struct Live {
    p: NonNull<u8>,
    size: usize,
    ty: usize,
    byte: u8,
    /// DIAGNOSTIC epoch the allocation was tagged in (0: not tagged with its type).
    epoch: u32,
}

fn fill(p: NonNull<u8>, size: usize, byte: u8) {
    // SAFETY: `p..p + size` is a live allocation owned by the harness.
    unsafe { std::ptr::write_bytes(p.as_ptr(), byte, size) }
}

fn intact(l: &Live) -> bool {
    // SAFETY: `l` is a live allocation owned by the harness.
    let s = unsafe { std::slice::from_raw_parts(l.p.as_ptr(), l.size) };
    s.iter().all(|&b| b == l.byte)
}

fn run<K: KmemPages>(kmem: K, mode: SizeClasses, below: usize, data: &[u8]) {
    let mut m = Malloc::with_segregation(kmem, mode, below);
    let types: Vec<MallocType> = (0..3)
        .map(|i| {
            m.define_type("fuzz", "", if i == 2 { 32 * 1024 } else { usize::MAX })
                .unwrap()
        })
        .collect();
    let mut live: Vec<Live> = Vec::new();
    // Freed since the last malloc, realloc or DIAGNOSTIC switch: not reused yet, so a second
    // free must fail (DoubleFree, or ForeignPointer once the pages went back to kmem).
    let mut freed: Vec<(NonNull<u8>, usize)> = Vec::new();
    let mut byte = 0u8;
    let mut epoch = 0u32;
    let tag = |m: &Malloc<K>, epoch: u32| if m.diagnostic() { epoch } else { 0 };
    let mut it = data.chunks_exact(4);
    for (n, c) in it.by_ref().enumerate() {
        let arg = u16::from_le_bytes([c[1], c[2]]) as usize;
        let ty = c[3] as usize % types.len();
        let flags = if c[3] & 0x80 != 0 {
            MallocFlags::NOWAIT | MallocFlags::ZERO
        } else {
            MallocFlags::NOWAIT
        };
        match c[0] % 10 {
            0..=3 => {
                freed.clear();
                let size = match c[0] / 10 % 4 {
                    0 => arg % 1100,
                    1 => 1 << (arg % 16),
                    2 => (arg % 8) * PAGE_SIZE + (c[3] as usize % 3),
                    _ => arg,
                };
                if let Ok(p) = m.malloc(size, types[ty], flags) {
                    byte = byte.wrapping_add(1);
                    fill(p, size, byte);
                    let e = tag(&m, epoch);
                    live.push(Live {
                        p,
                        size,
                        ty,
                        byte,
                        epoch: e,
                    });
                }
            }
            4 | 5 if !live.is_empty() => {
                let l = live.swap_remove(arg % live.len());
                assert!(intact(&l));
                m.free(l.p, types[l.ty]).unwrap();
                freed.push((l.p, l.ty));
                if c[3] & 0x40 != 0 {
                    let (p, t) = freed[c[3] as usize % freed.len()];
                    let before = m.type_stats(types[t]).unwrap();
                    assert!(matches!(
                        m.free(p, types[t]),
                        Err(MallocError::DoubleFree { .. } | MallocError::ForeignPointer { .. })
                    ));
                    assert_eq!(m.type_stats(types[t]).unwrap(), before);
                }
            }
            6 if !live.is_empty() => {
                freed.clear();
                let i = arg % live.len();
                let size = (c[3] as usize) * 64;
                let l = &mut live[i];
                if let Ok(q) = m.realloc(l.p, size, types[l.ty], MallocFlags::NOWAIT) {
                    let keep = l.size.min(size);
                    // SAFETY: the first `keep` bytes were copied into the live allocation `q`.
                    let s = unsafe { std::slice::from_raw_parts(q.as_ptr(), keep) };
                    assert!(s.iter().all(|&b| b == l.byte));
                    if q != l.p {
                        l.epoch = tag(&m, epoch);
                        freed.push((l.p, l.ty));
                    }
                    l.p = q;
                    l.size = size;
                    fill(q, size, l.byte);
                }
            }
            7 if !live.is_empty() => {
                // Bad frees: interior pointer, wrong type. None may change anything.
                let l = &live[arg % live.len()];
                // Stay inside the allocation: past its end lies the next (valid) piece.
                let usable = m.usable_size(l.p).unwrap();
                let off = 1 + (c[3] as usize % (usable.min(64) - 1));
                let interior = NonNull::new(l.p.as_ptr().wrapping_add(off)).unwrap();
                assert!(m.free(interior, types[l.ty]).is_err());
                let other = (l.ty + 1) % types.len();
                // Allocations made before DIAGNOSTIC was switched on have no known owner.
                let segregated = if l.size > MAXALLOCSAVE {
                    below != 0
                } else {
                    usable < below
                };
                if segregated {
                    let wrong = MallocError::WrongType {
                        addr: l.p.as_ptr() as usize,
                        given: types[other],
                        owner: Some(types[l.ty]),
                    };
                    assert_eq!(m.free(l.p, types[other]), Err(wrong));
                } else if m.diagnostic() && l.epoch == epoch {
                    assert!(m.free(l.p, types[other]).is_err());
                }
                assert!(intact(l));
            }
            8 => {
                let mut local = [0u64; 2];
                let foreign = NonNull::new(local.as_mut_ptr().cast::<u8>()).unwrap();
                assert!(m.free(foreign, types[ty]).is_err());
                if c[3] & 1 == 0 {
                    freed.clear();
                    let on = !m.diagnostic();
                    if m.set_diagnostic(on).is_ok() && on {
                        epoch += 1;
                    }
                } else {
                    m.set_limit(types[2], arg * 64).unwrap();
                }
            }
            _ => {
                m.reclaim();
            }
        }
        if n % 64 == 0 {
            m.audit().unwrap();
        }
    }
    m.audit().unwrap();
    for l in live.drain(..) {
        assert!(intact(&l));
        m.free(l.p, types[l.ty]).unwrap();
    }
    m.audit().unwrap();
    for t in types {
        m.undefine_type(t).unwrap();
    }
}

fuzz_target!(|data: &[u8]| {
    let first = data.first().copied().unwrap_or(0);
    let mode = if first & 2 == 0 {
        SizeClasses::Pow2
    } else {
        SizeClasses::Fine
    };
    let below = [0, 256, SEGREGATE_ALL, SEGREGATE_ALL][(first as usize >> 2) & 3];
    if first & 1 == 1 {
        run(
            host_vmem_kmem(64 * 1024, Some(8 << 20)),
            mode,
            below,
            &data[1..],
        );
    } else {
        let mut k = HostPages::with_limit(512);
        k.set_meta_limit(Some(64));
        run(k, mode, below, data.get(1..).unwrap_or(&[]));
    }
});
