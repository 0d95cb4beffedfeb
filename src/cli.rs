//! The command line, parsed once into typed settings.
//!
//! Every setting is a flag or a `SLUICE_*` variable (flag wins). Code below this module never
//! reads the environment: the few host variables orders inherit (`PATH`, `HOME`, `LANG`) and
//! the default username are captured here.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sluice_contract::exit_codes;

#[derive(Debug, Parser)]
#[command(name = "sluice", version, about = "Run jobs of shell orders with dependencies", long_about = None)]
struct Args {
    #[command(subcommand)]
    command: CommandArgs,
    /// Log more (repeat for more detail); SLUICE_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Debug, Subcommand)]
enum CommandArgs {
    /// Run a job with the local engine and wait for it to finish.
    Run {
        /// The job file (JSON).
        job: PathBuf,
        /// JSON file mapping credential locations (`aws:::ssm:<path>`, `aws:::secretd:<id>`)
        /// to their values, for orders with `ssm_paths` / `secret_manager_paths`.
        #[arg(long, env = "SLUICE_SECRETS")]
        secrets: Option<PathBuf>,
        /// Check the job and print its plan (`validate --plan`; JSON with --json) instead of
        /// running it: nothing runs and nothing is written, not even the state folder.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        local: LocalArgs,
    },
    /// Carry unfinished local runs to their done documents after the sluice that ran them
    /// died (killed, crashed, the machine restarted): kills what the dead run left, keeps
    /// every order that ended, runs again the ones that were running (a new attempt), and
    /// reports as `run` does.
    Resume {
        /// The run to resume (default: every unfinished run in the state folder).
        run_id: Option<String>,
        #[command(flatten)]
        local: LocalArgs,
    },
    /// Cancel a run: nothing more of it starts, its running orders get SIGTERM, then
    /// SIGKILL after the grace period, and it ends `cancelled`, saying who cancelled. A
    /// local run (`--state-dir`) is stopped by the `sluice` carrying it, or here when none
    /// does; with `--aws`, a run of the deployment (its workers stop within seconds).
    Cancel {
        /// The run id.
        run_id: String,
        /// Cancel a run of the deployment named by the environment (SLUICE_* settings)
        /// rather than a local one.
        #[cfg(feature = "aws")]
        #[arg(long)]
        aws: bool,
        #[command(flatten)]
        local: LocalArgs,
    },
    /// Run a finished run's job again, as a new run naming it (`rerun_of`): each order runs
    /// the code it ran with while its bundle is stored (else fetched from the job again),
    /// with its credentials read anew. With `--failed`, orders that succeeded (and wait for
    /// none that runs again) are not run: they are `succeeded`, `reused_from` that run, their
    /// outputs passed on as before. A
    /// local rerun runs in the foreground as `run` does (same progress, flags and exit
    /// codes); with `--aws`, the deployment's init-job queues it (`--wait` follows it).
    Rerun {
        /// The run to run again (finished).
        run_id: String,
        /// Run only the orders that did not succeed, and those waiting for them.
        #[arg(long)]
        failed: bool,
        /// JSON file of the credentials the job's orders list (as for `run`).
        #[arg(long, env = "SLUICE_SECRETS")]
        secrets: Option<PathBuf>,
        /// Rerun a run of the deployment named by the environment (SLUICE_* settings),
        /// through its init-job (`--endpoint` or `--function`, as `submit`).
        #[cfg(feature = "aws")]
        #[arg(long)]
        aws: bool,
        /// With --aws: the HTTP API's /init URL.
        #[cfg(feature = "aws")]
        #[arg(long, env = "SLUICE_INIT_ENDPOINT", conflicts_with = "function")]
        endpoint: Option<String>,
        /// With --aws: the init-job function's name or ARN.
        #[cfg(feature = "aws")]
        #[arg(long, env = "SLUICE_INIT_FUNCTION")]
        function: Option<String>,
        /// With --aws: then wait for the new run, as `sluice wait` does.
        #[cfg(feature = "aws")]
        #[arg(long, requires = "aws")]
        wait: bool,
        /// With --wait: seconds between looks.
        #[cfg(feature = "aws")]
        #[arg(long, default_value_t = 5, requires = "wait", value_parser = clap::value_parser!(u64).range(1..=3600))]
        poll: u64,
        #[command(flatten)]
        local: LocalArgs,
    },
    /// The sentinel `run` and `resume` start beside themselves (internal).
    #[command(hide = true)]
    Sentinel {
        /// The state folder of the runs it watches.
        state_dir: PathBuf,
    },
    /// Submit a job to a deployment: a SigV4-signed POST to its HTTP API (`--endpoint`,
    /// the stack's InitEndpoint output) or a direct invoke of its init-job function
    /// (`--function`); prints init-job's answer (the run id...) as JSON. With `--wait`,
    /// follows the run as `sluice wait` does instead.
    #[cfg(feature = "aws")]
    Submit {
        /// The job file (JSON).
        job: PathBuf,
        /// The HTTP API's /init URL.
        #[arg(long, env = "SLUICE_INIT_ENDPOINT", conflicts_with = "function")]
        endpoint: Option<String>,
        /// The init-job function's name or ARN.
        #[arg(long, env = "SLUICE_INIT_FUNCTION")]
        function: Option<String>,
        /// Then wait for the run: progress on stderr, its done document on stdout, the
        /// job's exit code (needs the deployment's SLUICE_* settings, checked first).
        #[arg(long)]
        wait: bool,
        /// With --wait: seconds between looks.
        #[arg(long, default_value_t = 5, requires = "wait", value_parser = clap::value_parser!(u64).range(1..=3600))]
        poll: u64,
    },
    /// Show a run on AWS: its done document, or its orders while it runs (JSON on stdout).
    #[cfg(feature = "aws")]
    Status {
        /// The run id init-job answered.
        run_id: String,
    },
    /// Wait for a run on AWS to finish, printing its orders' progress; then its done
    /// document (stdout) and the job's exit code.
    #[cfg(feature = "aws")]
    Wait {
        /// The run id.
        run_id: String,
        /// Seconds between looks.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
        poll: u64,
    },
    /// Print the stored log of an order of a run on AWS.
    #[cfg(feature = "aws")]
    Logs {
        /// The run id.
        run_id: String,
        /// The order: its number (`2`, `0002`) or its name.
        order: String,
    },
    /// Write a run's report: one HTML file that opens in any browser with nothing else (no
    /// network, no script): the run's header, its DAG coloured by status, a timeline of
    /// every attempt (its wait to start, then its run), the orders table, and each order's
    /// log (its head and tail when long) and events.
    Report {
        /// The run id.
        run_id: String,
        /// The file to write (default: `report-<run id>.html` here); `-` for stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Report a run of the deployment named by the environment (SLUICE_* settings)
        /// rather than a local one.
        #[cfg(feature = "aws")]
        #[arg(long)]
        aws: bool,
        /// The state folder of the run (a local run).
        #[arg(long, env = "SLUICE_STATE_DIR", default_value = ".sluice")]
        state_dir: PathBuf,
    },
    /// Print the JSON Schema of job files, for editors and checks before submitting.
    Schema,
    /// Print a job's DAG: one node per order (name, where it runs on AWS, what it runs, its
    /// condition), an arrow to each order that waits for it (dashed, with the outcomes
    /// asked, for a `depends` condition). Mermaid renders in a PR comment or Markdown file
    /// (in a `mermaid` code block); DOT through Graphviz (`| dot -Tsvg > job.svg`); SVG is
    /// drawn by sluice itself (`> job.svg`, opens in a browser).
    Graph {
        /// The job file (JSON).
        job: PathBuf,
        /// The format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
        format: GraphFormat,
    },
    /// Check a job file without running it.
    Validate {
        /// The job file (JSON).
        job: PathBuf,
        /// Also check every credential the job lists against this secrets file.
        #[arg(long, env = "SLUICE_SECRETS")]
        secrets: Option<PathBuf>,
        /// Print the plan: the orders in waves (a wave's orders can run at the same time),
        /// each with what it runs and what it waits for.
        #[arg(long)]
        plan: bool,
        /// With --plan: print the plan as JSON.
        #[arg(long, requires = "plan")]
        json: bool,
    },
}

/// How the local engine runs: the options `run` and `resume` share.
#[derive(Debug, clap::Args)]
struct LocalArgs {
    /// Folder for the run's state: bundles, results, logs, tables, keys.
    #[arg(long, env = "SLUICE_STATE_DIR", default_value = ".sluice")]
    state_dir: PathBuf,
    /// Print only the done document on stdout (progress goes to stderr).
    #[arg(long)]
    json: bool,
    /// Show the end of every order's log in the summary (unsuccessful ones always are).
    #[arg(long)]
    logs: bool,
    /// Also write the run's HTML report (as `sluice report` does) to FILE once it ends;
    /// when several runs are resumed, each run's id is added to FILE's name.
    #[arg(long, value_name = "FILE", value_parser = report_file)]
    report: Option<PathBuf>,
    /// How many orders run at the same time.
    #[arg(long, env = "SLUICE_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,
    /// Seconds between SIGTERM and SIGKILL when an order times out or the run is stopped
    /// (Ctrl-C, SIGTERM).
    #[arg(long, env = "SLUICE_GRACE_PERIOD", default_value_t = 10)]
    grace_period: u64,
    /// Most MiB of an order's log that are stored; beyond it, its first and last halves
    /// are kept with a marker saying how much was dropped.
    #[arg(long, env = "SLUICE_MAX_LOG_MB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    max_log_mb: u64,
    /// Folder of compiled WebAssembly modules, or `off`; default: `$XDG_CACHE_HOME/sluice/wasm`
    /// (`~/.cache/sluice/wasm`). Never inside the state folder, which a repository can ship.
    #[arg(long, env = "SLUICE_WASM_CACHE", value_name = "DIR|off")]
    wasm_cache: Option<PathBuf>,
    /// Hosts git credentials (git_token_location, git_ssh_key_location) may be sent to,
    /// comma-separated.
    #[arg(
        long,
        env = "SLUICE_GIT_CREDENTIAL_HOSTS",
        value_delimiter = ',',
        default_value = "github.com",
        value_name = "HOSTS"
    )]
    git_credential_hosts: Vec<String>,
    /// OpenSSH known_hosts file of the SSH git servers trusted; default
    /// `~/.ssh/known_hosts` when there is one.
    #[arg(long, env = "SLUICE_GIT_KNOWN_HOSTS_FILE", value_name = "FILE")]
    git_known_hosts: Option<PathBuf>,
    /// Trust an SSH git server's key the first time it is seen (for the job only) when the
    /// known hosts do not have it.
    #[arg(long, env = "SLUICE_GIT_SSH_TOFU")]
    git_ssh_tofu: bool,
    /// GitHub API to keep the PR comment of a job with `pr_number` on
    /// (`https://api.github.com`, or GitHub Enterprise's `https://HOST/api/v3`); without
    /// it, no comment is posted from this machine.
    #[arg(long, env = "SLUICE_GITHUB_API")]
    github_api: Option<String>,
    /// Run each shell order in a sandbox of its own: the system read-only, no home, state
    /// or job folder, no other process, no network. `auto`: where this machine allows one,
    /// else without, with a warning; `required`: refuse to run without one; `off`: run
    /// orders as the user, seeing what the user sees.
    #[arg(long, env = "SLUICE_SANDBOX", value_enum, default_value_t = SandboxMode::Auto)]
    sandbox: SandboxMode,
    /// Let every sandboxed order reach the network, as an order's `"sandbox": {"network":
    /// true}` does.
    #[arg(long)]
    network: bool,
}

