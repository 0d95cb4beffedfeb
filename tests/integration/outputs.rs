//! Outputs to dependents end to end: values an order writes to `$SLUICE_OUTPUT` (or a
//! module to `/sluice/output`) reaching the later orders that take them as `inputs`, in
//! the done document unless they hold a secret, and what fails: a missing input (before the
//! consumer runs anything), a file over the limit, a malformed file, a link.

use sha2::{Digest, Sha256};
use sluice_contract::result::{DoneDoc, DoneOrder};
use sluice_contract::{JobStatus, OrderStatus};

use crate::util::{Sandbox, done_of};

fn order<'a>(done: &'a DoneDoc, name: &str) -> &'a DoneOrder {
    done.orders.iter().find(|o| o.order_name == name).unwrap()
}

#[test]
fn lines_and_blocks_reach_the_orders_that_take_them() {
    let sandbox = Sandbox::new();
    let marks = sandbox.path().display().to_string();
    let job = serde_json::json!({"orders": [
        {"order_name": "plan", "queue_id": "p", "timeout": 10, "cmds": [
            "echo plan_file=plans/42.tfplan >> \"$SLUICE_OUTPUT\"",
            "printf 'summary<<EOF\\n2 to add, 0 to destroy\\r\\nwith = signs\\nEOF\\n' >> \"$SLUICE_OUTPUT\"",
            "echo changes=2 >> \"$SLUICE_OUTPUT\""
        ]},
        {"order_name": "review", "timeout": 10, "dependencies": ["plan"], "cmds": ["true"]},
        {"order_name": "apply", "timeout": 10, "depends": "review.succeeded",
         "inputs": {"PLAN": "plan.plan_file", "SUMMARY": "p.summary"},
         "cmds": [format!("printf '%s|%s' \"$PLAN\" \"$SUMMARY\" > {marks}/applied")]}
    ]});
    let job = sandbox.write_job_with_marks("job.json", &job.to_string());
    let output = sandbox.run(&job, &[]);
    let done = done_of(&output);
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    let summary = String::from_utf8_lossy(&output.stderr);
    assert!(
        summary.contains("outputs: changes, plan_file, summary\n"),
        "{summary}"
    );
    // The grandchild got both, the block's lines as written joined by `\n`.
    assert_eq!(
        std::fs::read_to_string(sandbox.path().join("applied")).unwrap(),
        "plans/42.tfplan|2 to add, 0 to destroy\r\nwith = signs"
    );
    let plan = order(&done, "plan");
    assert_eq!(plan.outputs.len(), 3);
    assert_eq!(plan.outputs["plan_file"], "plans/42.tfplan");
    assert_eq!(plan.outputs["changes"], "2");
    assert!(
        plan.outputs_key
            .as_deref()
            .unwrap()
            .starts_with("tmp/outputs/")
    );
    assert!(order(&done, "review").outputs_key.is_none());
    // The consumer's log says what it took (not the values).
    let log = sandbox.log_of(&done, "apply");
    assert!(
        log.contains("input PLAN from plan.plan_file (15 bytes)"),
        "{log}"
    );
}

