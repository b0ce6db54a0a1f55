//! Records the git commit the binary is built from, for `pbxgate --version` and the
//! `pbxgate_build_info` metric: which build runs is the first question about a bug report.
//!
//! `PBXGATE_BUILD_COMMIT` (set by a packaging script, e.g. building from a tarball) wins;
//! otherwise `git rev-parse --short HEAD` when this is a git checkout; else "unknown".

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PBXGATE_BUILD_COMMIT");
    let commit = std::env::var("PBXGATE_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PBXGATE_BUILD_COMMIT={}", commit.trim());
}

/// The short commit of HEAD, when the package is the top of a git work tree (not a tarball
/// unpacked inside some other repository), watching the files that move when HEAD does.
fn git_commit() -> Option<String> {
    let top = git(&["rev-parse", "--show-toplevel"])?;
    let here = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    if Path::new(&top).canonicalize().ok()? != Path::new(&here).canonicalize().ok()? {
        return None;
    }
    let commit = git(&["rev-parse", "--short", "HEAD"])?;
    // HEAD (a checkout), the branch it names (a commit), packed refs (a gc). Only files
    // that exist: cargo reruns the script every build for one that does not.
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    for name in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
        if let Some(path) = git(&["rev-parse", "--git-path", name])
            && Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    Some(commit)
}

/// `git ARGS` in the package directory: its trimmed output, or `None` without git or on error.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_string())
}
