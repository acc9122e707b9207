//! The command line: `flaggit run` (the controller); `flaggit status`, `promote`, `rollback`,
//! `pause`, `resume`, `retry` (`crate::steer`, also as `kubectl flaggit`); `flaggit history`,
//! `flaggit dora`, `flaggit ledger verify`, `flaggit dashboard`, `flaggit dev stand-in`, `flaggit crdgen`,
//! `flaggit version`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::controller::RunConfig;
use crate::steer::request::Verb;
use crate::telemetry::init_tracing;

/// Progressive delivery for Kubernetes that keeps Git the single source of truth.
#[derive(Debug, Parser)]
#[command(name = "flaggit", version = crate::VERSION)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller.
    Run(Box<RunConfig>),
    /// Write the CustomResourceDefinitions generated from the API types.
    Crdgen {
        /// Directory the CRD files are written to.
        #[arg(long, default_value = "manifests/crds")]
        out: PathBuf,
        /// Do not write: exit 1 and name the files that differ from the generated ones.
        #[arg(long)]
        check: bool,
    },
    /// Show canaries: phase, weight and failed checks; one canary also with what holds it,
    /// the last commands and its last records in Git.
    Status {
        /// A canary (`<namespace>/<name>`, or `<name>` with `-n`); default every canary.
        canary: Option<String>,
        /// Only this namespace (or the namespace of `<name>`).
        #[arg(short, long)]
        namespace: Option<String>,
        /// Keep showing it, redrawn when it changes.
        #[arg(short, long)]
        watch: bool,
        /// Kubeconfig file; default `$KUBECONFIG` or `~/.kube/config`.
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
    },
    /// Approve the gate the release waits at (as `/approve` on a release pull request).
    Promote(crate::steer::commands::Target),
    /// Roll the release back at its next analysis tick; Git records who asked and why.
    Rollback {
        #[command(flatten)]
        target: crate::steer::commands::Target,
        /// Why, for the rollback record in Git.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Hold the release at its current step: every gate stays closed until `resume`.
    Pause(crate::steer::commands::Target),
    /// Let a paused release go on.
    Resume(crate::steer::commands::Target),
    /// Re-run the analysis of a canary's failed revision, without changing its pod template.
    Retry(crate::steer::commands::Target),
    /// Print the rollouts of a canary, read from the Git log of its config repo.
    History {
        /// The canary, as `<namespace>/<name>`.
        canary: String,
        #[command(flatten)]
        git: GitArgs,
        /// Output format: `table` or `json`.
        #[arg(short, long, default_value = "table")]
        output: String,
        /// Commits of the branch looked at, newest first.
        #[arg(long, default_value_t = 10_000)]
        limit: usize,
    },
    /// DORA figures from the config repo's record: deployment frequency, lead time for
    /// changes, change failure rate and time to restore, per canary and overall.
    Dora {
        /// The window: releases that ended in the last `30d`, `12h`, `2w`, ...
        #[arg(long, default_value = "30d")]
        since: String,
        /// Only these canaries (`<namespace>/<name>`, repeated or comma-separated).
        #[arg(long, value_delimiter = ',')]
        canary: Vec<String>,
        #[command(flatten)]
        git: GitArgs,
        /// Output format: `table` or `json`.
        #[arg(short, long, default_value = "table")]
        output: String,
        /// Commits of the branch looked at, newest first.
        #[arg(long, default_value_t = 100_000)]
        limit: usize,
    },
    /// Work with the ledgers in the config repo.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Serve the delivery dashboard (read-only, scoped by the viewer's RBAC).
    Dashboard(Box<crate::dashboard::Args>),
    /// Local stand-ins for a node-less control plane (used by `scripts/quickstart.sh`).
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
    /// Print the version.
    Version,
}

#[derive(Debug, Subcommand)]
enum DevCommand {
    /// Play the kubelet (Deployments become ready) and the mesh's telemetry (simulated
    /// requests at `/metrics`) for a local control plane without nodes.
    StandIn(Box<crate::dev::StandInArgs>),
}

