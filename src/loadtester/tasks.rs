//! Load tester tasks: which program a webhook's `metadata` asks for, running it bounded in
//! time and in memory, and the de-duplication of the asynchronous `cmd` tasks.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes of a command's combined output kept in memory: the last ones, where tools such as
/// `hey` print their summary.
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;

/// The task types of Flagger's load tester that flaggit runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskType {
    /// `sh -c <cmd>`, started in the background; the call answers 202 at once.
    Cmd,
    /// `bash -c <cmd>`, waited for: 200 on exit status 0, else 500.
    Bash,
    /// `kubectl <cmd split on whitespace>`, waited for.
    Kubectl,
    /// `helm <cmd split on whitespace>`, waited for (Helm 3).
    Helm,
    /// Flagger's name for Helm 3: runs `helm` as well.
    Helmv3,
}

impl TaskType {
    /// Every type, in the order error messages list them.
    pub const ALL: [TaskType; 5] = [Self::Cmd, Self::Bash, Self::Kubectl, Self::Helm, Self::Helmv3];

    /// The name in `metadata.type`; `cmd` is also the default when it is missing.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cmd => "cmd",
            Self::Bash => "bash",
            Self::Kubectl => "kubectl",
            Self::Helm => "helm",
            Self::Helmv3 => "helmv3",
        }
    }

    /// The type named `name`, exactly as Flagger spells it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether the HTTP call waits for the command (all but `cmd`).
    pub fn is_blocking(self) -> bool {
        self != Self::Cmd
    }
}

/// Why a webhook's metadata does not make a task: the answer is a 400 with this message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    #[error("metadata not found in payload: set the webhook's metadata.cmd (and metadata.type)")]
    NoMetadata,
    #[error("unknown task type {found:?}: metadata.type must be one of {known}")]
    UnknownType { found: String, known: String },
    #[error("cmd not found in metadata: set metadata.cmd to the command to run")]
    NoCommand,
    #[error("metadata.cmd is empty: a {kind} task needs at least one argument")]
    EmptyCommand { kind: &'static str },
}

/// One command to run, built from a webhook payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub kind: TaskType,
    /// `<name>.<namespace>` of the canary, as Flagger keys tasks and logs.
    pub canary: String,
    /// `metadata.cmd` as sent.
    pub command: String,
    pub program: &'static str,
    pub args: Vec<String>,
    /// `metadata.returnCmdOutput`: a blocking task answers with the output.
    pub return_output: bool,
    /// `metadata.logCmdOutput`, or the server's default when unset.
    pub log_output: bool,
}

impl Task {
    /// The task `metadata` asks for. `log_default` applies when `logCmdOutput` is unset.
    ///
    /// `cmd` runs through `sh -c` and `bash` through `bash -c`, as in Flagger, so pipes and
    /// variables in existing webhooks keep working; `kubectl` and `helm` split the command
    /// on whitespace and run without a shell (Flagger's `strings.Fields`).
    pub fn from_metadata(
        canary: String,
        metadata: &BTreeMap<String, String>,
        log_default: bool,
    ) -> Result<Self, TaskError> {
        if metadata.is_empty() {
            return Err(TaskError::NoMetadata);
        }
        let kind = match metadata.get("type").map(String::as_str) {
            None => TaskType::Cmd,
            Some(name) => TaskType::parse(name).ok_or_else(|| TaskError::UnknownType {
                found: name.to_string(),
                known: known_types(),
            })?,
        };
        let command = metadata.get("cmd").ok_or(TaskError::NoCommand)?.clone();
        let (program, args) = match kind {
            TaskType::Cmd => ("sh", vec!["-c".to_string(), command.clone()]),
            TaskType::Bash => ("bash", vec!["-c".to_string(), command.clone()]),
            TaskType::Kubectl => ("kubectl", fields(&command)),
            TaskType::Helm | TaskType::Helmv3 => ("helm", fields(&command)),
        };
        if command.trim().is_empty() {
            return Err(TaskError::EmptyCommand { kind: kind.name() });
        }
        Ok(Self {
            kind,
            canary,
            program,
            args,
            return_output: metadata.get("returnCmdOutput").and_then(|v| parse_bool(v)) == Some(true),
            log_output: metadata
                .get("logCmdOutput")
                .and_then(|v| parse_bool(v))
                .unwrap_or(log_default),
            command,
        })
    }

    /// What makes two `cmd` tasks the same: the canary and the command text (Flagger's hash).
    pub fn dedup_key(&self) -> String {
        format!("{}\n{}", self.canary, self.command)
    }
}

