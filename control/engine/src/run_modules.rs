//! The WebAssembly modules of a run on AWS, compiled once for all the run's workers.
//!
//! The worker Lambda carries no compiler: Cranelift would be a third of its size, and
//! every fresh worker would compile its module again. So init-job stores each distinct
//! module of the run once ([`keys::module_to_compile`]) and has the compile function
//! ([`crate::ports::Dispatcher::compile`]) compile it once per engine setting (fuel
//! metering) and execution target, into the object the orders' dispatches point their
//! workers at ([`keys::compiled_code`]); a worker waits for it there. The requests go out
//! before the run is started, so the code is usually there before its first worker is.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};
use sluice_contract::dispatch::{Capability, CompileRequest};
use sluice_contract::plan::OrderPlan;
use sluice_contract::{OrderNum, RunId, keys};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::ports::{CompiledModule, Presigned};

/// How long the compile function's URLs live: its queue (an asynchronous invocation waits
/// up to the 15 minutes `infra/template.yaml` allows), then its own time (15 minutes at
/// most), with room.
const COMPILE_URL_EXPIRY: Duration = Duration::from_secs(2 * 3600);

/// How many compilations are started at the same time.
const STARTING_PARALLELISM: usize = 8;

/// One compilation a run needs.
#[derive(Debug)]
struct Wanted {
    module_name: String,
    module_sha256: String,
    metered: bool,
    /// The lowest-numbered order running it, for errors.
    order_num: OrderNum,
    /// The longest timeout of the orders running it, seconds.
    timeout: u64,
}

/// The modules of one run being packaged: which are stored, and which compilations the run
/// needs (by the key of their code). Shared by the orders packaged at the same time.
#[derive(Debug, Default)]
pub(crate) struct RunModules {
    stored: Mutex<HashSet<String>>,
    wanted: Mutex<BTreeMap<String, Wanted>>,
}

impl RunModules {
    /// Whether the module `module_sha256` is still to be stored (the first order to ask
    /// stores it).
    pub(crate) fn first_to_store(&self, module_sha256: &str) -> bool {
        let mut stored = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        stored.insert(module_sha256.to_owned())
    }

    /// Notes that the order `plan` of `run_id` runs the module `module_name` as `compiled`
    /// names it.
    pub(crate) fn want(
        &self,
        run_id: &RunId,
        plan: &OrderPlan,
        module_name: &str,
        compiled: &CompiledModule,
    ) {
        let key = keys::compiled_code(
            run_id,
            plan.execution_target,
            &compiled.module_sha256,
            compiled.metered,
        );
        let mut wanted = self.wanted.lock().unwrap_or_else(|p| p.into_inner());
        let wanted = wanted.entry(key).or_insert_with(|| Wanted {
            module_name: module_name.to_owned(),
            module_sha256: compiled.module_sha256.clone(),
            metered: compiled.metered,
            order_num: plan.order_num,
            timeout: 0,
        });
        wanted.timeout = wanted.timeout.max(plan.timeout);
        // Named in messages as the lowest-numbered order running it names it.
        if plan.order_num < wanted.order_num {
            wanted.order_num = plan.order_num;
            wanted.module_name = module_name.to_owned();
        }
    }
}

impl Engine {
    /// Has the compile function compile each module `modules` of `run_id` needs, a few at
    /// a time.
    ///
    /// # Errors
    ///
    /// A URL cannot be signed, or a compilation cannot be started (a transient failure
    /// after a few tries).
    pub(crate) async fn compile_modules(
        &self,
        run_id: &RunId,
        modules: &RunModules,
    ) -> Result<(), EngineError> {
        let wanted = std::mem::take(&mut *modules.wanted.lock().unwrap_or_else(|p| p.into_inner()));
        stream::iter(wanted)
            .map(|(code_key, wanted)| self.start_compiling(run_id, code_key, wanted))
            .buffer_unordered(STARTING_PARALLELISM)
            .try_collect()
            .await
    }

    /// Starts one compilation, trying a transient failure again.
    async fn start_compiling(
        &self,
        run_id: &RunId,
        code_key: String,
        wanted: Wanted,
    ) -> Result<(), EngineError> {
        let module_key = keys::module_to_compile(run_id, &wanted.module_sha256);
        let presign = |operation, key| async move {
            let url = self
                .ports
                .internal
                .presign(operation, key, COMPILE_URL_EXPIRY)
                .await?;
            Ok::<_, EngineError>(Capability::new(url))
        };
        let request = CompileRequest {
            run_id: run_id.clone(),
            module_name: wanted.module_name,
            module_url: presign(Presigned::Get, &module_key).await?,
            module_sha256: wanted.module_sha256,
            metered: wanted.metered,
            timeout: wanted.timeout,
            code_url: presign(Presigned::PutIfAbsent, &code_key).await?,
        };
        self.init_retrying(
            "starting the compile function",
            |error: &crate::ports::DispatchError| error.kind,
            || self.ports.dispatcher.compile(wanted.order_num, &request),
        )
        .await
        .map_err(|e| EngineError::Start(Box::new(e)))
    }
}
