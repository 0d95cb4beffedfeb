//! The WebAssembly sandbox, with guests written in WAT and built in the test.
//!
//! Each guest reports what it could do through its exit code (a WASI errno, 0 for success)
//! or its output, so a test sees exactly what a module run by Sluice can reach.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use sluice_contract::dispatch::{Capability, SharedCode};
use sluice_contract::job::WasmSpec;
use sluice_worker::io::FileIo;
use sluice_worker::log_sink::{LogSink, LogSummary};
use sluice_worker::testing::StuckCompiler;
use sluice_worker::wasm::{
    CompileIn, Grants, SharedCompiled, WasmOrder, WasmOutcome, WasmRuntime, compile_for_workers,
};
use tokio::time::Instant;

/// Imports, a memory and a `$print(fd, ptr, len)` helper around `body`.
/// Memory: bytes 0..64 are scratch for iovecs and results; data lives from 1024.
fn module(body: &str) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $fd_prestat_dir_name (param i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func $print (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  {body}
)"#
    )
}

/// Prints "out" to stdout, "err" to stderr, "out again" to stdout; exits 0 by returning.
fn hello() -> String {
    module(
        r#"(data (i32.const 1024) "out\n")
           (data (i32.const 1028) "err\n")
           (data (i32.const 1032) "out again\n")
           (func (export "_start")
             (call $print (i32.const 1) (i32.const 1024) (i32.const 4))
             (call $print (i32.const 2) (i32.const 1028) (i32.const 4))
             (call $print (i32.const 1) (i32.const 1032) (i32.const 10)))"#,
    )
}

fn exits_with(code: i32) -> String {
    module(&format!(
        r#"(func (export "_start") (call $proc_exit (i32.const {code})))"#
    ))
}

/// Prints its whole environment (or its argv), entries separated by NUL bytes.
fn dumps(what: &str) -> String {
    module(&format!(
        r#"(func (export "_start")
             (drop (call ${what}_sizes_get (i32.const 16) (i32.const 20)))
             (drop (call ${what}_get (i32.const 2048) (i32.const 4096)))
             (call $print (i32.const 1) (i32.const 4096) (i32.load (i32.const 20))))"#
    ))
}

