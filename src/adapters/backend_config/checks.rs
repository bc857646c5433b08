//! Small pure checks shared by validation: Docker bind specs, paths, `~` expansion, image
//! references and Kubernetes quantities. Each returns a reason phrase; callers name the field.

use std::path::{Path, PathBuf};

/// Bind-mount modes Docker accepts in the `MODE` part of `HOST:CONTAINER:MODE`.
const VOLUME_MODES: [&str; 14] = [
    "ro",
    "rw",
    "z",
    "Z",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "private",
    "rprivate",
    "nocopy",
    "consistent",
    "cached",
    "delegated",
];

/// Checks a Docker bind spec `HOST:CONTAINER[:MODE]`: the host part is an absolute path or a
/// named volume, the container part an absolute path, and the mode a comma-separated list of
/// known modes.
pub(crate) fn check_volume(spec: &str) -> Result<(), String> {
    const FORM: &str = "expected HOST:CONTAINER or HOST:CONTAINER:MODE";
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, container, mode) = match parts.as_slice() {
        [host, container] => (*host, *container, None),
        [host, container, mode] => (*host, *container, Some(*mode)),
        _ => return Err(FORM.to_owned()),
    };
    if host.is_empty() || container.is_empty() {
        return Err(FORM.to_owned());
    }
    if !host.starts_with('/') && !is_named_volume(host) {
        return Err(format!(
            "host part {host:?} must be an absolute path or a volume name \
             (letters, digits, _ . -; at least two characters)"
        ));
    }
    if !container.starts_with('/') {
        return Err(format!("container path {container:?} must be absolute"));
    }
    if let Some(mode) = mode {
        for flag in mode.split(',') {
            if !VOLUME_MODES.contains(&flag) {
                return Err(format!(
                    "unknown mode {flag:?} (expected a comma-separated list of {})",
                    VOLUME_MODES.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// Docker's volume-name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
fn is_named_volume(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Expands a leading `~` or `~/` with `home`. Other forms (`~user`) are left alone.
pub(crate) fn expand_tilde(path: &str, home: Option<&str>) -> PathBuf {
    match (path, home) {
        ("~", Some(home)) => PathBuf::from(home),
        (_, Some(home)) if path.starts_with("~/") => Path::new(home).join(&path[2..]),
        _ => PathBuf::from(path),
    }
}

/// An absolute path, or the reason it is not one.
pub(crate) fn absolute(path: &Path) -> Result<PathBuf, &'static str> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Err("must be an absolute path")
    }
}

/// True when `text` contains any whitespace.
pub(crate) fn has_whitespace(text: &str) -> bool {
    text.chars().any(char::is_whitespace)
}

/// Checks a Kubernetes resource quantity such as `8Gi`, `500M`, `1.5`, `100m` or `1e3`.
pub(crate) fn check_quantity(text: &str) -> Result<(), &'static str> {
    const REASON: &str = "expected a Kubernetes quantity such as 8Gi or 500M";
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let number_len = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_len);
    let digits = number.chars().filter(char::is_ascii_digit).count();
    if digits == 0 || number.matches('.').count() > 1 {
        return Err(REASON);
    }
    let binary_or_decimal = [
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E",
    ];
    let is_exponent = suffix
        .strip_prefix(['e', 'E'])
        .map(|exp| exp.strip_prefix(['+', '-']).unwrap_or(exp))
        .is_some_and(|exp| !exp.is_empty() && exp.chars().all(|c| c.is_ascii_digit()));
    if binary_or_decimal.contains(&suffix) || is_exponent {
        Ok(())
    } else {
        Err(REASON)
    }
}
