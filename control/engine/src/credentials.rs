//! Fetching the credentials orders list and merging them into their env (DESIGN §2).
//!
//! init_job fetches each distinct location once per job, whatever number of orders list it,
//! concurrently, then builds every order's env in a documented order: its `env_vars`, then
//! each `ssm_paths` entry, then each `secret_manager_paths` entry, in the order listed — a
//! later source's variable replaces an earlier one of the same name. The order's secret
//! names (`secrets.src` in its bundle) are those that came from a credential and those of
//! `env_vars` named like secrets (`*_TOKEN`, `*_PASSWORD`, ...:
//! [`sluice_contract::credentials::is_secret_name`]); the worker masks their values in
//! everything it stores.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::stream::{self, StreamExt};
use sluice_contract::credentials::{SecretLocation, expand, is_secret_name};
use sluice_contract::validate::{ValidJob, ValidOrder};

use crate::error::{EngineError, StoreError};
use crate::ports::SecretSource;

/// How many locations are fetched at the same time.
const FETCH_PARALLELISM: usize = 8;

/// An order's env with its credentials merged in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderEnv {
    /// Every variable, plain and secret.
    pub env: BTreeMap<String, String>,
    /// The names whose values are secrets, sorted: from a credential, or named like one.
    pub secret_names: Vec<String>,
}

/// Every order's env, in order.
///
/// # Errors
///
/// [`EngineError::Credential`] naming the first order (and field) that lists a location
/// holding nothing or a value breaking its store's rules; [`EngineError::Store`] when a
/// store fails or refuses.
pub async fn resolve(
    job: &ValidJob,
    source: &dyn SecretSource,
) -> Result<Vec<OrderEnv>, EngineError> {
    let distinct: BTreeSet<&SecretLocation> =
        job.orders.iter().flat_map(|o| &o.credentials).collect();
    // The futures are made before they go into the stream: a closure inside the stream
    // would make rustc lose that the whole future is `Send` (its lifetimes turn higher-
    // ranked), and callers spawn init_job.
    let fetches: Vec<_> = distinct
        .into_iter()
        .map(|location| async move { (location, source.fetch(location).await) })
        .collect();
    let fetched: HashMap<&SecretLocation, Result<String, StoreError>> = stream::iter(fetches)
        .buffer_unordered(FETCH_PARALLELISM)
        .collect()
        .await;
    job.orders
        .iter()
        .map(|order| order_env(order, &fetched))
        .collect()
}

fn order_env(
    order: &ValidOrder,
    fetched: &HashMap<&SecretLocation, Result<String, StoreError>>,
) -> Result<OrderEnv, EngineError> {
    let mut env = order.env_vars.clone();
    let mut secret_names: BTreeSet<String> = env
        .keys()
        .filter(|name| is_secret_name(name))
        .cloned()
        .collect();
    for location in &order.credentials {
        let field = match location {
            SecretLocation::Ssm(_) => "ssm_paths",
            SecretLocation::SecretsManager(_) => "secret_manager_paths",
        };
        let value = fetched[location]
            .as_ref()
            .map_err(|error| fetch_failed(order, field, location, error))?;
        let expanded =
            expand(location, value).map_err(|e| credential_error(order, field, e.to_string()))?;
        for (name, value) in expanded {
            if env.insert(name.clone(), value).is_some() {
                tracing::debug!(order_num = %order.plan.order_num, variable = %name, from = %location, "a credential replaces an earlier variable");
            }
            secret_names.insert(name);
        }
    }
    Ok(OrderEnv {
        env,
        secret_names: secret_names.into_iter().collect(),
    })
}

/// A credential of `order`'s `field` is missing or malformed: the job's fault.
fn credential_error(order: &ValidOrder, field: &str, message: String) -> EngineError {
    EngineError::Credential {
        order_num: order.plan.order_num.to_string(),
        order_name: order.plan.order_name.clone(),
        field: field.to_owned(),
        message,
    }
}

