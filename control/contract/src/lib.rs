//! The wire contract shared by Sluice's control plane and its workers.
//!
//! Everything that crosses a process or machine boundary is defined here, as plain serde
//! types with no runtime attached (no tokio, no AWS SDK), so that the engine, the worker
//! host, the Lambda binaries and any external tool agree on one definition.
//!
//! # Brief overview
//!
//! - [`job`]: the job payload ([`JobSpec`], [`OrderSpec`]) exactly as users write it; unknown
//!   fields are rejected with the field's path ([`parse_job`]).
//! - [`validate`]: every rule a job must satisfy, checked fail-fast into a [`ValidJob`] whose
//!   orders have their numbers, names, queue ids and resolved dependencies.
//! - [`ids`]: run, trace, flow and attempt ids, order numbers.
//! - [`condition`]: `depends` expressions (conditional dependencies).
//! - [`retries`]: an order's retry policy and its delays.
//! - [`status`]: order and job statuses, the allowed transitions, the job-status rule.
//! - [`keys`]: the storage layout (same keys in S3 and the local store).
//! - [`manifest`]: `order.json`, what a worker is told to run.
//! - [`outputs`]: what an order publishes for later orders, and the inputs that take it.
//! - [`plan`]: the fields of an order that validation settles and its stored row keeps.
//! - [`paths`]: what stays inside a code root (shared by packer and unpacker).
//! - [`repo_url`]: what a `git_repo` may be, and the host a credential would go to.
//! - [`result`]: `result.json` v1 (tolerant reader) and the done document.
//! - [`events`]: events an order emits about itself, carried back in its result.
//! - [`cancel`]: a request to cancel a run (who, when).
//! - [`caller`]: who submitted a job, as the deployment authenticated them.
//! - [`credentials`]: credential locations and how their values become variables.
//! - [`dispatch`]: the payload a dispatcher hands to a worker.
//! - [`exit_codes`]: the CLI's documented exit codes.
//!
//! # Example
//!
//! ```
//! use sluice_contract::{parse_job, validate::validate, ValidateOptions};
//!
//! let job = parse_job(br#"{"orders": [
//!     {"cmds": ["echo build"], "timeout": 60, "order_name": "build"},
//!     {"cmds": ["echo test"], "timeout": 60, "dependencies": ["build"]}
//! ]}"#).unwrap();
//! let valid = validate(&job, &ValidateOptions::local("alice")).unwrap();
//! assert_eq!(valid.orders[1].plan.order_name, "order-2");
//! assert_eq!(valid.orders[1].plan.depends_on, vec![valid.orders[0].plan.order_num]);
//! ```
#![warn(missing_docs)]

pub mod caller;
pub mod cancel;
pub mod condition;
pub mod credentials;
pub mod dispatch;
pub mod events;
pub mod exit_codes;
pub mod ids;
pub mod job;
pub mod keys;
pub mod manifest;
pub mod outputs;
pub mod paths;
pub mod plan;
pub mod repo_url;
pub mod result;
pub mod retries;
pub mod status;
pub mod validate;

pub use ids::{AttemptId, OrderNum, RunId, TraceId};
pub use job::{ExecutionTarget, JobSpec, OrderSpec, ParseError, SandboxSpec, parse_job};
pub use plan::OrderPlan;
pub use status::{JobStatus, OrderStatus};
pub use validate::{ValidJob, ValidOrder, ValidateOptions, ValidationError};
