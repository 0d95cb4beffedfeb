//! Orders take their code from a folder of a git repository at a commit: over file:// and
//! over HTTP with a token, against `git http-backend` served on 127.0.0.1 (through wiremock). One clone per
//! repository per job; the token reaches no command line, environment, log or state file.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::util::{Sandbox, http_stand_in, succeeded};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sluice_contract::OrderStatus;
use wiremock::{MockServer, Request, Respond, ResponseTemplate};

const TOKEN: &str = "ghp_TestToken0123456789";

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A repository with two folders and two commits; returns its path and the first commit.
fn repository(root: &Path) -> (PathBuf, String) {
    let repo = root.join("infra.git");
    std::fs::create_dir_all(repo.join("vpc")).unwrap();
    std::fs::create_dir_all(repo.join("dns")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(
        repo.join("vpc/plan.sh"),
        "#!/bin/sh\necho \"vpc plan v1 in $(basename \"$PWD\")\"; ls -a\n",
    )
    .unwrap();
    std::fs::write(
        repo.join("dns/plan.sh"),
        "#!/bin/sh\necho dns plan; ls -a\n",
    )
    .unwrap();
    for script in ["vpc/plan.sh", "dns/plan.sh"] {
        std::fs::set_permissions(repo.join(script), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "v1"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(repo.join("vpc/plan.sh"), "#!/bin/sh\necho vpc plan v2\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "v2"]);
    (repo, first)
}

/// What the test server saw.
#[derive(Debug, Default)]
struct Seen {
    /// Authorised ref advertisements (one per clone).
    clones: usize,
    /// Requests refused for lack of the token.
    refused: usize,
    /// Processes whose command line or environment held the token while git talked to us.
    leaks: Vec<String>,
}

/// The repositories under `root` over smart HTTP (through `git http-backend`), requiring
/// `Authorization: Basic x-access-token:TOKEN`.
struct GitHttp {
    root: PathBuf,
    seen: Arc<Mutex<Seen>>,
}

impl Respond for GitHttp {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let expected = format!(
            "Basic {}",
            STANDARD.encode(format!("x-access-token:{TOKEN}"))
        );
        if header("authorization") != expected {
            self.seen.lock().unwrap().refused += 1;
            return ResponseTemplate::new(401)
                .insert_header("www-authenticate", "Basic realm=\"git\"");
        }
        let path = request.url.path();
        {
            let mut seen = self.seen.lock().unwrap();
            if path.ends_with("/info/refs") {
                seen.clones += 1;
            }
            seen.leaks.extend(processes_holding(TOKEN));
        }
        let mut cgi = Command::new("git")
            .arg("http-backend")
            .env("GIT_PROJECT_ROOT", &self.root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("PATH_INFO", path)
            .env("QUERY_STRING", request.url.query().unwrap_or_default())
            .env("REQUEST_METHOD", request.method.as_str())
            .env("CONTENT_TYPE", header("content-type"))
            .env("CONTENT_LENGTH", request.body.len().to_string())
            .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
            .env("HTTP_GIT_PROTOCOL", header("git-protocol"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        cgi.stdin.take().unwrap().write_all(&request.body).unwrap();
        let output = cgi.wait_with_output().unwrap();
        // A CGI answer: headers (`Status:` among them), a blank line, the body.
        let (head_end, gap) = output
            .stdout
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| (i, 4))
            .or_else(|| {
                output
                    .stdout
                    .windows(2)
                    .position(|w| w == b"\n\n")
                    .map(|i| (i, 2))
            })
            .unwrap();
        let mut status = 200;
        let mut headers = Vec::new();
        for line in String::from_utf8_lossy(&output.stdout[..head_end]).lines() {
            match line.split_once(':') {
                Some((name, value)) if name.eq_ignore_ascii_case("status") => {
                    status = value.trim()[..3].parse().unwrap();
                }
                Some((name, value)) => headers.push((name.to_owned(), value.trim().to_owned())),
                None => {}
            }
        }
        let mut answer = ResponseTemplate::new(status);
        let mut content_type = "application/octet-stream".to_owned();
        for (name, value) in headers {
            if name.eq_ignore_ascii_case("content-type") {
                content_type = value;
            } else {
                answer = answer.insert_header(name.as_str(), value.as_str());
            }
        }
        answer.set_body_raw(output.stdout[head_end + gap..].to_vec(), &content_type)
    }
}

/// A running stand-in: its base URL and what it saw (it stops when dropped).
struct Served {
    base: String,
    seen: Arc<Mutex<Seen>>,
    _server: MockServer,
}

/// Serves the repositories under `root` (see [`GitHttp`]).
fn serve(root: PathBuf) -> Served {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let git = GitHttp {
        root,
        seen: Arc::clone(&seen),
    };
    let server = http_stand_in(|_| git);
    Served {
        base: server.uri(),
        seen,
        _server: server,
    }
}

/// Processes (other than this test) whose command line or environment contains `needle`.
fn processes_holding(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) || pid == me {
            continue;
        }
        for part in ["cmdline", "environ"] {
            if let Ok(bytes) = std::fs::read(entry.path().join(part))
                && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                found.push(format!("{pid}/{part}"));
            }
        }
    }
    found
}

fn files_holding(dir: &Path, needle: &str, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_holding(&path, needle, found);
        } else if std::fs::read(&path)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
        {
            found.push(path);
        }
    }
}