/// Prints the guest path of every preopened folder, one per line.
fn lists_preopens() -> String {
    module(
        r#"(data (i32.const 1024) "\n")
           (func (export "_start") (local $fd i32)
             (local.set $fd (i32.const 3))
             (block $done (loop $next
               (br_if $done (call $fd_prestat_get (local.get $fd) (i32.const 16)))
               (drop (call $fd_prestat_dir_name (local.get $fd) (i32.const 4096) (i32.load (i32.const 20))))
               (call $print (i32.const 1) (i32.const 4096) (i32.load (i32.const 20)))
               (call $print (i32.const 1) (i32.const 1024) (i32.const 1))
               (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
               (br $next))))"#,
    )
}

/// Opens `path` relative to preopened folder `dir_fd`, for reading (and prints what it
/// reads) or for writing (creating the file, writing "written\n"). Exits with the errno of
/// the first failing call, 0 when everything worked.
fn opens(dir_fd: u32, path: &str, write: bool) -> String {
    let len = path.len();
    // Rights: FD_READ = 1 << 1, FD_WRITE = 1 << 6. Open flags: CREAT = 1.
    let (oflags, rights) = if write { (1, 64) } else { (0, 2) };
    let body = if write {
        r#"(i32.store (i32.const 0) (i32.const 3000))
           (i32.store (i32.const 4) (i32.const 8))
           (local.set $errno (call $fd_write (i32.load (i32.const 24)) (i32.const 0) (i32.const 1) (i32.const 8)))"#
    } else {
        r#"(i32.store (i32.const 0) (i32.const 8192))
           (i32.store (i32.const 4) (i32.const 4096))
           (local.set $errno (call $fd_read (i32.load (i32.const 24)) (i32.const 0) (i32.const 1) (i32.const 8)))
           (call $print (i32.const 1) (i32.const 8192) (i32.load (i32.const 8)))"#
    };
    module(&format!(
        r#"(data (i32.const 2048) "{path}")
           (data (i32.const 3000) "written\n")
           (func (export "_start") (local $errno i32)
             (local.set $errno (call $path_open (i32.const {dir_fd}) (i32.const 0)
               (i32.const 2048) (i32.const {len}) (i32.const {oflags})
               (i64.const {rights}) (i64.const 0) (i32.const 0) (i32.const 24)))
             (if (local.get $errno) (then (call $proc_exit (local.get $errno))))
             {body}
             (call $proc_exit (local.get $errno)))"#
    ))
}

/// Loops forever without calling the host.
fn spins() -> String {
    module(r#"(func (export "_start") (loop $forever (br $forever)))"#)
}

/// Sleeps for an hour in `poll_oneoff` (a clock subscription).
fn sleeps() -> String {
    module(
        r#"(func (export "_start")
             (i32.store8 (i32.const 1032) (i32.const 0))
             (i32.store (i32.const 1040) (i32.const 1))
             (i64.store (i32.const 1048) (i64.const 3600000000000))
             (i64.store (i32.const 1056) (i64.const 0))
             (i32.store16 (i32.const 1064) (i32.const 0))
             (drop (call $poll_oneoff (i32.const 1024) (i32.const 2048) (i32.const 1) (i32.const 16))))"#,
    )
}

/// Grows its memory 1 MiB at a time until refused, then aborts like Rust's allocator.
fn allocates_without_bound() -> String {
    module(
        r#"(func (export "_start")
             (loop $more
               (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
             unreachable)"#,
    )
}

/// Writes `chunks` × 64 KiB of `x`, then "THE END\n".
fn floods(chunks: u32) -> String {
    module(&format!(
        r#"(data (i32.const 1024) "THE END\n")
           (func (export "_start") (local $i i32)
             (memory.fill (i32.const 65536) (i32.const 120) (i32.const 65536))
             (loop $more
               (call $print (i32.const 1) (i32.const 65536) (i32.const 65536))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $more (i32.lt_u (local.get $i) (i32.const {chunks}))))
             (call $print (i32.const 1) (i32.const 1024) (i32.const 8)))"#
    ))
}

/// A WASI preview 2 component whose `wasi:cli/run` returns ok (or err).
fn component(ok: bool) -> String {
    let discriminant = if ok { 0 } else { 1 };
    format!(
        r#"(component
  (core module $m (func (export "run") (result i32) (i32.const {discriminant})))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $cli (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $cli)))"#
    )
}

/// A code folder holding a guest, a runtime, and what the guest is granted.
struct Sandbox {
    code: tempfile::TempDir,
    events: tempfile::TempDir,
    publish: tempfile::TempDir,
    runtime: WasmRuntime,
    secrets: BTreeMap<String, String>,
}

const CONTEXT: &[(&str, &str)] = &[
    ("SLUICE_RUN_ID", "1b4e28ba-2fa1-11d2-883f-0016d3cca427"),
    ("SLUICE_ORDER_NUM", "0001"),
];

impl Sandbox {
    fn new() -> Self {
        Self::with_runtime(WasmRuntime::new(None))
    }

