//! The `estafeta` binary: parses the command line, loads the config, and hands over to
//! [`estafeta::app::run`]. No business logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use estafeta::app::{self, Listeners, Role};
use estafeta::config::{self, Config};
use estafeta::edge::tls;
use estafeta::telemetry;
use tokio_util::sync::CancellationToken;

/// glibc's allocator serialises threads on its arena locks under this load; mimalloc's
/// per-thread heaps do not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "estafeta", version, about = "Webhook gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file (else $ESTAFETA_CONFIG, else config/estafeta.toml).
        #[arg(long, env = "ESTAFETA_CONFIG", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Which components this process runs.
        #[arg(long, value_enum, default_value = "all")]
        role: Role,
    },
    /// Validate the config and print it with secrets redacted.
    CheckConfig {
        #[arg(long, env = "ESTAFETA_CONFIG", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Run jq programs for a gateway over stdin and stdout (the gateway starts these).
    #[command(hide = true)]
    JqWorker {
        /// Address space of the process, MiB (0: unlimited).
        #[arg(long, default_value_t = 512)]
        memory_mb: u64,
        /// Largest output of a program (bytes, as JSON).
        #[arg(long, default_value_t = 1024 * 1024)]
        max_output_bytes: usize,
    },
    /// Write a self-signed development certificate and key (PEM).
    GenCert {
        /// Folder for dev.crt and dev.key.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// Names and addresses the certificate is valid for (repeatable).
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, role } => serve(&config, role),
        Command::CheckConfig { config } => check_config(&config),
        Command::GenCert { out, hosts } => gen_cert(&out, hosts),
        Command::JqWorker {
            memory_mb,
            max_output_bytes,
        } => match estafeta::sandbox::worker::serve(estafeta::sandbox::worker::WorkerLimits {
            memory_mb,
            max_output_bytes,
        }) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("estafeta: {message}");
    ExitCode::FAILURE
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match Config::load(path).and_then(|c| c.to_redacted_toml()) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn gen_cert(out: &std::path::Path, hosts: Vec<String>) -> ExitCode {
    let hosts = if hosts.is_empty() {
        vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
    } else {
        hosts
    };
    let (cert, key) = (out.join("dev.crt"), out.join("dev.key"));
    match tls::write_dev_cert(&cert, &key, &hosts) {
        Ok(()) => {
            println!("wrote {} and {}", cert.display(), key.display());
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn serve(path: &std::path::Path, role: Role) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let tracing = match config.telemetry.resolve(|name| std::env::var(name).ok()) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    // The exporter lives on the runtime (its gRPC channel, its HTTP client).
    let _flush_at_exit = match &tracing {
        None => None,
        Some(t) => match runtime.block_on(async { estafeta::traces::start(t) }) {
            Ok(guard) => Some(guard),
            Err(e) => return fail(format!("telemetry: cannot export traces: {e}")),
        },
    };
    telemetry::init_logging(&config.log);
    if let Some(t) = &tracing {
        tracing::info!(
            endpoint = t.endpoint.as_deref().unwrap_or("(from OTEL_EXPORTER_OTLP_*)"),
            protocol = ?t.protocol,
            sample_ratio = t.sample_ratio,
            "exporting traces"
        );
    }
    runtime.block_on(async move {
        let listeners = match Listeners::bind(&config, role).await {
            Ok(l) => l,
            Err(e) => return fail(e),
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(watch_signals(shutdown.clone()));
        match app::run(config, role, listeners, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        }
    })
}

/// First SIGTERM/SIGINT: graceful shutdown. A second one: exit at once.
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("estafeta: cannot install signal handlers; stop with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("signal received: shutting down gracefully (send it again to exit at once)");
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal: exiting without draining");
    std::process::exit(1);
}
