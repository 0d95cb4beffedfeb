//! The CodeBuild worker's ticket: how a dispatch reaches a build without being readable
//! from the build's record or obtainable with the build's role.
//!
//! A dispatch (its presigned URLs and the order's identity) may not go into StartBuild's
//! environment overrides as it is: those are shown to anyone who may read the build
//! (`BatchGetBuilds`) and recorded by CloudTrail. Nor may the build's role be allowed to
//! fetch it: on CodeBuild the role's credentials are within reach of the orders the build
//! runs, so the role holds no data permission at all. So the dispatcher
//!
//! 1. encrypts the payload to a fresh age identity and stores the ciphertext at
//!    `tmp/tickets/<run_id>/<order_num>/<attempt>.age`;
//! 2. hands the build a presigned GET and a presigned DELETE of that object, and the
//!    identity (plus the run, order and attempt, in plain sight, for whoever reads the
//!    build);
//!
//! and the worker reads the ticket, deletes it, and decrypts it. From then on the values in
//! the build's record open nothing, and the object alone (for someone with bucket access)
//! was ciphertext. A ticket the worker never redeemed expires with the bucket's `tmp/`
//! lifecycle rule.

use std::str::FromStr;
use std::time::Duration;

use age::secrecy::ExposeSecret;
use sluice_contract::dispatch::{Capability, DispatchPayload};
use sluice_contract::{OrderNum, RunId};
use sluice_engine::ObjectStore;
use sluice_engine::error::StoreError;
use sluice_engine::ports::Presigned;
use sluice_worker::{IoError, WorkerIo};

use crate::transfer::HttpTransfer;

/// The variable holding the presigned GET of the ticket.
pub const TICKET_URL: &str = "SLUICE_TICKET_URL";
/// The variable holding the presigned DELETE of the ticket.
pub const TICKET_DELETE_URL: &str = "SLUICE_TICKET_DELETE_URL";
/// The variable holding the age identity the ticket is encrypted to.
pub const TICKET_KEY: &str = "SLUICE_TICKET_KEY";

/// Most bytes of a ticket read (a payload is a few KiB of URLs).
const MAX_TICKET_BYTES: u64 = 256 << 10;

/// Where an attempt's ticket is stored.
pub fn ticket_key(run_id: &RunId, order_num: OrderNum, attempt: &str) -> String {
    format!("tmp/tickets/{run_id}/{order_num}/{attempt}.age")
}

/// A ticket could not be issued or redeemed.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    /// Storing the ticket or presigning its URLs failed.
    #[error("issuing the ticket: {0}")]
    Store(#[from] StoreError),
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
        attempt: String,
    },
}

impl TicketError {
    /// Whether issuing again may succeed (a throttled or failing store).
    pub fn kind(&self) -> sluice_engine::ErrorKind {
        match self {
            TicketError::Store(e) => e.kind(),
            TicketError::Fetch(e) if e.transient => sluice_engine::ErrorKind::Transient,
            _ => sluice_engine::ErrorKind::Permanent,
        }
    }
}

fn unreadable(what: &'static str) -> impl Fn(String) -> TicketError {
    move |message| TicketError::Unreadable { what, message }
}

/// Stores `payload` as an attempt's ticket in `internal` and returns the build's
/// environment: the ticket's URLs (living `expiry`) and key, and the attempt's ids.
///
/// # Errors
///
/// [`TicketError::Store`] when the ticket cannot be stored or its URLs signed.
pub async fn issue(
    internal: &dyn ObjectStore,
    payload: &DispatchPayload,
    expiry: Duration,
) -> Result<Vec<(&'static str, String)>, TicketError> {
    let identity = age::x25519::Identity::generate();
    let plaintext =
        serde_json::to_vec(payload).map_err(|e| unreadable("payload")(e.to_string()))?;
    let ciphertext = age::encrypt(&identity.to_public(), &plaintext)
        .map_err(|e| unreadable("cannot be encrypted")(e.to_string()))?;
    let key = ticket_key(&payload.run_id, payload.order_num, &payload.attempt);
    internal.put(&key, ciphertext).await?;
    let get = internal.presign(Presigned::Get, &key, expiry).await?;
    let delete = internal.presign(Presigned::Delete, &key, expiry).await?;
    Ok(vec![
        (TICKET_URL, get),
        (TICKET_DELETE_URL, delete),
        (TICKET_KEY, identity.to_string().expose_secret().to_owned()),
        ("SLUICE_RUN_ID", payload.run_id.to_string()),
        ("SLUICE_ORDER_NUM", payload.order_num.to_string()),
        ("SLUICE_ATTEMPT", payload.attempt.clone()),
    ])
}

/// The payload of the ticket the build's environment (read through `lookup`) names:
/// fetched, deleted, decrypted and checked against the build's ids.
///
/// # Errors
///
/// A [`TicketError`] saying which step failed.
pub async fn redeem(
    lookup: impl Fn(&str) -> Option<String>,
    transfer: &HttpTransfer,
) -> Result<DispatchPayload, TicketError> {
    let var = |name: &'static str| lookup(name).ok_or(TicketError::Missing(name));
    let get = Capability::new(var(TICKET_URL)?);
    let delete = Capability::new(var(TICKET_DELETE_URL)?);
    let identity = age::x25519::Identity::from_str(var(TICKET_KEY)?.trim())
        .map_err(|e| unreadable("key is not an age identity")(e.to_string()))?;
    let ciphertext = transfer.get(&get, MAX_TICKET_BYTES).await?;
    // Once read, the ticket goes: the build's record then opens nothing. A failed delete
    // costs only that (the bucket's lifecycle rule removes it later), not the order.
    if let Err(error) = transfer.delete(&delete).await {
        tracing::warn!(%error, "the ticket could not be deleted; it expires with tmp/");
    }
    let plaintext = age::decrypt(&identity, &ciphertext)
        .map_err(|e| unreadable("cannot be decrypted with the build's key")(e.to_string()))?;
    let payload: DispatchPayload = serde_json::from_slice(&plaintext)
        .map_err(|e| unreadable("holds no dispatch payload")(e.to_string()))?;
    let matches = lookup("SLUICE_RUN_ID").as_deref() == Some(payload.run_id.as_str())
        && lookup("SLUICE_ORDER_NUM") == Some(payload.order_num.to_string())
        && lookup("SLUICE_ATTEMPT").as_deref() == Some(payload.attempt.as_str());
    if !matches {
        return Err(TicketError::Mismatch {
            run_id: payload.run_id,
            order_num: payload.order_num,
            attempt: payload.attempt,
        });
    }
    Ok(payload)
}
