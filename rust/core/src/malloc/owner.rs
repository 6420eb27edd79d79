// SPDX-License-Identifier: GPL-2.0

//! Client modules as owners: their names, the names of what they leave behind, and what becomes
//! of a client vmem arena when a module goes.
//!
//! Types and client arenas record their owning module ([`Owner`]: `THIS_MODULE`'s identity and
//! name). When a module goes (the glue's module notifier, `MODULE_STATE_GOING`: after its exit
//! function, before its memory is freed), its types go through the type registry
//! ([`super::Registry::module_going`]) and each client arena through [`arena_fate`]: an arena the
//! module owns is *orphaned* (kept for whoever holds its handle, shown as `<name>(orphan)`), and
//! an arena that would call the module's code again (its import/release functions are the going
//! module's) is *disowned*: those functions are never called again. The glue does what is
//! decided here under its locks and prints the [`ArenaNote`]s.

use core::fmt;

use crate::report::NAME_MAX;

/// What reports show after the name of an orphan (a type or an arena whose owner went).
pub const ORPHAN_SUFFIX: &str = "(orphan)";

/// Longest module name kept (the kernel's `MODULE_NAME_LEN` is 56 with the NUL).
pub const MODULE_NAME_MAX: usize = 56;

/// A module's name, copied (a module's own copy goes with it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ModuleName {
    bytes: [u8; MODULE_NAME_MAX],
    len: usize,
}

impl ModuleName {
    /// The name of no module (built-in code).
    pub const NONE: Self = Self {
        bytes: [0; MODULE_NAME_MAX],
        len: 0,
    };

    /// Copies `name`, truncated to [`MODULE_NAME_MAX`] bytes.
    pub fn new(name: &[u8]) -> Self {
        let mut n = Self::NONE;
        n.len = name.len().min(MODULE_NAME_MAX);
        n.bytes[..n.len].copy_from_slice(&name[..n.len]);
        n
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl fmt::Display for ModuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        show_bytes(f, self.as_bytes())
    }
}

impl fmt::Debug for ModuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Writes `bytes` as text: printable ASCII as is, anything else as `\xNN`.
fn show_bytes(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for &b in bytes {
        if b == b' ' || b.is_ascii_graphic() {
            fmt::Write::write_char(f, b as char)?;
        } else {
            write!(f, "\\x{b:02x}")?;
        }
    }
    Ok(())
}

/// A module that owns types or arenas: its identity (the address of its `struct module`, 0 for
/// built-in code, which never goes) and its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Identity only, never dereferenced here.
    pub id: usize,
    /// Its name (what a reload is recognised by).
    pub name: ModuleName,
}

impl Owner {
    /// Built-in code.
    pub const BUILTIN: Self = Self {
        id: 0,
        name: ModuleName::NONE,
    };
}

/// A type's or an arena's name as reports show it: the name, or `<name>(orphan)`.
#[derive(Clone, Copy)]
pub struct ShownName {
    buf: [u8; NAME_MAX + ORPHAN_SUFFIX.len()],
    len: usize,
}

impl ShownName {
    /// `name` itself (truncated to [`NAME_MAX`] bytes, at a character boundary).
    pub fn plain(name: &str) -> Self {
        let mut s = Self {
            buf: [0; NAME_MAX + ORPHAN_SUFFIX.len()],
            len: 0,
        };
        let mut n = name.len().min(NAME_MAX);
        while !name.is_char_boundary(n) {
            n -= 1;
        }
        s.buf[..n].copy_from_slice(&name.as_bytes()[..n]);
        s.len = n;
        s
    }

    /// `<name>(orphan)`.
    pub fn orphan(name: &str) -> Self {
        let mut s = Self::plain(name);
        s.buf[s.len..s.len + ORPHAN_SUFFIX.len()].copy_from_slice(ORPHAN_SUFFIX.as_bytes());
        s.len += ORPHAN_SUFFIX.len();
        s
    }

    /// `name`, or `<name>(orphan)` if `orphan`: how types and client arenas are shown.
    pub fn of(name: &str, orphan: bool) -> Self {
        if orphan {
            Self::orphan(name)
        } else {
            Self::plain(name)
        }
    }

    /// The name shown.
    pub fn as_str(&self) -> &str {
        // Built from whole `&str`s cut at character boundaries.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl fmt::Display for ShownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What becomes of a client arena when a module goes.
///
/// An orphaned arena is renamed, as an orphaned type is, but never adopted: a type's
/// allocations can be freed only through a type struct, which only the owner's reload can
/// provide again, while an arena stays reachable by its handle for whoever holds it; and its
/// spans came from the going module's source (its import function and cookie), so a reload's
/// new source must never be handed them. The reload creates a new arena under the old name
/// (arena names need not be unique) and reports tell the two apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArenaFate {
    /// The module owned it: it forgets its owner and is shown as `<name>(orphan)`.
    pub orphan: bool,
    /// Its import/release functions must never be called again.
    pub disown: bool,
}

/// The fate of an arena when a module goes: `owned`, the module is its owner; `sources_builtin`,
/// its import/release are kmalloc43's own arena-source functions or none (callable as long as
/// kmalloc43 is loaded); `calls_into`, one of them lies in the going module's memory. An owned
/// arena is orphaned, and disowned unless its source is kmalloc43's; an arena of another owner
/// whose functions lie in the going module is disowned too (a client may pass another module's
/// functions).
pub fn arena_fate(owned: bool, sources_builtin: bool, calls_into: bool) -> ArenaFate {
    let calls = !sources_builtin && calls_into;
    ArenaFate {
        orphan: owned,
        disown: (owned && !sources_builtin) || calls,
    }
}

/// What the log says about an arena when a module goes; its text is its `Display`
/// (`tools/guest/steps.d/30-orphan.sh` matches it). Both are the module's bug (`pr_err`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArenaNote<'a> {
    /// The owner went without destroying it.
    Orphaned {
        /// The going module.
        module: &'a ModuleName,
        /// The arena's name as its owner gave it.
        arena: &'a str,
        /// Live segments.
        segments: usize,
        /// Their bytes.
        bytes: usize,
    },
    /// Its import/release, the going module's, are never called again.
    Disowned {
        /// The going module.
        module: &'a ModuleName,
        /// The arena's name as its owner gave it.
        arena: &'a str,
        /// Imported spans kept instead of released.
        spans: usize,
        /// Their bytes.
        bytes: usize,
    },
}

impl fmt::Display for ArenaNote<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ArenaNote::Orphaned {
                module,
                arena,
                segments,
                bytes,
            } => write!(
                f,
                "module {module} unloaded without destroying arena {arena} ({segments} live segments, {bytes} bytes): orphaned"
            ),
            ArenaNote::Disowned {
                module,
                arena,
                spans,
                bytes,
            } => write!(
                f,
                "arena {arena}: import/release of module {module} disowned: never called again; {spans} imported spans ({bytes} bytes) are kept, never released"
            ),
        }
    }
}
