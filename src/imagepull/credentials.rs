//! Registry credentials from pull Secrets (`.dockerconfigjson` and `.dockercfg`), matched to an
//! image the way the kubelet's docker keyring does: a key is a registry host (glob parts such as
//! `*.example.com` allowed), an optional port and an optional path prefix; a scheme (`https://`)
//! and a `/v1/` or `/v2/` suffix are ignored, so `https://r.example.com/v1/` and `r.example.com`
//! are the same key (upstream issue #526). Docker Hub's aliases (`index.docker.io`,
//! `registry-1.docker.io`) all mean `docker.io`. Every matching credential is returned, longest
//! key first.

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use serde::Deserialize;

use crate::cri::image::RegistryAuth;

/// Secret data key of `kubernetes.io/dockerconfigjson` Secrets.
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
/// Secret data key of `kubernetes.io/dockercfg` Secrets.
pub const DOCKER_CFG_KEY: &str = ".dockercfg";

const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_ALIASES: [&str; 3] = ["index.docker.io", "registry-1.docker.io", "docker.io"];

/// A Secret whose docker configuration cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("has neither {DOCKER_CONFIG_JSON_KEY} nor {DOCKER_CFG_KEY}")]
    NoDockerConfig,
    #[error("{key} is not a docker configuration: {source}")]
    Malformed {
        key: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: HashMap<String, DockerConfigEntry>,
}

#[derive(Deserialize, Default)]
struct DockerConfigEntry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    /// base64 of `username:password`.
    #[serde(default)]
    auth: String,
}

impl DockerConfigEntry {
    /// Username and password, from the fields or else from `auth`; `None` when neither is usable.
    fn credentials(&self) -> Option<(String, String)> {
        if !self.username.is_empty() || !self.password.is_empty() {
            return Some((self.username.clone(), self.password.clone()));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(self.auth.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, pass) = decoded.split_once(':')?;
        Some((user.to_string(), pass.to_string()))
    }
}

/// A registry location: host (maybe with glob parts), port, path.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Location {
    host: String,
    port: Option<String>,
    path: String,
}

