//! The controller's side of commands from the command line (`crate::steer`): watches the
//! command requests, asks RBAC whether their requester may, judges them against the release
//! (`steer::judge`), keeps what they hold in `status.steering` (or, with a release pull
//! request, in its review, where `/approve` and `/pause` keep theirs), and answers each
//! request with an Approved or Denied condition once the status is written.

use std::collections::BTreeMap;

use futures::{Stream, StreamExt};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use crate::api::{
    ApprovalGate, Canary, CanaryPhase, CanaryStatus, PendingRecord, PullRequestApproval, PullRequestCommand,
    SteeringCommand,
};
use crate::rollout::{Gate, GateAnswer};
use crate::steer::judge::{self, Change};
use crate::steer::request::{self, Command, Requester};

/// Commands kept in the status (older ones are in the Git records).
const MAX_COMMANDS: usize = 50;

/// The command requests the controller sees.
pub(super) struct Requests {
    store: Store<CertificateSigningRequest>,
}

/// Watches the command requests; the stream names the canary of each request not yet answered.
/// Requests are cluster-scoped; a controller confined to `namespace` watches only those
/// labelled with it (the command line labels every request with its canary's namespace).
pub(super) fn watch(
    client: &Client,
    namespace: Option<&str>,
) -> (Requests, impl Stream<Item = ObjectRef<Canary>> + Send + 'static) {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let (store, writer) = reflector::store();
    let mut config = watcher::Config::default().fields(&format!("spec.signerName={}", request::SIGNER));
    if let Some(namespace) = namespace {
        config = config.labels(&format!("{}={namespace}", request::NAMESPACE_LABEL));
    }
    let canaries = watcher(api, config)
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .filter_map(|event| {
            futures::future::ready(match event {
                Ok(csr) if request::verdict(&csr).is_none() => {
                    request::parse(&csr).ok().map(|(command, _)| {
                        ObjectRef::new(&command.name).within(&command.namespace)
                    })
                }
                Ok(_) => None,
                Err(error) => {
                    tracing::warn!(error = %error, "cannot watch command requests (certificatesigningrequests); retrying");
                    None
                }
            })
        });
    (Requests { store }, canaries)
}

/// A verdict to write on a request once the status holding its effect is written.
pub(super) struct Answer {
    request: String,
    verdict: Result<String, String>,
}

/// Judges the unanswered requests for `canary`, applying what they change to `status`.
/// `review` says whether the canary's gates go through a release pull request.
pub(super) async fn sync(
    requests: &Requests,
    client: &Client,
    canary: &Canary,
    status: &mut CanaryStatus,
    review: bool,
) -> Vec<Answer> {
    let namespace = canary.namespace().unwrap_or_default();
    let name = canary.name_any();
    let phase = status.phase.unwrap_or(CanaryPhase::Initializing);
    let weight = status.canary_weight.unwrap_or(0);
    let revision = status.last_applied_spec.clone().unwrap_or_default();
    let mut pending: Vec<_> = requests
        .store
        .state()
        .into_iter()
        .filter(|csr| request::verdict(csr).is_none())
        .filter_map(|csr| {
            let parsed = request::parse(&csr);
            let ours = match &parsed {
                Ok((command, _)) => command.namespace == namespace && command.name == name,
                Err(_) => false,
            };
            ours.then_some((csr, parsed))
        })
        .collect();
    pending.sort_by_key(|(csr, _)| csr.metadata.creation_timestamp.clone().map(|t| t.0));
    if pending.is_empty() && status.steering.is_none() {
        return Vec::new();
    }
    let steering = status.steering.get_or_insert_with(Default::default);
    judge::expire(steering, phase, &revision);
    let mut answers = Vec::new();
    for (csr, parsed) in pending {
        let request = csr.name_any();
        if let Some(done) = status
            .steering
            .as_ref()
            .and_then(|s| s.commands.iter().find(|c| c.request == request))
        {
            // Judged before; only the answer was not written.
            let verdict = if done.accepted {
                Ok(done.outcome.clone())
            } else {
                Err(done.outcome.clone())
            };
            answers.push(Answer { request, verdict });
            continue;
        }
        let Ok((command, requester)) = parsed else {
            continue;
        };
        let verdict = match allowed(client, &requester, &command).await {
            Ok(true) => {
                carry_out(
                    client,
                    canary,
                    status,
                    &command,
                    &requester.username,
                    phase,
                    weight,
                    review,
                )
                .await
            }
            Ok(false) => Err(format!(
                "{} may not {} canary {namespace}/{name}: RBAC grants no verb `{}` on canaries.flagger.app in namespace {namespace} (bind the ClusterRole flaggit-canary-operator there)",
                requester.username, command.verb, command.verb
            )),
            Err(error) => {
                tracing::warn!(request = %request, error = %error, "cannot check the command's permission; retrying");
                continue;
            }
        };
        tracing::info!(user = %requester.username, command = %command.verb, accepted = verdict.is_ok(), outcome = %verdict.as_ref().unwrap_or_else(|e| e), "command from the command line");
        log(status, &request, &requester.username, &command, &verdict, review);
        answers.push(Answer { request, verdict });
    }
    answers
}