    fn with_runtime(runtime: WasmRuntime) -> Self {
        let secrets = [("TOKEN", "t0ken-value"), ("OTHER", "not granted")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Sandbox {
            code: tempfile::tempdir().unwrap(),
            events: tempfile::tempdir().unwrap(),
            publish: tempfile::tempdir().unwrap(),
            runtime,
            secrets,
        }
    }

    fn file(&self, path: &str, contents: &[u8]) {
        let path = self.code.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }

    /// Runs `guest` (WAT text, saved as `guest.wasm` compiled or `guest.wat` as is) with the
    /// `wasm` field `spec` (its `module` is filled in) for at most `timeout`.
    async fn run(&self, guest: &str, spec: serde_json::Value, timeout: Duration) -> Run {
        let binary = wat::parse_str(guest).unwrap();
        self.file("guest.wasm", &binary);
        self.run_file("guest.wasm", spec, timeout).await
    }

    async fn run_file(&self, module: &str, spec: serde_json::Value, timeout: Duration) -> Run {
        self.run_sharing(module, spec, timeout, None).await
    }

    /// Runs the file `module` (written with `binary`) with no grants, its dispatch naming
    /// `code`, the compiled code the compile function stores for the run.
    async fn run_compiled_elsewhere(
        &self,
        module: &str,
        binary: &[u8],
        code: &SharedCode,
        timeout: Duration,
    ) -> Run {
        self.file(module, binary);
        let shared = SharedCompiled { code, io: &FileIo };
        self.run_sharing(module, no_grants(), timeout, Some(shared))
            .await
    }

    /// The same, its dispatch naming the compiled code `shared` (on AWS).
    async fn run_sharing(
        &self,
        module: &str,
        spec: serde_json::Value,
        timeout: Duration,
        shared: Option<SharedCompiled<'_>>,
    ) -> Run {
        let mut spec = spec;
        spec["module"] = module.into();
        let mut spec: WasmSpec = serde_json::from_value(spec).unwrap();
        spec.memory_mb.get_or_insert(64);
        let context: Vec<(String, String)> = CONTEXT
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let order = WasmOrder {
            grants: Grants {
                spec: &spec,
                variables: &self.secrets,
                context: &context,
                code_root: self.code.path(),
                events_dir: self.events.path(),
                publish_dir: self.publish.path(),
            },
            deadline: Instant::now() + timeout,
            stop: &tokio_util::sync::CancellationToken::new(),
            shared,
        };
        let log_dir = tempfile::tempdir().unwrap();
        let sink = LogSink::create(log_dir.path());
        // A hang is a failure, not a stuck test run.
        let outcome = tokio::time::timeout(timeout + Duration::from_secs(30), async {
            self.runtime.run(&order, &sink).await
        })
        .await
        .expect("the runtime returns after the order's deadline");
        let log = sink.finish().await.unwrap();
        Run {
            outcome,
            log,
            _log_dir: log_dir,
        }
    }
}

struct Run {
    outcome: WasmOutcome,
    log: LogSummary,
    _log_dir: tempfile::TempDir,
}

impl Run {
    fn exit_code(&self) -> Option<i32> {
        match &self.outcome {
            WasmOutcome::Succeeded => Some(0),
            WasmOutcome::Failed { exit_code, .. } => *exit_code,
            WasmOutcome::TimedOut | WasmOutcome::Stopped => None,
        }
    }

    fn reason(&self) -> &str {
        match &self.outcome {
            WasmOutcome::Failed { reason, .. } => reason,
            other => panic!("expected a failure, got {other:?}; log:\n{}", self.log.tail),
        }
    }

