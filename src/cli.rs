//! The `cheapmodel` command line: run (default), `check`, `hash-key`, `new-key`.
//! Pingora's own flags (`-d` daemon, `-u` upgrade, `-t` test) are kept as they are.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;

use crate::{access_log, auth, config, metrics, proxy, registry, reload, tasks};

/// Command line.
#[derive(Parser, Debug)]
#[command(name = "cheapmodel", version, about = "Cheap Model LLM API gateway")]
pub struct Cli {
    /// Subcommand; none runs the gateway.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Gateway config file (YAML).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Pingora's flags.
    #[command(flatten)]
    pub pingora: Opt,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate a config file: prints `ok`, or the failing field path and why (exit 1).
    Check,
    /// Print the sha256 hex of a key, for the config's `keys[].sha256`.
    HashKey {
        /// The key.
        key: String,
    },
    /// Generate a random `cm_` key (192 bits) and print it with its config entry.
    NewKey {
        /// Name for the key (logs and metrics).
        #[arg(long)]
        name: String,
    },
}

/// Runs the command line; returns the exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Some(Command::HashKey { key }) => {
            println!("{}", auth::hex(&auth::key_digest(key.as_bytes())));
            0
        }
        Some(Command::NewKey { name }) => new_key(&name),
        Some(Command::Check) => {
            let Some(path) = cli.config else {
                eprintln!("--config FILE is required");
                return 2;
            };
            match config::load(&path) {
                Ok(_) => {
                    println!("ok");
                    0
                }
                Err(e) => {
                    println!("{e}");
                    1
                }
            }
        }
        None => {
            let Some(path) = cli.config.clone() else {
                eprintln!("--config FILE is required (see conf/cheapmodel.example.yaml)");
                return 2;
            };
            // Daemon mode moves the working directory to `/`: reloads need an absolute path.
            let path = std::path::absolute(&path).unwrap_or(path);
            serve(path, cli.pingora)
        }
    }
}

fn new_key(name: &str) -> i32 {
    let mut bytes = [0u8; 24];
    if let Err(e) = getrandom::getrandom(&mut bytes) {
        eprintln!("no randomness available: {e}");
        return 1;
    }
    let key = format!("cm_{}", auth::hex(&bytes));
    println!("{key}");
    println!();
    println!("# add to keys: in the config (the key itself is not stored):");
    println!("  - name: {name}");
    println!("    sha256: \"{}\"", auth::hex(&auth::key_digest(key.as_bytes())));
    0
}

fn serve(path: PathBuf, opt: Opt) -> i32 {
    let loaded = match config::load(&path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("invalid config {}: {e}", path.display());
            return 1;
        }
    };
    let server_cfg = loaded.server;
    let mut conf = ServerConf { threads: server_cfg.threads, ..ServerConf::default() };
    if let Some(p) = &server_cfg.pid_file {
        conf.pid_file = p.clone();
    }
    if let Some(s) = &server_cfg.upgrade_sock {
        conf.upgrade_sock = s.clone();
    }
    conf.grace_period_seconds = server_cfg.grace_period_seconds.or(Some(30));
    conf.graceful_shutdown_timeout_seconds = server_cfg.graceful_shutdown_timeout_seconds.or(Some(10));
    if opt.test {
        println!("ok");
        return 0;
    }
    metrics::get();
    access_log::init(server_cfg.access_log);
    let registry = Arc::new(registry::Registry::new(loaded.snapshot));
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let store = tasks::store::MemoryStore::new(
        server_cfg.task_store_max_entries,
        server_cfg.task_store_max_bytes,
        Duration::from_secs(server_cfg.task_ttl_seconds),
    );
    let gateway = proxy::Gateway::new(
        registry.clone(),
        proxy::Settings { client_read_timeout: Duration::from_millis(server_cfg.client_read_timeout_ms) },
        tasks::Tasks::new(Arc::new(store)),
    );
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2c = true;
    let mut service = pingora::proxy::ProxyServiceBuilder::new(&server.configuration, gateway)
        .name("cheapmodel")
        .server_options(options)
        .build();
    for addr in &server_cfg.listen {
        service.add_tcp(addr);
    }
    server.add_service(service);
    if let Some(m) = &server_cfg.metrics {
        let mut prom = pingora_prometheus::prometheus_http_service();
        prom.add_tcp(m);
        server.add_service(prom);
    }
    server.add_service(pingora::services::background::background_service(
        "config-reload",
        reload::Reloader { path, registry, interval: Duration::from_secs(server_cfg.watch_interval_seconds) },
    ));
    server.run_forever()
}
