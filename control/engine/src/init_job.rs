//! init_job: validate a job, package each order, upload, queue, and start the run.
//!
//! The steps, in order: validate → preflight → credentials fetched (each location once) →
//! ids and the run's key → per order (in parallel, bounded): its key pair derived from the
//! run's ([`crate::run_key`]), env encrypted, bundle, upload → the run's watch → the run's
//! key stored → the run's first step, taken here, whose one write inserts all rows (as its
//! claims leave them) with the `_job` started event and makes the lock (one step; see
//! [`EngineConfig::first_step_at_init`](crate::EngineConfig::first_step_at_init)) — or,
//! when they do not fit one write or the step is refused, all rows inserted (all or none)
//! with the event, then the first step taken from them — or else the init trigger
//! `0000/init/result.json`, whose arrival runs the orchestrator for it. Bundles are
//! uploaded before rows are inserted so that a dispatched order always finds its bundle; a
//! failure before the insert leaves no queued orders behind. The watch is
//! started before the key and rows exist, so neither exists without one: it runs the first
//! pass itself should the trigger's notification be lost (or init die mid-step), and every
//! later one nothing else starts, and when no rows came (init failed or died) it deletes
//! the keys. Once the rows are in, init succeeds: a failure of the first step, or to write
//! the trigger, is logged, and the trigger or the watch carries the run.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sluice_contract::ids::{flow_id, pr_search_tag};
use sluice_contract::job::{MAX_MODULE_BYTES, WasmSpec};
use sluice_contract::manifest::{OrderManifest, Task};
use sluice_contract::result::ResultDoc;
use sluice_contract::validate::{CodeSource, Platform, ValidJob, ValidOrder, validate};
use sluice_contract::{
    AttemptId, JobSpec, OrderNum, OrderStatus, RunId, TraceId, ValidateOptions, keys,
};
use tracing::Instrument;

use crate::blocking::run_blocking;
use crate::bundle::{self, BundleError, BundleInput, CodeInput};
use crate::bundle_packs::{BundlePacks, FullPack};
use crate::code::{CodeError, CodePlan};
use crate::credentials::{self, OrderEnv};
use crate::engine::{Engine, to_json};
use crate::error::{EngineError, StoreError};
use crate::orchestrator::Outcome;
use crate::orchestrator::taking::TakeLock;
use crate::ports::{
    CompiledModule, DispatchError, ErrorKind, MAX_MOVES_TOGETHER, OrderEvent, OrderRecord,
    WatchdogInput,
};
use crate::rerun::{KeptJob, Rerun};
use crate::retry::{Backoff, while_transient};
use crate::run_key::RunKey;
use crate::run_modules::RunModules;
use crate::watchdog::first_wait_seconds;

/// What init_job answers (the body of the 200 response on AWS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitResponse {
    /// The new run.
    pub run_id: RunId,
    /// Its trace id.
    pub trace_id: TraceId,
    /// Its flow id.
    pub flow_id: String,
    /// Where its done document will be.
    pub done_endpt: String,
    /// The tag of its PR comment.
    pub pr_search_tag: String,
}

/// How many orders are packaged and uploaded at the same time.
const PACKAGING_PARALLELISM: usize = 8;
/// Retries of a transient failure storing a key or a bundle, or starting a compilation,
/// after the SDK's own: a throttled init would otherwise fail the whole submission (its
/// caller retries with the idempotency key, but only if it has one).
const INIT_RETRIES: u32 = 4;
/// The first of those retries' delays (then doubling, jittered).
const INIT_RETRY_FIRST: Duration = Duration::from_millis(200);
/// Most bytes of an idempotency record read back.
const MAX_SUBMISSION_BYTES: u64 = 16 * 1024;

/// What queueing a run came to.
enum Queued {
    /// The run was queued.
    New,
    /// The same submission was made before: its run.
    Again(InitResponse),
}

/// How a run's rows were written.
enum RowsWritten {
    /// By the run's first step, taken here (which took the lock with them): what the step
    /// came to.
    ByFirstStep(Result<Outcome, EngineError>),
    /// Inserted alone: the rows.
    Inserted(Vec<OrderRecord>),
    /// Found there after a write that reported an error: they may not be as sent.
    Found,
}

/// Whether a submission with an idempotency key is the first.
enum Submission {
    /// It is: its record's key (forgotten should it fail for good).
    First(String),
    /// It was made before, and created this run.
    Again(InitResponse),
}

