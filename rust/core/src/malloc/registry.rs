// SPDX-License-Identifier: GPL-2.0

//! The registry of types that client modules define, and what happens to them when their owner
//! module goes.
//!
//! A client defines a type with a struct of its own (`struct kmalloc43_type`): the registry keeps
//! a [`TypeRecord`] per defined type, with copies of the name and description (the core's
//! [`TypeStats`] point into the record, never into client memory), the client struct's address
//! and the owning module (`THIS_MODULE`: its identity and its name). Allocation and free never
//! touch the registry: they read the struct's handle and check it against the [`ClientTable`], one
//! atomic load, so that a forged or copied struct with a plausible handle is refused.
//!
//! When an owner module goes with types still defined (its bug), [`Registry::module_going`]
//! decides for each of them:
//!
//! * **no live allocation**: the type is undefined;
//! * **live allocations**: the type is *orphaned*. The client table forgets the struct (the going
//!   module's memory may be given to another module, whose struct at the same address must not
//!   reach it); the core's slot stays defined, with its counters and live allocations, shown as
//!   `<name>(orphan)`; the record keeps the owner's *name*, not its identity.
//!
//! A later [`Registry::define`] of the same type name by a module of the same name (a reload)
//! *adopts* the orphan: same core slot, statistics and live allocations, reached through the new
//! struct, with its limit; so whoever holds the old allocations can free them with the reloaded
//! type, and a leak-and-reload cycle does not use up the type table. Any other definition of the
//! name is refused ([`RegistryError::Exists`]): a defined type's name is taken, an orphan's is
//! its owner's. Orphans nobody adopts stay to the end ([`Registry::forget_at_unload`]).
//!
//! The registry decides; the glue holds the locks around it (a mutex for the records, the heap's
//! own locks inside [`TypeHost`]), keeps the debugfs files and prints the [`Note`]s it is given,
//! whose text is decided here.

use core::fmt;
use core::ops::DerefMut;
use core::sync::atomic::{
    AtomicUsize,
    Ordering::{Acquire, Release},
};

use super::owner::{ModuleName, Owner, ShownName};
use super::{KmemPages, Malloc, MallocError, MallocType, TypeStats, MAX_TYPES};
use crate::report::{valid_description, valid_name, DESCRIPTION_MAX, NAME_MAX};

/// One defined type.
pub struct TypeRecord {
    name: [u8; NAME_MAX],
    name_len: usize,
    /// What the core's statistics call it: the name, or `<name>(orphan)`.
    shown: ShownName,
    desc: [u8; DESCRIPTION_MAX],
    desc_len: usize,
    ty: MallocType,
    /// Address of the client's struct (identity only); 0 for an orphan.
    client: usize,
    /// The owning module; for an orphan its identity is 0, its name kept.
    owner: Owner,
}

impl TypeRecord {
    /// A record for the client struct at `client` (its address, not 0) of `owner`, with copies
    /// of `name` (a valid debugfs file name, see [`valid_name`]) and `desc`; `BadName`
    /// otherwise.
    pub fn new(
        name: &[u8],
        desc: &[u8],
        client: usize,
        owner: Owner,
    ) -> Result<Self, RegistryError> {
        if !valid_name(name) || !valid_description(desc) {
            return Err(RegistryError::BadName);
        }
        let mut r = Self {
            name: [0; NAME_MAX],
            name_len: name.len(),
            shown: ShownName::plain(""),
            desc: [0; DESCRIPTION_MAX],
            desc_len: desc.len(),
            ty: MallocType::from_raw(0),
            client,
            owner,
        };
        r.name[..name.len()].copy_from_slice(name);
        r.desc[..desc.len()].copy_from_slice(desc);
        r.shown = ShownName::plain(r.name());
        Ok(r)
    }

    /// The type's name (checked printable ASCII).
    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..self.name_len]).unwrap_or("")
    }

    /// The description.
    pub fn description(&self) -> &str {
        core::str::from_utf8(&self.desc[..self.desc_len]).unwrap_or("")
    }

    /// The name the core's statistics show.
    pub fn shown(&self) -> &str {
        self.shown.as_str()
    }

    /// The core's handle (once defined).
    pub fn ty(&self) -> MallocType {
        self.ty
    }

    /// Whether the owner went and left the type behind.
    pub fn is_orphan(&self) -> bool {
        self.client == 0
    }

    /// The owner (an orphan's: identity 0, the name kept).
    pub fn owner(&self) -> &Owner {
        &self.owner
    }
}

