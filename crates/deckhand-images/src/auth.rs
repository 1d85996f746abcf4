//! Registry credentials from a Docker client `config.json`.
//!
//! The file's shape is the Docker CLI's
//! (<https://docs.docker.com/reference/cli/docker/#configuration-files>):
//!
//! ```json
//! {"auths": {
//!    "registry.example:5000": {"auth": "<base64 of user:password>"},
//!    "https://index.docker.io/v1/": {"username": "u", "password": "p"},
//!    "other.example": {"identitytoken": "<oauth refresh token>"}}}
//! ```
//!
//! Only `auths` is read; credential helpers (`credsStore`, `credHelpers`)
//! are not run. The credentials travel to the daemon in the `X-Registry-Auth`
//! header of ImageCreate
//! (<https://docs.docker.com/reference/api/engine/version/v1.41/#tag/Image/operation/ImageCreate>).

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bollard::auth::DockerCredentials;
use serde::Deserialize;

use crate::Error;

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

/// The registry host (and port) a key of `auths` names: the Docker CLI
/// writes a bare host (`registry.example:5000`) for most registries and
/// `https://index.docker.io/v1/` for Docker Hub; older files have
/// `https://host/v2/` or `http://host`.
fn registry_of_key(key: &str) -> String {
    let k = key.trim();
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    let host = k.split('/').next().unwrap_or("").to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => host,
    }
}

/// Reads `path` and returns the credentials for `registry` (an
/// [`ImageRef::registry`](deckhand_model::ImageRef::registry), e.g.
/// `docker.io` or `10.0.0.2:5000`), or `None` when the file has none for it.
///
/// # Errors
/// [`Error::Credentials`] naming the file when it cannot be read, is not
/// JSON of the Docker CLI's shape, or the matching entry's `auth` is not
/// base64 of `user:password`.
pub(crate) fn credentials_for(
    path: &Path,
    registry: &str,
) -> Result<Option<DockerCredentials>, Error> {
    let err = |reason: String| Error::Credentials {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let file: ConfigFile =
        serde_json::from_slice(&text).map_err(|e| err(format!("not a Docker config.json: {e}")))?;
    let Some((key, entry)) = file
        .auths
        .iter()
        .find(|(k, _)| registry_of_key(k) == registry.to_ascii_lowercase())
    else {
        return Ok(None);
    };
    let (mut username, mut password) = (entry.username.clone(), entry.password.clone());
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| err(format!("auths.{key:?}.auth is not base64 of user:password")))?;
        let Some((u, p)) = decoded.split_once(':') else {
            return Err(err(format!(
                "auths.{key:?}.auth decodes to no user:password pair"
            )));
        };
        username = Some(u.to_string());
        password = Some(p.to_string());
    }
    Ok(Some(DockerCredentials {
        username,
        password,
        identitytoken: entry.identitytoken.clone(),
        registrytoken: entry.registrytoken.clone(),
        serveraddress: Some(key.clone()),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn matches_registries_and_decodes_auth() {
        let auth = STANDARD.encode("alice:s3cr:et");
        let f = file(&format!(
            r#"{{"auths":{{
                "127.0.0.1:5000":{{"auth":"{auth}"}},
                "https://index.docker.io/v1/":{{"username":"bob","password":"pw"}},
                "https://token.example/v2/":{{"identitytoken":"tok"}}}},
               "credsStore":"desktop"}}"#
        ));
        let c = credentials_for(f.path(), "127.0.0.1:5000")
            .unwrap()
            .unwrap();
        assert_eq!(c.username.as_deref(), Some("alice"));
        assert_eq!(c.password.as_deref(), Some("s3cr:et"));
        assert_eq!(c.serveraddress.as_deref(), Some("127.0.0.1:5000"));
        let c = credentials_for(f.path(), "docker.io").unwrap().unwrap();
        assert_eq!(c.username.as_deref(), Some("bob"));
        assert_eq!(
            c.serveraddress.as_deref(),
            Some("https://index.docker.io/v1/")
        );
        let c = credentials_for(f.path(), "token.example").unwrap().unwrap();
        assert_eq!(c.identitytoken.as_deref(), Some("tok"));
        assert!(credentials_for(f.path(), "other:5000").unwrap().is_none());
        assert!(
            credentials_for(file("{}").path(), "docker.io")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn errors_name_the_file() {
        let e = credentials_for(Path::new("/nonexistent/config.json"), "docker.io")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/config.json"), "{e}");
        let f = file("not json");
        let e = credentials_for(f.path(), "x").unwrap_err().to_string();
        assert!(e.contains("not a Docker config.json"), "{e}");
        let f = file(r#"{"auths":{"x":{"auth":"!!!"}}}"#);
        let e = credentials_for(f.path(), "x").unwrap_err().to_string();
        assert!(e.contains("not base64"), "{e}");
    }
}
