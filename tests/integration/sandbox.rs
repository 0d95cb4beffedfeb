//! The local sandbox of shell orders (`--sandbox`), with real processes: what a hostile
//! order tries — reading the home folder, writing outside its folder, reaching a server on
//! 127.0.0.1, reading another process's environment, escaping through `/proc`, leaving a
//! daemon — is refused by default, allowed exactly when its job grants it, and seen as the
//! user sees it with `--sandbox off` (the control: the attempts do work unsandboxed).

use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use sluice_contract::result::{DoneDoc, DoneOrder};
use sluice_contract::{OrderStatus, SandboxSpec};

use crate::util::{Sandbox, done_of, processes_running};

/// A file of the user's home no order may read unless granted.
const HOME_SECRET: &str = "PRIVATE-KEY-OF-THE-USER";

/// The world a hostile job is run in: a home with a key, a folder outside, a server on
/// 127.0.0.1 and a process with a secret in its environment.
struct World {
    sandbox: Sandbox,
    home: PathBuf,
    outside: PathBuf,
    /// A file on the system's disk, outside the temporary folder.
    system_file: PathBuf,
    /// The secrets file `sluice` is given, outside the job's folder.
    secrets: PathBuf,
    server: TcpListener,
    /// A Unix socket bound to a path on the system's disk (as LXD's is), and its path.
    _socket: UnixListener,
    socket_path: PathBuf,
    /// Another process of the user.
    victim: std::process::Child,
    /// What the daemon an order leaves behind runs, to find it by.
    daemon_arg: String,
}

