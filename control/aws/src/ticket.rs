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
//! deletes it (`sluice_worker_aws::ticket::redeem`). A ticket never redeemed expires with the bucket's `tmp/` lifecycle rule, and
//! its key is deleted with the run's keys at finalize. Each start gets its own ticket, so a
//! start tried again after an answer was lost never spoils the first build's ticket; the
//! second build, if there is one, finds the attempt claimed and stops.

use std::sync::Arc;
use std::time::Duration;

use age::secrecy::ExposeSecret;
use aws_sdk_codebuild::types::EnvironmentVariableType;
use sluice_contract::dispatch::{DispatchPayload, ticket};
use sluice_contract::{RunId, keys};
use sluice_ports::{ObjectStore, Presigned, StoreError};

use crate::keys::SsmKeyStore;

/// A ticket could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    /// Storing the ticket or its key, or presigning its URLs, failed.
    #[error("issuing the ticket: {0}")]
    Store(#[from] StoreError),
    /// The payload could not be serialized or encrypted.
    #[error("the ticket {what}: {message}")]
    Unsealable {
        /// What went wrong.
        what: &'static str,
        /// The cause.
        message: String,
    },
}

impl TicketError {
    /// Whether issuing again may succeed (a throttled or failing store).
    pub fn kind(&self) -> sluice_ports::ErrorKind {
        match self {
            TicketError::Store(e) => e.kind(),
            TicketError::Unsealable { .. } => sluice_ports::ErrorKind::Permanent,
        }
    }
}

fn unsealable(what: &'static str) -> impl Fn(String) -> TicketError {
    move |message| TicketError::Unsealable { what, message }
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

/// Where tickets are kept: the ciphertexts in the internal bucket, their keys in SSM; and the
/// record of the build each started (`tmp/builds/…`), by which a cancel stops them.
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

    /// Records that the build `build_id` was started for `payload`'s attempt.
    ///
    /// # Errors
    ///
    /// The store's failure.
    pub async fn record_build(
        &self,
        payload: &DispatchPayload,
        build_id: &str,
    ) -> Result<(), StoreError> {
        let key = keys::build(
            &payload.run_id,
            payload.order_num,
            &payload.attempt,
            build_id,
        );
        self.store.put(&key, Vec::new()).await
    }

    /// The builds started for `run_id`'s attempts, as recorded.
    ///
    /// # Errors
    ///
    /// The store's failure listing them.
    pub async fn started_builds(&self, run_id: &RunId) -> Result<Vec<String>, StoreError> {
        let records = self.store.list(&keys::run_builds(run_id)).await?;
        Ok((records.iter())
            .filter_map(|key| key.rsplit('/').next())
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .collect())
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
            serde_json::to_vec(payload).map_err(|e| unsealable("payload")(e.to_string()))?;
        let ciphertext = age::encrypt(&identity.to_public(), &plaintext)
            .map_err(|e| unsealable("cannot be encrypted")(e.to_string()))?;
        let name = format!("{}-{}", payload.attempt, uuid::Uuid::new_v4().simple());
        let (run_id, order_num) = (&payload.run_id, payload.order_num);
        let key = keys::ticket(run_id, order_num, &name);
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
                ticket::URL,
                self.store.presign(Presigned::Get, &key, expiry).await?,
            ),
            plain(
                ticket::DELETE_URL,
                self.store.presign(Presigned::Delete, &key, expiry).await?,
            ),
            BuildVariable {
                name: ticket::KEY,
                value: parameter,
                kind: EnvironmentVariableType::ParameterStore,
            },
            plain(ticket::RUN_ID, run_id.to_string()),
            plain(ticket::ORDER_NUM, order_num.to_string()),
            plain(ticket::ATTEMPT, payload.attempt.to_string()),
        ])
    }
}