/// An owning pointer to a [`TypeRecord`] whose record never moves: the core's statistics point
/// into it.
///
/// # Safety
///
/// The record stays at one address for as long as the pointer lives (moving the pointer does not
/// move it), and is freed only when the pointer is dropped.
pub unsafe trait RecordBox: DerefMut<Target = TypeRecord> {}

/// The allocator's type operations, as the registry uses them; the glue implements them with its
/// heap's locks, the host tests on a [`Malloc`] directly.
pub trait TypeHost {
    /// Defines a type (`name` and `description` stay valid until it is undefined).
    fn define_type(
        &mut self,
        name: &'static str,
        description: &'static str,
        limit: usize,
    ) -> Result<MallocType, MallocError>;
    /// Undefines a type: `TypeInUse` while it has live allocations.
    fn undefine_type(&mut self, ty: MallocType) -> Result<TypeStats, MallocError>;
    /// Changes the name the type's statistics show (valid until it is undefined or renamed).
    fn rename_type(&mut self, ty: MallocType, name: &'static str) -> Result<(), MallocError>;
    /// Changes the type's limit (`usize::MAX`: none).
    fn set_limit(&mut self, ty: MallocType, limit: usize) -> Result<(), MallocError>;
    /// The type's statistics.
    fn type_stats(&mut self, ty: MallocType) -> Result<TypeStats, MallocError>;
}

impl<K: KmemPages> TypeHost for Malloc<K> {
    fn define_type(
        &mut self,
        name: &'static str,
        description: &'static str,
        limit: usize,
    ) -> Result<MallocType, MallocError> {
        Malloc::define_type(self, name, description, limit)
    }

    fn undefine_type(&mut self, ty: MallocType) -> Result<TypeStats, MallocError> {
        Malloc::undefine_type(self, ty)
    }

    fn rename_type(&mut self, ty: MallocType, name: &'static str) -> Result<(), MallocError> {
        Malloc::rename_type(self, ty, name)
    }

    fn set_limit(&mut self, ty: MallocType, limit: usize) -> Result<(), MallocError> {
        Malloc::set_limit(self, ty, limit)
    }

    fn type_stats(&mut self, ty: MallocType) -> Result<TypeStats, MallocError> {
        Malloc::type_stats(self, ty)
    }
}

/// Why the registry refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryError {
    /// Not a valid type name or description.
    BadName,
    /// The name is taken (by a defined type, or by an orphan of another module), or this struct
    /// defined a type already.
    Exists,
    /// Not a type this struct defined.
    Unknown,
    /// The allocator's answer.
    Malloc(MallocError),
}

/// What a definition did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defined {
    /// A new type.
    New(MallocType),
    /// The orphan of the owner's previous load, adopted (see the module documentation).
    Adopted(MallocType),
}

impl Defined {
    /// The type's handle.
    pub fn ty(self) -> MallocType {
        match self {
            Defined::New(ty) | Defined::Adopted(ty) => ty,
        }
    }
}

/// How loud a [`Note`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Normal operation worth a line (`pr_info`).
    Info,
    /// Leftovers at kmalloc43's own unload (`pr_warn`).
    Warning,
    /// A client's bug (`pr_err`).
    Error,
}

/// Something the registry did that the kernel log says; its text is its `Display`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Note<'a> {
    /// A going owner's type without live allocations was undefined.
    Undefined {
        /// The going module.
        module: &'a ModuleName,
        /// The type.
        name: &'a str,
    },
    /// A going owner's type with live allocations was orphaned.
    Orphaned {
        /// The going module.
        module: &'a ModuleName,
        /// The type.
        name: &'a str,
        /// Its live allocations.
        inuse: usize,
        /// Their bytes.
        memuse: usize,
    },
    /// A reload adopted an orphan.
    Adopted {
        /// The reloaded module.
        module: &'a ModuleName,
        /// The type.
        name: &'a str,
        /// The live allocations it took over.
        inuse: usize,
        /// Their bytes.
        memuse: usize,
    },
    /// An undefine was refused: the type has live allocations.
    Busy {
        /// The type.
        name: &'a str,
        /// Its live allocations.
        inuse: usize,
    },
    /// A type still defined when kmalloc43 unloads.
    LeftAtUnload {
        /// The type.
        name: &'a str,
        /// The module that left it as an orphan, if it is one.
        orphan_of: Option<&'a ModuleName>,
    },
}