impl World {
    fn new(test: &str) -> Self {
        // On the machine's disk, not in /tmp, which every sandbox replaces anyway: the
        // home, the job's folder and the state folder must be hidden for what they are.
        let sandbox = Sandbox {
            dir: tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap(),
        };
        let home = sandbox.path().join("home");
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        std::fs::create_dir_all(home.join(".aws")).unwrap();
        std::fs::write(home.join(".ssh/id_rsa"), HOME_SECRET).unwrap();
        std::fs::write(home.join(".aws/credentials"), HOME_SECRET).unwrap();
        let outside = sandbox.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let system_file = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("sandbox-{}-{test}", std::process::id()));
        let _ = std::fs::remove_file(&system_file);
        let secrets = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "sandbox-secrets-{}-{test}.json",
            std::process::id()
        ));
        std::fs::write(&secrets, "{}").unwrap();
        let socket_path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("sandbox-{}-{test}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket_path);
        let socket = UnixListener::bind(&socket_path).unwrap();
        let victim = Command::new("sleep").arg("120").spawn().unwrap();
        let daemon_arg = format!("1000.{}{}", std::process::id(), test.len());
        World {
            sandbox,
            home,
            outside,
            system_file,
            secrets,
            server,
            _socket: socket,
            socket_path,
            victim,
            daemon_arg,
        }
    }

    /// One order per attempt, each succeeding only if its attempt works; `grants` gives
    /// each order's `sandbox` field (by order name), when it has one.
    fn job(&self, grants: &[(&str, serde_json::Value)]) -> PathBuf {
        let port = self.server.local_addr().unwrap().port();
        let outside = self.outside.join("written");
        let attempts = [
            // Proves the sandbox runs commands at all: the others' failures are refusals.
            ("control", "echo in the sandbox".to_owned()),
            ("read-home", "cat ~/.ssh/id_rsa".to_owned()),
            (
                "read-job-folder",
                format!("cat {}", self.sandbox.path().join("job.json").display()),
            ),
            (
                "read-secrets-file",
                format!("grep -q . {}", self.secrets.display()),
            ),
            (
                "read-state",
                format!("ls {}", self.sandbox.state().join("internal").display()),
            ),
            (
                "read-through-proc",
                r#"cat "/proc/1/root$HOME/.ssh/id_rsa""#.to_owned(),
            ),
            (
                "write-outside",
                format!("echo hostile > {}", outside.display()),
            ),
            (
                "write-system",
                format!("touch {}", self.system_file.display()),
            ),
            (
                "connect-local",
                format!(
                    "python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 2)\""
                ),
            ),
            (
                "connect-socket",
                format!(
                    "python3 -c \"import socket; socket.socket(socket.AF_UNIX).connect('{}')\"",
                    self.socket_path.display()
                ),
            ),
            (
                "see-other-process",
                format!("grep -a -q sleep /proc/{}/cmdline", self.victim.id()),
            ),
            (
                "leave-daemon",
                format!(
                    "setsid sleep {} > /dev/null 2>&1 < /dev/null & sleep 0.2",
                    self.daemon_arg
                ),
            ),
        ];
        let orders: Vec<serde_json::Value> = attempts
            .iter()
            .map(|(name, cmd)| {
                let mut order = serde_json::json!({
                    "order_name": name, "timeout": 20, "must_succeed": false, "cmds": [cmd],
                });
                if let Some((_, grant)) = grants.iter().find(|(granted, _)| granted == name) {
                    order["sandbox"] = grant.clone();
                }
                order
            })
            .collect();
        let job = serde_json::json!({ "orders": orders });
        self.sandbox.write_job("job.json", &job.to_string())
    }

    /// `sluice run` of `job` as this process's user, with `HOME` the world's home.
    fn run(&self, job: &Path, extra: &[&str]) -> (DoneDoc, String) {
        let output = self
            .sandbox
            .run_command(job)
            .arg("--secrets")
            .arg(&self.secrets)
            .args(extra)
            .env("HOME", &self.home)
            // From `/`: the folder `sluice` runs in is hidden too, and the test's world lies
            // in the crate's folder.
            .current_dir("/")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (done_of(&output), stderr)
    }

    fn order<'a>(&self, done: &'a DoneDoc, name: &str) -> &'a DoneOrder {
        (done.orders.iter())
            .find(|order| order.order_name == name)
            .unwrap()
    }

    fn status(&self, done: &DoneDoc, name: &str) -> OrderStatus {
        self.order(done, name).status
    }

    /// Whether the daemon of `leave-daemon` is still running anywhere on the machine.
    fn daemon_alive(&self) -> bool {
        !processes_running(&self.daemon_arg).is_empty()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.victim.kill();
        let _ = self.victim.wait();
        let _ = std::fs::remove_file(&self.system_file);
        let _ = std::fs::remove_file(&self.secrets);
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

#[test]
fn a_hostile_order_is_contained_by_default() {
    let world = World::new("contained");
    let job = world.job(&[]);
    let (done, stderr) = world.run(&job, &[]);
    // The done document says each order ran sandboxed, granted nothing.
    for order in &done.orders {
        assert_eq!(order.sandbox, Some(SandboxSpec::default()), "{stderr}");
        let log = world.sandbox.log_of(&done, &order.order_name);
        assert!(!log.contains(HOME_SECRET), "{log}");
    }
    let line = format!(
        "sandbox: {} orders ran sandboxed, without network, seeing only their own folders",
        done.orders.len()
    );
    assert!(stderr.contains(&line), "{stderr}");
    for attempt in [
        "read-home",
        "read-job-folder",
        "read-secrets-file",
        "read-state",
        "read-through-proc",
        "write-outside",
        "write-system",
        "connect-local",
        "connect-socket",
        "see-other-process",
    ] {
        let order = world.order(&done, attempt);
        assert_eq!(
            order.status,
            OrderStatus::Failed,
            "{attempt} was not refused: {}",
            world.sandbox.log_of(&done, attempt)
        );
        // Refused by the command's system calls, not a sandbox that failed to start.
        assert_ne!(order.exit_code, Some(125), "{attempt}");
    }
    assert_eq!(world.status(&done, "control"), OrderStatus::Succeeded);
    assert!(!world.outside.join("written").exists());
    assert!(!world.system_file.exists());
    assert!(!world.daemon_alive(), "the daemon outlived its order");
    // A refused order's line of the summary says how it ran and how to grant more; its
    // reason is what it would be without the sandbox.
    let number = world.order(&done, "connect-local").order_num.to_string();
    let line = (stderr.lines())
        .find(|line| line.starts_with(&format!("{number}   connect-local ")))
        .unwrap_or_else(|| panic!("no summary line of connect-local in {stderr}"));
    assert!(
        line.contains("command 1 failed: exit code 1; it ran sandboxed without network, seeing only its own folders: grant more in its \"sandbox\" field")
            && line.contains("--network"),
        "{line}"
    );
    let reason = |name: &str| {
        let order = done.orders.iter().find(|o| o.order_name == name);
        order.unwrap().reason.clone().unwrap()
    };
    assert_eq!(reason("connect-local"), "command 1 failed: exit code 1");
}

#[test]
fn each_grant_allows_exactly_what_it_names() {
    let world = World::new("granted");
    let granted = |grant: serde_json::Value| grant;
    let job = world.job(&[
        (
            "read-home",
            granted(serde_json::json!({"read": ["~/.ssh/id_rsa"]})),
        ),
        (
            "write-outside",
            granted(serde_json::json!({"write": [world.outside]})),
        ),
        (
            "connect-local",
            granted(serde_json::json!({"network": true})),
        ),
    ]);
    let (done, stderr) = world.run(&job, &[]);
    for attempt in ["read-home", "write-outside", "connect-local"] {
        assert_eq!(
            world.status(&done, attempt),
            OrderStatus::Succeeded,
            "{attempt}: {}\n{stderr}",
            world.sandbox.log_of(&done, attempt)
        );
    }
    assert!(
        world
            .sandbox
            .log_of(&done, "read-home")
            .contains(HOME_SECRET)
    );
    let granted = |name: &str| {
        let order = done.orders.iter().find(|o| o.order_name == name);
        order.unwrap().sandbox.clone().unwrap()
    };
    assert_eq!(granted("read-home").read, ["~/.ssh/id_rsa"]);
    assert!(granted("connect-local").network);
    assert_eq!(granted("read-state"), SandboxSpec::default());
    assert!(
        stderr.contains("granted more: 0002 read-home: read ~/.ssh/id_rsa; "),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(world.outside.join("written")).unwrap(),
        "hostile\n"
    );
    // What was not granted stays out of sight.
    for attempt in ["read-through-proc", "write-system", "see-other-process"] {
        assert_eq!(
            world.status(&done, attempt),
            OrderStatus::Failed,
            "{attempt}"
        );
    }
    // A grant of one file shows that file only.
    let aws = world.job(&[("read-home", serde_json::json!({"read": ["~/.ssh/id_rsa"]}))]);
    let aws_text = std::fs::read_to_string(&aws)
        .unwrap()
        .replace("cat ~/.ssh/id_rsa", "cat ~/.aws/credentials");
    std::fs::write(&aws, aws_text).unwrap();
    let (done, _) = world.run(&aws, &[]);
    assert_eq!(world.status(&done, "read-home"), OrderStatus::Failed);
}

#[test]
fn network_is_granted_to_every_order_by_the_flag() {
    let world = World::new("flag");
    let job = world.job(&[]);
    let (done, stderr) = world.run(&job, &["--network"]);
    assert_eq!(
        world.status(&done, "connect-local"),
        OrderStatus::Succeeded,
        "{}\n{stderr}",
        world.sandbox.log_of(&done, "connect-local")
    );
    let read_home = world.order(&done, "read-home");
    assert!(
        read_home
            .sandbox
            .as_ref()
            .is_some_and(|granted| granted.network)
    );
    assert_eq!(world.status(&done, "read-home"), OrderStatus::Failed);
}

/// The control: unsandboxed, the same attempts work (the tests above could fail), but for
/// the daemon, which the worker kills with its order either way.
#[test]
fn with_the_sandbox_off_an_order_sees_what_the_user_sees() {
    let world = World::new("off");
    let job = world.job(&[]);
    let (done, stderr) = world.run(&job, &["--sandbox", "off"]);
    assert!(!stderr.contains("warning"), "{stderr}");
    for attempt in [
        "read-home",
        "read-job-folder",
        "read-secrets-file",
        "read-state",
        "write-outside",
        "connect-local",
        "connect-socket",
        "see-other-process",
        "write-system",
    ] {
        assert_eq!(
            world.status(&done, attempt),
            OrderStatus::Succeeded,
            "{attempt}: {}",
            world.sandbox.log_of(&done, attempt)
        );
        assert_eq!(world.order(&done, attempt).sandbox, None);
    }
    assert!(!world.daemon_alive());
}

#[test]
fn timeouts_stop_a_sandboxed_order_as_they_stop_any() {
    let sandbox = Sandbox::new();
    let job = sandbox.write_job(
        "job.json",
        r#"{"orders": [
            {"order_name": "traps", "timeout": 1, "must_succeed": false,
             "cmds": ["trap 'echo stopping cleanly; exit 3' TERM; echo started; sleep 300 & wait"]},
            {"order_name": "ignores", "timeout": 1, "must_succeed": false,
             "cmds": ["trap '' TERM; echo started; while :; do sleep 1; done"]},
            {"order_name": "fails", "timeout": 10, "must_succeed": false,
             "cmds": ["echo out; echo err >&2; kill -KILL $$"]}
        ]}"#,
    );
    let output = sandbox.run(&job, &["--grace-period", "1"]);
    let done = done_of(&output);
    let order = |name: &str| done.orders.iter().find(|o| o.order_name == name).unwrap();
    for name in ["traps", "ignores"] {
        assert_eq!(order(name).status, OrderStatus::TimedOut, "{name}");
    }
    let traps = sandbox.log_of(&done, "traps");
    assert!(traps.contains("started\nstopping cleanly\n"), "{traps}");
    let fails = sandbox.log_of(&done, "fails");
    assert!(
        order("fails").sandbox.is_some() && fails.contains("out\n") && fails.contains("err\n"),
        "{fails}"
    );
    assert_eq!(order("fails").status, OrderStatus::Failed);
    assert_eq!(
        order("fails").exit_code,
        Some(128 + 9),
        "{:?}",
        order("fails")
    );
}