/// Whether RBAC lets `requester` give `command`: the verb on the canary, by SubjectAccessReview.
async fn allowed(client: &Client, requester: &Requester, command: &Command) -> Result<bool, kube::Error> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(requester.username.clone()),
            uid: requester.uid.clone(),
            groups: Some(requester.groups.clone()),
            extra: Some(requester.extra.clone()).filter(|e: &BTreeMap<_, _>| !e.is_empty()),
            resource_attributes: Some(ResourceAttributes {
                group: Some(crate::api::GROUP.into()),
                resource: Some("canaries".into()),
                verb: Some(command.verb.to_string()),
                namespace: Some(command.namespace.clone()),
                name: Some(command.name.clone()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Carries out an allowed command: Ok(what it does) or Err(why it cannot be done now).
#[allow(clippy::too_many_arguments)]
async fn carry_out(
    client: &Client,
    canary: &Canary,
    status: &mut CanaryStatus,
    command: &Command,
    user: &str,
    phase: CanaryPhase,
    weight: i32,
    review: bool,
) -> Result<String, String> {
    let bound: Vec<ApprovalGate> = canary
        .spec
        .gitops
        .as_ref()
        .and_then(|g| g.approvals.as_ref())
        .and_then(|a| a.gates.clone())
        .unwrap_or_default();
    let waiting = if review {
        super::review::waiting_gate(phase, &bound)
    } else {
        judge::waiting_gate(phase)
    };
    let (change, outcome) = judge::judge(command, user, phase, weight, waiting)?;
    let at = jiff::Timestamp::now().to_string();
    if change == Change::Retry {
        let id = format!("{}/{}", command.namespace, command.name);
        super::retry::request_retry(client.clone(), &id)
            .await
            .map_err(|e| format!("cannot request the retry: {e}"))?;
        return Ok(outcome);
    }
    let pull_request =
        status
            .gitops
            .as_mut()
            .filter(|_| review)
            .and_then(|g| match (&g.pull_request, g.review.as_mut()) {
                (Some(pr), Some(review)) if review.number == pr.number => Some(review),
                _ => None,
            });
    match pull_request {
        // The release pull request's own holds: `/approve`, `/pause` and these are one.
        Some(review) => match change {
            Change::Approve { gate, weight } => {
                let gate = judge::gate_name(gate).to_string();
                if !review
                    .approvals
                    .iter()
                    .any(|a| a.gate == gate && a.weight == weight && a.user == user)
                {
                    review.approvals.push(PullRequestApproval {
                        gate,
                        user: user.into(),
                        weight,
                        at,
                        source: judge::CLI_SOURCE.into(),
                        ..Default::default()
                    });
                }
            }
            Change::Rollback(reason) => review.rollback = Some(reason),
            Change::Pause => review.paused = true,
            Change::Resume => review.paused = false,
            Change::Retry => {}
        },
        None => judge::hold(
            status.steering.get_or_insert_with(Default::default),
            &change,
            user,
            &at,
        ),
    }
    Ok(outcome)
}

/// Keeps the verdict in `status.steering` (and the release pull request's command log).
fn log(
    status: &mut CanaryStatus,
    request: &str,
    user: &str,
    command: &Command,
    verdict: &Result<String, String>,
    review: bool,
) {
    let (accepted, outcome) = match verdict {
        Ok(what) => (true, what.clone()),
        Err(why) => (false, why.clone()),
    };
    let at = jiff::Timestamp::now().to_string();
    let steering = status.steering.get_or_insert_with(Default::default);
    steering.commands.push(SteeringCommand {
        request: request.into(),
        user: user.into(),
        command: command.verb.to_string(),
        accepted,
        outcome: outcome.clone(),
        at: at.clone(),
    });
    steering.judged_commands += 1;
    let excess = steering.commands.len().saturating_sub(MAX_COMMANDS);
    steering.commands.drain(..excess);
    if let Some(review) = status
        .gitops
        .as_mut()
        .filter(|_| review)
        .and_then(|g| g.review.as_mut())
    {
        // The pull request's log records it (and its status comment shows it).
        review.commands.push(PullRequestCommand {
            user: user.into(),
            command: format!("flaggit {}", command.verb),
            accepted,
            outcome,
            at,
        });
        review.judged_commands += 1;
        steering.recorded_commands = steering.judged_commands;
    }
}

/// The command line's holds on a gate, for canaries without a release pull request.
pub(super) fn answer_gate(status: &CanaryStatus, gate: Gate, answer: &mut GateAnswer) {
    if let Some(steering) = &status.steering {
        judge::answer_gate(steering, status.canary_weight.unwrap_or(0), gate, answer);
    }
}

/// Adds the commands judged since the last record to the first record of this decision.
pub(super) fn annotate(records: &mut [PendingRecord], status: &mut CanaryStatus) {
    let Some(steering) = status.steering.as_mut() else {
        return;
    };
    let unrecorded = (steering.judged_commands - steering.recorded_commands).max(0) as usize;
    let Some(first) = records.first_mut().filter(|_| unrecorded > 0) else {
        return;
    };
    let start = steering.commands.len().saturating_sub(unrecorded);
    first.commands.extend(steering.commands[start..].iter().map(|c| {
        let command = format!("flaggit {}", c.command);
        crate::gitops::message::command_line(&c.user, &command, c.accepted, &c.outcome)
    }));
    steering.recorded_commands = steering.judged_commands;
}

/// Writes the verdicts on their requests, for the command line waiting on them.
pub(super) async fn answer(client: &Client, answers: Vec<Answer>) {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    for Answer { request, verdict } in answers {
        let (type_, reason, message) = match verdict {
            Ok(what) => ("Approved", "Accepted", what),
            Err(why) => ("Denied", "Refused", why),
        };
        let patch = serde_json::json!({"status": {"conditions": [{
            "type": type_,
            "status": "True",
            "reason": reason,
            "message": message,
            "lastUpdateTime": jiff::Timestamp::now().to_string(),
        }]}});
        if let Err(error) = api
            .patch_subresource(
                "approval",
                &request,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::warn!(request = %request, error = %error, "cannot answer the command request; answering at the next reconcile");
        }
    }
}
