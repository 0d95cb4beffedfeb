//! One stored secret per run, from which each order's age key is derived.
//!
//! Every order's env is encrypted to an age key of its own, and only that order's worker is
//! handed the private half. Storing a key per order cost two calls per order (a
//! `PutParameter` at init, a `GetParameter` at dispatch); instead init stores one
//! [`RunKey`] and derives each order's key from it with HKDF-SHA256 (salt: the run id;
//! info: the order number), and a step that starts orders reads the run key once. An
//! order's key says nothing of the run key or of another order's key (HKDF's outputs are
//! independent), so a worker still holds the key to its own env only. The run key never
//! leaves the control plane: it is stored as a SecureString (a `0600` file locally),
//! read by the control plane's passes only, and deleted at finalize with the rest of the
//! run's keys.
//!
//! A stored value without the [`RunKey`] prefix is an order's own key, as runs queued
//! before this scheme stored them; it is handed over as it is, but only when it is one
//! (`AGE-SECRET-KEY-1…` that age reads): anything else — a run key of a later format, say —
//! is refused rather than handed to a worker.

use age::secrecy::ExposeSecret;
use bech32::{Bech32, Hrp};
use hkdf::Hkdf;
use sha2::Sha256;
use sluice_contract::{OrderNum, RunId};

use crate::bundle::OrderKey;

/// What a stored run key starts with (an order's own key starts `AGE-SECRET-KEY-1`).
const PREFIX: &str = "sluice-run-key-v1:";
/// What HKDF's info starts with, before the order number.
const INFO: &str = "sluice order key v1 ";
/// The Bech32 prefix of an age X25519 identity (written uppercase).
const IDENTITY_HRP: &str = "age-secret-key-";

/// A run's secret: what its orders' keys are derived from.
pub struct RunKey {
    stored: String,
}

impl std::fmt::Debug for RunKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunKey(..)")
    }
}

impl RunKey {
    /// A fresh run key (32 random bytes from the operating system, drawn by age).
    pub fn generate() -> Self {
        let secret = age::x25519::Identity::generate().to_string();
        RunKey {
            stored: format!("{PREFIX}{}", secret.expose_secret()),
        }
    }

    /// The value to store.
    pub fn stored(&self) -> &str {
        &self.stored
    }

    /// The key pair of `order_num` of `run_id`.
    pub fn order_key(&self, run_id: &RunId, order_num: OrderNum) -> OrderKey {
        let secret = derive(&self.stored, run_id, order_num);
        let identity: age::x25519::Identity =
            secret.parse().expect("a derived identity is well formed");
        OrderKey {
            recipient: identity.to_public().to_string(),
            secret,
        }
    }
}

/// The private key to hand `order_num`'s worker, from the value stored at the order's
/// key path: derived from a run key, or, for a run queued before run keys, the order's
/// own key as stored.
///
/// # Errors
///
/// [`UnknownKey`] when the value is neither (it is not handed to anyone).
pub fn order_identity(
    stored: &str,
    run_id: &RunId,
    order_num: OrderNum,
) -> Result<String, UnknownKey> {
    if stored.starts_with(PREFIX) {
        return Ok(derive(stored, run_id, order_num));
    }
    if stored.starts_with("AGE-SECRET-KEY-1") && stored.parse::<age::x25519::Identity>().is_ok() {
        return Ok(stored.to_owned());
    }
    Err(UnknownKey)
}

/// The run keys a process read lately, by key path, so that a warm orchestrator's passes
/// of one run read its key once rather than once a step. A run key is written once at init
/// and never changed, so a copy cannot go stale. It is dropped when this process finalizes
/// its run; another warm process keeps it until newer runs push it out (at most
/// [`RunKeyCache::RUNS`] runs), and never longer than the process lives. Only run keys are
/// kept (an order's own key is read once anyway).
#[derive(Default)]
pub(crate) struct RunKeyCache {
    entries: std::sync::Mutex<std::collections::VecDeque<(RunId, String, String)>>,
}

impl std::fmt::Debug for RunKeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunKeyCache(..)")
    }
}

impl RunKeyCache {
    /// How many runs' keys are kept.
    const RUNS: usize = 64;