    /// The guest's own output (the worker's `==>` lines removed).
    fn output(&self) -> String {
        self.log
            .tail
            .lines()
            .filter(|l| !l.starts_with("==> "))
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

const SHORT: Duration = Duration::from_secs(20);

fn no_grants() -> serde_json::Value {
    serde_json::json!({})
}

#[tokio::test]
async fn stdout_and_stderr_reach_the_log_in_order() {
    let run = Sandbox::new().run(&hello(), no_grants(), SHORT).await;
    assert_eq!(run.outcome, WasmOutcome::Succeeded);
    assert_eq!(run.output(), "out\nerr\nout again\n");
}

#[tokio::test]
async fn text_format_modules_run_as_they_are() {
    let sandbox = Sandbox::new();
    sandbox.file("bin/hello.wat", hello().as_bytes());
    let run = sandbox.run_file("bin/hello.wat", no_grants(), SHORT).await;
    assert_eq!(run.outcome, WasmOutcome::Succeeded);
    assert_eq!(run.output(), "out\nerr\nout again\n");
}

/// Where a run's compiled code of `binary` is (a file, as [`FileIo`] reads URLs), and the
/// dispatch's view of it.
fn compiled_code_of(binary: &[u8], folder: &tempfile::TempDir) -> (std::path::PathBuf, SharedCode) {
    use sha2::Digest as _;
    let object = folder.path().join("code.cwasm");
    let code = SharedCode {
        module_sha256: data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(binary)),
        get_url: Capability::new(object.display().to_string()),
    };
    (object, code)
}

/// `binary` compiled as the compile function compiles it.
async fn compiled_as_the_function_does(name: &str, binary: &[u8]) -> Vec<u8> {
    let compiled = compile_for_workers(name, binary.to_vec(), false, &CompileIn::ThisProcess);
    compiled.await.unwrap()
}

#[tokio::test]
async fn code_the_compile_function_made_serves_that_order_only() {
    let binary = hello().into_bytes();
    let folder = tempfile::tempdir().unwrap();
    let (object, code) = compiled_code_of(&binary, &folder);
    let compiled = compiled_as_the_function_does("guest.wat", &binary).await;
    std::fs::write(&object, compiled).unwrap();
    let worker = Sandbox::new();
    let run = worker
        .run_compiled_elsewhere("guest.wat", &binary, &code, SHORT)
        .await;
    assert_eq!(run.outcome, WasmOutcome::Succeeded, "{}", run.log.tail);
    assert_eq!(run.output(), "out\nerr\nout again\n");
    assert!(
        run.log
            .tail
            .contains("loaded guest.wat as the compile function compiled it"),
        "{}",
        run.log.tail
    );
    // The next order on that worker, of another run, does not find it in memory: code
    // from a run's object is not kept for the process.
    let run = worker.run_file("guest.wat", no_grants(), SHORT).await;
    assert!(
        run.log.tail.contains("compiled guest.wat in"),
        "{}",
        run.log.tail
    );
}

#[tokio::test]
async fn a_worker_waits_for_the_code_the_compile_function_is_still_making() {
    let binary = wat::parse_str(hello()).unwrap();
    let folder = tempfile::tempdir().unwrap();
    let (object, code) = compiled_code_of(&binary, &folder);
    let compiled = compiled_as_the_function_does("guest.wasm", &binary).await;
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        // Whole or not at all, as an S3 PUT lands.
        let partial = object.with_extension("partial");
        std::fs::write(&partial, compiled).unwrap();
        std::fs::rename(&partial, &object).unwrap();
    });
    let run = Sandbox::new()
        .run_compiled_elsewhere("guest.wasm", &binary, &code, SHORT)
        .await;
    late.await.unwrap();
    assert_eq!(run.outcome, WasmOutcome::Succeeded, "{}", run.log.tail);
    assert!(
        run.log.tail.contains("as the compile function compiled it"),
        "{}",
        run.log.tail
    );
}

#[tokio::test]
async fn code_that_never_appears_fails_the_order_before_its_deadline_saying_so() {
    let binary = wat::parse_str(hello()).unwrap();
    let folder = tempfile::tempdir().unwrap();
    let (_never_written, code) = compiled_code_of(&binary, &folder);
    let run = Sandbox::new()
        .run_compiled_elsewhere("guest.wasm", &binary, &code, Duration::from_secs(2))
        .await;
    assert!(
        run.reason()
            .starts_with("module guest.wasm: its compiled code did not appear within"),
        "{}",
        run.reason()
    );
    assert!(
        !run.log.tail.contains("compiled guest.wasm in"),
        "{}",
        run.log.tail
    );
}

