// SPDX-License-Identifier: GPL-2.0

//! `kmreplay`: replays a kmalloc trace CSV (`tools/kmtrace` format, plain or `.xz`) through the
//! malloc core on the host, in both size-class modes, and prints what each held.
//!
//! ```text
//! kmreplay [--classes pow2|fine|both] [--rows N] [--chunk-order N] [--diagnostic]
//!          [--segregate-below BYTES|all] [--split-kmalloc N] [--magazines]
//!          [--magazine-rules fill,budget,aging|none] TRACE.csv[.xz]|-
//! ```
//!
//! `.xz` files are read through `xz -dc` (a truncated or corrupt file makes `xz` fail, which is
//! reported). `--rows N` replays only the first N rows; `--diagnostic` replays in DIAGNOSTIC mode
//! (its side table counts as metadata); `--segregate-below BYTES` builds the core with
//! type-segregated buckets for the classes of pieces smaller than `BYTES` (`all`: every class,
//! the default, as the kernel heap is built; 0: off, the paper's shared buckets), and
//! `--split-kmalloc N` spreads the `kmalloc` rows over `N` malloc types in turn; `--magazines`
//! puts the glue's magazine layer (one CPU, per type and class) in front of the core, so that
//! the objects resting in magazines and depots count; `--magazine-rules` names the trimming rules it
//! applies (`magazine::trim`; all three by default, as the kernel; `none`: session 5's layer).
//! Exit status: 0 replayed, 1 the trace is unreadable or the replay failed, 2 bad
//! arguments.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::process::{Command, ExitCode, Stdio};

use kmalloc43_core::hosted::replay::{replay, ReplayConfig, ReplayReport};
use kmalloc43_core::hosted::replay_front::Rules;
use kmalloc43_core::hosted::trace_csv::{read_trace, Trace, TraceOp};
use kmalloc43_core::malloc::{SizeClasses, PAGE_SIZE, SEGREGATE_ALL};

const USAGE: &str = "usage: kmreplay [--classes pow2|fine|both] [--rows N] [--chunk-order N] \
                     [--diagnostic] [--segregate-below BYTES|all] [--split-kmalloc N] \
                     [--magazines] [--magazine-rules fill,budget,aging|none] TRACE.csv[.xz]|-";

struct Args {
    modes: Vec<SizeClasses>,
    rows: Option<usize>,
    chunk_order: u32,
    diagnostic: bool,
    segregate_below: usize,
    split_kmalloc: usize,
    magazines: bool,
    magazine_rules: Rules,
    path: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        modes: vec![SizeClasses::Pow2, SizeClasses::Fine],
        rows: None,
        chunk_order: 4,
        diagnostic: false,
        // The kernel heap's setting (`rust/glue/heap.rs`): every class segregated by type.
        segregate_below: SEGREGATE_ALL,
        split_kmalloc: 1,
        magazines: false,
        magazine_rules: Rules::ALL,
        path: String::new(),
    };
    let mut it = std::env::args().skip(1);
    let mut path = None;
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--classes" => {
                args.modes = match value("--classes")?.as_str() {
                    "both" => vec![SizeClasses::Pow2, SizeClasses::Fine],
                    m => vec![SizeClasses::parse(m.as_bytes())
                        .ok_or(format!("--classes {m}: pow2, fine or both"))?],
                }
            }
            "--rows" => {
                let v = value("--rows")?;
                args.rows = Some(v.parse().map_err(|_| format!("--rows {v}: not a count"))?);
            }
            "--chunk-order" => {
                let v = value("--chunk-order")?;
                args.chunk_order = v
                    .parse()
                    .ok()
                    .filter(|&o| o <= 10)
                    .ok_or(format!("--chunk-order {v}: 0..=10"))?;
            }
            "--diagnostic" => args.diagnostic = true,
            "--magazines" => args.magazines = true,
            "--magazine-rules" => {
                let v = value("--magazine-rules")?;
                args.magazine_rules = parse_rules(&v)?;
            }
            "--split-kmalloc" => {
                let v = value("--split-kmalloc")?;
                args.split_kmalloc = v
                    .parse()
                    .ok()
                    .filter(|&n| (1..=4096).contains(&n))
                    .ok_or(format!("--split-kmalloc {v}: 1..=4096"))?;
            }
            "--segregate-below" => {
                let v = value("--segregate-below")?;
                args.segregate_below = match v.as_str() {
                    "all" => SEGREGATE_ALL,
                    _ => v
                        .parse()
                        .map_err(|_| format!("--segregate-below {v}: a size in bytes or all"))?,
                };
            }
            "-h" | "--help" => return Err(String::new()),
            p if path.is_none() && (p == "-" || !p.starts_with('-')) => path = Some(p.to_owned()),
            other => return Err(format!("unexpected argument '{other}'")),
        }
    }
    args.path = path.ok_or("no trace file given")?;
    Ok(args)
}

