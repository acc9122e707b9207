//! Previews on the pull requests that change a canary's target (the I/O around
//! `forge::preview`): every poll interval, the open pull requests into each config repo's
//! branch are listed; one whose head moved and whose changed files declare a canary's target
//! gets one comment with the plan, the metric checks run against the primary now, and the
//! warnings, edited in place at the next push.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kube::ResourceExt;

use super::canary::Context;
use crate::api::{AutoscalerKind, Canary};
use crate::forge::preview::{self, CanaryPreview, CheckNow, Checks, ImageChange, Observed};
use crate::forge::select::{Forges, Picked};
use crate::forge::{Forge, OpenPullRequest, RepoId};
use crate::gitops::edit::{self, TargetRef};
use crate::gitops::repo::Repo;
use crate::gitops::source::{self, SecretRef, Source};
use crate::gitops::{Remote, limits};

/// A canary whose target a pull request may change.
struct Watched {
    canary: Arc<Canary>,
    source: Source,
    /// Why the Canary's provider cannot do what it asks (`api::refusal`).
    refusal: Option<String>,
    primary_images: BTreeMap<String, String>,
}

/// The canaries of one config repo branch.
struct Group {
    forge: Arc<dyn Forge>,
    repo: RepoId,
    remote: Remote,
    secret: Option<SecretRef>,
    canaries: Vec<Watched>,
}

/// Previews the open pull requests of every config repo with canaries, until aborted.
pub(super) async fn run(ctx: Arc<Context>, forges: Arc<Forges>) {
    // The head each pull request was last previewed at: one preview per push.
    let mut seen: HashMap<(RepoId, u64), String> = HashMap::new();
    let mut every = tokio::time::interval(ctx.config.forge_poll_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        for group in gather(&ctx, &forges).await.into_values() {
            if let Err(error) = repository(&ctx, group.forge.as_ref(), &group, &mut seen).await {
                tracing::warn!(repository = %group.repo, error = %error, "cannot preview the open pull requests");
            }
        }
    }
}

/// The canaries with a config repo on a configured forge, by repository and branch.
async fn gather(ctx: &Context, forges: &Forges) -> BTreeMap<(String, String), Group> {
    let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
    for canary in ctx.store.state() {
        if canary.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Ok(parts) = ctx.parts(&canary) else { continue };
        let Ok(target) = parts.workload.observe(&canary).await else {
            continue;
        };
        let Ok(Some(source)) = ctx.git.source(&ctx.client, &canary, &target).await else {
            continue;
        };
        let requested = canary
            .spec
            .gitops
            .as_ref()
            .and_then(|g| g.pull_request.as_ref())
            .and_then(|p| p.forge);
        // A repository on a forge flaggit has no client for gets no preview.
        let Ok(Picked { forge, repo }) = forges.pick(&source.remote.url, requested) else {
            continue;
        };
        let refusal =
            crate::api::refusal(&canary.spec, &parts.provider, parts.capabilities()).map(|r| r.message);
        let primary_images = parts.workload.primary_images(&canary).await.unwrap_or_default();
        let key = (source.remote.url.clone(), source.remote.branch.clone());
        groups
            .entry(key)
            .or_insert_with(|| Group {
                forge,
                repo,
                remote: source.remote.clone(),
                secret: source.secret.clone(),
                canaries: Vec::new(),
            })
            .canaries
            .push(Watched {
                canary,
                source,
                refusal,
                primary_images,
            });
    }
    groups
}