#[tokio::test]
async fn a_module_the_compile_function_could_not_compile_fails_with_its_reason() {
    let binary = b"\0asm\x01\0\0\0\x7f".to_vec();
    let folder = tempfile::tempdir().unwrap();
    let (object, code) = compiled_code_of(&binary, &folder);
    let mut refusal = sluice_contract::dispatch::COMPILE_FAILED.to_vec();
    refusal.extend_from_slice(b"module guest.wasm: invalid: unknown section 127\n");
    std::fs::write(&object, refusal).unwrap();
    let run = Sandbox::new()
        .run_compiled_elsewhere("guest.wasm", &binary, &code, SHORT)
        .await;
    assert_eq!(
        run.reason(),
        "module guest.wasm: invalid: unknown section 127"
    );
}

#[tokio::test]
async fn a_module_file_other_than_the_one_compiled_is_refused() {
    let binary = wat::parse_str(hello()).unwrap();
    let folder = tempfile::tempdir().unwrap();
    let (_object, code) = compiled_code_of(b"another module", &folder);
    let run = Sandbox::new()
        .run_compiled_elsewhere("guest.wasm", &binary, &code, SHORT)
        .await;
    assert!(
        run.reason()
            .contains("is not the one its run's code was compiled from"),
        "{}",
        run.reason()
    );
}

#[tokio::test]
async fn exit_codes_reach_the_outcome() {
    let sandbox = Sandbox::new();
    let run = sandbox.run(&exits_with(7), no_grants(), SHORT).await;
    assert_eq!(run.exit_code(), Some(7));
    assert_eq!(run.reason(), "exited with code 7");
    let run = sandbox.run(&exits_with(0), no_grants(), SHORT).await;
    assert_eq!(run.outcome, WasmOutcome::Succeeded);
}

#[tokio::test]
async fn argv_is_the_module_name_then_the_args() {
    let spec = serde_json::json!({"args": ["a", "b c"]});
    let run = Sandbox::new().run(&dumps("args"), spec, SHORT).await;
    assert_eq!(run.outcome, WasmOutcome::Succeeded);
    let output = run.output();
    let argv: Vec<&str> = output
        .trim_end()
        .split('\0')
        .filter(|a| !a.is_empty())
        .collect();
    assert_eq!(argv, ["guest.wasm", "a", "b c"]);
}

#[tokio::test]
async fn the_environment_is_exactly_the_listed_variables_and_sluices() {
    // There are host variables to leak: the test process has PATH.
    assert!(std::env::var_os("PATH").is_some());
    let spec = serde_json::json!({"env": ["TOKEN"]});
    let run = Sandbox::new().run(&dumps("environ"), spec, SHORT).await;
    assert_eq!(run.outcome, WasmOutcome::Succeeded);
    let output = run.output();
    let mut env: Vec<&str> = output
        .trim_end()
        .split('\0')
        .filter(|e| !e.is_empty())
        .collect();
    env.sort_unstable();
    assert_eq!(
        env,
        [
            "SLUICE_EVENTS_DIR=/sluice/events",
            "SLUICE_ORDER_NUM=0001",
            "SLUICE_OUTPUT=/sluice/output",
            "SLUICE_RUN_ID=1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "TOKEN=t0ken-value",
        ]
    );
}

#[tokio::test]
async fn a_listed_variable_without_a_value_fails_the_order() {
    let spec = serde_json::json!({"env": ["TOKEN", "MISSING"]});
    let run = Sandbox::new().run(&hello(), spec, SHORT).await;
    assert_eq!(
        run.reason(),
        "wasm.env lists MISSING, but the order has no variable MISSING"
    );
    assert_eq!(run.output(), "", "the module did not run");
}

#[tokio::test]
async fn only_the_granted_folders_are_visible() {
    let sandbox = Sandbox::new();
    std::fs::create_dir(sandbox.code.path().join("data")).unwrap();
    let spec = serde_json::json!({"dirs": [{"host": "data", "guest": "/data"}]});
    let run = sandbox.run(&lists_preopens(), spec, SHORT).await;
    assert_eq!(run.outcome, WasmOutcome::Succeeded);
    // The order's mounts, then the events folder (descriptor 3 when there are no others),
    // then the folder of the output file.
    assert_eq!(run.output(), "/data\n/sluice/events\n/sluice\n");
}

