//! `sluice rerun`: a new run of a finished run's job, as Step Functions' redrive and
//! GitHub's "re-run jobs" do.
//!
//! init keeps every run's job as it was submitted ([`KeptJob`], sealed, at
//! `tmp/jobs/<run>.age`, with the folder its relative paths are read from locally, and on
//! AWS who submitted it: the only caller that may rerun it). A rerun is an init of that job
//! under a new run id, whose rows and done document name the run it reruns (`rerun_of`),
//! with two differences:
//! - Code: each order runs the code its bundle held in the run it reruns while that bundle
//!   is stored (what was built then from a branch, a folder or a zip runs again, not what
//!   they hold now); else its code is fetched from the job again. Its env is always made
//!   anew, since the one stored was encrypted to a key deleted at finalize: the job's
//!   variables, and its credentials as their stores hold them now.
//! - With `--failed`, an order that succeeded is not run: its row is inserted `succeeded`,
//!   with `reused_from` (the run it ran in, followed through earlier reruns), its attempt,
//!   exit code, log's key and outputs' key, so that later orders take its outputs as they
//!   did — unless it waits for an order that runs again, or its outputs are gone. Every
//!   other order runs.
//!
//! Only a finished run (one with a done document) is rerun: one still going could yet
//! change what a rerun would reuse, and two of the same job would run at once.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret as _;
use futures::stream::{self, StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};
use sluice_contract::result::{DoneDoc, DoneOrder};
use sluice_contract::validate::{Platform, ValidJob};
use sluice_contract::{AttemptId, JobSpec, OrderNum, OrderStatus, RunId, ValidateOptions, keys};

use crate::bundle::CodeInput;
use crate::code::CodePlan;
use crate::engine::Engine;
use crate::error::{EngineError, StoreError};
use crate::init_job::{InitResponse, preflight_order};
use crate::ports::OrderRecord;

/// A run's job as it was submitted, kept for `sluice rerun`, sealed with age to the
/// deployment's kept jobs' key ([`KeyStore::jobs_key`](crate::ports::KeyStore::jobs_key)):
/// a job's `env_vars` may hold a secret, which is stored nowhere in the clear (the bundles'
/// env is encrypted to a key deleted at finalize, too early for a rerun).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeptJob {
    /// The job as submitted.
    pub job: JobSpec,
    /// The name the run ran under.
    pub ran_as: String,
    /// Locally, the folder the job's relative paths (`code_dir`, a zip) were read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_dir: Option<PathBuf>,
    /// On AWS, the principal that submitted it, or the run it reruns (the only caller that
    /// may rerun it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitter: Option<String>,
}

impl KeptJob {
    /// What init keeps of `job` (`valid`, read from `base_dir`) submitted under `options`,
    /// of a run that reruns `rerun` if it does.
    pub(crate) fn of(
        job: &JobSpec,
        valid: &ValidJob,
        options: &ValidateOptions,
        base_dir: &Path,
        rerun: Option<&Rerun>,
    ) -> Self {
        KeptJob {
            job: job.clone(),
            ran_as: valid.username.clone(),
            base_dir: (options.platform == Platform::Local).then(|| base_dir.to_owned()),
            submitter: match &options.caller {
                Some(caller) => Some(caller.principal.clone()),
                None => rerun.and_then(|rerun| rerun.submitter.clone()),
            },
        }
    }
}

/// What `sluice rerun` asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RerunRequest {
    /// The run to run again.
    pub of: RunId,
    /// Run only what did not succeed (`--failed`); the rest is reused.
    pub failed_only: bool,
    /// The rerun's own idempotency key, if its caller gave one (the kept job's is not
    /// used: it would answer the run being rerun).
    pub idempotency_key: Option<String>,
}

