//! Sluice's benchmarks (run with `scripts/bench`): figures, not pass/fail tests.
//!
//! 1. Capture: the worker's log pipeline on 1 GiB of output (`head -c 1G /dev/zero`), MB/s
//!    and the peak RSS of the process, next to `head -c 1G /dev/zero | cat > /dev/null`;
//!    then 1 GiB of text lines with no secrets and with 20 secrets registered (the
//!    redactor's cost).
//! 2. Per-hop overhead: a chain of 100 `true` orders through the whole local engine (init,
//!    orchestrator, dispatch, worker, callback, finalize), minus a one-order job, per hop.
//! 3. Fan-out: 500 independent `true` orders at `--concurrency` 8 and 64, wall time.
//! 4. Scale: 2 000 orders into one (`--concurrency 64`), and 100 and 9 999 (the most a job
//!    may hold) independent orders at the default concurrency: wall time, peak RSS of the
//!    `sluice` process, and the cost per order of 9 999 over that of 100.
//! 5. WebAssembly start-up: one hello order through the worker's runners: a native
//!    `echo` (shell runner, a real process), the WAT hello guest and the Rust example guest
//!    cold (compiled), warm from the disk cache (a new process), on a fresh worker loading
//!    the code the compile function made (as on AWS; read from a file here, where S3 adds
//!    one GET), and warm in memory (the next order of the same process); and what running
//!    code compiled for AWS's CPUs (the compile function's), or for the architecture's
//!    baseline, costs against code compiled for this CPU, on a compute loop.
//! 6. Run reports: see `support/report.rs`.
//! 7. The sandbox: a chain of 100 `true` run with `--sandbox off` and `--sandbox required`,
//!    interleaved: what each order's namespaces cost. Groups 2 to 4 run with `--sandbox
//!    off`: they measure the engine.
//!
//! Each engine figure is the median of a few runs of the release `sluice` binary. Every
//! figure is also recorded with its unit and, where issue 17 set one, its goal, and written
//! to `bench/results.json` (the groups run now replace theirs; the others stay), so a change
//! can be compared with the last recorded run.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};
use sluice_contract::job::WasmSpec;
use std::sync::Arc;

use sluice_contract::dispatch::{Capability, SharedCode};
use sluice_worker::io::FileIo;
use sluice_worker::log_sink::LogSink;
use sluice_worker::redact::Redactor;
use sluice_worker::shell::{ShellOrder, ShellOutcome, ShellSettings, run_cmds};
use sluice_worker::spool::DEFAULT_MAX_LOG_BYTES;
use sluice_worker::wasm::{
    CompileIn, CpuLevel, Grants, SharedCompiled, WasmOrder, WasmOutcome, WasmRuntime,
    compile_for_cpus, compile_for_workers,
};

#[path = "support/figures.rs"]
mod figures;
#[path = "support/report.rs"]
mod report;
use figures::Figures;

const GIB: u64 = 1 << 30;

