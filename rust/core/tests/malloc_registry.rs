// SPDX-License-Identifier: GPL-2.0

//! The type registry's ownership decisions (`kmalloc43_core::malloc::Registry`) on a real malloc
//! core: a going owner's types undefined or orphaned (renamed, counters kept, frees still
//! accepted, the old struct refused), adoption by the owner's reload, refusals for another module
//! and for a taken name, the log lines the guest step matches, and the arenas' fate.

use kmalloc43_core::hosted::malloc_host_pages::HostPages;
use kmalloc43_core::malloc::{
    arena_fate, ArenaFate, ArenaNote, ClientTable, Defined, Level, Malloc, MallocError,
    MallocFlags, MallocType, ModuleName, Owner, Registry, RegistryError, ShownName, SizeClasses,
    TypeRecord, SEGREGATE_ALL,
};

type Reg = Registry<Box<TypeRecord>>;

/// A registry on a malloc core, with the client table and the log.
struct Sut {
    m: Malloc<HostPages>,
    reg: Reg,
    clients: ClientTable,
    log: Vec<(Level, String)>,
}

/// A module's identity and name.
fn module(id: usize, name: &str) -> Owner {
    Owner {
        id,
        name: ModuleName::new(name.as_bytes()),
    }
}

impl Sut {
    fn new() -> Self {
        Self::segregated(0)
    }

    /// As `new`, with the core's segregation threshold `below`.
    fn segregated(below: usize) -> Self {
        Sut {
            m: Malloc::with_segregation(HostPages::new(), SizeClasses::Fine, below),
            reg: Registry::new(),
            clients: ClientTable::new(),
            log: Vec::new(),
        }
    }

    /// Defines `name` for the client struct at `client` of `owner`, with `limit`.
    fn define(
        &mut self,
        client: usize,
        owner: Owner,
        name: &str,
        limit: usize,
    ) -> Result<Defined, RegistryError> {
        let rec = Box::new(TypeRecord::new(
            name.as_bytes(),
            b"a test type",
            client,
            owner,
        )?);
        let log = &mut self.log;
        self.reg
            .define(&mut self.m, &self.clients, rec, limit, |n| {
                log.push((n.level(), n.to_string()))
            })
    }

    fn undefine(&mut self, client: usize, ty: MallocType) -> Result<(), RegistryError> {
        let log = &mut self.log;
        self.reg
            .undefine(&mut self.m, &self.clients, client, ty, |n| {
                log.push((n.level(), n.to_string()))
            })
            .map(drop)
    }

    /// `owner` goes; the types whose records went.
    fn going(&mut self, owner: &Owner) -> Vec<MallocType> {
        let (log, mut gone) = (&mut self.log, Vec::new());
        self.reg.module_going(
            &mut self.m,
            &self.clients,
            owner,
            |n| log.push((n.level(), n.to_string())),
            |ty, r| {
                assert_eq!(r.ty(), ty);
                gone.push(ty);
            },
        );
        gone
    }

    /// What a call through the struct at `client`, whose handle field holds `raw`, reaches.
    fn find(&self, client: usize, ty: MallocType) -> Option<MallocType> {
        self.clients.find(client, ClientTable::handle_value(ty))
    }

    fn take_log(&mut self) -> Vec<(Level, String)> {
        std::mem::take(&mut self.log)
    }
}

/// The core's "no limit" (the C ABI's 0 is the glue's to map).
const NO_LIMIT: usize = usize::MAX;

const STRUCT_A: usize = 0x1000;
const STRUCT_B: usize = 0x2000;
const STRUCT_C: usize = 0x3000;

