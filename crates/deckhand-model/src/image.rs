//! Docker image references, as operators write them in plane configs and
//! the cluster config's `upcoming` list.
//!
//! Parsing follows Docker's reference grammar (distribution's
//! `reference` package, <https://pkg.go.dev/github.com/distribution/reference>)
//! through `oci_spec::distribution::Reference`, including its normalization:
//! `redis` means `docker.io/library/redis:latest`.

use std::fmt;

use oci_spec::distribution::Reference;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest image reference accepted, in bytes.
pub const IMAGE_REF_MAX: usize = 512;

/// A validated, normalized image reference: a registry, a repository, and a
/// tag, a digest, or both.
///
/// Two spellings of the same image compare equal (`redis` and
/// `docker.io/library/redis:latest`), so an image is never pulled twice at
/// once under two names.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    /// The normalized form, e.g. `docker.io/library/redis:7` or
    /// `registry.example:5000/team/app@sha256:<64 hex>`.
    whole: String,
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

/// Why an image reference was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ImageRefError {
    /// The reference as given (cut to [`IMAGE_REF_MAX`] bytes).
    pub reference: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ImageRef {
    /// Parses and normalizes an image reference.
    ///
    /// # Errors
    /// [`ImageRefError`] when the reference is empty, longer than
    /// [`IMAGE_REF_MAX`] bytes, has surrounding white space, or does not
    /// follow Docker's grammar (upper case in the repository, a bad tag, a
    /// digest of the wrong length or an unknown algorithm).
    pub fn parse(s: &str) -> Result<ImageRef, ImageRefError> {
        let err = |reason: &str| ImageRefError {
            reference: s.chars().take(IMAGE_REF_MAX).collect(),
            reason: reason.to_string(),
        };
        if s.len() > IMAGE_REF_MAX {
            return Err(err("it is longer than 512 bytes"));
        }
        if s.trim() != s {
            return Err(err("it has leading or trailing white space"));
        }
        let r = Reference::try_from(s).map_err(|e| match e {
            oci_spec::distribution::ParseError::ReferenceInvalidFormat => err(
                "it is not of the form [registry[:port]/]repository[:tag][@digest] \
                 with a lower-case repository",
            ),
            other => err(&other.to_string()),
        })?;
        // oci-spec takes a first component with upper case but no '.' or
        // ':' for a repository path under docker.io (Docker takes it for a
        // registry host); a repository path must be lower case either way.
        if r.repository().chars().any(|c| c.is_ascii_uppercase()) {
            return Err(err(
                "its repository has upper-case letters (a registry host needs a '.' or a ':port')",
            ));
        }
        Ok(ImageRef {
            whole: r.whole(),
            registry: r.registry().to_string(),
            repository: r.repository().to_string(),
            tag: r.tag().map(str::to_string),
            digest: r.digest().map(str::to_string),
        })
    }

    /// The normalized reference, e.g. `docker.io/library/redis:latest`.
    pub fn as_str(&self) -> &str {
        &self.whole
    }

    /// The registry host (and port), e.g. `docker.io` or `10.0.0.2:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path in the registry, e.g. `library/redis`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if the reference has one (`latest` when it had neither a tag
    /// nor a digest).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The content digest, e.g. `sha256:<64 hex>`, if the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `registry/repository`, the name Docker lists in `RepoTags` and
    /// `RepoDigests` before `:tag` or `@digest`. Docker writes Docker Hub
    /// names short (`redis`, `team/app`), so this does too.
    pub fn docker_name(&self) -> String {
        if self.registry == "docker.io" {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            format!("{}/{}", self.registry, self.repository)
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.whole)
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageRef({})", self.whole)
    }
}

impl std::str::FromStr for ImageRef {
    type Err = ImageRefError;
    fn from_str(s: &str) -> Result<Self, ImageRefError> {
        ImageRef::parse(s)
    }
}

impl Serialize for ImageRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.whole)
    }
}

impl<'de> Deserialize<'de> for ImageRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ImageRef::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        let r = ImageRef::parse("redis").unwrap();
        assert_eq!(r.as_str(), "docker.io/library/redis:latest");
        assert_eq!(r.docker_name(), "redis");
        assert_eq!(
            r,
            ImageRef::parse("docker.io/library/redis:latest").unwrap()
        );
        let r = ImageRef::parse("172.29.77.2:5000/deckhand/router:1").unwrap();
        assert_eq!(r.registry(), "172.29.77.2:5000");
        assert_eq!(r.repository(), "deckhand/router");
        assert_eq!(r.tag(), Some("1"));
        assert_eq!(r.digest(), None);
        assert_eq!(r.docker_name(), "172.29.77.2:5000/deckhand/router");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("team/app@{d}")).unwrap();
        assert_eq!(r.digest(), Some(d.as_str()));
        assert_eq!(r.tag(), None);
        assert_eq!(r.docker_name(), "team/app");
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            " redis",
            "Redis",
            "redis:",
            "redis:bad tag",
            "../x",
            "a//b",
            "redis@sha256:abc",
            "redis@md5:0123456789abcdef0123456789abcdef",
            "redis;rm -rf /",
            "$(id)",
            "ABC/x",
            "171defY/9abc",
        ] {
            let e = ImageRef::parse(bad).expect_err(bad);
            assert!(e.to_string().starts_with("invalid image reference"), "{e}");
        }
        assert!(ImageRef::parse(&"a".repeat(600)).is_err());
    }
}
