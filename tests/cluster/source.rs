//! Finding a canary's config repository (`flaggit::gitops::source`) against real Flux and
//! Argo CD objects, read as the controller's ServiceAccount so the shipped ClusterRole is
//! proven enough for every read.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use flaggit::api::{Canary, CanarySpec, GitOpsSpec, GitRepositoryRef, LocalObjectReference, TargetRef};
use flaggit::gitops::source::{self, Defaults, Origin, SecretRef, Source};
use flaggit::gitops::{Credentials, Remote};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::support::{TestNamespace, control_plane, eventually, repo};

const SA: &str = "system:serviceaccount:flaggit-system:flaggit";

/// Installs the Flux/Argo CD CRDs and the shipped RBAC (once), and returns an admin client
/// and a client acting as the controller's ServiceAccount.
async fn setup() -> (Client, Client) {
    static KUBECONFIG: OnceLock<PathBuf> = OnceLock::new();
    let cp = control_plane();
    let kubeconfig = KUBECONFIG.get_or_init(|| {
        let crds = repo().join("tests/fixtures/crds/flux-argocd.yaml");
        cp.kubectl_ok(
            &["apply", "--server-side", "-f", crds.to_str().expect("utf-8")],
            None,
        );
        for file in ["namespace.yaml", "rbac.yaml"] {
            let path = repo().join("manifests").join(file);
            cp.kubectl_ok(
                &["apply", "--server-side", "-f", path.to_str().expect("utf-8")],
                None,
            );
        }
        eventually(
            "the Flux and Argo CD CRDs to be Established",
            Duration::from_secs(60),
            || {
                cp.kubectl(
                    &[
                        "wait",
                        "--for=condition=Established",
                        "--timeout=10s",
                        "crd/kustomizations.kustomize.toolkit.fluxcd.io",
                        "crd/gitrepositories.source.toolkit.fluxcd.io",
                        "crd/ocirepositories.source.toolkit.fluxcd.io",
                        "crd/buckets.source.toolkit.fluxcd.io",
                        "crd/helmreleases.helm.toolkit.fluxcd.io",
                        "crd/applications.argoproj.io",
                    ],
                    None,
                )
                .0
                .then_some(())
            },
        );
        cp.kubeconfig_as(SA, "kubeconfig-source-sa")
    });
    (cp.client().await, cp.client_from(kubeconfig).await)
}

/// Applies one object given as JSON (kubectl reads JSON as YAML).
fn apply(object: Value) {
    control_plane().kubectl_ok(&["apply", "-f", "-"], Some(&object.to_string()));
}

/// Writes `status` through the status subresource, as Flux and Argo CD do.
async fn set_status(
    admin: &Client,
    (group, version, kind, plural): (&str, &str, &str, &str),
    ns: &str,
    name: &str,
    status: Value,
) {
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::<DynamicObject>::namespaced_with(admin.clone(), ns, &resource)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await
        .expect("the status is written");
}

const KUSTOMIZATION: (&str, &str, &str, &str) = (
    "kustomize.toolkit.fluxcd.io",
    "v1",
    "Kustomization",
    "kustomizations",
);
const APPLICATION: (&str, &str, &str, &str) = ("argoproj.io", "v1alpha1", "Application", "applications");

/// kustomize-controller's record of what Kustomization `ns/name` applied: Flux inventory ids.
async fn inventory(admin: &Client, ns: &str, name: &str, ids: &[String]) {
    let entries: Vec<Value> = ids.iter().map(|id| json!({"id": id, "v": "v1"})).collect();
    set_status(
        admin,
        KUSTOMIZATION,
        ns,
        name,
        json!({"inventory": {"entries": entries}}),
    )
    .await;
}

/// Argo CD's record of what Application `ns/name` manages: Deployments `(namespace, name)`.
async fn argo_resources(admin: &Client, ns: &str, name: &str, deployments: &[(&str, &str)]) {
    let resources: Vec<Value> = deployments
        .iter()
        .map(|(namespace, name)| {
            json!({"group": "apps", "version": "v1", "kind": "Deployment", "namespace": namespace, "name": name, "status": "Synced"})
        })
        .collect();
    set_status(
        admin,
        APPLICATION,
        ns,
        name,
        json!({"resources": resources, "sync": {"status": "Synced"}}),
    )
    .await;
}

/// The Flux inventory id of Deployment `ns/podinfo`.
fn podinfo_id(ns: &str) -> String {
    format!("{ns}_podinfo_apps_Deployment")
}

fn kustomization(
    ns: &str,
    name: &str,
    path: &str,
    source_kind: &str,
    source: &str,
    source_ns: Option<&str>,
) -> Value {
    let mut source_ref = json!({"kind": source_kind, "name": source});
    if let Some(source_ns) = source_ns {
        source_ref["namespace"] = json!(source_ns);
    }
    json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"interval": "10m", "path": path, "prune": true, "sourceRef": source_ref},
    })
}