impl Engine {
    /// Validates and queues a job; see the module docs for the steps.
    ///
    /// `base_dir` is the folder relative paths in the job (`code_dir`, a local zip) are read
    /// from: the job file's folder locally.
    ///
    /// # Errors
    ///
    /// [`EngineError::Invalid`] / [`EngineError::Credential`] / [`EngineError::Bundle`] when
    /// the job is at fault (nothing is queued); [`EngineError::Store`] when a backend fails.
    pub async fn init_job(
        &self,
        job: &JobSpec,
        options: &ValidateOptions,
        base_dir: &Path,
    ) -> Result<InitResponse, EngineError> {
        self.init_job_as(RunId::generate(), job, options, base_dir)
            .await
    }

    /// [`Engine::init_job`] with the run id the caller chose (fresh, never used): the local
    /// CLI takes hold of its run before the run exists.
    ///
    /// # Errors
    ///
    /// As [`Engine::init_job`].
    pub async fn init_job_as(
        &self,
        run_id: RunId,
        job: &JobSpec,
        options: &ValidateOptions,
        base_dir: &Path,
    ) -> Result<InitResponse, EngineError> {
        self.init(run_id, job, options, base_dir, None).await
    }

    /// [`Engine::init_job_as`], of a run that reruns another when `rerun` says so (see
    /// [`crate::rerun`]).
    pub(crate) async fn init(
        &self,
        run_id: RunId,
        job: &JobSpec,
        options: &ValidateOptions,
        base_dir: &Path,
        mut rerun: Option<Rerun>,
    ) -> Result<InitResponse, EngineError> {
        let mut valid = validate(job, options)?;
        if let Some(caller) = &options.caller {
            // A rerun too: its caller may rerun only a job it could submit.
            self.config.credential_grants.check(caller, &valid)?;
        }
        if let Some(rerun) = &mut rerun {
            rerun.settle(&mut valid);
        }
        let rerun = rerun.as_ref();
        // A submission made again is answered at once, before any of init's work: a
        // client retrying after API Gateway's 30 s cut must not wait as long again.
        let submitter = submitter(options, &valid);
        if let Some(key) = &valid.idempotency_key {
            let record = submission_record(&submitter, key);
            if let Some(previous) = self.recorded_submission(&record).await? {
                tracing::info!(run_id = %previous.run_id, "submitted again with the same idempotency key: answering its run");
                return Ok(previous);
            }
        }
        // A rerun's bundles taken from the run it reruns are kept until its own are built.
        let (plans, _stored_bundles) = match rerun {
            Some(rerun) => {
                let (plans, stored) = self.rerun_code(&valid, rerun, base_dir).await?;
                (plans, Some(stored))
            }
            None => (preflight(&valid, self.config.platform, base_dir)?, None),
        };
        self.check_modules_can_compile(&run_id, &valid)?;
        let envs = credentials::resolve(&valid, self.ports.secrets.as_ref()).await?;
        // Clones and downloads live until every bundle is built.
        let mut fetched = self.fetch_code(&valid, plans).await?;
        let code = std::mem::take(&mut fetched.inputs);
        let trace_id = TraceId::generate();
        let flow_id = flow_id(&valid.username, &trace_id, &valid.flow_label);
        let now = self.now_ms();
        let run_key = RunKey::generate();
        let ids = RunIds {
            run_id: &run_id,
            run_key: &run_key,
            submitter: &submitter,
            trace_id: &trace_id,
            flow_id: &flow_id,
            created_at_ms: now,
            job: &valid,
            rerun,
            kept: &KeptJob::of(job, &valid, options, base_dir, rerun),
        };
        let response = InitResponse {
            done_endpt: self.ports.done.object_url(&keys::done(&run_id)),
            pr_search_tag: pr_search_tag(&run_id),
            run_id: run_id.clone(),
            trace_id: trace_id.clone(),
            flow_id: flow_id.clone(),
        };
        let span = tracing::info_span!("init_job", run_id = %run_id, trace_id = %trace_id);
        match self
            .queue_run(code, envs, &ids, &response)
            .instrument(span)
            .await?
        {
            Queued::New => Ok(response),
            Queued::Again(previous) => Ok(previous),
        }
    }

