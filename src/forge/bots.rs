//! Which authors are bots: Flux image automation, Renovate, Dependabot, GitHub Actions, and
//! any forge account the forge marks as one (a `[bot]` login, user type `Bot`). A release a
//! bot authored needs an approval from a person, and a bot's approval is never that one.

/// Logins of well-known bots that are plain user accounts on the forge.
const KNOWN_LOGINS: [&str; 7] = [
    "fluxcdbot",
    "flux-bot",
    "renovate-bot",
    "renovatebot",
    "dependabot",
    "dependabot-preview",
    "github-actions",
];

/// Commit e-mails the bots write with by default (Renovate's hosted app, Flux examples).
const KNOWN_EMAILS: [&str; 3] = [
    "bot@renovateapp.com",
    "renovate@whitesourcesoftware.com",
    "noreply@fluxcd.io",
];

/// Whether a forge login is a bot's: a GitHub App's `name[bot]`, or a well-known bot account.
pub fn is_bot_login(login: &str) -> bool {
    let login = login.trim().trim_start_matches('@').to_ascii_lowercase();
    login.ends_with("[bot]") || KNOWN_LOGINS.contains(&login.as_str())
}

/// Whether a commit's author identity (as Git records it) is a bot's: a `[bot]` name or
/// no-reply address, a well-known bot e-mail, or the name of a well-known bot account (Flux
/// image automation commits as `fluxcdbot` in its documented setup).
pub fn is_bot_identity(name: &str, email: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    let email = email.trim().to_ascii_lowercase();
    let local = email.split('@').next().unwrap_or_default();
    let local = local.rsplit('+').next().unwrap_or(local);
    is_bot_login(&name)
        || is_bot_login(local)
        || KNOWN_EMAILS.contains(&email.as_str())
        || name == "renovate bot"
        || name == "flux"
        || name.starts_with("image-automation")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bots_are_told_from_people_by_login() {
        for bot in [
            "renovate[bot]",
            "dependabot[bot]",
            "@Dependabot[bot]",
            "fluxcdbot",
            "github-actions",
            "my-app[bot]",
        ] {
            assert!(is_bot_login(bot), "{bot}");
        }
        for person in ["alice", "botanist", "robot-fan", "bot"] {
            assert!(!is_bot_login(person), "{person}");
        }
    }

    #[test]
    fn bots_are_told_from_people_by_commit_identity() {
        for (name, email) in [
            ("fluxcdbot", "fluxcdbot@users.noreply.github.com"),
            ("Flux", "flux@example.com"),
            ("image-automation-controller", "flux@acme.example"),
            ("renovate[bot]", "29139614+renovate[bot]@users.noreply.github.com"),
            ("Renovate Bot", "bot@renovateapp.com"),
            (
                "dependabot[bot]",
                "49699333+dependabot[bot]@users.noreply.github.com",
            ),
            ("Anyone", "123+my-app[bot]@users.noreply.github.com"),
        ] {
            assert!(is_bot_identity(name, email), "{name} <{email}>");
        }
        for (name, email) in [
            ("Hank", "hank@acme.example"),
            ("Fluxer", "fluxer@acme.example"),
            ("Ann", "1+ann@users.noreply.github.com"),
        ] {
            assert!(!is_bot_identity(name, email), "{name} <{email}>");
        }
    }
}
