//! Sluice's AWS backends: the engine's ports over the real AWS SDK clients.
//!
//! The engine (`sluice-engine`) knows nothing of AWS; this crate gives it S3 buckets and
//! DynamoDB tables with the same guarantees as the local backends, proven by the same
//! conformance suites run against moto server (a real HTTP endpoint speaking the AWS
//! protocols). It is a separate crate so the local engine builds without the AWS SDK.
//!
//! # Brief overview
//!
//! - [`settings`]: the `SLUICE_*` configuration, parsed once, every missing variable named.
//! - [`client`]: submitting a job to a deployment (`sluice submit`).
//! - [`clients`]: SDK clients built once per process from the standard AWS configuration
//!   (`AWS_ENDPOINT_URL` points them at moto in tests).
//! - [`s3`]: [`S3Store`], an object store over one bucket (conditional puts with
//!   `If-None-Match`, presigned GETs, PUTs and DELETEs, paginated lists).
//! - [`dynamo`]: [`DynamoOrderStore`], the orders, order_events and locks tables with every
//!   status change and lock operation a conditional write; [`schema`] names their keys.
//! - [`keys`]: [`keys::SsmKeyStore`], per-order private keys as SSM SecureStrings, read
//!   by the orchestrator for each dispatch.
//! - [`secrets`]: [`secrets::AwsSecretSource`], the credentials orders list, from SSM and
//!   Secrets Manager.
//! - [`dispatch`]: workers started on Lambda (async invoke) or CodeBuild (with a
//!   [`ticket`]), and the Step Functions watchdog of each attempt.
//! - [`wiring`]: [`wiring::aws_engine`], the engine with every port bound to AWS.
//! - [`handlers`]: what the init-job and watchdog-check functions do with their events.
//! - [`s3_events`]: the orchestrator's handling of S3 notifications (one pass per run).
//! - [`runtime`]: a cold start: JSON logs, settings, clients, engine.
//! - [`calls`]: a per-service, per-operation call counter shared by the adapters (and the
//!   worker's transfers: it is `sluice-lambda`'s), so a test or a log line can show how many
//!   AWS calls a run made.
//!
//! The worker Lambda is not here: it is `sluice-worker-aws`, which links neither this crate
//! nor the engine.

pub use sluice_lambda::calls;
pub mod capacity;
pub mod client;
pub mod clients;
pub mod dispatch;
pub mod dynamo;
pub mod handlers;
pub mod keys;
pub mod runtime;
pub mod s3;
pub mod s3_events;
pub mod schema;
mod sdk_error;
pub mod secrets;
pub mod settings;
pub mod ticket;
pub mod wiring;

pub use calls::CallCounter;
pub use dynamo::DynamoOrderStore;
pub use s3::S3Store;
pub use settings::AwsSettings;
