// SPDX-License-Identifier: GPL-2.0

//! Host records of the type registry ([`crate::malloc::Registry`]): a `Box<TypeRecord>`, as the
//! kernel glue uses a `KBox<TypeRecord>`.

use crate::malloc::{RecordBox, TypeRecord};

// SAFETY: a `Box`'s contents stay at one address until the box is dropped; moving the box moves
// only the pointer.
unsafe impl RecordBox for Box<TypeRecord> {}
