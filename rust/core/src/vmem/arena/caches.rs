// SPDX-License-Identifier: GPL-2.0

//! Flushing the quantum caches.

use super::*;

impl<P: TagPageSource> Arena<P> {
    /// Flushes the quantum-cache depots back into the arena; `release` receives imported spans
    /// that became wholly free.
    pub fn reap(&mut self, release: &mut dyn FnMut(SpanRelease)) {
        for i in 0..self.depots.ncaches {
            let size = (i + 1) * self.quantum;
            while let Some(addr) = self.depots.pop(i) {
                if let Ok(Some(r)) = self.free_seg::<true>(addr, size) {
                    release(r);
                }
            }
        }
    }
}
