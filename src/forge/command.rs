//! Commands in pull-request comments (`/approve`, `/rollback [reason]` ...): parsing a comment
//! body into commands, and escaping comment text before it is echoed in a reply. Comment text
//! is untrusted data: it is never run, never trusted to be small, and never echoed raw.

use std::fmt;

/// Only the first 64 KiB of a comment are read for commands: GitHub allows 65 536 characters,
/// and a command buried deeper than that is not one a reviewer meant to be seen.
pub const SCAN_LIMIT: usize = 64 * 1024;

/// Longest `/rollback` reason kept, in characters.
pub const MAX_REASON: usize = 200;

/// Unknown words reported per comment, at most; each cut to 32 characters.
const MAX_UNKNOWN: usize = 10;
const MAX_WORD: usize = 32;

/// A command a reviewer gives the controller from the release pull request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Open the gate waiting now.
    Approve,
    /// Stop the release and roll back, with an optional reason for the record.
    Rollback { reason: Option<String> },
    /// Hold the analysis at its current step.
    Pause,
    /// Continue a paused analysis.
    Resume,
    /// Start the analysis again after a failed release.
    Retry,
    /// Reply with a fresh summary.
    Status,
}

impl Command {
    /// The command word without its slash, e.g. `approve`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Rollback { .. } => "rollback",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Retry => "retry",
            Self::Status => "status",
        }
    }

    /// Every command word, in the order they are documented.
    pub const NAMES: [&'static str; 6] = ["approve", "rollback", "pause", "resume", "retry", "status"];
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.name())
    }
}

/// What a comment says to the controller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Commands in the order first given; a repeated command counts once (the first wins).
    pub commands: Vec<Command>,
    /// `/words` that are not commands, lowercased and sanitised, for an "unknown command"
    /// reply; at most 10.
    pub unknown: Vec<String>,
    /// The comment was longer than [`SCAN_LIMIT`] and only its start was read.
    pub truncated: bool,
}

impl Parsed {
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty() && self.unknown.is_empty()
    }
}

/// Reads the commands of a comment: lines that start with `/command` (leading spaces allowed,
/// any case), outside fenced code blocks and `>` quotes. Words that only look like paths
/// (`/etc/passwd`) are prose, not unknown commands.
pub fn parse(body: &str) -> Parsed {
    let (text, truncated) = head(body, SCAN_LIMIT);
    let mut parsed = Parsed {
        truncated,
        ..Parsed::default()
    };
    // The fence that opened the current code block: its character and length.
    let mut fence: Option<(char, usize)> = None;
    for line in text.split('\n') {
        let line = line.trim_start_matches([' ', '\t']).trim_end_matches('\r');
        if let Some((ch, len)) = fence_of(line) {
            match fence {
                None => fence = Some((ch, len)),
                // A closing fence is the same character, at least as long, with nothing after.
                Some((open, open_len)) if open == ch && len >= open_len && line[len..].trim().is_empty() => {
                    fence = None
                }
                Some(_) => {}
            }
            continue;
        }
        if fence.is_some() || line.starts_with('>') {
            continue;
        }
        let Some(rest) = line.strip_prefix('/') else {
            continue;
        };
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, args) = rest.split_at(end);
        if word.is_empty() || !word.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_') {
            continue;
        }
        let word = word.to_lowercase();
        let command = match word.as_str() {
            "approve" => Command::Approve,
            "rollback" => Command::Rollback { reason: reason(args) },
            "pause" => Command::Pause,
            "resume" => Command::Resume,
            "retry" => Command::Retry,
            "status" => Command::Status,
            _ => {
                let word = sanitize(&word, MAX_WORD);
                if parsed.unknown.len() < MAX_UNKNOWN && !parsed.unknown.contains(&word) {
                    parsed.unknown.push(word);
                }
                continue;
            }
        };
        if !parsed.commands.iter().any(|c| c.name() == command.name()) {
            parsed.commands.push(command);
        }
    }
    parsed
}