#[test]
fn orders_run_in_folders_of_a_repository_at_a_commit() {
    let sandbox = Sandbox::new();
    let (repo, first) = repository(sandbox.path());
    let url = format!("file://{}", repo.display());
    let job = serde_json::json!({ "git_repo": url, "orders": [
        { "order_name": "vpc-then", "git_folder": "vpc", "commit_hash": first, "cmds": ["./plan.sh"], "timeout": 30 },
        { "order_name": "vpc-now", "git_folder": "vpc", "cmds": ["./plan.sh"], "timeout": 30 },
        { "order_name": "dns", "git_folder": "dns/", "cmds": ["./plan.sh"], "timeout": 30 },
    ]});
    let job = sandbox.write_job("job.json", &job.to_string());
    let output = sandbox.run(&job, &[]);
    let done = succeeded(&output);
    let then = sandbox.log_of(&done, "vpc-then");
    assert!(
        then.contains("vpc plan v1 in code"),
        "the folder's files are the code root: {then}"
    );
    assert!(!then.contains(".git"), "no .git in the code: {then}");
    assert!(sandbox.log_of(&done, "vpc-now").contains("vpc plan v2"));
    assert!(sandbox.log_of(&done, "dns").contains("dns plan"));
}

#[test]
fn git_from_a_layer_is_found_through_its_exec_path() {
    // A git installed elsewhere (a Lambda layer's, under /opt) finds its helpers through
    // GIT_EXEC_PATH: the one variable of the host's, with PATH and LD_LIBRARY_PATH, that
    // reaches git. Here the exec path is a copy of the real one whose git-upload-pack
    // leaves a mark when the clone runs it.
    let sandbox = Sandbox::new();
    let (repo, _) = repository(sandbox.path());
    let real = git(sandbox.path(), &["--exec-path"]);
    let exec_path = sandbox.path().join("layer/libexec/git-core");
    std::fs::create_dir_all(&exec_path).unwrap();
    for entry in std::fs::read_dir(&real).unwrap() {
        let entry = entry.unwrap();
        std::os::unix::fs::symlink(entry.path(), exec_path.join(entry.file_name())).unwrap();
    }
    let mark = sandbox.path().join("upload-pack-ran");
    let wrapper = exec_path.join("git-upload-pack");
    std::fs::remove_file(&wrapper).unwrap();
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ntouch '{}'\nexec '{real}/git-upload-pack' \"$@\"\n",
            mark.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();

    let job = serde_json::json!({ "git_repo": format!("file://{}", repo.display()), "orders": [
        { "order_name": "dns", "git_folder": "dns", "cmds": ["./plan.sh"], "timeout": 30 },
    ]});
    let job = sandbox.write_job("job.json", &job.to_string());
    let output = sandbox
        .run_command(&job)
        .env("GIT_EXEC_PATH", &exec_path)
        .output()
        .unwrap();
    let done = succeeded(&output);
    assert!(sandbox.log_of(&done, "dns").contains("dns plan"));
    assert!(mark.exists(), "git used the exec path it was given");
}

