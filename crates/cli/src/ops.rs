//! The operator's chores: a development key pair, development tokens, database migrations.

use std::path::Path;

use anyhow::{bail, Context};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

/// Applies the migrations with the schema owner's URL, then maintains the history's partitions (the
/// spans ahead, the topics' leaves and indexes).
pub fn migrate(database_url: &str, topics_dir: &Path) -> anyhow::Result<()> {
    // The storage settings (partition span, retention) of the services' configuration; without one,
    // the defaults, as a fresh `make run` has.
    let storage = match eventgate_core::config::Config::load() {
        Ok(config) => config.storage,
        Err(error) => {
            eprintln!("warning: configuration not loaded ({error}): default storage settings");
            eventgate_core::config::StorageConfig::default()
        }
    };
    let catalogue = eventgate_core::catalogue::Catalogue::load_dir(topics_dir)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let applied = runtime.block_on(eventgate_core::db::run_migrations(database_url))?;
    eprintln!("applied {applied} migration(s)");
    let policy = eventgate_core::db::StoragePolicy::new(&catalogue, &storage);
    let maintained = runtime.block_on(eventgate_core::db::maintain_now(database_url, &policy))?;
    eprintln!(
        "partitions: {} created, {} index(es) built",
        maintained.report.created.len(),
        maintained.report.indexes_built.len() + maintained.report.indexes_rebuilt.len()
    );
    Ok(())
}

/// One maintenance of the history's partitions, with the services' configuration (`storage.*`).
pub fn maintain(database_url: Option<String>, topics_dir: &Path, json: bool) -> anyhow::Result<()> {
    let config = eventgate_core::config::Config::load().context("configuration")?;
    let url = database_url.unwrap_or_else(|| config.writer.migration_url().to_owned());
    if url.trim().is_empty() {
        bail!("--database-url: no database URL (the flag or EVENTGATE_WRITER__MIGRATION_DATABASE_URL): the schema owner's");
    }
    let catalogue = eventgate_core::catalogue::Catalogue::load_dir(topics_dir)?;
    let policy = eventgate_core::db::StoragePolicy::new(&catalogue, &config.storage);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let maintained = runtime.block_on(eventgate_core::db::maintain_now(&url, &policy))?;
    if json {
        println!("{}", serde_json::to_string(&maintained)?);
    } else {
        print!("{}", crate::output::maintenance_report(&maintained));
    }
    Ok(())
}

pub fn keygen(dir: &Path) -> anyhow::Result<()> {
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
pub struct TokenClaims {
    pub sub: String,
    pub ttl_secs: i64,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub groups: Vec<String>,
}

pub fn token(key: &Path, wanted: TokenClaims) -> anyhow::Result<String> {
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
