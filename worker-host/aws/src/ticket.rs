//! Redeeming a CodeBuild worker's ticket: the dispatch payload, fetched through the
//! presigned GET in the build's environment, decrypted with the identity CodeBuild resolved
//! from the ticket's SSM parameter, checked against the build's ids, then deleted.
//!
//! Why a build gets a ticket rather than its payload, and how the dispatcher issues one:
//! `sluice_aws::ticket`. The names both sides use: [`sluice_contract::dispatch::ticket`].

use std::str::FromStr;
use std::time::Duration;

use sluice_contract::dispatch::{Capability, DispatchPayload, ticket};
use sluice_contract::{AttemptId, OrderNum, RunId};
use sluice_worker::retry::{self, RetryPolicy};
use sluice_worker::{IoError, WorkerIo};

use crate::transfer::HttpTransfer;

/// Most bytes of a ticket read (a payload is a few KiB of URLs).
const MAX_TICKET_BYTES: u64 = 256 << 10;

/// How long the worker keeps trying to fetch its ticket through passing failures.
const FETCH_PATIENCE: Duration = Duration::from_secs(60);

/// A ticket could not be redeemed.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    /// The build's environment lacks a variable.
    #[error("the worker's environment has no {0}: was it started by Sluice's dispatcher?")]
    Missing(&'static str),
    /// Fetching the ticket failed.
    #[error("fetching the ticket: {0}")]
    Fetch(#[from] IoError),
    /// The ticket does not open with the key given, or does not hold a payload.
    #[error("the ticket {what}: {message}")]
    Unreadable {
        /// What is wrong with it.
        what: &'static str,
        /// The cause.
        message: String,
    },
    /// The payload is for another attempt than the build says.
    #[error("the ticket is for run {run_id} order {order_num} attempt {attempt}, not the build's")]
    Mismatch {
        /// The ticket's run.
        run_id: RunId,
        /// The ticket's order.
        order_num: OrderNum,
        /// The ticket's attempt.
        attempt: AttemptId,
    },
}

fn unreadable(what: &'static str) -> impl Fn(String) -> RedeemError {
    move |message| RedeemError::Unreadable { what, message }
}

/// The payload of the ticket the build's environment (read through `lookup`) names:
/// fetched (tried again through passing failures), decrypted, checked against the build's
/// ids, and deleted.
///
/// # Errors
///
/// A [`RedeemError`] saying which step failed.
pub async fn redeem(
    lookup: impl Fn(&str) -> Option<String>,
    transfer: &HttpTransfer,
) -> Result<DispatchPayload, RedeemError> {
    let var = |name: &'static str| lookup(name).ok_or(RedeemError::Missing(name));
    let get = Capability::new(var(ticket::URL)?);
    let delete = Capability::new(var(ticket::DELETE_URL)?);
    let identity = age::x25519::Identity::from_str(var(ticket::KEY)?.trim())
        .map_err(|e| unreadable("key is not an age identity")(e.to_string()))?;
    let patience = tokio::time::Instant::now() + FETCH_PATIENCE;
    let ciphertext = retry::while_transient(RetryPolicy::default(), patience, || {
        transfer.get(&get, MAX_TICKET_BYTES)
    })
    .await?;
    let plaintext = age::decrypt(&identity, &ciphertext)
        .map_err(|e| unreadable("cannot be decrypted with the build's key")(e.to_string()))?;
    let payload: DispatchPayload = serde_json::from_slice(&plaintext)
        .map_err(|e| unreadable("holds no dispatch payload")(e.to_string()))?;
    let matches = lookup(ticket::RUN_ID).as_deref() == Some(payload.run_id.as_str())
        && lookup(ticket::ORDER_NUM) == Some(payload.order_num.to_string())
        && lookup(ticket::ATTEMPT).as_deref() == Some(payload.attempt.as_str());
    if !matches {
        return Err(RedeemError::Mismatch {
            run_id: payload.run_id,
            order_num: payload.order_num,
            attempt: payload.attempt,
        });
    }
    // Redeemed: the URLs in the build's record now open nothing. A failed delete costs
    // only that (the bucket's lifecycle rule removes it later), not the order.
    if let Err(error) = transfer.delete(&delete).await {
        tracing::warn!(%error, "the ticket could not be deleted; it expires with tmp/");
    }
    Ok(payload)
}
