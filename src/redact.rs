//! The one place URLs lose their secrets before anything prints them: status, events, logs,
//! the dashboard and error strings all go through `url` or `text`.

use std::sync::LazyLock;

use regex::{Captures, Regex};

/// `scheme://userinfo@` inside free text; the userinfo runs to the last `@` of the authority.
static USERINFO: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b([a-z][a-z0-9+.-]*)://([^/\s?#]*)@").expect("the userinfo pattern is a valid regex")
});

/// `url` without the secrets of its userinfo, fit to show anywhere.
///
/// `https://TOKEN@host/x` and `https://user:TOKEN@host/x` both become `https://host/x`: over
/// HTTP the user part may itself be the token (GitHub, GitLab and Gitea accept a token as the
/// user), so none of it is kept. An `ssh://` URL keeps its login name (`ssh://git@host/x`;
/// SSH never authenticates with the user part) and loses any password. The scp-like form
/// `git@host:org/repo` is kept as it is; a string that is no URL but holds `user:pw@` loses
/// everything before the `@`.
pub fn url(url: &str) -> String {
    let url = url.trim();
    if url.contains("://") {
        return text(url);
    }
    match url.rsplit_once('@') {
        Some((userinfo, rest)) if userinfo.contains(':') || userinfo.contains(char::is_whitespace) => {
            rest.to_string()
        }
        _ => url.to_string(),
    }
}

/// `text` (an error message, a log line) with the userinfo of every URL in it redacted as
/// `url` does.
pub fn text(text: &str) -> String {
    USERINFO
        .replace_all(text, |caps: &Captures| {
            let scheme = &caps[1];
            let user = caps[2].split(':').next().unwrap_or_default();
            if keeps_user(scheme) && !user.is_empty() {
                format!("{scheme}://{user}@")
            } else {
                format!("{scheme}://")
            }
        })
        .into_owned()
}

/// SSH logs in as the user and authenticates with a key: the user is a name, not a secret.
fn keeps_user(scheme: &str) -> bool {
    ["ssh", "git+ssh", "ssh+git"]
        .iter()
        .any(|s| scheme.eq_ignore_ascii_case(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_written_as_the_user_is_removed() {
        assert_eq!(
            url("https://ghp_TOKEN123@github.com/org/config.git"),
            "https://github.com/org/config.git"
        );
        assert_eq!(
            url("http://glpat-x@gitlab.example:8080/g/r"),
            "http://gitlab.example:8080/g/r"
        );
        assert_eq!(url("HTTPS://TOKEN@host"), "HTTPS://host");
    }

    #[test]
    fn user_and_password_are_both_removed_over_http() {
        assert_eq!(
            url("https://bot:s3cret@git.example.com/a.git"),
            "https://git.example.com/a.git"
        );
        assert_eq!(url("http://a:b:c@h/p"), "http://h/p");
        assert_eq!(
            url("http://user:p@ss@h/p"),
            "http://h/p",
            "the last @ ends the userinfo"
        );
    }

    #[test]
    fn ssh_keeps_the_login_name_only() {
        assert_eq!(
            url("ssh://git@github.com/org/r.git"),
            "ssh://git@github.com/org/r.git"
        );
        assert_eq!(url("ssh://git:pw@host:2222/r.git"), "ssh://git@host:2222/r.git");
        assert_eq!(url("git@github.com:org/r.git"), "git@github.com:org/r.git");
    }

    #[test]
    fn urls_without_userinfo_are_unchanged() {
        for plain in [
            "https://github.com/org/r.git",
            "https://github.com/org/r.git#main",
            "git://h/r",
            "https://h/p?q=a@b",
            "https://h/users/@me",
            "/srv/git/r.git",
        ] {
            assert_eq!(url(plain), plain);
        }
    }

    #[test]
    fn non_urls_with_a_password_lose_it() {
        assert!(!url("not a url user:pw@host").contains("pw"));
    }

    #[test]
    fn every_url_in_a_text_is_redacted() {
        let message = "cannot push to https://TOKEN@h/a.git (was https://u:PW@h/a.git; \
                       via ssh://git:PASS@h/b): unauthorized";
        let redacted = text(message);
        for secret in ["TOKEN", "PW", "PASS"] {
            assert!(!redacted.contains(secret), "{redacted}");
        }
        assert_eq!(
            redacted,
            "cannot push to https://h/a.git (was https://h/a.git; via ssh://git@h/b): unauthorized"
        );
        assert_eq!(text("no url here: a@b"), "no url here: a@b");
    }
}