fn main() {
    if std::env::args().nth(1).as_deref() == Some(MEASURE) {
        measure_child();
        return;
    }
    // `cargo bench` passes `--bench`; keep only our own arguments:
    // [RUNS] [capture|engine|wasm|report|sandbox].
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runs: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(3);
    let only = args.get(1).map(String::as_str);
    println!("# sluice benchmarks ({runs} runs each, median)");
    let mut figures = Figures::default();
    if only.is_none() || only == Some("capture") {
        capture(&mut figures);
    }
    if only.is_none() || only == Some("engine") {
        engine(runs, &mut figures);
    }
    if only.is_none() || only == Some("wasm") {
        wasm(runs.max(5), &mut figures);
    }
    if only.is_none() || only == Some("report") {
        report::report(runs, &mut figures);
    }
    if only.is_none() || only == Some("sandbox") {
        sandbox(runs, &mut figures);
    }
    figures.save(&Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/results.json"));
}

fn wasm(runs: usize, figures: &mut Figures) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let no_secrets = Arc::new(Redactor::default());
    let native = median(runs, || rt.block_on(pipeline("echo hello", &no_secrets)).0);
    println!(
        "hello: native `echo` through the shell runner {:.2} ms",
        native.as_secs_f64() * 1000.0
    );
    figures.record(
        "hello_native_echo_ms",
        native.as_secs_f64() * 1000.0,
        "ms",
        None,
    );
    let guests = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/guests");
    // The WAT guest writes its event through fd 3, so it gets no other mount.
    for (module, label, key, dirs) in [
        (
            "wat/hello.wat",
            "WAT hello",
            "wasm_wat",
            serde_json::json!([]),
        ),
        (
            "build/report.wasm",
            "Rust report (180 KB, scripts/build-guests)",
            "wasm_rust",
            serde_json::json!([{"host": "data", "guest": "/data"}]),
        ),
    ] {
        let spec: WasmSpec = serde_json::from_value(serde_json::json!({
            "module": module, "memory_mb": 64, "dirs": dirs
        }))
        .unwrap();
        if !guests.join(module).is_file() {
            println!("{label}: skipped, {module} is not built");
            continue;
        }
        let cache = tempfile::tempdir().unwrap();
        let cold = median(runs, || {
            let fresh = tempfile::tempdir().unwrap();
            let runtime = WasmRuntime::new(Some(fresh.path().to_owned()));
            rt.block_on(run_guest(&runtime, &guests, &spec))
        });
        // Fill the disk cache once, then time new runtimes (new processes) loading from it.
        let filling = WasmRuntime::new(Some(cache.path().to_owned()));
        rt.block_on(run_guest(&filling, &guests, &spec));
        let disk = median(runs, || {
            let runtime = WasmRuntime::new(Some(cache.path().to_owned()));
            rt.block_on(run_guest(&runtime, &guests, &spec))
        });
        // On AWS the compile function compiles the module once for the run; fresh workers
        // (no compiler, no disk cache) load that.
        let shared_dir = tempfile::tempdir().unwrap();
        let object = shared_dir.path().join("compiled.cwasm");
        let binary = std::fs::read(guests.join(module)).unwrap();
        let shared = SharedCode {
            module_sha256: sha256_hex(&binary),
            get_url: Capability::new(object.display().to_string()),
        };
        let code = rt
            .block_on(compile_for_workers(
                module,
                binary,
                false,
                &CompileIn::ThisProcess,
            ))
            .expect("the compile function compiles the guest");
        std::fs::write(&object, code).unwrap();
        let sharing = SharedCompiled {
            code: &shared,
            io: &FileIo,
        };
        let shared_kib = std::fs::metadata(&object).unwrap().len() as f64 / 1024.0;
        let fresh_shared = median(runs, || {
            let runtime = WasmRuntime::new(None);
            rt.block_on(run_guest_with_code(&runtime, &guests, &spec, Some(sharing)))
        });
        let runtime = WasmRuntime::new(Some(cache.path().to_owned()));
        rt.block_on(run_guest(&runtime, &guests, &spec));
        let memory = median(runs, || rt.block_on(run_guest(&runtime, &guests, &spec)));
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{label}: cold (compile) {:.1} ms, warm from disk cache {:.2} ms, fresh worker \
             loading the compile function's code ({shared_kib:.0} KiB) {:.2} ms, warm in \
             process {:.2} ms",
            ms(cold),
            ms(disk),
            ms(fresh_shared),
            ms(memory)
        );
        // Issue 17: a fresh worker should not compile (modules compiled once per job).
        let fresh_goal = (key == "wasm_rust").then_some("<= 10 on a fresh worker");
        figures.record(&format!("{key}_cold_ms"), ms(cold), "ms", None);
        figures.record(&format!("{key}_warm_disk_ms"), ms(disk), "ms", None);
        figures.record(
            &format!("{key}_fresh_worker_shared_ms"),
            ms(fresh_shared),
            "ms",
            fresh_goal,
        );
        figures.record(&format!("{key}_warm_process_ms"), ms(memory), "ms", None);
    }
    portable_code_cost(runs, &rt, figures);
}