impl Note<'_> {
    /// How loud it is.
    pub fn level(&self) -> Level {
        match self {
            Note::Adopted { .. } => Level::Info,
            Note::LeftAtUnload { .. } => Level::Warning,
            Note::Undefined { .. } | Note::Orphaned { .. } | Note::Busy { .. } => Level::Error,
        }
    }
}

/// The log line, without the newline. `tools/guest/steps.d/30-orphan.sh` and
/// `tools/expected-leftovers` match these texts.
impl fmt::Display for Note<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Note::Undefined { module, name } => write!(
                f,
                "module {module} unloaded with type {name} still defined (no live allocations): undefined"
            ),
            Note::Orphaned {
                module,
                name,
                inuse,
                memuse,
            } => write!(
                f,
                "module {module} unloaded with {inuse} live allocations ({memuse} bytes) of type {name}: orphaned until it is loaded again"
            ),
            Note::Adopted {
                module,
                name,
                inuse,
                memuse,
            } => write!(
                f,
                "module {module} defined type {name} again: adopted with the {inuse} live allocations ({memuse} bytes) of its previous load"
            ),
            Note::Busy { name, inuse } => write!(
                f,
                "type {name} still has {inuse} live allocations: not undefined"
            ),
            Note::LeftAtUnload {
                name,
                orphan_of: Some(module),
            } => write!(
                f,
                "type {name} (orphan of module {module}) still defined at unload: its allocations are lost"
            ),
            Note::LeftAtUnload {
                name,
                orphan_of: None,
            } => write!(f, "type {name} still defined at unload"),
        }
    }
}

/// Per core type slot, the address of the client struct defined in it (0: none). Written under
/// the registry's lock, read without a lock by every allocation and free ([`ClientTable::find`]).
pub struct ClientTable {
    slots: [AtomicUsize; MAX_TYPES],
}

impl Default for ClientTable {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientTable {
    /// No client.
    pub const fn new() -> Self {
        Self {
            slots: [const { AtomicUsize::new(0) }; MAX_TYPES],
        }
    }

    /// The type a client struct at `client` holding `raw` in its handle field (the core's raw
    /// handle plus one: 0 is "not defined") refers to, if that struct is the one that defined it:
    /// one atomic load (an acquire load is a plain `mov` on x86-64), O(1). The handle's
    /// generation is the core's to check.
    ///
    /// A field of 0 (never defined) wraps to index `0xffff`, past every slot, so the bound check
    /// refuses it: no branch of its own on the fast path.
    #[inline]
    pub fn find(&self, client: usize, raw: u32) -> Option<MallocType> {
        const { assert!(MAX_TYPES <= 0xffff) };
        let ty = MallocType::from_raw(raw.wrapping_sub(1));
        (self.slots.get(ty.index())?.load(Acquire) == client).then_some(ty)
    }

    /// What a client struct's handle field holds for `ty`.
    pub fn handle_value(ty: MallocType) -> u32 {
        ty.to_raw() + 1
    }

    fn set(&self, ty: MallocType, client: usize) {
        if let Some(s) = self.slots.get(ty.index()) {
            s.store(client, Release);
        }
    }
}

/// The records of the defined types, by core slot.
///
/// # Invariants
///
/// `records[i]`, if any, is the record of the core type in slot `i`: the core holds its names
/// (`shown()` and `description()`) until that type is undefined, so a record is dropped only
/// after [`TypeHost::undefine_type`] succeeded, and otherwise never ([`Registry::forget_at_unload`]).
pub struct Registry<R: RecordBox> {
    records: [Option<R>; MAX_TYPES],
}

impl<R: RecordBox> Default for Registry<R> {
    fn default() -> Self {
        Self::new()
    }
}

/// `s` with the lifetime the core's statistics need.
///
/// # Safety
///
/// `s` points into a record of a [`RecordBox`] that the registry drops only after the core
/// forgot the type, or never (the type's invariant).
unsafe fn for_core(s: &str) -> &'static str {
    // SAFETY: the caller's guarantee: the bytes stay where they are for as long as the core
    // reads them.
    unsafe { &*core::ptr::from_ref::<str>(s) }
}