/// Whether `sluice run` sandboxes shell orders (`--sandbox`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxMode {
    /// Never.
    Off,
    /// Where this machine allows it.
    Auto,
    /// Always: refuse to run without.
    Required,
}

/// A `--report` file: any path but `-`, since stdout carries the run's summary.
fn report_file(text: &str) -> Result<PathBuf, String> {
    match text {
        "-" => Err("stdout carries the run's summary: give a file (`sluice report RUN_ID -o -` prints a report)".to_owned()),
        _ => Ok(PathBuf::from(text)),
    }
}

/// What to do, fully parsed.
#[derive(Debug)]
pub enum Command {
    /// `sluice status | wait | logs` (runs on AWS; the `SLUICE_*` settings and the AWS
    /// configuration come from the environment).
    #[cfg(feature = "aws")]
    Aws {
        /// Which.
        command: AwsCommand,
        /// Log level.
        verbosity: &'static str,
    },
    /// `sluice run`.
    Run {
        /// The job file.
        job: PathBuf,
        /// The secrets file, if any.
        secrets: Option<PathBuf>,
        /// Print the plan after every check instead of running (`--dry-run`).
        dry_run: bool,
        /// How the local engine runs.
        config: LocalConfig,
    },
    /// `sluice resume`.
    Resume {
        /// The run, or every unfinished one.
        run_id: Option<String>,
        /// How the local engine runs.
        config: LocalConfig,
    },
    /// `sluice rerun` of a local run.
    Rerun {
        /// The run to run again.
        run_id: String,
        /// Only what did not succeed.
        failed: bool,
        /// The secrets file, if any.
        secrets: Option<PathBuf>,
        /// How the local engine runs.
        config: LocalConfig,
    },
    /// `sluice cancel` of a local run.
    Cancel {
        /// The run.
        run_id: String,
        /// How the local engine runs (when no other `sluice` carries the run).
        config: LocalConfig,
    },
    /// The hidden `sluice sentinel`.
    Sentinel {
        /// The state folder of the runs it watches.
        state_dir: PathBuf,
    },
    /// `sluice report` of a local run.
    Report {
        /// The run.
        run_id: String,
        /// The file to write, or `-`.
        output: Option<PathBuf>,
        /// The state folder.
        state_dir: PathBuf,
    },
    /// `sluice schema`.
    Schema,
    /// `sluice graph`.
    Graph {
        /// The job file.
        job: PathBuf,
        /// The format.
        format: GraphFormat,
        /// Username jobs default to.
        username: String,
    },
    /// `sluice validate`.
    Validate {
        /// The job file.
        job: PathBuf,
        /// The secrets file to check credentials against.
        secrets: Option<PathBuf>,
        /// What is printed of a valid job.
        listing: Listing,
        /// Username jobs default to.
        username: String,
        /// Log level.
        verbosity: &'static str,
    },
}

