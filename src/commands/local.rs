//! What `sluice run` and `sluice resume` share: the local runtime with its workers and
//! sentinel, and following a run to its done document.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sluice_contract::cancel::CancelRequest;
use sluice_contract::result::DoneDoc;
use sluice_contract::{JobStatus, RunId, exit_codes};
use sluice_engine::git::GitPolicy;
use sluice_engine::github::GitHubVcs;
use sluice_engine::init_job::InitResponse;
use sluice_engine::local::{LocalOptions, LocalRuntime, SecretsFile};
use sluice_engine::runs::RunStores;
use sluice_engine::{EngineConfig, EngineError, Vcs};
use sluice_worker::WorkerConfig;
use sluice_worker::sandbox::{SandboxError, SandboxSettings};
use sluice_worker::shell::ShellSettings;
use sluice_worker::wasm::{CompileIn, WasmRuntime};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::Failure;
use crate::cli::{LocalConfig, SandboxMode};
use crate::sentinel::Sentinel;
use crate::{local_worker, progress};

/// How long after its orders were stopped a stopped run may take to be finalized.
const FINALIZE_AFTER_STOP: Duration = Duration::from_secs(30);

/// The local runtime, the token that stops its workers' orders, and the stop signals.
#[derive(Debug)]
pub struct Session {
    /// The engine on the state folder, with its workers.
    pub runtime: LocalRuntime,
    /// Cancelled to stop every running order (SIGTERM, grace period, SIGKILL).
    stop: CancellationToken,
    /// Caught from the session's start, so none is lost or kills sluice half-way.
    signals: tokio::sync::Mutex<StopSignals>,
    /// A signal that came while a job was being queued, to stop its run once queued.
    pending: std::sync::Mutex<Option<&'static str>>,
}

/// Ctrl-C (SIGINT) and SIGTERM (`kill`, CI cancelling, `timeout`), listened to from the
/// moment they are made: the default action (dying at once) is off from then on. Either
/// way the run's processes must not outlive sluice, since each runs in a process group of
/// its own that no terminal signal reaches.
#[derive(Debug)]
struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    fn listen() -> std::io::Result<Self> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The next signal: `interrupted` or `terminated`.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "interrupted",
            _ = self.terminate.recv() => "terminated",
        }
    }
}

/// The exit code of a run stopped by `signal`.
fn stopped_exit_code(signal: &str) -> i32 {
    if signal == "terminated" {
        exit_codes::TERMINATED
    } else {
        exit_codes::INTERRUPTED
    }
}

/// The GitHub client for `--github-api`, if given.
pub fn github(config: &LocalConfig) -> Result<Option<Arc<dyn Vcs>>, Failure> {
    let Some(api) = &config.github_api else {
        return Ok(None);
    };
    let github = GitHubVcs::new(api)
        .with_context(|| format!("--github-api {api}"))
        .map_err(Failure::internal)?;
    Ok(Some(Arc::new(github)))
}

/// The compile cache's folder, unless it lies in the state folder, which a repository can
/// ship (`.sluice/`): what is loaded from the cache runs as native code.
fn usable_wasm_cache(config: &LocalConfig) -> Option<std::path::PathBuf> {
    let dir = config.wasm_cache.clone()?;
    let inside_state = match (
        std::path::absolute(&dir),
        std::path::absolute(&config.state_dir),
    ) {
        (Ok(cache), Ok(state)) => cache.starts_with(state),
        _ => true,
    };
    if inside_state {
        tracing::warn!(
            dir = %dir.display(),
            "not using the WebAssembly compile cache: it is inside the state folder, which a repository can provide"
        );
        return None;
    }
    Some(dir)
}

/// The git known hosts file's text (empty without one).
pub fn known_hosts(config: &LocalConfig) -> Result<String, Failure> {
    match &config.git_known_hosts {
        Some(file) => std::fs::read_to_string(file)
            .with_context(|| format!("reading the git known hosts file {}", file.display()))
            .map_err(Failure::invalid),
        None => Ok(String::new()),
    }
}

