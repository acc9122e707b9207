//! Test git remotes on loopback, started by the tests: bare repositories seeded with the git
//! CLI, served by `git daemon` (git://), by `git http-backend` behind a small HTTP/1.1 server
//! with Basic auth (http://), and by `sshd` with generated keys (ssh://). Every process is
//! killed on Drop.

#![allow(dead_code)] // a harness: each test binary uses a part of it

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::support::free_port;

/// The author of the commits a "human" makes in the tests.
pub const HUMAN_NAME: &str = "Human Operator";
pub const HUMAN_EMAIL: &str = "human@example.com";

/// A directory removed on Drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "flaggit-{prefix}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the git CLI in `dir` as the human; panics with its output if it fails; returns stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let (ok, out, err) = git_try(dir, args);
    assert!(
        ok,
        "git {} in {} failed:\n{out}\n{err}",
        args.join(" "),
        dir.display()
    );
    out
}

/// Runs the git CLI in `dir` as the human; returns (success, stdout, stderr).
pub fn git_try(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", HUMAN_NAME)
        .env("GIT_AUTHOR_EMAIL", HUMAN_EMAIL)
        .env("GIT_COMMITTER_NAME", HUMAN_NAME)
        .env("GIT_COMMITTER_EMAIL", HUMAN_EMAIL)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .expect("git runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A bare repository `<root>/<name>.git` whose default branch is `main`.
pub struct BareRepo {
    pub name: String,
    /// The directory the servers serve (holds `<name>.git`).
    pub root: PathBuf,
    /// The bare repository itself.
    pub path: PathBuf,
    _dir: TempDir,
}

impl BareRepo {
    /// A repository with one commit on `main` holding `files` (path -> content); an empty map
    /// makes an empty repository (no branch at all).
    pub fn new(name: &str, files: &BTreeMap<&str, &str>) -> Self {
        let dir = TempDir::new("bare");
        let root = dir.path().join("repos");
        let path = root.join(format!("{name}.git"));
        std::fs::create_dir_all(&path).expect("create bare dir");
        git(&path, &["init", "--bare", "--quiet", "--initial-branch=main"]);
        // The http-backend refuses pushes to repositories without this.
        git(&path, &["config", "http.receivepack", "true"]);
        let repo = Self {
            name: name.to_string(),
            root,
            path,
            _dir: dir,
        };
        if !files.is_empty() {
            let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, *c)).collect();
            repo.human_commit(&files, "seed");
        }
        repo
    }

    /// The head of `branch`, None when the branch does not exist.
    pub fn head(&self, branch: &str) -> Option<String> {
        let (ok, out, _) = git_try(
            &self.path,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/heads/{branch}"),
            ],
        );
        ok.then(|| out.trim().to_string())
    }

    /// The content of `path` at `rev`, None when there is no such file.
    pub fn show(&self, rev: &str, path: &str) -> Option<String> {
        let (ok, out, _) = git_try(&self.path, &["show", &format!("{rev}:{path}")]);
        ok.then_some(out)
    }

    /// A working clone of the repository (the git CLI's view of it), removed on Drop.
    pub fn clone_work(&self) -> TempDir {
        let work = TempDir::new("work");
        git(
            work.path(),
            &["clone", "--quiet", self.path.to_str().expect("utf-8 path"), "."],
        );
        work
    }

    /// A human commits `files` (path -> content) on `main` and pushes it to this repository
    /// directly, as someone editing the config repo would; returns the new head.
    pub fn human_commit(&self, files: &[(&str, &str)], message: &str) -> String {
        let work = TempDir::new("human");
        let w = work.path();
        if self.head("main").is_some() {
            git(
                w,
                &["clone", "--quiet", self.path.to_str().expect("utf-8 path"), "."],
            );
        } else {
            git(w, &["init", "--quiet", "--initial-branch=main"]);
            git(
                w,
                &["remote", "add", "origin", self.path.to_str().expect("utf-8 path")],
            );
        }
        for (path, content) in files {
            let file = w.join(path);
            std::fs::create_dir_all(file.parent().expect("file has a parent")).expect("mkdir");
            std::fs::write(&file, content).expect("write file");
        }
        git(w, &["add", "--all"]);
        git(w, &["commit", "--quiet", "-m", message]);
        // flaggit may push between the clone and the push: rebase and push again, as a person would.
        for _ in 0..20 {
            if git_try(w, &["push", "--quiet", "origin", "HEAD:refs/heads/main"]).0 {
                return git(w, &["rev-parse", "HEAD"]).trim().to_string();
            }
            git(w, &["pull", "--quiet", "--rebase", "origin", "main"]);
        }
        git(w, &["push", "--quiet", "origin", "HEAD:refs/heads/main"]);
        git(w, &["rev-parse", "HEAD"]).trim().to_string()
    }

    /// A commit on the existing `branch` writing `files`, authored by `author` (`Name
    /// <e-mail>`; the human when None), pushed as a person would; returns its id.
    pub fn commit_on(
        &self,
        branch: &str,
        author: Option<&str>,
        files: &[(&str, &str)],
        message: &str,
    ) -> String {
        let work = TempDir::new("pusher");
        let w = work.path();
        let origin = self.path.to_str().expect("utf-8 path");
        git(w, &["clone", "--quiet", "--branch", branch, origin, "."]);
        for (path, content) in files {
            let file = w.join(path);
            std::fs::create_dir_all(file.parent().expect("file has a parent")).expect("mkdir");
            std::fs::write(&file, content).expect("write file");
        }
        git(w, &["add", "--all"]);
        let mut commit = vec!["commit", "--quiet", "-m", message];
        let by;
        if let Some(author) = author {
            by = format!("--author={author}");
            commit.push(&by);
        }
        git(w, &commit);
        let target = format!("HEAD:refs/heads/{branch}");
        for _ in 0..20 {
            if git_try(w, &["push", "--quiet", "origin", &target]).0 {
                break;
            }
            git(w, &["pull", "--quiet", "--rebase", "origin", branch]);
        }
        git(w, &["rev-parse", "HEAD"]).trim().to_string()
    }

    /// `git log` of `rev`: one "author name|email|subject" line per commit, newest first.
    pub fn log(&self, rev: &str) -> Vec<String> {
        git(&self.path, &["log", "--format=%an|%ae|%s", rev])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Waits until something accepts connections on `port`.
fn wait_for_port(port: u16, what: &str) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `git daemon` serving every repository under a root, with pushes enabled.
pub struct GitDaemon {
    pub port: u16,
    root: PathBuf,
    child: Option<Child>,
}

impl GitDaemon {
    pub fn start(root: &Path) -> Self {
        let mut daemon = Self {
            port: free_port(),
            root: root.to_path_buf(),
            child: None,
        };
        daemon.restart();
        daemon
    }

    /// `git://127.0.0.1:PORT/<name>.git`
    pub fn url(&self, repo: &BareRepo) -> String {
        format!("git://127.0.0.1:{}/{}.git", self.port, repo.name)
    }

    /// The daemon's process id (the benchmark reads the CPU time of the `receive-pack`s it
    /// ran); None while it is stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the daemon (an outage); `restart` brings it back on the same port.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        // git-daemon itself, not the `git` wrapper: killing the wrapper leaves the daemon up.
        let exec_path = git(&self.root, &["--exec-path"]);
        let child = Command::new(Path::new(exec_path.trim()).join("git-daemon"))
            .arg("--reuseaddr")
            .arg("--export-all")
            .arg("--enable=receive-pack")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={}", self.port))
            .arg(format!("--base-path={}", self.root.display()))
            .arg(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon starts");
        self.child = Some(child);
        wait_for_port(self.port, "git daemon");
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One request the HTTP remote answered.
#[derive(Clone, Debug)]
pub struct HttpRequest {
    pub method: String,
    /// Path and query, e.g. `/config.git/info/refs?service=git-receive-pack`.
    pub target: String,
    /// The status answered.
    pub status: u16,
}

/// `git http-backend` as CGI behind an HTTP/1.1 server on loopback, with Basic auth.
pub struct HttpGit {
    pub port: u16,
    pub username: String,
    pub password: String,
    requests: Arc<Mutex<Vec<HttpRequest>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpGit {
    pub fn start(root: &Path, username: &str, password: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("local addr").port();
        let requests: Arc<Mutex<Vec<HttpRequest>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
        );
        let (root, user, log, stopping) = (
            root.to_path_buf(),
            username.to_string(),
            Arc::clone(&requests),
            Arc::clone(&stop),
        );
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (root, user, expected, log) =
                    (root.clone(), user.clone(), expected.clone(), Arc::clone(&log));
                std::thread::spawn(move || {
                    let _ = serve_http(stream, &root, &user, &expected, &log);
                });
            }
        });
        Self {
            port,
            username: username.to_string(),
            password: password.to_string(),
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT/<name>.git` (credentials go in `Credentials::Basic`).
    pub fn url(&self, repo: &BareRepo) -> String {
        format!("http://127.0.0.1:{}/{}.git", self.port, repo.name)
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<HttpRequest> {
        self.requests.lock().expect("request log").clone()
    }

    /// Pushes that reached `git-receive-pack` (the POST carrying the pack), authenticated.
    pub fn receive_packs(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.target.ends_with("/git-receive-pack") && r.status == 200)
            .count()
    }
}

impl Drop for HttpGit {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers the requests of one connection, one CGI run each.
fn serve_http(
    stream: TcpStream,
    root: &Path,
    user: &str,
    expected_auth: &str,
    log: &Mutex<Vec<HttpRequest>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut parts = request_line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or_default().to_string(),
            parts.next().unwrap_or_default().to_string(),
        );
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        let body = read_body(&mut reader, &headers)?;
        let record = |status| {
            log.lock().expect("request log").push(HttpRequest {
                method: method.clone(),
                target: target.clone(),
                status,
            });
        };
        if headers.get("authorization").map(String::as_str) != Some(expected_auth) {
            record(401);
            writer.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\n\r\n",
            )?;
            writer.flush()?;
            continue;
        }
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let mut cgi = Command::new("git")
            .arg("http-backend")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("GIT_PROJECT_ROOT", root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("REQUEST_METHOD", &method)
            .env("PATH_INFO", path)
            .env("QUERY_STRING", query)
            .env(
                "CONTENT_TYPE",
                headers.get("content-type").cloned().unwrap_or_default(),
            )
            .env("CONTENT_LENGTH", body.len().to_string())
            .env("REMOTE_USER", user)
            .env("REMOTE_ADDR", "127.0.0.1")
            .env(
                "GIT_PROTOCOL",
                headers.get("git-protocol").cloned().unwrap_or_default(),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut stdin = cgi.stdin.take().expect("stdin is piped");
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&body);
        });
        let mut output = Vec::new();
        cgi.stdout
            .take()
            .expect("stdout is piped")
            .read_to_end(&mut output)?;
        let _ = feeder.join();
        cgi.wait()?;
        let split = output
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| (i, i + 4))
            .or_else(|| output.windows(2).position(|w| w == b"\n\n").map(|i| (i, i + 2)))
            .unwrap_or((output.len(), output.len()));
        let cgi_headers = String::from_utf8_lossy(&output[..split.0]).into_owned();
        let mut status = "200 OK".to_string();
        let mut response = String::new();
        for line in cgi_headers.lines() {
            match line.split_once(':') {
                Some((name, value)) if name.eq_ignore_ascii_case("status") => {
                    status = value.trim().to_string()
                }
                Some(_) => response.push_str(&format!("{line}\r\n")),
                None => {}
            }
        }
        record(
            status
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
        );
        let payload = &output[split.1..];
        writer.write_all(
            format!(
                "HTTP/1.1 {status}\r\n{response}Content-Length: {}\r\n\r\n",
                payload.len()
            )
            .as_bytes(),
        )?;
        writer.write_all(payload)?;
        writer.flush()?;
    }
}

/// The request body, by Content-Length or `Transfer-Encoding: chunked` (libgit2's pushes).
fn read_body(reader: &mut impl BufRead, headers: &BTreeMap<String, String>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            if size == 0 {
                // Trailers, then the blank line.
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf)?;
        }
    }
    if let Some(length) = headers
        .get("content-length")
        .and_then(|l| l.parse::<usize>().ok())
    {
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    }
    Ok(body)
}

/// Generates an Ed25519 key pair without passphrase at `path` and `path.pub`; returns the
/// (private key text, public key line).
pub fn ssh_keygen(path: &Path) -> (String, String) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "flaggit-test", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen runs");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        std::fs::read_to_string(path).expect("read private key"),
        std::fs::read_to_string(path.with_extension("pub")).expect("read public key"),
    )
}

/// `sshd` on a loopback port with a generated host key, accepting one generated client key
/// for root.
pub struct Sshd {
    pub port: u16,
    /// The client's private key (OpenSSH text), for `Credentials::Ssh::identity`.
    pub private_key: String,
    /// `[127.0.0.1]:PORT <host key>`, for `Credentials::Ssh::known_hosts`.
    pub known_hosts: String,
    child: Child,
    dir: TempDir,
}

impl Sshd {
    pub fn start() -> Self {
        let dir = TempDir::new("sshd");
        let d = dir.path();
        ssh_keygen(&d.join("host_key"));
        ssh_keygen(&d.join("client_key"));
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).expect("authorized_keys");
        // sshd refuses to start without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nPidFile {dir}/sshd.pid\n\
             AuthorizedKeysFile {dir}/authorized_keys\nUsePAM no\nStrictModes no\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nSetEnv PATH=/usr/local/bin:/usr/bin:/bin\n",
            dir = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).expect("write sshd_config");
        let child = Command::new("/usr/sbin/sshd")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .args(["-D", "-e"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("sshd.log")).expect("sshd log"))
            .spawn()
            .expect("sshd starts");
        wait_for_port(port, "sshd");
        let host_key = std::fs::read_to_string(d.join("host_key.pub")).expect("host key");
        let mut fields = host_key.split_whitespace();
        let known_hosts = format!(
            "[127.0.0.1]:{port} {} {}\n",
            fields.next().expect("key type"),
            fields.next().expect("key")
        );
        Self {
            port,
            private_key: std::fs::read_to_string(d.join("client_key")).expect("client key"),
            known_hosts,
            child,
            dir,
        }
    }

    /// `ssh://root@127.0.0.1:PORT/<absolute path of the bare repo>`
    pub fn url(&self, repo: &BareRepo) -> String {
        format!("ssh://root@127.0.0.1:{}{}", self.port, repo.path.display())
    }

    /// `known_hosts` hashed by `ssh-keygen -H`, as `HashKnownHosts yes` writes it.
    pub fn known_hosts_hashed(&self) -> String {
        let file = self.dir.path().join("known_hosts_hashed");
        std::fs::write(&file, &self.known_hosts).expect("write known_hosts");
        let out = Command::new("ssh-keygen")
            .arg("-H")
            .arg("-f")
            .arg(&file)
            .output()
            .expect("ssh-keygen runs");
        assert!(
            out.status.success(),
            "ssh-keygen -H: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hashed = std::fs::read_to_string(&file).expect("read hashed known_hosts");
        assert!(hashed.starts_with("|1|"), "{hashed}");
        hashed
    }

    /// What sshd logged (to see why a login failed).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP server that accepts connections and never answers: a hung remote.
pub struct Silent {
    pub port: u16,
    listener: Option<TcpListener>,
}

impl Silent {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        Self {
            port: listener.local_addr().expect("local addr").port(),
            listener: Some(listener),
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.listener.take();
    }
}