/// What `sluice graph` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    /// A Mermaid flowchart.
    Mermaid,
    /// Graphviz's DOT language.
    Dot,
    /// An SVG picture, laid out by sluice itself.
    Svg,
}

/// What `sluice validate` prints of a valid job after its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Each order on a line.
    Orders,
    /// The plan in waves, as text.
    Plan,
    /// The plan in waves, as JSON (alone on stdout).
    PlanJson,
}

/// A question about a run on AWS.
#[cfg(feature = "aws")]
#[derive(Debug)]
pub enum AwsCommand {
    /// `sluice submit JOB.json`.
    Submit {
        /// The job file.
        job: PathBuf,
        /// Where init-job is: an HTTP API URL or a function.
        target: SubmitTarget,
        /// Follow the run afterwards, looking this often.
        wait: Option<Duration>,
    },
    /// `sluice status RUN_ID`.
    Status {
        /// The run.
        run_id: String,
    },
    /// `sluice wait RUN_ID`.
    Wait {
        /// The run.
        run_id: String,
        /// Time between looks.
        poll: Duration,
    },
    /// `sluice logs RUN_ID ORDER`.
    Logs {
        /// The run.
        run_id: String,
        /// The order's number or name.
        order: String,
    },
    /// `sluice rerun --aws RUN_ID`.
    Rerun {
        /// The run to run again.
        run_id: String,
        /// Only what did not succeed.
        failed: bool,
        /// Where init-job is.
        target: SubmitTarget,
        /// Follow the new run afterwards, looking this often.
        wait: Option<Duration>,
    },
    /// `sluice report --aws RUN_ID`.
    Report {
        /// The run.
        run_id: String,
        /// The file to write, or `-`.
        output: Option<PathBuf>,
    },
    /// `sluice cancel --aws RUN_ID`.
    Cancel {
        /// The run.
        run_id: String,
        /// Who cancels (`$USER`).
        by: String,
    },
}

