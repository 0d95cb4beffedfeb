//! The SAM template (`infra/template.yaml`) and the code agree: every variable a function
//! is given is one its code reads (and every one it needs is given), names in variables
//! are the names of the resources, table keys and TTL attributes are the ones the adapters
//! use, the results notification matches the callback layout, and each role reaches the
//! key prefixes its code writes and reads.
//!
//! The template is read with cfn-lint's own decoder (`scripts/test` installs cfn-lint), so
//! the short intrinsic forms (`!Sub`, `!Ref`) arrive as CloudFormation JSON; `!Sub` strings
//! are then evaluated with sample parameters.

use sluice_contract::AttemptId;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use sluice_aws::AwsSettings;
use sluice_aws::schema::{
    EVENTS_PARTITION, EVENTS_SORT, LOCKS_PARTITION, ORDERS_PARTITION, ORDERS_SORT, TTL_ATTRIBUTE,
};
use sluice_contract::{ExecutionTarget, OrderNum, RunId, keys};

pub(crate) fn template() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/template.yaml");
    let output = Command::new("python3")
        .arg("-c")
        .arg("import json, sys\nfrom cfnlint.decode import decode\ntemplate, problems = decode(sys.argv[1])\nassert not problems, problems\nprint(json.dumps(template))")
        .arg(&path)
        .output()
        .expect("python3 runs (scripts/test installs cfn-lint)");
    assert!(
        output.status.success(),
        "reading the template with cfn-lint: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Parameters of the sample deployment that differ from their defaults: every option on.
const SAMPLE_PARAMETERS: &[(&str, &str)] = &[(
    "GitLayerArn",
    "arn:aws:lambda:eu-west-1:123456789012:layer:git:1",
)];

/// A value with `!Sub` and `!Ref` of parameters evaluated for the sample deployment.
fn evaluate(template: &Value, value: &Value) -> String {
    let parameters = &template["Parameters"];
    let resolve = |name: &str| -> String {
        match name {
            "AWS::AccountId" => "123456789012".to_owned(),
            "AWS::Region" => "eu-west-1".to_owned(),
            "AWS::Partition" => "aws".to_owned(),
            other => match SAMPLE_PARAMETERS.iter().find(|(name, _)| *name == other) {
                Some((_, value)) => (*value).to_owned(),
                None => match &parameters[other]["Default"] {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => panic!("{other} is not a parameter with a default"),
                },
            },
        }
    };
    match value {
        Value::String(s) => s.clone(),
        Value::Object(o) if o.contains_key("Ref") => resolve(o["Ref"].as_str().unwrap()),
        Value::Object(o) if o.contains_key("Fn::Sub") => {
            let mut text = o["Fn::Sub"]
                .as_str()
                .expect("plain !Sub strings")
                .to_owned();
            while let Some(start) = text.find("${") {
                let end = start + text[start..].find('}').unwrap();
                let name = text[start + 2..end].to_owned();
                text.replace_range(start..=end, &resolve(&name));
            }
            text
        }
        other => panic!("cannot evaluate {other}"),
    }
}

/// The memory, in MB, the template gives the function `resource`.
pub(crate) fn memory_mb(template: &Value, resource_name: &str) -> u64 {
    let memory = &resource(template, resource_name)["Properties"]["MemorySize"];
    memory
        .as_u64()
        .unwrap_or_else(|| evaluate(template, memory).parse().unwrap())
}

fn resource<'t>(template: &'t Value, name: &str) -> &'t Value {
    let found = &template["Resources"][name];
    assert!(found.is_object(), "the template has no {name}");
    found
}

/// Whether the template's condition `name` holds for the sample deployment.
fn condition(template: &Value, name: &str) -> bool {
    fn holds(template: &Value, expression: &Value) -> bool {
        let object = expression.as_object().expect("a condition expression");
        if let Some(operand) = object.get("Fn::Not") {
            !holds(template, &operand[0])
        } else if let Some(operands) = object.get("Fn::Equals") {
            evaluate(template, &operands[0]) == evaluate(template, &operands[1])
        } else if let Some(other) = object.get("Condition") {
            condition(template, other.as_str().unwrap())
        } else {
            panic!("cannot evaluate the condition {expression}")
        }
    }
    holds(template, &template["Conditions"][name])
}