/// An owner that goes with a type without live allocations: the type is undefined, its record
/// goes, its name is free again, the struct no longer reaches anything.
#[test]
fn going_owner_without_live_allocations_undefines() {
    let mut s = Sut::new();
    let owner = module(0xa000, "client");
    let ty = s
        .define(STRUCT_A, owner, "idle", NO_LIMIT)
        .expect("define")
        .ty();
    assert_eq!(s.find(STRUCT_A, ty), Some(ty));
    // A struct whose handle field is 0 (never defined), or holds any value past the slots,
    // reaches nothing, whatever its address.
    for raw in [0, u32::MAX, 0xffff, 0x1_0000] {
        assert_eq!(s.clients.find(STRUCT_A, raw), None, "raw handle {raw:#x}");
    }
    let p = s.m.malloc(64, ty, MallocFlags::WAITOK).expect("malloc");
    s.m.free(p, ty).expect("free");

    assert_eq!(s.going(&owner), vec![ty]);
    assert_eq!(
        s.take_log(),
        vec![(
            Level::Error,
            "module client unloaded with type idle still defined (no live allocations): undefined"
                .to_string()
        )]
    );
    assert_eq!(s.find(STRUCT_A, ty), None);
    assert!(matches!(s.m.type_stats(ty), Err(MallocError::UnknownType)));
    assert_eq!(s.reg.records().count(), 0);
    // Its name is free for anyone.
    let again = s.define(STRUCT_B, module(0xb000, "other"), "idle", NO_LIMIT);
    assert!(matches!(again, Ok(Defined::New(_))));
    s.m.audit().expect("audit");
}

/// An owner that goes with live allocations: the type is orphaned (renamed, counters and limit
/// kept), the old struct is refused, frees through the core handle are still accepted; types of
/// other owners and built-in ones are untouched; the reload of the same module adopts it.
#[test]
fn going_owner_with_live_allocations_orphans_and_the_reload_adopts() {
    // With type-segregated buckets the orphan keeps its own clusters too, and they still refuse
    // another type's free.
    for below in [0, SEGREGATE_ALL] {
        orphan_and_adopt(below);
    }
}

fn orphan_and_adopt(below: usize) {
    let mut s = Sut::segregated(below);
    let owner = module(0xa000, "client");
    let ty = s.define(STRUCT_A, owner, "pcb", 8192).expect("define").ty();
    let other = s
        .define(STRUCT_B, module(0xb000, "other"), "other", NO_LIMIT)
        .expect("define")
        .ty();
    let builtin = s
        .define(STRUCT_C, Owner::BUILTIN, "builtin", NO_LIMIT)
        .expect("define")
        .ty();
    let p = s.m.malloc(100, ty, MallocFlags::WAITOK).expect("malloc");
    let q = s.m.malloc(5000, ty, MallocFlags::WAITOK).expect("malloc");
    let r = s.m.malloc(48, ty, MallocFlags::WAITOK).expect("malloc");
    let before = s.m.type_stats(ty).expect("stats");

    assert_eq!(s.going(&owner), vec![]);
    let log = s.take_log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].0, Level::Error);
    assert_eq!(
        log[0].1,
        format!(
            "module client unloaded with 3 live allocations ({} bytes) of type pcb: orphaned until it is loaded again",
            before.memuse
        )
    );
    // Renamed, counters and limit kept.
    let st = s.m.type_stats(ty).expect("the orphan stays defined");
    assert_eq!(st.name, "pcb(orphan)");
    assert_eq!(
        (st.inuse, st.memuse, st.calls, st.limit),
        (3, before.memuse, before.calls, 8192)
    );
    let rec = s.reg.records().find(|r| r.name() == "pcb").expect("record");
    assert!(rec.is_orphan());
    assert_eq!(rec.owner().id, 0);
    assert_eq!(rec.owner().name, owner.name);
    // The old struct reaches nothing; the others are untouched.
    assert_eq!(s.find(STRUCT_A, ty), None);
    assert_eq!(s.find(STRUCT_B, other), Some(other));
    assert_eq!(s.find(STRUCT_C, builtin), Some(builtin));
    if below != 0 {
        let addr = p.as_ptr() as usize;
        let wrong = MallocError::WrongType {
            addr,
            given: other,
            owner: Some(ty),
        };
        assert_eq!(s.m.free(p, other), Err(wrong), "the orphan's own cluster");
    }
    // Whoever frees through the core's handle (the glue, after an adoption) is still accepted.
    s.m.free(r, ty).expect("free of an orphan's allocation");
    assert_eq!(s.m.type_stats(ty).expect("stats").inuse, 2);
    // Going again (a second notification) changes nothing; built-in code never goes.
    assert_eq!(s.going(&owner), vec![]);
    assert_eq!(s.going(&Owner::BUILTIN), vec![]);
    assert!(s.take_log().is_empty());
    s.m.audit().expect("audit");

    // The reload: another struct address and module identity, the same module name.
    let reloaded = module(0xc000, "client");
    let d = s
        .define(STRUCT_C + 8, reloaded, "pcb", 4096)
        .expect("adopt");
    assert_eq!(d, Defined::Adopted(ty));
    let st = s.m.type_stats(ty).expect("stats");
    assert_eq!((st.name, st.inuse, st.limit), ("pcb", 2, 4096));
    assert_eq!(
        s.take_log(),
        vec![(
            Level::Info,
            format!(
                "module client defined type pcb again: adopted with the 2 live allocations ({} bytes) of its previous load",
                st.memuse
            )
        )]
    );
    assert_eq!(s.find(STRUCT_C + 8, ty), Some(ty));
    assert_eq!(s.find(STRUCT_A, ty), None);
    s.m.free(p, ty).expect("free through the adopted type");
    s.m.free(q, ty).expect("free through the adopted type");
    s.undefine(STRUCT_C + 8, ty).expect("undefine");
    s.undefine(STRUCT_B, other).expect("undefine");
    s.undefine(STRUCT_C, builtin).expect("undefine");
    assert_eq!(s.reg.records().count(), 0);
    s.m.audit().expect("audit");
    s.m.reclaim();
    assert_eq!(s.m.memory_stats().data_pages, 0);
    assert_eq!(s.m.memory_stats().bucket_pages, 0);
}