/// A loop of the instructions a CPU feature past x86_64's baseline makes native (`floor`:
/// SSE4.1; `popcnt`), 20 million times.
const COMPUTE_LOOP: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start")
    (local $i i32) (local $f f64) (local $n i64)
    (local.set $f (f64.const 1.5))
    (loop $next
      (local.set $f
        (f64.add (f64.floor (f64.mul (local.get $f) (f64.const 1.000001))) (f64.const 0.25)))
      (local.set $n (i64.add (local.get $n) (i64.popcnt (i64.extend_i32_u (local.get $i)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $i) (i32.const 20000000))))
    (i64.store (i32.const 0) (local.get $n))
    (f64.store (i32.const 8) (local.get $f))))"#;

/// What running the compile function's code (for the CPUs AWS runs on: x86-64-v2 on
/// x86_64), and code for the architecture's baseline alone, cost against code compiled
/// for this CPU (`sluice run`'s), on a compute loop: ratios of their times measured in one
/// run, each run a fresh runtime loading the code (from the disk cache, or the object the
/// compile function would store), linking it and running the loop.
fn portable_code_cost(runs: usize, rt: &tokio::runtime::Runtime, figures: &mut Figures) {
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("compute.wat"), COMPUTE_LOOP).unwrap();
    let spec: WasmSpec =
        serde_json::from_value(serde_json::json!({"module": "compute.wat", "memory_mb": 16}))
            .unwrap();
    let cache = tempfile::tempdir().unwrap();
    rt.block_on(run_guest(
        &WasmRuntime::new(Some(cache.path().to_owned())),
        folder.path(),
        &spec,
    ));
    let native = median(runs, || {
        let runtime = WasmRuntime::new(Some(cache.path().to_owned()));
        rt.block_on(run_guest(&runtime, folder.path(), &spec))
    });
    let compiled_for = |level: CpuLevel, file: &str| {
        let code = compile_for_cpus(COMPUTE_LOOP.as_bytes(), false, level).unwrap();
        let object = folder.path().join(file);
        std::fs::write(&object, code).unwrap();
        SharedCode {
            module_sha256: sha256_hex(COMPUTE_LOOP.as_bytes()),
            get_url: Capability::new(object.display().to_string()),
        }
    };
    let loaded_each_run = |code: &SharedCode| {
        median(runs, || {
            let sharing = SharedCompiled { code, io: &FileIo };
            let worker = WasmRuntime::new(None);
            rt.block_on(run_guest_with_code(
                &worker,
                folder.path(),
                &spec,
                Some(sharing),
            ))
        })
    };
    let aws = loaded_each_run(&compiled_for(CpuLevel::AwsHosts, "aws.cwasm"));
    let baseline = loaded_each_run(&compiled_for(CpuLevel::Baseline, "baseline.cwasm"));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (aws_ratio, baseline_ratio) = (ms(aws) / ms(native), ms(baseline) / ms(native));
    println!(
        "compute loop (floor, popcnt; 20 M iterations): code for this CPU {:.1} ms, for AWS's \
         CPUs (the compile function's) {:.1} ms ({aws_ratio:.2}x), for the baseline {:.1} ms \
         ({baseline_ratio:.2}x)",
        ms(native),
        ms(aws),
        ms(baseline)
    );
    figures.record(
        "wasm_aws_cpus_over_native_compute",
        aws_ratio,
        "ratio",
        None,
    );
    figures.record(
        "wasm_baseline_over_native_compute",
        baseline_ratio,
        "ratio",
        None,
    );
}

/// Runs a guest of the guests folder; the time from start to exit.
async fn run_guest(runtime: &WasmRuntime, guests: &Path, spec: &WasmSpec) -> Duration {
    run_guest_with_code(runtime, guests, spec, None).await
}