#[tokio::test]
async fn nothing_outside_the_mounts_can_be_read() {
    let sandbox = Sandbox::new();
    sandbox.file("data/inside.txt", b"inside\n");
    sandbox.file("secret.txt", b"outside the mount\n");
    std::os::unix::fs::symlink("/etc/passwd", sandbox.code.path().join("data/passwd")).unwrap();
    let spec = serde_json::json!({"dirs": [{"host": "data", "guest": "/data"}]});
    let readable = sandbox
        .run(&opens(3, "inside.txt", false), spec.clone(), SHORT)
        .await;
    assert_eq!(readable.outcome, WasmOutcome::Succeeded);
    assert_eq!(readable.output(), "inside\n");
    for path in [
        "/etc/passwd",
        "../../../../../../etc/passwd",
        "../secret.txt",
        "passwd",
        "../../../../../../proc/self/environ",
    ] {
        let run = sandbox
            .run(&opens(3, path, false), spec.clone(), SHORT)
            .await;
        assert!(
            matches!(run.exit_code(), Some(code) if code != 0),
            "{path}: {:?}",
            run.outcome
        );
        assert_eq!(run.output(), "", "{path} leaked");
    }
}

#[tokio::test]
async fn read_only_mounts_refuse_writes_and_rw_mounts_take_them() {
    let sandbox = Sandbox::new();
    std::fs::create_dir(sandbox.code.path().join("in")).unwrap();
    std::fs::create_dir(sandbox.code.path().join("out")).unwrap();
    let spec = serde_json::json!({"dirs": [
        {"host": "in", "guest": "/in"},
        {"host": "out", "guest": "/out", "mode": "rw"},
    ]});
    let refused = sandbox
        .run(&opens(3, "new.txt", true), spec.clone(), SHORT)
        .await;
    assert!(matches!(refused.exit_code(), Some(code) if code != 0));
    assert!(!sandbox.code.path().join("in/new.txt").exists());
    let written = sandbox.run(&opens(4, "new.txt", true), spec, SHORT).await;
    assert_eq!(written.outcome, WasmOutcome::Succeeded);
    assert_eq!(
        std::fs::read_to_string(sandbox.code.path().join("out/new.txt")).unwrap(),
        "written\n"
    );
}

#[tokio::test]
async fn the_events_folder_is_writable_at_its_fixed_path() {
    let sandbox = Sandbox::new();
    // fd 3 is /sluice/events when nothing else is mounted.
    let run = sandbox
        .run(&opens(3, "001.json", true), no_grants(), SHORT)
        .await;
    assert_eq!(run.outcome, WasmOutcome::Succeeded);
    assert_eq!(
        std::fs::read_to_string(sandbox.events.path().join("001.json")).unwrap(),
        "written\n"
    );
}

#[tokio::test]
async fn a_busy_loop_is_stopped_at_the_deadline() {
    let run = Sandbox::new()
        .run(&spins(), no_grants(), Duration::from_secs(1))
        .await;
    assert_eq!(run.outcome, WasmOutcome::TimedOut);
    assert!(
        run.log
            .tail
            .ends_with("==> timed out: the module was stopped at the order's deadline\n")
    );
}

