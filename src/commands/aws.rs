//! `sluice submit | rerun --aws | status | wait | logs | report --aws`: a job (or a
//! rerun) sent to a deployment, and questions about a run on AWS answered from its tables
//! and buckets (the `SLUICE_*` settings of the deployment and the standard AWS
//! configuration come from the environment).

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sluice_contract::{RunId, exit_codes};
use sluice_engine::cancel::CancelAnswer;
use sluice_engine::runs::RunStores;
use sluice_engine::{Engine, EngineError};

use super::{Failure, print_json, read_job};
use crate::cli::{AwsCommand, SubmitTarget};

pub async fn run(command: AwsCommand) -> i32 {
    match answer(command).await {
        Ok(code) => code,
        Err(failure) => failure.report(),
    }
}

fn engine_failure(error: EngineError) -> Failure {
    match error {
        EngineError::UnknownRun(_)
        | EngineError::UnknownOrder { .. }
        | EngineError::NoLog { .. } => Failure::invalid(error),
        other => Failure::internal(other),
    }
}

async fn answer(command: AwsCommand) -> Result<i32, Failure> {
    match command {
        AwsCommand::Submit { job, target, wait } => submit(&job, &target, wait).await,
        AwsCommand::Rerun {
            run_id,
            failed,
            target,
            wait,
        } => rerun(&run_id, failed, &target, wait).await,
        AwsCommand::Status { run_id } => {
            let (engine, run_id) = engine_and_run(&run_id).await?;
            let view = engine.run_view(&run_id).await.map_err(engine_failure)?;
            let shown = match &view.done {
                Some(done) => serde_json::to_value(done).expect("done documents serialize"),
                None => serde_json::json!({
                    "status": "running",
                    "run_id": run_id,
                    "orders": view.orders.iter().map(|o| serde_json::json!({
                        "order_num": o.plan.order_num, "order_name": o.plan.order_name,
                        "status": o.status, "reason": o.reason,
                    })).collect::<Vec<_>>(),
                }),
            };
            print_json(&shown);
            Ok(exit_codes::SUCCEEDED)
        }
        AwsCommand::Wait { run_id, poll } => {
            let (engine, run_id) = engine_and_run(&run_id).await?;
            wait(&engine, &run_id, poll).await
        }
        AwsCommand::Cancel { run_id, by } => {
            let (engine, run_id) = engine_and_run(&run_id).await?;
            let answer = (engine.request_cancel(&run_id, &by).await).map_err(engine_failure)?;
            match answer {
                CancelAnswer::AlreadyEnded(status) => {
                    eprintln!("sluice: run {run_id} had ended ({status}): nothing to cancel");
                }
                CancelAnswer::Requested(request) | CancelAnswer::AlreadyRequested(request) => {
                    eprintln!(
                        "sluice: run {run_id}: {} asked to cancel it; its workers stop within seconds (`sluice wait {run_id}` follows it to its end)",
                        request.by
                    );
                }
            }
            Ok(exit_codes::SUCCEEDED)
        }
        AwsCommand::Report { run_id, output } => {
            let (engine, run_id) = engine_and_run(&run_id).await?;
            let stores = RunStores::of(&engine.ports);
            super::report::write(&stores, &run_id, output.as_deref()).await?;
            Ok(exit_codes::SUCCEEDED)
        }
        AwsCommand::Logs { run_id, order } => {
            let (engine, run_id) = engine_and_run(&run_id).await?;
            let log = engine
                .order_log(&run_id, &order)
                .await
                .map_err(engine_failure)?;
            // On a terminal the log is shown as text (its escape sequences escaped); into a
            // pipe or file it goes byte for byte.
            let mut stdout = std::io::stdout();
            let written = if std::io::IsTerminal::is_terminal(&stdout) {
                let text = String::from_utf8_lossy(&log);
                let shown: Vec<_> = text
                    .split('\n')
                    .map(crate::progress::terminal_safe)
                    .collect();
                stdout.write_all(shown.join("\n").as_bytes())
            } else {
                stdout.write_all(&log)
            };
            written
                .context("writing the log")
                .map_err(Failure::internal)?;
            Ok(exit_codes::SUCCEEDED)
        }
    }
}

