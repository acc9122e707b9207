//! The shipped RBAC is enough and not more: every verb the controller uses is allowed to its
//! ServiceAccount, the controller runs under it, and what it must not do is denied.

use std::time::Duration;

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::Node;
use kube::api::PostParams;
use kube::{Api, Client};

use crate::support::{Flaggit, TestNamespace, control_plane, repo};

const SA: &str = "system:serviceaccount:flaggit-system:flaggit";

/// (verb, group, resource, namespace) the controller needs.
const ALLOWED: &[(&str, &str, &str, &str)] = &[
    ("list", "flagger.app", "canaries", ""),
    ("watch", "flagger.app", "canaries", ""),
    ("get", "flagger.app", "canaries", "apps"),
    ("patch", "flagger.app", "canaries", "apps"),
    ("update", "flagger.app", "canaries/finalizers", "apps"),
    ("patch", "flagger.app", "canaries/status", "apps"),
    ("list", "flagger.app", "metrictemplates", ""),
    ("watch", "flagger.app", "alertproviders", ""),
    ("create", "apps", "deployments", "apps"),
    ("patch", "apps", "deployments", "apps"),
    ("watch", "apps", "daemonsets", ""),
    ("update", "apps", "daemonsets", "apps"),
    ("create", "", "services", "apps"),
    ("watch", "", "configmaps", ""),
    ("create", "", "configmaps", "apps"),
    ("get", "", "secrets", "apps"),
    ("create", "", "secrets", "apps"),
    ("create", "", "events", "apps"),
    ("patch", "", "events", "apps"),
    ("create", "events.k8s.io", "events", "apps"),
    ("create", "autoscaling", "horizontalpodautoscalers", "apps"),
    ("watch", "autoscaling", "horizontalpodautoscalers", ""),
    ("create", "keda.sh", "scaledobjects", "apps"),
    ("patch", "keda.sh", "scaledobjects", "apps"),
    ("patch", "networking.istio.io", "virtualservices", "apps"),
    ("create", "networking.istio.io", "destinationrules", "apps"),
    ("update", "gateway.networking.k8s.io", "httproutes", "apps"),
    ("update", "gateway.solo.io", "routetables", "apps"),
    ("create", "gloo.solo.io", "upstreams", "apps"),
    ("update", "traefik.io", "traefikservices", "apps"),
    ("create", "apisix.apache.org", "apisixroutes", "apps"),
    ("delete", "networking.k8s.io", "ingresses", "apps"),
    ("list", "kustomize.toolkit.fluxcd.io", "kustomizations", ""),
    (
        "get",
        "source.toolkit.fluxcd.io",
        "gitrepositories",
        "flux-system",
    ),
    ("get", "helm.toolkit.fluxcd.io", "helmreleases", "flux-system"),
    ("get", "argoproj.io", "applications", "argocd"),
    ("list", "", "secrets", "argocd"),
    ("get", "", "configmaps", "argocd"),
    ("get", "coordination.k8s.io", "leases", "flaggit-system"),
    ("create", "coordination.k8s.io", "leases", "flaggit-system"),
    ("update", "coordination.k8s.io", "leases", "flaggit-system"),
    ("watch", "certificates.k8s.io", "certificatesigningrequests", ""),
    (
        "update",
        "certificates.k8s.io",
        "certificatesigningrequests/approval",
        "",
    ),
    ("create", "authorization.k8s.io", "subjectaccessreviews", ""),
];