fn git_repository(ns: &str, name: &str, url: &str, git_ref: Option<Value>, secret: Option<&str>) -> Value {
    let mut spec = json!({"interval": "1m", "url": url});
    if let Some(git_ref) = git_ref {
        spec["ref"] = git_ref;
    }
    if let Some(secret) = secret {
        spec["secretRef"] = json!({"name": secret});
    }
    json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    })
}

fn application(ns: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    })
}

async fn secret(client: &Client, ns: &str, name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        string_data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret is created");
}

/// The Canary `podinfo` in `ns`, with `gitops` as its `spec.gitops`.
fn canary(ns: &str, gitops: Option<GitOpsSpec>) -> Canary {
    let mut canary = Canary::new(
        "podinfo",
        CanarySpec {
            target_ref: TargetRef {
                api_version: "apps/v1".into(),
                name: "podinfo".into(),
                ..Default::default()
            },
            gitops: gitops.map(Box::new),
            ..Default::default()
        },
    );
    canary.metadata.namespace = Some(ns.into());
    canary
}

/// The target Deployment's metadata, as the controller reads it.
fn target(ns: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> ObjectMeta {
    let map = |pairs: &[(&str, &str)]| -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    };
    ObjectMeta {
        name: Some("podinfo".into()),
        namespace: Some(ns.into()),
        labels: map(labels),
        annotations: map(annotations),
        ..Default::default()
    }
}

fn flux_labels<'a>(ks_ns: &'a str, ks: &'a str) -> [(&'a str, &'a str); 2] {
    [
        ("kustomize.toolkit.fluxcd.io/name", ks),
        ("kustomize.toolkit.fluxcd.io/namespace", ks_ns),
    ]
}

fn defaults(argocd_ns: &str) -> Defaults {
    Defaults {
        argocd_namespace: argocd_ns.into(),
        ..Default::default()
    }
}

fn secret_ref(ns: &str, name: &str) -> Option<SecretRef> {
    Some(SecretRef {
        namespace: ns.into(),
        name: name.into(),
    })
}

fn remote(url: &str, branch: &str) -> Remote {
    Remote {
        url: url.into(),
        branch: branch.into(),
    }
}

#[tokio::test]
async fn flux_kustomization_chain_v1() {
    let (admin, sa) = setup().await;
    let flux = TestNamespace::create(&admin, "src-flux").await;
    let apps = TestNamespace::create(&admin, "src-flux-apps").await;
    let url = "ssh://git@git.example/org/config.git";
    apply(git_repository(
        &flux.name,
        "config",
        url,
        Some(json!({"branch": "prod"})),
        Some("config-auth"),
    ));
    apply(kustomization(
        &flux.name,
        "apps",
        "./apps/podinfo/",
        "GitRepository",
        "config",
        None,
    ));
    // A source in another namespace, with no ref: Flux's default branch.
    apply(git_repository(
        &apps.name,
        "team",
        "https://git.example/org/team",
        None,
        None,
    ));
    apply(kustomization(
        &flux.name,
        "team",
        "./",
        "GitRepository",
        "team",
        Some(&apps.name),
    ));
    inventory(&admin, &flux.name, "apps", &[podinfo_id(&apps.name)]).await;
    inventory(&admin, &flux.name, "team", &[podinfo_id(&apps.name)]).await;

    let target_meta = target(&apps.name, &flux_labels(&flux.name, "apps"), &[]);
    let found = source::resolve(&sa, &canary(&apps.name, None), &target_meta, &defaults("argocd"))
        .await
        .expect("resolves");
    assert_eq!(
        found,
        Some(Source {
            remote: remote(url, "prod"),
            secret: secret_ref(&flux.name, "config-auth"),
            path: Some("apps/podinfo".into()),
            namespace: None,
            origin: Origin::Flux {
                kustomization: format!("{}/apps", flux.name)
            },
        })
    );

    // spec.gitops.path overrides the discovered path, and nothing else.
    let with_path = canary(
        &apps.name,
        Some(GitOpsSpec {
            path: Some("./apps/podinfo/deployment.yaml".into()),
            ..Default::default()
        }),
    );
    let found = source::resolve(&sa, &with_path, &target_meta, &defaults("argocd"))
        .await
        .expect("resolves")
        .expect("a source");
    assert_eq!(found.path.as_deref(), Some("apps/podinfo/deployment.yaml"));
    assert_eq!(found.remote, remote(url, "prod"));

    let team = target(&apps.name, &flux_labels(&flux.name, "team"), &[]);
    let found = source::resolve(&sa, &canary(&apps.name, None), &team, &defaults("argocd"))
        .await
        .expect("resolves")
        .expect("a source");
    assert_eq!(found.remote, remote("https://git.example/org/team", "master"));
    assert_eq!(found.secret, None);
    assert_eq!(found.path.as_deref(), Some(""), "the repository root");

    flux.delete(&admin).await;
    apps.delete(&admin).await;
}

