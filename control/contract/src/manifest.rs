//! `order.json`: what a worker is told to run.
//!
//! It travels inside the order's bundle next to the encrypted env. It holds no secret
//! values: the env is in `env.json.age`, and the names of its variables in `env_vars.env`.

use serde::{Deserialize, Serialize};

use crate::ids::{OrderNum, RunId, TraceId};
use crate::job::{SandboxSpec, WasmSpec};

/// File name of the manifest inside a bundle.
pub const MANIFEST_FILE: &str = "order.json";
/// File name of the encrypted env inside a bundle.
pub const ENV_FILE: &str = "env.json.age";
/// File name of the list of env variable names inside a bundle.
pub const ENV_NAMES_FILE: &str = "env_vars.env";
/// File name of the list of variable names that came from secret stores.
pub const SECRET_NAMES_FILE: &str = "secrets.src";
/// Folder of the bundle that holds the order's code.
pub const CODE_DIR: &str = "code";

/// What to run: shell commands or a WebAssembly module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Commands run with `sh -c`, one after the other, stopping at the first failure.
    Cmds(Vec<String>),
    /// A WebAssembly module.
    Wasm(WasmSpec),
}

/// The manifest of one order's bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderManifest {
    /// `v1`.
    pub schema_version: String,
    /// The run.
    pub run_id: RunId,
    /// The run's trace id.
    pub trace_id: TraceId,
    /// The run's flow id.
    pub flow_id: String,
    /// The order.
    pub order_num: OrderNum,
    /// The order's name.
    pub order_name: String,
    /// Seconds the order may run.
    pub timeout: u64,
    /// What to run.
    pub task: Task,
    /// Where the full log goes.
    pub log_key: String,
    /// What the order's sandbox grants it, when its job says (shell orders, run locally).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxSpec>,
}