/// Why a run cannot be rerun: the message says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotRerunnable {
    /// The run has no done document yet.
    #[error(
        "it has not finished (it has no done document yet): wait for its end, or cancel it, and rerun it then"
    )]
    NotFinished,
    /// Its job was not kept: queued before jobs were, or expired with its objects.
    #[error(
        "its job is not kept (the run was queued before Sluice kept jobs for reruns, or its objects have expired): run the job file again"
    )]
    JobNotKept,
    /// Its kept job does not open (sealed to another key) or read.
    #[error("its kept job {key} cannot be read ({message}): run the job file again")]
    JobUnreadable {
        /// Where it is.
        key: String,
        /// Why it does not open or read.
        message: String,
    },
    /// Another caller submitted it.
    #[error(
        "another caller submitted it: only its submitter may rerun it (or an operator, invoking init-job directly)"
    )]
    NotTheSubmitter,
    /// `--failed`, and every order succeeded.
    #[error(
        "every one of its orders succeeded: --failed finds nothing to run again (rerun it without --failed to run all of it)"
    )]
    NothingFailed,
}

/// What a rerun's init takes from the run it reruns.
#[derive(Debug)]
pub(crate) struct Rerun {
    /// The run rerun.
    pub(crate) of: RunId,
    /// The orders not run again (`--failed`), by number: those that succeeded, until
    /// [`Rerun::settle`] keeps the ones that wait for no order that runs again.
    reused: BTreeMap<OrderNum, ReusedOrder>,
    /// The rerun run's rows, which say where its bundles are (none once they expired).
    originals: Vec<OrderRecord>,
    /// The orders it reused, each with the run it ran in (where its bundle is).
    ran_in: BTreeMap<OrderNum, RunId>,
    /// Who submitted it (a rerun by an operator's direct invoke keeps them).
    submitter: Option<String>,
}

/// An order that succeeded in the run rerun, kept as it ended there.
#[derive(Debug, Clone)]
struct ReusedOrder {
    /// The run it ran in.
    from: RunId,
    /// Its attempt there that ended it, whose result holds its log when no log was stored
    /// alone (on AWS).
    attempt: Option<AttemptId>,
    exit_code: Option<i32>,
    /// Its stored log, if it stored one.
    log_key: Option<String>,
    outputs_key: Option<String>,
}

impl Engine {
    /// Keeps `kept` as `run_id`'s job, sealed (see [`KeptJob`]), for reruns.
    ///
    /// # Errors
    ///
    /// The key store's or the store's failure, after init's retries of a transient one.
    pub(crate) async fn keep_job(&self, run_id: &RunId, kept: &KeptJob) -> Result<(), StoreError> {
        let plain = serde_json::to_vec(kept).expect("a job serializes");
        let recipient = self.jobs_identity().await?.to_public().to_string();
        let sealed =
            crate::bundle::encrypt(&plain, &[recipient]).map_err(|e| StoreError::Backend {
                what: "sealing the kept job".to_owned(),
                message: e.to_string(),
            })?;
        let key = keys::job(run_id);
        self.init_retrying("keeping the job", StoreError::kind, || {
            self.ports.internal.put(&key, sealed.clone())
        })
        .await
    }

    /// The job `run_id` was queued with, if it was kept.
    ///
    /// # Errors
    ///
    /// A backend failure, or a kept job that does not open or read.
    pub async fn kept_job(&self, run_id: &RunId) -> Result<Option<KeptJob>, EngineError> {
        let key = keys::job(run_id);
        let sealed = match self.ports.internal.get(&key).await {
            Ok(sealed) => sealed,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(other) => return Err(other.into()),
        };
        let unreadable = |message: String| EngineError::NotRerunnable {
            run_id: run_id.to_string(),
            why: NotRerunnable::JobUnreadable {
                key: key.clone(),
                message,
            },
        };
        let identity = self.jobs_identity().await?;
        let plain = open_sealed(&sealed, &identity).map_err(unreadable)?;
        let kept = serde_json::from_slice(&plain).map_err(|e| unreadable(e.to_string()))?;
        Ok(Some(kept))
    }