/// The sandbox shell orders run in, as `--sandbox` asks and this machine allows: with
/// `auto`, none (and a warning saying why) where a trial sandbox fails; with `required`,
/// exit 3 saying why.
async fn sandbox(config: &LocalConfig) -> Result<Option<Arc<SandboxSettings>>, Failure> {
    if config.sandbox == SandboxMode::Off {
        return Ok(None);
    }
    let settings = SandboxSettings {
        init: PathBuf::from("/proc/self/exe"),
        home: std::env::var_os("HOME").map(PathBuf::from),
        hidden: config.hidden.clone(),
        protected: config.protected.clone(),
        network: config.network,
    };
    match settings.probe().await {
        Ok(()) => Ok(Some(Arc::new(settings))),
        Err(error @ SandboxError::Unavailable(_)) if config.sandbox == SandboxMode::Required => {
            Err(Failure::invalid(anyhow::anyhow!(
                "--sandbox required, and this machine gives no sandbox: {error}"
            )))
        }
        // Not the machine's doing (a path the sandbox cannot use): no quiet way round it.
        Err(error @ (SandboxError::Path(_) | SandboxError::Grant { .. })) => {
            Err(Failure::invalid(anyhow::anyhow!(
                "the orders' sandbox cannot be built: {error} (--sandbox off runs them as you)"
            )))
        }
        Err(error) => {
            eprintln!(
                "sluice: warning: orders run without a sandbox, seeing what you see: {error} (--sandbox off says so quietly; --sandbox required refuses)"
            );
            Ok(None)
        }
    }
}

/// Opens the state folder and starts the engine, its workers (in the sandbox `--sandbox`
/// asks for) and their sentinel.
pub async fn start(
    config: &LocalConfig,
    secrets: SecretsFile,
    vcs: Option<Arc<dyn Vcs>>,
) -> Result<Session, Failure> {
    let sandbox = sandbox(config).await?;
    let signals = StopSignals::listen()
        .context("listening for Ctrl-C and SIGTERM")
        .map_err(Failure::internal)?;
    let stop = CancellationToken::new();
    let sentinel = Sentinel::spawn(&config.state_dir)
        .context("starting the sentinel that stops the orders' processes should sluice die")
        .map_err(Failure::internal)?;
    let worker = WorkerConfig {
        work_root: None,
        shell: ShellSettings {
            grace: config.grace_period,
            ..ShellSettings::default()
        },
        limits: Default::default(),
        host_env: config.host_env.clone(),
        wasm: Arc::new(
            WasmRuntime::new(usable_wasm_cache(config))
                .compiling_in(CompileIn::child_of_this_binary()),
        ),
        max_log_bytes: config.max_log_bytes,
        stop: stop.clone(),
        sandbox,
        ..WorkerConfig::default()
    };
    let known_hosts = known_hosts(config)?;
    let engine_config = EngineConfig {
        watchdog_slack: config.grace_period + EngineConfig::default().watchdog_slack,
        git: GitPolicy {
            credential_hosts: config.git_credential_hosts.clone(),
            known_hosts,
            trust_on_first_use: config.git_ssh_tofu,
            host_env: Vec::new(),
        }
        .locating_git_with(|name| std::env::var(name).ok()),
        ..EngineConfig::default()
    };
    let options = LocalOptions {
        state_dir: config.state_dir.clone(),
        concurrency: config.concurrency,
        engine: engine_config,
        secrets,
        vcs,
    };
    let sentinel = Arc::new(sentinel);
    let runtime = LocalRuntime::start(options, |internal| {
        local_worker::launcher(internal, worker, sentinel)
    })
    .map_err(Failure::internal)?;
    Ok(Session {
        runtime,
        stop,
        signals: tokio::sync::Mutex::new(signals),
        pending: std::sync::Mutex::new(None),
    })
}