/// Where `sluice submit` sends a job.
#[cfg(feature = "aws")]
#[derive(Debug)]
pub enum SubmitTarget {
    /// A SigV4-signed POST to this URL.
    Endpoint(String),
    /// A direct invoke of this function.
    Function(String),
}

/// Settings of the local engine (`sluice run`, `sluice resume`).
#[derive(Debug)]
pub struct LocalConfig {
    /// The state folder.
    pub state_dir: PathBuf,
    /// Print the done document only.
    pub json: bool,
    /// Show every order's log tail in the summary.
    pub logs: bool,
    /// Where to write the run's report once it ends, if anywhere.
    pub report: Option<PathBuf>,
    /// Workers at once.
    pub concurrency: usize,
    /// SIGTERM → SIGKILL delay.
    pub grace_period: Duration,
    /// Log cap, bytes.
    pub max_log_bytes: u64,
    /// Where PR comments go, if anywhere.
    pub github_api: Option<String>,
    /// The compile cache's folder, if any.
    pub wasm_cache: Option<PathBuf>,
    /// Hosts git credentials may go to.
    pub git_credential_hosts: Vec<String>,
    /// The known_hosts file SSH git servers are checked against, if any.
    pub git_known_hosts: Option<PathBuf>,
    /// Whether SSH git servers' keys are trusted on first use.
    pub git_ssh_tofu: bool,
    /// Username jobs default to (`$USER`).
    pub username: String,
    /// `PATH`, `HOME`, `LANG` of the host, passed on to commands.
    pub host_env: Vec<(String, String)>,
    /// Whether stderr is a terminal (live progress) or not (plain lines).
    pub interactive: bool,
    /// Log level.
    pub verbosity: &'static str,
    /// Whether shell orders run sandboxed.
    pub sandbox: SandboxMode,
    /// Whether every sandboxed order may reach the network.
    pub network: bool,
    /// What sandboxed orders do not see unless granted: the home, the current folder, the
    /// temporary folder (other orders' work folders), the runtime folder and agents'
    /// sockets, the job's folder.
    pub hidden: Vec<PathBuf>,
    /// What sandboxed orders never see: the state folder, the compile cache, the secrets
    /// file.
    pub protected: Vec<PathBuf>,
}