/// "cmd, bash, kubectl, helm, helmv3".
pub fn known_types() -> String {
    TaskType::ALL.map(TaskType::name).join(", ")
}

fn fields(command: &str) -> Vec<String> {
    command.split_whitespace().map(str::to_string).collect()
}

/// Go's `strconv.ParseBool`, which Flagger uses for metadata flags; None when it fails.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The last `limit` bytes of a stream, counting what was dropped before them.
#[derive(Debug)]
pub struct BoundedOutput {
    limit: usize,
    kept: VecDeque<u8>,
    dropped: u64,
}

impl BoundedOutput {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            kept: VecDeque::new(),
            dropped: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.kept.extend(bytes);
        let excess = self.kept.len().saturating_sub(self.limit);
        if excess > 0 {
            self.kept.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    /// The kept bytes as text, after a line saying how many came before them, if any.
    pub fn text(&self) -> String {
        let (a, b) = self.kept.as_slices();
        let kept = String::from_utf8_lossy(&[a, b].concat()).into_owned();
        if self.dropped == 0 {
            kept
        } else {
            format!("[{} earlier bytes of output left out]\n{kept}", self.dropped)
        }
    }
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    Exited(ExitStatus),
    TimedOut(Duration),
    /// It could not start (program not found, not executable).
    NotStarted(String),
}

/// A finished command: how it ended and its combined stdout and stderr (bounded).
#[derive(Clone, Debug)]
pub struct Outcome {
    pub ending: Ending,
    pub output: String,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        matches!(self.ending, Ending::Exited(status) if status.success())
    }

    /// Why it failed, for logs and the 500 answer: the ending, then the output.
    pub fn failure(&self, command: &str) -> String {
        let why = match &self.ending {
            Ending::Exited(status) => format!("exited with {status}"),
            Ending::TimedOut(limit) => format!("was killed after the exec timeout of {limit:?}"),
            Ending::NotStarted(reason) => format!("could not start: {reason}"),
        };
        format!("command {command:?} {why}: {}", self.output.trim_end())
    }
}

/// Runs `task` to its end or until `timeout`, when its whole process group is killed.
pub async fn run(task: &Task, timeout: Duration) -> Outcome {
    let mut command = tokio::process::Command::new(task.program);
    command
        .args(&task.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout also stops what `sh -c` started.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            return Outcome {
                ending: Ending::NotStarted(format!("{}: {e}", task.program)),
                output: String::new(),
            };
        }
    };
    let output = Arc::new(Mutex::new(BoundedOutput::new(MAX_OUTPUT_BYTES)));
    let mut readers = [
        child
            .stdout
            .take()
            .map(|s| tokio::spawn(collect(s, output.clone()))),
        child
            .stderr
            .take()
            .map(|s| tokio::spawn(collect(s, output.clone()))),
    ];
    let finished = tokio::time::timeout(timeout, async {
        let status = child.wait().await;
        // The readers end at EOF, once every process holding the pipes has exited.
        for reader in readers.iter_mut().flatten() {
            let _ = reader.await;
        }
        status
    })
    .await;
    let ending = match finished {
        Ok(Ok(status)) => Ending::Exited(status),
        Ok(Err(e)) => Ending::NotStarted(format!("waiting for {}: {e}", task.program)),
        Err(_) => {
            kill_group(&mut child).await;
            Ending::TimedOut(timeout)
        }
    };
    for reader in readers.into_iter().flatten() {
        reader.abort();
    }
    let output = output.lock().map(|o| o.text()).unwrap_or_default();
    Outcome { ending, output }
}

async fn collect(mut stream: impl AsyncRead + Unpin, into: Arc<Mutex<BoundedOutput>>) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        if let Ok(mut output) = into.lock() {
            output.push(&buf[..n]);
        }
    }
}

/// SIGKILLs the child's process group (its id, from `process_group(0)`), then the child.
async fn kill_group(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = tokio::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .status()
            .await;
    }
    let _ = child.kill().await;
}

/// The `cmd` tasks running now, by [`Task::dedup_key`].
#[derive(Clone, Debug, Default)]
pub struct Running {
    keys: Arc<Mutex<HashSet<String>>>,
}

impl Running {
    /// Claims `key`; None when a task with that key is running already.
    pub fn claim(&self, key: String) -> Option<Claim> {
        let mut keys = self.keys.lock().ok()?;
        keys.insert(key.clone()).then(|| Claim {
            keys: self.keys.clone(),
            key,
        })
    }

    pub fn len(&self) -> usize {
        self.keys.lock().map(|k| k.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A running task's place in [`Running`], given back when dropped.
#[derive(Debug)]
pub struct Claim {
    keys: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.remove(&self.key);
        }
    }
}