impl Session {
    /// Runs `queueing` (init of `run_id`) to its end. A stop signal meanwhile does not cut
    /// it half-way (rows, keys and bundles would be left half made): nothing is launched
    /// from then on, and [`follow`] stops the run as soon as it is queued. A second signal
    /// exits now: init is dropped (its temporary files, git credentials included, go with
    /// it), the run's keys are deleted unless its rows were inserted (then `sluice resume`
    /// finishes the run), and the sentinel kills whatever was started.
    pub async fn shielded<T>(
        &self,
        run_id: &RunId,
        queueing: impl std::future::Future<Output = T>,
    ) -> T {
        let mut signals = self.signals.lock().await;
        let again = {
            tokio::pin!(queueing);
            loop {
                tokio::select! {
                    queued = &mut queueing => return queued,
                    signal = signals.next() => {
                        let mut pending = self.pending.lock().expect("not poisoned");
                        if pending.is_some() {
                            break signal;
                        }
                        eprintln!("sluice: {signal}: the run stops as soon as it is queued (signal again to exit now)");
                        *pending = Some(signal);
                        self.runtime.stop_launching();
                        self.stop.cancel();
                    }
                }
            }
        };
        eprintln!("sluice: {again} again: exiting now");
        let ports = &self.runtime.engine().ports;
        if ports
            .orders
            .run_orders(run_id)
            .await
            .is_ok_and(|rows| rows.is_empty())
        {
            let _ = ports.keys.delete_run_keys(run_id).await;
        }
        std::process::exit(stopped_exit_code(again));
    }

    /// Resolves when the process is asked to stop (at once for a signal kept by
    /// [`Session::shielded`]).
    pub async fn stop_requested(&self) -> &'static str {
        let kept = self.pending.lock().expect("not poisoned").take();
        match kept {
            Some(signal) => signal,
            None => self.signals.lock().await.next().await,
        }
    }

    /// Stops `runs` (Ctrl-C, SIGTERM) (see [`Session::stop_and_finalize`]).
    async fn stop_runs(&self, runs: &[RunId], signal: &str, config: &LocalConfig) {
        let grace = config.grace_period.as_secs();
        eprintln!(
            "sluice: {signal}: stopping: SIGTERM to the orders, SIGKILL after {grace} s (signal again to kill them now)"
        );
        let reason = format!("cancelled: sluice was {signal}");
        self.stop_and_finalize(runs, &reason, config).await;
    }

    /// Cancels `run` as `request` asks (`sluice cancel` from another terminal). When this
    /// process carries that run alone, as a signal would ([`Session::stop_and_finalize`]);
    /// else its unfinished orders become `cancelled` and a pass finalizes it, while its
    /// running orders are stopped by their workers, which find the request within seconds.
    async fn cancel(
        &self,
        run: &RunId,
        request: &CancelRequest,
        carried: &[RunId],
        config: &LocalConfig,
    ) {
        let reason = request.reason();
        if carried == std::slice::from_ref(run) {
            let grace = config.grace_period.as_secs();
            eprintln!("sluice: run {run} {reason}: SIGTERM to its orders, SIGKILL after {grace} s");
            self.stop_and_finalize(std::slice::from_ref(run), &reason, config)
                .await;
            return;
        }
        eprintln!("sluice: run {run} {reason}: its orders stop within seconds");
        if let Err(error) = self.runtime.engine().cancel_run(run, &reason).await {
            eprintln!("sluice: warning: cancelling run {run}: {error}");
        }
        self.runtime.kick(run);
    }

    /// Stops `runs`: nothing more starts, their unfinished orders become `cancelled` with
    /// `reason` (before their orders are stopped, so a stopped order's result finds its
    /// row ended), running orders get SIGTERM, then SIGKILL after the grace period (at once
    /// on a signal); then a pass finalizes each run, once its orders have stopped.
    async fn stop_and_finalize(&self, runs: &[RunId], reason: &str, config: &LocalConfig) {
        self.runtime.stop_launching();
        let engine = self.runtime.engine();
        for run in runs {
            if let Err(error) = engine.cancel_run(run, reason).await {
                eprintln!("sluice: warning: cancelling run {run}: {error}");
            }
        }
        self.stop_orders(config).await;
        for run in runs {
            self.runtime.kick(run);
        }
    }

    /// Asks every running order to stop and waits for them (the grace period and a
    /// margin), or kills them at once on a signal.
    async fn stop_orders(&self, config: &LocalConfig) {
        self.stop.cancel();
        let limit = config.grace_period + Duration::from_secs(5);
        tokio::select! {
            _ = self.runtime.wait_workers(limit) => {}
            again = self.stop_requested() => eprintln!("sluice: {again}: killing the orders now"),
        }
    }

    /// Stops the loops and every worker still running (their processes are killed).
    pub async fn shutdown(self) {
        self.runtime.shutdown().await;
    }
}

