//! The Git writer with a namespace of many canaries stepping at once: their outboxes are read
//! with one list instead of one get each, or not read at all when the jobs carry the canaries
//! as their status writes returned them; their commits go to the cache clone as one pack, and
//! every record lands on the remote once, in a repository `git fsck` accepts.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use flaggit::api::{Canary, CanaryService, CanarySpec, TargetRef};
use flaggit::gitops::Remote;
use flaggit::gitops::source::Source;
use flaggit::gitops::writer::{Job, Settings, Writer};

use crate::git_remote::{BareRepo, GitDaemon, TempDir, git};
use crate::support::{TestNamespace, control_plane};

/// More canaries than the writer reads one by one in a namespace.
const CANARIES: usize = 80;

fn canary(name: &str) -> Canary {
    Canary::new(
        name,
        CanarySpec {
            target_ref: TargetRef {
                api_version: "apps/v1".into(),
                kind: Default::default(),
                name: name.into(),
            },
            service: Some(CanaryService {
                port: 9898,
                ..Default::default()
            }),
            ..Default::default()
        },
    )
}

/// A Role in `namespace` named `name` that lets `user` do `verbs` on canaries and patch their
/// status, and nothing else.
fn role(namespace: &str, user: &str, name: &str, verbs: &[&str]) {
    let canaries = if verbs.is_empty() {
        String::new()
    } else {
        format!(
            "- {{apiGroups: [flagger.app], resources: [canaries], verbs: [{}]}}\n",
            verbs.join(", ")
        )
    };
    let yaml = format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: {name}, namespace: {namespace}}}
rules:
{canaries}- {{apiGroups: [flagger.app], resources: [canaries/status], verbs: [patch]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {name}, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {name}}}
subjects:
- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}
"
    );
    control_plane().kubectl_ok(&["apply", "-f", "-"], Some(&yaml));
}

/// A namespace of [`CANARIES`] canaries, a config repo served by `git daemon`, and a client
/// for a writer whose user has only the canary permissions `verbs` gives (see [`role`]).
struct World {
    client: kube::Client,
    namespace: TestNamespace,
    api: Api<Canary>,
    names: Vec<String>,
    repo: BareRepo,
    daemon: GitDaemon,
    cache: TempDir,
    as_writer: kube::Client,
    source: Source,
}

async fn world(prefix: &str, role_name: &str, verbs: &[&str]) -> World {
    flaggit::install_crypto_provider();
    let cp = control_plane();
    cp.install_crds();
    let client = cp.client().await;
    let namespace = TestNamespace::create(&client, prefix).await;
    let ns = namespace.name.clone();
    let api: Api<Canary> = Api::namespaced(client.clone(), &ns);
    let names: Vec<String> = (0..CANARIES).map(|i| format!("app-{i:03}")).collect();
    for name in &names {
        api.create(&PostParams::default(), &canary(name))
            .await
            .expect("create a canary");
    }
    let files = BTreeMap::from([("README.md", "the config repo\n")]);
    let repo = BareRepo::new(prefix, &files);
    let daemon = GitDaemon::start(&repo.root);
    let cache = TempDir::new(&format!("{prefix}-cache"));
    let user = format!("{ns}-writer");
    role(&ns, &user, role_name, verbs);
    let as_writer = cp
        .client_from(&cp.kubeconfig_as(&user, &format!("kubeconfig-{user}")))
        .await;
    let source = Source::ledger_only(
        Remote {
            url: daemon.url(&repo),
            branch: "main".into(),
        },
        None,
    );
    World {
        client,
        namespace,
        api,
        names,
        repo,
        daemon,
        cache,
        as_writer,
        source,
    }
}

