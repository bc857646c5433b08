//! Registry credentials from the Docker client config (`$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json`): inline `auths` entries, `credsStore` and `credHelpers`.
//!
//! Credentials are secrets: nothing here logs or formats a password, token or `auth` value.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use bollard::auth::DockerCredentials;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::reference::DOCKER_HUB_AUTH_KEY;

/// How long a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);

/// The identity-token marker a credential helper returns as the username.
const TOKEN_USERNAME: &str = "<token>";

/// The Docker client config directory: `DOCKER_CONFIG`, else `$HOME/.docker`.
pub(crate) fn default_config_dir(
    docker_config: Option<String>,
    home: Option<String>,
) -> Option<PathBuf> {
    docker_config
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| home.map(|h| Path::new(&h).join(".docker")))
}

/// Why credentials could not be loaded (never contains a secret).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct CredentialsError(String);

/// Where the credentials of one registry come from.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// Nothing configured: pull anonymously.
    None,
    /// An inline `auths` entry.
    Inline(Box<Credentials>),
    /// `docker-credential-<helper> get`.
    Helper(String),
}

/// Decoded credentials.
#[derive(PartialEq, Eq, Default)]
pub(crate) struct Credentials {
    pub username: String,
    pub password: String,
    pub identity_token: String,
    pub registry_token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    identitytoken: String,
    #[serde(default)]
    registrytoken: String,
}

/// Finds where the credentials of `registry_key` come from, in Docker's order: a per-registry
/// `credHelpers` entry, the `credsStore`, then the inline `auths` entry.
pub(crate) fn lookup(config_json: &str, registry_key: &str) -> Result<Source, CredentialsError> {
    let config: ConfigFile = serde_json::from_str(config_json)
        .map_err(|e| CredentialsError(format!("invalid Docker client config: {e}")))?;
    let host = normalise_key(registry_key);
    if let Some(helper) = config
        .cred_helpers
        .iter()
        .find(|(k, _)| normalise_key(k) == host)
        .map(|(_, v)| v.clone())
        .filter(|h| !h.is_empty())
    {
        return Ok(Source::Helper(helper));
    }
    if let Some(store) = config.creds_store.filter(|s| !s.is_empty()) {
        return Ok(Source::Helper(store));
    }
    let Some(entry) = config
        .auths
        .iter()
        .find(|(k, _)| normalise_key(k) == host)
        .map(|(_, v)| v)
    else {
        return Ok(Source::None);
    };
    let mut creds = Credentials {
        username: entry.username.clone(),
        password: entry.password.clone(),
        identity_token: entry.identitytoken.clone(),
        registry_token: entry.registrytoken.clone(),
    };
    if !entry.auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(entry.auth.trim())
            .map_err(|_| {
                CredentialsError(format!("the auth entry for {registry_key} is not base64"))
            })?;
        let decoded = String::from_utf8(decoded).map_err(|_| {
            CredentialsError(format!("the auth entry for {registry_key} is not UTF-8"))
        })?;
        let (user, pass) = decoded.split_once(':').ok_or_else(|| {
            CredentialsError(format!(
                "the auth entry for {registry_key} is not USER:PASSWORD"
            ))
        })?;
        creds.username = user.to_owned();
        creds.password = pass.to_owned();
    }
    Ok(Source::Inline(Box::new(creds)))
}

/// Loads the credentials for `registry_key` from the config in `dir`, as bollard wants them.
/// `Ok(None)` means "pull anonymously" (no config, no entry, or an entry without a username or
/// token).
pub(crate) async fn load(
    dir: &Path,
    registry_key: &str,
) -> Result<Option<DockerCredentials>, CredentialsError> {
    let path = dir.join("config.json");
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CredentialsError(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let creds = match lookup(&text, registry_key)? {
        Source::None => return Ok(None),
        Source::Inline(creds) => *creds,
        Source::Helper(helper) => run_helper(&helper, registry_key).await?,
    };
    Ok(to_bollard(creds, registry_key))
}

fn to_bollard(creds: Credentials, registry_key: &str) -> Option<DockerCredentials> {
    if creds.username.is_empty() && creds.identity_token.is_empty() {
        return None;
    }
    let non_empty = |s: String| Some(s).filter(|s| !s.is_empty());
    Some(DockerCredentials {
        username: non_empty(creds.username),
        password: non_empty(creds.password),
        serveraddress: Some(registry_key.to_owned()),
        identitytoken: non_empty(creds.identity_token),
        registrytoken: non_empty(creds.registry_token),
        ..DockerCredentials::default()
    })
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Runs `docker-credential-<helper> get` with the server address on stdin.
async fn run_helper(helper: &str, registry_key: &str) -> Result<Credentials, CredentialsError> {
    let program = format!("docker-credential-{helper}");
    let fail = |what: String| CredentialsError(format!("credential helper {program}: {what}"));
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot start: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(registry_key.as_bytes())
            .await
            .map_err(|e| fail(format!("cannot write: {e}")))?;
    }
    let output = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| fail(format!("no answer within {HELPER_TIMEOUT:?}")))?
        .map_err(|e| fail(format!("failed: {e}")))?;
    if !output.status.success() {
        // "credentials not found in native keychain" means: no entry, pull anonymously.
        return Ok(Credentials::default());
    }
    let answer: HelperAnswer = serde_json::from_slice(&output.stdout)
        .map_err(|_| fail("answered something other than JSON credentials".to_owned()))?;
    Ok(if answer.username == TOKEN_USERNAME {
        Credentials {
            identity_token: answer.secret,
            ..Credentials::default()
        }
    } else {
        Credentials {
            username: answer.username,
            password: answer.secret,
            ..Credentials::default()
        }
    })
}

/// `https://index.docker.io/v1/` stays as is; any other key loses its scheme and path
/// (`http://127.0.0.1:5000/v2/` → `127.0.0.1:5000`).
fn normalise_key(key: &str) -> String {
    if key == DOCKER_HUB_AUTH_KEY
        || key == "index.docker.io"
        || key == "docker.io"
        || key == "https://index.docker.io/v1"
    {
        return DOCKER_HUB_AUTH_KEY.to_owned();
    }
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    without_scheme
        .split('/')
        .next()
        .unwrap_or(without_scheme)
        .to_owned()
}
