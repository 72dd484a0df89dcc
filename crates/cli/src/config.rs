//! Where the CLI finds the services and its token: flags, then environment variables, then a profile of
//! the configuration file, then the development defaults.
//!
//! ```toml
//! # ~/.config/eventgate/config.toml
//! default_profile = "local"
//!
//! [profiles.local]
//! ingest_url = "http://127.0.0.1:8080"
//! stats_url = "http://127.0.0.1:8081"
//! token_command = "make -s token SUB=dev"
//!
//! [profiles.prod]
//! ingest_url = "https://ingest.example.com"
//! stats_url = "https://stats.example.com"
//! token_command = "vault read -field=token secret/eventgate"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::Args;
use reqwest::Url;
use serde::Deserialize;

use crate::error::Failure;

pub const DEFAULT_INGEST_URL: &str = "http://127.0.0.1:8080";
pub const DEFAULT_STATS_URL: &str = "http://127.0.0.1:8081";
/// The ingest-api's default `ingest.id_field`.
pub const DEFAULT_ID_FIELD: &str = "event_id";

/// The options every command that talks to the services takes.
#[derive(Args, Debug, Clone, Default)]
pub struct Connection {
    /// Bearer token (prefer EVENTGATE_TOKEN or a profile: a flag is visible to other users in `ps`).
    #[arg(long, env = "EVENTGATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Profile of the configuration file [default: the file's `default_profile`, else `default`].
    #[arg(long, env = "EVENTGATE_PROFILE")]
    pub profile: Option<String>,
    /// Configuration file [default: $XDG_CONFIG_HOME/eventgate/config.toml, else ~/.config/eventgate/config.toml].
    #[arg(long, env = "EVENTGATE_CLI_CONFIG")]
    pub config: Option<PathBuf>,
    /// Base URL of the ingest-api [default: http://127.0.0.1:8080].
    #[arg(long, env = "EVENTGATE_INGEST_URL")]
    pub ingest_url: Option<String>,
    /// Base URL of the stats-api [default: http://127.0.0.1:8081].
    #[arg(long, env = "EVENTGATE_STATS_URL")]
    pub stats_url: Option<String>,
    /// Seconds to wait for one answer.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

/// The configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub default_profile: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// One environment: where its services are and how to get a token for it.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub ingest_url: Option<String>,
    pub stats_url: Option<String>,
    pub token: Option<String>,
    /// Run with `sh -c`; its standard output, trimmed, is the token (a secret manager, `make -s token`).
    pub token_command: Option<String>,
    /// The ingest-api's `ingest.id_field`, when a deployment changed it.
    pub id_field: Option<String>,
}

/// Everything resolved: what the commands use.
#[derive(Debug, Clone)]
pub struct Settings {
    pub ingest_url: Url,
    pub stats_url: Url,
    pub token: String,
    pub id_field: String,
    pub timeout: std::time::Duration,
}

/// `$XDG_CONFIG_HOME/eventgate/config.toml`, else `~/.config/eventgate/config.toml` (on every Unix, as
/// most command-line tools do, rather than macOS' Application Support).
pub fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| dirs::home_dir().map(|home| home.join(".config")))?;
    Some(base.join("eventgate").join("config.toml"))
}

