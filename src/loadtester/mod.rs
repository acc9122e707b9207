//! `flaggit-loadtester`: a Flagger-compatible load tester and gate server for webhooks.
