//! An RS256 key pair for tests, and JWTs signed with it.
//!
//! Generating a 2048-bit RSA key takes seconds in a debug build and nextest runs every test in its own
//! process, so the pair is generated once and kept in `target/test-stack/keys/` (created atomically, so
//! concurrent processes agree on one pair); every process then loads it once.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::{RsaPrivateKey, RsaPublicKey};

/// The test key pair: PKCS#8 private key and SPKI public key, both PEM.
#[derive(Debug, Clone)]
pub struct TestKeys {
    pub private_pem: String,
    pub public_pem: String,
    /// A file holding `public_pem`, for configurations that take key paths (`auth.public_keys`).
    pub public_key_path: PathBuf,
    /// A file holding `private_pem` (what `eventgate token --key` takes).
    pub private_key_path: PathBuf,
}

/// The process-wide test key pair (see the module docs for where it lives).
pub fn test_keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = crate::stack::target_dir().join("test-stack").join("keys");
        load_or_create(&dir)
            .unwrap_or_else(|e| panic!("cannot set up test keys in {}: {e:#}", dir.display()))
    })
}

/// A JWT for subject `sub`, issued now and expiring in one hour, signed with [`test_keys()`].
pub fn token(sub: &str) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    token_with(serde_json::json!({ "sub": sub, "iat": now, "exp": now + 3600 }))
}

/// A JWT with exactly these claims (nothing is added: pass `exp` yourself), RS256-signed with
/// [`test_keys()`].
pub fn token_with(claims: serde_json::Value) -> String {
    static KEY: OnceLock<EncodingKey> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        EncodingKey::from_rsa_pem(test_keys().private_pem.as_bytes())
            .expect("test private key is valid PEM")
    });
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, key)
        .expect("signing a test token")
}

fn load_or_create(dir: &Path) -> anyhow::Result<TestKeys> {
    if let Ok(keys) = load(dir) {
        return Ok(keys);
    }
    // Missing or unreadable: build a complete pair in a private directory, then move it into place in one
    // rename. When another process won the race, the rename fails and its pair is used.
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let staging = parent.join(format!(
        "keys.tmp-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&staging)?;
    let private = RsaPrivateKey::new(&mut rand::thread_rng(), 2048)?;
    let private_pem = private.to_pkcs8_pem(LineEnding::LF)?;
    let public_pem = RsaPublicKey::from(&private).to_public_key_pem(LineEnding::LF)?;
    std::fs::write(staging.join("private.pem"), private_pem.as_bytes())?;
    std::fs::write(staging.join("public.pem"), public_pem.as_bytes())?;
    if std::fs::rename(&staging, dir).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
        if load(dir).is_err() {
            // A leftover broken directory: replace it.
            std::fs::remove_dir_all(dir)?;
            return load_or_create(dir);
        }
    }
    load(dir)
}

fn load(dir: &Path) -> anyhow::Result<TestKeys> {
    let private_key_path = dir.join("private.pem");
    let public_key_path = dir.join("public.pem");
    let private_pem = std::fs::read_to_string(&private_key_path)?;
    let public_pem = std::fs::read_to_string(&public_key_path)?;
    // Both must parse and belong together.
    let private = RsaPrivateKey::from_pkcs8_pem(&private_pem)?;
    let derived = RsaPublicKey::from(&private).to_public_key_pem(LineEnding::LF)?;
    anyhow::ensure!(
        derived == public_pem,
        "public.pem does not match private.pem"
    );
    Ok(TestKeys {
        private_pem,
        public_pem,
        public_key_path,
        private_key_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn token_verifies_with_the_public_key_file() {
        let keys = test_keys();
        let public_pem = std::fs::read_to_string(&keys.public_key_path).unwrap();
        assert_eq!(public_pem, keys.public_pem);
        let decoding = DecodingKey::from_rsa_pem(public_pem.as_bytes()).unwrap();

        let jwt = token("alice");
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &jwt,
            &decoding,
            &Validation::new(Algorithm::RS256),
        )
        .unwrap();
        assert_eq!(data.claims["sub"], "alice");
        let exp = data.claims["exp"].as_i64().unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!(
            (now + 3500..=now + 3700).contains(&exp),
            "exp {exp} not ~1h from {now}"
        );
    }

    #[test]
    fn token_with_keeps_the_claims_as_given() {
        let jwt = token_with(serde_json::json!({ "sub": "bob", "exp": 1, "scope": "read" }));
        let decoding = DecodingKey::from_rsa_pem(test_keys().public_pem.as_bytes()).unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<serde_json::Value>(&jwt, &decoding, &validation).unwrap();
        assert_eq!(
            data.claims,
            serde_json::json!({ "sub": "bob", "exp": 1, "scope": "read" })
        );
    }
}
