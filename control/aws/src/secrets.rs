//! [`AwsSecretSource`]: the credentials orders list, from SSM Parameter Store
//! (`aws:::ssm:<name>`, decrypted) and Secrets Manager (`aws:::secretd:<id>`, its current
//! version). Only the raw value is fetched here; the contract's rules turn it into variables.

use async_trait::async_trait;
use sluice_contract::credentials::SecretLocation;
use sluice_ports::SecretSource;
use sluice_ports::StoreError;

use crate::calls::CallCounter;
use crate::sdk_error::backend;

/// Credentials from SSM and Secrets Manager.
#[derive(Debug, Clone)]
pub struct AwsSecretSource {
    ssm: aws_sdk_ssm::Client,
    secrets_manager: aws_sdk_secretsmanager::Client,
    calls: CallCounter,
}

impl AwsSecretSource {
    /// A source over the two clients.
    pub fn new(
        ssm: aws_sdk_ssm::Client,
        secrets_manager: aws_sdk_secretsmanager::Client,
        calls: CallCounter,
    ) -> Self {
        AwsSecretSource {
            ssm,
            secrets_manager,
            calls,
        }
    }

    async fn parameter(&self, location: &SecretLocation) -> Result<String, StoreError> {
        self.calls.count("ssm", "GetParameter");
        let output = self
            .ssm
            .get_parameter()
            .name(location.path())
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(service) if service.is_parameter_not_found() => not_found(location),
                _ => backend(format!("reading {location}"), e),
            })?;
        output
            .parameter
            .and_then(|p| p.value)
            .ok_or_else(|| not_found(location))
    }

    async fn secret(&self, location: &SecretLocation) -> Result<String, StoreError> {
        self.calls.count("secretsmanager", "GetSecretValue");
        let output = self
            .secrets_manager
            .get_secret_value()
            .secret_id(location.path())
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(service) if service.is_resource_not_found_exception() => not_found(location),
                _ => backend(format!("reading {location}"), e),
            })?;
        if let Some(text) = output.secret_string {
            return Ok(text);
        }
        match output.secret_binary {
            Some(blob) => String::from_utf8(blob.into_inner()).map_err(|_| StoreError::Backend {
                what: format!("reading {location}"),
                message:
                    "the secret is binary data that is not UTF-8 text; only text becomes variables"
                        .to_owned(),
            }),
            None => Err(not_found(location)),
        }
    }
}

fn not_found(location: &SecretLocation) -> StoreError {
    StoreError::NotFound {
        key: location.to_string(),
    }
}

#[async_trait]
impl SecretSource for AwsSecretSource {
    async fn fetch(&self, location: &SecretLocation) -> Result<String, StoreError> {
        match location {
            SecretLocation::Ssm(_) => self.parameter(location).await,
            SecretLocation::SecretsManager(_) => self.secret(location).await,
        }
    }
}