#[tokio::test]
async fn flux_through_a_helmrelease() {
    let (admin, sa) = setup().await;
    let flux = TestNamespace::create(&admin, "src-helm").await;
    apply(git_repository(
        &flux.name,
        "config",
        "https://git.example/org/config",
        Some(json!({"name": "refs/heads/release"})),
        Some("https-auth"),
    ));
    apply(kustomization(
        &flux.name,
        "releases",
        "./releases/podinfo",
        "GitRepository",
        "config",
        None,
    ));
    // Served as v2beta2 only by the fixture: the lookup falls back from v2.
    apply(json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2beta2",
        "kind": "HelmRelease",
        "metadata": {
            "name": "podinfo",
            "namespace": flux.name,
            "labels": {
                "kustomize.toolkit.fluxcd.io/name": "releases",
                "kustomize.toolkit.fluxcd.io/namespace": flux.name,
            },
        },
        "spec": {"interval": "5m", "chart": {"spec": {"chart": "podinfo"}}},
    }));
    let release_id = format!("{}_podinfo_helm.toolkit.fluxcd.io_HelmRelease", flux.name);
    inventory(&admin, &flux.name, "releases", &[release_id]).await;
    let target_meta = target(
        &flux.name,
        &[
            ("helm.toolkit.fluxcd.io/name", "podinfo"),
            ("helm.toolkit.fluxcd.io/namespace", &flux.name),
        ],
        &[],
    );
    let found = source::resolve(&sa, &canary(&flux.name, None), &target_meta, &defaults("argocd"))
        .await
        .expect("resolves");
    assert_eq!(
        found,
        Some(Source {
            remote: remote("https://git.example/org/config", "release"),
            secret: secret_ref(&flux.name, "https-auth"),
            path: Some("releases/podinfo".into()),
            namespace: None,
            origin: Origin::Flux {
                kustomization: format!("{}/releases", flux.name)
            },
        })
    );

    // A HelmRelease nobody applied from Git: no Flux source; the defaults serve.
    apply(json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2beta2",
        "kind": "HelmRelease",
        "metadata": {"name": "manual", "namespace": flux.name},
        "spec": {"interval": "5m"},
    }));
    let manual = target(&flux.name, &[("helm.toolkit.fluxcd.io/name", "manual")], &[]);
    let with_default = Defaults {
        remote: Some(remote("https://git.example/org/fallback", "main")),
        ..defaults("argocd")
    };
    let found = source::resolve(&sa, &canary(&flux.name, None), &manual, &with_default)
        .await
        .expect("resolves")
        .expect("the defaults");
    assert_eq!(found.origin, Origin::Default);

    flux.delete(&admin).await;
}

#[tokio::test]
async fn argo_by_tracking_id() {
    let (admin, sa) = setup().await;
    let argocd = TestNamespace::create(&admin, "src-argo").await;
    let apps = TestNamespace::create(&admin, "src-argo-apps").await;
    let url = "https://git.example/org/config.git";
    apply(application(
        &argocd.name,
        "podinfo",
        json!({
            "project": "default",
            "source": {"repoURL": url, "path": "envs/prod/", "targetRevision": "HEAD"},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": apps.name},
        }),
    ));
    let repository = [("argocd.argoproj.io/secret-type", "repository")];
    secret(
        &admin,
        &argocd.name,
        "other-repo",
        &repository,
        &[
            ("url", "https://git.example/org/other"),
            ("username", "u"),
            ("password", "p"),
        ],
    )
    .await;
    // Argo CD matches repository URLs without `.git` and case.
    secret(
        &admin,
        &argocd.name,
        "config-repo",
        &repository,
        &[
            ("url", "https://Git.example/org/config"),
            ("username", "u"),
            ("password", "p"),
        ],
    )
    .await;

    argo_resources(&admin, &argocd.name, "podinfo", &[(&apps.name, "podinfo")]).await;
    let tracking = format!("podinfo:apps/Deployment:{}/podinfo", apps.name);
    let target_meta = target(&apps.name, &[], &[("argocd.argoproj.io/tracking-id", &tracking)]);
    let found = source::resolve(
        &sa,
        &canary(&apps.name, None),
        &target_meta,
        &defaults(&argocd.name),
    )
    .await
    .expect("resolves");
    assert_eq!(
        found,
        Some(Source {
            remote: remote(url, "main"),
            secret: secret_ref(&argocd.name, "config-repo"),
            path: Some("envs/prod".into()),
            namespace: Some(apps.name.clone()),
            origin: Origin::Argo {
                application: format!("{}/podinfo", argocd.name)
            },
        })
    );

    // An Application in another namespace (`ns_app`); a public repository Secret (no
    // credentials) means no secret.
    apply(application(
        &apps.name,
        "team",
        json!({"source": {"repoURL": "https://git.example/org/team", "path": "team", "targetRevision": "stable"}}),
    ));
    argo_resources(&admin, &apps.name, "team", &[(&apps.name, "podinfo")]).await;
    secret(
        &admin,
        &argocd.name,
        "team-repo",
        &repository,
        &[("url", "https://git.example/org/team"), ("type", "git")],
    )
    .await;
    let tracking = format!("{}_team:apps/Deployment:{}/podinfo", apps.name, apps.name);
    let target_meta = target(&apps.name, &[], &[("argocd.argoproj.io/tracking-id", &tracking)]);
    let found = source::resolve(
        &sa,
        &canary(&apps.name, None),
        &target_meta,
        &defaults(&argocd.name),
    )
    .await
    .expect("resolves")
    .expect("a source");
    assert_eq!(found.remote, remote("https://git.example/org/team", "stable"));
    assert_eq!(found.secret, None);
    assert_eq!(
        found.origin,
        Origin::Argo {
            application: format!("{}/team", apps.name)
        }
    );

    // A tracking id copied from another object (a primary's) is not Argo CD's: nothing found.
    let copied = format!("podinfo:apps/Deployment:{}/other", apps.name);
    let target_meta = target(&apps.name, &[], &[("argocd.argoproj.io/tracking-id", &copied)]);
    let found = source::resolve(
        &sa,
        &canary(&apps.name, None),
        &target_meta,
        &defaults(&argocd.name),
    )
    .await
    .expect("resolves");
    assert_eq!(found, None);

    argocd.delete(&admin).await;
    apps.delete(&admin).await;
}