async fn repository(
    ctx: &Context,
    forge: &dyn Forge,
    group: &Group,
    seen: &mut HashMap<(RepoId, u64), String>,
) -> Result<(), String> {
    let pulls = forge
        .open_pull_requests(&group.repo, &group.remote.branch)
        .await
        .map_err(|e| e.to_string())?;
    seen.retain(|(repo, number), _| *repo != group.repo || pulls.iter().any(|p| p.pull.number == *number));
    for open in pulls {
        // flaggit's own release pull requests have their status comment.
        if open.pull.head.starts_with("flaggit/") {
            continue;
        }
        let key = (group.repo.clone(), open.pull.number);
        if seen.get(&key) == Some(&open.head_sha) {
            continue;
        }
        match pull_request(ctx, forge, group, &open).await {
            Ok(()) => {
                seen.insert(key, open.head_sha.clone());
            }
            Err(error) => {
                tracing::warn!(repository = %group.repo, number = open.pull.number, error = %error, "cannot preview the pull request");
            }
        }
    }
    Ok(())
}

/// Whether `file` is under the canary's `path` ("" is the whole repository).
fn under(path: Option<&str>, file: &str) -> bool {
    match path {
        None | Some("") => true,
        Some(path) => file == path || file.strip_prefix(path).is_some_and(|rest| rest.starts_with('/')),
    }
}

async fn pull_request(
    ctx: &Context,
    forge: &dyn Forge,
    group: &Group,
    open: &OpenPullRequest,
) -> Result<(), String> {
    let number = open.pull.number;
    let files = forge
        .pull_request_files(&group.repo, number)
        .await
        .map_err(|e| e.to_string())?;
    let candidates: Vec<&Watched> = group
        .canaries
        .iter()
        .filter(|w| files.iter().any(|f| under(w.source.path.as_deref(), f)))
        .collect();
    if candidates.is_empty() {
        return Ok(());
    }
    let texts = read_head(ctx, group, forge.pull_request_ref(number), files).await?;
    let mut previews = Vec::new();
    for watched in candidates {
        if let Some(preview) = canary_preview(ctx, watched, &texts).await {
            previews.push(preview);
        }
    }
    if previews.is_empty() {
        return Ok(());
    }
    let body = preview::comment(&open.head_sha, &previews);
    upsert(forge, &group.repo, number, &body).await
}

