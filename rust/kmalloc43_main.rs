// SPDX-License-Identifier: GPL-2.0

//! kmalloc43: the 4.3BSD kernel malloc on top of vmem arenas, as a loadable module.
//!
//! This is the minimal module that proves the build, boot and test pipeline end to end: it
//! creates `/sys/kernel/debug/kmalloc43/`, takes and gives back a page, exports one C function
//! (see `kmalloc43_exports.c`) and carries one KUnit suite. The allocator cores are mounted at the
//! crate root, under the names they use for each other (`crate::vmem`, `crate::malloc`).

use kernel::{
    debugfs::{Dir, File},
    ffi::c_int,
    fmt,
    page::{Page, PAGE_SIZE},
    prelude::*,
    sync::atomic::{Atomic, Relaxed},
};

#[path = "core/src/vmem/mod.rs"]
pub mod vmem;

#[path = "core/src/malloc/mod.rs"]
pub mod malloc;

module! {
    type: Kmalloc43,
    name: "kmalloc43",
    authors: ["kmalloc43 developers"],
    description: "4.3BSD kernel malloc on vmem arenas",
    license: "GPL",
}

/// Number of successful [`page_cycle`] calls since the module was loaded.
static PAGE_CYCLES: Atomic<usize> = Atomic::new(0);

/// Bytes written and read back at the end of the page by [`page_cycle`].
const PATTERN: [u8; 64] = [0xa5; 64];

/// Takes a page from the page allocator, writes [`PATTERN`] into its last bytes, reads it back
/// and gives the page back.
fn page_cycle() -> Result {
    let page = Page::alloc_page(GFP_KERNEL)?;
    let offset = PAGE_SIZE - PATTERN.len();
    let mut back = [0u8; PATTERN.len()];
    // SAFETY: `PATTERN` is valid for reading `PATTERN.len()` bytes, and nobody else can access
    // `page`, which this function has just allocated, so there is no data race.
    unsafe { page.write_raw(PATTERN.as_ptr(), offset, PATTERN.len())? };
    // SAFETY: `back` is valid for writing `back.len()` bytes and `page` is still private.
    unsafe { page.read_raw(back.as_mut_ptr(), offset, back.len())? };
    if back != PATTERN {
        return Err(EIO);
    }
    PAGE_CYCLES.fetch_add(1, Relaxed);
    Ok(())
}

/// Rust side of the exported `kmalloc43_page_cycle()`: 0 on success, a negative errno otherwise.
///
/// Only `kmalloc43_exports.c` calls this; other modules use the exported C wrapper.
#[no_mangle]
pub extern "C" fn kmalloc43_rust_page_cycle() -> c_int {
    match page_cycle() {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// Formats the `page_cycles` debugfs file.
fn show_page_cycles(_: &(), f: &mut fmt::Formatter<'_>) -> fmt::Result {
    writeln!(f, "{}", PAGE_CYCLES.load(Relaxed))
}

/// The loaded module: its debugfs directory and files, removed on unload.
struct Kmalloc43 {
    _page_cycles: Pin<KBox<File<()>>>,
    _debugfs: Dir,
}

impl kernel::Module for Kmalloc43 {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        page_cycle()?;
        let debugfs = Dir::new(c"kmalloc43");
        let page_cycles = KBox::pin_init(
            debugfs.read_callback_file(c"page_cycles", (), &show_page_cycles),
            GFP_KERNEL,
        )?;
        pr_info!("loaded; page cycle ok\n");
        Ok(Self {
            _page_cycles: page_cycles,
            _debugfs: debugfs,
        })
    }
}

impl Drop for Kmalloc43 {
    fn drop(&mut self) {
        pr_info!("unloaded after {} page cycles\n", PAGE_CYCLES.load(Relaxed));
    }
}

#[kunit_tests(kmalloc43)]
mod tests {
    use super::*;

    #[test]
    fn page_cycle_succeeds_and_counts() -> Result {
        let before = PAGE_CYCLES.load(Relaxed);
        page_cycle()?;
        assert_eq!(PAGE_CYCLES.load(Relaxed), before + 1);
        Ok(())
    }

    #[test]
    fn exported_entry_reports_success() {
        assert_eq!(kmalloc43_rust_page_cycle(), 0);
    }
}