/// The same, its dispatch naming the compiled code `shared` (on AWS, the compile function's).
async fn run_guest_with_code(
    runtime: &WasmRuntime,
    guests: &Path,
    spec: &WasmSpec,
    shared: Option<SharedCompiled<'_>>,
) -> Duration {
    let events = tempfile::tempdir().unwrap();
    let publish = tempfile::tempdir().unwrap();
    let context: Vec<(String, String)> = [
        ("SLUICE_RUN_ID", "bench"),
        ("SLUICE_ORDER_NUM", "0001"),
        ("SLUICE_ORDER_NAME", "bench"),
        ("SLUICE_TRACE_ID", "00000000"),
        ("SLUICE_FLOW_ID", "bench"),
        ("SLUICE_TIMEOUT", "60"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let secrets = Default::default();
    let order = WasmOrder {
        grants: Grants {
            spec,
            variables: &secrets,
            context: &context,
            code_root: guests,
            events_dir: events.path(),
            publish_dir: publish.path(),
        },
        deadline: tokio::time::Instant::now() + Duration::from_secs(60),
        stop: &tokio_util::sync::CancellationToken::new(),
        shared,
    };
    let dir = tempfile::tempdir().unwrap();
    let log = LogSink::create(dir.path());
    let started = Instant::now();
    let outcome = runtime.run(&order, &log).await;
    let elapsed = started.elapsed();
    let summary = log.finish().await.unwrap();
    assert_eq!(outcome, WasmOutcome::Succeeded, "{}", summary.tail);
    elapsed
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(bytes))
}

fn capture(figures: &mut Figures) {
    let stream = format!("head -c {GIB} /dev/zero");
    let baseline = median(3, || {
        let started = Instant::now();
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("{stream} | cat > /dev/null"))
            .status()
            .unwrap();
        assert!(status.success());
        started.elapsed()
    });
    let disk = median(3, || {
        let file = tempfile::NamedTempFile::new().unwrap();
        let started = Instant::now();
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("{stream} | cat > {}", file.path().display()))
            .status()
            .unwrap();
        assert!(status.success());
        started.elapsed()
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let no_secrets = Arc::new(Redactor::default());
    let gib_through = |stream: &str, redactor: &Arc<Redactor>| {
        let (elapsed, bytes) = rt.block_on(pipeline(stream, redactor));
        assert!(bytes >= GIB);
        elapsed
    };
    let worker = median(3, || gib_through(&stream, &no_secrets));
    let worker_peak = peak_rss_mib();
    let text = format!(
        "yes 'INFO 2026-11-27T08:31:26Z step 42 of 99: applied change to resource aws_s3_bucket.logs (0.25 s)' | head -c {GIB}"
    );
    let plain = median(3, || gib_through(&text, &no_secrets));
    let tokens: Vec<(String, String)> = (0..20)
        .map(|i| {
            let value: String = (0..24).map(|_| fastrand::alphanumeric()).collect();
            (format!("SECRET_{i}_TOKEN"), value)
        })
        .collect();
    let twenty = Arc::new(Redactor::new(
        tokens.iter().map(|(n, v)| (n.as_str(), v.as_str())),
    ));
    let redacted = median(3, || gib_through(&text, &twenty));
    // The whole CLI on the same stream: bundle, worker, spool upload, callback, finalize.
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("loud.json");
    let order = serde_json::json!({ "cmds": [stream], "timeout": 600 });
    std::fs::write(&job, serde_json::json!({ "orders": [order] }).to_string()).unwrap();
    let measured = median_run(3, || run_sluice(&job, dir.path(), 8));
    let (cli, cli_peak) = (measured.wall, measured.peak_rss_mib);
    let mbps = |d: Duration| GIB as f64 / 1e6 / d.as_secs_f64();
    println!(
        "capture 1 GiB: `cat > /dev/null` {:.0} MB/s ({:.2} s)",
        mbps(baseline),
        baseline.as_secs_f64()
    );
    println!(
        "capture 1 GiB: `cat > file` (same temp disk) {:.0} MB/s ({:.2} s)",
        mbps(disk),
        disk.as_secs_f64()
    );
    println!(
        "capture 1 GiB: worker log pipeline {:.0} MB/s ({:.2} s), process peak RSS {worker_peak:.1} MiB",
        mbps(worker),
        worker.as_secs_f64()
    );
    println!(
        "capture 1 GiB: `sluice run` end to end {:.0} MB/s ({:.2} s), peak RSS {cli_peak:.1} MiB",
        mbps(cli),
        cli.as_secs_f64()
    );
    println!(
        "capture 1 GiB of text lines: no secrets {:.0} MB/s, 20 secrets registered {:.0} MB/s ({:.0} % of it)",
        mbps(plain),
        mbps(redacted),
        100.0 * plain.as_secs_f64() / redacted.as_secs_f64()
    );
    figures.record("capture_cat_devnull_mbps", mbps(baseline), "MB/s", None);
    figures.record("capture_cat_file_mbps", mbps(disk), "MB/s", None);
    figures.record("capture_pipeline_mbps", mbps(worker), "MB/s", None);
    figures.record("capture_pipeline_peak_rss_mib", worker_peak, "MiB", None);
    figures.record("capture_sluice_run_mbps", mbps(cli), "MB/s", None);
    figures.record("capture_sluice_run_peak_rss_mib", cli_peak, "MiB", None);
    figures.record("redactor_no_secrets_mbps", mbps(plain), "MB/s", None);
    figures.record("redactor_20_secrets_mbps", mbps(redacted), "MB/s", None);
}

/// One shell order running `cmd` through the shell runner and the worker's log pipeline
/// (masking `redactor`'s secrets, default log cap), timed from start to the finished log;
/// also the log's size.
async fn pipeline(cmd: &str, redactor: &Arc<Redactor>) -> (Duration, u64) {
    let dir = tempfile::tempdir().unwrap();
    let log = LogSink::create_with(dir.path(), Arc::clone(redactor), DEFAULT_MAX_LOG_BYTES);
    let cmds = vec![cmd.to_owned()];
    let env = vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())];
    let started = Instant::now();
    let order = ShellOrder {
        cmds: &cmds,
        env: &env,
        cwd: dir.path(),
        deadline: tokio::time::Instant::now() + Duration::from_secs(600),
        stop: &tokio_util::sync::CancellationToken::new(),
        jail: None,
    };
    let outcome = run_cmds(&order, &log, ShellSettings::default()).await;
    let summary = log.finish().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(outcome, ShellOutcome::Succeeded);
    (elapsed, summary.bytes)
}

