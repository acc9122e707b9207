//! What the benchmark binaries share: their command line and where their results go.

use std::path::Path;

/// The sizes to run, from the command line (`default` when none is given); None when the
/// binary was not started by `cargo bench` (`cargo test --all-targets` runs it too).
pub fn sizes(bench: &str, default: &[usize]) -> Option<Vec<usize>> {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("{bench} benchmark: run it with `cargo bench --bench {bench} -- [N ...]`");
        return None;
    }
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    Some(if sizes.is_empty() { default.to_vec() } else { sizes })
}

/// Prints a result and writes it to `target/bench/<bench>-<n>.json`.
pub fn save(bench: &str, n: usize, result: &serde_json::Value) {
    let text = serde_json::to_string_pretty(result).expect("a JSON value serializes");
    println!("{text}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).expect("create target/bench");
    let path = dir.join(format!("{bench}-{n}.json"));
    std::fs::write(&path, text).expect("write the result");
    eprintln!("wrote {}", path.display());
}