#[tokio::test]
async fn a_namespace_of_many_canaries_is_read_with_one_list_and_its_records_land_once_in_one_pack() {
    // The writer may list the canaries but not get one: a writer that read the outboxes one
    // by one would be refused.
    let World {
        client,
        namespace,
        api,
        names,
        repo,
        daemon,
        cache,
        as_writer,
        source,
    } = world("writer-batch", "list-only", &["list"]).await;
    let ns = namespace.name.clone();
    let writer = Writer::new(
        as_writer.clone(),
        Settings {
            cache_dir: cache.path().to_path_buf(),
            batch_window: Duration::from_secs(2),
            ..Settings::default()
        },
    );
    match Api::<Canary>::namespaced(as_writer, &ns).get(&names[0]).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("the writer's user must not get a canary: {other:?}"),
    }
    // Every outbox first, then the writer told: all in one batch.
    futures::stream::iter(names.iter())
        .for_each_concurrent(16, |name| {
            let api = api.clone();
            async move {
                let record = json!({
                    "seq": 1, "kind": "Step", "revision": "flaggit1-r1", "phase": "Progressing",
                    "weight": 10, "time": "2026-01-01T00:00:00Z", "images": {"app": "app:1"},
                });
                let patch = json!({"status": {"gitops": {"lastRecord": 1, "pending": [record]}}});
                api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .expect("write the outbox");
            }
        })
        .await;
    for name in &names {
        writer.notify(Job {
            namespace: ns.clone(),
            name: name.clone(),
            source: source.clone(),
            upto: 1,
            canary: None,
        });
    }
    let pushed = |canary: &Canary| {
        canary
            .status
            .as_ref()
            .and_then(|s| s.gitops.as_ref())
            .and_then(|g| g.pushed_record)
            == Some(1)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let list = api.list(&Default::default()).await.expect("list the canaries");
        if list.items.iter().filter(|c| pushed(c)).count() == CANARIES {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "every record acknowledged within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Every record once, on top of the seed commit.
    let count: usize = git(&repo.path, &["rev-list", "--count", "main"])
        .trim()
        .parse()
        .expect("a count");
    assert_eq!(count, CANARIES + 1);
    git(&repo.path, &["fsck", "--strict", "--no-dangling"]);
    // The cache clone holds the batch in a pack, not one file per object.
    let objects = std::fs::read_dir(cache.path().join("write"))
        .expect("the write cache")
        .filter_map(Result::ok)
        .map(|clone| clone.path().join("objects"))
        .find(|objects| objects.exists())
        .expect("a cache clone");
    let loose: usize = std::fs::read_dir(&objects)
        .expect("objects")
        .filter_map(Result::ok)
        .filter(|dir| dir.file_name().len() == 2)
        .map(|dir| std::fs::read_dir(dir.path()).map(|d| d.count()).unwrap_or(0))
        .sum();
    assert!(loose < CANARIES, "{loose} loose objects for {CANARIES} commits");
    drop(daemon);
    namespace.delete(&client).await;
}

/// Writes record `seq` into the outbox of canary `name`; returns the canary as the API server
/// stored it.
async fn step(api: &Api<Canary>, name: &str, seq: i64) -> Canary {
    let record = json!({
        "seq": seq, "kind": "Step", "revision": format!("flaggit1-r{seq}"), "phase": "Progressing",
        "weight": 10 * seq, "time": "2026-01-01T00:00:00Z", "images": {"app": format!("app:{seq}")},
    });
    let patch = json!({"status": {"gitops": {"lastRecord": seq, "pending": [record]}}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("write the outbox")
}

/// Waits until every canary of `api` says record `seq` is on the remote.
async fn all_pushed(api: &Api<Canary>, count: usize, seq: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let list = api.list(&Default::default()).await.expect("list the canaries");
        let pushed = list
            .items
            .iter()
            .filter(|c| {
                c.status
                    .as_ref()
                    .and_then(|s| s.gitops.as_ref())
                    .and_then(|g| g.pushed_record)
                    >= Some(seq)
            })
            .count();
        if pushed == count {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "record {seq} of every canary acknowledged within 120 s ({pushed} of {count})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn jobs_that_carry_their_canary_are_written_without_reading_it_and_stale_copies_add_nothing() {
    // The writer may patch the canaries' status, but neither get nor list them: every job
    // must bring its canary.
    let World {
        client,
        namespace,
        api,
        names,
        repo,
        daemon,
        cache,
        as_writer,
        source,
    } = world("writer-copies", "patch-only", &[]).await;
    let ns = namespace.name.clone();
    match Api::<Canary>::namespaced(as_writer.clone(), &ns)
        .list(&Default::default())
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("the writer's user must not list the canaries: {other:?}"),
    }
    let writer = Writer::new(
        as_writer,
        Settings {
            cache_dir: cache.path().to_path_buf(),
            ..Settings::default()
        },
    );
    let mut first = Vec::new();
    for name in &names {
        let stored = step(&api, name, 1).await;
        first.push(stored.clone());
        writer.notify(Job::with_snapshot(source.clone(), 1, stored));
    }
    all_pushed(&api, CANARIES, 1).await;
    // The copies of record 1 again, older than the push (their status says nothing is
    // pushed), and then record 2 with fresh copies: only record 2 is written.
    for stored in first {
        writer.notify(Job::with_snapshot(source.clone(), 1, stored));
    }
    for name in &names {
        let stored = step(&api, name, 2).await;
        writer.notify(Job::with_snapshot(source.clone(), 2, stored));
    }
    all_pushed(&api, CANARIES, 2).await;
    let count: usize = git(&repo.path, &["rev-list", "--count", "main"])
        .trim()
        .parse()
        .expect("a count");
    assert_eq!(
        count,
        2 * CANARIES + 1,
        "every record once, on top of the seed commit"
    );
    git(&repo.path, &["fsck", "--strict", "--no-dangling"]);
    let batches = writer.stats().batches();
    assert!(!batches.is_empty());
    assert!(
        batches.iter().all(|b| b.outbox_reads == 0),
        "no outbox read from the API server: {batches:?}"
    );
    drop(daemon);
    namespace.delete(&client).await;
}
