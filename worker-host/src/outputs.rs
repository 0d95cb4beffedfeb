//! An attempt's outputs and inputs (see `sluice_contract::outputs`).
//!
//! Before the order runs, its inputs are read from what their orders published — each
//! producer's document fetched once, through the URL its dispatch carries, and dropped
//! once the values it names are taken; a missing one fails the order before anything runs
//! — and the output file is made, empty, in a folder of the attempt's own outside its code
//! (`$SLUICE_OUTPUT`; a module's `/sluice`). Once the order has ended, the file is read
//! through the folder as it was made (the order may have replaced the path by a link),
//! never through a link, never a device or a FIFO, never more than an order may publish;
//! what it says is stored through the dispatch's outputs URL, with the names of the values
//! that are secret: holding one of the order's secrets, or named like one.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;
use sluice_contract::credentials::is_secret_name;
use sluice_contract::dispatch::{Capability, DispatchPayload};
use sluice_contract::outputs::{
    MAX_OUTPUT_BYTES, MAX_PUBLISHED_BYTES, OutputsError, PublishedOutputs, missing_input,
    parse_outputs, parse_published,
};
use tokio::time::Instant;

use crate::io::{Delivery, IoError, WorkerIo};
use crate::redact::Redactor;
use crate::retry::{self, RetryPolicy};

/// The attempt's folder for its output file (a module sees it as `/sluice`).
const PUBLISH_FOLDER: &str = "publish";
/// The output file's name in it.
const OUTPUT_FILE: &str = "output";

/// The folder of an attempt's output file, held open from when it was made.
#[derive(Debug)]
pub(crate) struct PublishDir {
    path: PathBuf,
    dir: OwnedFd,
}

impl PublishDir {
    /// Makes the folder and its empty output file in `work`, and holds the folder open.
    ///
    /// # Errors
    ///
    /// The folder or the file cannot be made or opened.
    pub(crate) async fn prepare(work: &Path) -> std::io::Result<Self> {
        let path = work.join(PUBLISH_FOLDER);
        tokio::fs::create_dir(&path).await?;
        tokio::fs::File::create_new(path.join(OUTPUT_FILE)).await?;
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let dir = nix::fcntl::open(&path, flags, Mode::empty())?;
        Ok(PublishDir { path, dir })
    }

    /// The folder (for a module's `/sluice`).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The output file (for `$SLUICE_OUTPUT`).
    pub(crate) fn output_file(&self) -> PathBuf {
        self.path.join(OUTPUT_FILE)
    }

    /// The output file's bytes, at most one more than an order may publish; none when it
    /// is gone. Opened in the folder as it was made, without following a link, without
    /// waiting on a FIFO or taking a terminal, and read only when it is a regular file: a
    /// worker with more rights than its order (root on CodeBuild) reads nothing the order
    /// could not.
    async fn read_bounded(&self) -> std::io::Result<Vec<u8>> {
        let dir = self.dir.try_clone()?;
        let shown = self.output_file();
        tokio::task::spawn_blocking(move || read_bounded(&dir, &shown))
            .await
            .map_err(std::io::Error::other)?
    }
}