impl Command {
    /// The default log level.
    pub fn verbosity(&self) -> &'static str {
        match self {
            Command::Run { config, .. }
            | Command::Resume { config, .. }
            | Command::Rerun { config, .. }
            | Command::Cancel { config, .. } => config.verbosity,
            Command::Sentinel { .. }
            | Command::Schema
            | Command::Graph { .. }
            | Command::Report { .. } => "warn",
            Command::Validate { verbosity, .. } => verbosity,
            #[cfg(feature = "aws")]
            Command::Aws { verbosity, .. } => verbosity,
        }
    }
}

impl Command {
    /// The most threads the async runtime's blocking pool may have, when the command
    /// bounds it. Each running order of `run` and `resume` holds one for its whole life (its
    /// log's writer) and has at most one short file operation in flight besides (unpacking
    /// its bundle, storing its log); the engine's own short file and SQLite work takes
    /// [`ENGINE_BLOCKING_THREADS`] more. Tokio's default of 512 let a burst (init writing
    /// 9 999 bundles) start hundreds of threads, each keeping its stack and its heap pages:
    /// about a tenth of a large run's peak RSS.
    pub fn blocking_threads(&self) -> Option<usize> {
        match self {
            Command::Run {
                dry_run: false,
                config,
                ..
            }
            | Command::Resume { config, .. }
            | Command::Cancel { config, .. } => {
                Some(2 * config.concurrency + ENGINE_BLOCKING_THREADS)
            }
            _ => None,
        }
    }
}

/// Threads of the blocking pool for the engine's short work, besides two per running order.
const ENGINE_BLOCKING_THREADS: usize = 16;