#[test]
fn a_missing_input_fails_the_consumer_before_it_runs() {
    let sandbox = Sandbox::new();
    let marks = sandbox.path().display().to_string();
    let job = serde_json::json!({"orders": [
        {"order_name": "plan", "timeout": 10, "cmds": ["echo a=1 >> \"$SLUICE_OUTPUT\""]},
        {"order_name": "lint", "timeout": 10, "cmds": ["exit 0"]},
        {"order_name": "never", "timeout": 10, "depends": "lint.failed", "cmds": ["echo b=2 >> \"$SLUICE_OUTPUT\""]},
        {"order_name": "wrong_name", "timeout": 10, "dependencies": ["plan"], "must_succeed": false,
         "inputs": {"B": "plan.b"}, "cmds": [format!("touch {marks}/ran-wrong-name")]},
        {"order_name": "from_skipped", "timeout": 10, "depends": "never.ended && plan.succeeded",
         "must_succeed": false,
         "inputs": {"B": "never.b"}, "cmds": [format!("touch {marks}/ran-from-skipped")]}
    ]});
    let job = sandbox.write_job_with_marks("job.json", &job.to_string());
    let done = done_of(&sandbox.run(&job, &[]));
    for (name, reason) in [
        ("wrong_name", "missing input: plan.b"),
        ("from_skipped", "missing input: never.b"),
    ] {
        let consumer = order(&done, name);
        assert_eq!(
            (consumer.status, consumer.reason.as_deref()),
            (OrderStatus::Failed, Some(reason))
        );
        assert!(
            !sandbox
                .path()
                .join(format!("ran-{}", name.replace('_', "-")))
                .exists()
        );
    }
    assert_eq!(order(&done, "never").status, OrderStatus::Skipped);
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
}

#[test]
fn bad_output_files_fail_the_order_and_say_why() {
    let sandbox = Sandbox::new();
    let job = serde_json::json!({"orders": [
        {"order_name": "too_big", "timeout": 20, "must_succeed": false, "cmds": [
            "head -c 1048577 /dev/zero | tr '\\0' a | sed 's/^/x=/' >> \"$SLUICE_OUTPUT\""
        ]},
        {"order_name": "malformed", "timeout": 10, "must_succeed": false, "cmds": [
            "printf 'ok=1\\njust words\\n' >> \"$SLUICE_OUTPUT\""
        ]},
        {"order_name": "unclosed", "timeout": 10, "must_succeed": false, "cmds": [
            "printf 'notes<<END\\nno end\\n' >> \"$SLUICE_OUTPUT\""
        ]},
        {"order_name": "link", "timeout": 10, "must_succeed": false, "cmds": [
            "echo secret=leaked > ../elsewhere && rm \"$SLUICE_OUTPUT\" && ln -s \"$PWD/../elsewhere\" \"$SLUICE_OUTPUT\""
        ]},
        {"order_name": "fifo", "timeout": 10, "must_succeed": false, "cmds": [
            "rm \"$SLUICE_OUTPUT\" && mkfifo \"$SLUICE_OUTPUT\""
        ]},
        {"order_name": "folder", "timeout": 10, "must_succeed": false, "cmds": [
            "rm \"$SLUICE_OUTPUT\" && mkdir \"$SLUICE_OUTPUT\""
        ]},
        {"order_name": "moved_folder", "timeout": 10, "must_succeed": false, "cmds": [
            "d=$(dirname \"$SLUICE_OUTPUT\"); mkdir ../elsewhere2; echo stolen=yes > ../elsewhere2/output; mv \"$d\" ../old && ln -s \"$PWD/../elsewhere2\" \"$d\""
        ]},
        {"order_name": "failing", "timeout": 10, "must_succeed": false, "cmds": [
            "echo partial=yes >> \"$SLUICE_OUTPUT\"; exit 4"
        ]}
    ]});
    let job = sandbox.write_job("job.json", &job.to_string());
    // Without the sandbox: these are the worker's own defences, which hold where there is
    // none (AWS, `--sandbox off`). In one, the output's folder is a mount point the order
    // cannot move at all.
    let done = done_of(&sandbox.run(&job, &["--sandbox", "off"]));
    for (name, reason) in [
        (
            "too_big",
            "outputs not published: the output file holds more than the 1048576 bytes an order may publish",
        ),
        (
            "malformed",
            "outputs not published: the output file's line 2: neither `name=value` nor `name<<DELIMITER`",
        ),
        (
            "unclosed",
            "outputs not published: the output file's line 1: no line \"END\" closes the value begun here",
        ),
        (
            "link",
            "outputs not published: reading its output file: Too many levels of symbolic links (os error 40)",
        ),
    ]
    .into_iter()
    .chain(["fifo", "folder"].map(|name| (name, "")))
    {
        let failed = order(&done, name);
        let got = failed.reason.as_deref().unwrap_or_default();
        let expected = match reason {
            "" => got.starts_with("outputs not published: reading its output file: ")
                && got.ends_with("/publish/output is not a regular file"),
            reason => got == reason,
        };
        assert!(expected, "{name}: {got}");
        assert_eq!((failed.status, failed.exit_code), (OrderStatus::Failed, Some(0)), "{name}");
        let reason = got;
        assert!(failed.outputs.is_empty() && failed.outputs_key.is_none());
        assert!(sandbox.log_of(&done, name).contains(reason), "{name}");
    }
    // The folder replaced by a link to another: read as it was made (the file it held
    // was moved away with it), so nothing is published and nothing of the other read.
    let moved = order(&done, "moved_folder");
    assert_eq!(moved.status, OrderStatus::Succeeded, "{moved:?}");
    assert!(moved.outputs.is_empty() && moved.outputs_key.is_none());
    // A failed order still publishes what it wrote (its dependents may run on a condition).
    let failing = order(&done, "failing");
    assert_eq!(failing.status, OrderStatus::Failed);
    assert_eq!(failing.outputs["partial"], "yes");
}