/// `value` with a top-level `!If` decided for the sample deployment; `None` for
/// `AWS::NoValue`.
fn choose(template: &Value, value: &Value) -> Option<Value> {
    let chosen = match value.get("Fn::If") {
        Some(branches) => {
            let name = branches[0].as_str().unwrap();
            branches[if condition(template, name) { 1 } else { 2 }].clone()
        }
        None => value.clone(),
    };
    (chosen.get("Ref") != Some(&Value::from("AWS::NoValue"))).then_some(chosen)
}

/// A function's environment, evaluated.
fn environment(template: &Value, function: &str) -> BTreeMap<String, String> {
    resource(template, function)["Properties"]["Environment"]["Variables"]
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), evaluate(template, &choose(template, v)?))))
        .collect()
}

/// Every resource ARN a function's (or role's) policy statements allow, evaluated.
fn allowed(template: &Value, statements: &Value) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    for statement in statements.as_array().unwrap() {
        let actions: Vec<String> = match &statement["Action"] {
            Value::String(a) => vec![a.clone()],
            Value::Array(list) => list
                .iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect(),
            _ => continue,
        };
        let resources = match &statement["Resource"] {
            Value::Array(list) => list.clone(),
            Value::Null => continue,
            single => vec![single.clone()],
        };
        for r in resources {
            out.push((actions.clone(), evaluate(template, &r)));
        }
    }
    out
}

fn function_statements<'t>(template: &'t Value, function: &str) -> &'t Value {
    &resource(template, function)["Properties"]["Policies"][0]["Statement"]
}

fn can(rules: &[(Vec<String>, String)], action: &str, object: &str) -> bool {
    rules
        .iter()
        .any(|(actions, arn)| actions.iter().any(|a| a == action) && arn_matches(arn, object))
}

/// IAM's resource matching: `*` stands for any run of characters, `/` included.
fn arn_matches(pattern: &str, arn: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == arn,
        Some((head, rest)) => {
            arn.starts_with(head)
                && (head.len()..=arn.len())
                    .any(|at| arn.is_char_boundary(at) && arn_matches(rest, &arn[at..]))
        }
    }
}

/// The AWS benchmark prices each function's time at the memory the template gives it.
#[test]
fn the_bill_finds_each_functions_memory_in_the_template() {
    let template = template();
    for function in crate::support::billing::Function::ALL {
        let memory = memory_mb(&template, function.resource());
        assert!((128..=10240).contains(&memory), "{function:?}: {memory} MB");
    }
}

#[test]
fn control_plane_functions_get_exactly_the_settings_their_code_reads() {
    let template = template();
    for function in [
        "InitJobFunction",
        "OrchestratorFunction",
        "WatchdogCheckFunction",
    ] {
        let env = environment(&template, function);
        let asked = RefCell::new(BTreeSet::new());
        let settings = AwsSettings::from_lookup(|name| {
            asked.borrow_mut().insert(name.to_owned());
            env.get(name).cloned()
        })
        .unwrap_or_else(|e| panic!("{function}: {e}"));
        // init-job also runs git, which is given the variables that locate it.
        let read_by_git = |name: &str| {
            function == "InitJobFunction" && sluice_engine::git::HOST_VARIABLES.contains(&name)
        };
        let unread: Vec<_> = env
            .keys()
            .filter(|k| !asked.borrow().contains(*k) && !read_by_git(k))
            .collect();
        assert!(
            unread.is_empty(),
            "{function} is given {unread:?}, which nothing reads"
        );

        // The names in the settings are the resources' names.
        let name_of = |resource_name: &str, property: &str| {
            evaluate(
                &template,
                &resource(&template, resource_name)["Properties"][property],
            )
        };
        assert_eq!(
            settings.internal_bucket,
            name_of("InternalBucket", "BucketName")
        );
        assert_eq!(settings.done_bucket, name_of("DoneBucket", "BucketName"));
        assert_eq!(settings.orders_table, name_of("OrdersTable", "TableName"));
        assert_eq!(settings.events_table, name_of("EventsTable", "TableName"));
        assert_eq!(settings.locks_table, name_of("LocksTable", "TableName"));
        assert_eq!(
            settings.worker_function,
            name_of("WorkerFunction", "FunctionName")
        );
        // init-job alone has modules compiled.
        let compile_function = name_of("CompileFunction", "FunctionName");
        assert_eq!(
            settings.compile_function.as_deref(),
            (function == "InitJobFunction").then_some(&*compile_function),
            "{function}"
        );
        assert_eq!(
            settings.codebuild_project,
            name_of("CodeBuildWorker", "Name")
        );
        assert!(
            settings.watchdog_state_machine.ends_with(&format!(
                ":stateMachine:{}",
                name_of("WatchdogStateMachine", "Name")
            )),
            "{}",
            settings.watchdog_state_machine
        );
    }
}

