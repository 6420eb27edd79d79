// SPDX-License-Identifier: GPL-2.0

//! Shared by the malloc test files: run a test in both size-class modes, a small generator.

/// Defines a test that runs once per size-class mode: `both_modes! { fn name(mode) { ... } }`
/// becomes a module `name` with the tests `name::pow2` and `name::fine`, each calling the body
/// with `mode` bound to its [`SizeClasses`](kmalloc43_core::malloc::SizeClasses).
#[macro_export]
macro_rules! both_modes {
    ($(#[$attr:meta])* fn $name:ident($mode:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn run($mode: kmalloc43_core::malloc::SizeClasses) $body

            $(#[$attr])*
            #[test]
            fn pow2() {
                run(kmalloc43_core::malloc::SizeClasses::Pow2)
            }

            $(#[$attr])*
            #[test]
            fn fine() {
                run(kmalloc43_core::malloc::SizeClasses::Fine)
            }
        }
    };
}

/// A small deterministic generator (xorshift).
#[allow(
    dead_code,
    reason = "not every test file that mounts `common` draws numbers"
)]
pub struct Rng(pub u64);

#[allow(
    dead_code,
    reason = "not every test file that mounts `common` draws numbers"
)]
impl Rng {
    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}
