// SPDX-License-Identifier: GPL-2.0

//! The kernel's wait protocols, as `no_std` code generic over the caller's lock, wait queue and
//! page supply.
//!
//! The cores never sleep: a `WAITOK` malloc that meets a type limit or finds no page answers
//! [`MallocError::WouldBlock`](crate::malloc::MallocError::WouldBlock), and a vmem allocation
//! that needs a span answers [`VmemError::ImportNeeded`](crate::vmem::VmemError::ImportNeeded).
//! What a caller does then is a protocol, and it lives here, once:
//!
//! * [`queue`]: the wait queue's state under the caller's lock (sleepers and a wake sequence), so
//!   that a sleeper that drops its locks before sleeping loses no wake.
//! * [`growth`]: the arena-shortage step of `WAITOK`: take a chunk with a sleeping page
//!   allocation outside every lock, deposit it, retry; at most [`ARENA_RETRIES`] times.
//! * [`waitok`]: the `WAITOK` loop of the malloc heap (sleep at a limit, grow on a shortage,
//!   retry once after a repaired free list), over a [`Waitok`] implementation.
//! * [`vmem_sleep`]: the vmem import/sleep loop (import from the source without the arena lock,
//!   sleep for a free with `SLEEP`), over a [`VmemWait`] implementation.
//!
//! The kernel glue implements the traits with `SpinLockIrq`, `CondVar` and the page allocator
//! (`rust/glue/heap.rs`, `rust/glue/arenas.rs`); the host with `Mutex`, `Condvar` and a page
//! supply that tests can make fail (`hosted::malloc_wait`, `hosted::vmem`), so the host tests run
//! the very protocol the kernel runs.

pub mod growth;
pub mod queue;
pub mod vmem_sleep;
pub mod waitok;

pub use growth::{shortage_bytes, ChunkSupply, Growth, ARENA_RETRIES};
pub use queue::{Ticket, WaitQueue};
pub use vmem_sleep::{alloc_sleeping, import_span, wake_sleepers, VmemWait, VmemWaitError};
pub use waitok::{run, wake_all, Waitok};
