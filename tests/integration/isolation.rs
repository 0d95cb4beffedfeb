//! Orders see only their own env, and a timed-out order's whole process tree is dead by the
//! time the timeout is reported.

use std::time::{Duration, Instant};

use crate::util::{Sandbox, done_of};
use sluice_contract::{JobStatus, OrderStatus};

#[test]
fn orders_see_only_their_own_env() {
    let sandbox = Sandbox::new();
    let job = sandbox.write_job(
        "job.json",
        r#"{"orders": [
            {"order_name": "mine", "cmds": ["test \"$OWN\" = yes", "test -z \"$HOST_ONLY_SECRET\"", "test -z \"$OTHER\"", "env"], "env_vars": {"OWN": "yes"}, "timeout": 10},
            {"order_name": "other", "cmds": ["test \"$OTHER\" = 1"], "env_vars": {"OTHER": "1"}, "timeout": 10}
        ]}"#,
    );
    let output = sandbox
        .run_command(&job)
        .env("HOST_ONLY_SECRET", "from-the-shell-that-started-sluice")
        .output()
        .unwrap();
    let done = done_of(&output);
    assert_eq!(
        done.status,
        JobStatus::Succeeded,
        "{}",
        sandbox.log_of(&done, "mine")
    );
    let env = sandbox.log_of(&done, "mine");
    assert!(!env.contains("from-the-shell-that-started-sluice"), "{env}");
    assert!(
        env.contains("SLUICE_ORDER_NAME=mine") && env.contains("SLUICE_RUN_ID="),
        "{env}"
    );
}

#[test]
fn a_timed_out_orders_grandchildren_are_dead_when_it_is_reported() {
    let sandbox = Sandbox::new();
    let pids = sandbox.path().join("pids");
    // The first order leaves two grandchildren, one ignoring SIGTERM. The second runs as
    // soon as the first is reported, and fails if any of them is still alive.
    let check = r#"for p in $(cat "$PIDS"); do if [ -d /proc/$p ] && ! grep -q '^State:.*Z' /proc/$p/status; then echo "alive: $p"; exit 1; fi; done; echo all dead"#;
    let job = format!(
        r#"{{"orders": [
            {{"order_name": "hang", "timeout": 1, "env_vars": {{"PIDS": "{pids}"}},
              "cmds": ["sleep 300 & echo $! > \"$PIDS\"; sh -c 'trap \"\" TERM; while :; do sleep 1; done' & echo $! >> \"$PIDS\"; wait"]}},
            {{"order_name": "check", "timeout": 10, "must_succeed": false, "dependencies": ["hang"], "env_vars": {{"PIDS": "{pids}"}},
              "cmds": [{check:?}]}}
        ]}}"#,
        pids = pids.display()
    );
    let job = sandbox.write_job("job.json", &job);
    let grace = 2;
    let started = Instant::now();
    // Without the sandbox, whose PID namespace would end them anyway (and give the pids
    // only it sees): this is the containment that holds without one (AWS, `--sandbox
    // off`). The sandbox's: `sandbox.rs`.
    let output = sandbox.run(
        &job,
        &["--grace-period", &grace.to_string(), "--sandbox", "off"],
    );
    let elapsed = started.elapsed();
    let done = done_of(&output);
    assert_eq!(done.status, JobStatus::TimedOut);
    assert_eq!(done.orders[0].status, OrderStatus::TimedOut);
    assert_eq!(
        done.orders[1].status,
        OrderStatus::Succeeded,
        "{}",
        sandbox.log_of(&done, "check")
    );
    assert_eq!(std::fs::read_to_string(&pids).unwrap().lines().count(), 2);
    // Reported within timeout + grace (plus start-up and the check order).
    let hang_ms = done.orders[0].duration_ms.unwrap();
    assert!(
        hang_ms <= (1 + grace) * 1000 + 1000,
        "reported after {hang_ms} ms"
    );
    assert!(elapsed < Duration::from_secs(1 + grace + 10), "{elapsed:?}");
}

#[test]
fn nothing_an_order_starts_outlives_it() {
    // Failed before the worker and each command's shell were subreapers: the setsid
    // daemons were alive while `check` ran, and after sluice exited.
    let sandbox = Sandbox::new();
    let pids = sandbox.path().join("pids");
    let marker = sandbox.path().join("written-late");
    let p = pids.display();
    let m = marker.display();
    // Four ways out of a process group: setsid, a double fork into setsid, setsid with the
    // environment cleared (no marker to find it by), and a daemon ignoring every signal
    // it can. Each writes its own pid, and `marker` if it is still alive 3 s later.
    let leave = format!(
        ": > {p}; setsid sh -c 'echo $$ >> {p}; sleep 3; touch {m}' & \
         (setsid sh -c 'echo $$ >> {p}; sleep 3; touch {m}' &) ; \
         env -i /usr/bin/setsid /bin/sh -c 'echo $$ >> {p}; sleep 3; touch {m}' & \
         setsid sh -c 'trap \"\" TERM HUP INT; echo $$ >> {p}; sleep 3; touch {m}' & \
         while [ \"$(wc -l < {p})\" -lt 4 ]; do sleep 0.05; done"
    );
    let check = format!(
        r#"for pid in $(cat {p}); do if [ -d /proc/$pid ] && ! grep -q '^State:.*Z' /proc/$pid/status; then echo "alive: $pid"; exit 1; fi; done; echo all gone"#
    );
    let job = serde_json::json!({"orders": [
        {"order_name": "leave", "timeout": 20, "cmds": [leave]},
        {"order_name": "check", "timeout": 20, "dependencies": ["leave"], "cmds": [check]},
    ]});
    let job = sandbox.write_job("job.json", &job.to_string());
    // Without the sandbox, as above: the daemons write host pids.
    let output = sandbox.run(&job, &["--sandbox", "off"]);
    let done = done_of(&output);
    assert_eq!(
        done.orders[1].status,
        OrderStatus::Succeeded,
        "{}",
        sandbox.log_of(&done, "check")
    );
    let leave_log = sandbox.log_of(&done, "leave");
    assert!(
        leave_log.contains("background process(es) left behind by the command were killed"),
        "{leave_log}"
    );
    for pid in std::fs::read_to_string(&pids).unwrap().lines() {
        assert!(crate::util::is_gone(pid), "{pid} outlived sluice");
    }
    std::thread::sleep(Duration::from_secs(4));
    assert!(!marker.exists(), "a daemon wrote after its order ended");
}

#[test]
fn orders_cannot_read_the_environment_of_sluice_or_its_sentinel() {
    // Failed before sluice made itself undumpable: `/proc/$PPID/environ` showed sluice's
    // variables (on Lambda the worker's are the role's credentials).
    let sandbox = Sandbox::new();
    let secret = format!("only-sluice-knows-{}", std::process::id());
    let job = sandbox.write_job(
        "job.json",
        r#"{"orders": [{"order_name": "snoop", "timeout": 20, "cmds": [
            "tr '\\0' '\\n' < /proc/$PPID/environ || echo parent refused",
            "for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f; done 2>/dev/null; true"
        ]}]}"#,
    );
    let output = sandbox
        .run_command(&job)
        .env("SLUICE_TEST_HOST_SECRET", &secret)
        .output()
        .unwrap();
    let done = done_of(&output);
    let log = sandbox.log_of(&done, "snoop");
    assert_eq!(done.status, JobStatus::Succeeded, "{log}");
    assert!(log.contains("parent refused"), "{log}");
    assert!(!log.contains(&secret), "{log}");
}
