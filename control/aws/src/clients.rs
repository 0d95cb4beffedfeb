//! The SDK clients, built once per process from the standard AWS configuration chain
//! (credentials, region, and `AWS_ENDPOINT_URL`, which points every client at moto in
//! tests).

/// The clients Sluice's adapters use.
#[derive(Debug, Clone)]
pub struct Clients {
    /// S3 (path-style addressing when an endpoint override is set, as moto needs).
    pub s3: aws_sdk_s3::Client,
    /// DynamoDB.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// SSM Parameter Store.
    pub ssm: aws_sdk_ssm::Client,
    /// Secrets Manager.
    pub secrets_manager: aws_sdk_secretsmanager::Client,
    /// Lambda.
    pub lambda: aws_sdk_lambda::Client,
    /// CodeBuild.
    pub codebuild: aws_sdk_codebuild::Client,
    /// Step Functions.
    pub sfn: aws_sdk_sfn::Client,
}

impl Clients {
    /// Loads the AWS configuration and builds the clients.
    pub async fn load() -> Self {
        let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::from_config(&shared)
    }

    /// The clients for an AWS configuration already loaded.
    pub fn from_config(shared: &aws_config::SdkConfig) -> Self {
        let custom_endpoint = shared.endpoint_url().is_some();
        let s3 = aws_sdk_s3::config::Builder::from(shared)
            .force_path_style(custom_endpoint)
            .build();
        Clients {
            s3: aws_sdk_s3::Client::from_conf(s3),
            dynamodb: aws_sdk_dynamodb::Client::new(shared),
            ssm: aws_sdk_ssm::Client::new(shared),
            secrets_manager: aws_sdk_secretsmanager::Client::new(shared),
            lambda: aws_sdk_lambda::Client::new(shared),
            codebuild: aws_sdk_codebuild::Client::new(shared),
            sfn: aws_sdk_sfn::Client::new(shared),
        }
    }
}
