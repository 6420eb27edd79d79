// SPDX-License-Identifier: GPL-2.0

//! Sample Rust client of kmalloc43.
//!
//! Defines four malloc types with limits and runs the kind of mix a kernel subsystem would:
//! 1 KiB pathname buffers (`namei`), small protocol control blocks (`inpcb`), a few large I/O
//! buffers (`iobuf`, whole pages), a `realloc`, and a vmem arena of port numbers. It frees most
//! of it, keeps some until unload (so `/sys/kernel/debug/kmalloc43/types` has something to show)
//! and prints what it did. Then it demonstrates a type limit (`mbuf`, [`limit_demo`]):
//! `NOWAIT` fails at the limit, a `WAITOK` allocation in a workqueue worker blocks, and a free
//! from module init wakes it.
//!
//! The module imports kmalloc43's exported symbols, so it loads only after kmalloc43.

use kernel::prelude::*;

/// The kmalloc43 client API (`rust/client/`).
#[path = "../rust/client/kmalloc43.rs"]
pub mod kmalloc43;

#[path = "kmalloc43_client/arena_demo.rs"]
mod arena_demo;
#[path = "kmalloc43_client/limit_demo.rs"]
mod limit_demo;
#[path = "kmalloc43_client/mix.rs"]
mod mix;
#[path = "kmalloc43_client/tests.rs"]
mod tests;

use kmalloc43::TypeRegistration;

module! {
    type: Kmalloc43Client,
    name: "kmalloc43_client",
    authors: ["kmalloc43 developers"],
    description: "Sample Rust client of kmalloc43: malloc types, limits, arenas",
    license: "GPL",
}

kmalloc43::define_type!(
    /// Pathname buffers, as namei(9) would take them: 1 KiB each.
    M_NAMEI, c"namei", c"pathname buffers", 256 * 1024
);
kmalloc43::define_type!(
    /// Internet protocol control blocks: small, many.
    M_INPCB, c"inpcb", c"protocol control blocks", 64 * 1024
);
kmalloc43::define_type!(
    /// Large I/O buffers (whole pages).
    M_IOBUF, c"iobuf", c"large I/O buffers", 0
);
kmalloc43::define_type!(
    /// Network buffers, with a small limit that [`limit_demo`] runs into.
    M_MBUF, c"mbuf", c"network buffers (limit demo)", limit_demo::MBUF_LIMIT
);

/// The loaded module: what the mix kept, the port arena, and the type registrations.
///
/// Fields drop in declaration order, so the allocations go before the registrations (a type
/// cannot be undefined while it has live allocations).
struct Kmalloc43Client {
    kept: mix::Kept,
    ports: arena_demo::Ports,
    _types: KVec<TypeRegistration>,
}

impl kernel::Module for Kmalloc43Client {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let mut types = KVec::with_capacity(4, GFP_KERNEL)?;
        for ty in [&M_INPCB, &M_IOBUF, &M_MBUF, &M_NAMEI] {
            types.push(ty.define()?, GFP_KERNEL)?;
        }
        pr_info!("defined malloc types namei (limit 256 KiB), inpcb (64 KiB), iobuf (none), mbuf (8 KiB)\n");

        let kept = mix::run()?;
        // Undefining a type with live allocations is refused, and the type stays usable.
        if let Some(namei) = types.pop() {
            match namei.undefine() {
                Ok(()) => {
                    pr_err!("undefine of namei with live allocations succeeded\n");
                    return Err(EIO);
                }
                Err((namei, e)) => {
                    pr_info!(
                        "undefine namei with {} live buffers: refused with {} (-EBUSY, expected)\n",
                        kept.namei_count(),
                        e.to_errno()
                    );
                    types.push(namei, GFP_KERNEL)?;
                }
            }
        }
        let ports = arena_demo::run()?;
        limit_demo::run()?;

        pr_info!("ready: kmstat or /sys/kernel/debug/kmalloc43/ show what is still allocated\n");
        Ok(Self {
            kept,
            ports,
            _types: types,
        })
    }
}

impl Drop for Kmalloc43Client {
    fn drop(&mut self) {
        pr_info!(
            "unloading: freeing {} kept allocations and {} ports\n",
            self.kept.count(),
            self.ports.held()
        );
    }
}