/// This process's peak RSS since it started (`VmHWM`; unlike `ru_maxrss` it does not carry
/// over the RSS of the process that exec'd us).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<f64>()
        .unwrap()
        / 1024.0
}

fn engine(runs: usize, figures: &mut Figures) {
    let dir = tempfile::tempdir().unwrap();
    let chain = write_job(dir.path(), "chain.json", 100, Shape::Chain);
    let single = write_job(dir.path(), "single.json", 1, Shape::Independent);
    let fan = write_job(dir.path(), "fan.json", 500, Shape::Independent);
    let one = median(runs, || run_sluice(&single, dir.path(), 8).wall);
    let hundred = median(runs, || run_sluice(&chain, dir.path(), 8).wall);
    let per_hop = (hundred.saturating_sub(one)).as_secs_f64() * 1000.0 / 99.0;
    println!(
        "one-order job: {:.0} ms wall (process start to exit)",
        one.as_secs_f64() * 1000.0
    );
    println!(
        "chain of 100 `true`: {:.2} s wall, {per_hop:.1} ms per hop",
        hundred.as_secs_f64()
    );
    figures.record("one_order_job_ms", one.as_secs_f64() * 1000.0, "ms", None);
    figures.record("chain_per_hop_ms", per_hop, "ms", Some("<= 3"));
    // The two settings' runs interleaved, so that the machine drifting (another process,
    // the disk's state) weighs on both alike: the figure is their ratio.
    let mut timed: [Vec<Duration>; 2] = Default::default();
    for _ in 0..runs.max(1) {
        for (times, concurrency) in timed.iter_mut().zip([8, 64]) {
            times.push(run_sluice(&fan, dir.path(), concurrency).wall);
        }
    }
    let mut walls = Vec::new();
    for (times, concurrency) in timed.into_iter().zip([8, 64]) {
        let wall = median_of(times);
        println!(
            "500 independent `true` (--concurrency {concurrency}): {:.2} s wall, {:.0} orders/s",
            wall.as_secs_f64(),
            500.0 / wall.as_secs_f64()
        );
        let name = format!("wide_500_concurrency_{concurrency}_s");
        figures.record(&name, wall.as_secs_f64(), "s", None);
        walls.push(wall.as_secs_f64());
    }
    figures.record(
        "wide_500_concurrency_64_over_8",
        walls[1] / walls[0],
        "ratio",
        Some("<= 1"),
    );
    scale(runs, dir.path(), figures);
}

