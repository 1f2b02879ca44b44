//! The `cheapmodel` command line: run (default), `check`, `hash-key`, `new-key`, `usage`.
//! Pingora's own flags (`-d` daemon, `-u` upgrade, `-t` test) are kept as they are.
//! Imports: everything it wires (`config`, `registry`, `reload`, `proxy`, `tasks`, `ledger`,
//! `limits`, `metrics`, `access_log`, `auth`, `memory`, `money`) and Pingora's server: the wiring
//! point, so the one module besides `main` that may import them all.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;

use async_trait::async_trait;
use pingora::server::{RunArgs, ShutdownWatch};
use pingora::services::background::BackgroundService;

use crate::ledger::{self, report, Ledger};
use crate::{access_log, auth, config, limits, metrics, proxy, registry, reload, tasks};

/// Command line.
#[derive(Parser, Debug)]
#[command(name = "cheapmodel", version, about = "Cheap Model LLM API gateway")]
// Pingora's own help lines for its flags describe its struct, not the flag; `-c` (Pingora's YAML)
// is ignored by this binary, which builds Pingora's configuration from `--config`.
#[command(mut_arg("upgrade", |a| a.help("Take over the listeners of the running instance (graceful upgrade; see the README)")))]
#[command(mut_arg("test", |a| a.help("Load and check the configuration, print ok and exit")))]
#[command(mut_arg("conf", |a| a.hide(true)))]
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
        /// The key, or `-` to read it from standard input (kept out of shell history and `ps`;
        /// one trailing newline is ignored).
        key: String,
    },
    /// Generate a random `cm_` key (192 bits) and print it with its config entry.
    NewKey {
        /// Name for the key (logs and metrics).
        #[arg(long)]
        name: String,
    },
    /// Print usage totals from the ledger (`ledger.url` of --config).
    Usage {
        /// First UTC day, YYYY-MM-DD (inclusive). Default: the beginning.
        #[arg(long)]
        from: Option<String>,
        /// Last UTC day, YYYY-MM-DD (inclusive). Default: today and after.
        #[arg(long)]
        to: Option<String>,
        /// Group by; repeat for several (`--by key --by model`).
        #[arg(long, value_enum)]
        by: Vec<report::Group>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: UsageFormat,
    },
}

/// `cheapmodel usage --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UsageFormat {
    /// Aligned columns.
    Table,
    /// CSV with a header line.
    Csv,
    /// A JSON array of objects.
    Json,
}

/// Runs the command line; returns the exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Some(Command::HashKey { key }) => {
            let key = if key == "-" {
                let mut read = String::new();
                if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut read) {
                    eprintln!("hash-key: cannot read standard input: {e}");
                    return 2;
                }
                let line = read.strip_suffix('\n').unwrap_or(&read);
                line.strip_suffix('\r').unwrap_or(line).to_string()
            } else {
                key
            };
            if key.is_empty() {
                eprintln!("hash-key: the key is empty");
                return 2;
            }
            println!("{}", auth::hex(&auth::key_digest(key.as_bytes())));
            0
        }
        Some(Command::NewKey { name }) => new_key(&name),
        Some(Command::Usage { from, to, by, format }) => {
            let Some(path) = cli.config else {
                eprintln!("--config FILE is required");
                return 2;
            };
            usage(&path, report::Query { from, to, by, key: None }, format)
        }
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
    // The entry printed must pass `check`.
    if !config::is_key_name(name) {
        eprintln!("--name {}", config::KEY_NAME_RULE);
        return 2;
    }
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

