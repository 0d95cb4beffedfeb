//! [`GitHubVcs`]: PR comments through GitHub's REST API (or GitHub Enterprise's, at its own
//! base URL, `https://github.example.com/api/v3`).
//!
//! The comment is found by its tag among the PR's comments (`GET .../issues/N/comments`,
//! 100 a page, following the `Link: rel="next"` pages), then edited (`PATCH
//! .../issues/comments/ID`) or, when there is none yet, posted (`POST .../issues/N/comments`).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sluice_contract::validate::PullRequest;

use crate::http::{self, HttpAnswer, HttpClient};
use crate::ports::Vcs;

/// GitHub's public API.
pub const GITHUB_API: &str = "https://api.github.com";
/// Longest a call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Most pages of comments read looking for the tag (10 000 comments).
const MAX_PAGES: usize = 100;

/// A GitHub API at a base URL.
#[derive(Debug, Clone)]
pub struct GitHubVcs {
    api: String,
    client: HttpClient,
}

impl GitHubVcs {
    /// The API at `api` (no trailing `/` needed).
    ///
    /// # Errors
    ///
    /// The platform's certificates cannot be loaded.
    pub fn new(api: &str) -> std::io::Result<Self> {
        Ok(GitHubVcs {
            api: api.trim_end_matches('/').to_owned(),
            client: HttpClient::new(CALL_TIMEOUT)?,
        })
    }

    async fn call(
        &self,
        method: hyper::Method,
        url: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Result<HttpAnswer, String> {
        let mut request = hyper::Request::builder()
            .method(method.clone())
            .uri(url)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .header("user-agent", "sluice");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {}", token.trim()));
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let request = request
            .header("content-type", "application/json")
            .body(http::body(body))
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let answer = self
            .client
            .send(request)
            .await
            .map_err(|e| format!("{method} {url}: {e}"))?;
        if answer.status.is_success() {
            Ok(answer)
        } else {
            Err(format!("{method} {url}: {}", answer.refusal()))
        }
    }

    /// The id of the comment of `pr` whose body contains `tag`.
    async fn find(
        &self,
        pr: &PullRequest,
        token: Option<&str>,
        tag: &str,
    ) -> Result<Option<u64>, String> {
        let mut url = Some(format!(
            "{}/repos/{}/issues/{}/comments?per_page=100",
            self.api, pr.repo, pr.number
        ));
        let mut pages = 0;
        while let Some(page) = url.take() {
            pages += 1;
            if pages > MAX_PAGES {
                break;
            }
            let answer = self.call(hyper::Method::GET, &page, token, None).await?;
            let comments: Vec<serde_json::Value> = serde_json::from_slice(&answer.body)
                .map_err(|e| format!("GET {page}: not a list of comments: {e}"))?;
            let found = comments.iter().find(|c| {
                c["body"]
                    .as_str()
                    .is_some_and(|body| body.lines().next() == Some(tag))
            });
            if let Some(comment) = found {
                return Ok(comment["id"].as_u64());
            }
            url = next_page(&answer.headers);
        }
        Ok(None)
    }
}

/// The `rel="next"` URL of a `Link` header.
fn next_page(headers: &hyper::HeaderMap) -> Option<String> {
    let link = headers.get("link")?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
    })
}

#[async_trait]
impl Vcs for GitHubVcs {
    async fn upsert_comment(
        &self,
        pr: &PullRequest,
        token: Option<&str>,
        tag: &str,
        body: &str,
    ) -> Result<(), String> {
        let payload = serde_json::json!({ "body": body });
        match self.find(pr, token, tag).await? {
            Some(id) => {
                let url = format!("{}/repos/{}/issues/comments/{id}", self.api, pr.repo);
                self.call(hyper::Method::PATCH, &url, token, Some(&payload))
                    .await?;
            }
            None => {
                let url = format!(
                    "{}/repos/{}/issues/{}/comments",
                    self.api, pr.repo, pr.number
                );
                self.call(hyper::Method::POST, &url, token, Some(&payload))
                    .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_comes_from_the_link_header() {
        let mut headers = hyper::HeaderMap::new();
        headers.insert(
            "link",
            "<https://api.github.com/x?page=3>; rel=\"next\", <https://api.github.com/x?page=9>; rel=\"last\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_page(&headers).as_deref(),
            Some("https://api.github.com/x?page=3")
        );
        headers.insert(
            "link",
            "<https://api.github.com/x?page=1>; rel=\"prev\""
                .parse()
                .unwrap(),
        );
        assert_eq!(next_page(&headers), None);
    }
}
