// SPDX-License-Identifier: GPL-2.0

//! Quotients printed with a fixed number of decimals (the kernel has no floating point).

use kernel::fmt;

/// `num / den` shown with `DECIMALS` decimals, rounded to nearest; `-` when `den` is 0.
#[derive(Clone, Copy)]
pub(crate) struct Quotient<const DECIMALS: u32> {
    /// Dividend.
    pub(crate) num: u64,
    /// Divisor.
    pub(crate) den: u64,
}

/// A quotient with one decimal (nanoseconds per pair).
pub(crate) type Tenths = Quotient<1>;
/// A quotient with two decimals (ratios).
pub(crate) type Hundredths = Quotient<2>;
/// A quotient with three decimals (ratios far below 1).
pub(crate) type Thousandths = Quotient<3>;

/// `num / den`.
pub(crate) fn quotient<const D: u32>(num: u64, den: u64) -> Quotient<D> {
    Quotient { num, den }
}

impl<const DECIMALS: u32> fmt::Display for Quotient<DECIMALS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scale = 10u64.pow(DECIMALS);
        // The numbers here (nanoseconds, bytes) are far below u64::MAX / 100; no u128 division
        // (the kernel has no __udivti3).
        let scaled = match self.num.checked_mul(scale) {
            Some(n) if self.den != 0 => (n + self.den / 2) / self.den,
            _ => return f.pad("-"),
        };
        let (int, frac) = (scaled / scale, scaled % scale);
        let mut buf = [0u8; 48];
        let mut w = kernel::str::Formatter::new(&mut buf);
        // The buffer holds any u64 and the decimals.
        let _ = fmt::Write::write_fmt(
            &mut w,
            core::format_args!("{int}.{frac:0width$}", width = DECIMALS as usize),
        );
        let len = w.bytes_written();
        f.pad(core::str::from_utf8(&buf[..len]).unwrap_or("?"))
    }
}

/// The larger of two fractions `(num, den)` (exact: cross-multiplied in 128 bits).
pub(crate) fn larger(a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
    if u128::from(b.0) * u128::from(a.1) > u128::from(a.0) * u128::from(b.1) {
        b
    } else {
        a
    }
}
