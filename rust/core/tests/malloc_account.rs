// SPDX-License-Identifier: GPL-2.0

//! The core's own charges on a caller's account (`Malloc::malloc_in`, `free_in`, `realloc_in`):
//! the kernel heap's [`ReserveAccount`], where a type's usage is the base in the core's
//! statistics plus per-CPU counters the core never sees, and the limit and the high water are
//! decided on the reserve `R` (exact once every CPU's credit word is revoked), with no per-CPU
//! counter folded into the base first.

#[macro_use]
mod common;

use kmalloc43_core::hosted::malloc_host_pages::HostPages;
use kmalloc43_core::magazine::ledger::{
    self, charge_verdict, uncharge_local, Credit, LocalLedger, Payer, Reserve, ReserveAccount,
};
use kmalloc43_core::malloc::{
    size_class, BlockReason, Malloc, MallocError, MallocFlags, MallocType, TypeStats, SEGREGATE_ALL,
};

const NOWAIT: MallocFlags = MallocFlags::NOWAIT;
const WAITOK: MallocFlags = MallocFlags::WAITOK;
const RUN: usize = 128 * 1024;
const KIB16: usize = 16 * 1024;

/// One type's accounting outside the core: its reserve, two CPUs' credit words, CPU 0's ledger.
struct Outside {
    res: Reserve,
    words: [Credit; 2],
    cpu0: LocalLedger,
}

impl Outside {
    fn new() -> Self {
        Self {
            res: Reserve::default(),
            words: [Credit::new(), Credit::new()],
            cpu0: LocalLedger::default(),
        }
    }

    /// The account the kernel heap gives the core.
    fn account(&mut self) -> ReserveAccount<'_, core::slice::Iter<'_, Credit>> {
        ReserveAccount {
            res: &mut self.res,
            credits: self.words.iter(),
        }
    }

    /// CPU 0 charges `charge` bytes of `ty` (a magazine allocation's slow path).
    fn cpu_charge(&mut self, st: &mut TypeStats, ty: MallocType, charge: usize) {
        let payer = Payer::Cpu {
            local: &mut self.cpu0,
            credit: &self.words[0],
            key: ledger::key(ty),
            batch: 4 * KIB16,
            cap: 16 * KIB16,
        };
        charge_verdict(
            st,
            &mut self.res,
            payer,
            charge,
            self.words.iter(),
            ty,
            NOWAIT,
        )
        .expect("CPU 0's charge");
    }

    /// CPU 0 uncharges an owned free of `charge` bytes under the heap lock.
    fn cpu_uncharge(&mut self, ty: MallocType, charge: usize) {
        let key = ledger::key(ty);
        let (res, word) = (&mut self.res, &self.words[0]);
        assert!(uncharge_local(res, &mut self.cpu0, word, key, charge, true));
    }

    /// The type's exact usage: the base plus CPU 0's counters less the frees elsewhere.
    fn exact(&self, m: &Malloc<HostPages>, ty: MallocType) -> TypeStats {
        let mut st = m.type_stats(ty).unwrap();
        ledger::exact(&mut st, &self.cpu0, ledger::key(ty));
        ledger::exact_elsewhere(&mut st, &self.res);
        st
    }
}

both_modes! {
fn a_run_at_the_limit_is_decided_on_the_reserve_not_on_the_base(mode) {
    let mut m = Malloc::with_segregation(HostPages::new(), mode, SEGREGATE_ALL);
    let ty = m.define_type("runs", "", 2 * RUN).unwrap();
    let mut o = Outside::new();
    // CPU 0 charges 160 KiB in 16 KiB steps: grants and exact charges, none in the base.
    for _ in 0..10 {
        o.cpu_charge(m.type_stats_mut(ty).unwrap(), ty, KIB16);
    }
    assert_eq!(m.type_stats(ty).unwrap().memuse, 0, "nothing in the base");
    // The base alone would allow a 128 KiB run (0 + 128 KiB <= 256 KiB); the usage does not.
    let e = m.malloc_in(RUN, ty, NOWAIT, &mut o.account()).unwrap_err();
    assert_eq!(e, MallocError::Limit { ty, charge: RUN });
    assert!(o.words.iter().all(Credit::is_revoked), "every credit revoked");
    assert_eq!(o.res.reserved, 10 * KIB16, "R is the exact usage");
    let e = m.malloc_in(RUN, ty, WAITOK, &mut o.account()).unwrap_err();
    assert_eq!(
        e,
        MallocError::WouldBlock { ty, reason: BlockReason::Limit }
    );
    // CPU 0 frees 64 KiB: now the run fits, and the high water is the exact usage.
    for _ in 0..4 {
        o.cpu_uncharge(ty, KIB16);
    }
    let p = m.malloc_in(RUN, ty, NOWAIT, &mut o.account()).unwrap();
    let st = o.exact(&m, ty);
    assert_eq!((st.memuse, st.inuse, st.calls), (6 * KIB16 + RUN, 7, 11));
    assert_eq!((st.maxused, st.limblocks), (6 * KIB16 + RUN, 2));
    assert_eq!(o.res.reserved, 6 * KIB16 + RUN, "R = U, every word still revoked");
    let base = m.type_stats(ty).unwrap();
    assert_eq!((base.memuse, base.inuse), (RUN, 1), "the run counted in the base");
    // Its free leaves R and the base.
    m.free_in(p, ty, &mut o.account()).unwrap();
    assert_eq!((o.res.reserved, m.type_stats(ty).unwrap().memuse), (6 * KIB16, 0));
    for _ in 0..6 {
        o.cpu_uncharge(ty, KIB16);
    }
    assert_eq!((o.exact(&m, ty).memuse, o.res.reserved), (0, 0));
    m.audit().unwrap();
}}

