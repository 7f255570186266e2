//! Image references as NodeImage names them: the familiar name (Docker Hub's `docker.io/` and
//! `library/` stripped, as `nginx` or `ghcr.io/org/app`) and a tag or digest (`sha256:…`).
//! Parsing and Docker Hub normalisation are oci-spec's (a port of docker/distribution's
//! reference grammar).

use oci_spec::distribution::Reference;

const DOCKER_HUB: &str = "docker.io";
const OFFICIAL_PREFIX: &str = "library/";

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// Familiar name, as a NodeImage key spells it.
    pub name: String,
    /// Tag, or digest (`sha256:…`) when the reference has one.
    pub tag: String,
    /// Registry host (with port), `docker.io` for Docker Hub.
    pub registry: String,
    /// Repository path in the registry (`library/nginx` for Docker Hub's `nginx`).
    pub repository: String,
}

/// A reference that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct InvalidReference {
    pub reference: String,
    pub reason: String,
}

/// True when `tag` is a digest (`algorithm:hex`): tags cannot contain a colon.
pub fn is_digest(tag: &str) -> bool {
    tag.contains(':')
}

impl ImageRef {
    /// Parse a full reference (`nginx`, `nginx:1.25`, `host:5000/a/b@sha256:…`); a missing tag
    /// means `latest`, a digest wins over a tag.
    pub fn parse(reference: &str) -> Result<Self, InvalidReference> {
        let reference = reference.trim();
        let invalid = |reason: String| InvalidReference {
            reference: reference.to_string(),
            reason,
        };
        let parsed: Reference = reference.parse().map_err(|e| invalid(format!("{e}")))?;
        let tag = parsed
            .digest()
            .or(parsed.tag())
            .ok_or_else(|| invalid("no tag or digest".into()))?
            .to_string();
        let registry = parsed.registry().to_string();
        let repository = parsed.repository().to_string();
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            // The grammar reads `UPPER/x` as a registry host `UPPER`; docker's normalisation
            // does not (no dot, colon or `localhost`), and paths must be lowercase.
            return Err(invalid("repository name must be lowercase".into()));
        }
        // Docker's familiar name drops `library/` of official images only (`library/a/b` stays).
        let name = if registry == DOCKER_HUB {
            match repository.strip_prefix(OFFICIAL_PREFIX) {
                Some(rest) if !rest.contains('/') => rest.to_string(),
                _ => repository.clone(),
            }
        } else {
            format!("{registry}/{repository}")
        };
        Ok(Self {
            name,
            tag,
            registry,
            repository,
        })
    }

    /// The reference of a NodeImage entry: key `name` and one of its tags.
    pub fn from_node_image(name: &str, tag: &str) -> Result<Self, InvalidReference> {
        let joined = join(name, tag);
        if tag.is_empty() {
            return Err(InvalidReference {
                reference: joined,
                reason: "empty tag".into(),
            });
        }
        let parsed = Self::parse(&joined)?;
        if parsed.tag != tag {
            // `name` carried a tag or digest of its own.
            return Err(InvalidReference {
                reference: joined,
                reason: "the image name must not carry a tag or digest".into(),
            });
        }
        Ok(parsed)
    }

    /// What the runtime is asked to pull: `name:tag`, or `name@digest`.
    pub fn pull_ref(&self) -> String {
        join(&self.name, &self.tag)
    }

    /// `registry/repository`, what pull credentials are looked up for.
    pub fn registry_path(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

fn join(name: &str, tag: &str) -> String {
    if is_digest(tag) {
        format!("{name}@{tag}")
    } else {
        format!("{name}:{tag}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:6a3f8e9a0c2b4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6";

    #[test]
    fn familiar_names() {
        for (input, name, tag) in [
            ("nginx", "nginx", "latest"),
            ("nginx:1.25", "nginx", "1.25"),
            ("docker.io/library/nginx:1.25", "nginx", "1.25"),
            ("index.docker.io/library/nginx", "nginx", "latest"),
            ("docker.io/bitnami/redis:7", "bitnami/redis", "7"),
            ("ghcr.io/org/app:v1", "ghcr.io/org/app", "v1"),
            ("127.0.0.1:5000/busybox", "127.0.0.1:5000/busybox", "latest"),
            ("localhost/app:x", "localhost/app", "x"),
        ] {
            let r = ImageRef::parse(input).unwrap();
            assert_eq!((r.name.as_str(), r.tag.as_str()), (name, tag), "{input}");
        }
    }

    #[test]
    fn digests_are_kept_as_the_tag() {
        let r = ImageRef::parse(&format!("127.0.0.1:5000/app:1@{DIGEST}")).unwrap();
        assert_eq!(r.tag, DIGEST);
        assert_eq!(r.pull_ref(), format!("127.0.0.1:5000/app@{DIGEST}"));
        let r = ImageRef::from_node_image("nginx", DIGEST).unwrap();
        assert_eq!(r.pull_ref(), format!("nginx@{DIGEST}"));
        assert_eq!(r.registry_path(), "docker.io/library/nginx");
    }

    #[test]
    fn node_image_entries() {
        let r = ImageRef::from_node_image("127.0.0.1:5000/app", "v2").unwrap();
        assert_eq!(r.pull_ref(), "127.0.0.1:5000/app:v2");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.registry_path(), "127.0.0.1:5000/app");
        let r = ImageRef::from_node_image("docker.io/library/nginx", "1").unwrap();
        assert_eq!(r.pull_ref(), "nginx:1");
    }

    #[test]
    fn job_images_as_the_manager_normalises_them() {
        let r = ImageRef::parse(&format!("nginx:1.25@{DIGEST}")).unwrap();
        assert_eq!(r.tag, DIGEST, "a digest wins over a tag");
        let r = ImageRef::parse("docker.io/library/team/app:2").unwrap();
        assert_eq!(
            r.name, "library/team/app",
            "only official images lose library/"
        );
        for bad in [
            "",
            "nginx:",
            "a b",
            "::",
            "UPPER/case",
            "127.0.0.1:5000/x@sha256:12",
        ] {
            let e = ImageRef::parse(bad).unwrap_err();
            assert!(
                e.to_string().starts_with("invalid image reference"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn bad_references_say_why() {
        for (name, tag) in [
            ("Bad Image!!", "1"),
            ("UPPER/case", "1"),
            ("app", ""),
            ("app", "bad tag"),
            ("app", "sha256:short"),
            ("app:1", "2"),
            ("", "1"),
        ] {
            let e = ImageRef::from_node_image(name, tag).unwrap_err();
            let msg = e.to_string();
            assert!(msg.starts_with("invalid image reference"), "{msg}");
            assert!(!e.reason.is_empty(), "{msg}");
        }
    }
}
