//! What a run knows of an order once it is validated.
//!
//! The validator settles these fields ([`crate::ValidOrder`]) and every stored order row
//! keeps them unchanged for the run's life (the ports' `OrderRecord` flattens this struct,
//! so the row's attribute names are these field names). One definition means a field added
//! here reaches the graph, the stores and the dispatcher together.

use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::job::SandboxSpec;
use crate::outputs::Input;
use crate::retries::RetryPolicy;
use crate::{ExecutionTarget, OrderNum};

/// An order's identity, its place in the graph and how it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlan {
    /// Its number (1-based position in the job).
    pub order_num: OrderNum,
    /// Its name (default `order-<n>`).
    pub order_name: String,
    /// Its queue id (normalised).
    pub queue_id: String,
    /// The orders it waits for, sorted, without repeats: its `dependencies`, or every
    /// order its `depends` condition names.
    pub depends_on: Vec<OrderNum>,
    /// Its `depends` condition: it runs only if this holds once the orders it names have
    /// ended, else it is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
    /// The outputs of earlier orders it takes as variables, sorted by variable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<Input>,
    /// Whether its outcome decides the job.
    pub must_succeed: bool,
    /// Its retry policy, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Seconds it may run.
    pub timeout: u64,
    /// Where it runs on AWS.
    pub execution_target: ExecutionTarget,
    /// What a shell order's sandbox grants it (`sluice run`), checked and normalised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxSpec>,
}
