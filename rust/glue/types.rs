// SPDX-License-Identifier: GPL-2.0

//! The registry of malloc types defined by client modules through the C ABI.
//!
//! A client passes a `struct kmalloc43_type` (name, description, limit, handle) that lives in its
//! own module. The registry **copies** the name and description into an entry it owns (a `KBox`,
//! whose contents never move), hands the core `&'static str`s that point into that copy, and frees
//! the entry only after the core has forgotten the type (`undefine_type` succeeded). So the core
//! never points into client memory, and a client that unloads with its type still defined leaves
//! no dangling pointer behind (module exit keeps such entries alive, see [`TypeRegistry`]'s drop).
//!
//! Each entry also owns the type's writable debugfs file `limits/<name>` (mode 0600).
//!
//! The handle written into the client's struct is the core's raw handle plus one, so that the
//! zero a static struct starts with means "not defined" and cannot alias slot 0. The handle alone
//! is not trusted: the registry keeps, per core slot, the address of the struct that owns it, and
//! [`TypeRegistry::handle_of`] accepts a handle only if its slot belongs to *this* struct (one
//! atomic load, O(1)), so a forged or copied struct with a plausible handle is refused instead of
//! being charged to another module's type.
//!
//! Each entry records the type's owning module (`owner`, `THIS_MODULE` of the client). When the
//! owner goes with the type still defined, [`TypeRegistry::module_going`] undefines it, or, if it
//! still has live allocations, *orphans* it: the owner table forgets the struct's address (which
//! the module's memory, about to be freed, may give to another module), the core's row is
//! renamed `<name>(orphan)`, and the entry keeps the owner's name, so that when a module of that
//! name defines a type of that name again, [`TypeRegistry::define`] *adopts* the orphan (same
//! core slot, statistics and live allocations, reached through the new struct). Orphans nobody
//! adopts stay until kmalloc43 unloads, their allocations kept and reported.
//!
//! Define, undefine and the notifier take a mutex (they may sleep: process context); allocation
//! and free never touch the registry: they only read the handle and the owner table.

use kernel::{
    debugfs::{BinaryReader, BinaryWriter, Dir, File},
    ffi::{c_char, c_void},
    fs::file::Offset,
    new_mutex,
    prelude::*,
    str::BStr,
    sync::{Arc, Mutex},
    uaccess::{UserSliceReader, UserSliceWriter},
};

use core::sync::atomic::{
    AtomicUsize,
    Ordering::{Acquire, Release},
};

use crate::heap::Heap;
use crate::malloc::{MallocError, MallocType, MAX_TYPES};
use crate::owners::{module_name_of, ModuleName};
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

/// What the `types` report shows after an orphan's name.
const ORPHAN_SUFFIX: &[u8] = b"(orphan)";

/// One registered type.
struct TypeEntry {
    name: [u8; NAME_MAX + 1],
    name_len: usize,
    /// `<name>(orphan)`, the core's name for the type while it is an orphan.
    orphan_name: [u8; NAME_MAX + ORPHAN_SUFFIX.len()],
    desc: [u8; DESCRIPTION_MAX],
    desc_len: usize,
    ty: MallocType,
    /// Address of the client's struct (identity only, never dereferenced through this); 0 for an
    /// orphan.
    client: usize,
    /// The owning module (`struct module *`, identity only); 0 for built-in code and orphans.
    owner: usize,
    /// The owning module's name (kept for an orphan: a reload of that module adopts it).
    owner_name: ModuleName,
    limit_file: Option<Pin<KBox<File<LimitFile>>>>,
}

impl TypeEntry {
    fn name(&self) -> &[u8] {
        &self.name[..self.name_len]
    }

    fn is_orphan(&self) -> bool {
        self.client == 0
    }

    /// The name the core shows: the name, or `<name>(orphan)`.
    fn shown_name(&self) -> &'static str {
        let (p, len) = if self.is_orphan() {
            (
                self.orphan_name.as_ptr(),
                self.name_len + ORPHAN_SUFFIX.len(),
            )
        } else {
            (self.name.as_ptr(), self.name_len)
        };
        // SAFETY: both buffers hold checked ASCII of that length and live in the entry's box,
        // which does not move and is freed only after the core forgot the type (undefine
        // succeeded) or never (module exit): the core never reads them after that.
        unsafe { core::str::from_utf8_unchecked(core::slice::from_raw_parts(p, len)) }
    }
}

/// The registry of C-ABI types of one heap.
#[pin_data(PinnedDrop)]
pub(crate) struct TypeRegistry {
    #[pin]
    entries: Mutex<KVec<KBox<TypeEntry>>>,
    /// Per core type slot: the address of the client struct defined in it, 0 if none (written
    /// under `entries`' lock, read lock-free by [`TypeRegistry::handle_of`]; `core`'s atomic,
    /// whose acquire load is a plain `mov` on x86-64, not a C helper call: every malloc and free
    /// reads it).
    owners: [AtomicUsize; MAX_TYPES],
    heap: Arc<Heap>,
    limits: Dir,
}