/// `fill,budget,aging` (any of them, comma-separated) or `none`.
fn parse_rules(v: &str) -> Result<Rules, String> {
    let mut r = Rules::NONE;
    if v == "none" {
        return Ok(r);
    }
    for w in v.split(',') {
        match w {
            "fill" => r.page_fills = true,
            "budget" => r.class_budget = true,
            "aging" => r.aging = true,
            _ => {
                return Err(format!(
                    "--magazine-rules {v}: fill, budget, aging (comma-separated) or none"
                ))
            }
        }
    }
    Ok(r)
}

/// Reads the whole trace; `.xz` through `xz -dc`, whose failure (truncated or corrupt input) is
/// an error even if the text read so far parsed.
fn load(path: &str) -> Result<Trace, String> {
    if path == "-" {
        return read_trace(io::stdin().lock()).map_err(|e| format!("stdin: {e}"));
    }
    if !path.ends_with(".xz") {
        let f = File::open(path).map_err(|e| format!("{path}: {e}"))?;
        return read_trace(BufReader::new(f)).map_err(|e| format!("{path}: {e}"));
    }
    let mut child = Command::new("xz")
        .args(["-dc", "--", path])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{path}: cannot run xz: {e}"))?;
    let stdout = child.stdout.take().ok_or("xz: no output pipe")?;
    let parsed = read_trace(BufReader::with_capacity(1 << 16, stdout));
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child.wait().map_err(|e| format!("xz: {e}"))?;
    if !status.success() {
        return Err(format!(
            "{path}: xz failed ({status}): {} (truncated or corrupt?)",
            err.trim()
        ));
    }
    parsed.map_err(|e| format!("{path}: {e}"))
}

fn summary(trace: &Trace) -> String {
    let count = |op| trace.rows.iter().filter(|r| r.op == op).count();
    let allocs: Vec<_> = trace
        .rows
        .iter()
        .filter(|r| r.op == TraceOp::Alloc && r.bytes_req > 0)
        .collect();
    let small = allocs.iter().filter(|r| r.bytes_req <= 1024).count();
    let pow2 = allocs
        .iter()
        .filter(|r| r.bytes_req.is_power_of_two())
        .count();
    let share = |n: usize| 100.0 * n as f64 / allocs.len().max(1) as f64;
    format!(
        "{} rows ({} alloc, {} free, {} free_unknown), {} caches; requests <= 1 KiB: {:.1} %, exact powers of two: {:.1} %",
        trace.rows.len(),
        count(TraceOp::Alloc),
        count(TraceOp::Free),
        count(TraceOp::FreeUnknown),
        trace.caches.len(),
        share(small),
        share(pow2)
    )
}

fn compare(out: &mut impl Write, reports: &[ReplayReport]) -> io::Result<()> {
    writeln!(out, "side by side:")?;
    writeln!(
        out,
        "  {:<8} {:>10} {:>10} {:>10} {:>8} {:>12} {:>10} {:>8} {:>8} {:>12}",
        "classes",
        "peak held",
        "data",
        "metadata",
        "util %",
        "meta B/MiB",
        "all freed",
        "idle",
        "left",
        "worst gb/1k"
    )?;
    for r in reports {
        let w = r.worst_give_backs().map_or(0.0, |c| c.per_1000());
        writeln!(
            out,
            "  {:<8} {:>10} {:>10} {:>10} {:>8.1} {:>12.0} {:>10} {:>8} {:>8} {:>12.2}",
            r.config.classes.name(),
            r.peak.held(),
            r.peak.data,
            r.peak.metadata(),
            100.0 * r.utilization(),
            r.metadata_per_mib(),
            r.after_free.held(),
            r.after_idle.held(),
            r.after_reclaim.held(),
            w
        )?;
    }
    writeln!(
        out,
        "  (pages of {PAGE_SIZE} B; 'all freed': pages held once every allocation is freed, idle clusters still parked; 'idle': then after the timed pass on the idle heap; 'left': after reclaim too)"
    )
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("kmreplay: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut trace = match load(&args.path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("kmreplay: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(n) = args.rows {
        trace.rows.truncate(n);
    }
    let mut out = io::stdout().lock();
    let mut reports = Vec::new();
    let printed = writeln!(out, "kmreplay: {}: {}", args.path, summary(&trace));
    if printed.is_err() {
        return ExitCode::from(1);
    }
    for &mode in &args.modes {
        let cfg = ReplayConfig {
            classes: mode,
            import_bytes: PAGE_SIZE << args.chunk_order,
            diagnostic: args.diagnostic,
            segregate_below: args.segregate_below,
            split_kmalloc: args.split_kmalloc,
            magazines: args.magazines,
            magazine_rules: args.magazine_rules,
        };
        match replay(&trace, cfg) {
            Ok(r) => {
                if write!(out, "{r}").is_err() {
                    return ExitCode::from(1);
                }
                reports.push(r);
            }
            Err(e) => {
                eprintln!("kmreplay: {}: classes={}: {e}", args.path, mode.name());
                return ExitCode::from(1);
            }
        }
    }
    // A closed pipe (`kmreplay ... | head`) is not worth a panic: stop quietly.
    match compare(&mut out, &reports) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(1),
    }
}
