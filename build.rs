//! Build script: makes cargo rebuild when a migration changes, because `sqlx::migrate!` embeds `migrations/` at
//! compile time, and sets `KICKQ_GIT_SHA`, the commit `kickq --version` and `kickq_build_info` name.

use std::process::Command;

/// What a build without `.git` and without the `KICKQ_GIT_SHA` build argument says.
const UNKNOWN_SHA: &str = "unknown";
/// Length of the commit shown: git's usual short form.
const SHORT_SHA_LEN: usize = 7;

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-env-changed=KICKQ_GIT_SHA");
    let from_env = std::env::var("KICKQ_GIT_SHA").ok().and_then(|s| clean(&s));
    let sha = from_env
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]).and_then(|s| clean(&s)))
        .unwrap_or_else(|| UNKNOWN_SHA.to_owned());
    // Rebuild when HEAD moves (a commit, a checkout): HEAD names the branch,
    // the branch's log changes with each commit. Paths from git, so that
    // worktrees (whose `.git` is a file) work too.
    for path in ["HEAD", "logs/HEAD"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            if std::path::Path::new(&p).exists() {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
    println!("cargo:rustc-env=KICKQ_GIT_SHA={sha}");
}

/// A commit as given, shortened; `None` for anything but hex (an empty
/// build argument, or text that would garble the version line).
fn clean(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() || raw == UNKNOWN_SHA || !raw.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(raw.chars().take(SHORT_SHA_LEN).collect())
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
