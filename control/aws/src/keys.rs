//! [`SsmKeyStore`]: a run's key (each order's age key is derived from it, see
//! `sluice_engine::run_key`) as an SSM SecureString parameter,
//! `<prefix>/sops-keys/<run_id>/0000` (`…/<order_num>` for each order in runs queued
//! before run keys), written by init-job, read by the control plane when a step starts
//! orders (workers read none: their order's identity comes with the dispatch),
//! and the keys of CodeBuild tickets (`<prefix>/sops-keys/<run_id>/tickets/<order_num>/…`),
//! all deleted when the run is finalized; and the deployment's key of kept jobs,
//! `<prefix>/jobs-key`, which outlives runs.

use async_trait::async_trait;
use aws_sdk_ssm::types::{ParameterTier, ParameterType};
use sluice_contract::{OrderNum, RunId};
use sluice_ports::KeyStore;
use sluice_ports::StoreError;

use crate::calls::CallCounter;
use crate::sdk_error::backend;

const SERVICE: &str = "ssm";
/// Most names one `DeleteParameters` call takes.
const MAX_DELETE: usize = 10;

/// Keys under one SSM path prefix.
#[derive(Debug, Clone)]
pub struct SsmKeyStore {
    client: aws_sdk_ssm::Client,
    prefix: String,
    calls: CallCounter,
}

impl SsmKeyStore {
    /// Keys under `prefix` (e.g. `/sluice`; a trailing `/` is ignored).
    pub fn new(client: aws_sdk_ssm::Client, prefix: &str, calls: CallCounter) -> Self {
        SsmKeyStore {
            client,
            prefix: prefix.trim_end_matches('/').to_owned(),
            calls,
        }
    }

    fn run_path(&self, run_id: &RunId) -> String {
        format!("{}/sops-keys/{run_id}", self.prefix)
    }

    /// Stores the key of a CodeBuild worker's ticket (`sluice_aws::ticket`) as a
    /// SecureString and returns its name, for a build variable of type `PARAMETER_STORE`:
    /// CodeBuild resolves it when the build starts, and the build's record shows only the
    /// name. Under the run's path, so finalize deletes it with the run's keys.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] naming the parameter.
    pub async fn put_ticket_key(
        &self,
        run_id: &RunId,
        order_num: OrderNum,
        ticket: &str,
        identity: &str,
    ) -> Result<String, StoreError> {
        let name = format!("{}/tickets/{order_num}/{ticket}", self.run_path(run_id));
        self.put_secure(&name, identity, "storing a ticket's key", true)
            .await?;
        Ok(name)
    }

    /// Stores `value` as the SecureString `name`, over what is there when `overwrite`;
    /// else [`StoreError::ConditionFailed`] when one is there.
    async fn put_secure(
        &self,
        name: &str,
        value: &str,
        what: &str,
        overwrite: bool,
    ) -> Result<(), StoreError> {
        self.calls.count(SERVICE, "PutParameter");
        self.client
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(ParameterType::SecureString)
            .tier(ParameterTier::IntelligentTiering)
            .overwrite(overwrite)
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(service) if service.is_parameter_already_exists() => {
                    StoreError::ConditionFailed {
                        what: format!("the parameter {name}"),
                        detail: "stored already".to_owned(),
                    }
                }
                _ => backend(format!("{what} {name}"), e),
            })?;
        Ok(())
    }

    /// Outside `sops-keys/`, which roles other than init-job's read.
    fn jobs_key_name(&self) -> String {
        format!("{}/jobs-key", self.prefix)
    }
}

#[async_trait]
impl KeyStore for SsmKeyStore {
    async fn put_key(
        &self,
        run_id: &RunId,
        order_num: OrderNum,
        secret_key: &str,
    ) -> Result<String, StoreError> {
        let name = format!("{}/{order_num}", self.run_path(run_id));
        self.put_secure(&name, secret_key, "storing key", true)
            .await?;
        Ok(name)
    }

    async fn get_key(&self, key_path: &str) -> Result<String, StoreError> {
        self.calls.count(SERVICE, "GetParameter");
        let output = self
            .client
            .get_parameter()
            .name(key_path)
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(service) if service.is_parameter_not_found() => StoreError::NotFound {
                    key: key_path.to_owned(),
                },
                _ => backend(format!("reading key {key_path}"), e),
            })?;
        output
            .parameter
            .and_then(|p| p.value)
            .ok_or_else(|| StoreError::NotFound {
                key: key_path.to_owned(),
            })
    }

    async fn delete_run_keys(&self, run_id: &RunId) -> Result<(), StoreError> {
        let path = self.run_path(run_id);
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            self.calls.count(SERVICE, "GetParametersByPath");
            let page = self
                .client
                .get_parameters_by_path()
                .path(&path)
                .recursive(true)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| backend(format!("listing keys under {path}"), e))?;
            names.extend(page.parameters().iter().filter_map(|p| p.name.clone()));
            match page.next_token {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => break,
            }
        }
        self.delete_named(&path, &names).await
    }

    /// Read first (it is there but for a deployment's first job); made with `Overwrite`
    /// off, so that of two first jobs, the second reads the first's.
    async fn jobs_key(&self, made: &str) -> Result<String, StoreError> {
        let name = self.jobs_key_name();
        match self.get_key(&name).await {
            Err(StoreError::NotFound { .. }) => {}
            read => return read,
        }
        match (self.put_secure(&name, made, "storing the kept jobs' key", false)).await {
            Ok(()) => Ok(made.to_owned()),
            Err(StoreError::ConditionFailed { .. }) => self.get_key(&name).await,
            Err(other) => Err(other),
        }
    }

    async fn delete_keys(&self, run_id: &RunId, key_paths: &[String]) -> Result<(), StoreError> {
        let path = self.run_path(run_id);
        let under = format!("{path}/");
        if let Some(other) = key_paths.iter().find(|name| !name.starts_with(&under)) {
            return Err(StoreError::Backend {
                what: format!("deleting keys under {path}"),
                message: format!("{other} is not one of the run's keys"),
            });
        }
        self.delete_named(&path, key_paths).await
    }
}

impl SsmKeyStore {
    /// Deletes the parameters `names` (under `path`, for messages), a batch per call; a
    /// name already gone is no error (SSM answers it among the invalid ones).
    async fn delete_named(&self, path: &str, names: &[String]) -> Result<(), StoreError> {
        for batch in names.chunks(MAX_DELETE) {
            self.calls.count(SERVICE, "DeleteParameters");
            self.client
                .delete_parameters()
                .set_names(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| backend(format!("deleting keys under {path}"), e))?;
        }
        Ok(())
    }
}