#[test]
fn an_output_holding_a_secret_is_withheld_from_the_done_document_but_passed_on() {
    const TOKEN: &str = "tok-3f9a61c2e8d54b7a";
    let sandbox = Sandbox::new();
    let marks = sandbox.path().display().to_string();
    let job = serde_json::json!({"orders": [
        {"order_name": "login", "timeout": 10, "env_vars": {"API_TOKEN": TOKEN}, "cmds": [
            "echo \"header=Bearer $API_TOKEN\" >> \"$SLUICE_OUTPUT\"",
            "echo user=ci >> \"$SLUICE_OUTPUT\""
        ]},
        {"order_name": "call", "timeout": 10, "dependencies": ["login"],
         "inputs": {"HEADER": "login.header"}, "cmds": [
            "echo \"using $HEADER\"",
            format!("printf %s \"$HEADER\" | sha256sum | cut -c1-64 > {marks}/header.sha256")
        ]}
    ]});
    let job = sandbox.write_job_with_marks("job.json", &job.to_string());
    let output = sandbox.run(&job, &[]);
    let done = done_of(&output);
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    let login = order(&done, "login");
    assert_eq!(login.withheld_outputs, ["header"]);
    assert_eq!(login.outputs.keys().collect::<Vec<_>>(), ["user"]);
    // The consumer got the value whole, and its log masks it (the whole value: it is one
    // of the consumer's secrets now).
    let expected = data_encoding::HEXLOWER.encode(&Sha256::digest(format!("Bearer {TOKEN}")));
    assert_eq!(
        std::fs::read_to_string(sandbox.path().join("header.sha256"))
            .unwrap()
            .trim(),
        expected
    );
    let log = sandbox.log_of(&done, "call");
    assert!(log.contains("using ***\n"), "{log}");
    assert!(!log.contains(TOKEN) && !String::from_utf8_lossy(&output.stdout).contains(TOKEN));
    assert!(!String::from_utf8_lossy(&output.stderr).contains(TOKEN));
}

