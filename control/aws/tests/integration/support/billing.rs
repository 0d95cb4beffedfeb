//! What a run costs on AWS: the calls, request units and Lambda time the pump counted,
//! priced at AWS's published on-demand prices.
//!
//! The pump times every function invocation it plays (init-job, the orchestrator's S3
//! events, the watch's checks, each worker) and counts the watch's state transitions; the
//! adapters count the calls and DynamoDB's request units. [`Bill::of`] prices them with
//! the memory each function has in `infra/template.yaml`. Lambda time is measured here,
//! against moto on this machine, so it stands for what the functions do rather than for
//! AWS's own latency; every other line is exact for the calls made.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use sluice_aws::CallCounter;
use sluice_aws::capacity::{READ_UNITS, WRITE_UNITS};

/// us-east-1 on-demand prices, US dollars, as AWS publishes them (2025; x86_64 Lambdas,
/// S3 Standard, DynamoDB on-demand, Step Functions standard workflows). Free tiers are
/// left out: they are per account, not per order.
mod price {
    /// Per request of any function.
    pub const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
    /// Per GB-second of a function's memory while it runs (x86_64; arm64 is 20 % less).
    pub const LAMBDA_GB_SECOND: f64 = 0.000_016_666_7;
    /// PUT, COPY, POST and LIST requests.
    pub const S3_WRITE_OR_LIST: f64 = 0.005 / 1e3;
    /// GET, HEAD and the other reads (DELETE is free).
    pub const S3_READ: f64 = 0.0004 / 1e3;
    pub const DYNAMODB_WRITE_UNIT: f64 = 0.625 / 1e6;
    pub const DYNAMODB_READ_UNIT: f64 = 0.125 / 1e6;
    pub const SFN_TRANSITION: f64 = 0.025 / 1e3;
    /// Parameter Store's standard API is free; a SecureString read or written costs a KMS
    /// request.
    pub const KMS_REQUEST: f64 = 0.03 / 1e4;
    pub const SECRETS_MANAGER_CALL: f64 = 0.05 / 1e4;
}

/// Each state of the watch's loop (Check, Done, then Wait or Finished) is a transition:
/// three per check.
pub const TRANSITIONS_PER_CHECK: u64 = 3;

/// And each execution starts with two before its first check (Start, the first Wait).
pub const TRANSITIONS_PER_WATCH: u64 = 2;

/// The functions the pump plays, as the template names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Function {
    InitJob,
    Orchestrator,
    WatchdogCheck,
    Worker,
    Compile,
}

impl Function {
    pub const ALL: [Function; 5] = [
        Function::InitJob,
        Function::Orchestrator,
        Function::WatchdogCheck,
        Function::Worker,
        Function::Compile,
    ];

    /// Its resource in `infra/template.yaml`.
    pub fn resource(self) -> &'static str {
        match self {
            Function::InitJob => "InitJobFunction",
            Function::Orchestrator => "OrchestratorFunction",
            Function::WatchdogCheck => "WatchdogCheckFunction",
            Function::Worker => "WorkerFunction",
            Function::Compile => "CompileFunction",
        }
    }
}

/// Invocations and their time, by function. Shared by the pump's tasks.
#[derive(Debug, Default)]
pub struct LambdaTime(Mutex<BTreeMap<Function, (u64, Duration)>>);

impl LambdaTime {
    /// Records one invocation of `function` that ran for `took` (billed by the started ms).
    pub fn record(&self, function: Function, took: Duration) {
        let billed = Duration::from_millis(took.as_micros().div_ceil(1000) as u64);
        let mut all = self.0.lock().unwrap();
        let entry = all.entry(function).or_default();
        entry.0 += 1;
        entry.1 += billed;
    }

    /// Invocations of `function`, and their billed time.
    pub fn of(&self, function: Function) -> (u64, Duration) {
        self.0
            .lock()
            .unwrap()
            .get(&function)
            .copied()
            .unwrap_or_default()
    }

    pub fn reset(&self) {
        self.0.lock().unwrap().clear();
    }
}

