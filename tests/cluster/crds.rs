//! The CRDs on a real API server: they establish, Flagger manifests apply unchanged, invalid
//! canaries are refused with the field named, and `kubectl explain` shows our docs.

use std::time::Duration;

use flaggit::api::{Canary, HookType, Provider};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, PostParams};
use serde_json::{Value, json};

use crate::support::{TestNamespace, control_plane, eventually, repo};

fn linkerd_tutorial_canary(namespace: &str) -> Value {
    serde_yaml::from_str(&crate::support::tutorial_canary_yaml(namespace)).expect("fixture is YAML")
}

fn canaries(client: kube::Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client, namespace, &ApiResource::erase::<Canary>(&()))
}

#[tokio::test]
async fn crds_establish_and_every_example_applies() {
    let cp = control_plane();
    cp.install_crds();
    let names = cp.kubectl_ok(&["get", "crd", "-o", "name"], None);
    for crd in [
        "canaries.flagger.app",
        "metrictemplates.flagger.app",
        "alertproviders.flagger.app",
    ] {
        assert!(names.contains(crd), "{crd} missing from:\n{names}");
    }
    // Printer columns and the `all` category are served as Flagger's are.
    let (ok, _, err) = cp.kubectl(&["get", "canaries", "-A"], None);
    assert!(ok, "{err}");

    // The examples use autoscaling/v2, which this 1.20 server serves as v2beta2 (same fields).
    let examples = cp.kubectl_ok(
        &[
            "kustomize",
            repo().join("examples/podinfo").to_str().expect("utf-8"),
        ],
        None,
    );
    let for_1_20 = examples.replace(
        "apiVersion: autoscaling/v2\n",
        "apiVersion: autoscaling/v2beta2\n",
    );
    assert_ne!(examples, for_1_20, "the example HPA should use autoscaling/v2");
    cp.kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(&for_1_20));
    let canary = cp.kubectl_ok(&["get", "canary", "-n", "test", "podinfo", "-o", "json"], None);
    let canary: Canary = serde_json::from_str(&canary).expect("the example Canary reads back typed");
    assert_eq!(canary.spec.target_ref.name, "podinfo");
    // The strategy examples are valid Canaries too (checked by the server, not stored); the
    // provider examples' Upstream and ApisixRoute need the routing CRDs.
    crate::support::install_routing_crds();
    for example in [
        "strategies/gatewayapi-canary.yaml",
        "strategies/blue-green.yaml",
        "gitops/canary.yaml",
        "gitops/pull-request.yaml",
        "gitops/pull-request-gitlab.yaml",
        "providers/linkerd.yaml",
        "providers/osm.yaml",
        "providers/nginx.yaml",
        "providers/contour.yaml",
        "providers/gloo.yaml",
        "providers/traefik.yaml",
        "providers/apisix.yaml",
        "providers/skipper.yaml",
    ] {
        let path = repo().join("examples").join(example);
        cp.kubectl_ok(
            &[
                "apply",
                "--server-side",
                "--dry-run=server",
                "-f",
                path.to_str().expect("utf-8"),
            ],
            None,
        );
    }

    // The install manifests apply too (the controller Deployment never runs: no kubelet).
    cp.kubectl_ok(
        &[
            "apply",
            "--server-side",
            "-k",
            repo().join("manifests").to_str().expect("utf-8"),
        ],
        None,
    );
}

