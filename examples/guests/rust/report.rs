//! report: a Rust guest using the `sluice-guest` SDK. It reads its order context, checks
//! every file under /data (a read-only mount), emits a `progress` event per file and a
//! `checked` event at the end, and exits non-zero when a file is empty (a failed check).
//!
//! Builds with Debian's Rust 1.63 (`rustc libstd-rust-dev-wasm32 lld-14`) for
//! `wasm32-wasi`, or with rustup's `wasm32-wasip1`; see scripts/build-guests.

use std::fs;
use std::process::ExitCode;

use sluice_guest::{Event, Events, OrderContext};

fn main() -> ExitCode {
    let ctx = match OrderContext::from_env() {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("report: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "report: order {} ({}) of run {} [trace {}]",
        ctx.order_num, ctx.order_name, ctx.run_id, ctx.trace_id
    );
    let mut events = match Events::from_env() {
        Ok(events) => events,
        Err(e) => {
            eprintln!("report: {e}");
            return ExitCode::from(2);
        }
    };

    let mut names: Vec<String> = match fs::read_dir("/data") {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect(),
        Err(e) => {
            eprintln!("report: cannot read /data: {e} (mount it with wasm.dirs)");
            return ExitCode::from(2);
        }
    };
    names.sort();

    let mut empty = 0;
    for (i, name) in names.iter().enumerate() {
        let size = fs::metadata(format!("/data/{name}"))
            .map(|m| m.len())
            .unwrap_or(0);
        let verdict = if size == 0 { "EMPTY" } else { "ok" };
        if size == 0 {
            empty += 1;
        }
        println!("  {name}: {size} bytes, {verdict}");
        let event = Event::new("progress")
            .message(format!("checked {name}"))
            .field("file", name.as_str())
            .field("bytes", size as i64)
            .field("done", (i + 1) as i64)
            .field("of", names.len() as i64);
        if let Err(e) = events.emit(&event) {
            eprintln!("report: {e}");
        }
    }
    let summary = Event::new("checked")
        .message(format!("{} files, {} empty", names.len(), empty))
        .field("files", names.len() as i64)
        .field("empty", empty as i64)
        .field("passed", empty == 0);
    if let Err(e) = events.emit(&summary) {
        eprintln!("report: {e}");
    }
    if empty > 0 {
        eprintln!("report: {empty} empty file(s)");
        return ExitCode::from(1);
    }
    println!("report: all {} files passed", names.len());
    ExitCode::SUCCESS
}
