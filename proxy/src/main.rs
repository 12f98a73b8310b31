//! The `dgf` command line: run the proxy, check a config file, print the version.

use anyhow::Context;
use clap::{Parser, Subcommand};
use dgf_config::{Config, LogFormat, Protocol};
use dgf_proxy::app::App;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser)]
#[command(
    name = "dgf",
    version,
    about = "Governing, pooling wire-protocol proxy for Postgres, MySQL, Redis and MongoDB"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (without --config: the embedded default, loopback only).
    Run {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and print every problem found.
    Check {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match dgf_config::load(&config) {
            Ok(cfg) => match dgf_proxy::live::build(cfg.clone(), &dgf_proxy::metrics::Metrics::new(), None) {
                Ok(_) => {
                    println!("{}: OK", config.display());
                    print!("{}", cfg.summary());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    ExitCode::FAILURE
                }
            },
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{} problem(s) found", errors.0.len());
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => {
            let cfg = match &config {
                Some(p) => match dgf_config::load(p) {
                    Ok(c) => c,
                    Err(errors) => {
                        eprintln!("{errors}");
                        return ExitCode::FAILURE;
                    }
                },
                None => dgf_config::default_config(),
            };
            init_logging(&cfg);
            let rt = match cfg.server.workers {
                1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
                0 => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
                n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
            };
            let rt = match rt {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(run(cfg, config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("dgf: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(cfg: &Config) {
    let filter = std::env::var("DGF_LOG").unwrap_or_else(|_| cfg.log.level.clone());
    let filter =
        tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(cfg: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::info!(nofile = n, "open-file limit raised"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    let admin_addr = cfg.admin.listen.clone();
    let summary = connect_hints(&cfg);
    let app = App::new(cfg, path).context("configuration")?;
    app.bind_routes().await.context("binding listeners")?;
    let admin =
        tokio::net::TcpListener::bind(&admin_addr).await.with_context(|| format!("admin: bind {admin_addr}"))?;
    let router = dgf_proxy::admin::router(app.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(admin, router).await {
            tracing::error!(error = %e, "admin server stopped");
        }
    });
    app.spawn_maintenance();
    println!("dgf {} ready. Admin: http://{admin_addr}/metrics", env!("CARGO_PKG_VERSION"));
    for line in summary {
        println!("{line}");
    }
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = hup.recv() => { let _ = app.reload().await; }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down: no new connections, draining clients");
    app.shutdown().await;
    Ok(())
}

fn connect_hints(cfg: &Config) -> Vec<String> {
    let user = cfg.users.first().map(|u| u.name.as_str()).unwrap_or("USER");
    cfg.routes
        .iter()
        .map(|r| match r.protocol {
            Protocol::Postgres => format!(
                "  route {}: psql \"postgres://{user}@{}/DBNAME\"   (upstream {})",
                r.name,
                r.listen,
                redact(&r.upstream)
            ),
            _ => format!("  route {}: {:?} on {}", r.name, r.protocol, r.listen),
        })
        .collect()
}

/// Hide the password of a URL for display.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("****"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}