#[tokio::test]
async fn argo_by_instance_label_and_multiple_sources() {
    let (admin, sa) = setup().await;
    let argocd = TestNamespace::create(&admin, "src-inst").await;
    let apps = TestNamespace::create(&admin, "src-inst-apps").await;
    apply(application(
        &argocd.name,
        "podinfo",
        json!({"sources": [
            {"repoURL": "https://charts.example", "chart": "podinfo", "targetRevision": "6.x"},
            {"repoURL": "https://git.example/org/config", "path": "./values/podinfo", "targetRevision": "refs/heads/live"},
        ]}),
    ));
    // A credential template whose prefix covers the repository; the longest prefix wins.
    let creds = [("argocd.argoproj.io/secret-type", "repo-creds")];
    secret(
        &admin,
        &argocd.name,
        "host-creds",
        &creds,
        &[
            ("url", "https://git.example"),
            ("username", "u"),
            ("password", "p"),
        ],
    )
    .await;
    secret(
        &admin,
        &argocd.name,
        "org-creds",
        &creds,
        &[
            ("url", "https://git.example/org"),
            ("username", "u"),
            ("password", "p"),
        ],
    )
    .await;

    argo_resources(&admin, &argocd.name, "podinfo", &[(&apps.name, "podinfo")]).await;
    let target_meta = target(&apps.name, &[("app.kubernetes.io/instance", "podinfo")], &[]);
    let found = source::resolve(
        &sa,
        &canary(&apps.name, None),
        &target_meta,
        &defaults(&argocd.name),
    )
    .await
    .expect("resolves");
    assert_eq!(
        found,
        Some(Source {
            remote: remote("https://git.example/org/config", "live"),
            secret: secret_ref(&argocd.name, "org-creds"),
            path: Some("values/podinfo".into()),
            namespace: None,
            origin: Origin::Argo {
                application: format!("{}/podinfo", argocd.name)
            },
        })
    );

    // The same label set by Helm for a release no Application has: not Argo CD's.
    let helm = target(&apps.name, &[("app.kubernetes.io/instance", "my-release")], &[]);
    let found = source::resolve(&sa, &canary(&apps.name, None), &helm, &defaults(&argocd.name))
        .await
        .expect("resolves");
    assert_eq!(found, None);

    argocd.delete(&admin).await;
    apps.delete(&admin).await;
}

#[tokio::test]
async fn spec_wins_then_defaults_then_nothing() {
    let (admin, sa) = setup().await;
    let ns = TestNamespace::create(&admin, "src-spec").await;
    // The labels name a Kustomization that does not exist: spec.gitops.repository wins
    // without reading it.
    let flux_target = target(&ns.name, &flux_labels(&ns.name, "missing"), &[]);
    let spec = canary(
        &ns.name,
        Some(GitOpsSpec {
            repository: Some(GitRepositoryRef {
                url: "git@git.example:org/config.git".into(),
                branch: None,
                secret_ref: Some(LocalObjectReference {
                    name: "git-auth".into(),
                }),
            }),
            path: Some("apps/podinfo/".into()),
            ..Default::default()
        }),
    );
    // A --git-allow rule grants it; without one it is refused (see
    // `a_canary_may_use_only_what_its_namespace_is_allowed`).
    let granted = Defaults {
        allowed: vec![
            format!(
                "namespace={},url=git@git.example:org/config.git,path=apps",
                ns.name
            )
            .parse()
            .expect("a rule"),
        ],
        ..defaults("argocd")
    };
    let found = source::resolve(&sa, &spec, &flux_target, &granted)
        .await
        .expect("resolves");
    assert_eq!(
        found,
        Some(Source {
            remote: remote("git@git.example:org/config.git", "main"),
            secret: secret_ref(&ns.name, "git-auth"),
            path: Some("apps/podinfo".into()),
            namespace: None,
            origin: Origin::Spec,
        })
    );

    let plain = target(&ns.name, &[], &[]);
    let with_default = Defaults {
        remote: Some(remote("https://git.example/org/fleet", "trunk")),
        secret: secret_ref("flaggit-system", "fleet-auth"),
        argocd_namespace: "argocd".into(),
        allowed: Vec::new(),
    };
    let found = source::resolve(&sa, &canary(&ns.name, None), &plain, &with_default)
        .await
        .expect("resolves");
    assert_eq!(
        found,
        Some(Source::ledger_only(
            remote("https://git.example/org/fleet", "trunk"),
            secret_ref("flaggit-system", "fleet-auth"),
        ))
    );

    let found = source::resolve(&sa, &canary(&ns.name, None), &plain, &defaults("argocd"))
        .await
        .expect("resolves");
    assert_eq!(found, None, "no repository known at all");

    ns.delete(&admin).await;
}