    /// On AWS the compile function compiles each WebAssembly module for the workers: a
    /// deployment without one refuses a job with WebAssembly orders before storing
    /// anything.
    ///
    /// # Errors
    ///
    /// [`EngineError::Start`] naming the first WebAssembly order.
    fn check_modules_can_compile(
        &self,
        run_id: &RunId,
        valid: &ValidJob,
    ) -> Result<(), EngineError> {
        if self.config.platform != Platform::Aws || self.ports.dispatcher.compiles_modules() {
            return Ok(());
        }
        let Some(order) = valid
            .orders
            .iter()
            .find(|o| matches!(o.task, Task::Wasm(_)))
        else {
            return Ok(());
        };
        Err(EngineError::Start(Box::new(DispatchError {
            kind: ErrorKind::Permanent,
            what: "compile function".to_owned(),
            run_id: run_id.clone(),
            order_num: order.plan.order_num,
            message: "this deployment has none, so it cannot run WebAssembly orders".to_owned(),
        })))
    }

    /// Packages and uploads every order, inserts the rows (all or none), records the start
    /// and takes the first step or writes the init trigger; or, for a submission seen
    /// before, answers its run.
    async fn queue_run(
        &self,
        code: Vec<CodeInput>,
        envs: Vec<OrderEnv>,
        ids: &RunIds<'_>,
        response: &InitResponse,
    ) -> Result<Queued, EngineError> {
        // Made before they go into the stream, so the future stays `Send` (see
        // `credentials::resolve`).
        let modules = Arc::new(RunModules::default());
        let packaging: Vec<_> = ids
            .job
            .orders
            .iter()
            .zip(code)
            .zip(envs)
            .map(|((order, code), env)| self.package_order(ids, order, code, env, &modules))
            .collect();
        let packaged = self.store_packs(ids.run_id, packaging).await?;
        // The watch before anything it must clean up or finish: from here on, whatever
        // fails, the run is carried to its done document (an `init_failed` one when no rows
        // came, its keys deleted).
        self.start_run_watch(ids).await?;
        let submission = match &ids.job.idempotency_key {
            Some(key) => match self.record_submission(ids.submitter, key, response).await? {
                Submission::First(record) => Some(record),
                Submission::Again(previous) => {
                    tracing::info!(run_id = %previous.run_id, "submitted again with the same idempotency key: answering its run");
                    return Ok(Queued::Again(previous));
                }
            },
            None => None,
        };
        // Before the rows, so that a run that has them has its job kept; a rerun is a
        // convenience the run does not fail for.
        if let Err(error) = self.keep_job(ids.run_id, ids.kept).await {
            tracing::warn!(%error, "the job could not be kept: the run cannot be rerun");
        }
        // The compile function's requests go out before the rows: a run's first worker
        // finds its code sooner. A failure is handled as the rows' own.
        let queued = match self.compile_modules(ids.run_id, &modules).await {
            Ok(()) => self.store_rows(packaged, ids).await,
            Err(error) => Err(error),
        };
        if let (Err(_), Some(record)) = (&queued, &submission) {
            // A submission that failed for good may be made again, but only once its run is
            // known to have no rows: otherwise the record stays, and the run it names is
            // carried by its watch (to an `init_failed` end if its rows never all came).
            let no_rows = self
                .ports
                .orders
                .run_orders(ids.run_id)
                .await
                .is_ok_and(|rows| rows.is_empty());
            if no_rows && let Err(error) = self.ports.internal.delete(record).await {
                tracing::warn!(%error, "could not forget a failed submission's idempotency key");
            }
        }
        // From here on the run exists and its watch carries it: what fails now is logged,
        // and the caller is told the run id, never an error for a run that exists.
        let count = ids.job.orders.len();
        // The run's first step, taken here from the rows as written — with them, or just
        // after (a Query, the run key's read and the trigger's PUT less per run, and the
        // first orders start sooner) — when it fits one write, one step only (the submitter
        // waits); else, or when results came meanwhile, or it failed, the init trigger wakes
        // the orchestrator to go on. The PR comment is the step's to make, as any step's.
        let first_step = match queued? {
            RowsWritten::ByFirstStep(outcome) => outcome.map(Some),
            RowsWritten::Inserted(records) if self.config.first_step_at_init => {
                self.take_first_step(ids.run_id, records, None).await
            }
            RowsWritten::Inserted(records) => {
                // Before the trigger: the orchestrator then finds the comment to update.
                self.update_pr_comment(&records, None).await;
                Ok(None)
            }
            RowsWritten::Found => Ok(None),
        };
        match first_step {
            Ok(Some(outcome)) if outcome != Outcome::HandedOff => {
                tracing::info!(orders = count, ?outcome, "job queued; its first step taken");
                return Ok(Queued::New);
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "the run's first step failed; its init trigger starts it again");
            }
        }
        let trigger = ResultDoc::new(OrderStatus::Succeeded, "init");
        let trigger_key = keys::trigger(ids.run_id);
        if let Err(error) = self
            .ports
            .internal
            .put(&trigger_key, to_json(&trigger))
            .await
        {
            tracing::warn!(%error, "could not write the init trigger; the run's watch starts the run");
        }
        tracing::info!(orders = count, "job queued");
        Ok(Queued::New)
    }

    /// Stores the run's key and writes the rows (all or none) with the job's `started`
    /// event: in the run's first step, taken here, when it takes one and they fit its write
    /// with the lock's item (the rows and the first claims are then one write), else
    /// inserted, for a first step taken after.
    async fn store_rows(
        &self,
        mut records: Vec<OrderRecord>,
        ids: &RunIds<'_>,
    ) -> Result<RowsWritten, EngineError> {
        let key_path = self.store_run_key(ids).await?;
        for record in &mut records {
            record.key_path.clone_from(&key_path);
        }
        let started = OrderEvent {
            trace_id: ids.trace_id.clone(),
            order_name: OrderEvent::JOB.to_owned(),
            epoch_ms: ids.created_at_ms,
            event: "started".to_owned(),
            run_id: ids.run_id.clone(),
            detail: serde_json::json!({
                "flow_id": ids.flow_id,
                "orders": records.len(),
                "username": ids.job.username,
                "rerun_of": ids.rerun.map(|rerun| &rerun.of),
            }),
        };
        let first_events = vec![started];
        let items = TakeLock::inserting_items(records.len(), first_events.len());
        if self.config.first_step_at_init && items <= MAX_MOVES_TOGETHER {
            let events = Some(first_events.clone());
            let stepped = self.take_first_step(ids.run_id, records.clone(), events);
            match stepped.await {
                Ok(Some(outcome)) => return Ok(RowsWritten::ByFirstStep(Ok(outcome))),
                // It took the lock: its write, with the rows, was made.
                Err(error) => return Ok(RowsWritten::ByFirstStep(Err(error))),
                Ok(None) => {}
            }
        }
        let inserted = (self.ports.orders)
            .insert_orders(&records, &first_events)
            .await;
        if let Err(error) = inserted {
            // A write that timed out may have landed all the same (or the first step's,
            // whose answer was lost, did): then the run exists, and its trigger carries it
            // on from the rows as they are.
            let landed = self
                .ports
                .orders
                .run_orders(ids.run_id)
                .await
                .is_ok_and(|rows| rows.len() == records.len());
            if !landed {
                return Err(error.into());
            }
            tracing::warn!(%error, "inserting the rows reported an error, but they are there");
            return Ok(RowsWritten::Found);
        }
        Ok(RowsWritten::Inserted(records))
    }

    /// Records that `submitter` submitted `key` as `response`'s run, unless someone did
    /// first (a conditional put): then that submission's answer.
    async fn record_submission(
        &self,
        submitter: &str,
        key: &str,
        response: &InitResponse,
    ) -> Result<Submission, EngineError> {
        let record = submission_record(submitter, key);
        let put = self
            .ports
            .internal
            .put_if_absent(&record, to_json(response))
            .await;
        let Err(error) = put else {
            return Ok(Submission::First(record));
        };
        // Someone's record is there (or ours, written by a put whose answer was lost).
        let Ok(Some(previous)) = self.recorded_submission(&record).await else {
            return Err(error.into());
        };
        Ok(if previous.run_id == response.run_id {
            Submission::First(record)
        } else {
            Submission::Again(previous)
        })
    }

    /// The answer recorded for a submission, if any.
    async fn recorded_submission(&self, record: &str) -> Result<Option<InitResponse>, EngineError> {
        let found = match self
            .ports
            .internal
            .get_prefix(record, MAX_SUBMISSION_BYTES)
            .await
        {
            Ok(bytes) => bytes,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(other) => return Err(other.into()),
        };
        let previous = serde_json::from_slice(&found).map_err(|e| StoreError::Backend {
            what: format!("the idempotency record {record}"),
            message: e.to_string(),
        })?;
        Ok(Some(previous))
    }

    /// Starts the run's watch (see [`crate::watchdog`]).
    async fn start_run_watch(&self, ids: &RunIds<'_>) -> Result<(), EngineError> {
        let watch = WatchdogInput {
            run_id: ids.run_id.clone(),
            order_num: OrderNum::INIT,
            attempt: AttemptId::run_watch(),
            timeout: 0,
            // From now, not from init's start: packaging may have taken long, and the
            // watch's limits (the start grace, init's longest time) count from here.
            start_time: self.now_ms() / 1000,
            job_deadline: ids.job_deadline_ms().div_ceil(1000),
            internal_bucket: self.ports.internal.bucket().to_owned(),
            generation: 0,
            wait_seconds: Some(first_wait_seconds(self.config.start_grace)),
            wake_at_ms: None,
        };
        self.ports
            .watchdog
            .start(&watch)
            .await
            .map_err(|error| EngineError::Start(Box::new(error)))
    }

    /// Stores the run's key (under order `0000`) and returns where; a transient failure is
    /// tried again (storing the same key twice is harmless).
    async fn store_run_key(&self, ids: &RunIds<'_>) -> Result<String, EngineError> {
        let stored = ids.run_key.stored();
        let path = self
            .storing("storing the run's key", || {
                self.ports.keys.put_key(ids.run_id, OrderNum::INIT, stored)
            })
            .await?;
        if self.config.first_step_at_init {
            // For the run's first step, taken here.
            self.run_keys.keep(ids.run_id, &path, stored);
        }
        Ok(path)
    }

    /// Packages the orders (`packaging`, in order) a few at a time; stores the bundles
    /// [`Engine::package_order`] left to pack in the run's packs as they fill; answers the
    /// orders' rows, each saying where its bundle is.
    async fn store_packs(
        &self,
        run_id: &RunId,
        packaging: Vec<impl Future<Output = Result<(OrderRecord, Option<Vec<u8>>), EngineError>>>,
    ) -> Result<Vec<OrderRecord>, EngineError> {
        let mut rows: Vec<OrderRecord> = Vec::with_capacity(packaging.len());
        let mut packs = BundlePacks::new(run_id);
        let mut packaged = stream::iter(packaging).buffered(PACKAGING_PARALLELISM);
        while let Some((mut row, to_pack)) = packaged.try_next().await? {
            if let Some(bundle) = to_pack {
                let (packed, full) = packs.add(rows.len(), &bundle);
                row.packed = Some(packed);
                if let Some(full) = full {
                    self.store_pack(full, &mut rows).await?;
                }
            }
            rows.push(row);
        }
        if let Some(last) = packs.finish() {
            self.store_pack(last, &mut rows).await?;
        }
        Ok(rows)
    }

    /// Stores `pack` and pins its members' ranges in `rows` to the entity tag S3 answered:
    /// their workers' reads are signed with it (see [`sluice_contract::dispatch::PinnedRange`]).
    async fn store_pack(&self, pack: FullPack, rows: &mut [OrderRecord]) -> Result<(), StoreError> {
        let internal = &self.ports.internal;
        let etag = self
            .storing("storing a pack of bundles", || {
                internal.put_tagged(&pack.key, pack.bytes.clone())
            })
            .await?;
        for member in pack.members {
            let packed = rows.get_mut(member).and_then(|row| row.packed.as_mut());
            debug_assert!(packed.is_some(), "pack member {member} is a packed row");
            // A row left without a tag is refused a URL at dispatch: its order fails.
            if let Some(packed) = packed {
                packed.range.etag.clone_from(&etag);
            }
        }
        Ok(())
    }

    /// Writes `bytes` at `key` of the internal store, trying a transient failure again.
    async fn store_retrying(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.storing("storing a bundle", || {
            self.ports.internal.put(key, bytes.to_vec())
        })
        .await
    }

    /// `store` (`what`, for the log), tried again after a transient failure.
    async fn storing<T, F>(&self, what: &str, store: impl FnMut() -> F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        self.init_retrying(what, StoreError::kind, store).await
    }

    /// `call` (`what`, for the log), tried again after a failure `kind_of` says is
    /// transient: init's retries, which a run's start can wait for.
    pub(crate) async fn init_retrying<T, E, F>(
        &self,
        what: &str,
        kind_of: impl Fn(&E) -> ErrorKind,
        call: impl FnMut() -> F,
    ) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let retries = Backoff::new(INIT_RETRY_FIRST, INIT_RETRIES);
        while_transient(self.ports.clock.as_ref(), retries, what, kind_of, call).await
    }

    async fn package_order(
        &self,
        ids: &RunIds<'_>,
        order: &ValidOrder,
        code: CodeInput,
        env: OrderEnv,
        modules: &Arc<RunModules>,
    ) -> Result<(OrderRecord, Option<Vec<u8>>), EngineError> {
        let run_id = ids.run_id;
        let order_num = order.plan.order_num;
        let log_key = keys::log(run_id, order_num);
        if let Some(rerun) = ids.rerun.filter(|rerun| rerun.reuses(order_num)) {
            // Not run: no bundle, no key, no code.
            let row = rerun.reused_row(ids.new_row(order, log_key, None), self.now_ms());
            return Ok((row, None));
        }
        let bundle_error = |cause: CodeError| EngineError::Bundle {
            order_num: order_num.to_string(),
            order_name: order.plan.order_name.clone(),
            cause,
        };
        // The env is encrypted to the order's key (and the job's sops recipient); an order
        // without variables has nothing to encrypt, nor a public key to make for it.
        let recipients = if env.env.is_empty() {
            Vec::new()
        } else {
            let key = ids.run_key.order_key(run_id, order_num);
            std::iter::once(key.recipient)
                .chain(order.sops_key.iter().cloned())
                .collect()
        };

        let input = BundleInput {
            manifest: OrderManifest {
                schema_version: sluice_contract::result::SCHEMA_VERSION.to_owned(),
                run_id: run_id.clone(),
                trace_id: ids.trace_id.clone(),
                flow_id: ids.flow_id.to_owned(),
                order_num,
                order_name: order.plan.order_name.clone(),
                timeout: order.plan.timeout,
                task: order.task.clone(),
                log_key: log_key.clone(),
                sandbox: order.plan.sandbox.clone(),
            },
            env: env.env,
            secret_names: env.secret_names,
            recipients,
            code,
        };
        let stripped_copy = ids.job.stripped_copy;
        // On AWS, the compile function compiles each module of the run for its workers
        // (`crate::run_modules`); locally each `sluice run` compiles, keeping its own
        // compile cache outside the state folder.
        let to_compile = match (&order.task, self.config.platform) {
            (Task::Wasm(wasm), Platform::Aws) => Some((wasm.module.clone(), wasm.fuel.is_some())),
            _ => None,
        };
        // Named in messages as the worker names it: by its file name.
        let module_name = to_compile.as_ref().map(|(path, _)| {
            let name = Path::new(path).file_name().unwrap_or_default();
            name.to_string_lossy().into_owned()
        });
        // The bundle's own failure is the job's (a bad path or link); the blocking task's
        // is Sluice's.
        let first_to_store = Arc::clone(modules);
        let packaged = run_blocking("building exec.zip", move || {
            let packaged = || -> Result<_, BundleError> {
                let built = bundle::build(&input)?;
                let stripped = stripped_copy
                    .then(|| bundle::build_stripped(&input))
                    .transpose()?;
                let module = to_compile.map(|(path, metered)| {
                    module_to_compile(&built, path, metered, &first_to_store)
                });
                Ok((built, stripped, module))
            };
            Ok(packaged())
        })
        .await?;
        let (bytes, stripped, module) = packaged.map_err(|error| bundle_error(error.into()))?;
        let compiled = match module.transpose().map_err(bundle_error)? {
            Some((compiled, file)) => {
                if let Some(file) = file {
                    let key = keys::module_to_compile(run_id, &compiled.module_sha256);
                    self.store_retrying(&key, &file).await?;
                }
                let name = module_name.unwrap_or_default();
                modules.want(run_id, &order.plan, &name, &compiled);
                Some(compiled)
            }
            None => None,
        };
        // On AWS a small bundle goes in one of the run's packs (`crate::bundle_packs`),
        // which the caller stores.
        let to_pack = self.config.platform == Platform::Aws && BundlePacks::takes(&bytes);
        if !to_pack {
            self.store_retrying(&keys::exec_zip(run_id, order_num), &bytes)
                .await?;
        }
        if let Some(stripped) = stripped {
            self.store_retrying(&keys::exec_zip_stripped(run_id, order_num), &stripped)
                .await?;
        }

        let record = ids.new_row(order, log_key, compiled);
        Ok((record, to_pack.then_some(bytes)))
    }
}

