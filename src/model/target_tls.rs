//! How the gateway speaks TLS to a target: a private CA bundle (which *replaces* the web
//! roots for that target: a receiver behind a private CA is trusted for what that CA signs,
//! and nothing a public CA signs for its name), a client identity for mTLS, and the name its
//! certificate is checked against. Everything is checked when the target is saved (the PEM
//! parses, the key matches its certificate), so a delivery never meets a bad setting.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

use super::invalid::Invalid;
use super::secret::SecretText;

/// Largest CA bundle or certificate chain (bytes of PEM).
pub const MAX_PEM: usize = 256 * 1024;
/// Largest private key (bytes of PEM).
pub const MAX_KEY_PEM: usize = 16 * 1024;

/// A target's TLS settings, checked.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TlsFields", into = "TlsFields")]
pub struct TargetTls {
    fields: TlsFields,
    /// A digest of every field: targets with the same settings share one connection pool,
    /// and a change of settings starts a new one.
    fingerprint: [u8; 32],
}

/// [`TargetTls`] as it arrives and as it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsFields {
    /// PEM certificates trusted for this target instead of the web's public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 262144)]
    pub ca_pem: Option<String>,
    /// The client certificate (then its chain) presented for mTLS, PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 262144)]
    pub client_cert_pem: Option<String>,
    /// The client certificate's private key (PKCS#8, PKCS#1 or SEC1 PEM). Sealed at rest,
    /// never shown again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, max_length = 16384)]
    pub client_key_pem: Option<SecretText>,
    /// The name the server's certificate must carry (and the SNI sent), when it is not the
    /// URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 253)]
    pub server_name: Option<String>,
}

impl std::fmt::Debug for TargetTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetTls")
            .field("ca_pem", &self.fields.ca_pem.as_ref().map(|p| p.len()))
            .field("client_cert", &self.fields.client_cert_pem.is_some())
            .field("server_name", &self.fields.server_name)
            .finish()
    }
}

impl TryFrom<TlsFields> for TargetTls {
    type Error = Invalid;
    fn try_from(fields: TlsFields) -> Result<TargetTls, Invalid> {
        if fields.ca_pem.is_none()
            && fields.client_cert_pem.is_none()
            && fields.client_key_pem.is_none()
            && fields.server_name.is_none()
        {
            return Err(Invalid::new(
                "give at least one of ca_pem, client_cert_pem with client_key_pem, server_name (or null for none)",
            ));
        }
        let tls = TargetTls {
            fingerprint: fingerprint(&fields),
            fields,
        };
        // Built once here so that every refusal is found at save time, with its field.
        tls.client_config()?;
        if let Some(name) = &tls.fields.server_name {
            server_name(name).map_err(|e| e.within("server_name"))?;
        }
        Ok(tls)
    }
}

impl From<TargetTls> for TlsFields {
    fn from(t: TargetTls) -> TlsFields {
        t.fields
    }
}

impl utoipa::PartialSchema for TargetTls {
    fn schema() -> RefOr<Schema> {
        <TlsFields as utoipa::PartialSchema>::schema()
    }
}

impl ToSchema for TargetTls {
    fn name() -> std::borrow::Cow<'static, str> {
        "TargetTls".into()
    }
}

/// A target's TLS settings as answers show them: the certificates as given, the key masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TargetTlsView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert_pem: Option<String>,
    /// `***` when a key is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key_pem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl TargetTls {
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// The name the server's certificate is checked against, when it is not the URL's host.
    pub fn server_name(&self) -> Option<ServerName<'static>> {
        self.fields
            .server_name
            .as_deref()
            .and_then(|n| server_name(n).ok())
    }

    pub fn view(&self) -> TargetTlsView {
        TargetTlsView {
            ca_pem: self.fields.ca_pem.clone(),
            client_cert_pem: self.fields.client_cert_pem.clone(),
            client_key_pem: self
                .fields
                .client_key_pem
                .as_ref()
                .map(|_| "***".to_owned()),
            server_name: self.fields.server_name.clone(),
        }
    }

    /// The rustls client configuration: the CA bundle (or the web roots) and the client
    /// identity. ALPN is left to the connector.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, Invalid> {
        let f = &self.fields;
        let roots = match &f.ca_pem {
            Some(pem) => ca_roots(pem).map_err(|e| e.within("ca_pem"))?,
            None => web_roots(),
        };
        let builder = client_builder()?.with_root_certificates(roots);
        match (&f.client_cert_pem, &f.client_key_pem) {
            (None, None) => Ok(builder.with_no_client_auth()),
            (Some(_), None) => Err(Invalid::at(
                "client_key_pem",
                "is needed with client_cert_pem",
            )),
            (None, Some(_)) => Err(Invalid::at(
                "client_cert_pem",
                "is needed with client_key_pem",
            )),
            (Some(cert), Some(key)) => {
                let chain = certificates(cert).map_err(|e| e.within("client_cert_pem"))?;
                if key.len() > MAX_KEY_PEM {
                    return Err(Invalid::at(
                        "client_key_pem",
                        format!("must be at most {MAX_KEY_PEM} bytes"),
                    ));
                }
                let key = PrivateKeyDer::from_pem_slice(key.expose().as_bytes()).map_err(|_| {
                    Invalid::at(
                        "client_key_pem",
                        "is not a PEM private key (PKCS#8, PKCS#1 or SEC1)",
                    )
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| match e {
                        rustls::Error::InconsistentKeys(_) => Invalid::at(
                            "client_key_pem",
                            "does not match the certificate of client_cert_pem",
                        ),
                        other => Invalid::at("client_key_pem", format!("cannot be used: {other}")),
                    })
            }
        }
    }
}