#[tokio::test]
async fn flagger_linkerd_tutorial_canary_applies_unchanged() {
    let cp = control_plane();
    cp.install_crds();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, "linkerd-tutorial").await;
    let manifest = linkerd_tutorial_canary(&ns.name);
    let object: DynamicObject = serde_json::from_value(manifest.clone()).expect("dynamic object");
    let created = canaries(client.clone(), &ns.name)
        .create(&PostParams::default(), &object)
        .await
        .expect("the API server accepts the tutorial Canary");

    // Nothing was pruned or defaulted away: the stored spec is the manifest's spec.
    assert_eq!(created.data["spec"], manifest["spec"]);
    let typed: Canary = serde_json::from_value(serde_json::to_value(&created).expect("json")).expect("typed");
    let analysis = typed.spec.analysis().expect("analysis");
    assert_eq!(analysis.step_weight, Some(5));
    assert_eq!(analysis.max_weight, Some(50));
    assert_eq!(analysis.threshold, Some(5));
    let hooks = analysis.webhooks.as_ref().expect("webhooks");
    assert_eq!(hooks[0].type_, Some(HookType::PreRollout));
    assert_eq!(hooks[1].type_, Some(HookType::Rollout));
    assert_eq!(typed.spec.provider, None::<Provider>);
    ns.delete(&client).await;
}

#[tokio::test]
async fn invalid_canaries_are_rejected_naming_the_field() {
    let cp = control_plane();
    cp.install_crds();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, "invalid-canaries").await;
    let api = canaries(client.clone(), &ns.name);

    type Mutation = fn(&mut Value);
    let cases: [(&str, Mutation, &[&str]); 6] = [
        (
            "no targetRef",
            |c| drop(c["spec"].as_object_mut().map(|s| s.remove("targetRef"))),
            &["spec.targetRef", "Required"],
        ),
        (
            "interval `1 minute`",
            |c| c["spec"]["analysis"]["interval"] = json!("1 minute"),
            &["spec.analysis.interval", "^[0-9]+(m|s)"],
        ),
        (
            "stepWeight and iterations",
            |c| c["spec"]["analysis"]["iterations"] = json!(10),
            &["spec.analysis", "oneOf"],
        ),
        (
            "maxWeight 150",
            |c| c["spec"]["analysis"]["maxWeight"] = json!(150),
            &["spec.analysis.maxWeight", "less than or equal to 100"],
        ),
        (
            "unknown provider",
            |c| c["spec"]["provider"] = json!("nginx-plus"),
            &["spec.provider", "Unsupported value: \"nginx-plus\""],
        ),
        (
            "unknown webhook type",
            |c| c["spec"]["analysis"]["webhooks"][0]["type"] = json!("pre-flight"),
            &[
                "spec.analysis.webhooks",
                "type",
                "Unsupported value: \"pre-flight\"",
            ],
        ),
    ];
    for (i, (case, mutate, expected)) in cases.iter().enumerate() {
        let mut manifest = linkerd_tutorial_canary(&ns.name);
        manifest["metadata"]["name"] = json!(format!("invalid-{i}"));
        mutate(&mut manifest);
        let object: DynamicObject = serde_json::from_value(manifest).expect("dynamic object");
        let error = match api.create(&PostParams::default(), &object).await {
            Ok(_) => panic!("{case}: the API server accepted an invalid Canary"),
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{case}: {status:?}");
                status.message
            }
            Err(other) => panic!("{case}: unexpected error {other}"),
        };
        for needle in *expected {
            assert!(
                error.contains(needle),
                "{case}: {needle:?} not in the server's message:\n{error}"
            );
        }
    }
    ns.delete(&client).await;
}

#[tokio::test]
async fn kubectl_explain_shows_the_field_docs() {
    let cp = control_plane();
    cp.install_crds();
    // The API server publishes CRD schemas to OpenAPI a moment after they are established.
    let text = eventually(
        "kubectl explain to show the CRD docs",
        Duration::from_secs(60),
        || {
            let (ok, out, _) = cp.kubectl(&["explain", "canary.spec.analysis.stepWeight"], None);
            (ok && out.contains("DESCRIPTION")).then_some(out)
        },
    );
    let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("Percentage of traffic added to the canary at each successful step"),
        "{text}"
    );
    let gitops = cp.kubectl_ok(&["explain", "canary.spec.gitops.failurePolicy"], None);
    let words = gitops.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("holds the rollout at its current step"),
        "{gitops}"
    );
}