/// A WebAssembly order's module `path` in its `built` bundle, as a compile function reads
/// it: what names its code, and its bytes when the order is the run's first to store it
/// (`modules`). Blocking.
///
/// # Errors
///
/// The module is no file of the bundle's code, or is too large.
fn module_to_compile(
    built: &[u8],
    path: String,
    metered: bool,
    modules: &RunModules,
) -> Result<(CompiledModule, Option<Vec<u8>>), CodeError> {
    let Some((module_sha256, size)) = bundle::code_file_sha256(built, &path) else {
        return Err(CodeError::ModuleNotAFile { module: path });
    };
    if size > MAX_MODULE_BYTES {
        return Err(CodeError::ModuleTooLarge {
            module: path,
            size,
            limit: MAX_MODULE_BYTES,
        });
    }
    let file = match modules.first_to_store(&module_sha256) {
        true => match bundle::code_file(built, &path) {
            Some(file) => Some(file),
            None => return Err(CodeError::ModuleNotAFile { module: path }),
        },
        false => None,
    };
    let compiled = CompiledModule {
        module_sha256,
        metered,
    };
    Ok((compiled, file))
}

/// Checks what validation cannot: that this engine can fetch every order's code, and that
/// local code folders and zips exist (credentials and repositories are checked by fetching
/// them). Returns each order's code, in
/// order. `sluice validate` runs it too, so a job that validates also starts.
///
/// # Errors
///
/// [`EngineError::Bundle`] naming the order and the missing path.
pub fn preflight(
    valid: &ValidJob,
    platform: Platform,
    base_dir: &Path,
) -> Result<Vec<CodePlan>, EngineError> {
    valid
        .orders
        .iter()
        .map(|order| preflight_order(order, platform, base_dir))
        .collect()
}