    /// The deployment's kept jobs' key, made by the first to need it.
    async fn jobs_identity(&self) -> Result<age::x25519::Identity, StoreError> {
        let made = age::x25519::Identity::generate();
        let made = made.to_string().expose_secret().to_owned();
        let stored = self
            .init_retrying("reading the kept jobs' key", StoreError::kind, || {
                self.ports.keys.jobs_key(&made)
            })
            .await?;
        stored.parse().map_err(|reason: &str| StoreError::Backend {
            what: "the kept jobs' key".to_owned(),
            message: format!("not an age identity: {reason}"),
        })
    }

    /// Queues a new run `run_id` of `request.of`'s job; see the module docs. The job runs
    /// under `options` as a submitted one would (locally, its user; on AWS, its caller).
    ///
    /// # Errors
    ///
    /// [`EngineError::UnknownRun`] for a run that never was; [`EngineError::NotRerunnable`]
    /// saying why this one cannot be; then as [`Engine::init_job`].
    pub async fn rerun_as(
        &self,
        run_id: RunId,
        request: &RerunRequest,
        options: &ValidateOptions,
    ) -> Result<InitResponse, EngineError> {
        let of = &request.of;
        let refused = |why| EngineError::NotRerunnable {
            run_id: of.to_string(),
            why,
        };
        let view = self.run_view(of).await?;
        let kept = (self.kept_job(of).await?).ok_or_else(|| refused(NotRerunnable::JobNotKept))?;
        if let Some(caller) = &options.caller
            && kept.submitter.as_deref() != Some(caller.principal.as_str())
        {
            return Err(refused(NotRerunnable::NotTheSubmitter));
        }
        let done = view
            .done
            .ok_or_else(|| refused(NotRerunnable::NotFinished))?;
        let all_succeeded = (done.orders.iter()).all(|o| o.status == OrderStatus::Succeeded);
        if request.failed_only && !done.orders.is_empty() && all_succeeded {
            return Err(refused(NotRerunnable::NothingFailed));
        }
        let mut job = kept.job;
        job.idempotency_key.clone_from(&request.idempotency_key);
        if options.caller.is_some() {
            // Under its caller's name, as the caller's own submission would run.
            job.username = None;
        } else if options.default_username.is_none() {
            // An operator's direct invoke: under the name it ran under (which a job sent
            // over HTTP took from its caller).
            job.username.get_or_insert(kept.ran_as);
        }
        // Narrowed by init once the job is validated (`Rerun::settle`).
        let reused = match request.failed_only {
            true => self.still_reusable(of, &done).await?,
            false => BTreeMap::new(),
        };
        let base_dir = kept.base_dir.unwrap_or_else(|| PathBuf::from("/"));
        let ran_in = (done.orders.iter())
            .filter_map(|o| Some((o.order_num, RunId::parse(o.reused_from.as_deref()?)?)))
            .collect();
        let rerun = Rerun {
            of: of.clone(),
            reused,
            originals: view.orders,
            ran_in,
            submitter: kept.submitter,
        };
        self.init(run_id, &job, options, &base_dir, Some(rerun))
            .await
    }