/// A job of `orders` taking their code from the test repository served over HTTP with
/// [`TOKEN`]; the job file, the secrets file holding the token, and what the server saw.
fn served_with_token(sandbox: &Sandbox, orders: serde_json::Value) -> (PathBuf, PathBuf, Served) {
    let (repo, _) = repository(sandbox.path());
    let served = serve(repo.parent().unwrap().to_owned());
    let base = &served.base;
    let secrets = sandbox.write_secrets(serde_json::json!({ "aws:::ssm:/git/token": TOKEN }));
    let job = serde_json::json!({
        "git_repo": format!("{base}/infra.git"),
        "git_token_location": "aws:::ssm:/git/token",
        "orders": orders,
    });
    (
        sandbox.write_job("job.json", &job.to_string()),
        secrets,
        served,
    )
}

#[test]
fn a_token_clones_once_over_http_and_is_never_seen() {
    let sandbox = Sandbox::new();
    let (job, secrets, served) = served_with_token(
        &sandbox,
        serde_json::json!([
            { "order_name": "vpc", "git_folder": "vpc", "cmds": ["./plan.sh"], "timeout": 30 },
            { "order_name": "dns", "git_folder": "dns", "cmds": ["./plan.sh"], "timeout": 30 },
        ]),
    );
    let output = sandbox.run(
        &job,
        &[
            "--secrets",
            secrets.to_str().unwrap(),
            "--git-credential-hosts",
            "github.com,127.0.0.1",
        ],
    );
    let done = succeeded(&output);
    assert_eq!(done.orders[0].status, OrderStatus::Succeeded);
    assert!(sandbox.log_of(&done, "dns").contains("dns plan"));

    let seen = served.seen.lock().unwrap();
    assert_eq!(seen.clones, 1, "one clone for both orders: {seen:?}");
    assert!(
        seen.refused >= 1,
        "git asked for the token only when the server did"
    );
    assert!(
        seen.leaks.is_empty(),
        "the token was visible in {:?}",
        seen.leaks
    );
    let mut files = Vec::new();
    files_holding(&sandbox.state(), TOKEN, &mut files);
    assert!(files.is_empty(), "the token is stored in {files:?}");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!printed.contains(TOKEN));
}

#[test]
fn a_missing_commit_folder_or_token_is_refused_before_anything_runs() {
    let sandbox = Sandbox::new();
    let (repo, _) = repository(sandbox.path());
    let served = serve(repo.parent().unwrap().to_owned());
    let base = &served.base;
    let secrets = sandbox
        .write_secrets(serde_json::json!({ "aws:::ssm:/git/wrong": "ghp_WrongToken987654321" }));
    let cases = [
        (
            serde_json::json!({ "git_repo": format!("file://{}", repo.display()), "commit_hash": "0123456789abcdef0123456789abcdef01234567" }),
            "order 0001 (plan): packaging its code failed: git_repo: commit 0123456789abcdef0123456789abcdef01234567 is not in file://",
        ),
        (
            serde_json::json!({ "git_repo": format!("file://{}", repo.display()), "git_folder": "nope" }),
            "git_repo: git_folder nope is not a folder of file://",
        ),
        (
            serde_json::json!({ "git_repo": format!("{base}/infra.git"), "git_token_location": "aws:::ssm:/git/wrong" }),
            "git_repo: cloning http://127.0.0.1",
        ),
    ];
    for (source, expected) in cases {
        let mut order =
            serde_json::json!({ "order_name": "plan", "cmds": ["./plan.sh"], "timeout": 30 });
        order
            .as_object_mut()
            .unwrap()
            .extend(source.as_object().unwrap().clone());
        let job = sandbox.write_job(
            "job.json",
            &serde_json::json!({ "orders": [order] }).to_string(),
        );
        let output = sandbox.run(
            &job,
            &[
                "--secrets",
                secrets.to_str().unwrap(),
                "--git-credential-hosts",
                "127.0.0.1",
            ],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains(expected), "{stderr} should say {expected}");
        assert!(!stderr.contains("ghp_WrongToken987654321"), "{stderr}");
    }
}

