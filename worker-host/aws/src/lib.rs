//! Sluice's worker on AWS: a dispatch payload run by the worker host (`sluice-worker`)
//! through the presigned URLs it carries, as a Lambda function or a CodeBuild build.
//!
//! The worker holds no AWS credentials and loads no AWS configuration: everything an
//! attempt touches — its bundle, its claim, its log, its result, a build's ticket — is one
//! presigned URL minted by the orchestrator for that one object. So this crate links
//! neither the engine nor the AWS SDK: an HTTP client ([`transfer`]), age for a build's
//! ticket ([`ticket`]), and the Lambda runtime.
//!
//! # Brief overview
//!
//! - [`transfer`]: [`HttpTransfer`], the worker host's I/O over presigned URLs (bounded
//!   ranged GETs, conditional PUTs, streamed log uploads), transient failures told apart.
//! - [`ticket`]: how a CodeBuild worker redeems the ticket its dispatcher issued.
//! - [`settings`]: the worker's settings from its environment.
//!
//! The `worker` binary (`src/bin/worker.rs`) is the Lambda function's handler and, with
//! `--from-env`, the CodeBuild entrypoint (`worker-host/entrypoint.sh`).
#![warn(missing_docs)]

pub mod settings;
pub mod ticket;
pub mod transfer;

pub use transfer::HttpTransfer;