/// Parses the command line; on `--help`/`--version` or a usage error, returns the exit code
/// to end with (0, or 3 for bad usage) after printing.
pub fn parse() -> Result<Command, ExitCode> {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error) => {
            let code = if error.use_stderr() {
                exit_codes::INVALID_INPUT
            } else {
                exit_codes::SUCCEEDED
            };
            let _ = error.print();
            return Err(ExitCode::from(code as u8));
        }
    };
    let verbosity = match args.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let username = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "local".to_owned());
    Ok(match args.command {
        CommandArgs::Run {
            job,
            secrets,
            dry_run,
            local,
        } => {
            let mut config = local_config(local, username, verbosity);
            let job_folder = job
                .parent()
                .map(|folder| match folder.as_os_str().is_empty() {
                    true => PathBuf::from("."),
                    false => folder.to_path_buf(),
                });
            config.hidden.extend(job_folder);
            config.protected.extend(secrets.clone());
            Command::Run {
                job,
                secrets,
                dry_run,
                config,
            }
        }
        CommandArgs::Resume { run_id, local } => Command::Resume {
            run_id,
            config: local_config(local, username, verbosity),
        },
        #[cfg(feature = "aws")]
        CommandArgs::Cancel {
            run_id, aws: true, ..
        } => Command::Aws {
            command: AwsCommand::Cancel {
                run_id,
                by: username,
            },
            verbosity,
        },
        #[cfg(feature = "aws")]
        CommandArgs::Rerun {
            run_id,
            failed,
            aws: true,
            endpoint,
            function,
            wait,
            poll,
            ..
        } => Command::Aws {
            command: AwsCommand::Rerun {
                run_id,
                failed,
                target: submit_target(endpoint, function)?,
                wait: wait.then(|| Duration::from_secs(poll)),
            },
            verbosity,
        },
        CommandArgs::Rerun {
            run_id,
            failed,
            secrets,
            local,
            ..
        } => {
            let mut config = local_config(local, username, verbosity);
            config.protected.extend(secrets.clone());
            Command::Rerun {
                run_id,
                failed,
                secrets,
                config,
            }
        }
        CommandArgs::Cancel { run_id, local, .. } => Command::Cancel {
            run_id,
            config: local_config(local, username, verbosity),
        },
        CommandArgs::Sentinel { state_dir } => Command::Sentinel { state_dir },
        #[cfg(feature = "aws")]
        CommandArgs::Submit {
            job,
            endpoint,
            function,
            wait,
            poll,
        } => Command::Aws {
            command: AwsCommand::Submit {
                job,
                target: submit_target(endpoint, function)?,
                wait: wait.then(|| Duration::from_secs(poll)),
            },
            verbosity,
        },
        #[cfg(feature = "aws")]
        CommandArgs::Status { run_id } => Command::Aws {
            command: AwsCommand::Status { run_id },
            verbosity,
        },
        #[cfg(feature = "aws")]
        CommandArgs::Wait { run_id, poll } => Command::Aws {
            command: AwsCommand::Wait {
                run_id,
                poll: Duration::from_secs(poll),
            },
            verbosity,
        },
        #[cfg(feature = "aws")]
        CommandArgs::Logs { run_id, order } => Command::Aws {
            command: AwsCommand::Logs { run_id, order },
            verbosity,
        },
        #[cfg(feature = "aws")]
        CommandArgs::Report {
            run_id,
            output,
            aws: true,
            ..
        } => Command::Aws {
            command: AwsCommand::Report { run_id, output },
            verbosity,
        },
        CommandArgs::Report {
            run_id,
            output,
            state_dir,
            ..
        } => Command::Report {
            run_id,
            output,
            state_dir,
        },
        CommandArgs::Schema => Command::Schema,
        CommandArgs::Graph { job, format } => Command::Graph {
            job,
            format,
            username,
        },
        CommandArgs::Validate {
            job,
            secrets,
            plan,
            json,
        } => Command::Validate {
            job,
            secrets,
            listing: match (plan, json) {
                (false, _) => Listing::Orders,
                (true, false) => Listing::Plan,
                (true, true) => Listing::PlanJson,
            },
            username,
            verbosity,
        },
    })
}

/// Where init-job is, from `--endpoint` and `--function`; without either, the usage error
/// (printed) and its exit code.
#[cfg(feature = "aws")]
fn submit_target(
    endpoint: Option<String>,
    function: Option<String>,
) -> Result<SubmitTarget, ExitCode> {
    match (endpoint, function) {
        (Some(url), _) => Ok(SubmitTarget::Endpoint(url)),
        (None, Some(function)) => Ok(SubmitTarget::Function(function)),
        (None, None) => {
            eprintln!(
                "sluice: error: say where init-job is: --endpoint URL (SLUICE_INIT_ENDPOINT) or --function NAME (SLUICE_INIT_FUNCTION)"
            );
            Err(ExitCode::from(exit_codes::INVALID_INPUT as u8))
        }
    }
}

