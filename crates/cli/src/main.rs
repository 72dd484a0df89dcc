//! `eventgate`: the command line for people who send and read events, and for the operator's chores.
//!
//! - `eventgate send TOPIC [FILE|-]` — NDJSON or a JSON array to the ingest-api, batched, retried safely.
//! - `eventgate query TOPIC --filter f=v --sort -timestamp [--all]` — a table on a terminal, else NDJSON/CSV.
//! - `eventgate export TOPIC --format csv` — the stats-api's streamed export.
//! - `eventgate status TOPIC ID [--wait SECS]` — what became of an event the caller sent.
//! - `eventgate tail TOPIC [--filter f=v]` — the live tail, reconnecting with `Last-Event-ID`.
//! - `eventgate topics check DIR` — a topics directory's schemas and their versions' compatibility.
//! - `eventgate topics list|describe` — the configured topics beside the broker's and the database's view.
//! - `eventgate completions bash|zsh|fish` — shell completions.
//! - `eventgate dead-letters list|show|replay|discard` — the operator's dead letters (schema owner's URL).
//! - `eventgate keygen`, `token`, `migrate` — development keys and tokens, database migrations.
//! - `eventgate maintain` — the event history's partitions now: spans ahead, retention, indexes.
//!
//! Exit codes: 0 done, 1 refused by the API (`topics check|list`: a topic is broken; `topics describe`:
//! an unknown topic), 2 usage/configuration/input, 3 unreachable or not allowed (`topics list|describe`:
//! neither the broker nor the database answered), 4 (`status` only) the event is not stored (yet)
//! (docs/CLI.md).

mod client;
mod config;
mod dead_letters;
mod error;
mod export;
mod input;
mod ops;
mod output;
mod query;
mod send;
mod status;
mod tail;
mod topics;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::error::Failure;

#[derive(Parser)]
#[command(
    name = "eventgate",
    version,
    about = "Send, query and export eventgate events; development keys, tokens and migrations",
    after_help = "Exit codes: 0 done, 1 refused by the API (topics: a broken or unknown topic), 2 \
                  usage/configuration/input, 3 unreachable or not allowed, 4 (status) not stored yet. \
                  Configuration: docs/CLI.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send events (NDJSON or a JSON array) to a topic, in batches, retried without duplicates.
    Send(send::SendArgs),
    /// Query a topic's events: filters, sort, pages.
    Query(query::QueryArgs),
    /// Download every matching event as NDJSON or CSV, streamed.
    Export(export::ExportArgs),
    /// Follow a topic's new events as they are stored; reconnects without losing or repeating any.
    Tail(tail::TailArgs),
    /// What became of an event you sent: stored (exit 0), dead-lettered (1) or not found yet (4).
    Status(status::StatusArgs),
    /// The operator's dead letters: list, show, replay (after fixing the cause) or discard them.
    /// Needs the schema owner's database URL, and the broker's settings to replay.
    DeadLetters(dead_letters::DeadLettersArgs),
    /// Topic schemas: `topics check DIR` validates a topics directory and its versions' compatibility;
    /// `topics list` and `topics describe TOPIC` show the configured topics beside Kafka and Postgres.
    Topics {
        #[command(subcommand)]
        command: topics::TopicsCommand,
    },
    /// Print a shell completion script (e.g. `eventgate completions bash > /etc/bash_completion.d/eventgate`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Create an RSA key pair for signing development tokens, unless one exists in DIR.
    Keygen {
        #[arg(long, default_value = ".data/keys")]
        dir: PathBuf,
    },
    /// Print a token for SUB signed with the private key, and nothing else.
    Token {
        #[arg(long, default_value = ".data/keys/private.pem")]
        key: PathBuf,
        #[arg(long)]
        sub: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 12 * 3600)]
        ttl_secs: i64,
        /// Optional `iss` claim.
        #[arg(long)]
        issuer: Option<String>,
        /// Optional `aud` claim.
        #[arg(long)]
        audience: Option<String>,
        /// Groups for the `groups` claim, comma-separated (access rules may grant `group:<name>`).
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
    },
    /// Apply pending database migrations, then create the expression indexes the topics declare.
    /// Needs the schema owner's URL (the role that owns the tables), never a service's.
    Migrate {
        #[arg(long, env = "EVENTGATE_WRITER__MIGRATION_DATABASE_URL")]
        database_url: String,
        /// The topic schemas whose `x-eventgate.indexed_fields` get expression indexes.
        #[arg(
            long,
            env = "EVENTGATE_CATALOGUE__TOPICS_DIR",
            default_value = "config/topics"
        )]
        topics_dir: PathBuf,
    },
    /// Maintain the event history's partitions now (the writers do it every few minutes): create the
    /// spans ahead, move events from the catch-all partitions into their own, drop partitions past their topic's
    /// retention, build the topics' indexes. Prints what it did and the partitions per topic.
    /// Needs the schema owner's URL.
    Maintain {
        #[arg(long, env = "EVENTGATE_WRITER__MIGRATION_DATABASE_URL")]
        database_url: Option<String>,
        #[arg(
            long,
            env = "EVENTGATE_CATALOGUE__TOPICS_DIR",
            default_value = "config/topics"
        )]
        topics_dir: PathBuf,
        /// The report as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Send(args) => block_on(send::run(args)),
        Command::Query(args) => block_on(query::run(args)),
        Command::Export(args) => block_on(export::run(args)),
        Command::Status(args) => block_on(status::run(args)),
        Command::Tail(args) => block_on(tail::run(args)),
        Command::DeadLetters(args) => block_on(dead_letters::run(args)),
        Command::Topics { command } => topics::run(command),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "eventgate",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
        Command::Keygen { dir } => chore(ops::keygen(&dir)),
        Command::Token {
            key,
            sub,
            ttl_secs,
            issuer,
            audience,
            groups,
        } => chore(
            ops::token(
                &key,
                ops::TokenClaims {
                    sub,
                    ttl_secs,
                    issuer,
                    audience,
                    groups,
                },
            )
            .map(|token| println!("{token}")),
        ),
        Command::Migrate {
            database_url,
            topics_dir,
        } => chore(ops::migrate(&database_url, &topics_dir)),
        Command::Maintain {
            database_url,
            topics_dir,
            json,
        } => chore(ops::maintain(database_url, &topics_dir, json)),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(Failure::Closed) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}

/// The commands that talk to the services run on one thread: they wait on the network, not the CPU.
fn block_on(
    command: impl std::future::Future<Output = Result<u8, Failure>>,
) -> Result<u8, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Usage(format!("cannot start the runtime: {e}")))?
        .block_on(command)
}

/// The operator's chores report with anyhow; a failure is exit 2.
fn chore(result: anyhow::Result<()>) -> Result<u8, Failure> {
    result
        .map(|()| 0)
        .map_err(|e| Failure::Usage(format!("{e:#}")))
}