pub(crate) fn preflight_order(
    order: &ValidOrder,
    platform: Platform,
    base_dir: &Path,
) -> Result<CodePlan, EngineError> {
    let missing = |cause: CodeError| EngineError::Bundle {
        order_num: order.plan.order_num.to_string(),
        order_name: order.plan.order_name.clone(),
        cause,
    };
    let local = match (&order.code, platform) {
        (CodeSource::None, _) => CodeInput::None,
        (CodeSource::Git(git), _) => return Ok(CodePlan::Git(git.clone())),
        (CodeSource::Zip(location), Platform::Aws) => {
            return Ok(CodePlan::Archive(location.clone()));
        }
        (CodeSource::Dir(dir), _) => {
            let path = base_dir.join(dir);
            if !path.is_dir() {
                return Err(missing(CodeError::NotAFolder { path }));
            }
            if let Task::Wasm(wasm) = &order.task {
                check_wasm_paths(wasm, &path).map_err(missing)?;
            }
            CodeInput::Dir(path)
        }
        (CodeSource::Zip(location), Platform::Local) => {
            let path = base_dir.join(location.strip_prefix("file://").unwrap_or(location));
            if !path.is_file() {
                return Err(missing(CodeError::NotAFile { path }));
            }
            CodeInput::Zip(path)
        }
    };
    Ok(CodePlan::Local(local))
}