#[tokio::test]
async fn errors_name_the_object_and_the_fix() {
    let (admin, sa) = setup().await;
    let ns = TestNamespace::create(&admin, "src-err").await;
    let resolve = |labels: Vec<(&'static str, String)>, annotations: Vec<(&'static str, String)>| {
        let sa = sa.clone();
        let ns = ns.name.clone();
        async move {
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let annotations: Vec<(&str, &str)> = annotations.iter().map(|(k, v)| (*k, v.as_str())).collect();
            source::resolve(
                &sa,
                &canary(&ns, None),
                &target(&ns, &labels, &annotations),
                &defaults(&ns),
            )
            .await
            .expect_err("resolving fails")
        }
    };
    let ks = |name: &str| {
        vec![
            ("kustomize.toolkit.fluxcd.io/name", name.to_string()),
            ("kustomize.toolkit.fluxcd.io/namespace", ns.name.clone()),
        ]
    };

    let err = resolve(ks("gone"), vec![]).await;
    assert_eq!(err.category(), "GitSourceNotFound");
    let text = err.to_string();
    assert!(
        text.contains(&format!("Kustomization {}/gone", ns.name)) && text.contains("spec.gitops.repository"),
        "{text}"
    );

    apply(kustomization(
        &ns.name,
        "oci",
        "./",
        "OCIRepository",
        "manifests",
        None,
    ));
    inventory(&admin, &ns.name, "oci", &[podinfo_id(&ns.name)]).await;
    let err = resolve(ks("oci"), vec![]).await;
    assert_eq!(err.category(), "NotGitSource");
    let text = err.to_string();
    assert!(
        text.contains(&format!("Kustomization {}/oci", ns.name))
            && text.contains("OCIRepository")
            && text.contains("flaggit needs a Git source: set spec.gitops.repository"),
        "{text}"
    );

    apply(kustomization(
        &ns.name,
        "bucket",
        "./",
        "Bucket",
        "manifests",
        None,
    ));
    inventory(&admin, &ns.name, "bucket", &[podinfo_id(&ns.name)]).await;
    assert_eq!(resolve(ks("bucket"), vec![]).await.category(), "NotGitSource");

    apply(kustomization(
        &ns.name,
        "dangling",
        "./",
        "GitRepository",
        "nope",
        None,
    ));
    inventory(&admin, &ns.name, "dangling", &[podinfo_id(&ns.name)]).await;
    let err = resolve(ks("dangling"), vec![]).await;
    assert_eq!(err.category(), "GitSourceNotFound");
    assert!(
        err.to_string()
            .contains(&format!("GitRepository {}/nope", ns.name)),
        "{err}"
    );

    apply(git_repository(
        &ns.name,
        "tagged",
        "https://git.example/o/r",
        Some(json!({"tag": "v1.2.0"})),
        None,
    ));
    apply(kustomization(
        &ns.name,
        "pinned",
        "./",
        "GitRepository",
        "tagged",
        None,
    ));
    inventory(&admin, &ns.name, "pinned", &[podinfo_id(&ns.name)]).await;
    let err = resolve(ks("pinned"), vec![]).await;
    assert_eq!(err.category(), "GitSourceNotBranch");
    assert!(err.to_string().contains("tag v1.2.0"), "{err}");

    apply(kustomization(
        &ns.name,
        "escape",
        "../../etc",
        "GitRepository",
        "tagged",
        None,
    ));
    inventory(&admin, &ns.name, "escape", &[podinfo_id(&ns.name)]).await;
    assert_eq!(resolve(ks("escape"), vec![]).await.category(), "InvalidGitPath");

    let err = resolve(vec![("helm.toolkit.fluxcd.io/name", "absent".into())], vec![]).await;
    assert_eq!(err.category(), "GitSourceNotFound");
    assert!(err.to_string().contains("HelmRelease"), "{err}");

    let tracking = format!("ghost:apps/Deployment:{}/podinfo", ns.name);
    let err = resolve(vec![], vec![("argocd.argoproj.io/tracking-id", tracking)]).await;
    assert_eq!(err.category(), "GitSourceNotFound");
    assert!(
        err.to_string()
            .contains(&format!("Application {}/ghost", ns.name)),
        "{err}"
    );

    apply(application(
        &ns.name,
        "chart",
        json!({"source": {"repoURL": "https://charts.example", "chart": "podinfo", "targetRevision": "6.5.0"}}),
    ));
    argo_resources(&admin, &ns.name, "chart", &[(&ns.name, "podinfo")]).await;
    let err = resolve(vec![("app.kubernetes.io/instance", "chart".into())], vec![]).await;
    assert_eq!(err.category(), "NotGitSource");
    assert!(err.to_string().contains("Helm chart podinfo"), "{err}");

    ns.delete(&admin).await;
}

