//! The `dgf` command line: run the proxy, check a config file, audit and policy tools.

use anyhow::Context;
use clap::{Parser, Subcommand};
use dgf_config::{Config, LogFormat, Protocol};
use dgf_proxy::app::App;
use dgf_proxy::tools;
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
    /// Audit log tools: verify the hash chain, pretty-print records.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Policy tools: explain a decision, run table-driven policy tests.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the hash chain across FILEs (oldest first). One FILE: it and its rotated siblings.
    /// Exit 0 intact, 1 broken (the first broken line is printed), 2 unreadable.
    Verify {
        /// Audit files, oldest first (or one live file: its rotated siblings are found).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Accept a chain that does not start at seq 1 (older files removed by retention).
        #[arg(long, conflicts_with = "after")]
        any_start: bool,
        /// Start right after an anchored record, given as SEQ:HASH (a chain tip kept elsewhere).
        #[arg(long, value_name = "SEQ:HASH")]
        after: Option<String>,
    },
    /// Pretty-print the last records of an audit file.
    Tail {
        /// Number of records.
        #[arg(short = 'n', long = "lines", default_value_t = 20)]
        lines: usize,
        /// Keep printing new records (follows rotation) until interrupted.
        #[arg(short, long)]
        follow: bool,
        /// Audit file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Show what the policy decides for one SQL string: decision, rules, row limit, mask plan.
    Explain {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Role of the session (repeat for several).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Route name (default: the first route of the dialect's protocol).
        #[arg(long)]
        route: Option<String>,
        /// SQL dialect: postgres or mysql.
        #[arg(long, default_value = "postgres")]
        dialect: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The statement(s).
        sql: String,
    },
    /// Run table-driven policy tests (see docs/policies.md). Exit 1 if any case fails.
    Test {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Cases file (TOML, `[[case]]` entries).
        cases: PathBuf,
    },
}

/// Runs an offline tool and maps its outcome to the exit code.
fn tool(result: Result<tools::Outcome, tools::ToolError>) -> ExitCode {
    match result {
        Ok(o) => ExitCode::from(o.exit_code()),
        Err(e) => {
            eprintln!("dgf: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Audit { command: AuditCommand::Verify { files, any_start, after } } => tool(
            tools::audit::start_from(any_start, after.as_deref())
                .and_then(|start| tools::audit::verify_cmd(&files, &start, &mut std::io::stdout())),
        ),
        Command::Audit { command: AuditCommand::Tail { lines, follow, file } } => {
            let never = std::sync::atomic::AtomicBool::new(false);
            tool(tools::audit::tail_cmd(&file, lines, follow, &never, &mut std::io::stdout()))
        }
        Command::Rules { command: RulesCommand::Explain { config, roles, route, dialect, json, sql } } => tool(
            tools::rules::explain_cmd(&config, &roles, route.as_deref(), &dialect, json, &sql, &mut std::io::stdout()),
        ),
        Command::Rules { command: RulesCommand::Test { config, cases } } => {
            tool(tools::rules::test_cmd(&config, &cases, &mut std::io::stdout()))
        }
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
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let threads = cfg.server.worker_threads(cores);
            let rt = match threads {
                1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
                n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
            };
            let rt = match rt {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let auto = if cfg.server.workers.is_none() { " (server.workers unset)" } else { "" };
            tracing::info!("{threads} worker thread(s) for {cores} usable core(s){auto}");
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