/// `sluice run` where this process may create no user namespace: under a user namespace
/// whose limit of nested ones is 0 (`user.max_user_namespaces`), as on a machine that
/// forbids them.
fn run_without_namespaces(sandbox: &Sandbox, job: &Path, extra: &[&str]) -> std::process::Output {
    let sluice = env!("CARGO_BIN_EXE_sluice");
    let script = r#"echo 0 > /proc/sys/user/max_user_namespaces && exec "$@""#;
    Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "sh",
            "-c",
            script,
            "sh",
            sluice,
            "run",
        ])
        .arg(job)
        .arg("--state-dir")
        .arg(sandbox.state())
        .arg("--json")
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn required_refuses_to_run_where_there_is_no_sandbox() {
    let sandbox = Sandbox::new();
    let job = sandbox.write_job(
        "job.json",
        r#"{"orders": [{"order_name": "a", "timeout": 5, "cmds": ["true"]}]}"#,
    );
    let output = run_without_namespaces(&sandbox, &job, &["--sandbox", "required"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("--sandbox required, and this machine gives no sandbox")
            && stderr.contains("user namespaces"),
        "{stderr}"
    );
    assert!(
        !sandbox.state().exists(),
        "nothing is made before the refusal"
    );

    // `auto` says so once and runs the order as the user.
    let output = run_without_namespaces(&sandbox, &job, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let done = done_of(&output);
    assert_eq!(done.orders[0].status, OrderStatus::Succeeded, "{stderr}");
    assert_eq!(
        stderr.matches("orders run without a sandbox").count(),
        1,
        "{stderr}"
    );
    assert_eq!(done.orders[0].sandbox, None);
    assert!(!stderr.contains("ran sandboxed"), "{stderr}");
}

#[test]
fn grants_are_checked_and_shown_in_the_plan() {
    let sandbox = Sandbox::new();
    let job = sandbox.write_job(
        "job.json",
        r#"{"orders": [{"order_name": "plan", "timeout": 5, "cmds": ["tofu plan"],
            "sandbox": {"network": true, "read": ["~/.terraform.d/"], "write": ["/var/cache//tofu"]}}]}"#,
    );
    let output = crate::util::sluice()
        .args(["validate", "--plan"])
        .arg(&job)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        (text.lines()).any(|line| line
            == "      sandbox grants: network, read ~/.terraform.d, write /var/cache/tofu"),
        "{text}"
    );
    for (order, says) in [
        (
            r#""cmds": ["true"], "sandbox": {"read": ["relative/path"]}"#,
            "field `sandbox.read[0]`: \"relative/path\" must be absolute (/…) or in your home (~/…)",
        ),
        (
            r#""cmds": ["true"], "sandbox": {"write": ["/"]}"#,
            "field `sandbox.write[0]`: / grants the whole filesystem",
        ),
        (
            r#""cmds": ["true"], "sandbox": {"read": ["/srv"], "write": ["/srv/"]}"#,
            "field `sandbox.read[0]`: /srv is granted twice",
        ),
        (
            r#""wasm": {"module": "m.wasm"}, "code_dir": ".", "sandbox": {"network": true}"#,
            "field `sandbox`: is for shell orders",
        ),
        (
            r#""cmds": ["true"], "sandbox": {"network": "yes"}"#,
            "invalid type",
        ),
    ] {
        let job = sandbox.write_job(
            "bad.json",
            &format!(r#"{{"orders": [{{"timeout": 5, {order}}}]}}"#),
        );
        let output = crate::util::sluice()
            .arg("validate")
            .arg(&job)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{order}: {stderr}");
        assert!(stderr.contains(says), "{order}: {stderr}");
    }
}