#[derive(Debug, Subcommand)]
enum LedgerCommand {
    /// Check that every canary's ledger matches the cluster (exit 1 if one does not).
    Verify {
        /// Only the canaries of this namespace.
        #[arg(short, long)]
        namespace: Option<String>,
        #[command(flatten)]
        git: GitArgs,
        /// Output format: `table` or `json`.
        #[arg(short, long, default_value = "table")]
        output: String,
    },
}

/// Where the Git commands read from.
#[derive(Debug, clap::Args)]
struct GitArgs {
    /// The config repository; default the canary's own (spec.gitops, Flux, Argo CD).
    #[arg(long, env = "FLAGGIT_GIT_URL")]
    repo: Option<String>,
    /// Branch of `--repo`.
    #[arg(long, env = "FLAGGIT_GIT_BRANCH", default_value = "main")]
    branch: String,
    /// Secret (`namespace/name`) with the credentials of `--repo`.
    #[arg(long, env = "FLAGGIT_GIT_SECRET")]
    secret: Option<String>,
    /// Directory of the ledgers in the config repo.
    #[arg(long, env = "FLAGGIT_GIT_LEDGER_DIR", default_value = ".flaggit")]
    ledger_dir: String,
    /// Argo CD's namespace.
    #[arg(long, env = "FLAGGIT_ARGOCD_NAMESPACE", default_value = "argocd")]
    argocd_namespace: String,
    /// Only this cluster's records and ledger (the `--cluster-name` of its controller);
    /// default the whole fleet side by side.
    #[arg(long)]
    cluster: Option<String>,
    /// Kubeconfig file; default `$KUBECONFIG`, `~/.kube/config`, or the in-cluster account.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
}

impl GitArgs {
    fn options(&self, limit: usize) -> crate::gitops::inspect::Options {
        crate::gitops::inspect::Options {
            repo: self.repo.clone(),
            branch: self.branch.clone(),
            secret: self.secret.as_deref().and_then(|s| {
                let (namespace, name) = s.split_once('/')?;
                Some(crate::gitops::source::SecretRef {
                    namespace: namespace.into(),
                    name: name.into(),
                })
            }),
            cache_dir: std::env::temp_dir().join("flaggit-cli-git"),
            ledger_dir: self.ledger_dir.clone(),
            argocd_namespace: self.argocd_namespace.clone(),
            limit,
            cluster: self.cluster.clone().filter(|c| !c.is_empty()),
        }
    }
}

impl Cli {
    /// Runs the chosen command and returns the process exit code.
    pub fn execute(self) -> ExitCode {
        match self.command {
            Command::Run(config) => {
                init_tracing(config.log_format, &config.log_level);
                let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        eprintln!("error: cannot start the async runtime: {error}");
                        return ExitCode::FAILURE;
                    }
                };
                match runtime.block_on(crate::controller::run(*config)) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(error) => {
                        tracing::error!(error = %error, category = error.category(), "controller stopped");
                        ExitCode::FAILURE
                    }
                }
            }
            Command::Crdgen { out, check } => crdgen(&out, check),
            Command::Status {
                canary,
                namespace,
                watch,
                kubeconfig,
            } => crate::steer::commands::status(
                canary.as_deref(),
                namespace.as_deref(),
                kubeconfig.as_deref(),
                watch,
            ),
            Command::Promote(target) => crate::steer::commands::steer(Verb::Promote, &target, None),
            Command::Rollback { target, reason } => {
                crate::steer::commands::steer(Verb::Rollback, &target, reason.as_deref())
            }
            Command::Pause(target) => crate::steer::commands::steer(Verb::Pause, &target, None),
            Command::Resume(target) => crate::steer::commands::steer(Verb::Resume, &target, None),
            Command::Retry(target) => crate::steer::commands::steer(Verb::Retry, &target, None),
            Command::History {
                canary,
                git,
                output,
                limit,
            } => history(&canary, &git, &output, limit),
            Command::Dora {
                since,
                canary,
                git,
                output,
                limit,
            } => dora(&since, canary, &git, &output, limit),
            Command::Ledger {
                command:
                    LedgerCommand::Verify {
                        namespace,
                        git,
                        output,
                    },
            } => verify(namespace.as_deref(), &git, &output),
            Command::Dashboard(args) => {
                match block_on(async { crate::dashboard::run(*args).await.map_err(|e| e.to_string()) }) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(error) => {
                        eprintln!("error: {error}");
                        ExitCode::FAILURE
                    }
                }
            }
            Command::Dev {
                command: DevCommand::StandIn(args),
            } => {
                init_tracing(crate::telemetry::LogFormat::Text, "info");
                match block_on(async { crate::dev::run(*args).await.map_err(|e| e.to_string()) }) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(error) => {
                        eprintln!("error: {error}");
                        ExitCode::FAILURE
                    }
                }
            }
            Command::Version => {
                println!("flaggit {}", crate::VERSION);
                ExitCode::SUCCESS
            }
        }
    }
}