/// wasmtime cannot interrupt a compilation, so one in this process would run on past its
/// order's deadline, burning the worker's CPU. A compiler child process still running at
/// the deadline (here one that never finishes) is killed then.
#[tokio::test]
async fn a_compiler_still_running_at_the_deadline_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let compiler = StuckCompiler::in_folder(dir.path());
    let runtime = WasmRuntime::new(None).compiling_in(CompileIn::Child(compiler.path.clone()));
    let run = Sandbox::with_runtime(runtime)
        .run(&hello(), no_grants(), Duration::from_secs(1))
        .await;
    assert_eq!(run.outcome, WasmOutcome::TimedOut);
    assert!(
        run.log
            .tail
            .ends_with("==> timed out: its compilation was stopped at the order's deadline\n"),
        "{}",
        run.log.tail
    );
    compiler.assert_stopped().await;
}

#[tokio::test]
async fn a_guest_asleep_in_the_host_is_stopped_at_the_deadline() {
    let run = Sandbox::new()
        .run(&sleeps(), no_grants(), Duration::from_secs(1))
        .await;
    assert_eq!(run.outcome, WasmOutcome::TimedOut);
}

#[tokio::test]
async fn unbounded_allocation_stops_at_the_memory_limit() {
    let spec = serde_json::json!({"memory_mb": 32});
    let run = Sandbox::new()
        .run(&allocates_without_bound(), spec, SHORT)
        .await;
    let reason = run.reason();
    assert!(
        reason.starts_with("memory limit reached") && reason.contains("allows 32"),
        "{reason}"
    );
    assert!(reason.contains("trap: "), "{reason}");
}

