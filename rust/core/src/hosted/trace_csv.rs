// SPDX-License-Identifier: GPL-2.0

//! Reading a kmalloc trace in the CSV format of `tools/kmtrace` (issue 9):
//!
//! ```text
//! seq,op,ptr,bytes_req,bytes_alloc,cache
//! 0,alloc,ffff888003a1b000,136,192,kmalloc
//! 1,free,ffff888003a1b000,136,192,kmalloc
//! 2,free_unknown,ffff888003a1c000,,,dentry
//! ```
//!
//! * `seq` counts 0, 1, 2, ... in trace order;
//! * `op` is `alloc`, `free` or `free_unknown` (a free whose alloc was not traced);
//! * `ptr` is the address in 16 hex digits;
//! * `bytes_req`, `bytes_alloc`: the requested size and SLUB's size (on `free` rows, the alloc's
//!   values), empty on `free_unknown` rows;
//! * `cache` is the kmem_cache name, or the literal `kmalloc`.
//!
//! Parsing is strict, so that a damaged trace is reported rather than replayed wrongly: a wrong
//! header, a missing or extra column, a `seq` out of order, an unknown `op`, a bad number, a
//! missing size on an `alloc`/`free` row or a row cut short (a final line without its newline)
//! is a [`TraceError`] naming the line.

use std::collections::HashMap;
use std::fmt;
use std::io::BufRead;

/// The header line of a trace CSV.
pub const TRACE_HEADER: &str = "seq,op,ptr,bytes_req,bytes_alloc,cache";

/// What a row does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceOp {
    /// An allocation of `bytes_req` bytes at `ptr`.
    Alloc,
    /// A free of the traced allocation at `ptr`.
    Free,
    /// A free whose allocation was not traced.
    FreeUnknown,
}

/// One row of a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceRow {
    /// What the row does.
    pub op: TraceOp,
    /// The address.
    pub ptr: u64,
    /// Requested bytes (0 on `free_unknown` rows).
    pub bytes_req: usize,
    /// SLUB's bytes for the request (0 on `free_unknown` rows).
    pub bytes_alloc: usize,
    /// Index of the row's cache name in [`Trace::caches`].
    pub cache: u32,
}

/// A whole trace, read into memory (a row takes 32 bytes; cache names are stored once).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// The rows in order (`seq` is the index).
    pub rows: Vec<TraceRow>,
    /// Cache names, indexed by [`TraceRow::cache`].
    pub caches: Vec<String>,
}

/// Why a trace could not be read.
#[derive(Debug)]
pub enum TraceError {
    /// Reading failed (or the decompressor failed: a truncated or corrupt `.xz`).
    Io(String),
    /// The first line is not [`TRACE_HEADER`].
    Header {
        /// What the first line was.
        found: String,
    },
    /// A row is malformed.
    Row {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        what: String,
    },
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceError::Io(e) => write!(f, "read error: {e}"),
            TraceError::Header { found } => {
                write!(
                    f,
                    "line 1: expected header '{TRACE_HEADER}', found '{found}'"
                )
            }
            TraceError::Row { line, what } => write!(f, "line {line}: {what}"),
        }
    }
}

impl std::error::Error for TraceError {}

fn row_error(line: usize, what: impl Into<String>) -> TraceError {
    TraceError::Row {
        line,
        what: what.into(),
    }
}

fn parse_size(line: usize, name: &str, field: &str) -> Result<usize, TraceError> {
    if field.is_empty() || !field.bytes().all(|c| c.is_ascii_digit()) {
        return Err(row_error(
            line,
            format!("{name} '{field}' is not a decimal size"),
        ));
    }
    field
        .parse()
        .map_err(|_| row_error(line, format!("{name} '{field}' is too large")))
}

