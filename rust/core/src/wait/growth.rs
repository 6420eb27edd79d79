// SPDX-License-Identifier: GPL-2.0

//! The arena-shortage step of `WAITOK`: when the core answers `WouldBlock { Arena }` (no page
//! without sleeping), the caller drops its locks, takes a chunk from the page allocator with a
//! sleeping allocation (`GFP_KERNEL` in the kernel: it may reclaim), deposits it in the page
//! arena's reserve under the lock and retries. It does so at most [`ARENA_RETRIES`] times per
//! call; a supply that fails even when it may sleep ends the call at once.

use crate::malloc::{CHUNK_PAGES, MAXALLOCSAVE};
use crate::vmem::PAGE_SIZE;

/// How often a `WAITOK` call takes a chunk and retries before failing with `NoMemory`.
pub const ARENA_RETRIES: usize = 4;

/// Bytes a chunk must hold to end a shortage met by a request of `want_bytes`: a bucket refill may
/// import a whole cluster chunk (the core's chunk layer) and then metadata pages to register it
/// and its pages, so at least twice a cluster chunk for bucket sizes.
pub fn shortage_bytes(want_bytes: usize) -> usize {
    if want_bytes <= MAXALLOCSAVE {
        want_bytes.max(2 * CHUNK_PAGES * PAGE_SIZE)
    } else {
        want_bytes
    }
}

/// Where chunks come from and go to. Every method is called without the caller's locks held.
pub trait ChunkSupply {
    /// The order of the chunk (`2^order` pages) that holds `bytes`, or `None` if none can.
    fn chunk_order(&self, bytes: usize) -> Option<u32>;

    /// Takes a naturally aligned chunk of `2^order` pages; `may_sleep` allows reclaim. `None` if
    /// the page allocator has none.
    fn take_chunk(&self, order: u32, may_sleep: bool) -> Option<usize>;

    /// Deposits a chunk in the page arena's reserve; the next import uses it.
    ///
    /// # Safety
    ///
    /// `addr` is a chunk of `2^order` pages from [`ChunkSupply::take_chunk`] that nothing else
    /// uses.
    unsafe fn deposit(&self, addr: usize, order: u32);
}

/// The chunks one `WAITOK` call took so far.
#[derive(Debug, Default)]
pub struct Growth {
    tries: usize,
}

impl Growth {
    /// No chunk taken yet.
    pub const fn new() -> Self {
        Self { tries: 0 }
    }

    /// Chunks taken so far (attempts, successful or not).
    pub fn tries(&self) -> usize {
        self.tries
    }

    /// Takes a chunk for a shortage met by a request of `want_bytes` and deposits it: `true` to
    /// retry, `false` (the call fails with `NoMemory`) after [`ARENA_RETRIES`] chunks, if no chunk
    /// can hold the request, or if the supply fails even though it may sleep.
    pub fn grow<S: ChunkSupply + ?Sized>(&mut self, supply: &S, want_bytes: usize) -> bool {
        let order = supply.chunk_order(shortage_bytes(want_bytes));
        let (Some(order), true) = (order, self.tries < ARENA_RETRIES) else {
            return false;
        };
        self.tries += 1;
        let Some(addr) = supply.take_chunk(order, true) else {
            return false;
        };
        // SAFETY: a fresh chunk of `2^order` pages from the supply that nothing else uses.
        unsafe { supply.deposit(addr, order) };
        true
    }
}