/// Dollars, by service.
#[derive(Debug, Default)]
pub struct Bill(pub BTreeMap<&'static str, f64>);

impl Bill {
    /// Prices `calls` (with their units), and `lambda`'s invocations with each function's
    /// memory in MB (`memory_mb`); each watchdog-check is one check of a run's watch.
    pub fn of(
        calls: &CallCounter,
        lambda: &LambdaTime,
        memory_mb: impl Fn(Function) -> u64,
    ) -> Bill {
        let mut bill = Bill::default();
        for ((service, operation), n) in calls.snapshot() {
            let each = match (service, operation) {
                ("s3", "GetObject" | "HeadObject") => price::S3_READ,
                ("s3", "DeleteObject" | "DeleteObjects") => 0.0,
                ("s3", _) => price::S3_WRITE_OR_LIST,
                // Written and read decrypted; listing names to delete decrypts nothing.
                ("ssm", "PutParameter" | "GetParameter") => price::KMS_REQUEST,
                ("secretsmanager", _) => price::SECRETS_MANAGER_CALL,
                // DynamoDB bills units (below), Lambda its functions' requests and time,
                // Step Functions its transitions; starting or describing is free.
                _ => 0.0,
            };
            bill.add(service, each * n as f64);
        }
        let units = calls.units();
        let unit = |name| units.get(&("dynamodb", name)).copied().unwrap_or_default() as f64;
        bill.add(
            "dynamodb",
            unit(WRITE_UNITS) * price::DYNAMODB_WRITE_UNIT
                + unit(READ_UNITS) * price::DYNAMODB_READ_UNIT,
        );
        for function in Function::ALL {
            let (invocations, took) = lambda.of(function);
            let gb_seconds = memory_mb(function) as f64 / 1024.0 * took.as_secs_f64();
            bill.add(
                "lambda",
                invocations as f64 * price::LAMBDA_REQUEST + gb_seconds * price::LAMBDA_GB_SECOND,
            );
        }
        let (checks, _) = lambda.of(Function::WatchdogCheck);
        let watches = (calls.snapshot())
            .get(&("sfn", "StartExecution"))
            .copied()
            .unwrap_or_default();
        let transitions = watches * TRANSITIONS_PER_WATCH + checks * TRANSITIONS_PER_CHECK;
        bill.add("sfn", transitions as f64 * price::SFN_TRANSITION);
        bill
    }

    fn add(&mut self, service: &'static str, dollars: f64) {
        *self.0.entry(service).or_default() += dollars;
    }

    pub fn total(&self) -> f64 {
        self.0.values().sum()
    }

    /// The same bill for 1000 orders, from a run of `orders`.
    pub fn per_1000(&self, orders: usize) -> Bill {
        let scale = 1000.0 / orders as f64;
        Bill(self.0.iter().map(|(s, d)| (*s, d * scale)).collect())
    }
}

impl fmt::Display for Bill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (service, dollars) in &self.0 {
            write!(f, "{service} ${dollars:.5}, ")?;
        }
        write!(f, "total ${:.5}", self.total())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bill_prices_calls_units_time_and_transitions() {
        let calls = CallCounter::default();
        for _ in 0..1000 {
            calls.count("s3", "PutObject");
            calls.count("s3", "GetObject");
            calls.count("s3", "DeleteObject");
        }
        calls.count("sfn", "StartExecution");
        calls.add_units("dynamodb", WRITE_UNITS, 1_000_000);
        calls.add_units("dynamodb", READ_UNITS, 1_000_000);
        let lambda = LambdaTime::default();
        // 1 GB for 1 s, twice; billed by the started millisecond.
        lambda.record(Function::Worker, Duration::from_micros(999_001));
        lambda.record(Function::Worker, Duration::from_secs(1));
        for _ in 0..1000 {
            lambda.record(Function::WatchdogCheck, Duration::ZERO);
        }
        let bill = Bill::of(&calls, &lambda, |_| 1024);
        let near = |service: &str, dollars: f64| {
            let billed = bill.0[service];
            assert!(
                (billed - dollars).abs() < 1e-9,
                "{service}: {billed} for {dollars}"
            );
        };
        near("s3", 0.005 + 0.0004);
        near("dynamodb", 0.625 + 0.125);
        near("lambda", 1002.0 * 0.2e-6 + 2.0 * 0.000_016_666_7);
        near("sfn", (3000.0 + 2.0) * 0.000_025);
        let per_1000 = bill.per_1000(10);
        assert!((per_1000.total() - 100.0 * bill.total()).abs() < 1e-9);
    }
}
