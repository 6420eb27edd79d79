// SPDX-License-Identifier: GPL-2.0

//! Negative controls for the kmalloc43 test harness.
//!
//! `make check NEGATIVE=<control>` builds this module with `--cfg kmalloc43_negative_<control>`
//! and loads it in the guest after kmalloc43; `make check` must then fail for the matching
//! reason. `make check-harness` runs every control. Normal builds never contain this module.
//!
//! | control     | what the module does                        | make check must report |
//! |-------------|---------------------------------------------|------------------------|
//! | `fail-test` | adds a KUnit case that fails                | `not-ok`               |
//! | `no-suite`  | leaves out its KUnit suite                  | `missing-suite`        |
//! | `oops`      | reads address 0x10 at init                  | `splat`                |
//! | `warn`      | `warn_on!(true)` at init                    | `splat`                |
//! | `lockdep`   | takes two mutexes in both orders at init    | `splat`                |
//! | `hang`      | sleeps forever at init: no power-off        | `timeout`              |

use kernel::prelude::*;

module! {
    type: Negative,
    name: "kmalloc43_negative",
    authors: ["kmalloc43 developers"],
    description: "Negative controls for the kmalloc43 test harness",
    license: "GPL",
}

/// The loaded control (nothing to keep).
struct Negative;

impl kernel::Module for Negative {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_info!("negative control loaded\n");
        misbehave()?;
        Ok(Negative)
    }
}

/// `oops`: reads an unmapped address.
#[cfg(kmalloc43_negative_oops)]
fn misbehave() -> Result {
    // SAFETY: none, on purpose: address 0x10 is never mapped, so this read makes the kernel Oops.
    let byte = unsafe { core::ptr::read_volatile(0x10 as *const u8) };
    pr_err!("read {byte} from address 0x10\n");
    Ok(())
}

/// `warn`: a kernel warning with a stack trace.
#[cfg(kmalloc43_negative_warn)]
fn misbehave() -> Result {
    kernel::warn_on!(true);
    Ok(())
}

/// `lockdep`: takes mutex A then B, and later B then A. Lockdep reports a possible circular
/// dependency, though nothing deadlocks (one thread).
#[cfg(kmalloc43_negative_lockdep)]
fn misbehave() -> Result {
    let a = KBox::pin_init(kernel::new_mutex!(0u32), GFP_KERNEL)?;
    let b = KBox::pin_init(kernel::new_mutex!(0u32), GFP_KERNEL)?;
    {
        let _a = a.lock();
        let _b = b.lock();
    }
    {
        let _b = b.lock();
        let _a = a.lock();
    }
    Ok(())
}

/// `hang`: never returns, so insmod never returns and the guest never powers off.
#[cfg(kmalloc43_negative_hang)]
fn misbehave() -> Result {
    loop {
        kernel::time::delay::fsleep(kernel::time::Delta::from_secs(1));
    }
}

/// `fail-test`, `no-suite`: nothing at init; they change the KUnit suite below.
#[cfg(not(any(
    kmalloc43_negative_oops,
    kmalloc43_negative_warn,
    kmalloc43_negative_lockdep,
    kmalloc43_negative_hang
)))]
fn misbehave() -> Result {
    Ok(())
}

#[cfg(not(kmalloc43_negative_no_suite))]
#[kunit_tests(kmalloc43_negative)]
mod tests {
    #[test]
    fn passes() {
        assert_eq!(1 + 1, 2);
    }

    #[cfg(kmalloc43_negative_fail_test)]
    #[test]
    fn fails_on_purpose() {
        assert_eq!(1 + 1, 3);
    }
}