    fn entries(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(RunId, String, String)>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The run key stored at `path`, when read lately.
    pub(crate) fn get(&self, path: &str) -> Option<String> {
        (self.entries().iter())
            .find(|(_, p, _)| p == path)
            .map(|(_, _, stored)| stored.clone())
    }

    /// Keeps `stored`, read at `path` for `run_id`, when it is a run key.
    pub(crate) fn keep(&self, run_id: &RunId, path: &str, stored: &str) {
        if !stored.starts_with(PREFIX) {
            return;
        }
        let mut entries = self.entries();
        entries.retain(|(_, p, _)| p != path);
        if entries.len() == Self::RUNS {
            entries.pop_front();
        }
        entries.push_back((run_id.clone(), path.to_owned(), stored.to_owned()));
    }

    /// Drops `run_id`'s key (its run is finalized and its stored keys deleted).
    pub(crate) fn forget(&self, run_id: &RunId) {
        self.entries().retain(|(run, _, _)| run != run_id);
    }
}

/// A stored key that is neither a run key nor an order's own age key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the stored key is neither a run key nor an age identity")]
pub struct UnknownKey;

/// `AGE-SECRET-KEY-1...` of the 32 bytes HKDF draws for the order.
fn derive(stored: &str, run_id: &RunId, order_num: OrderNum) -> String {
    let hkdf = Hkdf::<Sha256>::new(Some(run_id.as_str().as_bytes()), stored.as_bytes());
    let mut bytes = [0u8; 32];
    hkdf.expand(format!("{INFO}{order_num}").as_bytes(), &mut bytes)
        .expect("32 bytes is a valid HKDF-SHA256 length");
    let hrp = Hrp::parse(IDENTITY_HRP).expect("a valid Bech32 prefix");
    let encoded = bech32::encode::<Bech32>(hrp, &bytes).expect("32 bytes fit a Bech32 string");
    bytes.fill(0);
    encoded.to_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_run_keys_of_live_runs_only() {
        let cache = RunKeyCache::default();
        let (run, other) = (RunId::generate(), RunId::generate());
        let key = RunKey::generate();
        cache.keep(&run, "/k/run", key.stored());
        cache.keep(&other, "/k/order", "AGE-SECRET-KEY-1ORDERKEY");
        assert_eq!(cache.get("/k/run").as_deref(), Some(key.stored()));
        assert_eq!(
            cache.get("/k/order"),
            None,
            "an order's own key is not kept"
        );
        assert_eq!(format!("{cache:?}"), "RunKeyCache(..)", "never printed");
        cache.forget(&run);
        assert_eq!(cache.get("/k/run"), None, "a finalized run's key goes");

        for i in 0..=RunKeyCache::RUNS {
            cache.keep(&RunId::generate(), &format!("/k/{i}"), key.stored());
        }
        assert_eq!(cache.get("/k/0"), None, "the oldest is pushed out");
        assert!(cache.get(&format!("/k/{}", RunKeyCache::RUNS)).is_some());
    }

    #[test]
    fn each_order_gets_its_own_key_that_age_reads_back() {
        let run = RunId::generate();
        let key = RunKey::generate();
        let first = key.order_key(&run, OrderNum::from_index(0));
        let again = key.order_key(&run, OrderNum::from_index(0));
        let second = key.order_key(&run, OrderNum::from_index(1));
        assert_eq!(first.secret, again.secret, "derivation is deterministic");
        assert_ne!(first.secret, second.secret);
        assert_ne!(first.recipient, second.recipient);
        assert!(first.secret.starts_with("AGE-SECRET-KEY-1"));
        assert!(first.recipient.starts_with("age1"));
        let other_run = key.order_key(&RunId::generate(), OrderNum::from_index(0));
        assert_ne!(first.secret, other_run.secret, "the run id salts the keys");
        assert_ne!(
            first.secret,
            RunKey::generate()
                .order_key(&run, OrderNum::from_index(0))
                .secret
        );
        assert!(!format!("{key:?}").contains("AGE-SECRET"), "{key:?}");
    }

    #[test]
    fn the_derived_identity_decrypts_what_was_encrypted_to_its_recipient() {
        use std::io::{Read, Write};
        let run = RunId::generate();
        let key = RunKey::generate();
        let order = key.order_key(&run, OrderNum::from_index(2));
        let recipient: age::x25519::Recipient = order.recipient.parse().unwrap();
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .unwrap();
        let mut sealed = Vec::new();
        let mut writer = encryptor.wrap_output(&mut sealed).unwrap();
        writer.write_all(b"{\"TOKEN\":\"t\"}").unwrap();
        writer.finish().unwrap();

        let handed = order_identity(key.stored(), &run, OrderNum::from_index(2)).unwrap();
        assert_eq!(handed, order.secret);
        // A sibling's key cannot open it.
        let sibling: age::x25519::Identity = key
            .order_key(&run, OrderNum::from_index(3))
            .secret
            .parse()
            .unwrap();
        let refused = age::Decryptor::new(&sealed[..])
            .unwrap()
            .decrypt(std::iter::once(&sibling as &dyn age::Identity));
        assert!(
            refused.is_err(),
            "a sibling order's key opens nothing of this one"
        );
        let identity: age::x25519::Identity = handed.parse().unwrap();
        let decryptor = age::Decryptor::new(&sealed[..]).unwrap();
        let mut plain = String::new();
        decryptor
            .decrypt(std::iter::once(&identity as &dyn age::Identity))
            .unwrap()
            .read_to_string(&mut plain)
            .unwrap();
        assert_eq!(plain, "{\"TOKEN\":\"t\"}");
    }

    #[test]
    fn an_orders_own_key_from_before_run_keys_is_handed_over_as_stored() {
        let own = OrderKey::generate();
        let run = RunId::generate();
        assert_eq!(
            order_identity(&own.secret, &run, OrderNum::from_index(0)),
            Ok(own.secret)
        );
    }

    #[test]
    fn a_stored_value_of_another_kind_is_handed_to_nobody() {
        let run = RunId::generate();
        let later = format!("sluice-run-key-v2:{}", OrderKey::generate().secret);
        for stored in [later.as_str(), "", "AGE-SECRET-KEY-1NOTBECH32", "hunter2"] {
            assert_eq!(
                order_identity(stored, &run, OrderNum::from_index(0)),
                Err(UnknownKey),
                "{stored}"
            );
        }
    }
}
