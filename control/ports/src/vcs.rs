//! Where a run's PR comment is kept: GitHub's REST API (`sluice_engine::github::GitHubVcs`).

use std::fmt::Debug;

use async_trait::async_trait;
use sluice_contract::validate::PullRequest;

use crate::StoreError;

/// A version control host's pull-request comments.
#[async_trait]
pub trait Vcs: Send + Sync + Debug {
    /// Makes `body` the text of `pr`'s comment that contains `tag`: edits it when there is
    /// one, posts it otherwise. `token` authenticates the calls.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] saying which call failed and how (never the token): `Unavailable`
    /// when the host may answer later, `Denied` when the token is refused.
    async fn upsert_comment(
        &self,
        pr: &PullRequest,
        token: Option<&str>,
        tag: &str,
        body: &str,
    ) -> Result<(), StoreError>;
}
