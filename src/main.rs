//! The `chatnode` command: `serve` runs a node, `token` mints a token for trying it, `migrate`
//! creates or updates the ScyllaDB schema.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use chatnode::auth::{mint, resolve_secret};
use chatnode::config::{JwtAlgorithm, Settings};
use chatnode::store::scylla::Migrated;

/// The node's allocator (see [`chatnode::Allocator`]).
#[global_allocator]
static ALLOCATOR: chatnode::Allocator = chatnode::Allocator;

#[derive(Parser)]
#[command(
    name = "chatnode",
    version,
    about = "An actor-based, high-performance chat server node"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a node (embedded defaults when nothing is configured).
    Serve {
        /// A TOML settings file (see config/default.toml); CHATNODE_* variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Creates the ScyllaDB keyspace and tables and records the schema version (idempotent).
    Migrate {
        /// The same settings file the node uses ([scylla] section); CHATNODE_SCYLLA_* override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Prints a token signed with the node's HS256 secret, to try the node at once.
    Token {
        /// The user id (the token's `sub`).
        #[arg(long)]
        user: String,
        /// A display name.
        #[arg(long)]
        name: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl: u64,
        /// A service token: may act on any room and send as any user.
        #[arg(long)]
        service: bool,
        /// Limit the token to these groups (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// The same settings file the node uses, to find its secret.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn init_tracing(settings: &Settings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if settings.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    // One process-wide TLS crypto provider (FCM push over HTTPS): both `ring` and `aws-lc-rs`
    // may be compiled in, and rustls refuses to guess between them. An error only means one
    // was installed already.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chatnode: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            let settings = Settings::load(config.as_deref())?;
            init_tracing(&settings);
            actix_web::rt::System::new().block_on(chatnode::node::run(settings))
        }
        Command::Migrate { config } => {
            let settings = Settings::load(config.as_deref())?;
            init_tracing(&settings);
            let scylla = &settings.scylla;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let outcome = runtime.block_on(chatnode::store::scylla::migrate(scylla))?;
            let keyspace = &scylla.keyspace;
            match outcome {
                Migrated::Applied { from: None, to } => println!(
                    "keyspace `{keyspace}`: schema version {to} created (replication {})",
                    scylla.replication
                ),
                Migrated::Applied {
                    from: Some(from),
                    to,
                } => {
                    println!("keyspace `{keyspace}`: schema migrated from version {from} to {to}")
                }
                Migrated::UpToDate(v) => {
                    println!("keyspace `{keyspace}`: schema version {v} is current; nothing to do")
                }
                Migrated::Newer(v) => println!(
                    "keyspace `{keyspace}`: schema version {v} is newer than this build's; left alone"
                ),
            }
            Ok(())
        }
        Command::Token {
            user,
            name,
            ttl,
            service,
            groups,
            config,
        } => {
            let settings = Settings::load(config.as_deref())?;
            if settings.auth.algorithm != JwtAlgorithm::HS256 {
                anyhow::bail!(
                    "this node verifies {:?} tokens; mint them with the private key's owner",
                    settings.auth.algorithm
                );
            }
            let secret = resolve_secret(&settings.auth, &settings.data_dir)?;
            let groups = (!groups.is_empty()).then_some(groups);
            let token = mint(&secret, &user, name.as_deref(), ttl, service, groups)?;
            println!("{token}");
            Ok(())
        }
    }
}
