//! Build script: stamps the version shown by `--version` with the git commit.
//!
//! `OZ_BUILD_VERSION` is the crate version, followed by ` (git <commit>)` when the commit is
//! known: from the `OZ_GIT_COMMIT` environment variable at build time (for builds outside a
//! git checkout, e.g. from a source tarball), else from `git rev-parse` in the source tree.
//! Without either, it is the crate version alone.

#![allow(
    clippy::disallowed_methods,
    reason = "a build script has no other way to its inputs than the environment Cargo sets"
)]

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=OZ_GIT_COMMIT");
    let commit = match std::env::var("OZ_GIT_COMMIT") {
        Ok(commit) if !commit.trim().is_empty() => Some(commit.trim().to_owned()),
        _ => {
            // Re-run when HEAD moves: HEAD itself, the branch it points at, and packed refs.
            for path in ["HEAD", "packed-refs"] {
                if let Some(file) = git(&["rev-parse", "--git-path", path])
                    && Path::new(&file).exists()
                {
                    println!("cargo:rerun-if-changed={file}");
                }
            }
            if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"])
                && let Some(file) = git(&["rev-parse", "--git-path", &reference])
                && Path::new(&file).exists()
            {
                println!("cargo:rerun-if-changed={file}");
            }
            git(&["rev-parse", "--short=12", "HEAD"])
        }
    };
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let stamped = match commit {
        Some(commit) => format!("{version} (git {commit})"),
        None => version,
    };
    println!("cargo:rustc-env=OZ_BUILD_VERSION={stamped}");
}
