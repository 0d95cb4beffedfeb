//! WebAssembly orders through `sluice run`: the example guests (WAT, C, Rust), statuses,
//! exit codes and reasons in the done document, events, the compile cache across runs.

use crate::util::{Sandbox, done_of, examples, require_built_guests};
use sluice_contract::result::DoneDoc;
use sluice_contract::{JobStatus, OrderStatus};

fn order<'a>(done: &'a DoneDoc, name: &str) -> &'a sluice_contract::result::DoneOrder {
    done.orders
        .iter()
        .find(|o| o.order_name == name)
        .unwrap_or_else(|| panic!("no order {name}"))
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_wat_example_runs_without_a_toolchain_and_emits_an_event() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&examples().join("wasm-hello.json"), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let done = done_of(&output);
    let log = sandbox.log_of(&done, "hello-wat");
    assert!(
        log.contains("hello from a WAT guest\n(this line went to stderr)\n"),
        "{log}"
    );
    assert!(
        stderr(&output).contains("0001 hello-wat · greeted: hello"),
        "the event is shown: {}",
        stderr(&output)
    );
}

#[test]
fn the_mixed_example_runs_shell_c_rust_and_wat_orders_with_their_grants() {
    require_built_guests();
    let sandbox = Sandbox::new();
    let output = sandbox.run(&examples().join("mixed.json"), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let done = done_of(&output);
    assert_eq!(done.status, JobStatus::Succeeded);

    // C: the listed variable only, the mount read-only, nothing else of the host.
    let count = sandbox.log_of(&done, "count");
    assert!(count.contains("hello from the C guest\n"), "{count}");
    assert!(!count.contains("never sees"), "{count}");
    assert!(
        count.contains("reading /etc/passwd: Capabilities insufficient"),
        "{count}"
    );
    assert!(
        count.contains("writing into /data: Operation not permitted"),
        "{count}"
    );
    assert!(count.contains("5       37      218  total"), "{count}");
    assert_eq!(order(&done, "count").exit_code, Some(0));

    // Rust with the SDK: its context, and its events recorded and shown.
    let report = sandbox.log_of(&done, "report");
    assert!(
        report.contains(&format!("order 0003 (report) of run {}", done.run_id)),
        "{report}"
    );
    let progress = stderr(&output);
    for line in [
        "0001 prepare · data.checked: 2 files, 218 bytes",
        "0003 report · progress: checked haiku.txt",
        "0003 report · progress: checked lorem.txt",
        "0003 report · checked: 2 files, 0 empty",
        "0004 wat · greeted: hello",
    ] {
        assert!(progress.contains(line), "missing {line:?} in:\n{progress}");
    }
}

#[test]
fn a_preview2_component_runs_with_its_mounts_context_and_events() {
    let sandbox = Sandbox::new();
    let code = sandbox.path().join("code");
    std::fs::create_dir_all(code.join("data")).unwrap();
    std::fs::write(code.join("data/one.txt"), "one\n").unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/report-component.wasm");
    std::fs::copy(fixture, code.join("report.wasm")).unwrap();
    let job = sandbox.write_job(
        "job.json",
        r#"{"orders": [{"order_name": "component", "code_dir": "code", "timeout": 60,
            "wasm": {"module": "report.wasm", "dirs": [{"host": "data", "guest": "/data"}]}}]}"#,
    );
    let output = sandbox.run(&job, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let done = done_of(&output);
    let log = sandbox.log_of(&done, "component");
    assert!(
        log.contains(&format!("order 0001 (component) of run {}", done.run_id)),
        "{log}"
    );
    assert!(log.contains("one.txt: 4 bytes, ok"), "{log}");
    assert!(
        stderr(&output).contains("0001 component · checked: 1 files, 0 empty"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn validate_lists_what_each_order_runs() {
    require_built_guests();
    let output = crate::util::sluice()
        .arg("validate")
        .arg(examples().join("mixed.json"))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&output.stdout);
    assert!(
        listing.contains("  0001 prepare: 1 command (timeout 30 s)\n"),
        "{listing}"
    );
    assert!(
        listing.contains("  0002 count: wasm build/wordcount.wasm (timeout 30 s) after 0001\n"),
        "{listing}"
    );
}

/// A job of one wasm order running `guest` (WAT text) with the given `wasm` fields.
fn wasm_job(sandbox: &Sandbox, guest: &str, wasm: &str, timeout: u64) -> std::path::PathBuf {
    let code = sandbox.path().join("code");
    std::fs::create_dir_all(&code).unwrap();
    std::fs::write(code.join("guest.wat"), guest).unwrap();
    sandbox.write_job(
        "job.json",
        &format!(
            r#"{{"orders": [{{"order_name": "guest", "code_dir": "code", "timeout": {timeout},
                "wasm": {{"module": "guest.wat" {wasm}}}}}]}}"#
        ),
    )
}

