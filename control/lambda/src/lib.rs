//! What every Sluice Lambda binary shares, the control plane's (`sluice-aws`) and the
//! worker's (`sluice-worker-aws`): JSON log lines that never print an event, and the count
//! of AWS calls a process made.
//!
//! A crate of its own so the worker, which must not link the engine or the AWS SDK, and
//! the control-plane functions, which must not link the worker host, log the same way.
#![warn(missing_docs)]

pub mod calls;

pub use calls::CallCounter;

/// JSON log lines on stdout (CloudWatch), filtered by `SLUICE_LOG` (default `info`); spans
/// carry `run_id` and `order_num`. The Lambda runtime's own logs stop at `info` whatever
/// `SLUICE_LOG` says: below that it logs whole events, and a worker's event holds its
/// presigned URLs and its order's identity (a submission's, the job with its variables).
pub fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer, filter};
    let wanted = EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let runtime_at_most_info = filter::filter_fn(|metadata| {
        !metadata.target().starts_with("lambda_runtime")
            || *metadata.level() <= tracing::Level::INFO
    });
    let lines = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .without_time()
        .with_filter(wanted)
        .with_filter(runtime_at_most_info);
    tracing_subscriber::registry().with(lines).init();
}
