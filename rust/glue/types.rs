// SPDX-License-Identifier: GPL-2.0

//! The registry of malloc types defined by client modules through the C ABI: the kernel side of
//! the core's [`crate::malloc::Registry`], which decides everything about ownership (what a
//! definition adopts, what a going owner's types become, what the log says; host-tested in
//! `rust/core/tests/malloc_registry.rs`). This file holds its mutex, reads the client's struct,
//! keeps each type's debugfs file `limits/<name>` (mode 0600) and prints the registry's notes.
//!
//! A client passes a `struct kmalloc43_type` (name, description, limit, owner, handle) that lives
//! in its own module. The registry **copies** the name and description into a record it owns (a
//! `KBox`, whose contents never move: [`RecordBox`]), hands the core `&'static str`s that point
//! into that copy, and frees the record only after the core has forgotten the type (undefine
//! succeeded). So the core never points into client memory, and a client that unloads with its
//! type still defined leaves no dangling pointer behind (module exit keeps such records alive).
//!
//! The handle written into the client's struct is the core's raw handle plus one, so that the
//! zero a static struct starts with means "not defined" and cannot alias slot 0. The handle alone
//! is not trusted: the [`ClientTable`] keeps, per core slot, the address of the struct that owns
//! it, and [`TypeRegistry::handle_of`] accepts a handle only if its slot belongs to *this* struct
//! (one atomic load, O(1)), so a forged or copied struct with a plausible handle is refused
//! instead of being charged to another module's type.
//!
//! Define, undefine and the module notifier take a mutex (they may sleep: process context);
//! allocation and free never touch the registry: they only read the handle and the client table.

use kernel::{
    debugfs::{BinaryReader, BinaryWriter, Dir, File},
    ffi::{c_char, c_void},
    fs::file::Offset,
    new_mutex,
    prelude::*,
    sync::{Arc, Mutex},
    uaccess::{UserSliceReader, UserSliceWriter},
};

use crate::heap::Heap;
use crate::malloc::{
    ClientTable, Defined, Level, MallocError, MallocType, ModuleName, Note, Owner, RecordBox,
    Registry, RegistryError, TypeHost, TypeRecord, TypeStats, MAX_TYPES,
};
use crate::owners::module_name_of;
use crate::report::{self, DESCRIPTION_MAX, NAME_MAX};

/// `struct kmalloc43_type` of `include/kmalloc43.h`, as bindgen generates it from the header.
pub(crate) type Kmalloc43Type = crate::kmalloc43_abi::kmalloc43_type;

/// Copies a C string of at most `max` bytes into `buf`; its length, or `None` if longer.
///
/// # Safety
///
/// `s` is a valid NUL-terminated string.
unsafe fn copy_cstr(s: *const c_char, buf: &mut [u8], max: usize) -> Option<usize> {
    for i in 0..=max {
        // SAFETY: the string is NUL-terminated and we stop at the NUL.
        let c = unsafe { s.add(i).read() };
        if c == 0 {
            return Some(i);
        }
        *buf.get_mut(i)? = c;
    }
    None
}

/// Data of a `limits/<type>` file.
pub(crate) struct LimitFile {
    heap: Arc<Heap>,
    ty: MallocType,
}

/// Longest write a `limits/<type>` file accepts: a 20-digit value and a newline fit; anything
/// longer is refused before a byte of it is read.
pub(crate) const LIMIT_WRITE_MAX: usize = 32;

/// Reading a `limits/<type>` file: the limit in bytes and a newline (0 = none), or `-` once the
/// type is gone; `offset` is honoured, so any read size works.
impl BinaryWriter for LimitFile {
    fn write_to_slice(&self, writer: &mut UserSliceWriter, offset: &mut Offset) -> Result<usize> {
        let mut buf = [0u8; 24];
        let len = match self.heap.type_stats(self.ty) {
            Ok(st) => decimal_line(report::limit_value(st.limit) as u64, &mut buf),
            Err(_) => {
                buf[..2].copy_from_slice(b"-\n");
                2
            }
        };
        writer.write_slice_file(&buf[..len], offset)
    }
}

