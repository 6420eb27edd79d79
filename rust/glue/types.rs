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
//! Define and undefine take a mutex (they may sleep: process context); allocation and free never
//! touch the registry: they only read the handle.

use kernel::{
    debugfs::{BinaryReader, BinaryWriter, Dir, File},
    ffi::c_char,
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

/// One registered type.
struct TypeEntry {
    name: [u8; NAME_MAX + 1],
    name_len: usize,
    desc: [u8; DESCRIPTION_MAX],
    desc_len: usize,
    ty: MallocType,
    /// Address of the client's struct (identity only, never dereferenced through this).
    client: usize,
    limit_file: Option<Pin<KBox<File<LimitFile>>>>,
}

impl TypeEntry {
    fn name(&self) -> &[u8] {
        &self.name[..self.name_len]
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
        let (name_ptr, desc_ptr, limit) = unsafe { ((*ct).name, (*ct).desc, (*ct).limit) };
        if name_ptr.is_null() {
            return Err(EINVAL);
        }
        let mut entry = KBox::new(
            TypeEntry {
                name: [0; NAME_MAX + 1],
                name_len: 0,
                desc: [0; DESCRIPTION_MAX],
                desc_len: 0,
                ty: MallocType::from_raw(0),
                client: ct as usize,
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

        let mut entries = self.entries.lock();
        if entries
            .iter()
            .any(|e| e.name() == entry.name() || e.client == ct as usize)
        {
            return Err(EEXIST);
        }
        // The strings point into `entry`'s heap block, which does not move when the box moves and
        // is freed only after the core forgot the type (undefine succeeded), or never (module exit
        // with the type still defined). The core reads them only while the type is defined.
        // SAFETY: both are checked ASCII, and by the above the `'static` is never outlived.
        let (name, desc): (&'static str, &'static str) = unsafe {
            (
                core::str::from_utf8_unchecked(core::slice::from_raw_parts(
                    entry.name.as_ptr(),
                    entry.name_len,
                )),
                core::str::from_utf8_unchecked(core::slice::from_raw_parts(
                    entry.desc.as_ptr(),
                    entry.desc_len,
                )),
            )
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
            pr_warn!(
                "type {} still defined at unload\n",
                BStr::from_bytes(e.name())
            );
            drop(e.limit_file.take());
            // The core may still hold the name: keep the (tiny) entry rather than free it.
            let _ = KBox::into_raw(e);
        }
    }
}