    /// The orders that succeeded in `of` (its done document `done`) whose outputs are still
    /// stored: one whose outputs expired is run again rather than reused without them.
    async fn still_reusable(
        &self,
        of: &RunId,
        done: &DoneDoc,
    ) -> Result<BTreeMap<OrderNum, ReusedOrder>, StoreError> {
        let succeeded = (done.orders.iter()).filter(|o| o.status == OrderStatus::Succeeded);
        let looks: Vec<_> = succeeded
            .map(|order| async move {
                let stored = match &order.outputs_key {
                    Some(key) => self.ports.internal.head(key).await?.is_some(),
                    None => true,
                };
                Ok::<_, StoreError>(stored.then(|| (order.order_num, reused_order(of, order))))
            })
            .collect();
        let found: Vec<_> = stream::iter(looks)
            .buffer_unordered(REUSE_LOOKS_AT_ONCE)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// Each order's code for a rerun (see the module docs): none for a reused order, the
    /// stored bundle's where there is one, else what preflight finds for it; and the
    /// scratch folder holding the stored bundles, which must live until the bundles are
    /// built.
    ///
    /// # Errors
    ///
    /// A backend failure reading a bundle, or one writing it to scratch; preflight's.
    pub(crate) async fn rerun_code(
        &self,
        valid: &ValidJob,
        rerun: &Rerun,
        base_dir: &Path,
    ) -> Result<(Vec<CodePlan>, tempfile::TempDir), EngineError> {
        let scratch = (tempfile::Builder::new().prefix("sluice-rerun-").tempdir())
            .map_err(|e| StoreError::io("creating a folder for a rerun's bundles", e))?;
        let mut stored = StoredBundles::default();
        let mut plans = Vec::with_capacity(valid.orders.len());
        for order in &valid.orders {
            let order_num = order.plan.order_num;
            if rerun.reuses(order_num) {
                plans.push(CodePlan::Local(CodeInput::None));
                continue;
            }
            let Some(bundle) = self.stored_bundle(rerun, order_num, &mut stored).await? else {
                tracing::warn!(%order_num, order_name = %order.plan.order_name, "the bundle it ran with is no longer stored: its code is fetched from the job again");
                plans.push(preflight_order(order, self.config.platform, base_dir)?);
                continue;
            };
            let path = scratch.path().join(format!("{order_num}.zip"));
            let writing = path.clone();
            crate::blocking::run_blocking("writing a stored bundle", move || {
                std::fs::write(&writing, bundle)
                    .map_err(|e| StoreError::io("writing a stored bundle to rerun", e))
            })
            .await?;
            plans.push(CodePlan::Local(CodeInput::Bundle(path)));
        }
        Ok((plans, scratch))
    }

    /// The bundle `order_num` ran with, while stored: the run rerun's, or, for an order that
    /// run reused, the run it ran in; alone, or in one of that run's packs.
    async fn stored_bundle(
        &self,
        rerun: &Rerun,
        order_num: OrderNum,
        stored: &mut StoredBundles,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let row_of = |rows: &[OrderRecord]| {
            (rows.iter())
                .find(|row| row.plan.order_num == order_num)
                .cloned()
        };
        let mut run = rerun.of.clone();
        let mut row = row_of(&rerun.originals);
        if let Some(from) = rerun.ran_in.get(&order_num) {
            if !stored.rows.contains_key(from) {
                let rows = self.ports.orders.run_orders(from).await?;
                stored.rows.insert(from.clone(), rows);
            }
            row = row_of(&stored.rows[from]);
            run = from.clone();
        }
        let internal = &self.ports.internal;
        let Some(packed) = row.and_then(|row| row.packed) else {
            return match internal.get(&keys::exec_zip(&run, order_num)).await {
                Ok(bundle) => Ok(Some(bundle)),
                Err(StoreError::NotFound { .. }) => Ok(None),
                Err(other) => Err(other),
            };
        };
        let pack = match stored.packs.entry((run.clone(), packed.pack)) {
            Entry::Occupied(read) => read.into_mut(),
            Entry::Vacant(unread) => {
                match internal.get(&keys::bundle_pack(&run, packed.pack)).await {
                    Ok(pack) => unread.insert(pack),
                    Err(StoreError::NotFound { .. }) => return Ok(None),
                    Err(other) => return Err(other),
                }
            }
        };
        let range = &packed.range;
        let bundle = usize::try_from(range.start)
            .ok()
            .zip(usize::try_from(range.len).ok())
            .and_then(|(start, len)| pack.get(start..start.checked_add(len)?));
        Ok(bundle.map(<[u8]>::to_vec))
    }
}

/// How many reused orders' outputs are looked for at once.
const REUSE_LOOKS_AT_ONCE: usize = 16;

/// Earlier runs' rows and packs, each read once while a rerun's code is gathered.
#[derive(Debug, Default)]
struct StoredBundles {
    rows: HashMap<RunId, Vec<OrderRecord>>,
    packs: HashMap<(RunId, u32), Vec<u8>>,
}

impl Rerun {
    /// Whether `order_num` is reused rather than run.
    pub(crate) fn reuses(&self, order_num: OrderNum) -> bool {
        self.reused.contains_key(&order_num)
    }