/// The changed files as the pull request's head has them (deleted ones are left out).
async fn read_head(
    ctx: &Context,
    group: &Group,
    reference: String,
    files: Vec<String>,
) -> Result<BTreeMap<String, String>, String> {
    let credentials = source::credentials_of(&ctx.client, group.secret.as_ref())
        .await
        .map_err(|e| e.to_string())?;
    // Its own clone: the writer's is busy with records on other threads.
    let cache = ctx.config.git_cache_dir.join("previews");
    let remote = group.remote.clone();
    tokio::task::spawn_blocking(move || -> Result<BTreeMap<String, String>, String> {
        let mut repo = Repo::open(&cache, remote, credentials).map_err(|e| e.to_string())?;
        let head = repo
            .fetch_ref(&reference)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("the remote has no {reference}"))?;
        let mut texts = BTreeMap::new();
        for file in files {
            let Some(bytes) = repo.read_file(head, &file).map_err(|e| e.to_string())? else {
                continue;
            };
            let Ok(text) = String::from_utf8(bytes) else {
                continue;
            };
            if limits::check(&text).is_ok() {
                texts.insert(file, text);
            }
        }
        Ok(texts)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The preview of one canary, when a changed file declares its target.
async fn canary_preview(
    ctx: &Context,
    watched: &Watched,
    texts: &BTreeMap<String, String>,
) -> Option<CanaryPreview> {
    let canary = watched.canary.as_ref();
    let namespace = canary.namespace().unwrap_or_default();
    let kind = canary.spec.target_ref.kind.as_str();
    let name = canary.spec.target_ref.name.as_str();
    let target = TargetRef {
        kind,
        name,
        namespace: Some(&namespace),
    };
    let known: Vec<&str> = watched.primary_images.values().map(String::as_str).collect();
    let mut files = Vec::new();
    let mut images = Vec::new();
    let mut replicas = None;
    for (file, text) in texts {
        if !under(watched.source.path.as_deref(), file) {
            continue;
        }
        if !edit::declares(file, text, &target, &known).unwrap_or(false) {
            continue;
        }
        files.push(file.clone());
        for (container, image) in edit::declared_images(file, text, &target).unwrap_or_default() {
            let from = watched.primary_images.get(&container).cloned();
            if from.as_deref() != Some(image.as_str()) {
                images.push(ImageChange {
                    container,
                    from,
                    to: image,
                });
            }
        }
        if let Some(n) = preview::declared_replicas(text, kind, name) {
            replicas = Some((file.clone(), n));
        }
    }
    if files.is_empty() {
        return None;
    }
    let version = images.first().map(|i| i.to.as_str());
    let release = crate::forge::plan::release(canary, "", &crate::forge::render::version(version, ""));
    let primary = format!("{name}-primary");
    let checks = primary_checks(ctx, canary, &primary, &release).await;
    let autoscaler = canary.spec.autoscaler_ref.as_ref().map(|a| {
        let kind = match a.kind {
            AutoscalerKind::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
            AutoscalerKind::ScaledObject => "ScaledObject",
        };
        format!("{kind}/{}", a.name)
    });
    let warnings = preview::warnings(&Observed {
        target: format!("{kind}/{name}"),
        replicas,
        autoscaler,
        refusal: watched.refusal.clone(),
        skip_analysis: canary.spec.skip_analysis.unwrap_or(false),
    });
    Some(CanaryPreview {
        release,
        files,
        images,
        primary,
        checks,
        warnings,
    })
}

/// The canary's metric checks run against its primary (the target renamed `<target>-primary`
/// in the queries), all of them, past failures.
async fn primary_checks(
    ctx: &Context,
    canary: &Canary,
    primary: &str,
    release: &crate::forge::render::Release,
) -> Checks {
    if canary
        .spec
        .analysis()
        .and_then(|a| a.metrics.as_ref())
        .is_none_or(Vec::is_empty)
    {
        return Checks::Ran(Vec::new());
    }
    let mut as_primary = canary.clone();
    as_primary.spec.target_ref.name = primary.to_string();
    let results = ctx.analyzer.run_all(&as_primary).await;
    Checks::Ran(
        results
            .into_iter()
            .map(|r| {
                let plan = release.metrics.iter().find(|m| m.name == r.name);
                CheckNow {
                    min: plan.and_then(|m| m.min),
                    max: plan.and_then(|m| m.max),
                    name: r.name,
                    value: r.value,
                    passed: r.passed,
                    message: r.message,
                }
            })
            .collect(),
    )
}

/// Creates the preview comment, or edits the one flaggit left before; nothing when it says
/// the same already.
async fn upsert(forge: &dyn Forge, repo: &RepoId, number: u64, body: &str) -> Result<(), String> {
    let own = forge.own_login().await.map_err(|e| e.to_string())?;
    let comments = match forge
        .comments(repo, number, None, None)
        .await
        .map_err(|e| e.to_string())?
    {
        crate::forge::Polled::Changed { value, .. } => value,
        crate::forge::Polled::NotModified => Vec::new(),
    };
    let existing = comments.iter().find(|c| {
        preview::previewed_head(&c.body).is_some()
            && own
                .as_ref()
                .is_none_or(|login| c.author.eq_ignore_ascii_case(login))
    });
    match existing {
        Some(comment) if comment.body.trim_end() == body.trim_end() => Ok(()),
        Some(comment) => forge
            .edit_comment(repo, number, comment.id, body)
            .await
            .map_err(|e| e.to_string()),
        None => forge
            .create_comment(repo, number, body)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_under_a_path() {
        assert!(under(None, "a/b.yaml"));
        assert!(under(Some(""), "a/b.yaml"));
        assert!(under(Some("apps/podinfo"), "apps/podinfo/deployment.yaml"));
        assert!(under(
            Some("apps/podinfo/deployment.yaml"),
            "apps/podinfo/deployment.yaml"
        ));
        assert!(!under(Some("apps/podinfo"), "apps/podinfo2/deployment.yaml"));
        assert!(!under(Some("apps/podinfo"), "apps/web/deployment.yaml"));
    }
}