fn usage(path: &std::path::Path, query: report::Query, format: UsageFormat) -> i32 {
    for (flag, day) in [("--from", &query.from), ("--to", &query.to)] {
        if day.as_deref().is_some_and(|d| ledger::parse_day(d).is_none()) {
            eprintln!("{flag} must be a day, YYYY-MM-DD");
            return 2;
        }
    }
    if query.is_reversed() {
        eprintln!("--from must not be after --to");
        return 2;
    }
    let raw = match config::load_ledger(path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("invalid config {}: {e}", path.display());
            return 1;
        }
    };
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let Some(url) = config::ledger_settings(&raw, &path).url else {
        eprintln!("the ledger is off (ledger.url: none)");
        return 1;
    };
    let totals = match report::totals(&url, &query) {
        // The database file is made by the first row: no file yet is an empty ledger.
        Err(e) if e.starts_with("no ledger at") => {
            eprintln!("{e} yet: nothing billed so far");
            Ok(Vec::new())
        }
        other => other,
    };
    match totals {
        Ok(rows) => {
            let text = match format {
                UsageFormat::Json => report::to_json(&rows) + "\n",
                UsageFormat::Csv => report::to_csv(&query, &rows),
                UsageFormat::Table => report::to_table(&query, &rows),
            };
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("cannot read the ledger: {e}");
            1
        }
    }
}

/// Starts the ledger writer (after Pingora may have forked) and runs the task settler until
/// shutdown. The writer itself keeps going after the shutdown signal, for the requests still
/// finishing in the grace period; `serve` drains it once Pingora's runtimes are down.
struct LedgerService {
    ledger: Arc<Ledger>,
    tasks: Arc<tasks::Tasks>,
    registry: Arc<registry::Registry>,
}

#[async_trait]
impl BackgroundService for LedgerService {
    async fn start(&self, shutdown: ShutdownWatch) {
        if let Err(e) = self.ledger.start() {
            log::error!("ledger: {e}; usage rows cannot be kept");
            return;
        }
        self.tasks.settle_pending(self.registry.clone(), shutdown).await;
    }
}

/// Connects to the shared limits state and sends its settlements (`limits::shared`).
struct SharedState(Arc<limits::shared::Shared>);

#[async_trait]
impl BackgroundService for SharedState {
    async fn start(&self, _shutdown: ShutdownWatch) {
        self.0.clone().run().await;
    }
}

/// Budgets survive a restart: the current month's spend per key comes back from the ledger. With
/// Redis, the ledger is read again whenever Redis turns out to have lost that spend.
fn restore_spend(limiter: &limits::Limits, registry: &Arc<registry::Registry>, ledger_url: Option<&str>) {
    let Some(url) = ledger_url else { return };
    let (today, month_start) = limiter.today_and_month_start();
    match month_spend(&registry.current(), url, &month_start, &today) {
        Ok(rows) => limiter.raise(rows),
        Err(e) => log::error!("budgets: cannot read this month's spend from the ledger ({e}); starting from zero"),
    }
    let (registry, url) = (registry.clone(), url.to_string());
    limiter.set_spend_source(Arc::new(move |month_start: &str, today: &str| {
        month_spend(&registry.current(), &url, month_start, today)
    }));
}

/// A key that a reload gives its first budget had its spend counted nowhere until then (an
/// unlimited key is not tracked, and the start read nothing when no key had a budget): its counts
/// are raised to the ledger's figures, read only when some key gained a budget. Requests admitted
/// during that read (milliseconds) see the old counts.
fn budgets_after_reload(limiter: &limits::Limits, url: &str, before: &registry::Snapshot, after: &registry::Snapshot) {
    let had_budget: std::collections::HashSet<&str> =
        before.keys.values().filter(|k| k.budget.any()).map(|k| &*k.name).collect();
    if !after.keys.values().any(|k| k.budget.any() && !had_budget.contains(&*k.name)) {
        return;
    }
    let (today, month_start) = limiter.today_and_month_start();
    match month_spend(after, url, &month_start, &today) {
        Ok(rows) => limiter.raise(rows),
        Err(e) => log::error!(
            "budgets: cannot read this month's spend from the ledger after a reload ({e}); a key that gained a budget counts from zero"
        ),
    }
}

