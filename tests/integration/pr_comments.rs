//! A job with `pr_number` keeps one comment on its pull request: posted at init, edited as
//! orders run, completed with the job's status. Against a GitHub REST stand-in (wiremock)
//! on 127.0.0.1 whose PR already has 150 other comments, so finding ours takes two pages.

use std::sync::{Arc, Mutex};

use crate::util::{Sandbox, done_of, http_stand_in};
use sluice_contract::JobStatus;
use wiremock::{MockServer, Request, Respond, ResponseTemplate};

const TOKEN: &str = "ghp_PrCommentToken42";

/// The stand-in's state: the PR's comments and every call made.
#[derive(Debug, Default)]
struct GitHub {
    comments: Vec<(u64, String)>,
    calls: Vec<String>,
    /// Every body our comment had, in order.
    history: Vec<String>,
    unauthorised: usize,
}

/// GitHub's REST API for one pull request, answering from [`GitHub`]'s state.
struct GitHubApi {
    state: Arc<Mutex<GitHub>>,
    base: String,
}

impl Respond for GitHubApi {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let target = match request.url.query() {
            Some(query) => format!("{}?{query}", request.url.path()),
            None => request.url.path().to_owned(),
        };
        let authorization = request
            .headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let (status, link, body) = route(
            &self.state,
            &self.base,
            request.method.as_str(),
            &target,
            authorization,
            &request.body,
        );
        let answer = ResponseTemplate::new(status).set_body_raw(body, "application/json");
        match link {
            Some(link) => answer.insert_header("link", link),
            None => answer,
        }
    }
}

/// A running stand-in: its base URL and state (it stops when dropped).
struct Served {
    base: String,
    state: Arc<Mutex<GitHub>>,
    _server: MockServer,
}

fn serve() -> Served {
    let state = Arc::new(Mutex::new(GitHub {
        comments: (1..=150)
            .map(|i| (i, format!("an earlier comment {i}")))
            .collect(),
        ..GitHub::default()
    }));
    let api_state = Arc::clone(&state);
    let server = http_stand_in(|base| GitHubApi {
        state: api_state,
        base,
    });
    Served {
        base: server.uri(),
        state,
        _server: server,
    }
}