/// The local engine's settings, with what they take from the host.
fn local_config(local: LocalArgs, username: String, verbosity: &'static str) -> LocalConfig {
    use std::io::IsTerminal;
    let host_env = ["PATH", "HOME", "LANG"]
        .into_iter()
        .map(|name| {
            let fallback = if name == "PATH" {
                "/usr/local/bin:/usr/bin:/bin"
            } else {
                ""
            };
            (
                name.to_owned(),
                std::env::var(name).unwrap_or_else(|_| fallback.to_owned()),
            )
        })
        .filter(|(_, value)| !value.is_empty())
        .collect();
    let wasm_cache = wasm_cache_dir(local.wasm_cache, |name| std::env::var_os(name));
    let agent_socket_folder = |name: &str| {
        let socket = PathBuf::from(std::env::var_os(name)?);
        socket.parent().map(Path::to_path_buf)
    };
    let hidden = (["HOME", "XDG_RUNTIME_DIR", "GNUPGHOME"].into_iter())
        .filter_map(|name| std::env::var_os(name).map(PathBuf::from))
        .chain(agent_socket_folder("SSH_AUTH_SOCK"))
        .chain([std::env::temp_dir()])
        .chain(std::env::current_dir().ok())
        .filter(|path| !path.as_os_str().is_empty())
        .collect();
    let protected = [local.state_dir.clone()]
        .into_iter()
        .chain(wasm_cache.clone())
        .collect();
    LocalConfig {
        state_dir: local.state_dir,
        json: local.json,
        logs: local.logs,
        report: local.report,
        concurrency: local.concurrency as usize,
        grace_period: Duration::from_secs(local.grace_period),
        max_log_bytes: local.max_log_mb << 20,
        github_api: local.github_api,
        wasm_cache,
        git_credential_hosts: local.git_credential_hosts,
        git_known_hosts: local.git_known_hosts.or_else(|| {
            let user_file = PathBuf::from(std::env::var_os("HOME")?).join(".ssh/known_hosts");
            user_file.is_file().then_some(user_file)
        }),
        git_ssh_tofu: local.git_ssh_tofu,
        username,
        host_env,
        interactive: std::io::stderr().is_terminal(),
        verbosity,
        sandbox: local.sandbox,
        network: local.network,
        hidden,
        protected,
    }
}

/// The compile cache's folder: `off` for none, a given folder, or the user's cache folder
/// (`$XDG_CACHE_HOME`, else `$HOME/.cache`) with `sluice/wasm`; none when there is no such
/// folder.
fn wasm_cache_dir(
    given: Option<PathBuf>,
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    match given {
        Some(dir) if dir.as_os_str() == "off" => None,
        Some(dir) => Some(dir),
        None => {
            let absolute = |value: std::ffi::OsString| {
                Some(PathBuf::from(value)).filter(|path| path.is_absolute())
            };
            let base = var("XDG_CACHE_HOME").and_then(absolute).or_else(|| {
                var("HOME")
                    .and_then(absolute)
                    .map(|home| home.join(".cache"))
            })?;
            Some(base.join("sluice").join("wasm"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compile_cache_defaults_to_the_users_cache_folder() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let home = vars(&[("HOME", "/home/u")]);
        assert_eq!(
            wasm_cache_dir(None, home),
            Some(PathBuf::from("/home/u/.cache/sluice/wasm"))
        );
        let xdg = vars(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/c")]);
        assert_eq!(
            wasm_cache_dir(None, xdg),
            Some(PathBuf::from("/c/sluice/wasm"))
        );
        // A relative XDG_CACHE_HOME is ignored, as the XDG spec says.
        let relative = vars(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "c")]);
        assert_eq!(
            wasm_cache_dir(None, relative),
            Some(PathBuf::from("/home/u/.cache/sluice/wasm"))
        );
        assert_eq!(wasm_cache_dir(None, vars(&[])), None);
        assert_eq!(wasm_cache_dir(Some("off".into()), home), None);
        assert_eq!(
            wasm_cache_dir(Some("/x".into()), home),
            Some(PathBuf::from("/x"))
        );
    }
}
