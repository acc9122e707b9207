//! Unit tests of the load tester's pure parts: task building, flags, gates' keys and data,
//! bounded output; plus the command runner on real short processes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Parser;

use super::gates::{OPEN, open_in, valid_key, with_gate};
use super::*;

fn metadata(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn task(pairs: &[(&str, &str)]) -> Result<Task, TaskError> {
    Task::from_metadata("podinfo.test".into(), &metadata(pairs), false)
}

#[test]
fn a_missing_type_is_cmd_through_sh() {
    let t = task(&[("cmd", "hey -z 1m http://podinfo-canary.test:9898/")]).expect("task");
    assert_eq!(t.kind, TaskType::Cmd);
    assert_eq!(t.program, "sh");
    assert_eq!(t.args, ["-c", "hey -z 1m http://podinfo-canary.test:9898/"]);
    assert!(!t.kind.is_blocking());
}

#[test]
fn bash_runs_through_bash_and_blocks() {
    let t = task(&[("type", "bash"), ("cmd", "curl -s x | grep ok")]).expect("task");
    assert_eq!(
        (t.program, t.args.as_slice()),
        ("bash", &["-c".to_string(), "curl -s x | grep ok".into()][..])
    );
    assert!(t.kind.is_blocking());
}

#[test]
fn kubectl_and_helm_split_on_whitespace_without_a_shell() {
    let k = task(&[("type", "kubectl"), ("cmd", "  get  pods -n test ")]).expect("task");
    assert_eq!(k.program, "kubectl");
    assert_eq!(k.args, ["get", "pods", "-n", "test"]);
    for name in ["helm", "helmv3"] {
        let h = task(&[("type", name), ("cmd", "test podinfo --cleanup")]).expect("task");
        assert_eq!(h.program, "helm", "{name}");
        assert_eq!(h.args, ["test", "podinfo", "--cleanup"]);
        assert!(h.kind.is_blocking());
    }
}

#[test]
fn an_unknown_type_names_it_and_the_known_ones() {
    let err = task(&[("type", "ngrinder"), ("cmd", "x")]).expect_err("unknown");
    assert_eq!(
        err,
        TaskError::UnknownType {
            found: "ngrinder".into(),
            known: "cmd, bash, kubectl, helm, helmv3".into()
        }
    );
    let message = err.to_string();
    assert!(message.contains("\"ngrinder\"") && message.contains("cmd, bash, kubectl, helm, helmv3"));
    // Type names are case-sensitive, as in Flagger.
    assert!(matches!(
        task(&[("type", "Bash"), ("cmd", "x")]),
        Err(TaskError::UnknownType { .. })
    ));
}

#[test]
fn missing_metadata_or_cmd_is_refused() {
    assert_eq!(task(&[]), Err(TaskError::NoMetadata));
    assert_eq!(task(&[("type", "bash")]), Err(TaskError::NoCommand));
    assert_eq!(
        task(&[("type", "kubectl"), ("cmd", "   ")]),
        Err(TaskError::EmptyCommand { kind: "kubectl" })
    );
}

#[test]
fn output_flags_follow_go_parse_bool_and_the_server_default() {
    let t = task(&[("cmd", "x"), ("returnCmdOutput", "True"), ("logCmdOutput", "0")]).expect("task");
    assert!(t.return_output);
    assert!(!t.log_output);
    let t = task(&[("cmd", "x"), ("returnCmdOutput", "yes")]).expect("task");
    assert!(!t.return_output, "Go's ParseBool refuses yes: false");
    let on = Task::from_metadata("a.b".into(), &metadata(&[("cmd", "x")]), true).expect("task");
    assert!(on.log_output, "the server default applies when unset");
    let off = Task::from_metadata(
        "a.b".into(),
        &metadata(&[("cmd", "x"), ("logCmdOutput", "false")]),
        true,
    )
    .expect("task");
    assert!(!off.log_output, "the webhook overrides the default");
}

#[test]
fn parse_bool_is_gos() {
    for yes in ["1", "t", "T", "TRUE", "true", "True"] {
        assert_eq!(parse_bool(yes), Some(true), "{yes}");
    }
    for no in ["0", "f", "F", "FALSE", "false", "False"] {
        assert_eq!(parse_bool(no), Some(false), "{no}");
    }
    for bad in ["", "yes", "tRUE", "2"] {
        assert_eq!(parse_bool(bad), None, "{bad}");
    }
}

#[test]
fn dedup_key_is_canary_and_command() {
    let a = task(&[("cmd", "hey -z 1m x")]).expect("task");
    let same = task(&[("cmd", "hey -z 1m x"), ("logCmdOutput", "true")]).expect("task");
    let other_cmd = task(&[("cmd", "hey -z 2m x")]).expect("task");
    let other_canary =
        Task::from_metadata("other.test".into(), &metadata(&[("cmd", "hey -z 1m x")]), false).expect("task");
    assert_eq!(a.dedup_key(), same.dedup_key());
    assert_ne!(a.dedup_key(), other_cmd.dedup_key());
    assert_ne!(a.dedup_key(), other_canary.dedup_key());
}

#[test]
fn running_claims_are_exclusive_until_dropped() {
    let running = Running::default();
    let claim = running.claim("k".into()).expect("first claim");
    assert!(running.claim("k".into()).is_none());
    let other = running.claim("j".into()).expect("another key");
    assert_eq!(running.len(), 2);
    drop(claim);
    assert!(running.claim("k".into()).is_some());
    drop(other);
    assert!(running.is_empty());
}

#[test]
fn bounded_output_keeps_the_tail_and_says_what_it_dropped() {
    let mut out = BoundedOutput::new(8);
    out.push(b"abc");
    assert_eq!(out.text(), "abc");
    out.push(b"defghij");
    assert_eq!(out.text(), "[2 earlier bytes of output left out]\ncdefghij");
    out.push(b"0123456789");
    assert_eq!(out.text(), "[12 earlier bytes of output left out]\n23456789");
}

#[test]
fn gate_keys_are_flaggers() {
    assert_eq!(gate_key(GateKind::Approval, "podinfo", "test"), "podinfo.test");
    assert_eq!(
        gate_key(GateKind::Rollback, "podinfo", "test"),
        "rollback.podinfo.test"
    );
    assert!(valid_key("rollback.podinfo.test"));
    assert!(!valid_key("a/b.test"));
    assert!(!valid_key(""));
    assert!(!valid_key(&"a".repeat(254)));
}

#[test]
fn gate_data_opens_and_closes_one_key_and_keeps_the_others() {
    let data = with_gate(None, "podinfo.test", true);
    assert_eq!(data, metadata(&[("podinfo.test", OPEN)]));
    let data = with_gate(Some(data), "rollback.podinfo.test", true);
    let data = with_gate(Some(data), "podinfo.test", false);
    assert_eq!(data, metadata(&[("rollback.podinfo.test", OPEN)]));
    let mut foreign = data.clone();
    foreign.insert("note".into(), "kept".into());
    let open = open_in(Some(&foreign));
    assert_eq!(open.into_iter().collect::<Vec<_>>(), ["rollback.podinfo.test"]);
    assert!(open_in(None).is_empty());
}

#[tokio::test]
async fn in_memory_gates_start_closed_and_toggle() {
    let gates = Gates::in_memory();
    assert!(!gates.is_open("podinfo.test"));
    gates.set("podinfo.test", true).await.expect("open");
    assert!(gates.is_open("podinfo.test"));
    assert!(!gates.is_open("rollback.podinfo.test"));
    gates.set("podinfo.test", false).await.expect("close");
    assert!(gates.open_gates().is_empty());
}

#[test]
fn go_style_flags_become_long_flags() {
    let args = |list: &[&str]| go_style_args(list.iter().map(|s| s.to_string()));
    assert_eq!(
        args(&[
            "./loadtester",
            "-port=8080",
            "-log-level=info",
            "-timeout",
            "1h",
            "-h"
        ]),
        [
            "./loadtester",
            "--port=8080",
            "--log-level=info",
            "--timeout",
            "1h",
            "-h"
        ]
    );
    assert_eq!(
        args(&["x", "--port", "9090", "-1"]),
        ["x", "--port", "9090", "-1"]
    );
    assert_eq!(
        args(&["x", "-10", "-5s"]),
        ["x", "-10", "-5s"],
        "values are not flags"
    );
    let config = Config::parse_from(args(&[
        "flaggit-loadtester",
        "-port=9090",
        "-timeout=10m",
        "-namespace-regexp=^test-",
        "-log-cmd-output",
    ]));
    assert_eq!(config.port, 9090);
    assert_eq!(config.timeout, Duration::from_secs(600));
    assert_eq!(config.namespace_regexp.as_deref(), Some("^test-"));
    assert!(config.log_cmd_output);
}

#[test]
fn config_defaults_and_refusals() {
    let config = Config::try_parse_from(["flaggit-loadtester"]).expect("defaults");
    assert_eq!(config.port, 8080);
    assert_eq!(config.timeout, Duration::from_secs(3600));
    assert!(!config.log_cmd_output);
    let config = Config::try_parse_from(["x", "--log-cmd-output=false"]).expect("explicit false");
    assert!(!config.log_cmd_output);
    assert!(Config::try_parse_from(["x", "--timeout", "0s"]).is_err());
    assert!(Config::try_parse_from(["x", "--timeout", "soon"]).is_err());
}

#[test]
fn errors_name_the_fix() {
    let e = Error::SaveGates {
        name: "gates".into(),
        namespace: "tester".into(),
        reason: "forbidden".into(),
    };
    assert!(e.to_string().contains("get, create and update on configmaps"));
    assert_eq!(e.category(), "SaveGates");
    assert_eq!(Error::GateNamespaceMissing.category(), "InvalidLoadTesterFlags");
}

fn runnable(program: &'static str, args: &[&str]) -> Task {
    Task {
        kind: TaskType::Bash,
        canary: "podinfo.test".into(),
        command: args.join(" "),
        program,
        args: args.iter().map(|s| s.to_string()).collect(),
        return_output: true,
        log_output: false,
    }
}

#[tokio::test]
async fn run_collects_stdout_and_stderr_and_the_exit_status() {
    let ok = tasks::run(
        &runnable("sh", &["-c", "echo out; echo err >&2"]),
        Duration::from_secs(10),
    )
    .await;
    assert!(ok.succeeded(), "{ok:?}");
    assert!(
        ok.output.contains("out\n") && ok.output.contains("err\n"),
        "{:?}",
        ok.output
    );
    let failed = tasks::run(
        &runnable("sh", &["-c", "echo boom; exit 3"]),
        Duration::from_secs(10),
    )
    .await;
    assert!(!failed.succeeded());
    let message = failed.failure("exit 3");
    assert!(
        message.contains("exit status: 3") && message.contains("boom"),
        "{message}"
    );
}

#[tokio::test]
async fn run_kills_the_whole_group_at_the_timeout() {
    let start = Instant::now();
    // The background sleep holds the pipes: only a group kill ends it in time.
    let outcome = tasks::run(
        &runnable("sh", &["-c", "sleep 30 & echo started; sleep 30"]),
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(outcome.ending, Ending::TimedOut(Duration::from_millis(500)));
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    assert!(outcome.failure("x").contains("exec timeout"));
}

#[tokio::test]
async fn run_reports_a_missing_program() {
    let outcome = tasks::run(&runnable("flaggit-no-such-program", &[]), Duration::from_secs(5)).await;
    assert!(matches!(outcome.ending, Ending::NotStarted(_)), "{outcome:?}");
    assert!(outcome.failure("x").contains("could not start"));
}

#[tokio::test]
async fn run_bounds_the_output_in_memory() {
    let outcome = tasks::run(
        &runnable("sh", &["-c", "head -c 600000 /dev/zero | tr '\\0' a; echo END"]),
        Duration::from_secs(10),
    )
    .await;
    assert!(outcome.succeeded());
    assert!(outcome.output.len() < MAX_OUTPUT_BYTES + 100);
    assert!(
        outcome.output.starts_with("[337860 earlier bytes"),
        "{}",
        &outcome.output[..60]
    );
    assert!(outcome.output.ends_with("aEND\n"));
}