#[test]
fn a_token_goes_only_to_the_hosts_credentials_may_be_sent_to() {
    // Failed before the deployment listed credential hosts: the capture server on
    // 127.0.0.1 received `x-access-token:<token>` from any job that named it.
    let sandbox = Sandbox::new();
    let (job, secrets, served) = served_with_token(
        &sandbox,
        serde_json::json!([
            { "order_name": "vpc", "git_folder": "vpc", "cmds": ["./plan.sh"], "timeout": 30 },
        ]),
    );
    // The default list is github.com alone.
    let output = sandbox.run(&job, &["--secrets", secrets.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("git credentials are sent only to github.com")
            && stderr.contains("not to 127.0.0.1"),
        "{stderr}"
    );
    let seen = served.seen.lock().unwrap();
    assert_eq!(
        (seen.clones, seen.refused),
        (0, 0),
        "the server was contacted: {seen:?}"
    );
}

#[test]
fn plain_http_repositories_are_refused_unless_on_this_machine() {
    let sandbox = Sandbox::new();
    let job = sandbox.write_job(
        "job.json",
        r#"{"git_repo": "http://example.com/infra.git", "orders": [{"cmds": ["true"], "timeout": 5}]}"#,
    );
    let output = sandbox.run(&job, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("does not authenticate the server"),
        "{stderr}"
    );
}

/// An sshd on 127.0.0.1 accepting one key for this user, stopped when dropped.
struct Sshd {
    child: std::process::Child,
    port: u16,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sshd(dir: &Path, authorized: &Path) -> Sshd {
    let sshd = Path::new("/usr/sbin/sshd");
    assert!(
        sshd.exists(),
        "sshd is missing: install openssh-server (scripts/test does)"
    );
    let host_key = dir.join("host_key");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&host_key)
        .status()
        .unwrap();
    assert!(keygen.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPidFile {}\n",
            host_key.display(),
            authorized.display(),
            dir.join("sshd.pid").display()
        ),
    )
    .unwrap();
    // sshd's privilege separation folder.
    let _ = std::fs::create_dir_all("/run/sshd");
    // Owned by `Sshd` at once, so a failed start below still stops it.
    let server = Sshd {
        child: Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        port,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return server;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("sshd did not start on port {port}");
}

#[test]
fn an_ssh_key_clones_over_ssh() {
    let sandbox = Sandbox::new();
    let (repo, _) = repository(sandbox.path());
    let key = sandbox.path().join("id_ed25519");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "sluice-test", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(keygen.success());
    let server = sshd(sandbox.path(), &key.with_extension("pub"));
    let private = std::fs::read_to_string(&key).unwrap();
    let secrets = sandbox.write_secrets(serde_json::json!({ "aws:::ssm:/git/key": private }));
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let job = serde_json::json!({
        "git_repo": format!("ssh://{}@127.0.0.1:{}{}", user.trim(), server.port, repo.display()),
        "git_ssh_key_location": "aws:::ssm:/git/key",
        "orders": [{ "order_name": "vpc", "git_folder": "vpc", "cmds": ["./plan.sh"], "timeout": 30 }]});
    let job = sandbox.write_job("job.json", &job.to_string());
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--secrets",
            secrets.to_str().unwrap(),
            "--git-credential-hosts",
            "127.0.0.1",
        ];
        args.extend_from_slice(extra);
        sandbox.run(&job, &args)
    };
    // The server's key unknown: refused (it was trusted on first use before), with a hint.
    let unknown = sandbox.path().join("no_known_hosts");
    std::fs::write(&unknown, "").unwrap();
    let output = run(&["--git-known-hosts", unknown.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("Host key verification failed")
            && stderr.contains("SLUICE_GIT_KNOWN_HOSTS"),
        "{stderr}"
    );
    // Trusted on first use only when asked.
    succeeded(&run(&[
        "--git-known-hosts",
        unknown.to_str().unwrap(),
        "--git-ssh-tofu",
    ]));
    // Known: cloned.
    let known = sandbox.path().join("known_hosts");
    let host_key = std::fs::read_to_string(sandbox.path().join("host_key.pub")).unwrap();
    std::fs::write(&known, format!("[127.0.0.1]:{} {host_key}", server.port)).unwrap();
    let output = run(&["--git-known-hosts", known.to_str().unwrap()]);
    let done = succeeded(&output);
    assert!(sandbox.log_of(&done, "vpc").contains("vpc plan v2"));
    let key_line = private.lines().nth(1).unwrap();
    let mut files = Vec::new();
    files_holding(&sandbox.state(), key_line, &mut files);
    assert!(files.is_empty(), "the key is stored in {files:?}");
}
