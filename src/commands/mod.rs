//! The CLI's commands; each returns the process's exit code.

#[cfg(feature = "aws")]
mod aws;
mod cancel;
mod graph;
mod local;
mod plan;
mod report;
mod rerun;
mod resume;
mod run;
mod validate;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sluice_contract::validate::{Platform, ValidJob, validate};
use sluice_contract::{JobSpec, ValidateOptions, exit_codes, parse_job};
use sluice_engine::credentials;
use sluice_engine::init_job::preflight;
use sluice_engine::local::SecretsFile;

use crate::cli::Command;

/// Runs a parsed command.
pub async fn run(command: Command) -> i32 {
    match command {
        Command::Run {
            job,
            secrets,
            dry_run,
            config,
        } => run::run(&job, secrets.as_deref(), dry_run, config).await,
        Command::Resume { run_id, config } => resume::resume(run_id.as_deref(), config).await,
        Command::Rerun {
            run_id,
            failed,
            secrets,
            config,
        } => rerun::rerun(&run_id, failed, secrets.as_deref(), config).await,
        Command::Cancel { run_id, config } => cancel::cancel(&run_id, config).await,
        Command::Sentinel { state_dir } => {
            tokio::task::spawn_blocking(move || crate::sentinel::serve(&state_dir))
                .await
                .unwrap_or(exit_codes::INTERNAL_ERROR)
        }
        Command::Graph {
            job,
            format,
            username,
        } => graph::graph(&job, format, &username),
        Command::Report {
            run_id,
            output,
            state_dir,
        } => report::report(&run_id, output.as_deref(), &state_dir).await,
        Command::Schema => {
            print_json(&sluice_contract::job::job_schema());
            exit_codes::SUCCEEDED
        }
        Command::Validate {
            job,
            secrets,
            listing,
            username,
            ..
        } => validate::validate(&job, secrets.as_deref(), listing, &username).await,
        #[cfg(feature = "aws")]
        Command::Aws { command, .. } => aws::run(command).await,
    }
}

/// Writes `text` on stdout. A reader that stops reading (`| head`) ends the printing, not
/// the process (`println!` panics on a closed pipe).
pub fn print_stdout(text: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
}

/// `value` as pretty JSON and a line end on stdout (see [`print_stdout`]).
pub fn print_json(value: &impl serde::Serialize) {
    let mut text = serde_json::to_string_pretty(value).expect("JSON serializes");
    text.push('\n');
    print_stdout(&text);
}

/// A failure and the exit code it ends the process with.
pub struct Failure {
    code: i32,
    error: anyhow::Error,
}

impl Failure {
    /// The caller's input is at fault (exit 3).
    pub fn invalid(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: exit_codes::INVALID_INPUT,
            error: error.into(),
        }
    }

    /// Sluice itself failed (exit 4).
    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: exit_codes::INTERNAL_ERROR,
            error: error.into(),
        }
    }

    /// Prints the error as a warning about `what`, for a failure that does not end the
    /// command.
    pub fn warn(self, what: &str) {
        eprintln!("sluice: warning: {what}: {}", one_line(&self.error));
    }

    /// Prints the error on one line with its causes and returns the exit code.
    pub fn report(self) -> i32 {
        eprintln!("sluice: error: {}", one_line(&self.error));
        self.code
    }
}

/// The error and its causes on one line, `: `-separated. Sluice's errors print their cause
/// and also chain it as their source (ARCHITECTURE.md, "Errors"), so a cause whose text the
/// line already holds is left out; anyhow's `{:#}` would print it twice.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Reads and parses a job file; problems are the caller's (exit 3) and name the file.
pub fn read_job(path: &Path) -> Result<(JobSpec, PathBuf), Failure> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading job file {}", path.display()))
        .map_err(Failure::invalid)?;
    let job = parse_job(&bytes)
        .with_context(|| format!("job file {}", path.display()))
        .map_err(Failure::invalid)?;
    let base_dir = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .canonicalize()
        .with_context(|| format!("resolving the folder of {}", path.display()))
        .map_err(Failure::invalid)?;
    Ok((job, base_dir))
}

/// Reads a job file and makes every check `run` makes before queueing anything (validation,
/// then what the local engine can fetch), without touching any state.
pub fn read_valid_job(
    path: &Path,
    username: &str,
) -> Result<(JobSpec, PathBuf, ValidJob), Failure> {
    let (job, base_dir) = read_job(path)?;
    let in_file =
        |e: anyhow::Error| Failure::invalid(e.context(format!("job file {}", path.display())));
    let valid = validate(&job, &ValidateOptions::local(username)).map_err(|e| in_file(e.into()))?;
    preflight(&valid, Platform::Local, &base_dir).map_err(|e| in_file(e.into()))?;
    Ok((job, base_dir, valid))
}

/// Reads the secrets file, if one is given (none: every credential is missing).
pub fn secrets_file(secrets: Option<&Path>) -> Result<SecretsFile, Failure> {
    match secrets {
        Some(path) => SecretsFile::load(path).map_err(Failure::invalid),
        None => Ok(SecretsFile::none()),
    }
}

/// Reads the secrets file ([`secrets_file`]) and checks that it holds every credential the
/// job lists, by the same rules as SSM and Secrets Manager.
pub async fn check_credentials(
    job_path: &Path,
    valid: &ValidJob,
    secrets: Option<&Path>,
) -> Result<SecretsFile, Failure> {
    let file = secrets_file(secrets)?;
    credentials::resolve(valid, &file).await.map_err(|e| {
        let invalid = e.is_invalid_input();
        let error = anyhow::Error::new(e).context(format!("job file {}", job_path.display()));
        if invalid {
            Failure::invalid(error)
        } else {
            Failure::internal(error)
        }
    })?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use sluice_engine::EngineError;
    use sluice_engine::bundle::BundleError;
    use sluice_engine::code::CodeError;

    use super::*;

    /// A typed error that prints its cause and chains it shows the cause once; context
    /// added at the edge and causes not yet printed still show.
    #[test]
    fn an_error_line_shows_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "Permission denied");
        let error = EngineError::Bundle {
            order_num: "0001".to_owned(),
            order_name: "build".to_owned(),
            cause: CodeError::Bundle(Box::new(BundleError::ReadDir {
                dir: PathBuf::from("code/secret"),
                source: io,
            })),
        };
        let line = one_line(&anyhow::Error::new(error).context("job file job.json"));
        assert_eq!(
            line,
            "job file job.json: order 0001 (build): packaging its code failed: \
             reading code/secret: Permission denied"
        );

        let plain = anyhow::Error::new(std::io::Error::other("disk full")).context("writing x");
        assert_eq!(one_line(&plain), "writing x: disk full");
    }
}
