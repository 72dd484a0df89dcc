//! `eventgate`: the operator's tool for local development and deployment chores.
//!
//! - `eventgate keygen --dir DIR` — an RS256 development key pair (`private.pem`, `public.pem`), kept if present.
//! - `eventgate token --key DIR/private.pem --sub alice` — a signed token, alone on stdout.
//! - `eventgate migrate --database-url URL` — applies the database migrations.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

#[derive(Parser)]
#[command(name = "eventgate", version, about = "eventgate operator tool")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Keygen { dir } => keygen(&dir),
        Command::Token {
            key,
            sub,
            ttl_secs,
            issuer,
            audience,
            groups,
        } => {
            let claims = TokenClaims {
                sub,
                ttl_secs,
                issuer,
                audience,
                groups,
            };
            println!("{}", token(&key, claims)?);
            Ok(())
        }
        Command::Migrate {
            database_url,
            topics_dir,
        } => {
            let catalogue = eventgate_core::catalogue::Catalogue::load_dir(&topics_dir)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let applied = runtime.block_on(eventgate_core::db::run_migrations(&database_url))?;
            eprintln!("applied {applied} migration(s)");
            let created = runtime.block_on(eventgate_core::db::ensure_field_indexes(
                &database_url,
                &catalogue,
            ))?;
            eprintln!("created {created} field index(es)");
            Ok(())
        }
    }
}

fn keygen(dir: &Path) -> anyhow::Result<()> {
    let private_path = dir.join("private.pem");
    let public_path = dir.join("public.pem");
    if private_path.exists() && public_path.exists() {
        eprintln!("keeping the existing key pair in {}", dir.display());
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let private =
        rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).context("generating an RSA key")?;
    let private_pem = private
        .to_pkcs8_pem(LineEnding::LF)
        .context("encoding the private key")?;
    let public_pem = private
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .context("encoding the public key")?;
    write_private(&private_path, private_pem.as_bytes())?;
    std::fs::write(&public_path, public_pem)
        .with_context(|| format!("writing {}", public_path.display()))?;
    eprintln!("created a development key pair in {}", dir.display());
    Ok(())
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents)?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

/// What a development token says about its bearer.
struct TokenClaims {
    sub: String,
    ttl_secs: i64,
    issuer: Option<String>,
    audience: Option<String>,
    groups: Vec<String>,
}

fn token(key: &Path, wanted: TokenClaims) -> anyhow::Result<String> {
    let TokenClaims {
        sub,
        ttl_secs,
        issuer,
        audience,
        groups,
    } = wanted;
    if sub.is_empty() {
        bail!("--sub must not be empty");
    }
    let pem = std::fs::read(key).with_context(|| {
        format!(
            "reading {} (run `make run` or `eventgate keygen` first)",
            key.display()
        )
    })?;
    let encoding_key =
        EncodingKey::from_rsa_pem(&pem).context("the key is not an RSA private key in PEM")?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut claims = serde_json::json!({"sub": sub, "iat": now, "nbf": now, "exp": now + ttl_secs});
    if let Some(issuer) = issuer {
        claims["iss"] = issuer.into();
    }
    if let Some(audience) = audience {
        claims["aud"] = audience.into();
    }
    if !groups.is_empty() {
        claims["groups"] = groups.into();
    }
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &encoding_key,
    )?)
}