/// Writes `v` and a newline in decimal at the start of `buf` (24 bytes fit any `u64`); the length.
fn decimal_line(mut v: u64, buf: &mut [u8; 24]) -> usize {
    let mut digits = [0u8; 20];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for (i, d) in digits[..n].iter().rev().enumerate() {
        buf[i] = *d;
    }
    buf[n] = b'\n';
    n + 1
}

/// Writing a `limits/<type>` file: as sysfs does, only a whole value written at offset 0 in one
/// `write()` is accepted (see [`store_limit_at`]); the offset then moves past it, so a second
/// write on the same open file (the rest of a value written in pieces) is refused.
impl BinaryReader for LimitFile {
    fn read_from_slice(&self, reader: &mut UserSliceReader, offset: &mut Offset) -> Result<usize> {
        let n = reader.len();
        if *offset != 0 || n > LIMIT_WRITE_MAX {
            return Err(EINVAL);
        }
        let mut buf = [0u8; LIMIT_WRITE_MAX];
        let dst = buf.get_mut(..n).ok_or(EINVAL)?;
        reader.read_slice(dst)?;
        let taken = store_limit_at(&self.heap, self.ty, *offset, dst)?;
        *offset += taken as Offset;
        Ok(taken)
    }
}

/// Parses `bytes` as a limit and applies it: the whole write path of `limits/<type>` except the
/// copy from user space (KUnit tests call it directly). `EINVAL` changes nothing.
pub(crate) fn store_limit_bytes(heap: &Heap, ty: MallocType, bytes: &[u8]) -> Result {
    let limit = report::parse_limit(bytes).map_err(|_| EINVAL)?;
    heap.set_limit(ty, limit).map_err(|_| ENOENT)
}

/// One `write()` of `bytes` at file offset `offset` to a `limits/<type>` file: the whole write
/// path except the copy from user space (KUnit tests call it directly). Accepted only at offset
/// 0, at most [`LIMIT_WRITE_MAX`] bytes, and only a whole value (`report::parse_limit`: digits and
/// one optional newline, so embedded NULs are refused); then the bytes taken. `EINVAL` otherwise,
/// and nothing changes.
pub(crate) fn store_limit_at(
    heap: &Heap,
    ty: MallocType,
    offset: Offset,
    bytes: &[u8],
) -> Result<usize> {
    if offset != 0 || bytes.len() > LIMIT_WRITE_MAX {
        return Err(EINVAL);
    }
    store_limit_bytes(heap, ty, bytes)?;
    Ok(bytes.len())
}

/// Records live in `KBox`es.
// SAFETY: a `KBox`'s contents stay at one address until the box is dropped; moving the box moves
// only the pointer.
unsafe impl RecordBox for KBox<TypeRecord> {}

/// The heap's type operations, for the core's registry (each takes the heap's locks).
struct HeapTypes<'a>(&'a Heap);

impl TypeHost for HeapTypes<'_> {
    fn define_type(
        &mut self,
        name: &'static str,
        description: &'static str,
        limit: usize,
    ) -> Result<MallocType, MallocError> {
        self.0.define_type(name, description, limit)
    }

    fn undefine_type(&mut self, ty: MallocType) -> Result<TypeStats, MallocError> {
        self.0.undefine_type(ty)
    }

    fn rename_type(&mut self, ty: MallocType, name: &'static str) -> Result<(), MallocError> {
        self.0.with(|s| s.malloc.rename_type(ty, name))
    }

    fn set_limit(&mut self, ty: MallocType, limit: usize) -> Result<(), MallocError> {
        self.0.set_limit(ty, limit)
    }

    fn type_stats(&mut self, ty: MallocType) -> Result<TypeStats, MallocError> {
        self.0.type_stats(ty)
    }
}

/// Prints a note of the registry at its level.
fn log(n: Note<'_>) {
    match n.level() {
        Level::Info => pr_info!("{}\n", n),
        Level::Warning => pr_warn!("{}\n", n),
        Level::Error => pr_err!("{}\n", n),
    }
}

