// SPDX-License-Identifier: GPL-2.0

//! One timed aging pass of kmalloc43's heap on demand: `kmalloc43_age()`.

use kernel::{error::to_result, prelude::*};

use super::ffi;

/// What one aging pass gave back: `struct kmalloc43_aged` (`rounds` from the per-CPU magazines
/// and the depots, bucket `clusters` to kmem, `pages` to the page allocator).
pub type Aged = ffi::kmalloc43_aged;

/// Runs one timed aging pass of kmalloc43's heap now (what its periodic work, debugfs
/// `aging_interval`, does every interval) and returns what the pass gave back.
///
/// Each CPU's magazines that served nothing since the last pass (this one's or the work's) and
/// what the depots' working sets no longer need go back to the buckets; clusters parked for the
/// whole period since the last pass go back to kmem, and free chunks to the page allocator. An
/// idle heap needs about three passes to give everything back, so a client that wants memory
/// back at once, or measures an idle footprint, calls it a few times. The pass is counted with
/// the periodic work's (debugfs `drain`, "Timed aging").
///
/// Errors: `ENODEV` if kmalloc43 is not initialised.
///
/// Context: process context without spinlocks: it may sleep (it takes each CPU's slot in turn;
/// kmalloc43 checks with `might_sleep()`).
pub fn age() -> Result<Aged> {
    let mut out = Aged::default();
    // SAFETY: `out` is a valid, writable `struct kmalloc43_aged`; the context `kmalloc43_age()`
    // requires is this function's documented one (kmalloc43 checks it with `might_sleep()`).
    to_result(unsafe { ffi::kmalloc43_age(&mut out) })?;
    Ok(out)
}
