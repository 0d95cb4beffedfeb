//! The worker: as a Lambda, runs the dispatch payload it is invoked with; with `--from-env`
//! (the CodeBuild entrypoint, `worker-host/entrypoint.sh`), reads the same payload from the
//! `SLUICE_*` variables the dispatcher set on the build, runs it, and exits 0 once the
//! result is reported (1 otherwise, so the build shows failed).

use std::sync::Arc;

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::json;
use sluice_aws::callback::HttpCallback;
use sluice_aws::calls::CallCounter;
use sluice_aws::clients::Clients;
use sluice_aws::dispatch::payload_from_env;
use sluice_aws::runtime::init_logging;
use sluice_aws::worker::run_payload;
use sluice_contract::dispatch::DispatchPayload;
use sluice_worker::wasm::WasmRuntime;
use sluice_worker::{WorkerConfig, WorkerReport};

/// The host variables commands inherit, where compiled modules are cached (the only
/// writable folder on Lambda is /tmp), and the log cap (`SLUICE_MAX_LOG_MB`, default 64).
fn worker_config() -> Result<WorkerConfig, Error> {
    let host_env = ["PATH", "HOME", "LANG"]
        .into_iter()
        .filter_map(|name| Some((name.to_owned(), std::env::var(name).ok()?)))
        .collect();
    let temp = std::env::temp_dir();
    let mut config = WorkerConfig {
        work_root: Some(temp.clone()),
        host_env,
        wasm: Arc::new(WasmRuntime::new(Some(temp.join("sluice-wasm-cache")))),
        ..WorkerConfig::default()
    };
    if let Ok(text) = std::env::var("SLUICE_MAX_LOG_MB") {
        let mib: u64 =
            text.parse().ok().filter(|&mib| mib > 0).ok_or_else(|| {
                format!("SLUICE_MAX_LOG_MB={text:?} is not a positive number of MiB")
            })?;
        config.max_log_bytes = mib << 20;
    }
    Ok(config)
}

fn describe(report: &WorkerReport) -> serde_json::Value {
    match report {
        WorkerReport::Reported(result) => json!({ "reported": result.status }),
        WorkerReport::CallbackFailed(result, error) => {
            json!({ "status": result.status, "callback_failed": error.to_string() })
        }
        WorkerReport::AlreadyClaimed => json!({ "already_claimed": true }),
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let clients = Clients::load().await;
    let callback = HttpCallback::new()?;
    let config = worker_config()?;
    let calls = CallCounter::default();
    if std::env::args().any(|arg| arg == "--from-env") {
        let payload = payload_from_env(|name| std::env::var(name).ok())?;
        let report = run_payload(&payload, &clients, &callback, &config, &calls).await?;
        tracing::info!(report = %describe(&report), "attempt done");
        std::process::exit(match report {
            WorkerReport::Reported(_) | WorkerReport::AlreadyClaimed => 0,
            WorkerReport::CallbackFailed(..) => 1,
        });
    }
    lambda_runtime::run(service_fn(|event: LambdaEvent<DispatchPayload>| {
        let (clients, callback, config, calls) = (&clients, &callback, &config, &calls);
        async move {
            let report = run_payload(&event.payload, clients, callback, config, calls).await?;
            Ok::<_, Error>(describe(&report))
        }
    }))
    .await
}
