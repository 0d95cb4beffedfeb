//! Secrets never reach the state folder: whatever form an order prints them in, its log,
//! result, events, the done document and the run's report hold `***` instead, and the rest
//! of the output is kept.

use std::path::Path;

use crate::util::{Sandbox, done_of, examples};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sluice_contract::{JobStatus, OrderStatus};

const DB_PASSWORD: &str = "correct horse/battery+staple!";
const DEPLOY_KEY: &str = "-----BEGIN KEY-----\nAbCdEf0123456789xyz\n-----END KEY-----";
const GITHUB_TOKEN: &str = "ghp_0123456789abcdef";
/// What the WAT example prints, registered as a secret of the wasm order.
const WAT_SECRET: &str = "from a WAT guest";

/// Every byte string that must appear nowhere in the state folder.
fn forbidden() -> Vec<String> {
    let mut list = Vec::new();
    for secret in [DB_PASSWORD, DEPLOY_KEY, GITHUB_TOKEN, WAT_SECRET] {
        list.push(secret.to_owned());
        list.push(STANDARD.encode(secret).trim_end_matches('=').to_owned());
        list.push(URL_SAFE_NO_PAD.encode(secret));
        let json = serde_json::to_string(secret).unwrap();
        list.push(json[1..json.len() - 1].to_owned());
    }
    list.push("correct%20horse%2Fbattery%2Bstaple%21".to_owned());
    list.push("AbCdEf0123456789xyz".to_owned());
    list
}

fn files_under(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, found);
        } else {
            found.push(path);
        }
    }
}

#[test]
fn secrets_printed_in_every_form_are_stored_nowhere() {
    let sandbox = Sandbox::new();
    let ssm = STANDARD.encode(serde_json::json!({ "DB_PASSWORD": DB_PASSWORD }).to_string());
    let secrets = sandbox.write_secrets(serde_json::json!({
        "aws:::ssm:/db": ssm,
        "aws:::secretd:deploy-key": DEPLOY_KEY,
        "aws:::secretd:wat/greeting": WAT_SECRET,
    }));
    let cmds = [
        r#"echo "plain: $DB_PASSWORD""#,
        r#"printf 'base64: %s\n' "$(printf %s "$DB_PASSWORD" | base64 -w0)""#,
        r#"printf 'base64 shifted: %s\n' "$(printf 'xy%s' "$DB_PASSWORD" | base64 -w0)""#,
        r#"python3 -c 'import json, os, urllib.parse; print("json:", json.dumps({"key": os.environ["DEPLOY_KEY"]})); print("url: https://h/?p=" + urllib.parse.quote(os.environ["DB_PASSWORD"], safe=""))'"#,
        r#"printf 'split: %s' "${GITHUB_TOKEN%????????}"; sleep 0.3; printf '%s :end\n' "${GITHUB_TOKEN#????????????}""#,
        r#"echo "multi-line:"; echo "$DEPLOY_KEY""#,
        r#"echo "the rest is intact""#,
        r#"printf '{"kind":"leak","message":"pw %s","data":{"token":"%s"}}' "$DB_PASSWORD" "$GITHUB_TOKEN" > "$SLUICE_EVENTS_DIR/1.json""#,
        r#"echo "$DB_PASSWORD" >&2; exit 3"#,
    ];
    let job = serde_json::json!({ "orders": [
        { "order_name": "leaky", "timeout": 30, "cmds": cmds,
          "env_vars": { "GITHUB_TOKEN": GITHUB_TOKEN },
          "ssm_paths": ["/db"], "secret_manager_paths": ["deploy-key"] },
        { "order_name": "guest", "timeout": 30, "code_dir": examples().join("../guests"),
          "wasm": { "module": "wat/hello.wat" },
          "secret_manager_paths": ["wat/greeting"] },
    ]});
    let job = sandbox.write_job("job.json", &job.to_string());
    // The run's report is written into the state folder, to be searched with the rest.
    let report = sandbox.state().join("report.html");
    let output = sandbox.run(
        &job,
        &[
            "--secrets",
            secrets.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
    );
    let done = done_of(&output);
    assert_eq!(done.status, JobStatus::Failed);
    assert_eq!(done.orders[1].status, OrderStatus::Succeeded);
    let report = std::fs::read_to_string(report).unwrap();
    assert!(report.contains("plain: ***\n"), "{report}");

    let log = sandbox.log_of(&done, "leaky");
    for kept in [
        "plain: ***\n",
        "base64: ***",
        "base64 shifted: ",
        "json: {\"key\": \"***\"}",
        "url: https://h/?p=***\n",
        "split: *** :end\n",
        "multi-line:\n***\n",
        "the rest is intact\n",
    ] {
        assert!(log.contains(kept), "{kept:?} missing from:\n{log}");
    }
    let guest = sandbox.log_of(&done, "guest");
    assert!(guest.contains("hello ***\n"), "{guest}");

    let mut files = Vec::new();
    files_under(&sandbox.state(), &mut files);
    assert!(files.len() > 10, "the run left its state: {files:?}");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    for secret in forbidden() {
        for file in &files {
            let bytes = std::fs::read(file).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret:?} found in {}",
                file.display()
            );
        }
        assert!(
            !stdout.contains(&secret) && !stderr.contains(&secret),
            "{secret:?} printed"
        );
    }
}