/// Queues the new run `run_id` through `queueing` (shielded from stop signals: see
/// [`Session::shielded`]), says so on stderr (`what` after its flow: `3 orders`, `rerun of
/// …`), follows it to its done document and shuts `session` down; the exit code. What
/// `run` and `rerun` share; `queued` names what was queued in errors (`job file x`).
pub async fn carry_new_run(
    session: Session,
    config: &LocalConfig,
    run_id: &RunId,
    queueing: impl std::future::Future<Output = Result<InitResponse, EngineError>>,
    queued: &str,
    what: &str,
) -> Result<i32, Failure> {
    // This process carries the run, from before its rows exist: `sluice resume` will not
    // take it over while this process lives.
    let _ownership = session.runtime.own(run_id).map_err(Failure::internal)?;
    let response = match session.shielded(run_id, queueing).await {
        Ok(response) => response,
        Err(error) => {
            let invalid = error.is_invalid_input() || matches!(error, EngineError::UnknownRun(_));
            let error = anyhow::Error::new(error).context(queued.to_owned());
            session.shutdown().await;
            return Err(if invalid {
                Failure::invalid(error)
            } else {
                Failure::internal(error)
            });
        }
    };
    eprintln!(
        "sluice: run {} · flow {} · {what} · state in {}",
        response.run_id,
        response.flow_id,
        config.state_dir.display()
    );
    let run = std::slice::from_ref(&response.run_id);
    let followed = follow(&session, &response.run_id, run, config).await;
    session.shutdown().await;
    followed.map(|followed| followed.code)
}

/// The run `text` names in the state folder `config` gives, which must hold runs.
///
/// # Errors
///
/// Exit 3: `text` is not a run id, or the folder holds no runs.
pub fn run_in_state(text: &str, config: &LocalConfig) -> Result<RunId, Failure> {
    let run = run_id(text)?;
    state_holds_runs(&config.state_dir)?;
    Ok(run)
}

/// The run id `text` is.
///
/// # Errors
///
/// Exit 3 when it is not one.
pub fn run_id(text: &str) -> Result<RunId, Failure> {
    RunId::parse(text)
        .ok_or_else(|| Failure::invalid(anyhow::anyhow!("{text:?} is not a run id (a UUID)")))
}

/// Refuses a state folder without runs (no `sluice.db`).
///
/// # Errors
///
/// Exit 3, saying to pass the `--state-dir` `sluice run` used.
pub fn state_holds_runs(state_dir: &std::path::Path) -> Result<(), Failure> {
    if state_dir.join("sluice.db").is_file() {
        return Ok(());
    }
    Err(Failure::invalid(anyhow::anyhow!(
        "{} holds no runs (no sluice.db): pass the --state-dir `sluice run` used",
        state_dir.display()
    )))
}

/// How often the `sluice` carrying a run looks for its cancel request.
const CANCEL_POLL: Duration = Duration::from_millis(250);

/// The cancel request of `run`, once someone asked (`sluice cancel`); a failure to look is
/// looking again.
async fn cancel_requested(runtime: &LocalRuntime, run: &RunId) -> CancelRequest {
    loop {
        tokio::time::sleep(CANCEL_POLL).await;
        if let Ok(Some(request)) = runtime.engine().cancel_requested(run).await {
            return request;
        }
    }
}

/// How following a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Followed {
    /// The exit code it calls for.
    pub code: i32,
    /// Whether a signal stopped it (and every other run of this process).
    pub stopped: bool,
}