/// A chain of 100 `true` without and with the sandbox, the runs interleaved (see
/// `engine`): the sandbox's cost per order.
fn sandbox(runs: usize, figures: &mut Figures) {
    let dir = tempfile::tempdir().unwrap();
    let chain = write_job(dir.path(), "chain.json", 100, Shape::Chain);
    let mut timed: [Vec<Duration>; 2] = Default::default();
    for _ in 0..runs.max(1) {
        for (times, sandbox) in timed.iter_mut().zip(["off", "required"]) {
            times.push(run_sluice_with(&chain, dir.path(), 8, sandbox).wall);
        }
    }
    let [off, on] = timed.map(median_of);
    let extra_ms = (on.as_secs_f64() - off.as_secs_f64()) * 1000.0 / 100.0;
    println!(
        "chain of 100 `true`: {:.2} s unsandboxed, {:.2} s sandboxed: {extra_ms:.1} ms more per order ({:.2}x)",
        off.as_secs_f64(),
        on.as_secs_f64(),
        on.as_secs_f64() / off.as_secs_f64()
    );
    figures.record("sandbox_chain_100_off_s", off.as_secs_f64(), "s", None);
    figures.record("sandbox_chain_100_on_s", on.as_secs_f64(), "s", None);
    figures.record("sandbox_extra_per_order_ms", extra_ms, "ms", Some("small"));
}

/// Fan-in and the largest jobs: wall time and the peak RSS of `sluice`.
fn scale(runs: usize, dir: &Path, figures: &mut Figures) {
    let fan_in = write_job(dir, "fan-in.json", 2000, Shape::FanIn);
    let fan_in = median_run(runs, || run_sluice(&fan_in, dir, 64));
    let label = "2 000 orders into one (--concurrency 64)";
    record_run(
        figures,
        "fan_in_2000",
        label,
        &fan_in,
        [Some("<= 3"), Some("<= 100")],
    );
    let small = write_job(dir, "independent-100.json", 100, Shape::Independent);
    let large = write_job(dir, "independent-9999.json", 9999, Shape::Independent);
    let small = median_run(runs, || run_sluice(&small, dir, DEFAULT_CONCURRENCY));
    let large = median_run(runs, || run_sluice(&large, dir, DEFAULT_CONCURRENCY));
    let label = "100 independent `true`";
    record_run(figures, "independent_100", label, &small, [None, None]);
    let label = "9 999 independent `true`";
    let goals = [Some("<= 20"), Some("<= 150")];
    record_run(figures, "independent_9999", label, &large, goals);
    let per_order = |run: &Measured, orders: f64| run.wall.as_secs_f64() * 1000.0 / orders;
    let (small_cost, large_cost) = (per_order(&small, 100.0), per_order(&large, 9999.0));
    println!("per order: {small_cost:.2} ms of 100, {large_cost:.2} ms of 9 999");
    figures.record(
        "independent_9999_over_100_per_order",
        large_cost / small_cost,
        "ratio",
        Some("flat (about 1)"),
    );
}

/// Prints a measured run and records its wall time and peak RSS as `<key>_s` and
/// `<key>_peak_rss_mib`, with their goals.
fn record_run(
    figures: &mut Figures,
    key: &str,
    label: &str,
    run: &Measured,
    [wall_goal, rss_goal]: [Option<&str>; 2],
) {
    let wall = run.wall.as_secs_f64();
    let rss = run.peak_rss_mib;
    println!("{label}: {wall:.2} s wall, peak RSS {rss:.0} MiB");
    figures.record(&format!("{key}_s"), wall, "s", wall_goal);
    figures.record(&format!("{key}_peak_rss_mib"), rss, "MiB", rss_goal);
}

