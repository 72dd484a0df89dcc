//! `eventgate query TOPIC --filter field=value --sort -timestamp [--limit N | --all]`: the GET form of
//! the query API (the stats-api types each value by its field), paged through with the cursor.

use std::io::IsTerminal;

use clap::Args;
use serde_json::Value;

use crate::client::{Api, STATS};
use crate::config::Connection;
use crate::error::Failure;
use crate::output::{default_columns, EventWriter, Format};

/// Events printed without `--limit` or `--all`: the API's default page.
const DEFAULT_LIMIT: u64 = 50;
/// The API's largest page.
const MAX_PAGE: u64 = 1000;

#[derive(Args, Debug)]
pub struct QueryArgs {
    /// The topic to read.
    pub topic: String,
    /// A filter as in the GET form of the API: `field=value`, `field_in=a,b`, `field_between=a,b`,
    /// `field_gte=2025-01-31`, `field_exists=true`, … (repeat for more; all must hold).
    #[arg(long = "filter", short = 'f', value_name = "FIELD=VALUE")]
    pub filters: Vec<String>,
    /// Sort fields, comma-separated; `-` sorts descending [default: -timestamp].
    #[arg(long, short = 's', allow_hyphen_values = true)]
    pub sort: Option<String>,
    /// How many events to print, paging as needed [default: 50].
    #[arg(long, short = 'n', conflicts_with = "all", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Every matching event, page after page.
    #[arg(long)]
    pub all: bool,
    /// Events per request (1 to 1000) [default: 1000, or the limit when smaller].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub page_size: Option<u64>,
    /// Go on from a cursor an earlier query printed.
    #[arg(long)]
    pub cursor: Option<String>,
    /// Output format [default: table on a terminal, else ndjson].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Columns of the table or CSV, comma-separated (envelope fields, payload paths) [default: the
    /// envelope fields and every payload field].
    #[arg(long, value_delimiter = ',')]
    pub columns: Vec<String>,
    /// Print nothing on standard error (such as the cursor of the next page).
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub connection: Connection,
}

/// `field=value` → a query parameter; the value is passed as written (the API converts it by the
/// field's type).
pub fn filter_params(filters: &[String]) -> Result<Vec<(String, String)>, Failure> {
    filters
        .iter()
        .map(|filter| match filter.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok((key.trim().to_owned(), value.to_owned()))
            }
            _ => Err(Failure::Usage(format!(
                "--filter `{filter}`: expected FIELD=VALUE (e.g. event_name=login, customer_id_in=1,2, \
                 timestamp_between=2025-01-01,2025-01-31)"
            ))),
        })
        .collect()
}

/// The field names of a topic, for the default columns.
pub async fn field_names(api: &Api, topic: &str) -> Result<Vec<String>, Failure> {
    let request = api.get(api.stats(&["stats", topic, "fields"]));
    let (answer, _) = api
        .get_json(STATS, &format!("the fields of {topic}"), request)
        .await?;
    Ok(answer["fields"]
        .as_array()
        .map(|fields| {
            fields
                .iter()
                .filter_map(|f| f["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

pub async fn run(args: QueryArgs) -> Result<u8, Failure> {
    let api = Api::new(args.connection.resolve()?)?;
    let filters = filter_params(&args.filters)?;
    let format = Format::choose(args.format, std::io::stdout().is_terminal());
    let columns = if !format.has_columns() {
        Vec::new()
    } else if args.columns.is_empty() {
        default_columns(&field_names(&api, &args.topic).await?)
    } else {
        args.columns.clone()
    };
    let target = if args.all {
        None
    } else {
        Some(args.limit.unwrap_or(DEFAULT_LIMIT))
    };
    let page_size = args.page_size.unwrap_or(MAX_PAGE);

    let stdout = std::io::stdout();
    let mut writer = EventWriter::new(stdout.lock(), format, columns);
    let mut cursor = args.cursor.clone();
    let mut more = false;
    loop {
        let want = match target {
            Some(target) => page_size.min(target - writer.written()),
            None => page_size,
        };
        if want == 0 {
            break;
        }
        let mut params = filters.clone();
        if let Some(sort) = &args.sort {
            params.push(("sort".into(), sort.clone()));
        }
        params.push(("limit".into(), want.to_string()));
        if let Some(cursor) = &cursor {
            params.push(("cursor".into(), cursor.clone()));
        }
        let request = api.get(api.stats(&["stats", &args.topic])).query(&params);
        let (answer, _) = api.get_json(STATS, "the query", request).await?;
        let empty = Vec::new();
        let events = answer["data"].as_array().unwrap_or(&empty);
        writer.page(events).map_err(Failure::from_output)?;
        more = answer["pagination"]["has_more"] == Value::Bool(true);
        cursor = answer["pagination"]["cursor"].as_str().map(str::to_owned);
        if !more || cursor.is_none() || events.is_empty() {
            more = more && cursor.is_some();
            break;
        }
    }
    let written = writer.written();
    writer.finish().map_err(Failure::from_output)?;
    if more && !args.quiet {
        if let Some(cursor) = cursor {
            eprintln!(
                "{written} events printed; more match. The next page: --cursor {cursor} (or --all)"
            );
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_split_at_the_first_equals_sign() {
        let params =
            filter_params(&["a=b=c".into(), "t_between=1,2".into(), "x=".into()]).expect("valid");
        assert_eq!(
            params,
            [
                ("a".to_owned(), "b=c".to_owned()),
                ("t_between".to_owned(), "1,2".to_owned()),
                ("x".to_owned(), String::new())
            ]
        );
        assert!(filter_params(&["novalue".into()]).is_err());
        assert!(filter_params(&["=v".into()]).is_err());
    }
}
