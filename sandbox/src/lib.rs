//! The worker sandbox: spawn path, Landlock ruleset and seccomp policies.
