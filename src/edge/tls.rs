//! TLS for the edge: rustls server configuration (TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`),
//! PEM loading, and self-signed development certificates (rcgen).
//!
//! Development certificates are generated, never committed: `estafeta gen-cert`, or at start
//! when `tls.generate_dev_cert = true` and the files are missing. The private key is written
//! with mode 0600.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.cert {path}: {cause}")]
    Cert { path: PathBuf, cause: String },
    #[error("tls.key {path}: {cause}")]
    Key { path: PathBuf, cause: String },
    #[error("certificate and key do not match or are unusable: {0}")]
    Config(String),
    #[error("cannot generate a development certificate: {0}")]
    Generate(String),
    #[error("cannot write {path}: {cause}")]
    Write { path: PathBuf, cause: String },
}

/// Builds the edge's rustls configuration from the configured files, generating development
/// files first when asked to and they are missing.
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    if cfg.generate_dev_cert && !(cfg.cert.exists() && cfg.key.exists()) {
        write_dev_cert(&cfg.cert, &cfg.key, &cfg.dev_cert_hosts)?;
        tracing::warn!(cert = %cfg.cert.display(), "generated a self-signed development certificate");
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert {
            path: cfg.cert.clone(),
            cause: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: cfg.cert.clone(),
            cause: "no certificate in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|e| TlsError::Key {
        path: cfg.key.clone(),
        cause: e.to_string(),
    })?;
    build(certs, key)
}

fn build(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A self-signed certificate and its key, PEM.
pub struct DevCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for DevCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCert")
            .field("key_pem", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// Generates a self-signed certificate for `hosts` (names or IP addresses).
pub fn generate_dev_cert(hosts: &[String]) -> Result<DevCert, TlsError> {
    let hosts = if hosts.is_empty() {
        vec!["localhost".to_owned()]
    } else {
        hosts.to_vec()
    };
    let certified =
        rcgen::generate_simple_self_signed(hosts).map_err(|e| TlsError::Generate(e.to_string()))?;
    Ok(DevCert {
        cert_pem: certified.cert.pem(),
        key_pem: certified.key_pair.serialize_pem(),
    })
}

/// Writes a generated certificate to `cert` and its key to `key` (mode 0600).
pub fn write_dev_cert(cert: &Path, key: &Path, hosts: &[String]) -> Result<(), TlsError> {
    let generated = generate_dev_cert(hosts)?;
    for path in [cert, key] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| TlsError::Write {
                path: dir.to_owned(),
                cause: e.to_string(),
            })?;
        }
    }
    write_file(cert, generated.cert_pem.as_bytes(), 0o644)?;
    write_file(key, generated.key_pem.as_bytes(), 0o600)?;
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let err = |e: std::io::Error| TlsError::Write {
        path: path.to_owned(),
        cause: e.to_string(),
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = options.open(path).map_err(err)?;
    f.write_all(bytes).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_cert_loads_with_alpn() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let cfg = TlsConfig {
            cert: dir.path().join("c/dev.crt"),
            key: dir.path().join("c/dev.key"),
            generate_dev_cert: true,
            dev_cert_hosts: vec!["localhost".into(), "127.0.0.1".into()],
        };
        let server = server_config(&cfg)?;
        assert_eq!(
            server.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&cfg.key)?.permissions().mode() & 0o777, 0o600);
        }
        Ok(())
    }

    #[test]
    fn missing_files_name_the_key() {
        let cfg = TlsConfig {
            cert: PathBuf::from("/nonexistent/x.crt"),
            key: PathBuf::from("/nonexistent/x.key"),
            generate_dev_cert: false,
            dev_cert_hosts: vec![],
        };
        let err = server_config(&cfg)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("tls.cert /nonexistent/x.crt"), "{err}");
    }
}