both_modes! {
fn a_charge_taken_back_leaves_the_reserve_and_the_high_water(mode) {
    // Eight data pages: a 128 KiB run cannot be had.
    let mut m = Malloc::with_segregation(HostPages::with_limit(8), mode, SEGREGATE_ALL);
    let ty = m.define_type("short", "", usize::MAX).unwrap();
    let mut o = Outside::new();
    o.cpu_charge(m.type_stats_mut(ty).unwrap(), ty, KIB16);
    let before = (m.type_stats(ty).unwrap(), o.res);
    let e = m.malloc_in(RUN, ty, NOWAIT, &mut o.account()).unwrap_err();
    assert_eq!(e, MallocError::NoMemory { ty, size: RUN });
    let after = m.type_stats(ty).unwrap();
    assert_eq!(after.mapblocks, before.0.mapblocks + 1);
    assert_eq!(TypeStats { mapblocks: before.0.mapblocks, ..after }, before.0);
    assert_eq!(o.res.reserved, before.1.reserved, "R unchanged");
    // The core's own account too: no high water from a charge that was taken back.
    let e = m.malloc(RUN, ty, NOWAIT).unwrap_err();
    assert_eq!(e, MallocError::NoMemory { ty, size: RUN });
    assert_eq!(m.type_stats(ty).unwrap().maxused, after.maxused);
    o.cpu_uncharge(ty, KIB16);
    m.audit().unwrap();
}}

both_modes! {
fn a_free_the_base_does_not_count_leaves_the_reserve_and_is_taken_off_readings(mode) {
    let mut m = Malloc::with_segregation(HostPages::new(), mode, SEGREGATE_ALL);
    let ty = m.define_type("pieces", "", usize::MAX).unwrap();
    let mut o = Outside::new();
    // A piece as a magazine serves it: charged on CPU 0, taken from the piece layer.
    let c = size_class(m.classes(), 64).unwrap();
    let mut one = [0usize];
    m.take_for_magazine(c, ty, NOWAIT, &mut one).unwrap();
    let charge = m.usable_size(core::ptr::NonNull::new(one[0] as *mut u8).unwrap()).unwrap();
    o.cpu_charge(m.type_stats_mut(ty).unwrap(), ty, charge);
    // Freed through the core (as the kernel's global path would): the base does not cover it.
    let p = core::ptr::NonNull::new(one[0] as *mut u8).unwrap();
    m.free_in(p, ty, &mut o.account()).unwrap();
    assert_eq!((o.res.freed_bytes, o.res.freed), (charge, 1));
    let st = o.exact(&m, ty);
    assert_eq!((st.memuse, st.inuse, st.calls), (0, 0, 1));
    assert_eq!(o.res.reserved, o.words[0].get(), "R = U + C with U = 0");
    m.audit().unwrap();
}}

both_modes! {
fn a_shared_piece_is_judged_on_the_exact_usage(mode) {
    // No segregation: a piece's record names no owner, so its type is judged by the usage.
    let mut m = Malloc::with_classes(HostPages::new(), mode);
    let a = m.define_type("a", "", usize::MAX).unwrap();
    let b = m.define_type("b", "", usize::MAX).unwrap();
    let (mut oa, mut ob) = (Outside::new(), Outside::new());
    let p = m.malloc_in(200, a, NOWAIT, &mut oa.account()).unwrap();
    let charge = m.usable_size(p).unwrap();
    // `b` has no usage at all: refused, nothing changed.
    let e = m.free_in(p, b, &mut ob.account()).unwrap_err();
    assert_eq!(e, MallocError::WrongType { addr: p.as_ptr() as usize, given: b, owner: None });
    assert_eq!(m.type_stats(a).unwrap().inuse, 1);
    // `a`'s usage is also on CPU 0, which holds a word granted since the last revocation (an
    // exact charge, a free, a grant): the check revokes it, so that R is the exact usage,
    // before it judges.
    for _ in 0..2 {
        oa.cpu_charge(m.type_stats_mut(a).unwrap(), a, charge);
    }
    oa.cpu_uncharge(a, charge);
    oa.cpu_charge(m.type_stats_mut(a).unwrap(), a, charge);
    assert!(!oa.words[0].is_revoked(), "granted");
    assert_eq!(
        m.realloc_in(p, charge, a, NOWAIT, &mut oa.account()),
        Ok(p),
        "same class"
    );
    assert!(oa.words[0].is_revoked());
    m.free_in(p, a, &mut oa.account()).unwrap();
    oa.cpu_uncharge(a, charge);
    oa.cpu_uncharge(a, charge);
    assert_eq!((oa.exact(&m, a).memuse, oa.res.reserved), (0, 0));
    m.audit().unwrap();
}}
