//! The command line: `flaggit run` (the controller), `flaggit retry`, `flaggit history`,
//! `flaggit ledger verify`, `flaggit dashboard`, `flaggit crdgen`, `flaggit version`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::controller::RunConfig;
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
    /// Re-run the analysis of a canary's failed revision, without changing its pod template.
    Retry {
        /// The canary, as `<namespace>/<name>`.
        canary: String,
        /// Kubeconfig file; default `$KUBECONFIG`, `~/.kube/config`, or the in-cluster account.
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
    },
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
    /// Work with the ledgers in the config repo.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Serve the delivery dashboard (read-only, scoped by the viewer's RBAC).
    Dashboard(Box<crate::dashboard::Args>),
    /// Print the version.
    Version,
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
            Command::Retry { canary, kubeconfig } => retry(&canary, kubeconfig.as_deref()),
            Command::History {
                canary,
                git,
                output,
                limit,
            } => history(&canary, &git, &output, limit),
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
            Command::Version => {
                println!("flaggit {}", crate::VERSION);
                ExitCode::SUCCESS
            }
        }
    }
}

fn retry(canary: &str, kubeconfig: Option<&std::path::Path>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let client = crate::controller::kube_client(kubeconfig)
            .await
            .map_err(|e| e.to_string())?;
        crate::controller::request_retry(client, canary)
            .await
            .map_err(|e| e.to_string())
    });
    match outcome {
        Ok(value) => {
            println!("retry of {canary} requested (flaggit.dev/retry={value})");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
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