/// See [`PublishDir::read_bounded`]; `shown` names the file in messages.
fn read_bounded(dir: &OwnedFd, shown: &Path) -> std::io::Result<Vec<u8>> {
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let file = match openat(dir, OUTPUT_FILE, flags, Mode::empty()) {
        Ok(fd) => std::fs::File::from(fd),
        Err(nix::errno::Errno::ENOENT) => return Ok(Vec::new()),
        Err(errno) => return Err(errno.into()),
    };
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            shown.display()
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_OUTPUT_BYTES + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Why an order's outputs were not published.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    /// The output file cannot be read.
    #[error("reading its output file: {0}")]
    Read(#[source] std::io::Error),
    /// What it holds is not outputs.
    #[error(transparent)]
    Malformed(#[from] OutputsError),
    /// The dispatch has no place to store them.
    #[error("it wrote outputs, but its dispatch gives them no place to be stored")]
    NoPlace,
    /// Storing them failed.
    #[error("storing its outputs: {0}")]
    Store(#[source] IoError),
}

/// How an attempt's outputs are stored: where, what is secret, until when.
pub(crate) struct Publishing<'a> {
    /// PUT, if absent: where.
    pub url: Option<&'a Capability>,
    /// The order's secrets.
    pub redactor: &'a Redactor,
    /// How a transient failure is tried again, until `patience`.
    pub policy: RetryPolicy,
    /// Until when a transient failure is tried again.
    pub patience: Instant,
    /// When storing them gives up.
    pub by: Instant,
}

/// Reads the output file of `dir` and stores its outputs as `how` says: how many it
/// stored (none when the file is empty or gone).
///
/// # Errors
///
/// A [`PublishError`]: the order, had it succeeded, fails with it.
pub(crate) async fn publish(
    io: &dyn WorkerIo,
    dir: &PublishDir,
    how: Publishing<'_>,
) -> Result<u32, PublishError> {
    let bytes = dir.read_bounded().await.map_err(PublishError::Read)?;
    let outputs = parse_outputs(&bytes)?;
    if outputs.is_empty() {
        return Ok(0);
    }
    let url = how.url.ok_or(PublishError::NoPlace)?;
    let secret = (outputs.iter())
        .filter(|(name, value)| {
            is_secret_name(name) || matches!(how.redactor.redact_str(value), Cow::Owned(_))
        })
        .map(|(name, _)| name.clone())
        .collect();
    let count = u32::try_from(outputs.len()).unwrap_or(u32::MAX);
    let body =
        serde_json::to_vec(&PublishedOutputs { outputs, secret }).expect("outputs serialize");
    // Written once: a write whose answer was lost finds its own object there.
    let put = || async {
        match io.put_if_absent(url, body.clone()).await? {
            Delivery::Stored | Delivery::AlreadyThere => Ok(()),
        }
    };
    retry::within(how.policy, how.patience, how.by, url.shown(), put)
        .await
        .map_err(PublishError::Store)?;
    Ok(count)
}

/// An input's value, ready for the order's environment.
#[derive(Debug)]
pub(crate) struct TakenInput {
    /// The variable.
    pub env: String,
    /// The reference as the job wrote it.
    pub source: String,
    /// Its value.
    pub value: String,
    /// Whether it is secret — its producer said it holds a secret, or it is named like
    /// one — and so masked in this order's log.
    pub secret: bool,
}

/// Why an order's inputs could not be taken; the order fails with this before it runs.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InputError {
    /// Its producer did not publish it.
    #[error("{}", missing_input(.reference))]
    Missing {
        /// The reference as the job wrote it.
        reference: String,
    },
    /// Its producer's outputs cannot be read.
    #[error("reading input {env} ({reference}): {cause}")]
    Read {
        /// The variable.
        env: String,
        /// The reference as the job wrote it.
        reference: String,
        /// Why.
        cause: String,
    },
    /// Its value is larger than a command's variable can be.
    #[error(
        "input {env} ({reference}) is {bytes} bytes: a command's variable holds at most {max} (Linux's limit); pass a larger value as a file"
    )]
    TooLarge {
        /// The variable.
        env: String,
        /// The reference as the job wrote it.
        reference: String,
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
}

/// The most bytes of a variable a command can be given: Linux refuses `NAME=value`
/// strings longer than 32 pages (`MAX_ARG_STRLEN`).
pub(crate) const MAX_COMMAND_VARIABLE: usize = 32 * 4096 - 1;

/// Reads the attempt's inputs: each producer's outputs fetched once (while failures are
/// transient, until `until`), the values the attempt takes kept and the rest dropped.
/// `max_value`: the largest value the order can be given, and the variable's name with it.
///
/// # Errors
///
/// The first input missing, unreadable or too large.
pub(crate) async fn take_inputs(
    io: &dyn WorkerIo,
    payload: &DispatchPayload,
    policy: RetryPolicy,
    until: Instant,
    max_value: Option<usize>,
) -> Result<Vec<TakenInput>, InputError> {
    let mut taken = Vec::new();
    for source in &payload.inputs {
        let Some(first) = source.inputs.first() else {
            continue;
        };
        let read_error = |cause: String| InputError::Read {
            env: first.env.clone(),
            reference: first.source.clone(),
            cause,
        };
        let Some(url) = &source.published else {
            return Err(InputError::Missing {
                reference: first.source.clone(),
            });
        };
        let bytes = retry::while_transient(policy, until, || io.get(url, MAX_PUBLISHED_BYTES))
            .await
            .map_err(|e| read_error(e.to_string()))?;
        let published = parse_published(&bytes).map_err(read_error)?;
        drop(bytes);
        for input in &source.inputs {
            let value = (published.outputs.get(&input.output).cloned()).ok_or_else(|| {
                InputError::Missing {
                    reference: input.source.clone(),
                }
            })?;
            let bytes = input.env.len() + 1 + value.len();
            if let Some(max) = max_value
                && bytes > max
            {
                return Err(InputError::TooLarge {
                    env: input.env.clone(),
                    reference: input.source.clone(),
                    bytes: value.len(),
                    max: max - input.env.len() - 1,
                });
            }
            taken.push(TakenInput {
                env: input.env.clone(),
                source: input.source.clone(),
                secret: published.secret.contains(&input.output) || is_secret_name(&input.env),
                value,
            });
        }
    }
    Ok(taken)
}

/// The inputs as variables, for the order's environment.
pub(crate) fn as_variables(inputs: &[TakenInput]) -> BTreeMap<String, String> {
    (inputs.iter())
        .map(|input| (input.env.clone(), input.value.clone()))
        .collect()
}