/// Follows the run until its done document: a line on stderr whenever a status changes,
/// then the document on stdout; the job's exit code.
async fn wait(engine: &Engine, run_id: &RunId, poll: Duration) -> Result<i32, Failure> {
    let done = engine
        .wait_for_done(run_id, poll, |view| {
            let line: Vec<String> = view
                .orders
                .iter()
                .map(|o| {
                    let name = crate::progress::terminal_safe(&o.plan.order_name);
                    format!("{} {name} {}", o.plan.order_num, o.status)
                })
                .collect();
            eprintln!("sluice: {}", line.join(" · "));
        })
        .await
        .map_err(engine_failure)?;
    print_json(&done);
    Ok(exit_codes::for_job_status(done.status))
}

/// The engine over the deployment named by the environment.
async fn deployment() -> Result<Arc<Engine>, Failure> {
    sluice_aws::runtime::engine_from_env()
        .await
        .context("the deployment's settings")
        .map_err(Failure::invalid)
}

/// The engine over the deployment named by the environment, and `text` as a run id.
async fn engine_and_run(text: &str) -> Result<(Arc<Engine>, RunId), Failure> {
    let run_id = RunId::parse(text)
        .with_context(|| format!("{text:?} is not a run id"))
        .map_err(Failure::invalid)?;
    Ok((deployment().await?, run_id))
}

/// Checks the job as AWS will (so a bad one is refused here, naming the order and field)
/// and, to wait, the deployment's settings; then sends the file as written.
async fn submit(
    job: &std::path::Path,
    target: &SubmitTarget,
    wait_poll: Option<Duration>,
) -> Result<i32, Failure> {
    let (spec, _) = read_job(job)?;
    let mut options = sluice_contract::ValidateOptions::aws();
    if matches!(target, SubmitTarget::Endpoint(_)) {
        // Over the endpoint the job runs as the IAM caller: it needs no username of its own.
        options.default_username = Some("caller".to_owned());
    }
    sluice_contract::validate::validate(&spec, &options)
        .with_context(|| format!("job file {}", job.display()))
        .map_err(Failure::invalid)?;
    let bytes = std::fs::read(job)
        .with_context(|| format!("reading job file {}", job.display()))
        .map_err(Failure::invalid)?;
    send(bytes, target, wait_poll).await
}

/// Asks the deployment to run a finished run's job again; see [`send`].
async fn rerun(
    run_id: &str,
    failed: bool,
    target: &SubmitTarget,
    wait_poll: Option<Duration>,
) -> Result<i32, Failure> {
    let of = RunId::parse(run_id)
        .with_context(|| format!("{run_id:?} is not a run id"))
        .map_err(Failure::invalid)?;
    let request = sluice_aws::handlers::init_job::RerunSubmission {
        rerun_of: of.to_string(),
        failed,
        idempotency_key: None,
    };
    let bytes = serde_json::to_vec(&request).expect("JSON serializes");
    send(bytes, target, wait_poll).await
}

/// Sends `body` to init-job (a job, or a rerun request); prints its answer, or with
/// `wait_poll` follows the run it queued as `sluice wait` does.
async fn send(
    body: Vec<u8>,
    target: &SubmitTarget,
    wait_poll: Option<Duration>,
) -> Result<i32, Failure> {
    // The settings waiting needs are checked before anything is queued.
    let follow = match wait_poll {
        Some(poll) => Some((deployment().await?, poll)),
        None => None,
    };
    let answer = match target {
        SubmitTarget::Endpoint(url) => sluice_aws::client::submit_http(url, body).await,
        SubmitTarget::Function(function) => {
            let clients = sluice_aws::clients::Clients::load().await;
            sluice_aws::client::submit_invoke(&clients.lambda, function, body).await
        }
    };
    match (answer, follow) {
        (Ok(answer), None) => {
            print_json(&answer);
            Ok(exit_codes::SUCCEEDED)
        }
        (Ok(answer), Some((engine, poll))) => {
            let run_id = answer["run_id"]
                .as_str()
                .and_then(RunId::parse)
                .with_context(|| format!("init-job answered without a run id: {answer}"))
                .map_err(Failure::internal)?;
            eprintln!("sluice: submitted run {run_id}");
            wait(&engine, &run_id, poll).await
        }
        (Err(error), _) if error.is_the_jobs_fault() => {
            Err(Failure::invalid(anyhow::Error::new(error)))
        }
        (Err(error), _) => Err(Failure::internal(anyhow::Error::new(error))),
    }
}
