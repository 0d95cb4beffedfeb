//! The compile function: as a Lambda, carries out the [`CompileRequest`] it is invoked with
//! (`sluice_compile::compile_for_run`), compiling in a child process of itself that is
//! killed when the time is up. It loads no AWS credentials: the module and the code's
//! object are behind the request's presigned URLs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::json;
use sluice_compile::{Compiled, compile_for_run};
use sluice_contract::dispatch::CompileRequest;
use sluice_lambda::init_logging;
use sluice_worker::wasm::CompileIn;
use sluice_worker_aws::HttpTransfer;
use tracing::Instrument;

/// What the function keeps of its own time, after compiling, to store what came of it.
const STORING_MARGIN: Duration = Duration::from_secs(30);

fn main() -> Result<(), Error> {
    // A compiler child process of this function compiles its module and exits here,
    // before anything else starts (see `sluice_worker::wasm::CompileIn`).
    sluice_worker::wasm::serve_if_asked();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve())
}

async fn serve() -> Result<(), Error> {
    init_logging();
    let transfer = HttpTransfer::new()?;
    let compile_in = CompileIn::child_of_this_binary();
    lambda_runtime::run(service_fn(|event: LambdaEvent<CompileRequest>| {
        let (transfer, compile_in) = (&transfer, &compile_in);
        let until =
            Instant::now() + time_left(event.context.deadline).saturating_sub(STORING_MARGIN);
        let request = event.payload;
        let span =
            tracing::info_span!("compile", run_id = %request.run_id, module = %request.module_name);
        async move {
            match compile_for_run(&request, transfer, compile_in, until).await {
                Ok(compiled) => {
                    tracing::info!(?compiled, "done");
                    Ok(match compiled {
                        Compiled::Stored => json!({ "stored": true }),
                        Compiled::AlreadyThere => json!({ "already_there": true }),
                        Compiled::Refused(reason) => json!({ "refused": reason }),
                    })
                }
                // Lambda invokes it again (twice at most): a failure to read or store may
                // pass.
                Err(error) => {
                    tracing::error!(%error, "failed");
                    Err(Error::from(error))
                }
            }
        }
        .instrument(span)
    }))
    .await
}

/// The time until `deadline` (milliseconds since the epoch, as Lambda gives it).
fn time_left(deadline: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Duration::from_millis(deadline).saturating_sub(now)
}