#[test]
fn secrets_in_the_encodings_tools_print_by_default_are_masked() {
    // Each of these reached the stored log before issue 15: base64 wrapped at 76
    // columns, Python's quote() (keeps `/`) and json.dumps (`\u00e4`), lower-case `%xx`,
    // hex from od, base32 and a string field of a JSON-document secret.
    const PASSWORD: &str = "pässwörd/for-the-db-2026";
    let sandbox = Sandbox::new();
    let document = serde_json::json!({"user": "deploy", "password": PASSWORD}).to_string();
    let cmds = [
        r#"printf 'pushed-across-the-76-column-line-break-of-base64-output-%s' "$DB_PASSWORD" | base64"#,
        r#"printf 'and-of-base32-%s' "$DB_PASSWORD" | base32"#,
        r#"python3 -c 'import os, urllib.parse; print("quote:", urllib.parse.quote(os.environ["DB_PASSWORD"]))'"#,
        r#"python3 -c 'import os, json; print("json:", json.dumps(os.environ["DB_PASSWORD"]))'"#,
        r#"python3 -c 'import os; print("lower:", "".join("%%%02x" % b for b in os.environ["DB_PASSWORD"].encode()))'"#,
        r#"printf %s "$DB_PASSWORD" | od -An -tx1"#,
        r#"python3 -c 'import os, json; print("field:", json.loads(os.environ["DB_CREDENTIALS"])["password"])'"#,
        r#"echo "the rest is intact""#,
    ];
    let job = serde_json::json!({ "orders": [
        { "order_name": "leaky", "timeout": 30, "cmds": cmds,
          "env_vars": { "DB_PASSWORD": PASSWORD, "DB_CREDENTIALS": document } },
    ]});
    let job = sandbox.write_job("job.json", &job.to_string());
    let done = done_of(&sandbox.run(&job, &[]));
    let log = sandbox.log_of(&done, "leaky");
    assert_eq!(done.status, JobStatus::Succeeded, "{log}");
    assert!(log.contains("the rest is intact"), "{log}");
    let joined: String = log.chars().filter(|c| *c != '\n').collect();
    let hex: Vec<String> = PASSWORD.bytes().map(|b| format!("{b:02x}")).collect();
    let wrapped_b64 = STANDARD.encode(format!(
        "pushed-across-the-76-column-line-break-of-base64-output-{PASSWORD}"
    ));
    let wrapped_b32 = data_encoding::BASE32.encode(format!("and-of-base32-{PASSWORD}").as_bytes());
    for leak in [
        PASSWORD.to_owned(),
        "p%C3%A4ssw%C3%B6rd/for-the-db-2026".to_owned(),
        "p\\u00e4ssw\\u00f6rd/for-the-db-2026".to_owned(),
        hex.iter().map(|h| format!("%{h}")).collect::<String>(),
        hex.join(" "),
        // The characters that depend on the password alone.
        wrapped_b64[76..wrapped_b64.len() - 4].to_owned(),
        wrapped_b32[24..wrapped_b32.len() - 8].to_owned(),
    ] {
        assert!(!joined.contains(&leak), "{leak:?} is in the log:\n{log}");
    }
}
