//! The worker: as a Lambda, runs the dispatch payload it is invoked with; with `--from-env`
//! (the CodeBuild entrypoint, `worker-host/entrypoint.sh`), reads the same payload from the
//! `SLUICE_*` variables the dispatcher set on the build, runs it, and exits 0 once the
//! result is reported (1 otherwise, so the build shows failed).

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::json;
use sluice_aws::callback::HttpCallback;
use sluice_aws::calls::CallCounter;
use sluice_aws::clients::Clients;
use sluice_aws::dispatch::payload_from_env;
use sluice_aws::runtime::init_logging;
use sluice_aws::worker::{run_payload, worker_config};
use sluice_contract::dispatch::DispatchPayload;
use sluice_worker::WorkerReport;

fn describe(report: &WorkerReport) -> serde_json::Value {
    match report {
        WorkerReport::Reported(result) => json!({ "reported": result.status }),
        WorkerReport::Superseded(result) => {
            json!({ "status": result.status, "superseded": "the attempt already had a result" })
        }
        WorkerReport::CallbackFailed(result, error) => {
            json!({ "status": result.status, "callback_failed": error.to_string() })
        }
        WorkerReport::AlreadyClaimed => json!({ "already_claimed": true }),
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    // Orders must not read this process's environment (the role's credentials) through
    // /proc, and what they orphan must come back to it to be killed.
    sluice_worker::containment::harden_process();
    let clients = Clients::load().await;
    let callback = HttpCallback::new()?;
    let config = worker_config(|name| std::env::var(name).ok(), &std::env::temp_dir())?;
    let calls = CallCounter::default();
    if std::env::args().any(|arg| arg == "--from-env") {
        let payload = payload_from_env(|name| std::env::var(name).ok())?;
        let report = run_payload(&payload, &clients, &callback, &config, &calls).await;
        tracing::info!(report = %describe(&report), "attempt done");
        std::process::exit(match report {
            WorkerReport::Reported(_)
            | WorkerReport::Superseded(_)
            | WorkerReport::AlreadyClaimed => 0,
            WorkerReport::CallbackFailed(..) => 1,
        });
    }
    lambda_runtime::run(service_fn(|event: LambdaEvent<DispatchPayload>| {
        let (clients, callback, config, calls) = (&clients, &callback, &config, &calls);
        async move {
            let report = run_payload(&event.payload, clients, callback, config, calls).await;
            Ok::<_, Error>(describe(&report))
        }
    }))
    .await
}