#[tokio::test]
async fn tables_count_against_the_memory_limit() {
    // Four tables of 2^20 elements: 32 MiB of host memory for a module whose memory_mb
    // is 8. Failed before tables were counted (it instantiated and exited 0).
    let tables = "(table 1048576 funcref) ".repeat(4);
    let guest = module(&format!(r#"{tables}(func (export "_start"))"#));
    let run = Sandbox::new()
        .run(&guest, serde_json::json!({"memory_mb": 8}), SHORT)
        .await;
    let reason = run.reason();
    assert!(
        reason.starts_with("memory limit reached") && reason.contains("allows 8"),
        "{reason}"
    );
}

#[tokio::test]
async fn fuel_runs_out() {
    let spec = serde_json::json!({"fuel": 1_000_000});
    let run = Sandbox::new().run(&spins(), spec, SHORT).await;
    assert_eq!(
        run.reason(),
        "fuel exhausted: the module used all 1000000 units of wasm.fuel"
    );
}

#[tokio::test]
async fn a_trap_is_reported_with_its_message_and_a_backtrace_in_the_log() {
    let guest = module(r#"(func $deep unreachable) (func (export "_start") (call $deep))"#);
    let run = Sandbox::new().run(&guest, no_grants(), SHORT).await;
    assert_eq!(
        run.reason(),
        "trap: wasm `unreachable` instruction executed"
    );
    assert!(run.log.tail.contains("backtrace"), "{}", run.log.tail);
}

#[tokio::test]
async fn what_cannot_run_is_refused_with_a_reason_naming_it() {
    let sandbox = Sandbox::new();
    let imports_unknown =
        r#"(module (import "env" "launch_missiles" (func)) (func (export "_start")))"#;
    let run = sandbox.run(imports_unknown, no_grants(), SHORT).await;
    assert!(
        run.reason().contains("cannot be linked") && run.reason().contains("launch_missiles"),
        "{}",
        run.reason()
    );
    let reactor = r#"(module (func (export "_initialize")))"#;
    let run = sandbox.run(reactor, no_grants(), SHORT).await;
    assert!(
        run.reason().contains("no `_start` export"),
        "{}",
        run.reason()
    );
    sandbox.file("junk.wasm", b"#!/bin/sh\necho not wasm\n");
    let run = sandbox.run_file("junk.wasm", no_grants(), SHORT).await;
    assert!(
        run.reason()
            .contains("neither a WebAssembly binary nor valid text"),
        "{}",
        run.reason()
    );
    let run = sandbox.run_file("absent.wasm", no_grants(), SHORT).await;
    assert!(
        run.reason()
            .contains("module absent.wasm is not in the order's code"),
        "{}",
        run.reason()
    );
}

#[tokio::test]
async fn preview2_components_run() {
    let sandbox = Sandbox::new();
    let run = sandbox.run(&component(true), no_grants(), SHORT).await;
    assert_eq!(run.outcome, WasmOutcome::Succeeded, "{}", run.log.tail);
    let run = sandbox.run(&component(false), no_grants(), SHORT).await;
    assert_eq!(run.exit_code(), Some(1));
}

#[tokio::test]
async fn fifty_megabytes_of_output_stream_through_and_the_end_is_kept() {
    let chunks = 800; // 800 × 64 KiB = 50 MiB
    let run = Sandbox::new()
        .run(&floods(chunks), no_grants(), SHORT)
        .await;
    assert_eq!(run.outcome, WasmOutcome::Succeeded);
    // The log is the worker's compile note, then exactly what the guest wrote.
    let spool = run.log.log.contents().unwrap();
    assert_eq!(spool.len() as u64, run.log.bytes);
    let note = spool.iter().position(|&b| b == b'\n').unwrap() + 1;
    assert!(spool.starts_with(b"==> compiled guest.wasm"));
    assert_eq!(spool.len() - note, chunks as usize * 65536 + 8);
    assert!(spool[note..spool.len() - 8].iter().all(|&b| b == b'x'));
    assert!(run.log.truncated);
    assert!(run.log.tail.ends_with("xxxxTHE END\n"));
}

fn compile_note(run: &Run) -> &str {
    run.log
        .tail
        .lines()
        .find(|l| l.starts_with("==> ") && l.contains("guest.wasm"))
        .unwrap_or_else(|| panic!("no compile note in:\n{}", run.log.tail))
}

#[tokio::test]
async fn compiled_modules_are_reused_in_process_and_from_disk() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("wasm");
    let first = Sandbox::with_runtime(WasmRuntime::new(Some(cache_dir.clone())));
    let run = first.run(&hello(), no_grants(), SHORT).await;
    assert!(compile_note(&run).starts_with("==> compiled guest.wasm in "));
    let run = first.run(&hello(), no_grants(), SHORT).await;
    assert_eq!(compile_note(&run), "==> guest.wasm already compiled");
    assert_eq!(run.outcome, WasmOutcome::Succeeded);

    // A new process (a new runtime) loads it from disk instead of compiling.
    let second = Sandbox::with_runtime(WasmRuntime::new(Some(cache_dir.clone())));
    let run = second.run(&hello(), no_grants(), SHORT).await;
    assert_eq!(
        compile_note(&run),
        "==> loaded guest.wasm from the compile cache"
    );
    assert_eq!(run.output(), "out\nerr\nout again\n");

    // Another module is another entry; a damaged entry is recompiled, not trusted.
    let entries = |dir: &Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
            .collect()
    };
    assert_eq!(entries(&cache_dir).len(), 1);
    let entry = entries(&cache_dir).remove(0);
    std::fs::write(&entry, b"damaged").unwrap();
    let third = Sandbox::with_runtime(WasmRuntime::new(Some(cache_dir.clone())));
    let run = third.run(&hello(), no_grants(), SHORT).await;
    assert!(compile_note(&run).starts_with("==> compiled guest.wasm in "));
    assert_eq!(run.outcome, WasmOutcome::Succeeded);
}

#[tokio::test]
async fn a_cache_whose_key_others_can_read_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("wasm");
    let first = Sandbox::with_runtime(WasmRuntime::new(Some(cache_dir.clone())));
    first.run(&hello(), no_grants(), SHORT).await;
    let key = cache_dir.join("key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let second = Sandbox::with_runtime(WasmRuntime::new(Some(cache_dir.clone())));
    let run = second.run(&hello(), no_grants(), SHORT).await;
    assert!(compile_note(&run).starts_with("==> compiled guest.wasm in "));
    assert_eq!(run.outcome, WasmOutcome::Succeeded);
}