/// What the controller must never be able to do.
const DENIED: &[(&str, &str, &str, &str)] = &[
    ("delete", "", "secrets", "apps"),
    ("deletecollection", "", "secrets", "apps"),
    ("delete", "apps", "deployments", "apps"),
    ("delete", "flagger.app", "canaries", "apps"),
    ("create", "flagger.app", "canaries", "apps"),
    ("create", "", "pods", "apps"),
    ("create", "", "pods/exec", "apps"),
    ("create", "", "serviceaccounts/token", "apps"),
    ("get", "", "nodes", ""),
    ("update", "coordination.k8s.io", "leases", "kube-system"),
    ("create", "coordination.k8s.io", "leases", "apps"),
    ("create", "rbac.authorization.k8s.io", "clusterrolebindings", ""),
    ("bind", "rbac.authorization.k8s.io", "clusterroles", ""),
    ("escalate", "rbac.authorization.k8s.io", "roles", "apps"),
    ("impersonate", "", "users", ""),
    ("create", "apiextensions.k8s.io", "customresourcedefinitions", ""),
    ("create", "certificates.k8s.io", "certificatesigningrequests", ""),
    ("delete", "certificates.k8s.io", "certificatesigningrequests", ""),
    (
        "update",
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        "",
    ),
];

async fn allowed(client: &Client, (verb, group, resource, namespace): (&str, &str, &str, &str)) -> bool {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_string())),
        None => (resource, None),
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(SA.into()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                "system:serviceaccounts:flaggit-system".into(),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource,
                namespace: (!namespace.is_empty()).then(|| namespace.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("the API server answers SubjectAccessReviews");
    answer.status.is_some_and(|s| s.allowed)
}

#[tokio::test]
async fn shipped_rbac_is_enough_and_not_more() {
    let cp = control_plane();
    cp.install_crds();
    cp.kubectl_ok(
        &[
            "apply",
            "--server-side",
            "-k",
            repo().join("manifests").to_str().expect("utf-8"),
        ],
        None,
    );
    let client = cp.client().await;

    let mut wrong = Vec::new();
    for &check in ALLOWED {
        if !allowed(&client, check).await {
            wrong.push(format!("denied but needed: {check:?}"));
        }
    }
    for &check in DENIED {
        if allowed(&client, check).await {
            wrong.push(format!("allowed but must not be: {check:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "RBAC of manifests/rbac.yaml:\n{}",
        wrong.join("\n")
    );

    // The controller itself runs under the ServiceAccount: CRD wait, lease, watch, metrics.
    let ns = TestNamespace::create(&client, "rbac").await;
    let kubeconfig = cp.kubeconfig_as(SA, "kubeconfig-flaggit-sa");
    // The impersonation really applies to clients built from that kubeconfig.
    let as_sa = cp.client_from(&kubeconfig).await;
    match Api::<Node>::all(as_sa).list(&Default::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("listing nodes as the ServiceAccount must be forbidden: {other:?}"),
    }
    // Only this test's namespace: the other tests' canaries have controllers of their own.
    // (The SubjectAccessReview table above covers the cluster-wide permissions.)
    let flaggit = Flaggit::start(
        &kubeconfig,
        &[
            "--leader-election-namespace",
            "flaggit-system",
            "--namespace",
            &ns.name,
        ],
    );
    flaggit.wait_for_log("acquired the leader lease", Duration::from_secs(60));
    cp.kubectl_ok(
        &["apply", "-f", "-"],
        Some(&crate::support::tutorial_canary_yaml(&ns.name)),
    );
    flaggit.wait_for_log(&format!("name={}", "podinfo"), Duration::from_secs(30));
    flaggit.wait_for_log("canary picked up", Duration::from_secs(30));
    let log = flaggit.log();
    assert!(
        !log.contains("forbidden"),
        "the controller hit an RBAC denial:\n{log}"
    );
    let (status, metrics) = flaggit.get("/metrics").expect("metrics served");
    assert_eq!(status, 200);
    assert!(metrics.contains("\nflaggit_leader 1\n"), "{metrics}");
    assert!(
        metrics.contains(&format!("flagger_canary_total{{namespace=\"{}\"}} 1", ns.name)),
        "{metrics}"
    );
    assert_eq!(flaggit.terminate(Duration::from_secs(40)), Some(0));
    ns.delete(&client).await;
}