/// An orphan's name belongs to its owner: another module, built-in code, or the owner's reload
/// under another type name cannot take it; a defined type's name is taken for everybody, its
/// owner included; a struct defines one type.
#[test]
fn names_of_orphans_and_of_defined_types_are_taken() {
    let mut s = Sut::new();
    let owner = module(0xa000, "client");
    let ty = s
        .define(STRUCT_A, owner, "orph", NO_LIMIT)
        .expect("define")
        .ty();
    let p = s.m.malloc(10, ty, MallocFlags::WAITOK).expect("malloc");
    let live = s
        .define(STRUCT_B, module(0xb000, "other"), "live", NO_LIMIT)
        .expect("define")
        .ty();
    // The same struct twice, or a taken name, even by the owner itself.
    assert_eq!(
        s.define(STRUCT_A, owner, "fresh", NO_LIMIT),
        Err(RegistryError::Exists)
    );
    assert_eq!(
        s.define(STRUCT_C, owner, "live", NO_LIMIT),
        Err(RegistryError::Exists)
    );
    s.going(&owner);
    s.take_log();

    // A second, different module with the orphan's type name.
    assert_eq!(
        s.define(STRUCT_C, module(0xd000, "intruder"), "orph", NO_LIMIT),
        Err(RegistryError::Exists)
    );
    // Built-in code.
    assert_eq!(
        s.define(STRUCT_C, Owner::BUILTIN, "orph", NO_LIMIT),
        Err(RegistryError::Exists)
    );
    // The reload of the owner with another type name gets a new type, not the orphan.
    let fresh = s.define(STRUCT_C, module(0xe000, "client"), "fresh", NO_LIMIT);
    let Ok(Defined::New(fresh)) = fresh else {
        panic!("{fresh:?}");
    };
    assert_ne!(fresh, ty);
    assert_eq!(
        s.m.type_stats(ty).expect("still the orphan").name,
        "orph(orphan)"
    );
    assert!(s.take_log().is_empty());
    // Nothing changed for the refused ones: the orphan is adopted later as usual.
    let d = s.define(STRUCT_C + 8, module(0xe000, "client"), "orph", NO_LIMIT);
    assert_eq!(d, Ok(Defined::Adopted(ty)));
    s.m.free(p, ty).expect("free");
    for (client, t) in [(STRUCT_C + 8, ty), (STRUCT_C, fresh), (STRUCT_B, live)] {
        s.undefine(client, t).expect("undefine");
    }
    s.m.audit().expect("audit");
}