/// Spend per `(key, day, cost)` from `month_start` to `today` in the ledger at `url`; nothing when
/// no key has a budget (no read), or when the ledger does not exist yet.
fn month_spend(
    snapshot: &registry::Snapshot,
    url: &str,
    month_start: &str,
    today: &str,
) -> Result<Vec<(Arc<str>, String, crate::money::Money)>, String> {
    if !snapshot.keys.values().any(|k| k.budget.any()) {
        return Ok(Vec::new());
    }
    let query = report::Query {
        from: Some(month_start.to_string()),
        to: Some(today.to_string()),
        by: vec![report::Group::Key, report::Group::Day],
        key: None,
    };
    let mut spend: Vec<_> = match report::totals(url, &query) {
        Ok(rows) => rows
            .into_iter()
            .filter_map(|t| {
                let key = t.groups.iter().find(|(g, _)| *g == report::Group::Key)?.1.as_str().into();
                let day = t.groups.iter().find(|(g, _)| *g == report::Group::Day)?.1.clone();
                Some((key, day, crate::money::from_i128(t.cost)))
            })
            .collect(),
        Err(e) if e.starts_with("no ledger at") => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    // Tasks still running counted their expected cost at submit; the ledger has no row of them yet.
    let pending = ledger::backend::connect(url)?.pending_tasks()?;
    let charged = tasks::pending_charges(&snapshot.task_secret, &pending);
    spend.extend(charged.into_iter().filter(|(_, day, _)| day.as_str() >= month_start && day.as_str() <= today));
    Ok(spend)
}

/// The read buffer of each caller connection (Pingora's default: 64 KiB). Pingora's HTTP/1 session
/// reads the request head into its own buffer and the body into its body reader's, so an L4
/// buffer in front only adds a copy; and every open connection holds it for as long as it lives,
/// which for LLM streams is seconds to minutes (`loadtest/streams.sh`).
const DOWNSTREAM_READ_BUFFER: usize = 0;

/// How long a start waits for a listen address another process holds (one that is exiting).
const LISTEN_WAIT: Duration = Duration::from_secs(5);

/// Waits until every address can be bound, for up to `wait` when one is in use; any other bind
/// error ends the wait at once. Why not leave it to Pingora: it retries an address in use for 30 s
/// and then panics in the service's thread, which leaves the process running, its metrics
/// answering and nothing listening (a unit systemd sees as active).
fn wait_until_free<'a>(addresses: impl Iterator<Item = &'a String>, wait: Duration) -> Result<(), String> {
    let deadline = std::time::Instant::now() + wait;
    for addr in addresses {
        loop {
            // std sets SO_REUSEADDR, as Pingora does: a closed socket in TIME_WAIT does not count.
            match std::net::TcpListener::bind(addr.as_str()) {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline => {
                    log::warn!("{addr} is in use by another process; waiting up to {} s", wait.as_secs());
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    return Err(format!("{addr} is in use by another process (is another gateway running?)"));
                }
                Err(e) => return Err(format!("{addr}: {e}")),
            }
        }
    }
    Ok(())
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
    // Every timeout of a second or more on Tokio's timer, not Pingora's "fast" one: the fast timer
    // keeps each entry until its deadline even when the IO finished long before (a 60 s read
    // timeout per request), and its clock thread wakes 100 times a second. Measured in
    // loadtest/README.md ("Timeouts on Tokio's timer").
    conf.fast_timeout_to_tokio_threshold_seconds = Some(0);
    if opt.test {
        println!("ok");
        return 0;
    }
    // A graceful upgrade takes the listening sockets over from the running instance, so its
    // addresses are in use by design.
    if !opt.upgrade {
        let addresses = server_cfg.listen.iter().chain(&server_cfg.metrics);
        if let Err(e) = wait_until_free(addresses, LISTEN_WAIT) {
            eprintln!("cannot listen: {e}");
            return 1;
        }
    }
    metrics::get();
    access_log::init(server_cfg.access_log);
    let ledger_settings = config::ledger_settings(&loaded.ledger, &path);
    let mut snapshot = loaded.snapshot;
    if let (None, Some(url)) = (&server_cfg.task_secret_env, &ledger_settings.url) {
        match ledger::pin_task_secret(url, &snapshot.task_secret) {
            Ok(pinned) => snapshot.task_secret = pinned,
            Err(e) => log::warn!(
                "ledger: cannot read the pinned task secret ({e}); task ids are signed with one derived from \
                 the keys until the next start (set server.task_secret_env to need neither)"
            ),
        }
    }
    let registry = Arc::new(registry::Registry::new(snapshot));
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let store = tasks::store::MemoryStore::new(
        server_cfg.task_store_max_entries,
        server_cfg.task_store_max_bytes,
        Duration::from_secs(server_cfg.task_ttl_seconds),
    );
    let ledger = Arc::new(Ledger::new(ledger_settings));
    let clock = limits::Clock::from_env();
    let shared =
        match server_cfg.state.as_deref().map(|url| limits::shared::Shared::new(url, server_cfg.on_state_error, clock))
        {
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                eprintln!("invalid config {}: {e}", path.display());
                return 1;
            }
            None => None,
        };
    let limiter = limits::Limits::new(clock, shared);
    let tasks = Arc::new(tasks::Tasks::new(Arc::new(store), ledger.clone(), limiter.clone()));
    restore_spend(&limiter, &registry, ledger.url());
    let limiter_state = limiter.shared().cloned();
    let gateway = proxy::Gateway::new(
        registry.clone(),
        proxy::Settings {
            client_read_timeout: Duration::from_millis(server_cfg.client_read_timeout_ms),
            client_idle_timeout: Duration::from_millis(server_cfg.client_idle_timeout_ms),
        },
        tasks.clone(),
        ledger.clone(),
        limiter.clone(),
        pingora::connectors::http::v1::Connector::new(Some(pingora::connectors::ConnectorOptions::from_server_conf(
            &server.configuration,
        ))),
    );
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2c = true;
    // An HTTP/2 connection with no stream open is idle, as a kept-alive HTTP/1 one between
    // requests is (`proxy::idle`).
    options.h2_idle_timeout = Some(Duration::from_millis(server_cfg.client_idle_timeout_ms));
    let mut proxy = pingora::proxy::http_proxy(&server.configuration, gateway);
    proxy.server_options = Some(options);
    let app = proxy::idle::IdleTimeout {
        app: Arc::new(proxy),
        idle: Duration::from_millis(server_cfg.client_idle_timeout_ms),
    };
    let mut service = pingora::services::listening::Service::new("cheapmodel".into(), app);
    for addr in &server_cfg.listen {
        service.add_listener(
            pingora::listeners::ListenerConfig::tcp(addr)
                .l4_buffer(pingora::protocols::l4::stream::L4BufferSettings::default().read(DOWNSTREAM_READ_BUFFER)),
        );
    }
    server.add_service(service);
    if let Some(m) = &server_cfg.metrics {
        let mut prom = pingora_prometheus::prometheus_http_service();
        prom.add_tcp(m);
        server.add_service(prom);
    }
    server.add_service(pingora::services::background::background_service(
        "ledger",
        LedgerService { ledger: ledger.clone(), tasks, registry: registry.clone() },
    ));
    let shared_state = limiter_state.clone();
    if let Some(shared) = limiter_state {
        server.add_service(pingora::services::background::background_service("limits-state", SharedState(shared)));
    }
    server.add_service(pingora::services::background::background_service("memory-return", crate::memory::MemoryReturn));
    server.add_service(pingora::services::background::background_service(
        "config-reload",
        reload::Reloader {
            path,
            registry,
            interval: Duration::from_secs(server_cfg.watch_interval_seconds),
            running: (server_cfg.clone(), loaded.ledger.clone()),
            key_files: std::sync::Mutex::new(loaded.key_files.clone()),
            after_reload: ledger.url().map(|url| {
                let (limiter, url) = (limiter.clone(), url.to_string());
                Arc::new(move |before: &registry::Snapshot, after: &registry::Snapshot| {
                    budgets_after_reload(&limiter, &url, before, after)
                }) as reload::AfterReload
            }),
        },
    ));
    // Returns once every runtime is down (no request can add a row any more): then the ledger
    // writes what is still queued, to the database or to the spool.
    server.run(RunArgs::default());
    let kept = ledger.shutdown(Duration::from_secs(30));
    // Then the spend and tokens Redis has not seen yet (the ledger has them already).
    if let Some(shared) = &shared_state {
        shared.flush_at_exit(Duration::from_secs(5));
    }
    if !kept {
        // Said above with the count; the exit status says it to the supervisor too.
        log::error!("exiting with ledger rows lost");
        return 1;
    }
    log::info!("ledger flushed; exiting");
    0
}
