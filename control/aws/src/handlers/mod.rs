//! What each Lambda function does with its event, as plain async functions over JSON so
//! tests feed them real event shapes without a Lambda runtime; the binaries in `src/bin/`
//! only wire these to `lambda_runtime`.

pub mod init_job;
pub mod watchdog;
