//! The engine on AWS: every port bound to its AWS adapter, from one set of clients and
//! settings (built once per Lambda cold start).

use std::sync::Arc;

use sluice_contract::validate::Platform;
use sluice_engine::github::GitHubVcs;
use sluice_engine::{Engine, EngineConfig, Ports};
use sluice_ports::{ObjectStore, SystemClock, Vcs};

use crate::calls::CallCounter;
use crate::clients::Clients;
use crate::dispatch::{AwsDispatcher, SfnWatchdog};
use crate::dynamo::DynamoOrderStore;
use crate::keys::SsmKeyStore;
use crate::s3::{S3Archives, S3Store};
use crate::secrets::AwsSecretSource;
use crate::settings::AwsSettings;
use crate::ticket::Tickets;

/// The GitHub client at `api` (PR comments off, with the reason logged, if it cannot be
/// built).
fn github(api: &str) -> Option<Arc<dyn Vcs>> {
    match GitHubVcs::new(api) {
        Ok(github) => Some(Arc::new(github)),
        Err(error) => {
            tracing::error!(%error, "PR comments are off: no HTTPS client");
            None
        }
    }
}

/// The engine over S3, DynamoDB, SSM, Secrets Manager, Lambda, CodeBuild and Step Functions, counting its
/// AWS calls in `calls`.
pub fn aws_engine(clients: &Clients, settings: &AwsSettings, calls: &CallCounter) -> Engine {
    let internal: Arc<dyn ObjectStore> = Arc::new(S3Store::new(
        clients.s3.clone(),
        &settings.internal_bucket,
        calls.clone(),
    ));
    let ports = Ports {
        internal: Arc::clone(&internal),
        done: Arc::new(S3Store::new(
            clients.s3.clone(),
            &settings.done_bucket,
            calls.clone(),
        )),
        orders: Arc::new(DynamoOrderStore::new(
            clients.dynamodb.clone(),
            settings,
            calls.clone(),
        )),
        dispatcher: Arc::new(
            AwsDispatcher::new(
                clients.lambda.clone(),
                clients.codebuild.clone(),
                Tickets::new(
                    internal,
                    SsmKeyStore::new(clients.ssm.clone(), &settings.ssm_prefix, calls.clone()),
                ),
                &settings.worker_function,
                &settings.codebuild_project,
                calls.clone(),
            )
            .compiling_with(settings.compile_function.clone()),
        ),
        watchdog: Arc::new(SfnWatchdog::new(
            clients.sfn.clone(),
            &settings.watchdog_state_machine,
            calls.clone(),
        )),
        keys: Arc::new(SsmKeyStore::new(
            clients.ssm.clone(),
            &settings.ssm_prefix,
            calls.clone(),
        )),
        secrets: Arc::new(AwsSecretSource::new(
            clients.ssm.clone(),
            clients.secrets_manager.clone(),
            calls.clone(),
        )),
        archives: Some(Arc::new(S3Archives::new(
            clients.s3.clone(),
            vec![
                settings.internal_bucket.clone(),
                settings.done_bucket.clone(),
            ],
            calls.clone(),
        ))),
        vcs: settings.github_api.as_deref().and_then(github),
        clock: Arc::new(SystemClock),
    };
    let config = EngineConfig {
        platform: Platform::Aws,
        git: settings.git.clone(),
        credential_grants: settings.credential_grants.clone(),
        ..EngineConfig::default()
    };
    Engine::new(ports, config)
}