/// Reads a trace from `input` (the CSV text).
pub fn read_trace(input: impl BufRead) -> Result<Trace, TraceError> {
    let mut trace = Trace::default();
    let mut names: HashMap<String, u32> = HashMap::new();
    let mut input = input;
    let mut raw = Vec::new();
    let mut line_no = 0;
    let mut header = true;
    loop {
        raw.clear();
        let n = input
            .read_until(b'\n', &mut raw)
            .map_err(|e| TraceError::Io(e.to_string()))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if raw.pop() != Some(b'\n') {
            return Err(row_error(
                line_no,
                "last line has no newline (the trace is cut short)",
            ));
        }
        let text = std::str::from_utf8(&raw)
            .map_err(|_| row_error(line_no, "not UTF-8 text"))?
            .trim_end_matches('\r');
        if header {
            if text != TRACE_HEADER {
                return Err(TraceError::Header {
                    found: text.chars().take(80).collect(),
                });
            }
            header = false;
            continue;
        }
        if text.is_empty() {
            continue;
        }
        let fields: Vec<&str> = text.split(',').collect();
        if fields.len() != 6 {
            return Err(row_error(
                line_no,
                format!("{} columns, expected 6 (a row cut short?)", fields.len()),
            ));
        }
        let seq = parse_size(line_no, "seq", fields[0])?;
        if seq != trace.rows.len() {
            return Err(row_error(
                line_no,
                format!("seq {seq}, expected {}", trace.rows.len()),
            ));
        }
        let op = match fields[1] {
            "alloc" => TraceOp::Alloc,
            "free" => TraceOp::Free,
            "free_unknown" => TraceOp::FreeUnknown,
            other => return Err(row_error(line_no, format!("unknown op '{other}'"))),
        };
        let hex = fields[2];
        if hex.len() != 16 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(row_error(
                line_no,
                format!("ptr '{hex}' is not 16 hex digits"),
            ));
        }
        let ptr = u64::from_str_radix(hex, 16).map_err(|_| row_error(line_no, "bad ptr"))?;
        if ptr == 0 {
            return Err(row_error(line_no, "NULL ptr (the recorder drops those)"));
        }
        let (bytes_req, bytes_alloc) = if op == TraceOp::FreeUnknown {
            if !fields[3].is_empty() || !fields[4].is_empty() {
                return Err(row_error(line_no, "free_unknown row with sizes"));
            }
            (0, 0)
        } else {
            (
                parse_size(line_no, "bytes_req", fields[3])?,
                parse_size(line_no, "bytes_alloc", fields[4])?,
            )
        };
        let name = fields[5];
        if name.is_empty() {
            return Err(row_error(line_no, "empty cache name"));
        }
        let cache = match names.get(name) {
            Some(&c) => c,
            None => {
                let c = trace.caches.len() as u32;
                names.insert(name.to_owned(), c);
                trace.caches.push(name.to_owned());
                c
            }
        };
        trace.rows.push(TraceRow {
            op,
            ptr,
            bytes_req,
            bytes_alloc,
            cache,
        });
    }
    if header {
        return Err(TraceError::Header {
            found: String::new(),
        });
    }
    Ok(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Trace, TraceError> {
        read_trace(text.as_bytes())
    }

    fn err_line(text: &str) -> usize {
        match read(text) {
            Err(TraceError::Row { line, .. }) => line,
            other => panic!("expected a row error, got {other:?}"),
        }
    }

    #[test]
    fn reads_the_three_ops_and_interns_cache_names() {
        let t = read(
            "seq,op,ptr,bytes_req,bytes_alloc,cache\n\
             0,alloc,ffff888003a1b000,136,192,kmalloc\n\
             1,alloc,ffff888003a1c000,200,256,dentry\n\
             2,free,ffff888003a1b000,136,192,kmalloc\n\
             3,free_unknown,ffff888003a1d000,,,dentry\n",
        )
        .unwrap();
        assert_eq!(t.rows.len(), 4);
        assert_eq!(t.caches, ["kmalloc", "dentry"]);
        assert_eq!(
            t.rows[0],
            TraceRow {
                op: TraceOp::Alloc,
                ptr: 0xffff_8880_03a1_b000,
                bytes_req: 136,
                bytes_alloc: 192,
                cache: 0
            }
        );
        assert_eq!(t.rows[2].op, TraceOp::Free);
        assert_eq!(t.rows[3].op, TraceOp::FreeUnknown);
        assert_eq!(t.rows[3].cache, 1);
    }

    #[test]
    fn rejects_damage_with_the_line_number() {
        let h = "seq,op,ptr,bytes_req,bytes_alloc,cache\n";
        let ok = "0,alloc,ffff888003a1b000,136,192,kmalloc\n";
        assert!(matches!(read(""), Err(TraceError::Header { .. })));
        assert!(matches!(
            read("seq,op,ptr\n"),
            Err(TraceError::Header { .. })
        ));
        // A row cut short (what a truncated file ends with).
        assert_eq!(err_line(&format!("{h}{ok}1,free,ffff8880")), 3);
        assert_eq!(
            err_line(&format!("{h}{ok}1,free,ffff888003a1b000,136,192")),
            3
        );
        assert_eq!(
            err_line(&format!("{h}{ok}1,free,ffff888003a1b000,136,192,km")),
            3
        );
        assert_eq!(
            err_line(&format!("{h}{ok}1,free,ffff888003a1b000,136,192,a,b\n")),
            3
        );
        // seq gaps or repeats, unknown ops, bad numbers, bad pointers.
        assert_eq!(err_line(&format!("{h}{ok}{ok}")), 3);
        assert_eq!(
            err_line(&format!("{h}0,realloc,ffff888003a1b000,1,16,x\n")),
            2
        );
        assert_eq!(
            err_line(&format!("{h}0,alloc,ffff888003a1b000,-1,16,x\n")),
            2
        );
        assert_eq!(err_line(&format!("{h}0,alloc,ffff888003a1b000,,16,x\n")), 2);
        assert_eq!(
            err_line(&format!(
                "{h}0,alloc,ffff888003a1b000,99999999999999999999999,16,x\n"
            )),
            2
        );
        assert_eq!(err_line(&format!("{h}0,alloc,ffff88800,1,16,x\n")), 2);
        assert_eq!(
            err_line(&format!("{h}0,alloc,0000000000000000,1,16,x\n")),
            2
        );
        assert_eq!(
            err_line(&format!("{h}0,alloc,ffff888003a1b00g,1,16,x\n")),
            2
        );
        assert_eq!(
            err_line(&format!("{h}0,free_unknown,ffff888003a1b000,1,,x\n")),
            2
        );
        assert_eq!(err_line(&format!("{h}0,alloc,ffff888003a1b000,1,16,\n")), 2);
        // The message says what is wrong.
        let e = read(&format!("{h}{ok}5,free,ffff888003a1b000,136,192,kmalloc\n")).unwrap_err();
        assert_eq!(e.to_string(), "line 3: seq 5, expected 1");
    }

    #[test]
    fn accepts_crlf_and_blank_lines_but_not_a_missing_final_newline() {
        let text = "seq,op,ptr,bytes_req,bytes_alloc,cache\r\n\
             0,alloc,ffff888003a1b000,1,8,kmalloc\r\n\
             \n\
             1,free,ffff888003a1b000,1,8,kmalloc";
        // A cache name cut short would still have six columns: the newline is the proof.
        assert_eq!(err_line(text), 4);
        let t = read(&format!("{text}\n")).unwrap();
        assert_eq!(t.rows.len(), 2);
    }
}