const EXITS_3: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const 3))))"#;

#[test]
fn a_non_zero_exit_fails_the_order_with_its_code() {
    let sandbox = Sandbox::new();
    let job = wasm_job(&sandbox, EXITS_3, "", 30);
    let output = sandbox.run(&job, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let done = done_of(&output);
    let guest = order(&done, "guest");
    assert_eq!(guest.status, OrderStatus::Failed);
    assert_eq!(guest.exit_code, Some(3));
    assert_eq!(guest.reason.as_deref(), Some("exited with code 3"));
}

#[test]
fn a_module_reads_nothing_from_stdin_even_when_sluice_has_some() {
    // Reads fd 0; exits with the number of bytes read (100 + errno on an error).
    let reads_stdin = r#"(module
      (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (func (export "_start") (local $errno i32)
        (i32.store (i32.const 0) (i32.const 4096))
        (i32.store (i32.const 4) (i32.const 1024))
        (local.set $errno (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        (if (local.get $errno) (then (call $exit (i32.add (i32.const 100) (local.get $errno)))))
        (call $exit (i32.load (i32.const 8)))))"#;
    let sandbox = Sandbox::new();
    let job = wasm_job(&sandbox, reads_stdin, "", 30);
    let output = sandbox
        .run_command(&job)
        .write_stdin("the host's stdin, which no order may read\n")
        .output()
        .unwrap();
    let done = done_of(&output);
    assert_eq!(
        order(&done, "guest").exit_code,
        Some(0),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_busy_guest_is_timed_out_at_the_order_timeout() {
    let sandbox = Sandbox::new();
    let spin = r#"(module (func (export "_start") (loop $forever (br $forever))))"#;
    let job = wasm_job(&sandbox, spin, "", 1);
    let output = sandbox.run(&job, &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let done = done_of(&output);
    assert_eq!(order(&done, "guest").status, OrderStatus::TimedOut);
    assert_eq!(
        order(&done, "guest").reason.as_deref(),
        Some("timed out after 1 s")
    );
}

#[test]
fn a_module_wasi_cannot_serve_fails_with_a_one_line_reason() {
    let sandbox = Sandbox::new();
    // WASI preview 1 needs the module's memory exported.
    let no_memory = EXITS_3.replace(r#"(memory (export "memory") 1)"#, "");
    let job = wasm_job(&sandbox, &no_memory, "", 30);
    let done = done_of(&sandbox.run(&job, &[]));
    assert_eq!(
        order(&done, "guest").reason.as_deref(),
        Some("missing required memory export")
    );
    assert!(sandbox.log_of(&done, "guest").contains("wasm backtrace"));
}

#[test]
fn a_trap_fails_the_order_with_its_message() {
    let sandbox = Sandbox::new();
    let trap =
        r#"(module (func (export "_start") (drop (i32.div_u (i32.const 1) (i32.const 0)))))"#;
    let job = wasm_job(&sandbox, trap, "", 30);
    let done = done_of(&sandbox.run(&job, &[]));
    assert_eq!(
        order(&done, "guest").reason.as_deref(),
        Some("trap: integer divide by zero")
    );
}

#[test]
fn the_second_run_loads_the_module_from_the_compile_cache() {
    let sandbox = Sandbox::new();
    let job = wasm_job(&sandbox, EXITS_3, "", 30);
    let first = done_of(&sandbox.run(&job, &[]));
    assert!(
        sandbox
            .log_of(&first, "guest")
            .starts_with("==> compiled guest.wat in ")
    );
    let second = done_of(&sandbox.run(&job, &[]));
    assert!(
        sandbox
            .log_of(&second, "guest")
            .starts_with("==> loaded guest.wat from the compile cache\n"),
        "{}",
        sandbox.log_of(&second, "guest")
    );
    assert_eq!(order(&second, "guest").exit_code, Some(3));
}

#[test]
fn a_compile_cache_entry_not_written_for_this_module_is_never_run() {
    // Failed before entries were authenticated: the cache (then in the state folder, which
    // a repository can ship) took any file whose plain checksum matched, so module A's
    // native code ran when module B was asked for.
    let sandbox = Sandbox::new();
    let cached = || -> Vec<std::path::PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(sandbox.wasm_cache())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
            .collect();
        files.sort();
        files
    };
    let job = wasm_job(&sandbox, EXITS_3, "", 30);
    assert_eq!(
        order(&done_of(&sandbox.run(&job, &[])), "guest").exit_code,
        Some(3)
    );
    let exits_3 = cached().pop().expect("the first run cached its module");
    let job = wasm_job(
        &sandbox,
        &EXITS_3.replace("i32.const 3", "i32.const 4"),
        "",
        30,
    );
    assert_eq!(
        order(&done_of(&sandbox.run(&job, &[])), "guest").exit_code,
        Some(4)
    );
    let exits_4 = cached()
        .into_iter()
        .find(|f| *f != exits_3)
        .expect("the second run cached its module");
    // A planted entry: the other module's code under this module's name, in the cache and
    // in the state folder a repository could ship.
    std::fs::copy(&exits_3, &exits_4).unwrap();
    let planted = sandbox.state().join("wasm-cache");
    std::fs::create_dir_all(&planted).unwrap();
    std::fs::copy(&exits_3, planted.join(exits_4.file_name().unwrap())).unwrap();
    let done = done_of(&sandbox.run(&job, &[]));
    assert_eq!(order(&done, "guest").exit_code, Some(4));
    assert!(
        sandbox
            .log_of(&done, "guest")
            .starts_with("==> compiled guest.wat in "),
        "{}",
        sandbox.log_of(&done, "guest")
    );
}

#[test]
fn a_missing_module_is_rejected_before_anything_runs() {
    let sandbox = Sandbox::new();
    let job = wasm_job(&sandbox, EXITS_3, "", 30);
    let text = std::fs::read_to_string(&job)
        .unwrap()
        .replace("guest.wat", "gone.wasm");
    std::fs::write(&job, text).unwrap();
    let output = sandbox.run(&job, &[]);
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stderr(&output).contains("order 0001 (guest)")
            && stderr(&output).contains("gone.wasm is not a file"),
        "{}",
        stderr(&output)
    );
    assert!(!sandbox.state().exists());
}

#[test]
fn shell_orders_emit_events_through_their_events_folder() {
    let sandbox = Sandbox::new();
    let job = sandbox.write_job(
        "job.json",
        r#"{"orders": [{"order_name": "deploy", "timeout": 30, "cmds": [
            "echo '{\"kind\":\"deployed\",\"message\":\"v2 is live\"}' > \"$SLUICE_EVENTS_DIR/1.json\"",
            "echo 'not json' > \"$SLUICE_EVENTS_DIR/2.json\""
        ]}]}"#,
    );
    let output = sandbox.run(&job, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("0001 deploy · deployed: v2 is live"),
        "{}",
        stderr(&output)
    );
    let log = sandbox.log_of(&done_of(&output), "deploy");
    assert!(
        log.contains("==> skipped event 2.json: not an event object"),
        "{log}"
    );
}

/// A core module whose `functions` functions each add 1 to a local `instructions` times:
/// valid, trivial to run, and slow to compile in proportion (written as a binary, since
/// parsing text this large would itself take a while).
fn slow_to_compile(functions: u32, instructions: u32) -> Vec<u8> {
    fn leb(mut n: u32, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn section(id: u8, content: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(content.len() as u32, out);
        out.extend_from_slice(content);
    }
    let mut body = vec![0x01, 0x01, 0x7f]; // one i32 local
    for _ in 0..instructions {
        // local.get 0; i32.const 1; i32.add; local.set 0
        body.extend_from_slice(&[0x20, 0x00, 0x41, 0x01, 0x6a, 0x21, 0x00]);
    }
    body.push(0x0b);
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(1, &[0x01, 0x60, 0x00, 0x00], &mut module);
    let mut declared = Vec::new();
    leb(functions, &mut declared);
    declared.extend(std::iter::repeat_n(0x00, functions as usize));
    section(3, &declared, &mut module);
    section(7, b"\x01\x06_start\x00\x00", &mut module);
    let mut code = Vec::new();
    leb(functions, &mut code);
    for _ in 0..functions {
        leb(body.len() as u32, &mut code);
        code.extend_from_slice(&body);
    }
    section(10, &code, &mut module);
    module
}

/// wasmtime cannot interrupt a compilation: `sluice` compiles in a child process of itself
/// and kills it at the order's deadline, so a module that takes far longer to compile (here
/// some 15 s on two cores) than its order may run ends `timed_out` at the deadline with its
/// compilation stopped (before, it compiled on in sluice's own threads).
#[test]
fn a_module_still_compiling_at_the_deadline_is_stopped() {
    let sandbox = Sandbox::new();
    let code = sandbox.path().join("code");
    std::fs::create_dir_all(&code).unwrap();
    std::fs::write(code.join("slow.wasm"), slow_to_compile(2, 400_000)).unwrap();
    let job = sandbox.write_job(
        "job.json",
        r#"{"orders": [{"order_name": "guest", "code_dir": "code", "timeout": 1,
            "wasm": {"module": "slow.wasm"}}]}"#,
    );
    let output = sandbox.run(&job, &["--wasm-cache", "off"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let done = done_of(&output);
    assert_eq!(order(&done, "guest").status, OrderStatus::TimedOut);
    let log = sandbox.log_of(&done, "guest");
    assert!(
        log.contains("==> timed out: its compilation was stopped at the order's deadline"),
        "{log}"
    );
}