impl Location {
    /// Parse `[scheme://]host[:port][/path]`; a `/v1/` or `/v2/` path prefix is dropped and Docker
    /// Hub's aliases become `docker.io`.
    fn parse(s: &str) -> Self {
        let s = s.trim();
        let s = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))
            .unwrap_or(s);
        let (host_port, path) = match s.find('/') {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, ""),
        };
        let path = ["/v1/", "/v2/"]
            .iter()
            .find_map(|p| path.strip_prefix(p).map(|rest| format!("/{rest}")))
            .unwrap_or_else(|| path.to_string());
        let path = path.trim_end_matches('/').to_string();
        let (host, port) = match host_port.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                (h.to_string(), Some(p.to_string()))
            }
            _ => (host_port.to_string(), None),
        };
        let host = host.to_ascii_lowercase();
        let host = if DOCKER_HUB_ALIASES.contains(&host.as_str()) {
            DOCKER_HUB.to_string()
        } else {
            host
        };
        Location { host, port, path }
    }

    /// The key as the keyring sorts it.
    fn key(&self) -> String {
        let port = self
            .port
            .as_deref()
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        format!("{}{port}{}", self.host, self.path)
    }

    /// Whether this key matches `target`: same number of host parts each matching its glob, same
    /// port, and the key's path a prefix of the target's (at a `/` boundary).
    fn matches(&self, target: &Location) -> bool {
        let glob: Vec<&str> = self.host.split('.').collect();
        let host: Vec<&str> = target.host.split('.').collect();
        if glob.len() != host.len() || self.port != target.port {
            return false;
        }
        if !glob.iter().zip(&host).all(|(g, h)| glob_match(g, h)) {
            return false;
        }
        match target.path.strip_prefix(&self.path) {
            Some(rest) => self.path.is_empty() || rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

/// `*` (any run of characters) and `?` (one character) glob matching of one host part.
fn glob_match(glob: &str, s: &str) -> bool {
    let (g, s): (Vec<char>, Vec<char>) = (glob.chars().collect(), s.chars().collect());
    let (mut gi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if gi < g.len() && (g[gi] == '?' || g[gi] == s[si]) {
            gi += 1;
            si += 1;
        } else if gi < g.len() && g[gi] == '*' {
            star = Some((gi, si));
            gi += 1;
        } else if let Some((sg, ss)) = star {
            gi = sg + 1;
            si = ss + 1;
            star = Some((sg, ss + 1));
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|c| *c == '*')
}

/// Credentials by registry location, from any number of Secrets.
#[derive(Default, Debug)]
pub struct Keyring {
    entries: Vec<(Location, RegistryAuth)>,
}

impl Keyring {
    /// Add the credentials of one Secret's data. Returns how many entries it held.
    pub fn add_secret(
        &mut self,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<usize, CredentialError> {
        let auths = if let Some(raw) = data.get(DOCKER_CONFIG_JSON_KEY) {
            serde_json::from_slice::<DockerConfigJson>(raw)
                .map_err(|source| CredentialError::Malformed {
                    key: DOCKER_CONFIG_JSON_KEY,
                    source,
                })?
                .auths
        } else if let Some(raw) = data.get(DOCKER_CFG_KEY) {
            serde_json::from_slice::<HashMap<String, DockerConfigEntry>>(raw).map_err(|source| {
                CredentialError::Malformed {
                    key: DOCKER_CFG_KEY,
                    source,
                }
            })?
        } else {
            return Err(CredentialError::NoDockerConfig);
        };
        let mut added = 0;
        for (registry, entry) in auths {
            let Some((username, password)) = entry.credentials() else {
                continue;
            };
            let location = Location::parse(&registry);
            let auth = RegistryAuth {
                username,
                password,
                server_address: match &location.port {
                    Some(p) => format!("{}:{p}", location.host),
                    None => location.host.clone(),
                },
            };
            self.entries.push((location, auth));
            added += 1;
        }
        // Longest (most specific) key first, then a stable order.
        self.entries
            .sort_by_key(|(location, _)| std::cmp::Reverse(location.key()));
        Ok(added)
    }

    /// Every credential whose key matches `registry_path` (`host[:port]/repository`), most
    /// specific first, without duplicates. Empty: pull anonymously.
    pub fn lookup(&self, registry_path: &str) -> Vec<RegistryAuth> {
        let target = Location::parse(registry_path);
        let mut found: Vec<RegistryAuth> = Vec::new();
        for (location, auth) in &self.entries {
            if location.matches(&target) && !found.contains(auth) {
                found.push(auth.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn config_json(auths: &[(&str, &str, &str)]) -> BTreeMap<String, Vec<u8>> {
        let auths: serde_json::Map<String, serde_json::Value> = auths
            .iter()
            .map(|(k, u, p)| {
                (
                    k.to_string(),
                    serde_json::json!({"auth": b64(&format!("{u}:{p}"))}),
                )
            })
            .collect();
        BTreeMap::from([(
            DOCKER_CONFIG_JSON_KEY.to_string(),
            serde_json::to_vec(&serde_json::json!({ "auths": auths })).unwrap(),
        )])
    }

    fn users(found: &[RegistryAuth]) -> Vec<&str> {
        found.iter().map(|a| a.username.as_str()).collect()
    }

    #[test]
    fn keys_with_or_without_scheme_match() {
        for key in [
            "127.0.0.1:5000",
            "http://127.0.0.1:5000",
            "https://127.0.0.1:5000/",
            "https://127.0.0.1:5000/v2/",
            "127.0.0.1:5000/team",
        ] {
            let mut k = Keyring::default();
            assert_eq!(k.add_secret(&config_json(&[(key, "u", "p")])).unwrap(), 1);
            let found = k.lookup("127.0.0.1:5000/team/app");
            assert_eq!(users(&found), ["u"], "key {key}");
            assert_eq!(found[0].password, "p");
            assert_eq!(found[0].server_address, "127.0.0.1:5000");
        }
    }

    #[test]
    fn non_matching_keys_are_ignored() {
        let mut k = Keyring::default();
        k.add_secret(&config_json(&[
            ("127.0.0.1:5001", "other-port", "p"),
            ("127.0.0.1", "no-port", "p"),
            ("127.0.0.1:5000/teamx", "other-path", "p"),
            ("registry.example.com", "other-host", "p"),
        ]))
        .unwrap();
        assert!(k.lookup("127.0.0.1:5000/team/app").is_empty());
    }

    #[test]
    fn most_specific_first_and_globs() {
        let mut k = Keyring::default();
        k.add_secret(&config_json(&[
            ("*.example.com", "glob", "p"),
            ("r.example.com/team", "path", "p"),
            ("r.example.com", "host", "p"),
        ]))
        .unwrap();
        assert_eq!(
            users(&k.lookup("r.example.com/team/app")),
            ["path", "host", "glob"]
        );
        assert_eq!(users(&k.lookup("x.example.com/app")), ["glob"]);
        assert!(k.lookup("a.b.example.com/app").is_empty());
    }

    #[test]
    fn docker_hub_aliases() {
        let mut k = Keyring::default();
        k.add_secret(&config_json(&[("https://index.docker.io/v1/", "hub", "p")]))
            .unwrap();
        assert_eq!(users(&k.lookup("docker.io/library/nginx")), ["hub"]);
        assert!(k.lookup("ghcr.io/org/app").is_empty());
    }

    #[test]
    fn dockercfg_and_plain_fields() {
        let data = BTreeMap::from([(
            DOCKER_CFG_KEY.to_string(),
            br#"{"127.0.0.1:5000": {"username": "u", "password": "p:with:colons", "email": "e@x"}}"#
                .to_vec(),
        )]);
        let mut k = Keyring::default();
        assert_eq!(k.add_secret(&data).unwrap(), 1);
        let found = k.lookup("127.0.0.1:5000/app");
        assert_eq!(found[0].password, "p:with:colons");
        let data = BTreeMap::from([(
            DOCKER_CFG_KEY.to_string(),
            format!(r#"{{"127.0.0.1:5000": {{"auth": "{}"}}}}"#, b64("u:p:c")).into_bytes(),
        )]);
        let mut k = Keyring::default();
        k.add_secret(&data).unwrap();
        assert_eq!(k.lookup("127.0.0.1:5000/app")[0].password, "p:c");
    }

    #[test]
    fn bad_secrets_are_errors_not_panics() {
        let mut k = Keyring::default();
        assert!(matches!(
            k.add_secret(&BTreeMap::new()),
            Err(CredentialError::NoDockerConfig)
        ));
        let data = BTreeMap::from([(DOCKER_CONFIG_JSON_KEY.to_string(), b"{not json".to_vec())]);
        let e = k.add_secret(&data).unwrap_err();
        assert!(e.to_string().contains(".dockerconfigjson"), "{e}");
        // An entry without usable credentials is skipped.
        let data = BTreeMap::from([(
            DOCKER_CONFIG_JSON_KEY.to_string(),
            br#"{"auths": {"r.example.com": {"auth": "!!notbase64"}}}"#.to_vec(),
        )]);
        assert_eq!(k.add_secret(&data).unwrap(), 0);
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("r?", "r1"));
        assert!(glob_match("a*c", "abbbc"));
        assert!(!glob_match("a*c", "abbbd"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }
}
