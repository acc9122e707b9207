//! The command line: `flaggit run` (the controller), `flaggit retry`, `flaggit crdgen`,
//! `flaggit version`.

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
    /// Print the version.
    Version,
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