/// `sluice run`'s default `--concurrency`.
const DEFAULT_CONCURRENCY: usize = 8;

/// How the orders of a benchmark job depend on each other.
#[derive(Clone, Copy)]
enum Shape {
    Independent,
    /// Each order on the one before.
    Chain,
    /// All but the last order independent; the last on all of them.
    FanIn,
}

fn write_job(dir: &Path, name: &str, orders: usize, shape: Shape) -> std::path::PathBuf {
    let orders: Vec<serde_json::Value> = (0..orders)
        .map(|i| {
            let deps: Vec<usize> = match shape {
                Shape::Chain if i > 0 => vec![i],
                Shape::FanIn if i + 1 == orders => (1..orders).collect(),
                _ => vec![],
            };
            serde_json::json!({ "cmds": ["true"], "timeout": 60, "dependencies": deps })
        })
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, serde_json::json!({ "orders": orders }).to_string()).unwrap();
    path
}

/// A measured `sluice run`: its wall time and its peak RSS.
struct Measured {
    wall: Duration,
    peak_rss_mib: f64,
}

/// [`run_sluice_with`] without the sandbox: the engine's own cost.
fn run_sluice(job: &Path, dir: &Path, concurrency: usize) -> Measured {
    run_sluice_with(job, dir, concurrency, "off")
}

/// One `sluice run --sandbox <sandbox>`: its wall time and its peak RSS.
fn run_sluice_with(job: &Path, dir: &Path, concurrency: usize, sandbox: &str) -> Measured {
    // Kept until `dir` goes, at the end of the group: deleting thousands of files between
    // runs would slow the next run's file creation (ext4 without a journal scans recently
    // freed inodes), charging one run's clean-up to the next.
    let state = tempfile::tempdir_in(dir).unwrap().keep();
    // Through a child of our own (see `measure_child`): its children's peak RSS is that of
    // this one `sluice`, not the largest of every process this benchmark has run.
    let output = Command::new(std::env::current_exe().unwrap())
        .arg(MEASURE)
        .arg(env!("CARGO_BIN_EXE_sluice"))
        .arg("run")
        .arg(job)
        .arg("--json")
        .arg("--state-dir")
        .arg(&state)
        .arg("--concurrency")
        .arg(concurrency.to_string())
        .args(["--sandbox", sandbox])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let (wall_ns, peak_kib) = text
        .lines()
        .last()
        .and_then(|line| line.split_once(' '))
        .map(|(a, b)| (a.parse::<u64>().unwrap(), b.parse::<f64>().unwrap()))
        .expect("the measuring child prints its figures");
    Measured {
        wall: Duration::from_nanos(wall_ns),
        peak_rss_mib: peak_kib / 1024.0,
    }
}

/// First argument of this benchmark when it runs as [`measure_child`].
const MEASURE: &str = "measure-child";

/// Runs the command its arguments name (stdout discarded, stderr passed through) and prints
/// `<wall ns> <peak RSS KiB>` of it: the largest RSS of this process's children, which are
/// that command and, below it, the orders' small processes.
fn measure_child() {
    let mut args = std::env::args().skip(2);
    let program = args.next().expect("a command to measure");
    let started = Instant::now();
    let status = Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    let wall = started.elapsed();
    assert!(status.success(), "the measured command failed: {status}");
    let peak_kib = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap().max_rss();
    println!("{} {peak_kib}", wall.as_nanos());
}

fn median_run(runs: usize, mut f: impl FnMut() -> Measured) -> Measured {
    let mut all: Vec<Measured> = (0..runs.max(1)).map(|_| f()).collect();
    all.sort_by_key(|m| m.wall);
    all.swap_remove(all.len() / 2)
}

fn median(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    median_of((0..runs.max(1)).map(|_| f()).collect())
}

/// The median of `times` (at least one).
fn median_of(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}
