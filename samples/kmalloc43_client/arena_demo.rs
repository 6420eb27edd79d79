// SPDX-License-Identifier: GPL-2.0

//! A vmem arena of port numbers: next-fit allocation, a constrained block, a walk, and a child
//! arena that imports its span from the port arena.

use kernel::prelude::*;

use crate::kmalloc43::{Arena, ArenaBuilder, Constraints, SegKinds, VmFlags};

/// First port of the arena.
const PORT_LO: usize = 1024;
/// One past the last port.
const PORT_HI: usize = 65536;
/// Ports held until unload.
const HELD: usize = 16;

/// The port arena and the ports it holds until unload.
pub(crate) struct Ports {
    arena: Arena<'static>,
    held: KVec<usize>,
}

impl Ports {
    /// Number of ports held.
    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }
}

impl Drop for Ports {
    fn drop(&mut self) {
        for &port in self.held.iter() {
            if let Err(e) = self.arena.free(port, 1) {
                pr_err!("ports: freeing port {} failed: {:?}\n", port, e);
            }
        }
        // `arena` is destroyed after this, with nothing allocated.
    }
}

/// Runs the arena demo; returns the port arena with [`HELD`] ports allocated.
pub(crate) fn run() -> Result<Ports> {
    let arena = ArenaBuilder::new(c"client-ports")
        .span(PORT_LO, PORT_HI - PORT_LO)
        .quantum(1)
        .build()?;

    // Next fit hands out increasing ports even when earlier ones are freed, as a port allocator
    // wants (no quick reuse of a port a peer may still remember).
    let mut held = KVec::with_capacity(HELD, GFP_KERNEL)?;
    for _ in 0..HELD {
        let port = arena.alloc(1, VmFlags::NOSLEEP | VmFlags::NEXT_FIT)?;
        held.push(port, GFP_KERNEL)?;
    }
    let first = held[0];
    arena.free(first, 1)?;
    let next = arena.alloc(1, VmFlags::NOSLEEP | VmFlags::NEXT_FIT)?;
    held[0] = next;
    pr_info!(
        "ports: next fit gave {}..{}, then {} after freeing {}\n",
        first,
        held[HELD - 1],
        next,
        first
    );
    if next == first {
        pr_err!("ports: next fit reused a port at once\n");
    }

    // A block of 64 ports, 64-aligned, in the upper half, not crossing a 1024 boundary.
    let c = Constraints::new().align(64).nocross(1024).min_addr(32768);
    let block = arena.xalloc_segment(64, &c, VmFlags::NOSLEEP)?;
    let ok = block.addr() % 64 == 0
        && block.addr() >= 32768
        && block.addr() / 1024 == (block.addr() + 63) / 1024;
    let verdict = if ok {
        "constraints hold"
    } else {
        "CONSTRAINTS VIOLATED"
    };
    pr_info!(
        "ports: xalloc 64 aligned 64 nocross 1024 above 32768 -> {} ({})\n",
        block.addr(),
        verdict
    );
    if !ok {
        return Err(EIO);
    }
    // Inconsistent constraints are refused: a phase beyond the alignment.
    let bad = arena.xalloc(8, &Constraints::new().align(8).phase(16), VmFlags::NOSLEEP);
    let errno = bad.map_or_else(|e| e.to_errno(), |_| 0);
    pr_info!(
        "ports: xalloc with phase >= align -> {} (-EINVAL expected)\n",
        errno
    );
    if errno != EINVAL.to_errno() {
        return Err(EIO);
    }

    let (mut segs, mut bytes) = (0usize, 0usize);
    arena.walk(SegKinds::ALLOC, |_, size| {
        segs += 1;
        bytes += size;
    })?;
    pr_info!(
        "ports: walk found {} allocated segments, {} ports; size(ALLOC) {}, size(FREE) {}\n",
        segs,
        bytes,
        arena.size(SegKinds::ALLOC),
        arena.size(SegKinds::FREE)
    );
    drop(block);

    // A child arena that imports its spans from the port arena on demand.
    {
        let child = ArenaBuilder::new(c"client-ephemeral")
            .quantum(1)
            .source(&arena)
            .build()?;
        let a = child.alloc(100, VmFlags::NOSLEEP)?;
        let b = child.alloc(100, VmFlags::NOSLEEP)?;
        pr_info!(
            "ephemeral: two 100-port ranges at {} and {} imported from client-ports (now {} allocated there)\n",
            a,
            b,
            arena.size(SegKinds::ALLOC)
        );
        child.free(a, 100)?;
        child.free(b, 100)?;
    }
    pr_info!(
        "ephemeral: destroyed; client-ports back to {} allocated\n",
        arena.size(SegKinds::ALLOC)
    );
    Ok(Ports { arena, held })
}
