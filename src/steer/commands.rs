//! The `flaggit status / promote / rollback / pause / resume / retry` commands as the binary
//! runs them: connect, send or read, print. `cli.rs` only parses their flags.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use kube::api::ListParams;
use kube::{Api, Client};

use crate::api::Canary;

use super::client::{self, Error};
use super::request::{Command, Verb};
use super::view;

/// Flags every steering command shares.
#[derive(Clone, Debug, clap::Args)]
pub struct Target {
    /// The canary, as `<namespace>/<name>` (or `<name>` with `-n`).
    pub canary: String,
    /// Namespace of the canary when it is not written as `<namespace>/<name>`.
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Kubeconfig file; default `$KUBECONFIG` or `~/.kube/config`. Your identity in it is
    /// the one the controller checks and records.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// How long to wait for the controller's verdict (and, with `--wait`, for the effect).
    #[arg(long, default_value = "120s", value_parser = crate::controller::parse_interval)]
    pub timeout: Duration,
    /// Return once the command is accepted, without following the canary until it shows.
    #[arg(long)]
    pub no_wait: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    crate::install_crypto_provider();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

async fn connect(kubeconfig: Option<&std::path::Path>) -> Result<Client, String> {
    crate::controller::kube_client(kubeconfig)
        .await
        .map_err(|e| e.to_string())
}

/// Runs a steering verb: prints what the controller did, or why not (exit 1).
pub fn steer(verb: Verb, target: &Target, reason: Option<&str>) -> ExitCode {
    let outcome = runtime().and_then(|runtime| {
        runtime.block_on(async {
            let (namespace, name) =
                client::canary_ref(&target.canary, target.namespace.as_deref()).map_err(|e| e.to_string())?;
            let client = connect(target.kubeconfig.as_deref()).await?;
            let command = Command {
                verb,
                namespace,
                name,
                reason: reason.unwrap_or_default().to_string(),
            };
            let done = client::send(&client, &command, target.timeout)
                .await
                .map_err(|e| e.to_string())?;
            let id = format!("{}/{}", command.namespace, command.name);
            println!("{verb} of {id} accepted: {done}");
            if !target.no_wait && !matches!(verb, Verb::Pause | Verb::Resume) {
                let canary = client::wait_for_effect(&client, &command, target.timeout)
                    .await
                    .map_err(|e: Error| e.to_string())?;
                println!("{id}  {}", view::one_line(&canary));
            }
            Ok::<_, String>(())
        })
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `flaggit status`: every canary (of a namespace), or one in detail with its last records.
pub fn status(
    canary: Option<&str>,
    namespace: Option<&str>,
    kubeconfig: Option<&std::path::Path>,
    watch: bool,
) -> ExitCode {
    let outcome = runtime().and_then(|runtime| {
        runtime.block_on(async {
            let client = connect(kubeconfig).await?;
            let mut shown = String::new();
            loop {
                let text = render(&client, canary, namespace).await?;
                if text != shown {
                    if watch && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                        print!("\x1b[2J\x1b[H");
                    }
                    print!("{text}");
                    if watch {
                        println!(
                            "-- {} (Ctrl-C stops)",
                            jiff::Timestamp::now().strftime("%H:%M:%S")
                        );
                    }
                    shown = text;
                }
                if !watch {
                    return Ok::<_, String>(());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn render(client: &Client, canary: Option<&str>, namespace: Option<&str>) -> Result<String, String> {
    let Some(canary) = canary else {
        let api: Api<Canary> = match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("cannot list canaries: {e}"))?;
        if list.items.is_empty() {
            return Ok("no canaries\n".into());
        }
        return Ok(view::table(&list.items));
    };
    let (ns, name) = client::canary_ref(canary, namespace).map_err(|e| e.to_string())?;
    let api: Api<Canary> = Api::namespaced(client.clone(), &ns);
    let live = api
        .get_opt(&name)
        .await
        .map_err(|e| format!("cannot read canary {ns}/{name}: {e}"))?
        .ok_or_else(|| format!("canary {ns}/{name} not found"))?;
    let options = crate::gitops::inspect::Options {
        cache_dir: std::env::temp_dir().join("flaggit-cli-git"),
        ledger_dir: ".flaggit".into(),
        argocd_namespace: "argocd".into(),
        branch: "main".into(),
        limit: 200,
        ..Default::default()
    };
    let history =
        crate::gitops::inspect::history(Some(client.clone()), &format!("{ns}/{name}"), &options).await;
    Ok(match &history {
        Ok(entries) => view::detail(&live, Ok(entries)),
        Err(error) => view::detail(&live, Err(&error.to_string())),
    })
}