#[tokio::test]
async fn labels_naming_a_source_that_does_not_apply_the_target_are_refused() {
    let (admin, sa) = setup().await;
    let team_a = TestNamespace::create(&admin, "src-team-a").await;
    let team_b = TestNamespace::create(&admin, "src-team-b").await;
    let argocd = TestNamespace::create(&admin, "src-tenancy-argo").await;
    // Team B's source, with its credentials; it applies team B's Deployment only.
    apply(git_repository(
        &team_b.name,
        "config",
        "https://git.example/team-b/config",
        Some(json!({"branch": "main"})),
        Some("team-b-auth"),
    ));
    apply(kustomization(
        &team_b.name,
        "apps",
        "./apps",
        "GitRepository",
        "config",
        None,
    ));
    apply(json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2beta2",
        "kind": "HelmRelease",
        "metadata": {
            "name": "podinfo",
            "namespace": team_b.name,
            "labels": {
                "kustomize.toolkit.fluxcd.io/name": "apps",
                "kustomize.toolkit.fluxcd.io/namespace": team_b.name,
            },
        },
        "spec": {"interval": "5m"},
    }));
    let release_id = format!("{}_podinfo_helm.toolkit.fluxcd.io_HelmRelease", team_b.name);
    inventory(
        &admin,
        &team_b.name,
        "apps",
        &[podinfo_id(&team_b.name), release_id],
    )
    .await;
    apply(application(
        &argocd.name,
        "team-b",
        json!({"source": {"repoURL": "https://git.example/team-b/config", "path": "apps"}}),
    ));
    argo_resources(&admin, &argocd.name, "team-b", &[(&team_b.name, "podinfo")]).await;

    // Team A labels its Deployment as if team B's sources applied it.
    let resolve = |target_meta: ObjectMeta| {
        let sa = sa.clone();
        let canary = canary(&team_a.name, None);
        let defaults = defaults(&argocd.name);
        async move { source::resolve(&sa, &canary, &target_meta, &defaults).await }
    };
    let err = resolve(target(&team_a.name, &flux_labels(&team_b.name, "apps"), &[]))
        .await
        .expect_err("the Kustomization does not apply team A's Deployment");
    assert_eq!(err.category(), "GitSourceNotManaging");
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "Kustomization {}/apps does not list Deployment {}/podinfo in status.inventory",
            team_b.name, team_a.name
        )),
        "{text}"
    );

    let helm = [
        ("helm.toolkit.fluxcd.io/name", "podinfo"),
        ("helm.toolkit.fluxcd.io/namespace", team_b.name.as_str()),
    ];
    let err = resolve(target(&team_a.name, &helm, &[]))
        .await
        .expect_err("the HelmRelease installs into team B's namespace");
    assert_eq!(err.category(), "GitSourceNotManaging");
    assert!(
        err.to_string()
            .contains(&format!("HelmRelease {}/podinfo", team_b.name)),
        "{err}"
    );

    let tracking = format!("team-b:apps/Deployment:{}/podinfo", team_a.name);
    let err = resolve(target(
        &team_a.name,
        &[],
        &[("argocd.argoproj.io/tracking-id", &tracking)],
    ))
    .await
    .expect_err("the Application does not manage team A's Deployment");
    assert_eq!(err.category(), "GitSourceNotManaging");
    assert!(err.to_string().contains("status.resources"), "{err}");
    let err = resolve(target(
        &team_a.name,
        &[("app.kubernetes.io/instance", "team-b")],
        &[],
    ))
    .await
    .expect_err("nor by its instance label");
    assert_eq!(err.category(), "GitSourceNotManaging");

    // Team B's own Deployment is found through each of them.
    let own = |labels: &[(&str, &str)], annotations: &[(&str, &str)]| {
        let sa = sa.clone();
        let canary = canary(&team_b.name, None);
        let defaults = defaults(&argocd.name);
        let target_meta = target(&team_b.name, labels, annotations);
        async move { source::resolve(&sa, &canary, &target_meta, &defaults).await }
    };
    let found = own(&flux_labels(&team_b.name, "apps"), &[])
        .await
        .expect("resolves")
        .expect("a source");
    assert_eq!(found.secret, secret_ref(&team_b.name, "team-b-auth"));
    let helm_b = [
        ("helm.toolkit.fluxcd.io/name", "podinfo"),
        ("helm.toolkit.fluxcd.io/namespace", team_b.name.as_str()),
    ];
    assert!(own(&helm_b, &[]).await.expect("resolves").is_some());
    let tracking = format!("team-b:apps/Deployment:{}/podinfo", team_b.name);
    let found = own(&[], &[("argocd.argoproj.io/tracking-id", &tracking)])
        .await
        .expect("resolves")
        .expect("a source");
    assert_eq!(
        found.origin,
        Origin::Argo {
            application: format!("{}/team-b", argocd.name)
        }
    );

    team_a.delete(&admin).await;
    team_b.delete(&admin).await;
    argocd.delete(&admin).await;
}