/// The errno of a core error during define/undefine.
fn type_errno(e: MallocError) -> Error {
    match e {
        MallocError::TypeTableFull => ENOSPC,
        MallocError::TypeInUse { .. } => EBUSY,
        MallocError::UnknownType => ENOENT,
        _ => EINVAL,
    }
}

impl TypeRegistry {
    /// An empty registry for `heap`, creating limit files under `limits`.
    pub(crate) fn new(heap: Arc<Heap>, limits: Dir) -> impl PinInit<Self> {
        pin_init!(Self {
            entries <- new_mutex!(KVec::new(), "kmalloc43_types"),
            owners: [const { AtomicUsize::new(0) }; MAX_TYPES],
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
        let ty = MallocType::from_raw(raw.checked_sub(1)?);
        // The slot's generation is the core's to check (a stale handle is `UnknownType`).
        (self.owners.get(ty.index())?.load(Acquire) == ct as usize).then_some(ty)
    }

    /// Defines the client's type (process context: may sleep).
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
        let mut entry = KBox::new(
            TypeEntry {
                name: [0; NAME_MAX + 1],
                name_len: 0,
                orphan_name: [0; NAME_MAX + ORPHAN_SUFFIX.len()],
                desc: [0; DESCRIPTION_MAX],
                desc_len: 0,
                ty: MallocType::from_raw(0),
                client: ct as usize,
                owner: owner as usize,
                // SAFETY: the caller's module is loaded: it is calling.
                owner_name: unsafe { module_name_of(owner) },
                limit_file: None,
            },
            GFP_KERNEL,
        )?;
        // SAFETY: valid C strings per the caller.
        entry.name_len = unsafe { copy_cstr(name_ptr, &mut entry.name, NAME_MAX) }.ok_or(EINVAL)?;
        if !desc_ptr.is_null() {
            // SAFETY: as above.
            entry.desc_len =
                unsafe { copy_cstr(desc_ptr, &mut entry.desc, DESCRIPTION_MAX) }.ok_or(EINVAL)?;
        }
        if !report::valid_name(entry.name())
            || !report::valid_description(&entry.desc[..entry.desc_len])
        {
            return Err(EINVAL);
        }
        let limit = if limit == 0 { usize::MAX } else { limit };
        let n = entry.name_len;
        let e = &mut *entry;
        e.orphan_name[..n].copy_from_slice(&e.name[..n]);
        e.orphan_name[n..n + ORPHAN_SUFFIX.len()].copy_from_slice(ORPHAN_SUFFIX);

        let mut entries = self.entries.lock();
        if entries.iter().any(|e| e.client == ct as usize) {
            return Err(EEXIST);
        }
        if let Some(orphan) = entries.iter_mut().find(|e| e.name() == entry.name()) {
            // A defined type's name is taken; an orphan's is its owner's, to adopt on a reload.
            if !orphan.is_orphan()
                || owner.is_null()
                || orphan.owner_name.as_bytes() != entry.owner_name.as_bytes()
            {
                return Err(EEXIST);
            }
            // SAFETY: `ct` is valid per the caller; the lock is held.
            return unsafe { self.adopt(orphan, ct, owner, limit) };
        }
        // The strings point into `entry`'s heap block, which does not move when the box moves and
        // is freed only after the core forgot the type (undefine succeeded), or never (module exit
        // with the type still defined). The core reads them only while the type is defined.
        let name = entry.shown_name();
        // SAFETY: checked ASCII, and by the above the `'static` is never outlived.
        let desc: &'static str = unsafe {
            core::str::from_utf8_unchecked(core::slice::from_raw_parts(
                entry.desc.as_ptr(),
                entry.desc_len,
            ))
        };
        let ty = self
            .heap
            .define_type(name, desc, limit)
            .map_err(type_errno)?;
        entry.ty = ty;
        let fname =
            CStr::from_bytes_with_nul(&entry.name[..=entry.name_len]).map_err(|_| EINVAL)?;
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
        let pushed = match file {
            Ok(f) => {
                entry.limit_file = Some(f);
                entries.push(entry, GFP_KERNEL).map_err(|_| ENOMEM)
            }
            Err(e) => Err(e),
        };
        if let Err(e) = pushed {
            // Undo: the type has no allocations yet, so this cannot fail.
            let _ = self.heap.undefine_type(ty);
            return Err(e);
        }
        if let Some(owner) = self.owners.get(ty.index()) {
            owner.store(ct as usize, Release);
        }
        // SAFETY: valid per the caller.
        unsafe { core::ptr::addr_of_mut!((*ct).handle).write_volatile(ty.to_raw() + 1) };
        Ok(())
    }

