//! Shared helpers of the CLI end-to-end tests: each test gets its own temp folder for job
//! files and state, and runs the real `sluice` binary.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use sluice_contract::result::DoneDoc;
use sluice_engine::ObjectStore as _;
use sluice_engine::local::{DirStore, INTERNAL_BUCKET};

pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.state());
        let _ = std::fs::remove_dir_all(self.wasm_cache());
        let _ = std::fs::remove_file(self.beside("secrets.json"));
    }
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `name` beside the test's folder, not in it: a test may grant its orders that
    /// folder, and the sandbox never grants a folder holding Sluice's own files (the state
    /// folder, the compile cache, the secrets file).
    fn beside(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("{}-{name}", self.dir.path().display()))
    }

    pub fn state(&self) -> PathBuf {
        self.beside("state")
    }

    /// The compile cache `run_command` gives sluice (`SLUICE_WASM_CACHE`).
    pub fn wasm_cache(&self) -> PathBuf {
        self.beside("wasm-cache")
    }

    pub fn write_job(&self, name: &str, json: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, json).unwrap();
        path
    }

    /// Writes `json` as a job whose every shell order may write this test's folder (its
    /// `sandbox` field grants it), for a test whose orders leave marks there: the sandbox
    /// of `sluice run` would otherwise keep them from it.
    pub fn write_job_with_marks(&self, name: &str, json: &str) -> PathBuf {
        let mut job: serde_json::Value = serde_json::from_str(json).unwrap();
        let folder = self.dir.path().display().to_string();
        for order in job["orders"].as_array_mut().unwrap() {
            if order.get("cmds").is_some() {
                order["sandbox"] = serde_json::json!({ "write": [folder] });
            }
        }
        self.write_job(name, &job.to_string())
    }

    /// Writes a secrets file (`--secrets`) mapping credential locations to values.
    pub fn write_secrets(&self, secrets: serde_json::Value) -> PathBuf {
        let path = self.beside("secrets.json");
        std::fs::write(&path, secrets.to_string()).unwrap();
        path
    }

    /// `sluice run JOB --state-dir <sandbox>/state --json`, for a test to add to (env,
    /// stdin) before running it.
    pub fn run_command(&self, job: &Path) -> Command {
        let mut command = sluice();
        command
            .arg("run")
            .arg(job)
            .arg("--state-dir")
            .arg(self.state())
            .arg("--json")
            .env("SLUICE_WASM_CACHE", self.wasm_cache());
        command
    }

    /// `sluice run JOB --state-dir <sandbox>/state --json` with extra args.
    pub fn run(&self, job: &Path, extra: &[&str]) -> std::process::Output {
        self.run_command(job).args(extra).output().unwrap()
    }

    /// The full stored log of an order, from the done document.
    pub fn log_of(&self, done: &DoneDoc, order_name: &str) -> String {
        let order = done
            .orders
            .iter()
            .find(|o| o.order_name == order_name)
            .unwrap();
        let key = order.log_key.as_ref().expect("the order ran");
        std::fs::read_to_string(self.object_path(key)).unwrap()
    }

    /// The state folder's internal store, as `sluice run` opens it.
    pub fn internal_store(&self) -> DirStore {
        DirStore::open(&self.state().join(INTERNAL_BUCKET), INTERNAL_BUCKET).unwrap()
    }

    /// The file holding `key` of the state folder's internal store.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.internal_store().path_of(key).unwrap()
    }

    /// The results stored for order `order_num` (`0001`) of any run, one per attempt that
    /// reported.
    pub fn results_of(&self, order_num: &str) -> Vec<PathBuf> {
        let store = self.internal_store();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let keys = (runtime.block_on(store.list("tmp/callbacks/runs/"))).unwrap();
        keys.iter()
            .filter(|key| {
                let parts: Vec<&str> = key.split('/').collect();
                parts.len() == 7 && parts[4] == order_num && parts[6] == "result.json"
            })
            .map(|key| store.path_of(key).unwrap())
            .collect()
    }
}

pub fn sluice() -> Command {
    Command::cargo_bin("sluice").unwrap()
}

pub fn done_of(output: &std::process::Output) -> DoneDoc {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not a done document ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The done document of a run that must have succeeded (its stderr shown if it did not).
pub fn succeeded(output: &std::process::Output) -> DoneDoc {
    let done = done_of(output);
    assert_eq!(
        done.status,
        sluice_contract::JobStatus::Succeeded,
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    done
}

pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/jobs")
}

/// The processes of this machine (as its `/proc` shows them, whatever namespace they run
/// in) still running with `arg` in their command line: an order's processes found by a
/// unique argument, which works in a sandbox too, where the pids an order sees are its own.
pub fn processes_running(arg: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    (entries.filter_map(Result::ok))
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|pid| pid.parse::<u32>().is_ok() && !is_gone(pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(arg))
        })
        .collect()
}

/// Whether a process is gone: no longer exists, or a zombie waiting for init to reap it.
pub fn is_gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(") ")
            .next()
            .is_some_and(|rest| rest.starts_with('Z')),
    }
}

/// The example guests `scripts/build-guests` compiles (C and Rust): panics with the command
/// to run when they are missing, so a failing test says what to do.
pub fn require_built_guests() {
    let build = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/guests/build");
    for guest in ["wordcount.wasm", "report.wasm"] {
        assert!(
            build.join(guest).is_file(),
            "{} is missing: run scripts/build-guests first (scripts/test does)",
            build.join(guest).display()
        );
    }
}

/// An HTTP stand-in on 127.0.0.1 (wiremock) whose every request `responder` answers, for a
/// synchronous test; `responder` is made from the server's base URL. wiremock serves from a
/// thread of its own: the runtime here only starts the server, which stops when dropped.
pub fn http_stand_in<R: wiremock::Respond + 'static>(
    responder: impl FnOnce(String) -> R,
) -> wiremock::MockServer {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(wiremock::MockServer::start());
    let respond = responder(server.uri());
    runtime.block_on(
        wiremock::Mock::given(wiremock::matchers::any())
            .respond_with(respond)
            .mount(&server),
    );
    server
}

/// Waits up to 30 s for `ready`.
pub fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what} never happened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `sluice run` in the background, its stderr going to a file.
pub fn start_run(sandbox: &Sandbox, job: &Path, extra: &[&str]) -> (Child, PathBuf) {
    let stderr = sandbox.path().join("run.stderr");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("run")
        .arg(job)
        .arg("--state-dir")
        .arg(sandbox.state())
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    (child, stderr)
}

/// The run id `sluice run` announced on stderr.
pub fn announced_run(stderr: &Path) -> String {
    let mut run = None;
    wait_for("the run's announcement", || {
        let text = std::fs::read_to_string(stderr).unwrap_or_default();
        run = text
            .split_whitespace()
            .skip_while(|word| *word != "run")
            .nth(1)
            .map(str::to_owned);
        run.is_some()
    });
    run.unwrap()
}
