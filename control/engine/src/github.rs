//! [`GitHubVcs`]: PR comments through GitHub's REST API (or GitHub Enterprise's, at its own
//! base URL, `https://github.example.com/api/v3`).
//!
//! The comment is found by its tag among the PR's comments (`GET .../issues/N/comments`,
//! 100 a page, following the `Link: rel="next"` pages), then edited (`PATCH
//! .../issues/comments/ID`) or, when there is none yet, posted (`POST .../issues/N/comments`).

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use reqwest::{Client, Method, StatusCode};
use sluice_contract::validate::PullRequest;

use crate::error::StoreError;
use crate::http::transport_message;
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
    client: Client,
}

/// A successful answer.
struct Answer {
    headers: HeaderMap,
    body: Vec<u8>,
}

impl GitHubVcs {
    /// The API at `api` (no trailing `/` needed).
    ///
    /// # Errors
    ///
    /// The TLS backend cannot be set up (the platform's certificates cannot be loaded).
    pub fn new(api: &str) -> Result<Self, reqwest::Error> {
        // A redirected POST or PATCH would be replayed as a GET and "succeed": not followed.
        let client = Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(CALL_TIMEOUT)
            .user_agent("sluice")
            .build()?;
        Ok(GitHubVcs {
            api: api.trim_end_matches('/').to_owned(),
            client,
        })
    }

    /// Makes one call; anything but a 2xx is an error of its kind (a 5xx, a 429 or no
    /// answer: transient; a 401 or 403: denied), naming the call (never the token).
    async fn call(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, StoreError> {
        let what = || format!("{method} {url}");
        let mut request = self
            .client
            .request(method.clone(), url)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .header("content-type", "application/json");
        if let Some(token) = token {
            request = request.bearer_auth(token.trim());
        }
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let unavailable = |e: reqwest::Error| StoreError::Unavailable {
            what: what(),
            message: transport_message(e),
        };
        let response = request.send().await.map_err(unavailable)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(unavailable)?.to_vec();
        if status.is_success() {
            return Ok(Answer { headers, body });
        }
        let text = String::from_utf8_lossy(&body);
        let message = format!(
            "HTTP {status}: {}",
            text.chars().take(300).collect::<String>()
        );
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => StoreError::Denied {
                what: what(),
                message,
            },
            status if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
                StoreError::Unavailable {
                    what: what(),
                    message,
                }
            }
            _ => StoreError::Backend {
                what: what(),
                message,
            },
        })
    }

    /// The id of the comment of `pr` whose body contains `tag`.
    async fn find(
        &self,
        pr: &PullRequest,
        token: Option<&str>,
        tag: &str,
    ) -> Result<Option<u64>, StoreError> {
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
            let answer = self.call(Method::GET, &page, token, None).await?;
            let comments: Vec<serde_json::Value> =
                serde_json::from_slice(&answer.body).map_err(|e| StoreError::Backend {
                    what: format!("GET {page}"),
                    message: format!("not a list of comments: {e}"),
                })?;
            let found = comments.iter().find(|c| {
                c["body"]
                    .as_str()
                    .is_some_and(|body| body.lines().next() == Some(tag))
            });
            if let Some(comment) = found {
                return Ok(comment["id"].as_u64());
            }
            // The token goes with every page: only to pages of the same API.
            url = next_page(&answer.headers)
                .filter(|next| next.starts_with(&format!("{}/", self.api)));
        }
        Ok(None)
    }
}

/// The `rel="next"` URL of a `Link` header.
fn next_page(headers: &HeaderMap) -> Option<String> {
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
    ) -> Result<(), StoreError> {
        let payload = serde_json::json!({ "body": body });
        match self.find(pr, token, tag).await? {
            Some(id) => {
                let url = format!("{}/repos/{}/issues/comments/{id}", self.api, pr.repo);
                self.call(Method::PATCH, &url, token, Some(&payload))
                    .await?;
            }
            None => {
                let url = format!(
                    "{}/repos/{}/issues/{}/comments",
                    self.api, pr.repo, pr.number
                );
                self.call(Method::POST, &url, token, Some(&payload)).await?;
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
        let mut headers = HeaderMap::new();
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