/// A wasm order's module and mounted folders exist in its code folder (checked here so a
/// typo is reported before anything runs; the worker checks again in what it unpacked).
///
/// # Errors
///
/// [`CodeError::NoWasmModule`] or [`CodeError::NoWasmDir`], naming the path.
fn check_wasm_paths(wasm: &WasmSpec, code_dir: &Path) -> Result<(), CodeError> {
    let module = code_dir.join(&wasm.module);
    if !module.is_file() {
        return Err(CodeError::NoWasmModule { path: module });
    }
    for (index, dir) in wasm.dirs.iter().enumerate() {
        let host = code_dir.join(&dir.host);
        if !host.is_dir() {
            return Err(CodeError::NoWasmDir { index, path: host });
        }
    }
    Ok(())
}

/// The ids and settings shared by every order of the run being initialised.
/// Whose idempotency keys a submission's is among: a known caller's canonical principal
/// (two principals sharing a name never share keys), else the job's username.
fn submitter(options: &ValidateOptions, valid: &ValidJob) -> String {
    match &options.caller {
        Some(caller) => caller.principal.clone(),
        None => valid.username.clone(),
    }
}

/// Where a submitter's submission with an idempotency key is recorded.
fn submission_record(submitter: &str, key: &str) -> String {
    let digest = Sha256::digest(format!("{submitter}\n{key}"));
    keys::idempotency(&data_encoding::HEXLOWER.encode(&digest))
}