#[tokio::test]
async fn a_canary_may_use_only_what_its_namespace_is_allowed() {
    let (admin, sa) = setup().await;
    let flux = TestNamespace::create(&admin, "src-allow-flux").await;
    let apps = TestNamespace::create(&admin, "src-allow").await;
    let url = "https://git.example/org/fleet.git";
    apply(git_repository(
        &flux.name,
        "fleet",
        url,
        Some(json!({"branch": "main"})),
        Some("fleet-auth"),
    ));
    apply(kustomization(
        &flux.name,
        "team-a",
        "./apps/team-a",
        "GitRepository",
        "fleet",
        None,
    ));
    inventory(&admin, &flux.name, "team-a", &[podinfo_id(&apps.name)]).await;
    let target_meta = target(&apps.name, &flux_labels(&flux.name, "team-a"), &[]);
    let with = |gitops: GitOpsSpec, defaults: Defaults| {
        let sa = sa.clone();
        let canary = canary(&apps.name, Some(gitops));
        let target_meta = target_meta.clone();
        async move { source::resolve(&sa, &canary, &target_meta, &defaults).await }
    };
    let path = |p: &str| GitOpsSpec {
        path: Some(p.into()),
        ..Default::default()
    };
    let repository = |url: &str, p: Option<&str>| GitOpsSpec {
        repository: Some(GitRepositoryRef {
            url: url.into(),
            branch: None,
            secret_ref: Some(LocalObjectReference {
                name: "own-auth".into(),
            }),
        }),
        path: p.map(Into::into),
        ..Default::default()
    };

    // The discovered source's path and below: yes; a path beside it: no.
    let found = with(path("apps/team-a/podinfo.yaml"), defaults("argocd"))
        .await
        .expect("under the Kustomization's path")
        .expect("a source");
    assert_eq!(found.path.as_deref(), Some("apps/team-a/podinfo.yaml"));
    assert_eq!(found.secret, secret_ref(&flux.name, "fleet-auth"));
    let err = with(path("apps/team-b"), defaults("argocd"))
        .await
        .expect_err("beside it");
    assert_eq!(err.category(), "GitSourceNotAllowed");
    let text = err.to_string();
    assert!(
        text.contains("spec.gitops.path \"apps/team-b\" is not allowed")
            && text.contains("under apps/team-a/")
            && text.contains("grants the namespace nothing"),
        "{text}"
    );

    // Another repository: no, and the message shows no token.
    let err = with(
        repository("https://ghp_TOKEN@git.example/org/other", None),
        defaults("argocd"),
    )
    .await
    .expect_err("another repository");
    assert_eq!(err.category(), "GitSourceNotAllowed");
    let text = err.to_string();
    assert!(
        text.contains("https://git.example/org/other is not allowed"),
        "{text}"
    );
    assert!(!text.contains("ghp_TOKEN"), "{text}");
    // The discovered repository, as spec.gitops.repository: yes (its own credentials).
    let found = with(
        repository("https://Git.example/org/fleet", Some("apps/team-a")),
        defaults("argocd"),
    )
    .await
    .expect("the discovered repository")
    .expect("a source");
    assert_eq!(
        (found.origin, found.secret),
        (Origin::Spec, secret_ref(&apps.name, "own-auth"))
    );
    let err = with(repository(url, Some("apps/team-b")), defaults("argocd"))
        .await
        .expect_err("the discovered repository, another team's path");
    assert!(err.to_string().contains("spec.gitops.path"), "{err}");

    // A --git-allow rule grants more.
    let granted = Defaults {
        allowed: vec![
            format!(
                "namespace={},url=https://git.example/org/other,path=apps",
                apps.name
            )
            .parse()
            .expect("a rule"),
            "namespace=*,url=https://git.example/org/fleet,path=shared"
                .parse()
                .expect("a rule"),
        ],
        ..defaults("argocd")
    };
    let found = with(
        repository("https://git.example/org/other", Some("apps/podinfo")),
        granted.clone(),
    )
    .await
    .expect("granted")
    .expect("a source");
    assert_eq!(found.remote, remote("https://git.example/org/other", "main"));
    assert!(
        with(
            repository("https://git.example/org/other", Some("lib")),
            granted.clone()
        )
        .await
        .is_err()
    );
    assert!(
        with(path("shared/podinfo"), granted.clone()).await.is_ok(),
        "a rule for every namespace"
    );

    // The controller-wide --git-url is the whole repository for every namespace.
    let plain = target(&apps.name, &[], &[]);
    let fleet = Defaults {
        remote: Some(remote("https://git.example/org/fleet-default", "main")),
        ..defaults("argocd")
    };
    let found = source::resolve(
        &sa,
        &canary(&apps.name, Some(path("anywhere/at/all"))),
        &plain,
        &fleet,
    )
    .await
    .expect("the default repository")
    .expect("a source");
    assert_eq!(
        (found.origin, found.path.as_deref()),
        (Origin::Default, Some("anywhere/at/all"))
    );

    flux.delete(&admin).await;
    apps.delete(&admin).await;
}