impl ConfigFile {
    /// Reads `path`; a missing file is an empty configuration unless it was asked for by name.
    pub fn load(path: &Path, explicit: bool) -> Result<ConfigFile, Failure> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(ConfigFile::default())
            }
            Err(e) => {
                return Err(Failure::Usage(format!(
                    "cannot read the configuration file {}: {e}",
                    path.display()
                )))
            }
        };
        let file: ConfigFile = toml::from_str(&text).map_err(|e| {
            Failure::Usage(format!(
                "configuration file {}: {}",
                path.display(),
                e.to_string().trim_end()
            ))
        })?;
        if file.profiles.values().any(|p| p.token.is_some()) {
            warn_if_readable_by_others(path);
        }
        Ok(file)
    }

    /// The profile asked for (`--profile`, `EVENTGATE_PROFILE`), else `default_profile`, else one
    /// named `default`, else none.
    pub fn profile(&self, asked: Option<&str>) -> Result<Profile, Failure> {
        let name = asked.or(self.default_profile.as_deref());
        match name {
            Some(name) => self.profiles.get(name).cloned().ok_or_else(|| {
                let known: Vec<&str> = self.profiles.keys().map(String::as_str).collect();
                Failure::Usage(if known.is_empty() {
                    format!("no profile `{name}`: the configuration file defines none")
                } else {
                    format!(
                        "no profile `{name}`; the configuration file defines: {}",
                        known.join(", ")
                    )
                })
            }),
            None => Ok(self.profiles.get("default").cloned().unwrap_or_default()),
        }
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o044 != 0 {
            eprintln!(
                "warning: {} holds a token and other users may read it (chmod 600 it, or use token_command)",
                path.display()
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

impl Connection {
    /// Flags and environment first (clap merged those), then the profile, then the defaults.
    pub fn resolve(&self) -> Result<Settings, Failure> {
        let (path, explicit) = match &self.config {
            Some(path) => (Some(path.clone()), true),
            None => (default_config_path(), false),
        };
        let file = match &path {
            Some(path) => ConfigFile::load(path, explicit)?,
            None => ConfigFile::default(),
        };
        let profile = file.profile(self.profile.as_deref())?;
        let ingest_url = parse_url(
            "ingest URL",
            self.ingest_url
                .as_deref()
                .or(profile.ingest_url.as_deref())
                .unwrap_or(DEFAULT_INGEST_URL),
        )?;
        let stats_url = parse_url(
            "stats URL",
            self.stats_url
                .as_deref()
                .or(profile.stats_url.as_deref())
                .unwrap_or(DEFAULT_STATS_URL),
        )?;
        let token = match (&self.token, &profile.token, &profile.token_command) {
            (Some(token), _, _) | (None, Some(token), _) => token.trim().to_owned(),
            (None, None, Some(command)) => run_token_command(command)?,
            (None, None, None) => return Err(Failure::Usage(
                "no token: pass --token, set EVENTGATE_TOKEN, or give the profile a `token` or \
                     `token_command` (see `eventgate help send` and docs/CLI.md)"
                    .into(),
            )),
        };
        if token.is_empty() {
            return Err(Failure::Usage("the token is empty".into()));
        }
        Ok(Settings {
            ingest_url,
            stats_url,
            token,
            id_field: profile
                .id_field
                .unwrap_or_else(|| DEFAULT_ID_FIELD.to_owned()),
            timeout: std::time::Duration::from_secs(self.timeout.max(1)),
        })
    }
}

fn parse_url(what: &str, text: &str) -> Result<Url, Failure> {
    let url = Url::parse(text)
        .map_err(|e| Failure::Usage(format!("the {what} `{text}` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(Failure::Usage(format!(
            "the {what} `{text}` must be an http:// or https:// URL"
        )));
    }
    Ok(url)
}

fn run_token_command(command: &str) -> Result<String, Failure> {
    let output = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Failure::Usage(format!("token_command `{command}` does not start: {e}")))?;
    if !output.status.success() {
        return Err(Failure::Usage(format!(
            "token_command `{command}` failed ({})",
            output.status
        )));
    }
    let token = String::from_utf8(output.stdout)
        .map_err(|_| Failure::Usage(format!("token_command `{command}` printed no text")))?;
    Ok(token.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> ConfigFile {
        toml::from_str(text).expect("valid")
    }

    #[test]
    fn profile_is_chosen_by_name_then_default_profile_then_default() {
        let config = file(
            r#"
            default_profile = "b"
            [profiles.a]
            ingest_url = "http://a"
            [profiles.b]
            ingest_url = "http://b"
            [profiles.default]
            ingest_url = "http://d"
            "#,
        );
        let url = |p: Profile| p.ingest_url.expect("url");
        assert_eq!(url(config.profile(Some("a")).expect("a")), "http://a");
        assert_eq!(url(config.profile(None).expect("b")), "http://b");
        let config = file("[profiles.default]\ningest_url = \"http://d\"");
        assert_eq!(url(config.profile(None).expect("default")), "http://d");
        assert!(file("").profile(None).expect("none").ingest_url.is_none());
    }

    #[test]
    fn an_unknown_profile_names_the_known_ones() {
        let config = file("[profiles.staging]\n[profiles.prod]");
        let error = config
            .profile(Some("dev"))
            .expect_err("unknown")
            .to_string();
        assert!(error.contains("no profile `dev`"), "{error}");
        assert!(error.contains("prod, staging"), "{error}");
    }

    #[test]
    fn a_misspelt_key_is_refused_with_its_name() {
        let error = toml::from_str::<ConfigFile>("[profiles.a]\ningest_ur = \"x\"")
            .expect_err("unknown key")
            .to_string();
        assert!(error.contains("ingest_ur"), "{error}");
    }

    #[test]
    fn urls_must_be_http() {
        assert!(parse_url("ingest URL", "ftp://x").is_err());
        assert!(parse_url("ingest URL", "localhost:8080").is_err());
        assert!(parse_url("ingest URL", "https://x/prefix/").is_ok());
    }

    #[test]
    fn token_command_output_is_trimmed_and_failures_are_reported() {
        assert_eq!(run_token_command("printf ' abc\\n'").expect("runs"), "abc");
        let error = run_token_command("exit 3").expect_err("fails").to_string();
        assert!(error.contains("failed"), "{error}");
    }
}