/// Fetching `location`, which `order`'s `field` lists, failed: nothing stored there is the
/// job's fault ([`EngineError::Credential`]); any other failure is the store's, named with
/// the order.
pub(crate) fn fetch_failed(
    order: &ValidOrder,
    field: &str,
    location: &SecretLocation,
    error: &StoreError,
) -> EngineError {
    match error {
        StoreError::NotFound { key } => {
            credential_error(order, field, format!("nothing is stored at {key}"))
        }
        StoreError::Denied { .. } => credential_error(
            order,
            field,
            format!("this deployment may not read {location} (access denied)"),
        ),
        other => {
            let what = format!(
                "fetching {location} for order {} ({})",
                order.plan.order_num, order.plan.order_name
            );
            let message = other.to_string();
            EngineError::Store(if other.is_transient() {
                StoreError::Unavailable { what, message }
            } else {
                StoreError::Backend { what, message }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use sluice_contract::{ValidateOptions, parse_job, validate::validate};

    use super::*;

    /// A source answering from a map and remembering what it was asked.
    #[derive(Debug, Default)]
    struct Recorded {
        values: BTreeMap<String, String>,
        asked: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl SecretSource for Recorded {
        async fn fetch(&self, location: &SecretLocation) -> Result<String, StoreError> {
            let key = location.to_string();
            self.asked.lock().unwrap().push(key.clone());
            match key.as_str() {
                "aws:::ssm:/denied" => Err(StoreError::Denied {
                    what: key,
                    message: "AccessDeniedException".to_owned(),
                }),
                "aws:::ssm:/broken" => Err(StoreError::Backend {
                    what: key,
                    message: "InternalError".to_owned(),
                }),
                "aws:::ssm:/throttled" => Err(StoreError::Unavailable {
                    what: key,
                    message: "ThrottlingException".to_owned(),
                }),
                _ => self
                    .values
                    .get(&key)
                    .cloned()
                    .ok_or(StoreError::NotFound { key }),
            }
        }
    }

    fn job(orders: &str) -> ValidJob {
        let spec = parse_job(format!(r#"{{"orders":[{orders}]}}"#).as_bytes()).unwrap();
        validate(&spec, &ValidateOptions::local("tester")).unwrap()
    }

    fn source() -> Recorded {
        let ssm = STANDARD.encode(r#"{"DB_USER":"app","DB_PASSWORD":"from-ssm-pw"}"#);
        Recorded {
            values: BTreeMap::from([
                ("aws:::ssm:/db".to_owned(), ssm),
                (
                    "aws:::secretd:prod/db-password".to_owned(),
                    "from-secrets-manager".to_owned(),
                ),
            ]),
            ..Recorded::default()
        }
    }

    #[tokio::test]
    async fn later_sources_override_earlier_ones_and_credentials_are_secret() {
        let job = job(r#"{"cmds":["true"],"timeout":5,
                "env_vars":{"DB_USER":"plain","MODE":"ci","GITHUB_TOKEN":"ghp_x"},
                "secret_manager_paths":["prod/db-password"],
                "ssm_paths":["/db"]}"#);
        let envs = resolve(&job, &source()).await.unwrap();
        let env = &envs[0].env;
        assert_eq!(env["MODE"], "ci");
        assert_eq!(env["DB_USER"], "app", "ssm_paths override env_vars");
        assert_eq!(
            env["DB_PASSWORD"], "from-secrets-manager",
            "secret_manager_paths override ssm_paths"
        );
        assert_eq!(
            envs[0].secret_names,
            ["DB_PASSWORD", "DB_USER", "GITHUB_TOKEN"],
            "credentials, and plain variables named like secrets"
        );
    }

    #[tokio::test]
    async fn each_location_is_fetched_once_per_job() {
        let job = job(r#"{"cmds":["true"],"timeout":5,"ssm_paths":["/db"]},
               {"cmds":["true"],"timeout":5,"ssm_paths":["/db"]},
               {"cmds":["true"],"timeout":5}"#);
        let source = source();
        let envs = resolve(&job, &source).await.unwrap();
        assert_eq!(envs[1].env["DB_PASSWORD"], "from-ssm-pw");
        assert!(envs[2].env.is_empty());
        assert_eq!(*source.asked.lock().unwrap(), ["aws:::ssm:/db"]);
    }

    #[tokio::test]
    async fn a_missing_or_refused_location_is_the_jobs_fault_and_a_failure_the_stores() {
        let job_missing = job(r#"{"cmds":["true"],"timeout":5},
               {"cmds":["true"],"timeout":5,"order_name":"deploy","secret_manager_paths":["prod/gone"]}"#);
        let error = resolve(&job_missing, &source()).await.unwrap_err();
        assert!(error.is_invalid_input());
        assert_eq!(
            error.to_string(),
            "order 0002 (deploy), field `secret_manager_paths`: nothing is stored at aws:::secretd:prod/gone"
        );
        let job_denied = job(r#"{"cmds":["true"],"timeout":5,"ssm_paths":["/denied"]}"#);
        let error = resolve(&job_denied, &source()).await.unwrap_err();
        assert!(error.is_invalid_input());
        assert_eq!(
            error.to_string(),
            "order 0001 (order-1), field `ssm_paths`: this deployment may not read aws:::ssm:/denied (access denied)"
        );
        for (path, transient) in [("/broken", false), ("/throttled", true)] {
            let job = job(&format!(
                r#"{{"cmds":["true"],"timeout":5,"ssm_paths":["{path}"]}}"#
            ));
            let error = resolve(&job, &source()).await.unwrap_err();
            assert!(!error.is_invalid_input(), "{error}");
            assert_eq!(
                error.kind() == crate::ErrorKind::Transient,
                transient,
                "{error}"
            );
            assert!(
                error.to_string().contains(&format!(
                    "fetching aws:::ssm:{path} for order 0001 (order-1)"
                )),
                "{error}"
            );
        }
    }

    #[tokio::test]
    async fn a_malformed_value_fails_without_quoting_it() {
        let mut source = source();
        source
            .values
            .insert("aws:::ssm:/raw".to_owned(), "raw-password-123".to_owned());
        let job = job(r#"{"cmds":["true"],"timeout":5,"ssm_paths":["/raw"]}"#);
        let error = resolve(&job, &source).await.unwrap_err().to_string();
        assert!(
            error
                .contains("field `ssm_paths`: aws:::ssm:/raw: the parameter's value is not base64"),
            "{error}"
        );
        assert!(!error.contains("raw-password-123"));
    }
}