fn route(
    state: &Mutex<GitHub>,
    api: &str,
    method: &str,
    target: &str,
    authorization: Option<String>,
    body: &[u8],
) -> (u16, Option<String>, String) {
    let mut github = state.lock().unwrap();
    github.calls.push(format!("{method} {target}"));
    if authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        github.unauthorised += 1;
        return (401, None, r#"{"message":"Bad credentials"}"#.to_owned());
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let text = || {
        serde_json::from_slice::<serde_json::Value>(body).unwrap()["body"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    match (method, path) {
        ("GET", "/repos/acme/infra/issues/7/comments") => {
            let page: usize = query
                .split('&')
                .find_map(|p| p.strip_prefix("page="))
                .and_then(|p| p.parse().ok())
                .unwrap_or(1);
            let per_page = 100;
            let all: Vec<_> = github
                .comments
                .iter()
                .map(|(id, body)| serde_json::json!({ "id": id, "body": body }))
                .collect();
            let slice: Vec<_> = all
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .cloned()
                .collect();
            let link = (page * per_page < all.len()).then(|| {
                format!(
                    "<{api}/repos/acme/infra/issues/7/comments?per_page=100&page={}>; rel=\"next\"",
                    page + 1
                )
            });
            (200, link, serde_json::Value::Array(slice).to_string())
        }
        ("POST", "/repos/acme/infra/issues/7/comments") => {
            let id = 1000 + github.comments.len() as u64;
            let text = text();
            github.history.push(text.clone());
            github.comments.push((id, text));
            (201, None, serde_json::json!({ "id": id }).to_string())
        }
        ("PATCH", path) if path.starts_with("/repos/acme/infra/issues/comments/") => {
            let id: u64 = path.rsplit('/').next().unwrap().parse().unwrap();
            let text = text();
            github.history.push(text.clone());
            match github.comments.iter_mut().find(|(i, _)| *i == id) {
                Some(comment) => {
                    comment.1 = text;
                    (200, None, serde_json::json!({ "id": id }).to_string())
                }
                None => (404, None, "{}".to_owned()),
            }
        }
        _ => (404, None, "{}".to_owned()),
    }
}

#[test]
fn one_comment_follows_the_run_to_its_end() {
    let sandbox = Sandbox::new();
    let served = serve();
    let (api, github) = (&served.base, &served.state);
    std::fs::create_dir_all(sandbox.path().join("app")).unwrap();
    let secrets = sandbox.write_secrets(serde_json::json!({ "aws:::ssm:/gh/token": TOKEN }));
    let job = serde_json::json!({
    "pr_number": 7,
    "git_repo": "https://github.com/acme/infra.git",
    "git_token_location": "aws:::ssm:/gh/token",
    "orders": [
        { "order_name": "build", "code_dir": "app", "cmds": ["sleep 0.2"], "timeout": 30 },
        { "order_name": "test", "code_dir": "app", "cmds": ["exit 3"], "timeout": 30, "dependencies": ["build"] },
    ]});
    let job = sandbox.write_job("job.json", &job.to_string());
    let output = sandbox.run(
        &job,
        &["--secrets", secrets.to_str().unwrap(), "--github-api", api],
    );
    let done = done_of(&output);
    assert_eq!(done.status, JobStatus::Failed);

    let github = github.lock().unwrap();
    assert_eq!(github.unauthorised, 0, "every call carried the token");
    let posts = github
        .calls
        .iter()
        .filter(|c| c.starts_with("POST"))
        .count();
    let patches = github
        .calls
        .iter()
        .filter(|c| c.starts_with("PATCH"))
        .count();
    assert_eq!(posts, 1, "one comment: {:?}", github.calls);
    assert!(patches >= 2, "edited as the run went: {:?}", github.calls);
    assert!(
        github.calls.iter().any(|c| c.contains("page=2")),
        "the search followed the Link header to the second page: {:?}",
        github.calls
    );
    assert_eq!(github.comments.len(), 151);
    let (_, body) = github.comments.last().unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], format!("#sluice-{}", done.run_id));
    assert!(
        lines[1].contains(&done.run_id.to_string()) && lines[1].ends_with("**failed**"),
        "{body}"
    );
    assert!(
        body.contains("| 0001 | build | ✅ succeeded | 0."),
        "{body}"
    );
    assert!(
        body.contains("| 0002 | test | ❌ failed |") && body.contains("exit code 3"),
        "{body}"
    );
    assert!(github.history[0].contains("⏳ queued") && github.history[0].contains("running"));
    assert!(
        github.history.iter().any(|b| b.contains("build | 🔄")),
        "{:?}",
        github.history
    );
    for body in &github.history {
        assert!(!body.contains(TOKEN));
    }
}

#[test]
fn a_host_that_fails_never_fails_the_run() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.path().join("app")).unwrap();
    let job = serde_json::json!({
        "pr_number": 7,
        "git_repo": "https://github.com/acme/infra.git",
        "orders": [{ "code_dir": "app", "cmds": ["true"], "timeout": 30 }]});
    let job = sandbox.write_job("job.json", &job.to_string());
    // Nothing listens there.
    let output = sandbox.run(&job, &["--github-api", "http://127.0.0.1:9"]);
    assert_eq!(done_of(&output).status, JobStatus::Succeeded);
    // Without --github-api, the CLI says why no comment is kept.
    let output = sandbox.run(&job, &[]);
    assert_eq!(done_of(&output).status, JobStatus::Succeeded);
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("no PR comment on acme/infra#7: pass --github-api")
    );
}