/// Writes `greeting=hello from wasm` to `/sluice/output`: the events folder is descriptor
/// 3, `/sluice` 4.
const PUBLISHES: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "output")
  (data (i32.const 1056) "greeting=hello from wasm\n")
  (func (export "_start") (local $errno i32)
    (local.set $errno (call $path_open (i32.const 4) (i32.const 0)
      (i32.const 1024) (i32.const 6) (i32.const 9)
      (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 16)))
    (if (local.get $errno) (then (call $proc_exit (local.get $errno))))
    (i32.store (i32.const 0) (i32.const 1056))
    (i32.store (i32.const 4) (i32.const 25))
    (call $proc_exit (call $fd_write (i32.load (i32.const 16)) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

#[test]
fn a_module_publishes_through_sluice_output() {
    let sandbox = Sandbox::new();
    let code = sandbox.path().join("code");
    std::fs::create_dir_all(&code).unwrap();
    std::fs::write(code.join("publish.wat"), PUBLISHES).unwrap();
    let marks = sandbox.path().display().to_string();
    let job = serde_json::json!({"orders": [
        {"order_name": "guest", "code_dir": "code", "timeout": 30,
         "wasm": {"module": "publish.wat"}},
        {"order_name": "after", "timeout": 10, "dependencies": ["guest"],
         "inputs": {"GREETING": "guest.greeting"},
         "cmds": [format!("printf %s \"$GREETING\" > {marks}/greeting")]}
    ]});
    let job = sandbox.write_job_with_marks("job.json", &job.to_string());
    let done = done_of(&sandbox.run(&job, &[]));
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    assert_eq!(order(&done, "guest").outputs["greeting"], "hello from wasm");
    assert_eq!(
        std::fs::read_to_string(sandbox.path().join("greeting")).unwrap(),
        "hello from wasm"
    );
}

#[test]
fn values_named_like_secrets_are_withheld_and_masked() {
    let sandbox = Sandbox::new();
    let job = serde_json::json!({"orders": [
        {"order_name": "login", "timeout": 10, "cmds": [
            "echo session_token=minted-at-run-time-1234 >> \"$SLUICE_OUTPUT\"",
            "echo user=ci >> \"$SLUICE_OUTPUT\""
        ]},
        {"order_name": "call", "timeout": 10, "dependencies": ["login"],
         "inputs": {"SESSION": "login.session_token", "GH_TOKEN": "login.user"},
         "cmds": ["echo \"session $SESSION\"; echo \"user $GH_TOKEN\""]}
    ]});
    let job = sandbox.write_job_with_marks("job.json", &job.to_string());
    let done = done_of(&sandbox.run(&job, &[]));
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    let login = order(&done, "login");
    // Named like a secret: withheld, though no registered secret is in it.
    assert_eq!(login.withheld_outputs, ["session_token"]);
    assert_eq!(login.outputs.keys().collect::<Vec<_>>(), ["user"]);
    // Masked in the consumer's log: a value its producer marked, and one the consumer
    // takes under a secret's name (too short to mask: said so).
    let log = sandbox.log_of(&done, "call");
    assert!(log.contains("session ***\n"), "{log}");
    assert!(log.contains("the secret GH_TOKEN is shorter than"), "{log}");
}

#[test]
fn a_retried_producer_is_taken_from_its_last_attempt() {
    let sandbox = Sandbox::new();
    let counter = sandbox.path().join("count");
    let job = serde_json::json!({"orders": [
        {"order_name": "flaky", "timeout": 10, "retry": {"limit": 1, "backoff": 0.1},
         "cmds": [format!(
            "n=$(cat {c} 2>/dev/null || echo 0); echo $((n+1)) > {c}; [ $n -ge 1 ] || {{ echo first=1 >> \"$SLUICE_OUTPUT\"; exit 1; }}",
            c = counter.display()
         )]},
        {"order_name": "after", "timeout": 10, "dependencies": ["flaky"],
         "inputs": {"FIRST": "flaky.first"}, "cmds": ["echo never"]}
    ]});
    let job = sandbox.write_job_with_marks("job.json", &job.to_string());
    let done = done_of(&sandbox.run(&job, &[]));
    // The first attempt published and failed; the second, which decided, published nothing.
    let flaky = order(&done, "flaky");
    assert_eq!(
        (flaky.status, flaky.attempts.len()),
        (OrderStatus::Succeeded, 2)
    );
    assert!(flaky.outputs.is_empty() && flaky.outputs_key.is_none());
    let after = order(&done, "after");
    assert_eq!(
        (after.status, after.reason.as_deref()),
        (OrderStatus::Failed, Some("missing input: flaky.first"))
    );
}

#[test]
fn an_input_too_large_for_a_commands_environment_fails_before_it_runs() {
    let sandbox = Sandbox::new();
    let marks = sandbox.path().display().to_string();
    let job = serde_json::json!({"orders": [
        {"order_name": "plan", "timeout": 10, "cmds": [
            "printf 'big=%0200000d\\n' 0 >> \"$SLUICE_OUTPUT\""
        ]},
        {"order_name": "apply", "timeout": 10, "dependencies": ["plan"],
         "inputs": {"BIG": "plan.big"}, "cmds": [format!("touch {marks}/ran")]}
    ]});
    let job = sandbox.write_job_with_marks("job.json", &job.to_string());
    let done = done_of(&sandbox.run(&job, &[]));
    let apply = order(&done, "apply");
    assert_eq!(
        (apply.status, apply.reason.as_deref()),
        (
            OrderStatus::Failed,
            Some(
                "input BIG (plan.big) is 200000 bytes: a command's variable holds at most 131067 (Linux's limit); pass a larger value as a file"
            )
        )
    );
    assert!(!sandbox.path().join("ran").exists());
}

#[test]
fn the_done_document_shows_outputs_up_to_its_bounds_and_names_where_the_rest_are() {
    let sandbox = Sandbox::new();
    // 70 orders of 61 KiB each: more than the 4 MiB the document shows; one of 70 KiB,
    // more than an order's 64 KiB.
    let mut orders: Vec<serde_json::Value> = (0..70)
        .map(|i| {
            serde_json::json!({"order_name": format!("o{i}"), "timeout": 10,
            "cmds": ["printf 'v=%062000d\\n' 0 >> \"$SLUICE_OUTPUT\""]})
        })
        .collect();
    orders.insert(
        0,
        serde_json::json!({"order_name": "huge", "timeout": 10,
        "cmds": ["printf 'v=%070000d\\n' 0 >> \"$SLUICE_OUTPUT\""]}),
    );
    let job = sandbox.write_job_with_marks(
        "job.json",
        &serde_json::json!({"orders": orders}).to_string(),
    );
    let output = sandbox.run(&job, &[]);
    let done = done_of(&output);
    assert_eq!(done.status, JobStatus::Succeeded);
    assert!(done.orders.iter().all(|o| o.outputs_key.is_some()));
    let huge = order(&done, "huge");
    assert!(huge.outputs.is_empty());
    let shown = done.orders.iter().filter(|o| !o.outputs.is_empty()).count();
    // 4 MiB / (62 000 bytes and the document's braces) = 67 shown, in order number.
    assert_eq!(shown, 67);
    assert!(order(&done, "o66").outputs.contains_key("v"));
    assert!(order(&done, "o67").outputs.is_empty());
    let summary = String::from_utf8_lossy(&output.stderr);
    assert!(summary.contains("outputs at tmp/outputs/"), "{summary}");
}

#[test]
fn an_input_may_not_replace_a_credential() {
    let sandbox = Sandbox::new();
    let secrets = sandbox.write_secrets(serde_json::json!({
        "aws:::secretd:deploy-key": "k3y-from-the-secrets-file",
    }));
    let job = serde_json::json!({"orders": [
        {"order_name": "plan", "timeout": 10, "cmds": ["echo key=forged >> \"$SLUICE_OUTPUT\""]},
        {"order_name": "apply", "timeout": 10, "dependencies": ["plan"],
         "secret_manager_paths": ["deploy-key"],
         "inputs": {"DEPLOY_KEY": "plan.key"}, "cmds": ["echo never"]}
    ]});
    let job = sandbox.write_job_with_marks("job.json", &job.to_string());
    let done = done_of(&sandbox.run(&job, &["--secrets", secrets.to_str().unwrap()]));
    let apply = order(&done, "apply");
    assert_eq!(
        (apply.status, apply.reason.as_deref()),
        (
            OrderStatus::Failed,
            Some(
                "input DEPLOY_KEY would replace the order's own variable DEPLOY_KEY (from its credentials): rename the input"
            )
        )
    );
}