/// Undefine: only by the struct that defined the type; refused while allocations live (logged,
/// nothing changes); an orphan cannot be undefined through its old struct.
#[test]
fn undefine_checks_the_struct_and_live_allocations() {
    let mut s = Sut::new();
    let owner = module(0xa000, "client");
    let ty = s
        .define(STRUCT_A, owner, "busy", NO_LIMIT)
        .expect("define")
        .ty();
    let p = s.m.malloc(10, ty, MallocFlags::WAITOK).expect("malloc");
    assert_eq!(s.undefine(STRUCT_B, ty), Err(RegistryError::Unknown));
    assert!(matches!(
        s.undefine(STRUCT_A, ty),
        Err(RegistryError::Malloc(MallocError::TypeInUse { .. }))
    ));
    assert_eq!(
        s.take_log(),
        vec![(
            Level::Error,
            "type busy still has 1 live allocations: not undefined".to_string()
        )]
    );
    assert_eq!(s.find(STRUCT_A, ty), Some(ty));
    s.going(&owner);
    assert_eq!(s.undefine(STRUCT_A, ty), Err(RegistryError::Unknown));
    s.m.free(p, ty).expect("free");
    // An orphan without allocations is still an orphan until adopted (or kmalloc43 unloads).
    let mut left = Vec::new();
    s.reg
        .forget_at_unload(|n| left.push((n.level(), n.to_string())));
    assert_eq!(
        left,
        vec![(
            Level::Warning,
            "type busy (orphan of module client) still defined at unload: its allocations are lost"
                .to_string()
        )]
    );
}

/// Bad names and descriptions are refused before anything changes.
#[test]
fn bad_names_are_refused() {
    for name in [&b""[..], b".", b"..", b"a/b", b"sp ace", &[b'x'; 32]] {
        assert!(
            matches!(
                TypeRecord::new(name, b"d", STRUCT_A, Owner::BUILTIN),
                Err(RegistryError::BadName)
            ),
            "{name:?}"
        );
    }
    assert!(matches!(
        TypeRecord::new(b"ok", &[b'd'; 64], STRUCT_A, Owner::BUILTIN),
        Err(RegistryError::BadName)
    ));
    assert!(TypeRecord::new(&[b'x'; 31], b"d", STRUCT_A, Owner::BUILTIN).is_ok());
}

/// A client arena when a module goes: its owner's arenas are orphaned (shown as
/// `<name>(orphan)`, as types are), and disowned unless their source is kmalloc43's own; another
/// owner's arena is disowned when its functions lie in the going module; the log lines say so.
#[test]
fn arenas_of_a_going_module_are_orphaned_and_disowned() {
    let f = |orphan, disown| ArenaFate { orphan, disown };
    // owned, kmalloc43's source functions (or none), functions in the going module
    assert_eq!(arena_fate(true, false, true), f(true, true));
    assert_eq!(arena_fate(true, false, false), f(true, true));
    assert_eq!(arena_fate(true, true, false), f(true, false));
    assert_eq!(arena_fate(false, false, true), f(false, true));
    assert_eq!(arena_fate(false, false, false), f(false, false));
    assert_eq!(arena_fate(false, true, false), f(false, false));
    // Renamed as orphaned types are, whatever the name's length.
    assert_eq!(
        ShownName::of("orphtest-ids", false).as_str(),
        "orphtest-ids"
    );
    assert_eq!(
        ShownName::of("orphtest-ids", true).as_str(),
        "orphtest-ids(orphan)"
    );
    let longest = "x".repeat(31);
    assert_eq!(
        ShownName::of(&longest, true).as_str(),
        format!("{longest}(orphan)")
    );
    let m = ModuleName::new(b"kmalloc43_orphan_client");
    assert_eq!(
        ArenaNote::Orphaned {
            module: &m,
            arena: "orphtest-ids",
            segments: 2,
            bytes: 32
        }
        .to_string(),
        "module kmalloc43_orphan_client unloaded without destroying arena orphtest-ids (2 live segments, 32 bytes): orphaned"
    );
    assert_eq!(
        ArenaNote::Disowned {
            module: &m,
            arena: "orphtest-ids",
            spans: 1,
            bytes: 16
        }
        .to_string(),
        "arena orphtest-ids: import/release of module kmalloc43_orphan_client disowned: never called again; 1 imported spans (16 bytes) are kept, never released"
    );
}
