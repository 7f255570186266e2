//! Image references as NodeImage names them: the familiar name (Docker Hub's `docker.io/` and
//! `library/` stripped, as `nginx` or `ghcr.io/org/app`) and a tag or digest (`sha256:…`).
//!
//! The grammar is docker/distribution's reference grammar (what kruise-daemon parses with), read
//! without a regular expression: oci-spec's port of it compiles a Unicode-aware regex that keeps
//! ~12 MiB on the heap once used (the agent's largest allocation), and its Unicode `\w` accepts tags
//! Go's ASCII `\w` refuses. `tests/fuzz.rs` checks this parser against oci-spec on ASCII input.

const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
const OFFICIAL_PREFIX: &str = "library/";
/// docker/distribution's `NameTotalLengthMax`.
const NAME_MAX: usize = 255;
/// `[\w][\w.-]{0,127}`.
const TAG_MAX: usize = 128;

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
        let invalid = |m: Malformed| InvalidReference {
            reference: reference.to_string(),
            reason: m.reason().to_string(),
        };
        let parts = split(reference).map_err(invalid)?;
        let tag = parts.digest.or(parts.tag).unwrap_or("latest").to_string();
        let (registry, repository) = split_domain(parts.name);
        if repository.len() > NAME_MAX {
            return Err(invalid(Malformed::TooLong));
        }
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            // The grammar reads `UPPER/x` as a registry host `UPPER`; docker's normalisation
            // does not (no dot, colon or `localhost`), and paths must be lowercase.
            return Err(invalid(Malformed::Uppercase));
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

/// What the grammar refuses, in docker/distribution's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Malformed {
    Empty,
    Format,
    Uppercase,
    TooLong,
    Tag,
    Digest,
    DigestLength,
    DigestAlgorithm,
}

impl Malformed {
    fn reason(self) -> &'static str {
        match self {
            Self::Empty => "repository name must have at least one component",
            Self::Format => "invalid reference format",
            Self::Uppercase => "repository name must be lowercase",
            Self::TooLong => "repository name must not be more than 255 characters",
            Self::Tag => "invalid tag format",
            Self::Digest => "invalid digest format",
            Self::DigestLength => "invalid checksum digest length",
            Self::DigestAlgorithm => "unsupported digest algorithm",
        }
    }
}

/// A reference cut into its grammar's parts: `name[:tag][@digest]`.
struct Parts<'a> {
    name: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

fn split(reference: &str) -> Result<Parts<'_>, Malformed> {
    if reference.is_empty() {
        return Err(Malformed::Empty);
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (reference, None),
    };
    // A tag is after the last colon when no slash follows it (a port's colon has one).
    let (name, tag) = match rest.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
        _ => (rest, None),
    };
    if !valid_name(name) {
        let lower = name.to_ascii_lowercase();
        return Err(if lower != name && valid_name(&lower) {
            Malformed::Uppercase
        } else {
            Malformed::Format
        });
    }
    if tag.is_some_and(|t| !valid_tag(t)) {
        return Err(Malformed::Tag);
    }
    if let Some(digest) = digest {
        check_digest(digest)?;
    }
    Ok(Parts { name, tag, digest })
}