/// The variables an order sets reach its commands only, not the sandbox's first process,
/// which builds the sandbox with the host's tree and capabilities in hand: there
/// `LD_PRELOAD` would run the order's code (here `LD_DEBUG` shows whom the loader serves).
#[test]
fn an_orders_variables_do_not_reach_the_process_that_builds_its_sandbox() {
    let sandbox = Sandbox::new();
    let job = sandbox.write_job(
        "job.json",
        r#"{"orders": [{"order_name": "loader", "timeout": 10, "cmds": ["true"],
            "env_vars": {"LD_DEBUG": "files"}}]}"#,
    );
    let done = done_of(&sandbox.run(&job, &[]));
    let log = sandbox.log_of(&done, "loader");
    assert!(done.orders[0].sandbox.is_some());
    assert!(
        log.contains("/bin/sh"),
        "the command's loader did not see it: {log}"
    );
    assert!(
        !log.contains("/proc/self/exe"),
        "the first process's loader saw it: {log}"
    );
}

/// A grant shows what it names, through no link an order could have planted, never
/// Sluice's own files, and not the hidden paths within it.
#[test]
fn grants_cannot_be_turned_into_more() {
    let world = World::new("links");
    let state = world.sandbox.state();
    let state_parent = state.parent().unwrap().to_path_buf();
    let job_file = world.sandbox.path().join("job.json");
    let planted = world.outside.join("planted");
    let job = serde_json::json!({"orders": [
        {"order_name": "plant", "timeout": 10, "sandbox": {"write": [world.outside]},
         "cmds": [format!("ln -s {} {}", world.home.display(), planted.display())]},
        {"order_name": "follow", "timeout": 10, "must_succeed": false, "dependencies": ["plant"],
         "sandbox": {"read": [planted]}, "cmds": [format!("cat {}/.ssh/id_rsa", planted.display())]},
        {"order_name": "around", "timeout": 10, "must_succeed": false,
         "sandbox": {"read": [state_parent]},
         "cmds": [format!("ls {}", state.join("internal").display())]},
        {"order_name": "around-write", "timeout": 10, "must_succeed": false,
         "sandbox": {"write": [state_parent]}, "cmds": ["true"]},
        {"order_name": "state", "timeout": 10, "must_succeed": false,
         "sandbox": {"read": [state]}, "cmds": ["true"]},
        // The job's folder, hidden, lies in the folder granted; a grant inside it still
        // shows what it names.
        {"order_name": "nested", "timeout": 10, "must_succeed": false,
         "sandbox": {"read": [state_parent, world.outside]},
         "cmds": [format!("test -d {} && ! test -e {}", world.outside.display(), job_file.display())]},
    ]});
    let job = world.sandbox.write_job("job.json", &job.to_string());
    let (done, stderr) = world.run(&job, &[]);
    assert_eq!(
        world.status(&done, "plant"),
        OrderStatus::Succeeded,
        "{stderr}"
    );
    let follow = world.order(&done, "follow");
    assert_eq!(follow.status, OrderStatus::Failed);
    let reason = follow.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("is a symbolic link: grant the path it points to"),
        "{reason}"
    );
    assert!(!world.sandbox.log_of(&done, "follow").contains(HOME_SECRET));
    // The state folder inside the folder granted stays covered, and a folder holding it is
    // not granted to write (renaming a folder between them would carry it out).
    assert_eq!(world.status(&done, "around"), OrderStatus::Failed);
    assert_eq!(
        world.status(&done, "nested"),
        OrderStatus::Succeeded,
        "{}",
        world.sandbox.log_of(&done, "nested")
    );
    let around = world.order(&done, "around-write");
    let reason = around.reason.clone().unwrap_or_default();
    assert!(reason.contains("holds Sluice's own"), "{reason}");
    let state = world.order(&done, "state");
    assert_eq!(state.status, OrderStatus::Failed);
    let reason = state.reason.clone().unwrap_or_default();
    assert!(reason.contains("is Sluice's own"), "{reason}");
}