#[tokio::test]
async fn credentials_from_flux_and_argo_secrets() {
    let (admin, sa) = setup().await;
    let ns = TestNamespace::create(&admin, "src-cred").await;
    let at = |name: &str| SecretRef {
        namespace: ns.name.clone(),
        name: name.into(),
    };

    secret(
        &admin,
        &ns.name,
        "flux-ssh",
        &[],
        &[
            (
                "identity",
                "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
            ),
            ("identity.pub", "ssh-ed25519 AAAA"),
            ("known_hosts", "git.example ssh-ed25519 AAAAC3Nza"),
            ("password", "key-passphrase"),
        ],
    )
    .await;
    let got = source::credentials(&sa, &at("flux-ssh"))
        .await
        .expect("ssh credentials");
    assert_eq!(
        got,
        Credentials::Ssh {
            username: None,
            identity: "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n".into(),
            passphrase: Some("key-passphrase".into()),
            known_hosts: "git.example ssh-ed25519 AAAAC3Nza".into(),
        }
    );

    secret(
        &admin,
        &ns.name,
        "flux-basic",
        &[],
        &[("username", "bot"), ("password", "pat-123")],
    )
    .await;
    assert_eq!(
        source::credentials(&sa, &at("flux-basic")).await.expect("basic"),
        Credentials::Basic {
            username: "bot".into(),
            password: "pat-123".into()
        }
    );

    // Argo CD: an SSH key whose host keys are in Argo CD's known-hosts ConfigMap.
    secret(
        &admin,
        &ns.name,
        "argo-ssh",
        &[("argocd.argoproj.io/secret-type", "repository")],
        &[
            ("url", "git@git.example:org/config.git"),
            ("sshPrivateKey", "ARGO-KEY"),
        ],
    )
    .await;
    let err = source::credentials(&sa, &at("argo-ssh"))
        .await
        .expect_err("no host keys yet");
    assert_eq!(err.category(), "GitKnownHostsMissing");
    assert!(!err.to_string().contains("ARGO-KEY"), "{err}");
    let known_hosts = ConfigMap {
        metadata: ObjectMeta {
            name: Some("argocd-ssh-known-hosts-cm".into()),
            ..Default::default()
        },
        data: Some(
            [(
                "ssh_known_hosts".to_string(),
                "git.example ssh-rsa AAAAB3".to_string(),
            )]
            .into(),
        ),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &known_hosts)
        .await
        .expect("configmap is created");
    assert_eq!(
        source::credentials(&sa, &at("argo-ssh")).await.expect("argo ssh"),
        Credentials::Ssh {
            username: None,
            identity: "ARGO-KEY".into(),
            passphrase: None,
            known_hosts: "git.example ssh-rsa AAAAB3".into(),
        }
    );

    secret(
        &admin,
        &ns.name,
        "argo-https",
        &[("argocd.argoproj.io/secret-type", "repository")],
        &[
            ("url", "https://git.example/org/config"),
            ("username", "argo"),
            ("password", "argo-pass"),
        ],
    )
    .await;
    assert_eq!(
        source::credentials(&sa, &at("argo-https"))
            .await
            .expect("argo basic"),
        Credentials::Basic {
            username: "argo".into(),
            password: "argo-pass".into()
        }
    );

    let err = source::credentials(&sa, &at("absent"))
        .await
        .expect_err("missing");
    assert_eq!(err.category(), "GitSecretNotFound");
    assert!(
        err.to_string().contains(&format!("Secret {}/absent", ns.name)),
        "{err}"
    );

    secret(
        &admin,
        &ns.name,
        "useless",
        &[],
        &[("token", "very-secret-value"), ("password", "also-secret")],
    )
    .await;
    let err = source::credentials(&sa, &at("useless"))
        .await
        .expect_err("no usable keys");
    assert_eq!(err.category(), "InvalidGitSecret");
    let text = err.to_string();
    assert!(text.contains("keys: password, token"), "{text}");
    assert!(
        !text.contains("very-secret-value") && !text.contains("also-secret"),
        "{text}"
    );

    ns.delete(&admin).await;
}
