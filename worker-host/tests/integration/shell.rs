//! The shell runner against real subprocesses: env isolation, streaming, exit codes,
//! deadlines that kill whole process groups, and background processes that cannot hang it.

use std::path::Path;
use std::time::Duration;

use sluice_worker::log_sink::{LogSink, LogSummary};
use sluice_worker::shell::{ShellOrder, ShellOutcome, ShellSettings, run_cmds};
use tokio::time::Instant;

fn base_env() -> Vec<(String, String)> {
    vec![("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned())]
}

async fn run(
    cmds: &[&str],
    env: &[(String, String)],
    timeout: Duration,
    settings: ShellSettings,
) -> (ShellOutcome, LogSummary, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let cmds: Vec<String> = cmds.iter().map(|c| c.to_string()).collect();
    let log = LogSink::create(dir.path());
    let started = Instant::now();
    let order = ShellOrder {
        cmds: &cmds,
        env,
        cwd: dir.path(),
        deadline: started + timeout,
        stop: &tokio_util::sync::CancellationToken::new(),
        jail: None,
    };
    let outcome = run_cmds(&order, &log, settings).await;
    let elapsed = started.elapsed();
    (outcome, log.finish().await.unwrap(), elapsed)
}

fn is_gone(pid: &str) -> bool {
    // A killed process is gone, or a zombie waiting for init to reap it.
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(") ")
            .next()
            .is_some_and(|rest| rest.starts_with('Z')),
    }
}

#[tokio::test]
async fn commands_see_only_the_env_they_are_given() {
    // HOME is in the test's own environment; the order is given none.
    let host_only = std::env::var("HOME").unwrap_or_default();
    let mut env = base_env();
    env.push(("GREETING".to_owned(), "hello there".to_owned()));
    let (outcome, log, _) = run(
        &["echo \"$GREETING\"; env"],
        &env,
        Duration::from_secs(10),
        ShellSettings::default(),
    )
    .await;
    assert_eq!(outcome, ShellOutcome::Succeeded);
    assert!(log.tail.contains("hello there"), "{}", log.tail);
    assert!(log.tail.contains("PATH=/usr/local/bin"), "{}", log.tail);
    if !host_only.is_empty() {
        assert!(
            !log.tail.contains(&format!("HOME={host_only}")),
            "{}",
            log.tail
        );
    }
}

#[tokio::test]
async fn stdout_and_stderr_are_both_captured_in_order() {
    let (outcome, log, _) = run(
        &["echo one; echo two >&2; sleep 0.2; echo three"],
        &base_env(),
        Duration::from_secs(10),
        ShellSettings::default(),
    )
    .await;
    assert_eq!(outcome, ShellOutcome::Succeeded);
    let one = log.tail.find("one").unwrap();
    let three = log.tail.find("three").unwrap();
    assert!(log.tail.contains("two"));
    assert!(one < three);
}

#[tokio::test]
async fn the_first_failing_command_stops_the_order() {
    let (outcome, log, _) = run(
        &["echo first", "exit 3", "echo never"],
        &base_env(),
        Duration::from_secs(10),
        ShellSettings::default(),
    )
    .await;
    assert!(
        matches!(
            outcome,
            ShellOutcome::Failed {
                cmd_index: 1,
                exit_code: 3,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert!(log.tail.contains("first"));
    assert!(!log.tail.contains("\nnever"), "{}", log.tail);
}

#[tokio::test]
async fn the_deadline_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let cmd = format!(
        "sleep 300 & echo $! > {p}; sh -c 'sleep 300' & echo $! >> {p}; wait",
        p = pids.display()
    );
    let settings = ShellSettings {
        grace: Duration::from_secs(2),
        pipe_drain: Duration::from_secs(1),
    };
    let (outcome, _, elapsed) = run(&[&cmd], &base_env(), Duration::from_secs(1), settings).await;
    assert_eq!(outcome, ShellOutcome::TimedOut { cmd_index: 0 });
    let pids = std::fs::read_to_string(&pids).unwrap();
    for pid in pids.lines() {
        assert!(is_gone(pid), "grandchild {pid} survived the timeout");
    }
    assert!(
        elapsed < Duration::from_secs(1) + settings.grace + Duration::from_secs(2),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn a_command_ignoring_sigterm_is_killed_after_the_grace_period() {
    let settings = ShellSettings {
        grace: Duration::from_secs(1),
        pipe_drain: Duration::from_secs(1),
    };
    let (outcome, log, elapsed) = run(
        &["trap '' TERM; echo trapped; while :; do sleep 0.1; done"],
        &base_env(),
        Duration::from_secs(1),
        settings,
    )
    .await;
    assert_eq!(outcome, ShellOutcome::TimedOut { cmd_index: 0 });
    assert!(log.tail.contains("trapped"));
    assert!(
        elapsed >= Duration::from_secs(2),
        "SIGKILL came before the grace period: {elapsed:?}"
    );
}

#[tokio::test]
async fn a_background_process_holding_the_pipe_cannot_hang_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let cmd = format!("sleep 300 & echo $! > {}; echo started", pid_file.display());
    let settings = ShellSettings {
        grace: Duration::from_secs(5),
        pipe_drain: Duration::from_millis(300),
    };
    let (outcome, log, elapsed) =
        run(&[&cmd], &base_env(), Duration::from_secs(60), settings).await;
    assert_eq!(outcome, ShellOutcome::Succeeded);
    assert!(log.tail.contains("started"));
    assert!(
        log.tail.contains("background processes are killed"),
        "{}",
        log.tail
    );
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    assert!(is_gone(&std::fs::read_to_string(&pid_file).unwrap()));
}

#[tokio::test]
async fn a_missing_working_directory_is_a_spawn_failure() {
    let cmds = vec!["true".to_owned()];
    let dir = tempfile::tempdir().unwrap();
    let log = LogSink::create(dir.path());
    let order = ShellOrder {
        cmds: &cmds,
        env: &base_env(),
        cwd: Path::new("/nonexistent/sluice"),
        deadline: Instant::now() + Duration::from_secs(5),
        stop: &tokio_util::sync::CancellationToken::new(),
        jail: None,
    };
    let outcome = run_cmds(&order, &log, ShellSettings::default()).await;
    assert!(
        matches!(outcome, ShellOutcome::SpawnFailed { cmd_index: 0, .. }),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_ending_leaves_other_commands_daemons_alone() {
    // `long` starts a setsid daemon and needs it alive until its own end; `short` ends
    // (and sweeps its leftovers) meanwhile. Only `long`'s own end may kill the daemon.
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("daemon");
    let long = format!(
        "setsid sh -c 'echo $$ > {p}; sleep 300' & \
         while [ ! -s {p} ]; do sleep 0.05; done; sleep 1.5; \
         kill -0 \"$(cat {p})\" && echo daemon still alive",
        p = pid_file.display()
    );
    let (cmds, env) = ([long.as_str()], base_env());
    let long = run(
        &cmds,
        &env,
        Duration::from_secs(20),
        ShellSettings::default(),
    );
    let short_pid_file = dir.path().join("short");
    let short_cmd = format!(
        "setsid sh -c 'echo $$ > {p}; exec sleep 300' & while [ ! -s {p} ]; do sleep 0.05; done",
        p = short_pid_file.display()
    );
    let short = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ended = run(
            &[short_cmd.as_str()],
            &base_env(),
            Duration::from_secs(20),
            ShellSettings::default(),
        )
        .await;
        // Checked as soon as `short` ends, while `long` still runs. (Which command's log
        // tells of the kill depends on which sweep ran first: sweeps are per process.)
        let short_daemon = std::fs::read_to_string(&short_pid_file).unwrap();
        assert!(is_gone(&short_daemon), "short's daemon outlived it");
        ended
    };
    let ((long_outcome, long_log, _), (short_outcome, _, _)) = tokio::join!(long, short);
    assert_eq!(short_outcome, ShellOutcome::Succeeded);
    assert_eq!(long_outcome, ShellOutcome::Succeeded, "{}", long_log.tail);
    assert!(
        long_log.tail.contains("daemon still alive"),
        "{}",
        long_log.tail
    );
    let daemon = std::fs::read_to_string(&pid_file).unwrap();
    assert!(is_gone(&daemon), "the daemon outlived its command");
}

#[tokio::test]
async fn a_deep_chain_of_daemons_is_killed_whole() {
    // Each level starts the next in the background, then becomes `sleep`: a chain 150
    // processes deep outside the command's group. Killing one level a round (as before)
    // left the deepest levels alive.
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let chain = dir.path().join("chain.sh");
    std::fs::write(
        &chain,
        format!(
            "n=$1\nif [ \"$n\" -gt 0 ]; then sh {chain} $((n - 1)) & fi\necho $$ >> {pids}\nexec sleep 300\n",
            chain = chain.display(),
            pids = pids.display()
        ),
    )
    .unwrap();
    let cmd = format!(
        "setsid sh {chain} 150 & while [ \"$(cat {pids} 2>/dev/null | wc -l)\" -lt 151 ]; do sleep 0.05; done",
        chain = chain.display(),
        pids = pids.display()
    );
    let (outcome, log, _) = run(
        &[cmd.as_str()],
        &base_env(),
        Duration::from_secs(60),
        ShellSettings::default(),
    )
    .await;
    assert_eq!(outcome, ShellOutcome::Succeeded, "{}", log.tail);
    let alive: Vec<String> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .filter(|pid| !is_gone(pid))
        .map(str::to_owned)
        .collect();
    assert!(alive.is_empty(), "still alive: {alive:?}");
}
