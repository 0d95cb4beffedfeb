//! WebAssembly guests cannot make the host's memory grow: a guest printing 200 MB streams it
//! through, and a guest allocating without bound is stopped at its `memory_mb`. Alone in its
//! test binary so that the peak RSS of waited-for children is sluice's own.

mod util;

use nix::sys::resource::{UsageWho, getrusage};
use sluice_contract::{JobStatus, OrderStatus};
use util::{Sandbox, done_of};

/// Writes 3200 × 64 KiB of `x` (200 MiB), then "THE END".
const FLOODS: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "THE END\n")
  (func $print (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start") (local $i i32)
    (memory.fill (i32.const 65536) (i32.const 120) (i32.const 65536))
    (loop $more
      (call $print (i32.const 65536) (i32.const 65536))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $more (i32.lt_u (local.get $i) (i32.const 3200))))
    (call $print (i32.const 1024) (i32.const 8))))"#;

/// Grows its memory 1 MiB at a time and writes to every page of it, until refused; then
/// aborts the way Rust's allocator does.
const HOARDS: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (local $page i32) (local $end i32)
    (loop $more
      (local.set $page (memory.grow (i32.const 16)))
      (if (i32.eq (local.get $page) (i32.const -1)) (then unreachable))
      (local.set $end (i32.mul (i32.add (local.get $page) (i32.const 16)) (i32.const 65536)))
      (local.set $page (i32.mul (local.get $page) (i32.const 65536)))
      (loop $touch
        (i32.store8 (local.get $page) (i32.const 1))
        (local.set $page (i32.add (local.get $page) (i32.const 4096)))
        (br_if $touch (i32.lt_u (local.get $page) (local.get $end))))
      (br $more))))"#;

fn peak_rss_mib() -> i64 {
    getrusage(UsageWho::RUSAGE_CHILDREN).unwrap().max_rss() / 1024
}

#[test]
fn guests_cannot_grow_the_hosts_memory() {
    let sandbox = Sandbox::new();
    let code = sandbox.path().join("code");
    std::fs::create_dir_all(&code).unwrap();
    std::fs::write(code.join("floods.wat"), FLOODS).unwrap();
    std::fs::write(code.join("hoards.wat"), HOARDS).unwrap();
    let job = sandbox.write_job(
        "job.json",
        r#"{"orders": [
            {"order_name": "floods", "code_dir": "code", "timeout": 300,
             "wasm": {"module": "floods.wat"}},
            {"order_name": "hoards", "code_dir": "code", "timeout": 300, "dependencies": ["floods"],
             "wasm": {"module": "hoards.wat", "memory_mb": 64}}
        ]}"#,
    );
    // With RUST_BACKTRACE set, a trap must not symbolize the host's backtrace (260 MB).
    let output = sandbox
        .run_command(&job)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let done = done_of(&output);
    assert_eq!(
        done.status,
        JobStatus::Failed,
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let floods = &done.orders[0];
    assert_eq!(floods.status, OrderStatus::Succeeded);
    let log = sandbox.log_of(&done, "floods");
    assert!(
        log.contains("bytes of this log were dropped here"),
        "200 MB is over the default cap: its head and tail are stored"
    );
    assert!(log.ends_with("xxxxTHE END\n"));

    let hoards = &done.orders[1];
    assert_eq!(hoards.status, OrderStatus::Failed);
    let reason = hoards.reason.as_deref().unwrap_or_default();
    assert!(
        reason.starts_with(
            "memory limit reached: the module asked for 65 MiB, wasm.memory_mb allows 64"
        ),
        "{reason}"
    );

    // 64 MiB of guest memory plus the CLI itself; 200 MB of output never piles up.
    let peak = peak_rss_mib();
    assert!(peak < 64 + 100, "peak RSS {peak} MiB");
}
