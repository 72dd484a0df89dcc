//! `eventgate topics check DIR`: a topics directory checked as the services load it — every schema
//! parsed, every version checked against the earlier ones under its topic's compatibility rule — for
//! the CI of the people who own the topics, before they deploy (docs/CLI.md, docs/API.md "Schema
//! versions and compatibility").
//!
//! `eventgate topics list|describe`: the configured topics beside what the broker and the database hold
//! of them (`inspect.rs` reads, `render.rs` prints).

mod inspect;
mod render;

use std::path::PathBuf;

use eventgate_core::catalogue::{Catalogue, CatalogueError};

use crate::error::{Failure, EXIT_REFUSED};

pub use inspect::{DescribeArgs, ListArgs};

#[derive(clap::Subcommand)]
pub enum TopicsCommand {
    /// The configured topics (`catalogue.topics_dir`): schema versions, compatibility, Kafka topic and
    /// partitions (configured vs. in Kafka), retention, events stored, unresolved dead letters.
    List(ListArgs),
    /// One topic in full: `list`'s columns, each version's fields, settings, the Kafka partitions with
    /// their offsets, the newest stored event and the writers' lag, dead letters by reason.
    Describe(DescribeArgs),
    /// Check a topics directory: each schema, and each version against the earlier ones under the
    /// topic's rule. Exit 0 when all is well, 1 with one line per problem, 2 when DIR is unreadable.
    Check {
        /// The topics directory (`<topic>.json`, or `<topic>/1.json`, `2.json`, …).
        #[arg(default_value = "config/topics")]
        dir: PathBuf,
    },
}

pub fn run(command: TopicsCommand) -> Result<u8, Failure> {
    match command {
        TopicsCommand::Check { dir } => check(&dir),
        TopicsCommand::List(args) => crate::block_on(inspect::list(args)),
        TopicsCommand::Describe(args) => crate::block_on(inspect::describe(args)),
    }
}

fn check(dir: &std::path::Path) -> Result<u8, Failure> {
    let checked = Catalogue::check_dir(dir).map_err(|e| Failure::Usage(e.to_string()))?;
    let mut versions = 0;
    for topic in &checked.topics {
        versions += topic.versions().len();
        println!(
            "{}: {} ({})",
            topic.name,
            match topic.latest_version() {
                1 => "version 1".to_owned(),
                n => format!("versions 1-{n}"),
            },
            topic.compatibility()
        );
    }
    let mut problems = 0;
    for error in &checked.errors {
        for line in problem_lines(error) {
            eprintln!("{line}");
            problems += 1;
        }
    }
    let topics = checked.topics.len() + checked.errors.len();
    if problems == 0 {
        println!(
            "{} topic(s), {versions} version(s): every schema valid, every version compatible",
            checked.topics.len()
        );
        Ok(0)
    } else {
        eprintln!(
            "error: {problems} problem(s) in {} of {topics} topic(s) in {}",
            checked.errors.len(),
            dir.display()
        );
        Ok(EXIT_REFUSED)
    }
}

/// One line per problem: each incompatibility of a topic on its own (topic, version, field, rule,
/// reason), any other error as it reads.
fn problem_lines(error: &CatalogueError) -> Vec<String> {
    match error {
        CatalogueError::Incompatible { topic, problems } => problems
            .iter()
            .map(|problem| format!("{topic}: {problem}"))
            .collect(),
        other => vec![other.to_string()],
    }
}
