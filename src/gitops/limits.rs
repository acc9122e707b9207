//! Bounds on the config repo's YAML before any parser builds a tree of it: a file too large or
//! nested too deep (`- - - - ...`) is refused as unparseable, so a hostile or broken file in
//! Git can neither exhaust memory nor overflow the stack of the controller that reads it.

use yaml_rust2::parser::{Event, Parser};

/// The largest YAML file flaggit reads from the config repo. Manifests, kustomizations,
/// HelmReleases and ledgers are a few KiB; a megabyte is far beyond any of them.
pub const MAX_BYTES: usize = 1024 * 1024;

/// The deepest nesting of mappings and sequences flaggit reads. Kubernetes manifests and Helm
/// values nest about a dozen levels; the API server itself refuses deeper than a few dozen.
pub const MAX_DEPTH: usize = 100;

/// Why a file is refused before it is parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Exceeded {
    #[error("the file has {size} bytes, more than the {max} flaggit reads")]
    Size { size: usize, max: usize },
    #[error("collections nest more than {max} levels deep (at line {line}), more than flaggit reads")]
    Depth { line: usize, column: usize, max: usize },
}

impl Exceeded {
    /// 1-based line and column where the limit was crossed (1:1 for the size).
    pub fn position(&self) -> (usize, usize) {
        match self {
            Self::Size { .. } => (1, 1),
            Self::Depth { line, column, .. } => (*line, *column),
        }
    }
}

/// Checks `text` against [`MAX_BYTES`] and [`MAX_DEPTH`]. Reads parser events only (no tree,
/// no recursion) and stops at the first level too deep; a syntax error is left for the real
/// parse to report.
pub fn check(text: &str) -> Result<(), Exceeded> {
    check_with(text, MAX_BYTES, MAX_DEPTH)
}

fn check_with(text: &str, max_bytes: usize, max_depth: usize) -> Result<(), Exceeded> {
    if text.len() > max_bytes {
        return Err(Exceeded::Size {
            size: text.len(),
            max: max_bytes,
        });
    }
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    loop {
        let Ok((event, mark)) = parser.next_token() else {
            return Ok(());
        };
        match event {
            Event::StreamEnd => return Ok(()),
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                if depth > max_depth {
                    return Err(Exceeded::Depth {
                        line: mark.line().max(1),
                        column: mark.col() + 1,
                        max: max_depth,
                    });
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_manifests_pass() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: a:1\n---\nkind: Service\n";
        assert_eq!(check(text), Ok(()));
        assert_eq!(check(""), Ok(()));
        // A syntax error is the parser's to report, with its own position.
        assert_eq!(check("kind: [unclosed\n"), Ok(()));
    }

    #[test]
    fn deep_block_and_flow_nesting_is_refused_where_it_crosses_the_limit() {
        let block = "- ".repeat(100_000);
        let Err(Exceeded::Depth { line, max, .. }) = check(&block) else {
            panic!("a 200 KB `- - -` file is refused");
        };
        assert_eq!((line, max), (1, MAX_DEPTH));
        // Flow collections deeper than 255 are yaml-rust2's own scan error; below that, ours.
        let flow = format!("a: {}{}", "[".repeat(200), "]".repeat(200));
        assert!(matches!(check(&flow), Err(Exceeded::Depth { .. })));
        let mappings: String = (0..MAX_DEPTH + 1)
            .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
            .collect();
        let Err(Exceeded::Depth { line, .. }) = check(&mappings) else {
            panic!("deep block mappings are refused");
        };
        assert_eq!(line, MAX_DEPTH + 1);
        // Exactly at the limit still reads.
        let at_limit: String = (0..MAX_DEPTH)
            .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
            .collect();
        assert_eq!(check(&at_limit), Ok(()));
    }

    #[test]
    fn siblings_do_not_add_up_to_depth() {
        let wide: String = (0..1000).map(|i| format!("- [{i}, {{a: [b]}}]\n")).collect();
        // The root sequence, a flow sequence, a mapping, the innermost sequence.
        assert_eq!(check_with(&wide, MAX_BYTES, 4), Ok(()));
        assert!(check_with(&wide, MAX_BYTES, 3).is_err());
    }

    #[test]
    fn large_files_are_refused_before_parsing() {
        assert_eq!(
            check_with("a: 1\n", 4, MAX_DEPTH),
            Err(Exceeded::Size { size: 5, max: 4 })
        );
        let big = format!("a: \"{}\"\n", "x".repeat(MAX_BYTES));
        assert!(matches!(check(&big), Err(Exceeded::Size { .. })));
    }
}