/// The first `limit` bytes of `text`, cut at a character boundary.
fn head(text: &str, limit: usize) -> (&str, bool) {
    if text.len() <= limit {
        return (text, false);
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

/// The fence character and length when the line opens or closes a fenced code block.
fn fence_of(line: &str) -> Option<(char, usize)> {
    let ch = line.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = line.chars().take_while(|c| *c == ch).count();
    (len >= 3).then_some((ch, len))
}

fn reason(args: &str) -> Option<String> {
    let reason = sanitize(args.trim(), MAX_REASON);
    let reason = reason.trim();
    (!reason.is_empty()).then(|| reason.to_owned())
}

/// Text with control characters (NUL included), bidirectional overrides and zero-width
/// characters removed, whitespace runs folded to one space, cut to `max` characters. Still
/// not markdown-safe: pass it through [`escape_markdown`] before putting it in a reply.
pub fn sanitize(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    let mut space = false;
    for c in text.chars() {
        if count >= max {
            break;
        }
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if c.is_control() || invisible(c) {
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
            count += 1;
        }
        space = false;
        out.push(c);
        count += 1;
    }
    out
}

/// Characters that change how the text around them reads without being seen.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}')
}

/// Untrusted text made safe to put inside a markdown reply: sanitised (see [`sanitize`], at
/// most `max` characters, one line), markdown punctuation backslash-escaped, and `<`, `>`,
/// `&` and `@` written as HTML entities so it can neither open a tag nor mention anyone.
pub fn escape_markdown(text: &str, max: usize) -> String {
    let clean = sanitize(text, max);
    let mut out = String::with_capacity(clean.len() + 8);
    for c in clean.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '@' => out.push_str("&#64;"),
            '\\' | '`' | '*' | '_' | '{' | '}' | '[' | ']' | '(' | ')' | '#' | '+' | '-' | '!' | '|'
            | '~' | '/' | ':' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commands(body: &str) -> Vec<Command> {
        parse(body).commands
    }

    #[test]
    fn every_command_is_read_from_its_own_line() {
        assert_eq!(commands("/approve"), vec![Command::Approve]);
        assert_eq!(commands("/pause"), vec![Command::Pause]);
        assert_eq!(commands("/resume"), vec![Command::Resume]);
        assert_eq!(commands("/retry"), vec![Command::Retry]);
        assert_eq!(commands("/status"), vec![Command::Status]);
        assert_eq!(commands("/rollback"), vec![Command::Rollback { reason: None }]);
        assert_eq!(
            commands("/rollback  latency is   too high \r\n"),
            vec![Command::Rollback {
                reason: Some("latency is too high".into())
            }]
        );
    }

    #[test]
    fn case_and_leading_spaces_do_not_matter_but_the_line_start_does() {
        assert_eq!(commands("   /APPROVE"), vec![Command::Approve]);
        assert_eq!(commands("\t/Approve please"), vec![Command::Approve]);
        assert_eq!(commands("please /approve"), vec![]);
        assert_eq!(commands("/approved"), vec![]);
        assert_eq!(parse("/approved").unknown, vec!["approved"]);
    }

    #[test]
    fn several_commands_keep_their_order_and_duplicates_collapse() {
        let body = "LGTM\n/status\n/approve\n/APPROVE\n/rollback first\n/rollback second\n";
        assert_eq!(
            commands(body),
            vec![
                Command::Status,
                Command::Approve,
                Command::Rollback {
                    reason: Some("first".into())
                }
            ]
        );
    }

    #[test]
    fn code_blocks_and_quotes_are_not_commands() {
        let body = "```\n/approve\n```\n> /rollback\n  > /pause\n~~~~\n/retry\n~~~\n/resume\n~~~~\n/status";
        assert_eq!(commands(body), vec![Command::Status]);
        // An unclosed fence hides the rest of the comment.
        assert_eq!(commands("```sh\n/approve"), vec![]);
        // A fence line with text after it does not close the block.
        assert_eq!(
            commands("```\n``` not a close\n/approve\n```\n/pause"),
            vec![Command::Pause]
        );
    }

    #[test]
    fn unknown_words_are_reported_and_paths_are_prose() {
        let parsed = parse("/lgtm\n/LGTM\n/etc/passwd is a file\n/ \n//approve\n/hold on\n/approve");
        assert_eq!(parsed.commands, vec![Command::Approve]);
        assert_eq!(parsed.unknown, vec!["lgtm", "hold"]);
        let many: String = (0..50).map(|i| format!("/word{i}\n")).collect();
        assert_eq!(parse(&many).unknown.len(), 10);
        let long = format!("/{}", "x".repeat(500));
        assert_eq!(parse(&long).unknown[0].chars().count(), 32);
    }

    #[test]
    fn shell_metacharacters_and_html_are_plain_text() {
        let body = "/rollback $(rm -rf /); `id` && echo <script>alert(1)</script> | @acme/admins";
        let Command::Rollback { reason: Some(reason) } = &commands(body)[0] else {
            panic!("a rollback with a reason")
        };
        assert_eq!(
            reason,
            "$(rm -rf /); `id` && echo <script>alert(1)</script> | @acme/admins"
        );
        let shown = escape_markdown(reason, MAX_REASON);
        assert_eq!(
            shown,
            "$\\(rm \\-rf \\/\\); \\`id\\` &amp;&amp; echo &lt;script&gt;alert\\(1\\)&lt;\\/script&gt; \\| \
             &#64;acme\\/admins"
        );
        assert!(!shown.contains('<') && !shown.contains('@'));
    }

    #[test]
    fn huge_bodies_are_read_only_up_to_the_limit() {
        let mut body = "/approve\n".to_owned();
        body.push_str(&"é".repeat(SCAN_LIMIT)); // two bytes each: the cut lands mid-character
        body.push_str("\n/rollback");
        let parsed = parse(&body);
        assert!(parsed.truncated);
        assert_eq!(parsed.commands, vec![Command::Approve]);
        assert!(!parse("/approve").truncated);
    }

    #[test]
    fn nul_bidi_and_odd_unicode_never_panic_and_are_stripped() {
        let body = "/rollback a\u{0}b\u{202E}c\u{200B}d\u{FEFF}e 🚀 ǅ\n/\u{0}\n/ß\n/ǅ\n/\u{301}";
        let parsed = parse(body);
        assert_eq!(
            parsed.commands,
            vec![Command::Rollback {
                reason: Some("abcde 🚀 ǅ".into())
            }]
        );
        assert_eq!(parsed.unknown, vec!["ß", "ǆ"]);
        let reason = "x".repeat(1000);
        let Command::Rollback { reason: Some(kept) } = &commands(&format!("/rollback {reason}"))[0] else {
            panic!("a rollback with a reason")
        };
        assert_eq!(kept.chars().count(), MAX_REASON);
    }

    #[test]
    fn escaped_text_stays_on_one_line_and_within_its_length() {
        assert_eq!(
            escape_markdown("a\n\n# title\r\n- item", 100),
            "a \\# title \\- item"
        );
        assert_eq!(escape_markdown("abcdef", 3), "abc");
        assert_eq!(escape_markdown("", 3), "");
    }
}
