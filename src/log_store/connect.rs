//! The connection pool and the schema migrations.
//!
//! The client is tokio-postgres under deadpool-postgres: async on the gateway's own runtime,
//! binary protocol with typed parameters (arrays for batched inserts), no build-time database
//! (sqlx's checked queries need one, or checked-in metadata), and rustls like the rest of the
//! gateway. `sslmode` in the URL decides TLS (`prefer` by default: TLS when the server offers
//! it; `require`: TLS or nothing; `disable`). As with libpq in those modes, the connection is
//! encrypted but the server's certificate is not checked against a CA.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

/// Connections the gateway keeps to PostgreSQL.
const POOL_SIZE: usize = 16;
/// Longest wait for a connection (pool or new).
const WAIT: Duration = Duration::from_secs(5);
/// Key of the advisory lock that serialises migrations of several starting processes.
const MIGRATION_LOCK: i64 = 0x6573_7461_6665_7461; // "estafeta"

mod embedded {
    refinery::embed_migrations!("src/log_store/migrations");
}

/// A failure of the log store.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    #[error("log_store.url is not a PostgreSQL URL: {0}")]
    Url(#[source] tokio_postgres::Error),
    #[error("cannot set up TLS for the log store: {0}")]
    Tls(String),
    #[error("PostgreSQL: {}", describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("PostgreSQL connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("PostgreSQL pool: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
    #[error("log store migrations: {0}")]
    Migrate(#[from] refinery::Error),
    #[error("log store: unexpected data: {0}")]
    Data(String),
}

/// tokio-postgres says "db error" for every refusal; the SQLSTATE and PostgreSQL's own message
/// say what it was.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

impl LogStoreError {
    /// PostgreSQL's refusal, when it was reached and said no (its SQLSTATE and message), also
    /// of a connection it would not open (a wrong password).
    pub fn refusal(&self) -> Option<&tokio_postgres::error::DbError> {
        match self {
            LogStoreError::Postgres(e) => e.as_db_error(),
            LogStoreError::Pool(deadpool_postgres::PoolError::Backend(e)) => e.as_db_error(),
            _ => None,
        }
    }

    /// Whether PostgreSQL refused rows for what they hold, so sending the same rows again
    /// cannot succeed: SQLSTATE classes 21 (cardinality), 22 (data exception: a NUL, a value
    /// out of range), 23 (integrity constraint) and 54 (program limit: a value too large). A
    /// missing partition (also class 23) is not a row's fault: it is created and retried.
    pub fn is_row_fault(&self) -> bool {
        self.refusal().is_some_and(|db| {
            matches!(db.code().code().get(..2), Some("21" | "22" | "23" | "54"))
                && !is_missing_partition(db)
        })
    }

    /// Whether the statement failed because a day's partition is missing (dropped behind the
    /// gateway's back, so its list of known days is wrong).
    pub fn is_missing_partition(&self) -> bool {
        self.refusal().is_some_and(is_missing_partition)
    }
}

fn is_missing_partition(db: &tokio_postgres::error::DbError) -> bool {
    db.code() == &tokio_postgres::error::SqlState::CHECK_VIOLATION
        && db.message().starts_with("no partition of relation")
}

/// The URL with its password replaced, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = userinfo.split(':').next().unwrap_or_default();
    if userinfo.contains(':') {
        format!("{scheme}://{user}:***@{host}")
    } else {
        format!("{scheme}://{user}@{host}")
    }
}

/// The pool; connections open lazily, on first use.
pub(super) fn pool(url: &str) -> Result<Pool, LogStoreError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(LogStoreError::Url)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(WAIT);
    }
    config.application_name("estafeta");
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config()?);
    let manager = Manager::from_config(
        config,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(WAIT))
        .create_timeout(Some(WAIT))
        .recycle_timeout(Some(WAIT))
        .build()?)
}

/// TLS as libpq's `sslmode=prefer` and `require` do it: the connection is encrypted, the
/// server's certificate is not checked against a CA (PostgreSQL servers commonly run with a
/// self-signed one, Debian's default among them). The handshake's signatures are verified.
fn tls_config() -> Result<rustls::ClientConfig, LogStoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| LogStoreError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth(),
    )
}

/// Accepts the server's certificate as libpq's `require` does; checks the handshake.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Runs the embedded migrations that have not run yet. Several processes starting together
/// take turns on an advisory lock, so each migration runs once.
pub(super) async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), LogStoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let pg: &mut tokio_postgres::Client = client.as_mut();
    let ran = embedded::migrations::runner().run_async(pg).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    let report = ran?;
    for m in report.applied_migrations() {
        tracing::info!(
            version = m.version(),
            name = m.name(),
            "log store migration applied"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        assert_eq!(redact_url("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(redact_url("postgres://db/x"), "postgres://db/x");
        assert_eq!(redact_url("host=db user=u"), "host=db user=u");
    }

    #[test]
    fn bad_urls_are_refused() {
        assert!(matches!(
            pool("postgres://[bad"),
            Err(LogStoreError::Url(_))
        ));
    }
}