struct RunIds<'a> {
    run_id: &'a RunId,
    /// What the orders' keys are derived from (stored once, with the rows).
    run_key: &'a RunKey,
    /// Whose idempotency keys the submission's is among ([`submitter`]).
    submitter: &'a str,
    trace_id: &'a TraceId,
    flow_id: &'a str,
    created_at_ms: u64,
    job: &'a ValidJob,
    /// The run it reruns, when it is a rerun.
    rerun: Option<&'a Rerun>,
    /// What is kept of its job, for reruns.
    kept: &'a KeptJob,
}

impl RunIds<'_> {
    /// When the whole job times out, ms since the epoch.
    fn job_deadline_ms(&self) -> u64 {
        self.created_at_ms + self.job.job_timeout * 1000
    }

    /// `order`'s row as queued, its log at `log_key` (its key path is set with the rows'),
    /// naming the run it reruns if it does.
    fn new_row(
        &self,
        order: &ValidOrder,
        log_key: String,
        compiled: Option<CompiledModule>,
    ) -> OrderRecord {
        OrderRecord {
            run_id: self.run_id.clone(),
            plan: order.plan.clone(),
            trace_id: self.trace_id.clone(),
            flow_id: self.flow_id.to_owned(),
            created_at_ms: self.created_at_ms,
            job_deadline_ms: self.job_deadline_ms(),
            key_path: String::new(),
            log_key,
            status: OrderStatus::Queued,
            attempt: None,
            dispatched_at_ms: None,
            finished_at_ms: None,
            duration_ms: None,
            exit_code: None,
            reason: None,
            log_stored: None,
            attempts: Vec::new(),
            retry_at_ms: None,
            outputs_key: None,
            pr: self.job.pr.clone(),
            compiled,
            packed: None,
            rerun_of: self.rerun.map(|rerun| rerun.of.clone()),
            reused_from: None,
            ran_sandboxed: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_contract::parse_job;

    fn preflight_error(order: &str, platform: Platform) -> String {
        let job =
            parse_job(format!(r#"{{"username":"u","orders":[{order}]}}"#).as_bytes()).unwrap();
        let options = match platform {
            Platform::Local => ValidateOptions::local("u"),
            Platform::Aws => ValidateOptions::aws(),
        };
        let valid = validate(&job, &options).unwrap();
        preflight(&valid, platform, Path::new("/nonexistent"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn missing_local_code_is_named_with_its_path() {
        let err = preflight_error(
            r#"{"cmds":["true"],"timeout":5,"code_dir":"src"}"#,
            Platform::Local,
        );
        assert!(err.contains("/nonexistent/src is not a folder"), "{err}");
        let err = preflight_error(
            r#"{"cmds":["true"],"timeout":5,"s3_location":"file://code.zip"}"#,
            Platform::Local,
        );
        assert!(err.contains("/nonexistent/code.zip is not a file"), "{err}");
    }

    #[test]
    fn a_missing_module_or_mount_is_named() {
        let code = tempfile::tempdir().unwrap();
        std::fs::write(code.path().join("m.wasm"), b"\0asm").unwrap();
        let error_for = |wasm: &str| {
            let order = format!(
                r#"{{"wasm":{wasm},"timeout":5,"code_dir":{:?}}}"#,
                code.path().display().to_string()
            );
            let job = parse_job(format!(r#"{{"orders":[{order}]}}"#).as_bytes()).unwrap();
            let valid = validate(&job, &ValidateOptions::local("u")).unwrap();
            preflight(&valid, Platform::Local, Path::new("/")).map(|_| ())
        };
        assert!(error_for(r#"{"module":"m.wasm"}"#).is_ok());
        let err = error_for(r#"{"module":"other.wasm"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("wasm.module") && err.contains("other.wasm is not a file"),
            "{err}"
        );
        let err = error_for(r#"{"module":"m.wasm","dirs":[{"host":"data","guest":"/d"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("wasm.dirs[0].host") && err.contains("data is not a folder"),
            "{err}"
        );
    }
}
