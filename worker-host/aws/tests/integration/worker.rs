//! The `worker` binary as CodeBuild starts it (`--from-env`): what it says when its ticket
//! cannot be redeemed. The whole path, ticket to result, runs against moto in
//! `sluice-aws`'s tests (`moto.rs`, `binaries.rs`).

use std::process::Output;

use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Runs the worker with `--from-env` and only the variables `vars`.
async fn worker_from_env(vars: &[(&str, String)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_worker"));
    command.arg("--from-env").env_clear();
    for (name, value) in vars {
        command.env(name, value);
    }
    command.output().await.unwrap()
}

#[tokio::test]
async fn a_build_without_a_ticket_fails_naming_the_missing_variable() {
    let output = worker_from_env(&[]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("SLUICE_TICKET_URL"), "{stderr}");
}

#[tokio::test]
async fn a_refused_ticket_says_what_s3_said_and_never_the_signature() {
    let s3 = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(403).set_body_string(
            "<Error><Code>AccessDenied</Code><Message>Request has expired</Message>\
             <HostId>host-id-that-names-the-account</HostId></Error>",
        ))
        .mount(&s3)
        .await;
    let url = |verb: &str| {
        format!(
            "{}/tmp/tickets/r/0001/a1-n.age?{verb}&X-Amz-Signature=topsecret",
            s3.uri()
        )
    };
    let identity = age::x25519::Identity::generate();
    let key = age::secrecy::ExposeSecret::expose_secret(&identity.to_string()).to_owned();
    let output = worker_from_env(&[
        ("SLUICE_TICKET_URL", url("get")),
        ("SLUICE_TICKET_DELETE_URL", url("delete")),
        ("SLUICE_TICKET_KEY", key),
    ])
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("HTTP 403"), "{stderr}");
    assert!(
        stderr.contains("AccessDenied: Request has expired"),
        "{stderr}"
    );
    assert!(stderr.contains("/tmp/tickets/r/0001/a1-n.age"), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    for leaked in ["topsecret", "host-id-that-names-the-account", "127.0.0.1"] {
        assert!(!stderr.contains(leaked), "{leaked} in {stderr}");
        assert!(!stdout.contains(leaked), "{leaked} in {stdout}");
    }
    // A permanent refusal is not tried again and again.
    assert_eq!(s3.received_requests().await.unwrap().len(), 1);
}