impl<R: RecordBox> Registry<R> {
    /// No type.
    pub fn new() -> Self {
        Self {
            records: core::array::from_fn(|_| None),
        }
    }

    /// The record of slot `ty.index()` if it is `client`'s type `ty`.
    fn client_record(&mut self, client: usize, ty: MallocType) -> Option<&mut R> {
        self.records
            .get_mut(ty.index())?
            .as_mut()
            .filter(|r| r.client == client && !r.is_orphan() && r.ty == ty)
    }

    /// Defines `record`'s type (its struct, owner, name and description) with `limit`
    /// (`usize::MAX`: none): a new core type, or the adoption of the orphan the owner's previous
    /// load left under the same name (`note` gets [`Note::Adopted`]). The client table maps the
    /// struct to it from now on; the caller writes [`ClientTable::handle_value`] into the struct.
    /// `Exists` if the struct defined a type already or the name is taken.
    pub fn define(
        &mut self,
        host: &mut impl TypeHost,
        clients: &ClientTable,
        mut record: R,
        limit: usize,
        mut note: impl FnMut(Note<'_>),
    ) -> Result<Defined, RegistryError> {
        let mut same_name = None;
        for (i, r) in self.records.iter().enumerate() {
            let Some(r) = r else { continue };
            if r.client == record.client {
                return Err(RegistryError::Exists);
            }
            if r.name() == record.name() {
                same_name = Some(i);
            }
        }
        if let Some(i) = same_name {
            let Some(orphan) = self.records[i].as_mut() else {
                return Err(RegistryError::Exists);
            };
            // A defined type's name is taken; an orphan's is its owner's, to adopt on a reload.
            if !orphan.is_orphan() || record.owner.id == 0 || orphan.owner.name != record.owner.name
            {
                return Err(RegistryError::Exists);
            }
            return Self::adopt(host, clients, orphan, &record, limit, &mut note);
        }
        // SAFETY: the record is in its box, which this registry keeps (invariant).
        let (name, desc) = unsafe { (for_core(record.shown()), for_core(record.description())) };
        let ty = host
            .define_type(name, desc, limit)
            .map_err(RegistryError::Malloc)?;
        record.ty = ty;
        match self.records.get_mut(ty.index()) {
            Some(slot) if slot.is_none() => {
                clients.set(ty, record.client);
                *slot = Some(record);
                Ok(Defined::New(ty))
            }
            _ => {
                // The core reused a slot a record still holds: cannot happen (records leave
                // only with their type). Undo rather than lose the old record.
                let _ = host.undefine_type(ty);
                Err(RegistryError::Malloc(MallocError::TypeTableFull))
            }
        }
    }

    /// `orphan` becomes `new`'s type: its struct, its owner, its limit; same core slot.
    fn adopt(
        host: &mut impl TypeHost,
        clients: &ClientTable,
        orphan: &mut R,
        new: &TypeRecord,
        limit: usize,
        note: &mut impl FnMut(Note<'_>),
    ) -> Result<Defined, RegistryError> {
        let ty = orphan.ty;
        let shown = ShownName::plain(orphan.name());
        let old_shown = orphan.shown;
        orphan.shown = shown;
        // SAFETY: the record is in its box, which this registry keeps (invariant).
        let name = unsafe { for_core(orphan.shown()) };
        let st = host
            .rename_type(ty, name)
            .and_then(|()| host.set_limit(ty, limit))
            .and_then(|()| host.type_stats(ty));
        let st = match st {
            Ok(st) => st,
            Err(e) => {
                orphan.shown = old_shown;
                // SAFETY: as above.
                let _ = host.rename_type(ty, unsafe { for_core(orphan.shown()) });
                return Err(RegistryError::Malloc(e));
            }
        };
        orphan.client = new.client;
        orphan.owner = new.owner;
        note(Note::Adopted {
            module: &orphan.owner.name,
            name: orphan.name(),
            inuse: st.inuse,
            memuse: st.memuse,
        });
        clients.set(ty, orphan.client);
        Ok(Defined::Adopted(ty))
    }

    /// Removes a record whose type was just undefined, and its client.
    fn remove(&mut self, clients: &ClientTable, ty: MallocType) -> Option<R> {
        clients.set(ty, 0);
        self.records.get_mut(ty.index())?.take()
    }

    /// Undefines `client`'s type `ty`: its record, to drop once the caller's own per-type state
    /// (its limit file) is gone. `Malloc(TypeInUse)` while it has live allocations (`note` gets
    /// [`Note::Busy`], nothing changes); `Unknown` if `client` did not define `ty`.
    pub fn undefine(
        &mut self,
        host: &mut impl TypeHost,
        clients: &ClientTable,
        client: usize,
        ty: MallocType,
        mut note: impl FnMut(Note<'_>),
    ) -> Result<R, RegistryError> {
        let r = self
            .client_record(client, ty)
            .ok_or(RegistryError::Unknown)?;
        if let Err(e) = host.undefine_type(ty) {
            if let MallocError::TypeInUse { inuse, .. } = e {
                note(Note::Busy {
                    name: r.name(),
                    inuse,
                });
            }
            return Err(RegistryError::Malloc(e));
        }
        self.remove(clients, ty).ok_or(RegistryError::Unknown)
    }

    /// The module `owner` goes (its memory is still there): each of its types is undefined if
    /// it has no live allocations (its record goes to `gone`, to drop with the caller's state),
    /// else orphaned (see the module documentation); `note` gets one [`Note`] per type.
    /// Built-in code (`owner.id == 0`) never goes.
    pub fn module_going(
        &mut self,
        host: &mut impl TypeHost,
        clients: &ClientTable,
        owner: &Owner,
        mut note: impl FnMut(Note<'_>),
        mut gone: impl FnMut(MallocType, R),
    ) {
        if owner.id == 0 {
            return;
        }
        for i in 0..MAX_TYPES {
            let Some(r) = self.records[i].as_mut() else {
                continue;
            };
            if r.is_orphan() || r.owner.id != owner.id {
                continue;
            }
            let ty = r.ty;
            if host.undefine_type(ty).is_ok() {
                note(Note::Undefined {
                    module: &owner.name,
                    name: r.name(),
                });
                if let Some(r) = self.remove(clients, ty) {
                    gone(ty, r);
                }
                continue;
            }
            // Calls through the old struct are refused from here on.
            clients.set(ty, 0);
            r.client = 0;
            r.owner.id = 0;
            r.shown = ShownName::orphan(r.name());
            // SAFETY: the record is in its box, which this registry keeps (invariant).
            let shown = unsafe { for_core(r.shown()) };
            let (inuse, memuse) = host
                .rename_type(ty, shown)
                .and_then(|()| host.type_stats(ty))
                .map(|s| (s.inuse, s.memuse))
                .unwrap_or((0, 0));
            note(Note::Orphaned {
                module: &owner.name,
                name: r.name(),
                inuse,
                memuse,
            });
        }
    }

    /// The records, for reports (slot order).
    pub fn records(&self) -> impl Iterator<Item = &TypeRecord> + '_ {
        self.records.iter().flatten().map(|r| &**r)
    }

    /// kmalloc43 unloads with types still defined: `note` gets [`Note::LeftAtUnload`] for each,
    /// and their records are kept forever (leaked), since the core may still read their names.
    pub fn forget_at_unload(&mut self, mut note: impl FnMut(Note<'_>)) {
        for slot in self.records.iter_mut().rev() {
            if let Some(r) = slot.take() {
                note(Note::LeftAtUnload {
                    name: r.name(),
                    orphan_of: r.is_orphan().then_some(&r.owner.name),
                });
                core::mem::forget(r);
            }
        }
    }
}

/// A registry that goes away with types still defined keeps their records (leaked, as
/// [`Registry::forget_at_unload`] does): the core may still read their names.
impl<R: RecordBox> Drop for Registry<R> {
    fn drop(&mut self) {
        for r in self.records.iter_mut().filter_map(Option::take) {
            core::mem::forget(r);
        }
    }
}
