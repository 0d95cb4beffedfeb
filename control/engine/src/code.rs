//! Fetching orders' code for init_job: local folders and zips are used where they are; a
//! repository folder at a commit is cloned and archived ([`crate::git`]); a zip named by
//! URL (`s3://` on AWS) is downloaded through the [`CodeArchives`] port. Each distinct
//! repository and each distinct zip is fetched once per job, whatever the number of orders
//! sharing it, into a scratch folder that lives until the bundles are built.

use std::collections::HashMap;
use std::path::PathBuf;

use sluice_contract::validate::{GitSource, ValidJob, ValidOrder};

use crate::bundle::{BundleError, CodeInput};
use crate::credentials::fetch_failed;
use crate::engine::Engine;
use crate::error::{EngineError, StoreError};
use crate::git::{GitCredential, GitError, GitWorkspace};
use crate::ports::CodeArchives;

/// Why an order's code could not be had or packaged: what [`EngineError::Bundle`] holds.
/// Each message names the field and the path, repository or URL at fault. All of them
/// count as the job's fault ([`EngineError::is_invalid_input`]): almost all are (a path,
/// repository, commit or zip it names), the rest (git missing, a scratch file that
/// cannot be written) are only told apart by their variant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodeError {
    /// `code_dir` is not a folder (preflight).
    #[error("code_dir {path} is not a folder")]
    NotAFolder {
        /// The folder, joined to the job file's folder.
        path: PathBuf,
    },
    /// A local `s3_location` is not a file (preflight).
    #[error("s3_location {path} is not a file")]
    NotAFile {
        /// The zip, joined to the job file's folder.
        path: PathBuf,
    },
    /// A wasm order's module is not a file of its code folder (preflight).
    #[error("wasm.module {path} is not a file")]
    NoWasmModule {
        /// The module, joined to the code folder.
        path: PathBuf,
    },
    /// On AWS, a wasm order's module is not a file of its bundle's code (a link, or a path
    /// through a parent): the compile function reads it from there.
    #[error(
        "wasm.module {module}: on AWS the module must be a file of the order's code, not a link to one (nor missing, nor a folder)"
    )]
    ModuleNotAFile {
        /// The module, as the order names it.
        module: String,
    },
    /// A wasm order's module is larger than a module may be.
    #[error("wasm.module {module}: is {size} bytes, more than the {limit} a module may be")]
    ModuleTooLarge {
        /// The module, as the order names it.
        module: String,
        /// Its size.
        size: u64,
        /// The most a module may be.
        limit: u64,
    },
    /// A folder a wasm order mounts is not a folder of its code folder (preflight).
    #[error("wasm.dirs[{index}].host {path} is not a folder")]
    NoWasmDir {
        /// Its index in `wasm.dirs`.
        index: usize,
        /// The folder, joined to the code folder.
        path: PathBuf,
    },
    /// The code could not be had from its git repository.
    #[error("git_repo: {0}")]
    Git(#[source] Box<GitError>),
    /// A zip is named by URL, but this engine reads zips from paths only.
    #[error("s3_location {location}: this engine reads zips from paths only")]
    NoArchives {
        /// The URL.
        location: String,
    },
    /// Nothing is stored where the zip's URL points.
    #[error("s3_location: nothing is stored at {key}")]
    ArchiveNotFound {
        /// What the store says is missing.
        key: String,
    },
    /// This deployment may not read the zip.
    #[error(
        "s3_location: this deployment may not read {location} (access denied; S3 \
         says so for a missing object too when its bucket may not be listed)"
    )]
    ArchiveDenied {
        /// The URL.
        location: String,
    },
    /// The bundle could not be built from the code.
    #[error(transparent)]
    Bundle(Box<BundleError>),
}

// The large causes are boxed, so that every `Result` carrying a `CodeError` (or an
// `EngineError`) stays small.
impl From<GitError> for CodeError {
    fn from(error: GitError) -> Self {
        CodeError::Git(Box::new(error))
    }
}

impl From<BundleError> for CodeError {
    fn from(error: BundleError) -> Self {
        CodeError::Bundle(Box::new(error))
    }
}

/// Where an order's code will come from, once preflight has checked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodePlan {
    /// Local paths, ready to bundle.
    Local(CodeInput),
    /// A repository folder at a commit.
    Git(GitSource),
    /// A zip named by URL (`s3://bucket/key.zip`).
    Archive(String),
}

/// Every order's code as local paths, and the scratch space holding what was fetched.
#[derive(Debug)]
pub(crate) struct FetchedCode {
    /// One per order, in order.
    pub inputs: Vec<CodeInput>,
    _git: Option<GitWorkspace>,
    _downloads: Option<tempfile::TempDir>,
}