/// What the registry's mutex protects: the core's records and each type's limit file.
struct Locked {
    records: Registry<KBox<TypeRecord>>,
    /// Per core type slot, the type's `limits/<name>` file.
    files: [Option<Pin<KBox<File<LimitFile>>>>; MAX_TYPES],
}

/// The registry of C-ABI types of one heap.
#[pin_data(PinnedDrop)]
pub(crate) struct TypeRegistry {
    #[pin]
    inner: Mutex<Locked>,
    /// Per core type slot, the client struct defined in it (written under `inner`'s lock, read
    /// lock-free by [`TypeRegistry::handle_of`] on every malloc and free).
    clients: ClientTable,
    heap: Arc<Heap>,
    limits: Dir,
}

/// The errno of a registry error.
fn registry_errno(e: RegistryError) -> Error {
    match e {
        RegistryError::BadName => EINVAL,
        RegistryError::Exists => EEXIST,
        RegistryError::Unknown => ENOENT,
        RegistryError::Malloc(MallocError::TypeTableFull) => ENOSPC,
        RegistryError::Malloc(MallocError::TypeInUse { .. }) => EBUSY,
        RegistryError::Malloc(MallocError::UnknownType) => ENOENT,
        RegistryError::Malloc(MallocError::NoMemory { .. }) => ENOMEM,
        RegistryError::Malloc(_) => EINVAL,
    }
}

impl TypeRegistry {
    /// An empty registry for `heap`, creating limit files under `limits`.
    pub(crate) fn new(heap: Arc<Heap>, limits: Dir) -> impl PinInit<Self> {
        pin_init!(Self {
            inner <- new_mutex!(
                Locked {
                    records: Registry::new(),
                    files: [const { None }; MAX_TYPES],
                },
                "kmalloc43_types"
            ),
            clients: ClientTable::new(),
            heap,
            limits,
        })
    }

    /// The handle of a client's type, if `ct` is the struct that defined it: the handle's slot
    /// must be owned by `ct` itself (O(1)), so a never-registered struct carrying a plausible
    /// handle, or a copy of a registered one, is refused.
    ///
    /// # Safety
    ///
    /// `ct` is NULL or points to a valid `struct kmalloc43_type`.
    #[inline]
    pub(crate) unsafe fn handle_of(&self, ct: *const Kmalloc43Type) -> Option<MallocType> {
        if ct.is_null() {
            return None;
        }
        // SAFETY: valid per the caller; read once (another CPU of the client may race with
        // define, which is the client's bug and yields either 0 or the new handle).
        let raw = unsafe { core::ptr::addr_of!((*ct).handle).read_volatile() };
        self.clients.find(ct as usize, raw)
    }