    /// `row`, queued, as an order this rerun reuses has it: ended as it did where it ran
    /// (unchanged for an order that runs).
    pub(crate) fn reused_row(&self, mut row: OrderRecord, now_ms: u64) -> OrderRecord {
        let Some(reused) = self.reused.get(&row.plan.order_num) else {
            return row;
        };
        row.status = OrderStatus::Succeeded;
        row.finished_at_ms = Some(now_ms);
        row.exit_code = reused.exit_code;
        row.attempt.clone_from(&reused.attempt);
        row.log_stored = Some(reused.log_key.is_some());
        if let Some(log_key) = &reused.log_key {
            row.log_key.clone_from(log_key);
        }
        row.outputs_key.clone_from(&reused.outputs_key);
        row.reused_from = Some(reused.from.clone());
        row
    }

    /// Settles what is reused of `valid` (the job validated): of the orders that
    /// succeeded, only those waiting for no order that runs again ([`reusable`]); and drops
    /// their credentials from `valid`: nothing of them runs, so they are not fetched (the
    /// caller's grants are checked against the whole job before).
    pub(crate) fn settle(&mut self, valid: &mut ValidJob) {
        self.reused = reusable(std::mem::take(&mut self.reused), valid);
        for order in &mut valid.orders {
            if self.reuses(order.plan.order_num) {
                order.credentials.clear();
            }
        }
    }
}

/// Of the orders that succeeded (`succeeded`), those a rerun reuses: each whose every
/// order it waits for is reused too. One that waits for an order that runs again runs
/// again with it, as GitHub's "re-run failed jobs" reruns their dependents: a condition
/// sees the new outcome, an input the new output.
fn reusable(
    mut succeeded: BTreeMap<OrderNum, ReusedOrder>,
    valid: &ValidJob,
) -> BTreeMap<OrderNum, ReusedOrder> {
    let mut reused = BTreeMap::new();
    for wave in valid.waves() {
        for order in wave {
            let num = order.plan.order_num;
            let waits_reused = (order.plan.depends_on.iter()).all(|d| reused.contains_key(d));
            if let Some(kept) = succeeded.remove(&num).filter(|_| waits_reused) {
                reused.insert(num, kept);
            }
        }
    }
    reused
}

/// How `order`, which succeeded in `of`, is reused.
fn reused_order(of: &RunId, order: &DoneOrder) -> ReusedOrder {
    ReusedOrder {
        from: (order.reused_from.as_deref())
            .and_then(RunId::parse)
            .unwrap_or_else(|| of.clone()),
        attempt: (order.result_key.as_deref())
            .and_then(keys::parse_result)
            .map(|key| key.attempt),
        exit_code: order.exit_code,
        log_key: order.log_key.clone(),
        outputs_key: order.outputs_key.clone(),
    }
}

/// The plaintext `sealed` (age) holds for `identity`.
fn open_sealed(sealed: &[u8], identity: &age::x25519::Identity) -> Result<Vec<u8>, String> {
    let decryptor = age::Decryptor::new(sealed).map_err(|e| e.to_string())?;
    let mut reader = decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(|e| e.to_string())?;
    let mut plain = Vec::new();
    reader.read_to_end(&mut plain).map_err(|e| e.to_string())?;
    Ok(plain)
}