impl Engine {
    /// Fetches what `plans` (one per order of `valid`) name; see the module docs.
    pub(crate) async fn fetch_code(
        &self,
        valid: &ValidJob,
        plans: Vec<CodePlan>,
    ) -> Result<FetchedCode, EngineError> {
        let mut git: Option<GitWorkspace> = None;
        let mut downloads: Option<tempfile::TempDir> = None;
        let mut downloaded: HashMap<String, PathBuf> = HashMap::new();
        let mut inputs = Vec::with_capacity(plans.len());
        for (order, plan) in valid.orders.iter().zip(plans) {
            let input = match plan {
                CodePlan::Local(input) => input,
                CodePlan::Git(source) => {
                    let credential = self.git_credential(order, &source).await?;
                    if git.is_none() {
                        git =
                            Some(GitWorkspace::new(self.config.git.clone()).map_err(|e| {
                                StoreError::io("creating a folder for git clones", e)
                            })?);
                    }
                    let workspace = git.as_mut().expect("created above");
                    let zip = workspace
                        .code_zip(&source, credential.as_ref())
                        .await
                        .map_err(|error| bundle_error(order, error.into()))?;
                    tracing::info!(order_num = %order.plan.order_num, repo = %source.repo, "code fetched from git");
                    CodeInput::Zip(zip)
                }
                CodePlan::Archive(location) => {
                    if let Some(path) = downloaded.get(&location) {
                        CodeInput::Zip(path.clone())
                    } else {
                        let archives = self.ports.archives.as_deref().ok_or_else(|| {
                            bundle_error(
                                order,
                                CodeError::NoArchives {
                                    location: location.clone(),
                                },
                            )
                        })?;
                        if downloads.is_none() {
                            downloads = Some(
                                tempfile::Builder::new()
                                    .prefix("sluice-zips-")
                                    .tempdir()
                                    .map_err(|e| {
                                        StoreError::io("creating a folder for code zips", e)
                                    })?,
                            );
                        }
                        let dir = downloads.as_ref().expect("created above").path();
                        let path = dir.join(format!("code-{}.zip", downloaded.len() + 1));
                        download(archives, order, &location, &path).await?;
                        downloaded.insert(location, path.clone());
                        CodeInput::Zip(path)
                    }
                }
            };
            inputs.push(input);
        }
        Ok(FetchedCode {
            inputs,
            _git: git,
            _downloads: downloads,
        })
    }

    /// What a git source is cloned with: the value of its `git_token_location` or of its
    /// `git_ssh_key_location` (the token when both are given), if any.
    async fn git_credential(
        &self,
        order: &ValidOrder,
        source: &GitSource,
    ) -> Result<Option<GitCredential>, EngineError> {
        let (field, location, make): (_, _, fn(String) -> GitCredential) =
            match (&source.token_location, &source.ssh_key_location) {
                (Some(token), _) => ("git_token_location", token, GitCredential::Token),
                (None, Some(key)) => ("git_ssh_key_location", key, GitCredential::SshKey),
                (None, None) => return Ok(None),
            };
        match self.ports.secrets.fetch(location).await {
            Ok(value) => Ok(Some(make(value))),
            Err(error) => Err(fetch_failed(order, field, location, &error)),
        }
    }
}

/// Downloads the zip at `location` to `path`.
async fn download(
    archives: &dyn CodeArchives,
    order: &ValidOrder,
    location: &str,
    path: &std::path::Path,
) -> Result<(), EngineError> {
    let bytes = match archives.fetch_zip(location).await {
        Ok(bytes) => bytes,
        Err(StoreError::NotFound { key }) => {
            return Err(bundle_error(order, CodeError::ArchiveNotFound { key }));
        }
        Err(StoreError::Denied { .. }) => {
            return Err(bundle_error(
                order,
                CodeError::ArchiveDenied {
                    location: location.to_owned(),
                },
            ));
        }
        Err(other) => return Err(other.into()),
    };
    tokio::fs::write(path, &bytes)
        .await
        .map_err(|e| StoreError::io(format!("writing {}", path.display()), e))?;
    tracing::info!(order_num = %order.plan.order_num, %location, bytes = bytes.len(), "code zip downloaded");
    Ok(())
}

fn bundle_error(order: &ValidOrder, cause: CodeError) -> EngineError {
    EngineError::Bundle {
        order_num: order.plan.order_num.to_string(),
        order_name: order.plan.order_name.clone(),
        cause,
    }
}
