// SPDX-License-Identifier: GPL-2.0

//! The examples the documentation shows, as real code: compiled with the sample client and run by
//! its KUnit suite (`tests.rs`). `Documentation/api.rst` includes the regions between the
//! `doc:<name>` markers by `literalinclude`; `README.md` quotes them, and
//! `tools/tests/doc-examples.sh` (in `make check`) fails if a quote and its region differ.

use kernel::prelude::*;

use crate::kmalloc43::{
    self, ArenaBuilder, Buffer, Constraints, Flags, MBox, MVec, SegKinds, TypedBox, VmFlags,
};

// doc:types-begin
kmalloc43::define_type!(
    /// Protocol control blocks.
    M_PCB, c"pcb", c"protocol control blocks", 64 * 1024
);

/// A protocol control block.
struct Pcb {
    lport: u16,
    fport: u16,
    state: u32,
}

impl Pcb {
    fn new(lport: u16, fport: u16) -> Self {
        Pcb {
            lport,
            fport,
            state: 1,
        }
    }
}
// doc:types-end

/// The README's example: a type, the kernel's containers charged to it, the wrapper's own.
pub(crate) fn readme() -> Result {
    // doc:readme-begin
    let reg = M_PCB.define()?; // undefines M_PCB when dropped
    let pcb = MBox::<Pcb, M_PCB>::new(Pcb::new(80, 4000), GFP_NOWAIT)?;
    let mut path = MVec::<u8, M_PCB>::new(); // kernel::alloc::Vec<u8, Typed<M_PCB>>
    path.extend_from_slice(b"/usr/share/dict/words\0", GFP_KERNEL)?;
    let mut buf = Buffer::new(&M_PCB, 1024, Flags::WAITOK)?; // zeroed, shows its usable size
    buf.realloc(2048, Flags::WAITOK)?;
    let stats = M_PCB.stats()?; // exact: 3 in use, their size classes in bytes
    pr_info!("pcb: {} in use, {} B\n", stats.inuse, stats.memuse);
    drop((pcb, path, buf));
    // All freed: undefined (refused with EBUSY while allocations are live).
    drop(reg);
    // doc:readme-end
    Ok(())
}

/// `Documentation/api.rst`'s malloc example.
pub(crate) fn api_malloc() -> Result {
    // doc:api-malloc-begin
    let reg = M_PCB.define()?;
    // The kernel's Box, charged to M_PCB; GFP_KERNEL may sleep at the type's limit.
    let pcb = MBox::<Pcb, M_PCB>::new(Pcb::new(80, 4000), GFP_KERNEL)?;
    // A type chosen at run time: the wrapper's TypedBox takes a &'static MallocType.
    let boxed = TypedBox::new(&M_PCB, Pcb::new(22, 4001), Flags::NOWAIT)?;
    let mut path = Buffer::new(&M_PCB, 1024, Flags::WAITOK)?; // zeroed
    path[..5].copy_from_slice(b"/tmp\0");
    path.realloc(2048, Flags::WAITOK)?; // keeps the bytes, zeroes the growth
    if pcb.lport + boxed.lport != 102 || pcb.fport + boxed.fport != 8001 || boxed.state != 1 {
        return Err(EIO);
    }
    drop((pcb, boxed, path)); // allocations first, then the registration
    reg.undefine().map_err(|(_, e)| e)?;
    // doc:api-malloc-end
    Ok(())
}

/// `Documentation/api.rst`'s arena example.
pub(crate) fn api_arena() -> Result {
    // doc:api-arena-begin
    let ports = ArenaBuilder::new(c"ports")
        .span(1024, 64512)
        .quantum(1)
        .build()?;
    let port = ports.alloc(1, VmFlags::NOSLEEP | VmFlags::NEXT_FIT)?;
    let c = Constraints::new().align(64).nocross(1024).min_addr(32768);
    let block = ports.xalloc_segment(64, &c, VmFlags::NOSLEEP)?; // freed on drop
    ports.walk(SegKinds::ALLOC, |base, size| pr_info!("{base} +{size}\n"))?;
    let child = ArenaBuilder::new(c"ephemeral").source(&ports).build()?;
    drop((child, block));
    ports.free(port, 1)?;
    // doc:api-arena-end
    Ok(())
}
