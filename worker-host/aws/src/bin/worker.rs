//! The worker: as a Lambda, runs the dispatch payload it is invoked with; with `--from-env`
//! (the CodeBuild entrypoint, `worker-host/entrypoint.sh`), redeems the ticket the
//! dispatcher put in the build's environment (`sluice_worker_aws::ticket`), runs its payload, and
//! exits 0 once the result is reported (1 otherwise, so the build shows failed).
//!
//! Neither loads AWS credentials: everything the attempt touches is behind the presigned
//! URLs of its payload.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::json;
use sluice_contract::dispatch::DispatchPayload;
use sluice_lambda::init_logging;
use sluice_worker::{WorkerReport, run_order};
use sluice_worker_aws::HttpTransfer;
use sluice_worker_aws::settings::worker_config;
use sluice_worker_aws::ticket;

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

fn main() -> Result<(), Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve())
}

async fn serve() -> Result<(), Error> {
    init_logging();
    // Orders must not read this process's memory or environment through /proc, and what
    // they orphan must come back to it to be killed.
    sluice_worker::containment::harden_process();
    let transfer = HttpTransfer::new()?;
    let config = worker_config(|name| std::env::var(name).ok(), &std::env::temp_dir())?;
    if std::env::args().any(|arg| arg == "--from-env") {
        let payload = match ticket::redeem(|name| std::env::var(name).ok(), &transfer).await {
            Ok(payload) => payload,
            Err(error) => {
                // The build's log shows this line; the build fails.
                eprintln!("worker: {error}");
                std::process::exit(1);
            }
        };
        // A build may start long after its dispatch: the run may have been cancelled since.
        let config = sluice_worker::WorkerConfig {
            look_for_cancel_at_start: true,
            ..config
        };
        let report = run_order(&payload, &transfer, &config).await;
        tracing::info!(report = %describe(&report), "attempt done");
        std::process::exit(match report {
            WorkerReport::Reported(_)
            | WorkerReport::Superseded(_)
            | WorkerReport::AlreadyClaimed => 0,
            WorkerReport::CallbackFailed(..) => 1,
        });
    }
    lambda_runtime::run(service_fn(|event: LambdaEvent<DispatchPayload>| {
        let (transfer, config) = (&transfer, &config);
        async move {
            let report = run_order(&event.payload, transfer, config).await;
            Ok::<_, Error>(describe(&report))
        }
    }))
    .await
}