    /// Defines `ct` as the orphan `e` left by an earlier load of the module `owner` (same module
    /// name, same type name): the orphan's core slot, statistics and live allocations become
    /// `ct`'s, its limit `ct`'s.
    ///
    /// # Safety
    ///
    /// `ct` points to a valid `struct kmalloc43_type`; the registry's lock is held (`e` is one of
    /// its entries).
    unsafe fn adopt(
        &self,
        e: &mut TypeEntry,
        ct: *mut Kmalloc43Type,
        owner: *const c_void,
        limit: usize,
    ) -> Result {
        let ty = e.ty;
        e.client = ct as usize;
        e.owner = owner as usize;
        let shown = e.shown_name();
        let st = self
            .heap
            .with(|s| {
                s.malloc.type_stats_mut(ty).map(|st| {
                    st.name = shown;
                })
            })
            .and_then(|()| self.heap.set_limit(ty, limit))
            .and_then(|()| self.heap.type_stats(ty))
            .map_err(type_errno)?;
        pr_info!(
            "module {} defined type {} again: adopted with the {} live allocations ({} bytes) of its previous load\n",
            e.owner_name.show(),
            BStr::from_bytes(e.name()),
            st.inuse,
            st.memuse
        );
        if let Some(slot) = self.owners.get(ty.index()) {
            slot.store(ct as usize, Release);
        }
        // SAFETY: valid per the caller.
        unsafe { core::ptr::addr_of_mut!((*ct).handle).write_volatile(ty.to_raw() + 1) };
        Ok(())
    }

    /// The module `owner` goes (its exit function ran, or its init failed; its memory is still
    /// there): each of its types still defined is undefined if it has no live allocations, else
    /// orphaned (see the module documentation). Both are the owner's bug and logged with
    /// `pr_err`. Process context (the module notifier).
    pub(crate) fn module_going(&self, owner: *const c_void, name: &ModuleName) {
        if owner.is_null() {
            return;
        }
        let mut entries = self.entries.lock();
        let mut i = 0;
        while i < entries.len() {
            let e = &mut entries[i];
            if e.is_orphan() || e.owner != owner as usize {
                i += 1;
                continue;
            }
            let ty = e.ty;
            match self.heap.undefine_type(ty) {
                Ok(_) => {
                    pr_err!(
                        "module {} unloaded with type {} still defined (no live allocations): undefined\n",
                        name.show(),
                        BStr::from_bytes(e.name())
                    );
                    if let Some(slot) = self.owners.get(ty.index()) {
                        slot.store(0, Release);
                    }
                    // Its limit file goes with it.
                    drop(entries.remove(i));
                }
                Err(_) => {
                    // Calls through the old struct are refused from here on.
                    if let Some(slot) = self.owners.get(ty.index()) {
                        slot.store(0, Release);
                    }
                    e.client = 0;
                    e.owner = 0;
                    let shown = e.shown_name();
                    let st = self.heap.with(|s| {
                        s.malloc.type_stats_mut(ty).map(|st| {
                            st.name = shown;
                        })
                    });
                    let st = st.and_then(|()| self.heap.type_stats(ty));
                    let (inuse, memuse) = st.map(|s| (s.inuse, s.memuse)).unwrap_or((0, 0));
                    pr_err!(
                        "module {} unloaded with {} live allocations ({} bytes) of type {}: orphaned until it is loaded again\n",
                        name.show(),
                        inuse,
                        memuse,
                        BStr::from_bytes(e.name())
                    );
                    i += 1;
                }
            }
        }
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
        let mut entries = self.entries.lock();
        let i = entries
            .iter()
            .position(|e| e.client == ct as usize && e.ty == ty)
            .ok_or(ENOENT)?;
        if let Err(e) = self.heap.undefine_type(ty) {
            if let MallocError::TypeInUse { inuse, .. } = e {
                pr_err!(
                    "type {} still has {} live allocations: not undefined\n",
                    BStr::from_bytes(entries[i].name()),
                    inuse
                );
            }
            return Err(type_errno(e));
        }
        if let Some(owner) = self.owners.get(ty.index()) {
            owner.store(0, Release);
        }
        // Dropping the entry removes its limit file and frees the name the core no longer uses.
        drop(entries.remove(i));
        // SAFETY: valid per the caller.
        unsafe { core::ptr::addr_of_mut!((*ct).handle).write_volatile(0) };
        Ok(())
    }
}

#[pinned_drop]
impl PinnedDrop for TypeRegistry {
    fn drop(self: Pin<&mut Self>) {
        let mut entries = self.entries.lock();
        while let Some(mut e) = entries.pop() {
            if e.is_orphan() {
                pr_warn!(
                    "type {} (orphan of module {}) still defined at unload: its allocations are lost\n",
                    BStr::from_bytes(e.name()),
                    e.owner_name.show()
                );
            } else {
                pr_warn!(
                    "type {} still defined at unload\n",
                    BStr::from_bytes(e.name())
                );
            }
            drop(e.limit_file.take());
            // The core may still hold the name: keep the (tiny) entry rather than free it.
            let _ = KBox::into_raw(e);
        }
    }
}
