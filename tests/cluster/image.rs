//! `scripts/image.sh` builds both container images here, without a container engine (umoci
//! from Debian): each runs its binary as the non-root user from nothing but its own root
//! filesystem. The test packs this build's (debug) binaries, so it takes about a minute; the
//! sizes of release images are in docs/install.md.

use std::path::Path;
use std::process::Command;

use crate::git_remote::TempDir;
use crate::support::repo;

fn run(command: &mut Command) -> String {
    let out = command.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Unpacks `tag` of the layout and runs `args` in its root filesystem as uid/gid 65532.
fn run_in(layout: &Path, tag: &str, work: &Path, args: &[&str]) -> String {
    let bundle = work.join(tag);
    if !bundle.exists() {
        run(Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:{tag}", layout.display()))
            .arg(&bundle));
        let config = std::fs::read_to_string(bundle.join("config.json")).expect("runtime config");
        let config: serde_json::Value = serde_json::from_str(&config).expect("json");
        assert_eq!(config["process"]["user"]["uid"], 65532, "{tag} runs as non-root");
        assert_eq!(config["process"]["user"]["gid"], 65532);
    }
    run(Command::new("/usr/sbin/chroot")
        .arg("--userspec=65532:65532")
        .arg(bundle.join("rootfs"))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin"))
}

#[test]
fn both_images_build_here_and_run_as_non_root() {
    let flaggit = Path::new(env!("CARGO_BIN_EXE_flaggit"));
    let loadtester = Path::new(env!("CARGO_BIN_EXE_flaggit-loadtester"));
    assert_eq!(flaggit.parent(), loadtester.parent());
    let work = TempDir::new("image");
    let layout = work.path().join("oci");
    let built = Command::new(repo().join("scripts/image.sh"))
        .arg(&layout)
        .env("FLAGGIT_BIN_DIR", flaggit.parent().expect("bin dir"))
        .output()
        .expect("image.sh runs");
    assert!(
        built.status.success(),
        "{}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    let version = flaggit::VERSION;
    let tags = run(Command::new("umoci").args(["ls", "--layout"]).arg(&layout));
    let mut tags: Vec<&str> = tags.lines().collect();
    tags.sort();
    assert_eq!(
        tags,
        [
            format!("flaggit-{version}"),
            format!("flaggit-loadtester-{version}")
        ]
    );
    assert!(layout.with_extension("tar").is_file(), "an archive of the layout");

    let said = run_in(
        &layout,
        &format!("flaggit-{version}"),
        work.path(),
        &["/usr/local/bin/flaggit", "--version"],
    );
    assert_eq!(said.trim(), format!("flaggit {version}"));
    let tools = run_in(
        &layout,
        &format!("flaggit-loadtester-{version}"),
        work.path(),
        &[
            "/usr/bin/bash",
            "-c",
            "flaggit-loadtester --help >/tmp/help && command -v hey curl kubectl && kubectl version --client --short && echo $UID",
        ],
    );
    assert!(
        tools.contains("/usr/bin/hey\n/usr/bin/curl\n/usr/local/bin/kubectl\n"),
        "{tools}"
    );
    assert!(tools.contains("Client Version: v1.20"), "{tools}");
    assert!(tools.trim_end().ends_with("65532"), "{tools}");
}
