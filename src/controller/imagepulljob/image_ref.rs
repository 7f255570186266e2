//! Image reference normalisation as the manager does it (`NormalizeImageRefToNameTag`): the
//! familiar repository name (`nginx`, `ghcr.io/org/app`, `127.0.0.1:5000/app`) and the tag, or the
//! digest when there is one; `latest` when neither is given. Parsing is oci-spec's docker
//! reference grammar.

use oci_spec::distribution::Reference;

const DOCKER_HUB: &str = "docker.io";
const OFFICIAL_PREFIX: &str = "library/";

/// An image split into the NodeImage key (familiar name) and tag-or-digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageName {
    pub name: String,
    pub tag: String,
}

/// Normalises `image`; the error is a message for `status.message`.
pub fn normalize(image: &str) -> Result<ImageName, String> {
    let image = image.trim();
    let invalid = |e: &dyn std::fmt::Display| format!("invalid image {image:?}: {e}");
    let reference: Reference = image.parse().map_err(|e| invalid(&e))?;
    // Docker refuses upper-case repository names; oci-spec's grammar lets some through.
    if reference
        .repository()
        .chars()
        .any(|c| c.is_ascii_uppercase())
    {
        return Err(invalid(&"repository name must be lowercase"));
    }
    let repository = reference.repository();
    let name = if reference.registry() == DOCKER_HUB {
        match repository.strip_prefix(OFFICIAL_PREFIX) {
            Some(rest) if !rest.contains('/') => rest.to_string(),
            _ => repository.to_string(),
        }
    } else {
        format!("{}/{}", reference.registry(), repository)
    };
    let tag = reference
        .digest()
        .or(reference.tag())
        .unwrap_or("latest")
        .to_string();
    Ok(ImageName { name, tag })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(image: &str) -> (String, String) {
        let n = normalize(image).unwrap();
        (n.name, n.tag)
    }

    #[test]
    fn familiar_names_and_tags() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let cases = [
            ("nginx", "nginx", "latest"),
            ("nginx:1.25", "nginx", "1.25"),
            ("docker.io/library/nginx:1.25", "nginx", "1.25"),
            ("index.docker.io/library/nginx", "nginx", "latest"),
            ("docker.io/org/app:v1", "org/app", "v1"),
            ("ghcr.io/org/app", "ghcr.io/org/app", "latest"),
            ("127.0.0.1:5000/pull/a:v2", "127.0.0.1:5000/pull/a", "v2"),
            ("localhost/app:1", "localhost/app", "1"),
        ];
        for (image, name, tag) in cases {
            assert_eq!(ok(image), (name.to_string(), tag.to_string()), "{image}");
        }
        assert_eq!(
            ok(&format!("127.0.0.1:5000/a@{digest}")),
            ("127.0.0.1:5000/a".to_string(), digest.clone())
        );
        // A digest wins over a tag, as upstream.
        assert_eq!(ok(&format!("nginx:1.25@{digest}")).1, digest);
    }

    #[test]
    fn bad_references_are_messages() {
        for image in [
            "",
            "UPPER/case",
            "nginx:",
            "a b",
            "127.0.0.1:5000/x@sha256:12",
            "::",
        ] {
            let err = normalize(image).unwrap_err();
            assert!(err.starts_with("invalid image"), "{image}: {err}");
        }
    }
}
