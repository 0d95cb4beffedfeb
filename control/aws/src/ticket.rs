//! The CodeBuild worker's ticket: how a dispatch reaches a build without being readable
//! from the build's record or obtainable with the build's role.
//!
//! A dispatch (its presigned URLs and the order's identity) may not go into StartBuild's
//! environment overrides as it is: those are shown to anyone who may read the build
//! (`BatchGetBuilds`) and recorded by CloudTrail. Nor may the build's role be allowed to
//! fetch it: on CodeBuild the role's credentials are within reach of the orders the build
//! runs. So each start of a build gets a ticket, in two halves that are worth nothing
//! apart:
//!
//! 1. the payload, encrypted to a fresh age identity, at
//!    `tmp/tickets/<run_id>/<order_num>/<attempt>-<nonce>.age`, which the build reaches
//!    through a presigned GET (and DELETE) in its plaintext environment — the build's role
//!    may read nothing in the bucket;
//! 2. the identity, in an SSM SecureString named with the same nonce, given to the build
//!    as a `PARAMETER_STORE` variable, which CodeBuild resolves when the build starts — the
//!    build's record shows only the name. The role may read such ticket keys (CodeBuild
//!    resolves them with it), none of the orders' own keys, and cannot list them: an order
//!    that took the role would need a name only another build's record holds, and then the
//!    URL in that record too.
//!
//! The worker reads the ticket, decrypts it, checks it is for the build's attempt, and
//! deletes it. A ticket never redeemed expires with the bucket's `tmp/` lifecycle rule, and
//! its key is deleted with the run's keys at finalize. Each start gets its own ticket, so a
//! start tried again after an answer was lost never spoils the first build's ticket; the
//! second build, if there is one, finds the attempt claimed and stops.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use age::secrecy::ExposeSecret;
use aws_sdk_codebuild::types::EnvironmentVariableType;
use sluice_contract::dispatch::{Capability, DispatchPayload};
use sluice_contract::{OrderNum, RunId};
use sluice_ports::ObjectStore;
use sluice_ports::Presigned;
use sluice_ports::StoreError;
use sluice_worker::retry::{self, RetryPolicy};
use sluice_worker::{IoError, WorkerIo};

use crate::keys::SsmKeyStore;
use crate::transfer::HttpTransfer;

/// The variable holding the presigned GET of the ticket.
pub const TICKET_URL: &str = "SLUICE_TICKET_URL";
/// The variable holding the presigned DELETE of the ticket.
pub const TICKET_DELETE_URL: &str = "SLUICE_TICKET_DELETE_URL";
/// The variable holding the age identity the ticket is encrypted to (resolved by CodeBuild
/// from the SSM parameter the build is given).
pub const TICKET_KEY: &str = "SLUICE_TICKET_KEY";

/// Most bytes of a ticket read (a payload is a few KiB of URLs).
const MAX_TICKET_BYTES: u64 = 256 << 10;

/// How long the worker keeps trying to fetch its ticket through passing failures.
const FETCH_PATIENCE: Duration = Duration::from_secs(60);

/// Where the ticket `name` (`<attempt>-<nonce>`) of an order is stored.
pub fn ticket_key(run_id: &RunId, order_num: OrderNum, name: &str) -> String {
    format!("tmp/tickets/{run_id}/{order_num}/{name}.age")
}

/// A ticket could not be issued or redeemed.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    /// Storing the ticket or its key, or presigning its URLs, failed.
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
    pub fn kind(&self) -> sluice_ports::ErrorKind {
        match self {
            TicketError::Store(e) => e.kind(),
            TicketError::Fetch(e) if e.transient => sluice_ports::ErrorKind::Transient,
            _ => sluice_ports::ErrorKind::Permanent,
        }
    }
}

fn unreadable(what: &'static str) -> impl Fn(String) -> TicketError {
    move |message| TicketError::Unreadable { what, message }
}

/// One variable of a build's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildVariable {
    /// Its name.
    pub name: &'static str,
    /// Its value (for a parameter: the parameter's name).
    pub value: String,
    /// Plain text, or an SSM parameter CodeBuild resolves at the build's start.
    pub kind: EnvironmentVariableType,
}

/// Where tickets are kept: the ciphertexts in the internal bucket, their keys in SSM.
#[derive(Debug, Clone)]
pub struct Tickets {
    store: Arc<dyn ObjectStore>,
    keys: SsmKeyStore,
}

impl Tickets {
    /// Tickets in `store` (the internal bucket), their keys in `keys`.
    pub fn new(store: Arc<dyn ObjectStore>, keys: SsmKeyStore) -> Self {
        Tickets { store, keys }
    }

    /// Stores a new ticket for `payload` and returns the build's environment: the ticket's
    /// URLs (living `expiry`), its key's parameter, and the attempt's ids.
    ///
    /// # Errors
    ///
    /// [`TicketError::Store`] when the ticket or its key cannot be stored or its URLs
    /// signed.
    pub async fn issue(
        &self,
        payload: &DispatchPayload,
        expiry: Duration,
    ) -> Result<Vec<BuildVariable>, TicketError> {
        let identity = age::x25519::Identity::generate();
        let plaintext =
            serde_json::to_vec(payload).map_err(|e| unreadable("payload")(e.to_string()))?;
        let ciphertext = age::encrypt(&identity.to_public(), &plaintext)
            .map_err(|e| unreadable("cannot be encrypted")(e.to_string()))?;
        let name = format!("{}-{}", payload.attempt, uuid::Uuid::new_v4().simple());
        let (run_id, order_num) = (&payload.run_id, payload.order_num);
        let key = ticket_key(run_id, order_num, &name);
        self.store.put(&key, ciphertext).await?;
        let parameter = (self.keys)
            .put_ticket_key(
                run_id,
                order_num,
                &name,
                identity.to_string().expose_secret(),
            )
            .await?;
        let plain = |name, value| BuildVariable {
            name,
            value,
            kind: EnvironmentVariableType::Plaintext,
        };
        Ok(vec![
            plain(
                TICKET_URL,
                self.store.presign(Presigned::Get, &key, expiry).await?,
            ),
            plain(
                TICKET_DELETE_URL,
                self.store.presign(Presigned::Delete, &key, expiry).await?,
            ),
            BuildVariable {
                name: TICKET_KEY,
                value: parameter,
                kind: EnvironmentVariableType::ParameterStore,
            },
            plain("SLUICE_RUN_ID", run_id.to_string()),
            plain("SLUICE_ORDER_NUM", order_num.to_string()),
            plain("SLUICE_ATTEMPT", payload.attempt.clone()),
        ])
    }
}

/// The payload of the ticket the build's environment (read through `lookup`) names:
/// fetched (tried again through passing failures), decrypted, checked against the build's
/// ids, and deleted.
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
    let patience = tokio::time::Instant::now() + FETCH_PATIENCE;
    let ciphertext = retry::while_transient(RetryPolicy::default(), patience, || {
        transfer.get(&get, MAX_TICKET_BYTES)
    })
    .await?;
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
    // Redeemed: the URLs in the build's record now open nothing. A failed delete costs
    // only that (the bucket's lifecycle rule removes it later), not the order.
    if let Err(error) = transfer.delete(&delete).await {
        tracing::warn!(%error, "the ticket could not be deleted; it expires with tmp/");
    }
    Ok(payload)
}