#[test]
fn the_worker_gets_what_its_code_reads_and_retries_nothing_itself() {
    let template = template();
    let env = environment(&template, "WorkerFunction");
    let asked = RefCell::new(BTreeSet::new());
    let config = sluice_worker_aws::settings::worker_config(
        |name| {
            asked.borrow_mut().insert(name.to_owned());
            env.get(name).cloned()
        },
        Path::new("/tmp"),
    )
    .unwrap();
    assert_eq!(config.max_log_bytes, 64 << 20);
    for name in env.keys() {
        assert!(
            asked.borrow().contains(name),
            "the worker is given {name}, which it never reads"
        );
    }
    let invoke = &resource(&template, "WorkerFunction")["Properties"]["EventInvokeConfig"];
    assert_eq!(invoke["MaximumRetryAttempts"], 0);
    let buildspec = evaluate(
        &template,
        &resource(&template, "CodeBuildWorker")["Properties"]["Source"]["BuildSpec"],
    );
    assert!(buildspec.contains("./worker --from-env"), "{buildspec}");
}

/// A watch may last as long as its run: no error of the check may end the loop (a Retry
/// on every error, then a Catch that waits and checks again), and only `done` leaves it.
#[test]
fn no_error_ends_a_watch() {
    let template = template();
    let definition = &resource(&template, "WatchdogStateMachine")["Properties"]["Definition"];
    let states = &definition["States"];
    let check = &states["Check"];
    assert_eq!(check["Type"], "Task");
    let every_error = serde_json::json!(["States.ALL"]);
    assert!(
        check["Retry"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["ErrorEquals"] == every_error),
        "{check}"
    );
    let caught = check["Catch"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["ErrorEquals"] == every_error)
        .expect("a Catch for every error");
    let recover = &states[caught["Next"].as_str().unwrap()];
    assert_eq!(recover["Type"], "Wait");
    assert_eq!(recover["Next"], "Check", "back to the check");
    let finishing: Vec<&String> = states
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, state)| state["Type"] == "Succeed" || state["Type"] == "Fail")
        .map(|(name, _)| name)
        .collect();
    assert_eq!(finishing.len(), 1, "{finishing:?}");
    let choice = &states[check["Next"].as_str().unwrap()];
    assert_eq!(choice["Choices"][0]["Variable"], "$.done");
    assert_eq!(&choice["Choices"][0]["Next"], finishing[0]);
}

/// A watch's first check waits the `wait_seconds` init-job gives it (a check at once would
/// find a run that has only just started, for a read of its lock and rows); a watch started
/// without one — by an init-job from before — is checked at once, as before.
#[test]
fn a_watch_waits_before_its_first_check() {
    let template = template();
    let definition = &resource(&template, "WatchdogStateMachine")["Properties"]["Definition"];
    let states = &definition["States"];
    let start = &states[definition["StartAt"].as_str().unwrap()];
    assert_eq!(start["Type"], "Choice", "{start}");
    let when = &start["Choices"][0];
    assert_eq!(when["Variable"], "$.wait_seconds");
    assert_eq!(when["IsPresent"], true);
    let wait = &states[when["Next"].as_str().unwrap()];
    assert_eq!(wait["Type"], "Wait");
    assert_eq!(wait["SecondsPath"], "$.wait_seconds");
    assert_eq!(wait["Next"], "Check");
    assert_eq!(start["Default"], "Check", "no wait_seconds: check at once");
}

/// Run state in the internal bucket outlives the longest job a deployment accepts (it
/// expired a day after init while a job may last 30 days).
#[test]
fn run_state_outlives_the_longest_job() {
    let template = template();
    let rules =
        &resource(&template, "InternalBucket")["Properties"]["LifecycleConfiguration"]["Rules"];
    let tmp = rules
        .as_array()
        .unwrap()
        .iter()
        .find(|rule| rule["Prefix"] == "tmp/")
        .expect("a lifecycle rule for tmp/");
    let days = tmp["ExpirationInDays"].as_u64().unwrap();
    let longest_job_days = sluice_contract::validate::MAX_JOB_TIMEOUT.div_ceil(86_400);
    assert!(
        days > longest_job_days,
        "{days} days for a {longest_job_days}-day job"
    );
}

