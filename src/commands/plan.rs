//! A job's plan, printed by `sluice validate --plan` and `sluice run --dry-run`: the
//! orders in waves, each with what it runs, what it waits for and what it takes from the
//! orders before it.
//!
//! A wave holds the orders whose dependencies all sit in earlier waves: the first starts at
//! once, and each order starts as soon as those it waits for have ended, so a wave's orders
//! can run at the same time and the number of waves is the length of the job's longest
//! chain. The plan says what may run together, not when: `--concurrency` and the time each
//! order takes decide that.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use sluice_contract::manifest::Task;
use sluice_contract::plan::OrderPlan;
use sluice_contract::retries::{RetryOn, RetryPolicy};
use sluice_contract::validate::{ValidJob, ValidOrder};

use crate::progress::terminal_safe;

/// Prints the plan on stdout: the verdict line and the plan as text, or the plan alone as
/// JSON. A reader that stops early (`| head`) ends the printing, not the process.
pub fn print(path: &Path, job: &ValidJob, verdict: &str, as_json: bool) {
    let out = match as_json {
        true => json(path, job) + "\n",
        false => format!("{verdict}{}", text(job)),
    };
    super::print_stdout(&out);
}

/// The plan as text, after the verdict line.
fn text(job: &ValidJob) -> String {
    let waves = job.waves();
    let mut out = format!(
        "plan: {} wave{}; a wave's orders can run at the same time, each once the orders it waits for have ended\n",
        waves.len(),
        if waves.len() == 1 { "" } else { "s" }
    );
    for (number, wave) in waves.iter().enumerate() {
        let _ = writeln!(out, "wave {}:", number + 1);
        for order in wave {
            describe(&mut out, order, job);
        }
    }
    out
}

/// One order of the plan: its number, name and limits; what it waits for; what it runs.
fn describe(out: &mut String, order: &ValidOrder, job: &ValidJob) {
    let plan = &order.plan;
    let mut facts = vec![
        format!("timeout {} s", plan.timeout),
        format!("{} on AWS", plan.execution_target),
    ];
    if !plan.must_succeed {
        facts.push("must_succeed false: its failure does not fail the job".to_owned());
    }
    let _ = writeln!(
        out,
        "  {} {} ({})",
        plan.order_num,
        terminal_safe(&plan.order_name),
        facts.join(", ")
    );
    if !plan.depends_on.is_empty() {
        let after: Vec<String> = plan
            .depends_on
            .iter()
            .filter_map(|num| num.index().and_then(|i| job.orders.get(i)))
            .map(|dep| {
                format!(
                    "{} {}",
                    dep.plan.order_num,
                    terminal_safe(&dep.plan.order_name)
                )
            })
            .collect();
        match &plan.condition {
            None => {
                let _ = writeln!(out, "      after {}", after.join(", "));
            }
            Some(condition) => {
                let _ = writeln!(
                    out,
                    "      after {}: runs if {}, else skipped",
                    after.join(", "),
                    terminal_safe(&condition.text)
                );
            }
        }
    }
    if let Some(retry) = &plan.retry {
        let _ = writeln!(out, "      retry: {}", describe_retry(retry));
    }
    if !plan.inputs.is_empty() {
        let inputs: Vec<String> = (plan.inputs.iter())
            .map(|input| {
                let (env, source) = (terminal_safe(&input.env), terminal_safe(&input.source));
                format!("{env} = {source}")
            })
            .collect();
        let _ = writeln!(out, "      inputs: {}", inputs.join(", "));
    }
    if let Some(sandbox) = &plan.sandbox {
        let granted = sandbox.to_string();
        let _ = writeln!(out, "      sandbox grants: {}", terminal_safe(&granted));
    }
    match &order.task {
        Task::Cmds(cmds) => {
            for cmd in cmds {
                for (i, line) in cmd.split('\n').enumerate() {
                    let prompt = if i == 0 { '$' } else { ' ' };
                    let _ = writeln!(out, "      {prompt} {}", terminal_safe(line));
                }
            }
        }
        Task::Wasm(wasm) => {
            let mut call = vec![terminal_safe(&wasm.module)];
            call.extend(wasm.args.iter().map(|arg| terminal_safe(arg)));
            let _ = writeln!(out, "      wasm {}", call.join(" "));
        }
    }
}

/// `up to 3 more attempts on failed (exit codes 75), timed_out; waiting 1 s, doubling to 300 s`.
fn describe_retry(retry: &RetryPolicy) -> String {
    let seconds = |ms: u64| format!("{} s", ms as f64 / 1000.0);
    let on: Vec<String> = (retry.on.iter())
        .map(|on| match on {
            RetryOn::Failed if !retry.exit_codes.is_empty() => {
                let codes: Vec<String> = retry.exit_codes.iter().map(i32::to_string).collect();
                format!("failed (exit codes {})", codes.join(", "))
            }
            RetryOn::Failed => "failed".to_owned(),
            RetryOn::TimedOut => "timed_out".to_owned(),
        })
        .collect();
    format!(
        "up to {} more attempt{} on {}; waiting {}, doubling to {}, jittered",
        retry.limit,
        if retry.limit == 1 { "" } else { "s" },
        on.join(", "),
        seconds(retry.backoff_ms),
        seconds(retry.max_backoff_ms)
    )
}

/// The plan as JSON: the job file, its number of orders, and its waves of orders, each
/// with its plan (`order_num`, `order_name`, `depends_on`, …) and its task (`cmds` or
/// `wasm`).
fn json(path: &Path, job: &ValidJob) -> String {
    #[derive(Serialize)]
    struct Plan<'a> {
        job: String,
        orders: usize,
        waves: Vec<Vec<PlannedOrder<'a>>>,
    }
    #[derive(Serialize)]
    struct PlannedOrder<'a> {
        #[serde(flatten)]
        plan: &'a OrderPlan,
        #[serde(flatten)]
        task: &'a Task,
    }
    let waves = job
        .waves()
        .into_iter()
        .map(|wave| {
            wave.into_iter()
                .map(|order| PlannedOrder {
                    plan: &order.plan,
                    task: &order.task,
                })
                .collect()
        })
        .collect();
    let plan = Plan {
        job: path.display().to_string(),
        orders: job.orders.len(),
        waves,
    };
    serde_json::to_string_pretty(&plan).expect("a plan serializes")
}
