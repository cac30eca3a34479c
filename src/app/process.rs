//! What a process is: the role it runs, the sockets it serves on, and why it could not start.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::edge::tls;
use crate::redis::connection::RedisSetupError;

/// What a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Edge and admin listeners, dispatcher, monitor checker, maintenance.
    All,
    /// Edge and admin listeners only.
    Edge,
    /// Dispatcher, monitor checker and maintenance, with the admin listener for metrics.
    Dispatcher,
}

impl Role {
    pub(super) fn serves_edge(self) -> bool {
        matches!(self, Role::All | Role::Edge)
    }

    pub(super) fn runs_background(self) -> bool {
        matches!(self, Role::All | Role::Dispatcher)
    }
}

/// A failure to start; its message is the one line `serve` prints.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Redis(#[from] RedisSetupError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr} ({key}): {cause}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("cannot apply tenants[{index}] (`{id}`) from the config: {cause}")]
    DeclaredTenant {
        index: usize,
        id: String,
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot use the log store at {url}: {cause}")]
    LogStore {
        url: String,
        cause: crate::log_store::LogStoreError,
    },
    #[error("cannot prepare Redis: {what}: {cause}")]
    Prepare {
        what: &'static str,
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StartError {
    pub(super) fn prepare(what: &'static str) -> impl FnOnce(fred::error::Error) -> StartError {
        move |e| StartError::Prepare {
            what,
            cause: Box::new(e),
        }
    }
}

/// The sockets a process serves on, bound before [`run`] so tests can bind port 0.
#[derive(Debug, Default)]
pub struct Listeners {
    pub edge_tls: Option<TcpListener>,
    pub edge_plain: Option<TcpListener>,
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds the configured addresses that `role` serves.
    pub async fn bind(config: &Config, role: Role) -> Result<Listeners, StartError> {
        async fn bind_one(key: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
            TcpListener::bind(addr)
                .await
                .map_err(|cause| StartError::Bind { key, addr, cause })
        }
        let mut out = Listeners::default();
        if role.serves_edge() {
            if let Some(addr) = config.edge.listen {
                out.edge_tls = Some(bind_one("edge.listen", addr).await?);
            }
            if let Some(addr) = config.edge.plain_listen {
                out.edge_plain = Some(bind_one("edge.plain_listen", addr).await?);
            }
        }
        out.admin = Some(bind_one("admin.listen", config.admin.listen).await?);
        Ok(out)
    }
}
