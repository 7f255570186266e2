//! The webhook's serving certificate, made by the controller itself as kruise-manager does: a
//! fresh CA signs a certificate for the Service's DNS names and its key is then dropped (nothing
//! is ever signed by it again). The bundle lives in a Secret so that every replica serves the
//! same certificate; it is checked with webpki (chain, names, validity at a future instant) and
//! renewed [`RENEW_BEFORE`] it expires. The previous CA stays in the bundle through one renewal,
//! so a replica that still serves the older certificate is trusted until it reloads.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How long a serving certificate is valid (and its CA: the CA signs nothing else).
pub const VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// A certificate that expires within this is renewed.
pub const RENEW_BEFORE: Duration = Duration::from_secs(90 * 24 * 3600);
/// Certificates are valid from a little before they are made (clock skew between replicas and
/// the API server).
const BACKDATE: Duration = Duration::from_secs(3600);

/// Secret keys, as cert-manager and kruise-manager name them.
pub const KEY_CA: &str = "ca.crt";
pub const KEY_CERT: &str = "tls.crt";
pub const KEY_KEY: &str = "tls.key";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("making a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("reading the certificate bundle: {0}")]
    Parse(String),
    #[error("the certificate bundle is not usable: {0}")]
    Invalid(#[from] rustls::Error),
}

/// PEM texts: the CA bundle the API server trusts (the signing CA first, then the previous one),
/// the serving certificate and its private key.
#[derive(Clone, PartialEq, Eq)]
pub struct Bundle {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

/// The DNS names the API server may use for Service `service` in `namespace` (it dials
/// `<service>.<namespace>.svc`).
pub fn dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        format!("{service}.{namespace}"),
        service.to_string(),
    ]
}

fn offset(t: SystemTime) -> time::OffsetDateTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// A new CA and a serving certificate for `names`, valid from `now` for [`VALIDITY`]; the first
/// CA of `previous_ca` (PEM) stays trusted next to the new one.
pub fn issue(
    names: &[String],
    now: SystemTime,
    previous_ca: Option<&str>,
) -> Result<Bundle, Error> {
    let not_before = offset(now.checked_sub(BACKDATE).unwrap_or(now));
    let not_after = offset(now.checked_add(VALIDITY).unwrap_or(now));

    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "nodeward-controller webhook CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut params = CertificateParams::new(names.to_vec())?;
    if let Some(first) = names.first() {
        params
            .distinguished_name
            .push(DnType::CommonName, first.as_str());
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = not_before;
    params.not_after = not_after;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;

    let mut bundle = ca.pem();
    if let Some(prev) = previous_ca.and_then(first_pem_block) {
        bundle.push_str(&prev);
    }
    Ok(Bundle {
        ca: bundle,
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// The first `-----BEGIN ...-----` … `-----END ...-----` block of a PEM text, with its newline.
fn first_pem_block(pem: &str) -> Option<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem.find("-----BEGIN CERTIFICATE-----")?;
    let end = pem[start..].find(END)? + start + END.len();
    Some(format!("{}\n", &pem[start..end]))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn parse_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Parse(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Parse(format!("{what}: no certificate")));
    }
    Ok(certs)
}

/// The serving key pair from the bundle (the key must match the certificate).
pub fn certified_key(bundle: &Bundle) -> Result<CertifiedKey, Error> {
    let chain = parse_certs(&bundle.cert, KEY_CERT)?;
    let key = PrivateKeyDer::from_pem_slice(bundle.key.as_bytes())
        .map_err(|e| Error::Parse(format!("{KEY_KEY}: {e}")))?;
    Ok(CertifiedKey::from_der(chain, key, &provider())?)
}

/// Whether the bundle is fit to serve at each of `times`: the key matches the certificate, which
/// chains to a CA of the bundle and is valid for every name in `names` then.
pub fn check(bundle: &Bundle, names: &[String], times: &[SystemTime]) -> Result<(), Error> {
    certified_key(bundle)?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in parse_certs(&bundle.ca, KEY_CA)? {
        roots.add(ca)?;
    }
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| Error::Parse(format!("{KEY_CA}: {e}")))?;
    let chain = parse_certs(&bundle.cert, KEY_CERT)?;
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| Error::Parse(KEY_CERT.into()))?;
    for name in names {
        let server = ServerName::try_from(name.as_str())
            .map_err(|e| Error::Parse(format!("name {name}: {e}")))?;
        for at in times {
            let at = UnixTime::since_unix_epoch(
                at.duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default(),
            );
            verifier.verify_server_cert(leaf, intermediates, &server, &[], at)?;
        }
    }
    Ok(())
}

/// Whether the bundle must be replaced now: unusable, or expiring within [`RENEW_BEFORE`].
pub fn needs_renewal(bundle: &Bundle, names: &[String], now: SystemTime) -> Option<String> {
    let at = now.checked_add(RENEW_BEFORE).unwrap_or(now);
    check(bundle, names, &[now, at])
        .err()
        .map(|e| e.to_string())
}

/// The TLS server's certificate, replaced in place when the Secret changes.
#[derive(Debug, Default)]
pub struct Resolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl Resolver {
    pub fn set(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(key));
    }

    pub fn is_set(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// A TLS server configuration that serves whatever certificate is current (HTTP/1.1).
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn names() -> Vec<String> {
        dns_names("nodeward-controller-webhook", "nodeward-system")
    }

    #[test]
    fn a_fresh_bundle_serves_its_names_and_is_renewed_before_it_expires() {
        let now = SystemTime::now();
        let b = issue(&names(), now, None).unwrap();
        check(&b, &names(), &[now]).unwrap();
        assert_eq!(needs_renewal(&b, &names(), now), None);
        // 300 days on: within RENEW_BEFORE of the end.
        let later = now + 300 * DAY;
        assert!(needs_renewal(&b, &names(), later).is_some());
        assert!(check(&b, &names(), &[now + 400 * DAY]).is_err());
        // Another Service name is not covered.
        let other = dns_names("other", "nodeward-system");
        assert!(needs_renewal(&b, &other, now).is_some());
    }

    #[test]
    fn the_previous_ca_stays_trusted_through_one_renewal() {
        let now = SystemTime::now();
        let old = issue(&names(), now, None).unwrap();
        let new = issue(&names(), now, Some(&old.ca)).unwrap();
        assert_eq!(parse_certs(&new.ca, KEY_CA).unwrap().len(), 2);
        // A replica still serving the old certificate is trusted by the new bundle.
        let mixed = Bundle {
            ca: new.ca.clone(),
            ..old.clone()
        };
        check(&mixed, &names(), &[now]).unwrap();
        // Only one generation back: the CA before `old` is dropped.
        let newer = issue(&names(), now, Some(&new.ca)).unwrap();
        assert_eq!(parse_certs(&newer.ca, KEY_CA).unwrap().len(), 2);
        let stale = Bundle {
            ca: newer.ca.clone(),
            ..old
        };
        assert!(check(&stale, &names(), &[now]).is_err());
    }

    #[test]
    fn a_key_of_another_certificate_or_garbage_is_refused() {
        let now = SystemTime::now();
        let a = issue(&names(), now, None).unwrap();
        let b = issue(&names(), now, None).unwrap();
        let swapped = Bundle {
            key: b.key.clone(),
            ..a.clone()
        };
        assert!(check(&swapped, &names(), &[now]).is_err());
        let garbage = Bundle {
            cert: "not a certificate".into(),
            ..a
        };
        assert!(needs_renewal(&garbage, &names(), now).is_some());
    }
}