/// `[domain/]path(/path)*`: the first component is a path component, or a domain when more follow.
fn valid_name(name: &str) -> bool {
    let mut components = name.split('/');
    let first = components.next().unwrap_or_default();
    let mut rest = components.peekable();
    let first_ok = path_component(first) || (rest.peek().is_some() && domain(first));
    first_ok && rest.all(path_component)
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn path_component(c: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    if !bytes.first().is_some_and(alnum) || !bytes.last().is_some_and(alnum) {
        return false;
    }
    bytes
        .split(alnum)
        .filter(|sep| !sep.is_empty())
        .all(|sep| matches!(sep, b"." | b"_" | b"__") || sep.iter().all(|b| *b == b'-'))
}

/// `host[:port]`, host = `component(.component)*`, component = `[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?`.
fn domain(d: &str) -> bool {
    let (host, port) = match d.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (d, None),
    };
    let component = |c: &str| {
        let b = c.as_bytes();
        b.first().is_some_and(u8::is_ascii_alphanumeric)
            && b.last().is_some_and(u8::is_ascii_alphanumeric)
            && b.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
    };
    host.split('.').all(component)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `[\w][\w.-]{0,127}` with Go's ASCII `\w`.
fn valid_tag(tag: &str) -> bool {
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    let b = tag.as_bytes();
    b.len() <= TAG_MAX
        && b.first().is_some_and(word)
        && b.iter().all(|b| word(b) || *b == b'.' || *b == b'-')
}

/// `algorithm:hex`: algorithm = `[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*`, hex of at
/// least 32 digits, and of the length its algorithm gives (sha256, sha384, sha512).
fn check_digest(digest: &str) -> Result<(), Malformed> {
    let (algorithm, hex) = digest.split_once(':').ok_or(Malformed::Digest)?;
    let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|c| {
        let b = c.as_bytes();
        b.first().is_some_and(u8::is_ascii_alphabetic) && b.iter().all(u8::is_ascii_alphanumeric)
    });
    if !algorithm_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Malformed::Digest);
    }
    let want = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(Malformed::DigestAlgorithm),
    };
    if hex.len() == want {
        Ok(())
    } else {
        Err(Malformed::DigestLength)
    }
}

/// Docker's domain split: the first component is a registry when it has a dot or a colon or is
/// `localhost`; Docker Hub's official images get `library/`.
fn split_domain(name: &str) -> (String, String) {
    let (mut registry, repository) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (first, rest),
        _ => (DOCKER_HUB, name),
    };
    if registry == DOCKER_HUB_LEGACY {
        registry = DOCKER_HUB;
    }
    let repository = if registry == DOCKER_HUB && !repository.contains('/') {
        format!("{OFFICIAL_PREFIX}{repository}")
    } else {
        repository.to_string()
    };
    (registry.to_string(), repository)
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
    fn the_grammar_as_go_reads_it() {
        for (input, registry, repository, tag) in [
            (
                "a__b-c---d/e.f_g:tag_1.0-x",
                "docker.io",
                "a__b-c---d/e.f_g",
                "tag_1.0-x",
            ),
            (
                "Host-1.example:443/a/b",
                "Host-1.example:443",
                "a/b",
                "latest",
            ),
            ("localhost:5000/a", "localhost:5000", "a", "latest"),
            ("host:5000", "docker.io", "library/host", "5000"),
            ("_x/a", "", "", ""),
            ("a..b", "", "", ""),
            ("a___b", "", "", ""),
            ("-a", "", "", ""),
            ("a/", "", "", ""),
            ("a//b", "", "", ""),
            ("host:port/a", "", "", ""),
            ("a:.tag", "", "", ""),
            ("a:t\u{e9}", "", "", ""),
            ("a@md5:0123456789abcdef0123456789abcdef", "", "", ""),
        ] {
            match ImageRef::parse(input) {
                Ok(r) => assert_eq!(
                    (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
                    (registry, repository, tag),
                    "{input}"
                ),
                Err(e) => assert!(registry.is_empty(), "{input}: {e}"),
            }
        }
    }

    #[test]
    fn reasons_name_what_is_wrong() {
        let long = format!("a/{}", "b".repeat(254));
        for (input, reason) in [
            ("", "repository name must have at least one component"),
            ("Nginx", "repository name must be lowercase"),
            ("a b", "invalid reference format"),
            ("a:-x", "invalid tag format"),
            (&format!("a:{}", "t".repeat(129)), "invalid tag format"),
            ("a@sha256", "invalid digest format"),
            (
                "a@sha256:0123456789abcdef0123456789abcdef",
                "invalid checksum digest length",
            ),
            (
                "a@md5:0123456789abcdef0123456789abcdef",
                "unsupported digest algorithm",
            ),
            (
                &long,
                "repository name must not be more than 255 characters",
            ),
        ] {
            assert_eq!(
                ImageRef::parse(input).unwrap_err().reason,
                reason,
                "{input}"
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