#[test]
fn tables_have_the_keys_and_ttl_the_adapters_use() {
    let template = template();
    for (table, partition, sort, ttl) in [
        ("OrdersTable", ORDERS_PARTITION, Some(ORDERS_SORT), true),
        ("EventsTable", EVENTS_PARTITION, Some(EVENTS_SORT), true),
        ("LocksTable", LOCKS_PARTITION, None, false),
    ] {
        let properties = &resource(&template, table)["Properties"];
        let keys: Vec<(String, String)> = properties["KeySchema"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["AttributeName"].as_str().unwrap().to_owned(),
                    k["KeyType"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let mut expected = vec![(partition.to_owned(), "HASH".to_owned())];
        if let Some(sort) = sort {
            expected.push((sort.to_owned(), "RANGE".to_owned()));
        }
        assert_eq!(keys, expected, "{table}");
        let spec = &properties["TimeToLiveSpecification"];
        if ttl {
            assert_eq!(spec["AttributeName"], TTL_ATTRIBUTE, "{table}");
            assert_eq!(spec["Enabled"], true, "{table}");
        } else {
            assert!(spec.is_null(), "{table} has no TTL");
        }
    }
}

#[test]
fn results_wake_the_orchestrator_and_roles_reach_the_keys_their_code_uses() {
    let template = template();
    let rules = &resource(&template, "OrchestratorFunction")["Properties"]["Events"]["Results"]["Properties"]
        ["Filter"]["S3Key"]["Rules"];
    let rule = |name: &str| {
        rules
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["Name"] == name)
            .unwrap()["Value"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let run = RunId::generate();
    let order = OrderNum::from_index(0);
    let result_key = keys::result(&run, order, &AttemptId::parse("a1").unwrap());
    assert_eq!(rule("prefix"), keys::CALLBACK_PREFIX);
    assert!(result_key.starts_with(&rule("prefix")) && result_key.ends_with(&rule("suffix")));

    let internal = evaluate(
        &template,
        &resource(&template, "InternalBucket")["Properties"]["BucketName"],
    );
    let done = evaluate(
        &template,
        &resource(&template, "DoneBucket")["Properties"]["BucketName"],
    );
    let object = |key: &str| format!("arn:aws:s3:::{internal}/{key}");
    // Workers hold no data permission at all: not the Lambda's role, not the CodeBuild
    // project's (beyond the worker binary and its own logs). Everything an attempt touches
    // is behind the URLs of its dispatch, presigned with the orchestrator's role.
    let worker_function = &resource(&template, "WorkerFunction")["Properties"];
    assert!(
        worker_function["Policies"].is_null(),
        "the worker Lambda's role: {}",
        worker_function["Policies"]
    );
    // Nor does the compile function: its module and its code's object are behind the
    // URLs of its event, presigned with init-job's role.
    let compile_function = &resource(&template, "CompileFunction")["Properties"];
    assert!(
        compile_function["Policies"].is_null() && compile_function["Role"].is_null(),
        "the compile function's role: {}",
        compile_function["Policies"]
    );
    let codebuild = &resource(&template, "CodeBuildWorkerRole")["Properties"]["Policies"][0]["PolicyDocument"]
        ["Statement"];
    let parameter = |path: String| format!("arn:aws:ssm:eu-west-1:123456789012:parameter{path}");
    let order_key = parameter(format!("/sluice/sops-keys/{run}/{order}"));
    let ticket_key = parameter(format!("/sluice/sops-keys/{run}/tickets/{order}/a1-n"));
    let jobs_key = parameter("/sluice/jobs-key".to_owned());
    for statement in codebuild.as_array().unwrap() {
        let actions = &statement["Action"];
        let resource = &statement["Resource"];
        let logs = (actions.as_array().unwrap_or(&vec![actions.clone()]).iter())
            .all(|a| a.as_str().unwrap().starts_with("logs:"))
            && resource.to_string().contains("CodeBuildWorkerLogs.Arn");
        let binary = *actions == "s3:GetObject"
            && evaluate(&template, resource) == object("artifacts/worker/*");
        let tickets = *actions == "ssm:GetParameters" && {
            let pattern = evaluate(&template, resource);
            arn_matches(&pattern, &ticket_key)
                && !arn_matches(&pattern, &order_key)
                && !arn_matches(&pattern, &jobs_key)
        };
        let decrypt = *actions == "kms:Decrypt"
            && statement["Condition"]["StringEquals"]["kms:ViaService"]
                .to_string()
                .contains("ssm.");
        assert!(
            binary || logs || tickets || decrypt,
            "the CodeBuild role may {statement}"
        );
    }
    assert!(
        worker_function["Role"].is_null(),
        "the worker Lambda's role is the template's"
    );
    let orchestrator = allowed(
        &template,
        function_statements(&template, "OrchestratorFunction"),
    );
    let presigned = [
        ("s3:GetObject", keys::exec_zip(&run, order)),
        ("s3:GetObject", keys::bundle_pack(&run, 0)),
        (
            "s3:PutObject",
            keys::claim(&run, order, &AttemptId::parse("a1").unwrap()),
        ),
        (
            "s3:GetObject",
            keys::claim(&run, order, &AttemptId::parse("a1").unwrap()),
        ),
        ("s3:PutObject", keys::log(&run, order)),
        ("s3:PutObject", result_key.clone()),
        (
            "s3:PutObject",
            sluice_contract::keys::ticket(&run, order, "a1"),
        ),
        (
            "s3:GetObject",
            sluice_contract::keys::ticket(&run, order, "a1"),
        ),
        (
            "s3:DeleteObject",
            sluice_contract::keys::ticket(&run, order, "a1"),
        ),
    ];
    // init-job takes a run's first step, as the orchestrator takes the next.
    let init = allowed(&template, function_statements(&template, "InitJobFunction"));
    for (function, rules) in [("the orchestrator", &orchestrator), ("init-job", &init)] {
        for (action, key) in &presigned {
            assert!(
                can(rules, action, &object(key)),
                "{function} presigns {action} {key}"
            );
        }
        assert!(can(rules, "ssm:GetParameter", &order_key), "{function}");
        assert!(can(rules, "ssm:PutParameter", &ticket_key), "{function}");
    }

    for bundle in [keys::exec_zip(&run, order), keys::bundle_pack(&run, 0)] {
        assert!(can(&init, "s3:PutObject", &object(&bundle)), "{bundle}");
    }
    assert!(can(&init, "s3:PutObject", &object(&keys::trigger(&run))));
    // Modules for the compile function, and its URLs: the module read, the code written.
    let module = "ab".repeat(32);
    let code = keys::compiled_code(&run, ExecutionTarget::Lambda, &module, false);
    for (action, key) in [
        ("s3:PutObject", keys::module_to_compile(&run, &module)),
        ("s3:GetObject", keys::module_to_compile(&run, &module)),
        ("s3:PutObject", code.clone()),
    ] {
        assert!(can(&init, action, &object(&key)), "init-job {action} {key}");
    }
    // The workers of a run's first step read it through URLs init-job presigns.
    assert!(can(&init, "s3:GetObject", &object(&code)));
    let compile_arn = format!(
        "arn:aws:lambda:eu-west-1:123456789012:function:{}",
        evaluate(&template, &compile_function["FunctionName"])
    );
    assert!(can(&init, "lambda:InvokeFunction", &compile_arn));
    // The orchestrator presigns the workers' reads of it, and no write.
    assert!(can(&orchestrator, "s3:GetObject", &object(&code)));
    assert!(
        !can(&orchestrator, "s3:PutObject", &object(&code)),
        "workers are given no URL to write compiled code"
    );
    // Idempotency records: written if absent, read when present, forgotten after a failure.
    let record = object(&keys::idempotency("0123abcd"));
    for action in ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"] {
        assert!(
            can(&init, action, &record),
            "init-job may not {action} {record}"
        );
    }
    // A run's job, kept at init, read back by a rerun, sealed to a key only init-job reads.
    let kept = object(&keys::job(&RunId::generate()));
    for action in ["s3:PutObject", "s3:GetObject"] {
        assert!(
            can(&init, action, &kept),
            "init-job may not {action} {kept}"
        );
        assert!(
            !can(&orchestrator, action, &kept),
            "the orchestrator may {action} {kept}"
        );
    }
    for action in ["ssm:PutParameter", "ssm:GetParameter"] {
        assert!(
            can(&init, action, &jobs_key),
            "init-job may not {action} {jobs_key}"
        );
    }
    for function in ["OrchestratorFunction", "WatchdogCheckFunction"] {
        let rules = allowed(&template, function_statements(&template, function));
        assert!(
            !can(&rules, "ssm:GetParameter", &jobs_key),
            "{function} may read the kept jobs' key"
        );
    }
    // Whoever reads a key that may not exist yet (an idempotency record; a result, a
    // claim; a rerun's done document) must be able to list the bucket, with no condition,
    // or S3 answers 403, not 404, and "not yet" becomes a failure.
    for (function, bucket) in [
        ("InitJobFunction", &internal),
        ("InitJobFunction", &done),
        ("OrchestratorFunction", &internal),
        ("WatchdogCheckFunction", &internal),
    ] {
        let bucket_arn = format!("arn:aws:s3:::{bucket}");
        let statements = function_statements(&template, function).as_array().unwrap();
        let lists = statements.iter().any(|statement| {
            let actions = &statement["Action"];
            let lists = actions == "s3:ListBucket"
                || actions
                    .as_array()
                    .is_some_and(|list| list.iter().any(|a| a == "s3:ListBucket"));
            lists
                && statement["Condition"].is_null()
                && evaluate(&template, &statement["Resource"]) == bucket_arn
        });
        assert!(
            lists,
            "{function} may not list the bucket {bucket} unconditionally"
        );
    }
    // One watch per run: init-job starts it, watchdog-check hands a long one over to a new
    // execution; the orchestrator (and watchdog-check's kicked passes) start retry timers.
    let machine = format!(
        "arn:aws:states:eu-west-1:123456789012:stateMachine:{}",
        evaluate(
            &template,
            &resource(&template, "WatchdogStateMachine")["Properties"]["Name"]
        )
    );
    let watchdog = allowed(
        &template,
        function_statements(&template, "WatchdogCheckFunction"),
    );
    let project = "arn:aws:codebuild:eu-west-1:123456789012:project/sluice-worker";
    let build = object(&keys::build(
        &run,
        order,
        &AttemptId::parse("a1").unwrap(),
        "sluice-worker:0f3e",
    ));
    for (role, rules) in [
        ("init-job", &init),
        ("watchdog-check", &watchdog),
        ("orchestrator", &orchestrator),
    ] {
        assert!(can(rules, "states:StartExecution", &machine), "{role}");
        // Whoever starts builds records them; whoever cancels runs stops them.
        assert!(can(rules, "codebuild:StartBuild", project), "{role}");
        assert!(can(rules, "s3:PutObject", &build), "{role} records {build}");
    }
    for (role, rules) in [
        ("watchdog-check", &watchdog),
        ("orchestrator", &orchestrator),
    ] {
        assert!(can(rules, "codebuild:StopBuild", project), "{role}");
    }
    assert!(can(&orchestrator, "s3:GetObject", &object(&result_key)));
    assert!(
        can(&orchestrator, "s3:PutObject", &object(&result_key)),
        "callback URLs are presigned with this role"
    );
    assert!(can(
        &orchestrator,
        "s3:PutObject",
        &format!("arn:aws:s3:::{done}/{}", keys::done(&run))
    ));
}

#[test]
fn the_client_environment_output_holds_the_settings_init_job_is_given() {
    let template = template();
    let init = environment(&template, "InitJobFunction");
    let output = &template["Outputs"]["ClientEnvironment"]["Value"]["Fn::Sub"];
    let mut given = BTreeMap::new();
    for pair in output.as_str().expect("a plain !Sub").split_whitespace() {
        let (name, value) = pair.split_once('=').unwrap();
        // `${Resource}` is the resource's name (a state machine's: its ARN).
        let logical = value.strip_prefix("${").and_then(|v| v.strip_suffix('}'));
        let value = match logical.filter(|l| template["Resources"].get(*l).is_some()) {
            Some(logical) => {
                let found = resource(&template, logical);
                let properties = &found["Properties"];
                let property = ["BucketName", "TableName", "FunctionName", "Name"]
                    .iter()
                    .find_map(|p| properties.get(*p))
                    .unwrap_or_else(|| panic!("{logical} has no name"));
                let resource_name = evaluate(&template, property);
                if found["Type"] == "AWS::Serverless::StateMachine" {
                    format!("arn:aws:states:eu-west-1:123456789012:stateMachine:{resource_name}")
                } else {
                    resource_name
                }
            }
            None => evaluate(&template, &serde_json::json!({ "Fn::Sub": value })),
        };
        given.insert(name.to_owned(), value);
    }
    AwsSettings::from_lookup(|name| given.get(name).cloned())
        .expect("the output is enough for sluice status | wait | logs");
    for (name, value) in &given {
        assert_eq!(Some(value), init.get(name), "{name}");
    }
}