/// Shows the run's progress until its done document, then prints the summary (and the
/// document with `--json`). A signal stops every run in `stoppable` (see
/// [`Session::stop_runs`]); the exit code is then 130 (Ctrl-C) or 143 (SIGTERM), once the
/// run is finalized as `cancelled` (a run that had ended anyway keeps its own code). A
/// cancel request (`sluice cancel`) stops the run ([`Session::cancel`]); its exit code is
/// then 5, the cancelled job's.
pub async fn follow(
    session: &Session,
    run_id: &RunId,
    stoppable: &[RunId],
    config: &LocalConfig,
) -> Result<Followed, Failure> {
    let runtime = &session.runtime;
    let engine = Arc::clone(runtime.engine());
    let (stop_progress, stopped) = oneshot::channel();
    let display = tokio::spawn(progress::follow(
        engine,
        run_id.clone(),
        config.interactive,
        stopped,
    ));
    let stopped_by = tokio::select! {
        done = runtime.wait_done(run_id) => Ok(done),
        signal = session.stop_requested() => {
            session.stop_runs(stoppable, signal, config).await;
            Err(Some(signal))
        }
        request = cancel_requested(&session.runtime, run_id) => {
            session.cancel(run_id, &request, stoppable, config).await;
            Err(None)
        }
    };
    let (done, signal) = match stopped_by {
        // Cancelled and finalized before this process found the request (by the run's
        // watch): its orders still get their grace.
        Ok(Ok(done))
            if done.status == JobStatus::Cancelled && stoppable == std::slice::from_ref(run_id) =>
        {
            session.runtime.stop_launching();
            session.stop_orders(config).await;
            (Ok(done), None)
        }
        Ok(done) => (done.map_err(anyhow::Error::new), None),
        Err(signal) => {
            let done = tokio::time::timeout(FINALIZE_AFTER_STOP, runtime.wait_done(run_id))
                .await
                .map_err(|_| anyhow::anyhow!("not finalized within {FINALIZE_AFTER_STOP:?}"))
                .and_then(|done| done.map_err(anyhow::Error::new));
            (done, signal)
        }
    };
    let _ = stop_progress.send(());
    let _ = display.await;
    let stopped_code = signal.map(stopped_exit_code);
    let stopped = stopped_code.is_some();
    let done = match (done, stopped_code) {
        (Ok(done), _) => done,
        (Err(error), Some(code)) => {
            eprintln!("sluice: run {run_id} was stopped; its done document: {error}");
            if config.report.is_some() {
                eprintln!(
                    "sluice: no report written: the run is not finished (`sluice resume {run_id} --report FILE` finishes it)"
                );
            }
            return Ok(Followed {
                code,
                stopped: true,
            });
        }
        (Err(error), None) => {
            return Err(Failure::internal(
                error.context("waiting for the run to finish"),
            ));
        }
    };

    report_done(runtime, run_id, &done, config);
    if let Some(file) = &config.report {
        let path = super::report::path_for_run(file, run_id, stoppable.len());
        let stores = RunStores::of(&runtime.engine().ports);
        if let Err(failure) = super::report::write(&stores, run_id, Some(&path)).await {
            failure.warn(&format!("writing run {run_id}'s report"));
        }
    }
    let code = match stopped_code {
        Some(code) if done.status == JobStatus::Cancelled => code,
        _ => exit_codes::for_job_status(done.status),
    };
    Ok(Followed { code, stopped })
}

/// Prints a finished run's summary (and its done document with `--json`), and where the
/// document is.
pub fn report_done(runtime: &LocalRuntime, run_id: &RunId, done: &DoneDoc, config: &LocalConfig) {
    let summary = progress::summary(done, runtime.internal_store(), config.logs);
    if config.json {
        eprint!("{summary}");
        super::print_json(done);
    } else {
        super::print_stdout(&summary);
    }
    let done_key = sluice_contract::keys::done(run_id);
    eprintln!(
        "sluice: done document: {}",
        runtime.engine().ports.done.object_url(&done_key)
    );
}