/// The client configuration of a target without TLS settings: the web's public roots.
pub fn default_client_config() -> Result<rustls::ClientConfig, Invalid> {
    Ok(client_builder()?
        .with_root_certificates(web_roots())
        .with_no_client_auth())
}

fn client_builder()
-> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, Invalid> {
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Invalid::new(format!("the TLS library refused its defaults: {e}")))
}

fn web_roots() -> rustls::RootCertStore {
    rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned())
}

/// The certificates of a PEM text, in order; at least one.
fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, Invalid> {
    if pem.len() > MAX_PEM {
        return Err(Invalid::new(format!("must be at most {MAX_PEM} bytes")));
    }
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Invalid::new(format!("is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Invalid::new("holds no PEM certificate"));
    }
    Ok(certs)
}

/// A CA bundle as roots: every certificate must parse as a trust anchor.
fn ca_roots(pem: &str) -> Result<rustls::RootCertStore, Invalid> {
    let mut roots = rustls::RootCertStore::empty();
    for (n, cert) in certificates(pem)?.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| Invalid::new(format!("certificate {} is not a usable CA: {e}", n + 1)))?;
    }
    Ok(roots)
}

fn server_name(name: &str) -> Result<ServerName<'static>, Invalid> {
    if name.is_empty() || name.len() > 253 {
        return Err(Invalid::new("must be 1 to 253 characters"));
    }
    ServerName::try_from(name.to_owned())
        .map_err(|_| Invalid::new("is not a DNS name or an IP address"))
}

fn fingerprint(f: &TlsFields) -> [u8; 32] {
    digest(&[
        f.ca_pem.as_deref(),
        f.client_cert_pem.as_deref(),
        f.client_key_pem.as_ref().map(SecretText::expose),
        f.server_name.as_deref(),
    ])
}

/// A SHA-256 of optional parts, each length-prefixed (and an absent one marked), so that no
/// two different lists digest alike: the identity of a setting, for caches keyed by it.
pub fn digest(parts: &[Option<&str>]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in parts {
        match part {
            Some(p) => {
                h.update([1]);
                h.update((p.len() as u64).to_be_bytes());
                h.update(p.as_bytes());
            }
            None => h.update([0]),
        }
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        (params.self_signed(&key).unwrap(), key)
    }

    fn leaf() -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec!["client.test".into()]).unwrap();
        (c.cert.pem(), c.key_pair.serialize_pem())
    }

    fn parse(json: serde_json::Value) -> Result<TargetTls, String> {
        serde_json::from_value(json).map_err(|e| e.to_string())
    }

    #[test]
    fn good_settings_parse_and_keep_the_key_out_of_views() {
        let (ca, _) = ca();
        let (cert, key) = leaf();
        let tls = parse(serde_json::json!({
            "ca_pem": ca.pem(), "client_cert_pem": cert, "client_key_pem": key,
            "server_name": "receiver.internal"
        }))
        .unwrap();
        let shown = tls.view();
        assert!(shown.ca_pem.is_some() && shown.client_cert_pem.is_some());
        let view = serde_json::to_string(&tls.view()).unwrap();
        assert!(!view.contains("PRIVATE KEY"), "{view}");
        assert!(view.contains("\"client_key_pem\":\"***\""), "{view}");
        assert!(!format!("{tls:?}").contains("PRIVATE KEY"));
        // Stored whole (sealed by the store), read back the same.
        let back: TargetTls = serde_json::from_str(&serde_json::to_string(&tls).unwrap()).unwrap();
        assert_eq!(back, tls);
        assert_eq!(back.fingerprint(), tls.fingerprint());
    }

    #[test]
    fn bad_settings_name_their_field() {
        let (cert, key) = leaf();
        let (_, other_key) = leaf();
        let refused = |json: serde_json::Value, what: &str| {
            let e = parse(json).err().unwrap_or_default();
            assert!(e.contains(what), "{e}");
        };
        refused(serde_json::json!({}), "at least one");
        refused(
            serde_json::json!({"ca_pem": "not a certificate"}),
            "ca_pem holds no PEM certificate",
        );
        refused(
            serde_json::json!({"ca_pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}),
            "ca_pem certificate 1 is not a usable CA",
        );
        refused(
            serde_json::json!({"client_cert_pem": cert}),
            "client_key_pem is needed",
        );
        refused(
            serde_json::json!({"client_key_pem": key}),
            "client_cert_pem is needed",
        );
        refused(
            serde_json::json!({"client_cert_pem": cert, "client_key_pem": other_key}),
            "client_key_pem does not match",
        );
        refused(
            serde_json::json!({"client_cert_pem": cert, "client_key_pem": "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n"}),
            "client_key_pem",
        );
        refused(
            serde_json::json!({"server_name": "not a name!"}),
            "server_name is not a DNS name",
        );
        refused(serde_json::json!({"sni": "x"}), "unknown field");
    }

    #[test]
    fn different_settings_have_different_fingerprints() {
        let a = parse(serde_json::json!({"server_name": "a.test"})).unwrap();
        let b = parse(serde_json::json!({"server_name": "b.test"})).unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
    }
}