fn block_on<T>(future: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    crate::install_crypto_provider();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?
        .block_on(future)
}

fn history(canary: &str, git: &GitArgs, output: &str, limit: usize) -> ExitCode {
    let outcome = block_on(async {
        // A cluster is needed only to find the repository or read its Secret.
        let client = match (&git.repo, &git.secret) {
            (Some(_), None) => None,
            _ => Some(
                crate::controller::kube_client(git.kubeconfig.as_deref())
                    .await
                    .map_err(|e| e.to_string())?,
            ),
        };
        crate::gitops::inspect::history(client, canary, &git.options(limit))
            .await
            .map_err(|e| e.to_string())
    });
    match outcome {
        Ok(entries) => {
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&entries).unwrap_or_default());
            } else if entries.is_empty() {
                eprintln!("no rollout records of {canary} in the repository");
            } else {
                print!("{}", crate::gitops::inspect::history_table(&entries));
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn dora(since: &str, canaries: Vec<String>, git: &GitArgs, output: &str, limit: usize) -> ExitCode {
    use crate::gitops::dora;
    let window = match dora::parse_window(since) {
        Ok(window) => window,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = block_on(async {
        // A cluster is needed only to read the repository's Secret.
        let client = match &git.secret {
            None => None,
            Some(_) => Some(
                crate::controller::kube_client(git.kubeconfig.as_deref())
                    .await
                    .map_err(|e| e.to_string())?,
            ),
        };
        crate::gitops::inspect::dora_releases(client, &git.options(limit))
            .await
            .map_err(|e| e.to_string())
    });
    let releases = match outcome {
        Ok(releases) => releases,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let scope = dora::Scope {
        window,
        cluster: git.cluster.clone().filter(|c| !c.is_empty()),
        canaries,
    };
    let report = dora::report(&releases, &scope, jiff::Timestamp::now().as_second());
    if output == "json" {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print!("{}", dora::table(&report));
    }
    ExitCode::SUCCESS
}

fn verify(namespace: Option<&str>, git: &GitArgs, output: &str) -> ExitCode {
    let outcome = block_on(async {
        let client = crate::controller::kube_client(git.kubeconfig.as_deref())
            .await
            .map_err(|e| e.to_string())?;
        crate::gitops::inspect::verify(&client, namespace, &git.options(1))
            .await
            .map_err(|e| e.to_string())
    });
    match outcome {
        Ok(verdicts) => {
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&verdicts).unwrap_or_default());
            } else {
                print!("{}", crate::gitops::inspect::verify_table(&verdicts));
            }
            if verdicts.iter().all(|v| v.ok) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn crdgen(out: &std::path::Path, check: bool) -> ExitCode {
    let files = match crate::api::crds_yaml() {
        Ok(files) => files,
        Err(error) => {
            eprintln!("error: cannot serialize the CRDs: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut stale = Vec::new();
    for (name, yaml) in files {
        let path = out.join(name);
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(yaml.as_str()) {
                stale.push(path);
            }
            continue;
        }
        if let Err(error) = std::fs::create_dir_all(out).and_then(|()| std::fs::write(&path, yaml)) {
            eprintln!("error: cannot write {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    if stale.is_empty() {
        return ExitCode::SUCCESS;
    }
    for path in stale {
        eprintln!(
            "{} differs from the API types: run `flaggit crdgen` and commit",
            path.display()
        );
    }
    ExitCode::FAILURE
}