    /// Defines the client's type, or adopts the orphan its owner's previous load left (process
    /// context: may sleep).
    ///
    /// # Safety
    ///
    /// `ct` points to a valid `struct kmalloc43_type` whose strings are valid C strings.
    pub(crate) unsafe fn define(&self, ct: *mut Kmalloc43Type) -> Result {
        if ct.is_null() {
            return Err(EINVAL);
        }
        crate::heap::might_sleep();
        // SAFETY: valid per the caller.
        let (name_ptr, desc_ptr, limit, owner) =
            unsafe { ((*ct).name, (*ct).desc, (*ct).limit, (*ct).owner) };
        if name_ptr.is_null() {
            return Err(EINVAL);
        }
        let owner = owner.cast::<c_void>().cast_const();
        let mut name = [0u8; NAME_MAX + 1];
        let mut desc = [0u8; DESCRIPTION_MAX + 1];
        // SAFETY: valid C strings per the caller.
        let name_len = unsafe { copy_cstr(name_ptr, &mut name, NAME_MAX) }.ok_or(EINVAL)?;
        let desc_len = if desc_ptr.is_null() {
            0
        } else {
            // SAFETY: as above.
            unsafe { copy_cstr(desc_ptr, &mut desc, DESCRIPTION_MAX) }.ok_or(EINVAL)?
        };
        let record = TypeRecord::new(
            &name[..name_len],
            &desc[..desc_len],
            ct as usize,
            Owner {
                id: owner as usize,
                // SAFETY: the caller's module is loaded: it is calling.
                name: unsafe { module_name_of(owner) },
            },
        )
        .map_err(registry_errno)?;
        let record = KBox::new(record, GFP_KERNEL)?;
        let fname = CStr::from_bytes_with_nul(&name[..=name_len]).map_err(|_| EINVAL)?;
        let limit = if limit == 0 { usize::MAX } else { limit };

        let mut g = self.inner.lock();
        let Locked { records, files } = &mut *g;
        let host = &mut HeapTypes(&self.heap);
        let defined = records
            .define(host, &self.clients, record, limit, log)
            .map_err(registry_errno)?;
        let ty = defined.ty();
        if let Defined::New(_) = defined {
            let file = KBox::pin_init(
                self.limits.read_write_binary_file(
                    fname,
                    LimitFile {
                        heap: self.heap.clone(),
                        ty,
                    },
                ),
                GFP_KERNEL,
            );
            match (file, files.get_mut(ty.index())) {
                (Ok(f), Some(slot)) => *slot = Some(f),
                (r, _) => {
                    // Undo: the type has no allocations yet, so this cannot fail.
                    let _ = records.undefine(host, &self.clients, ct as usize, ty, log);
                    return Err(r.err().unwrap_or(ENOMEM));
                }
            }
        }
        // SAFETY: valid per the caller.
        unsafe {
            core::ptr::addr_of_mut!((*ct).handle).write_volatile(ClientTable::handle_value(ty))
        };
        Ok(())
    }

    /// The module `owner` goes (its exit function ran, or its init failed; its memory is still
    /// there): the core's registry undefines or orphans each of its types still defined
    /// (`crate::malloc::Registry::module_going`); both are the owner's bug and logged with
    /// `pr_err`. Process context (the module notifier).
    pub(crate) fn module_going(&self, owner: *const c_void, name: &ModuleName) {
        let owner = Owner {
            id: owner as usize,
            name: *name,
        };
        let mut g = self.inner.lock();
        let Locked { records, files } = &mut *g;
        records.module_going(
            &mut HeapTypes(&self.heap),
            &self.clients,
            &owner,
            log,
            |ty, record| {
                // Its limit file goes with it, then the names the core no longer uses.
                if let Some(f) = files.get_mut(ty.index()) {
                    drop(f.take());
                }
                drop(record);
            },
        );
    }

    /// Undefines the client's type: `EBUSY` (nothing changes) while it has live allocations.
    ///
    /// # Safety
    ///
    /// `ct` points to a valid `struct kmalloc43_type`.
    pub(crate) unsafe fn undefine(&self, ct: *mut Kmalloc43Type) -> Result {
        if ct.is_null() {
            return Err(EINVAL);
        }
        crate::heap::might_sleep();
        // SAFETY: valid per the caller.
        let ty = unsafe { self.handle_of(ct) }.ok_or(ENOENT)?;
        let mut g = self.inner.lock();
        let Locked { records, files } = &mut *g;
        let record = records
            .undefine(
                &mut HeapTypes(&self.heap),
                &self.clients,
                ct as usize,
                ty,
                log,
            )
            .map_err(registry_errno)?;
        // The limit file goes first, then the names the core no longer uses.
        if let Some(f) = files.get_mut(ty.index()) {
            drop(f.take());
        }
        drop(record);
        // SAFETY: valid per the caller.
        unsafe { core::ptr::addr_of_mut!((*ct).handle).write_volatile(0) };
        Ok(())
    }
}

#[pinned_drop]
impl PinnedDrop for TypeRegistry {
    fn drop(self: Pin<&mut Self>) {
        let mut g = self.inner.lock();
        for f in g.files.iter_mut() {
            drop(f.take());
        }
        // The core may still hold the names: the records are kept (leaked), each reported.
        g.records.forget_at_unload(log);
    }
}
