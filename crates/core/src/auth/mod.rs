//! Bearer-token verification. Tokens are JWTs signed with RS256 or ES256 by an identity provider whose
//! public keys are configured: PEM files (several at once, so keys can be rotated without downtime)
//! and/or a JWKS document (a file or a URL) whose keys are chosen by the token's `kid`.
//!
//! What a token must satisfy (each failure is a 401 `auth` whose message says why, never echoing the
//! token):
//! - `Authorization: Bearer <token>`, the scheme matched case-insensitively; no other place or scheme;
//! - its header's `alg` is one of `auth.algorithms` (RS256, ES256): `none`, HS256 (e.g. "signed" with the
//!   public key as an HMAC secret) and every other algorithm are refused before any key is looked at;
//! - its signature verifies with a configured key of that algorithm;
//! - `exp` is present and not past, `nbf` (if present) is not in the future, both with `leeway_secs`;
//! - `iss` equals `auth.issuer` and `aud` contains `auth.audience`, when those are configured;
//! - `sub` is a non-empty string: it is the user every access rule and rate limit is about.
//!
//! The user's groups come from the claim named by `auth.groups_claim` (see [`Principal`]).
//!
//! Keys are held behind a lock and swapped whole: [`JwtVerifier::reload_files`] re-reads the PEM files
//! and the JWKS file (on SIGHUP), and with the `reload` feature the JWKS URL is fetched and refreshed in
//! the background, never in a request's path.
//!
//! The JWKS URL is trusted like a key file, so it is guarded like one: https only (http only with
//! `auth.jwks_allow_http`, for development), redirects only to the same scheme, host and port, keys
//! dropped when no fetch succeeded for `auth.jwks_max_stale_secs` (then a token that needs them is a 503
//! `auth_unavailable`, not a 401: the token may be fine), and early refetches for unknown `kid`s at most
//! once per `auth.jwks_min_refetch_secs`, which never forget the tokens verified with keys still there.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::AuthConfig;
use crate::error::{ApiError, ErrorKind};

/// Longest token looked at; anything longer is refused before it is decoded.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Largest JWKS document accepted (a real one is a few kilobytes).
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`.
    pub user: String,
    /// The strings of the groups claim (`auth.groups_claim`): an array of strings or a single string.
    pub groups: BTreeSet<String>,
}

impl Principal {
    /// A user without groups.
    pub fn user(name: impl Into<String>) -> Principal {
        Principal {
            user: name.into(),
            groups: BTreeSet::new(),
        }
    }

    pub fn with_groups<I, S>(mut self, groups: I) -> Principal
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.groups.extend(groups.into_iter().map(Into::into));
        self
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.contains(group)
    }
}

/// What identifies a key across reloads: a digest of its algorithm, `kid` and public key material.
/// A cached verdict stays valid exactly as long as a key with the same fingerprint is configured.
type Fingerprint = [u8; 32];

fn fingerprint(algorithm: Algorithm, kid: Option<&str>, material: &[u8]) -> Fingerprint {
    let mut digest = Sha256::new();
    digest.update(algorithm_name(algorithm));
    digest.update([0]);
    digest.update(kid.unwrap_or_default());
    digest.update([0]);
    digest.update(material);
    digest.finalize().into()
}

/// One public key and the one algorithm it verifies.
#[derive(Clone)]
struct VerificationKey {
    algorithm: Algorithm,
    /// The JWKS `kid`; PEM keys have none.
    kid: Option<String>,
    key: DecodingKey,
    fingerprint: Fingerprint,
}

/// Every key in use, from all sources; replaced whole on reload.
#[derive(Clone, Default)]
struct KeySet {
    pem: Vec<VerificationKey>,
    jwks_file: Vec<VerificationKey>,
    jwks_url: Vec<VerificationKey>,
    /// Why the JWKS URL's keys are missing (not fetched yet, or dropped as stale); `None` when they are
    /// there or no URL is configured. A token no other key verifies is then a 503, not a 401.
    jwks_url_missing: Option<String>,
    fingerprints: std::collections::HashSet<Fingerprint>,
}

impl KeySet {
    fn new(
        pem: Vec<VerificationKey>,
        jwks_file: Vec<VerificationKey>,
        jwks_url: Vec<VerificationKey>,
        jwks_url_missing: Option<String>,
    ) -> KeySet {
        let mut set = KeySet {
            pem,
            jwks_file,
            jwks_url,
            jwks_url_missing,
            fingerprints: Default::default(),
        };
        set.fingerprints = set.all().map(|k| k.fingerprint).collect();
        set
    }

    fn all(&self) -> impl Iterator<Item = &VerificationKey> {
        self.pem
            .iter()
            .chain(self.jwks_file.iter())
            .chain(self.jwks_url.iter())
    }
}

/// The JWKS URL is acceptable: https, or http when `allow_http` (development). Used by the
/// configuration check (a clear start-up error) and by the verifier itself.
pub fn check_jwks_url(url: &str, allow_http: bool) -> Result<(), String> {
    let url = url.trim();
    let lower = url.to_ascii_lowercase();
    let rest = if let Some(rest) = lower.strip_prefix("https://") {
        rest
    } else if let Some(rest) = lower.strip_prefix("http://") {
        if !allow_http {
            return Err(format!(
                "{url:?} is plain http: keys fetched in clear text can be replaced by anyone on the \
                 path, and then any token is accepted. Use https, or set auth.jwks_allow_http = true \
                 for a local identity provider in development"
            ));
        }
        rest
    } else {
        return Err(format!("{url:?} is not an https:// URL"));
    };
    if rest.split(['/', '?', '#']).next().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

/// How the JWKS URL's keys are doing, for the metrics (`eventgate_jwks_*`) and the expiry.
struct JwksUrlHealth {
    /// When the verifier was made: the age of keys never fetched counts from here.
    created: Instant,
    /// The last fetch that installed keys.
    fetched: Mutex<Option<Instant>>,
    failures: AtomicU64,
}

/// The JWKS URL's state as the metrics show it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JwksStatus {
    /// Seconds since the keys were last fetched successfully (since start-up when never).
    pub age_secs: f64,
    /// Keys from the URL in use (0 before the first fetch and once they expired).
    pub keys: usize,
    /// Fetches that failed since start-up.
    pub failures: u64,
}

pub struct JwtVerifier {
    keys: RwLock<Arc<KeySet>>,
    pem_paths: Vec<PathBuf>,
    jwks_file: Option<PathBuf>,
    jwks_url: Option<String>,
    // Read by the JWKS URL client, which only the `reload` feature builds (the APIs).
    #[cfg_attr(not(feature = "reload"), allow(dead_code))]
    jwks_allow_http: bool,
    #[cfg_attr(not(feature = "reload"), allow(dead_code))]
    jwks_ca_file: Option<PathBuf>,
    refresh_secs: u64,
    max_stale: Duration,
    min_refetch: Duration,
    jwks_health: JwksUrlHealth,
    algorithms: Vec<Algorithm>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
    groups_claim: String,
    /// A token named a `kid` no key has: the JWKS URL should be fetched again soon.
    unknown_kid_seen: AtomicBool,
    /// Tokens that verified with the current keys (see [`VerifiedTokens`]).
    verified: VerifiedTokens,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read public key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("public key {path} is neither an RSA nor an EC P-256 PEM key")]
    Format { path: String },
    #[error("public key {path} is {kind}, but {algorithm} is not in auth.algorithms")]
    Unusable {
        path: String,
        kind: &'static str,
        algorithm: &'static str,
    },
    #[error("JWKS {source_name}: {message}")]
    Jwks {
        source_name: String,
        message: String,
    },
    #[error("auth.algorithms: {0:?} is not supported (RS256 and ES256 are)")]
    Algorithm(String),
    #[error("auth.algorithms is empty: every token would be refused")]
    NoAlgorithms,
    #[error(
        "no token keys configured (auth.public_keys, auth.jwks_file or auth.jwks_url): every request \
         would be refused"
    )]
    None,
}

impl JwtVerifier {
    /// Reads the PEM files and the JWKS file. A JWKS URL is not fetched here (see
    /// [`JwtVerifier::fetch_jwks_url`], feature `reload`).
    pub fn from_config(config: &AuthConfig) -> Result<JwtVerifier, KeyError> {
        let verifier = JwtVerifier::empty(config)?;
        if verifier.pem_paths.is_empty() && !verifier.has_jwks() {
            return Err(KeyError::None);
        }
        verifier.reload_files()?;
        Ok(verifier)
    }

    /// A verifier with the PEM keys given in memory (tests, tools) instead of files.
    pub fn from_pems(
        pems: &[(&Path, Vec<u8>)],
        config: &AuthConfig,
    ) -> Result<JwtVerifier, KeyError> {
        if pems.is_empty() {
            return Err(KeyError::None);
        }
        let verifier = JwtVerifier::empty(config)?;
        let pem = pems
            .iter()
            .map(|(path, bytes)| pem_key(path, bytes, &verifier.algorithms))
            .collect::<Result<Vec<_>, _>>()?;
        verifier.swap(|old| {
            KeySet::new(
                pem,
                Vec::new(),
                old.jwks_url.clone(),
                old.jwks_url_missing.clone(),
            )
        });
        Ok(verifier)
    }

    fn empty(config: &AuthConfig) -> Result<JwtVerifier, KeyError> {
        let mut algorithms = Vec::new();
        for name in &config.algorithms {
            let algorithm = match name.as_str() {
                "RS256" => Algorithm::RS256,
                "ES256" => Algorithm::ES256,
                other => return Err(KeyError::Algorithm(other.to_owned())),
            };
            if !algorithms.contains(&algorithm) {
                algorithms.push(algorithm);
            }
        }
        if algorithms.is_empty() {
            return Err(KeyError::NoAlgorithms);
        }
        let jwks_url = config
            .jwks_url
            .as_deref()
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(str::to_owned);
        if let Some(url) = &jwks_url {
            check_jwks_url(url, config.jwks_allow_http).map_err(|message| KeyError::Jwks {
                source_name: "auth.jwks_url".to_owned(),
                message,
            })?;
        }
        let missing = jwks_url
            .as_ref()
            .map(|_| "the JWKS has not been fetched yet".to_owned());
        Ok(JwtVerifier {
            keys: RwLock::new(Arc::new(KeySet::new(
                Vec::new(),
                Vec::new(),
                Vec::new(),
                missing,
            ))),
            pem_paths: config.public_keys.clone(),
            jwks_file: config.jwks_file.clone(),
            jwks_url,
            jwks_allow_http: config.jwks_allow_http,
            jwks_ca_file: config.jwks_ca_file.clone(),
            refresh_secs: config.jwks_refresh_secs.max(1),
            max_stale: Duration::from_secs(config.jwks_max_stale_secs.max(1)),
            min_refetch: Duration::from_secs(config.jwks_min_refetch_secs.max(1)),
            jwks_health: JwksUrlHealth {
                created: Instant::now(),
                fetched: Mutex::new(None),
                failures: AtomicU64::new(0),
            },
            algorithms,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway_secs: config.leeway_secs,
            groups_claim: config.groups_claim.clone(),
            unknown_kid_seen: AtomicBool::new(false),
            verified: VerifiedTokens::default(),
        })
    }

    fn current(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the key set with `build(old)`; a request sees the old set or the new one, never a mix.
    /// Verified tokens whose key is gone are forgotten; those whose key is still there stay verified.
    fn swap(&self, build: impl FnOnce(&KeySet) -> KeySet) {
        let mut guard = self
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let next = Arc::new(build(&guard));
        *guard = next.clone();
        drop(guard);
        // Only frees memory: a hit counts only while its key is in the current set (see `verify`).
        self.verified.retain(&next.fingerprints);
    }

    /// Re-reads the PEM files and the JWKS file. On any error nothing changes (the keys in use stay).
    pub fn reload_files(&self) -> Result<(), KeyError> {
        let mut pem = Vec::new();
        for path in &self.pem_paths {
            let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
                path: path.display().to_string(),
                source,
            })?;
            pem.push(pem_key(path, &bytes, &self.algorithms)?);
        }
        let jwks_file = match &self.jwks_file {
            None => Vec::new(),
            Some(path) => {
                let name = path.display().to_string();
                let text = std::fs::read(path).map_err(|source| KeyError::Read {
                    path: name.clone(),
                    source,
                })?;
                parse_jwks(&text, &name, &self.algorithms)?
            }
        };
        self.swap(|old| {
            KeySet::new(
                pem,
                jwks_file,
                old.jwks_url.clone(),
                old.jwks_url_missing.clone(),
            )
        });
        Ok(())
    }

    /// Replaces the keys that came from the JWKS URL with the keys of `document`.
    pub fn install_jwks_url_keys(&self, document: &[u8]) -> Result<usize, KeyError> {
        let name = self.jwks_url.clone().unwrap_or_else(|| "URL".to_owned());
        let keys = parse_jwks(document, &name, &self.algorithms)?;
        let count = keys.len();
        self.swap(|old| KeySet::new(old.pem.clone(), old.jwks_file.clone(), keys, None));
        *self.lock_fetched() = Some(Instant::now());
        self.unknown_kid_seen.store(false, Ordering::Relaxed);
        Ok(count)
    }

    fn lock_fetched(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.jwks_health
            .fetched
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a failed fetch of the JWKS URL (`eventgate_jwks_refresh_failures_total`).
    pub fn record_jwks_failure(&self) {
        self.jwks_health.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The JWKS URL's state for the metrics; `None` without a JWKS URL.
    pub fn jwks_status(&self) -> Option<JwksStatus> {
        self.jwks_url.as_ref()?;
        let since = self.lock_fetched().unwrap_or(self.jwks_health.created);
        Some(JwksStatus {
            age_secs: since.elapsed().as_secs_f64(),
            keys: self.current().jwks_url.len(),
            failures: self.jwks_health.failures.load(Ordering::Relaxed),
        })
    }

    /// Drops the JWKS URL's keys when, at `now`, the last successful fetch is older than
    /// `auth.jwks_max_stale_secs`; returns whether it did. Called by the refresher every second.
    pub fn expire_stale_jwks(&self, now: Instant) -> bool {
        let Some(fetched) = *self.lock_fetched() else {
            return false;
        };
        let age = now.saturating_duration_since(fetched);
        if age <= self.max_stale || self.current().jwks_url.is_empty() {
            return false;
        }
        let reason = format!(
            "the identity provider's keys (JWKS) could not be fetched for {} s, longer than \
             auth.jwks_max_stale_secs ({} s)",
            age.as_secs(),
            self.max_stale.as_secs()
        );
        tracing::error!(
            failures = self.jwks_health.failures.load(Ordering::Relaxed),
            "{reason}: its keys are dropped; tokens signed with them are answered 503 until a fetch succeeds"
        );
        self.swap(|old| {
            KeySet::new(
                old.pem.clone(),
                old.jwks_file.clone(),
                Vec::new(),
                Some(reason),
            )
        });
        true
    }

    /// The least time between two fetches of the JWKS URL caused by unknown `kid`s.
    pub fn min_refetch_interval(&self) -> Duration {
        self.min_refetch
    }

    pub fn jwks_url(&self) -> Option<&str> {
        self.jwks_url.as_deref()
    }

    /// How often the JWKS sources are re-read.
    pub fn refresh_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.refresh_secs)
    }

    /// Whether the JWKS file or URL should be re-read (periodically).
    pub fn has_jwks(&self) -> bool {
        self.jwks_file.is_some() || self.jwks_url.is_some()
    }

    /// Whether a token with an unknown `kid` arrived since the last fetch of the JWKS URL.
    pub fn unknown_kid_seen(&self) -> bool {
        self.unknown_kid_seen.load(Ordering::Relaxed)
    }

    /// Verifies the value of an `Authorization` header. Every failure is a 401 whose message says why,
    /// without echoing the token.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, ApiError> {
        let header = authorization.ok_or_else(|| unauthorized("missing Authorization header"))?;
        let token = bearer_token(header)
            .ok_or_else(|| unauthorized("Authorization must be 'Bearer <token>'"))?;
        self.verify(token)
    }

    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(unauthorized("token is too long"));
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let keys = self.current();
        if let Some(principal) = self.verified.get(token, &keys, now, self.leeway_secs) {
            return Ok(principal);
        }
        let (alg_name, kid) = token_header(token)?;
        let Some(algorithm) = self
            .algorithms
            .iter()
            .copied()
            .find(|a| algorithm_name(*a) == alg_name)
        else {
            let accepted: Vec<&str> = self.algorithms.iter().map(|a| algorithm_name(*a)).collect();
            return Err(unauthorized(format!(
                "token algorithm {:?} is not accepted (accepted: {})",
                crate::query::value::shorten(&alg_name, 20),
                accepted.join(", ")
            )));
        };
        let by_algorithm = || keys.all().filter(|k| k.algorithm == algorithm);
        let candidates: Vec<&VerificationKey> = match &kid {
            Some(kid) => {
                let named: Vec<_> = by_algorithm()
                    .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
                    .collect();
                if named.is_empty() {
                    // A key the identity provider published after our last fetch, or a forgery: the
                    // refresher fetches the JWKS again soon. Meanwhile keys without a kid may verify it.
                    self.unknown_kid_seen.store(true, Ordering::Relaxed);
                    by_algorithm().filter(|k| k.kid.is_none()).collect()
                } else {
                    named
                }
            }
            None => by_algorithm().collect(),
        };
        // No key we have verifies it, and the JWKS URL's keys are missing: one of them might. That is
        // our outage, not the client's mistake.
        let keys_unavailable = || {
            keys.jwks_url_missing.as_deref().map(|reason| {
                ApiError::new(
                    ErrorKind::AuthUnavailable,
                    format!("the token cannot be verified now: {reason}; retry later"),
                )
            })
        };
        if candidates.is_empty() {
            if let Some(error) = keys_unavailable() {
                return Err(error);
            }
            return Err(unauthorized(match kid {
                Some(_) => "token key id (kid) is not one of the configured keys",
                None => "no configured key verifies this token's algorithm",
            }));
        }
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".to_owned());
            }
            None => validation.validate_aud = false,
        }
        for candidate in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &candidate.key, &validation) {
                Ok(data) => {
                    let principal = self.principal(&data.claims)?;
                    self.verified
                        .insert(token, candidate.fingerprint, &principal, &data.claims);
                    return Ok(principal);
                }
                Err(error) => {
                    use jsonwebtoken::errors::ErrorKind as Jwt;
                    let reason = match error.kind() {
                        Jwt::InvalidSignature => continue,
                        Jwt::ExpiredSignature => "token has expired",
                        Jwt::ImmatureSignature => "token is not valid yet (nbf)",
                        Jwt::InvalidIssuer => "token issuer is not accepted",
                        Jwt::InvalidAudience => "token audience is not accepted",
                        Jwt::MissingRequiredClaim(claim) => match claim.as_str() {
                            "exp" => "token has no expiry (exp)",
                            "sub" => "token has no subject (sub)",
                            "iss" => "token has no issuer (iss)",
                            "aud" => "token has no audience (aud)",
                            _ => "token lacks a required claim",
                        },
                        _ => "token is invalid",
                    };
                    // Claims are checked only once the signature verified: the reason is about this
                    // very token, no other key will do better.
                    return Err(unauthorized(reason));
                }
            }
        }
        if let Some(error) = keys_unavailable() {
            return Err(error);
        }
        Err(unauthorized(
            "token signature does not match any configured key",
        ))
    }

    fn principal(&self, claims: &Map<String, Value>) -> Result<Principal, ApiError> {
        let user = match claims.get("sub") {
            Some(Value::String(sub)) if !sub.trim().is_empty() => sub.clone(),
            _ => return Err(unauthorized("token has no subject (sub)")),
        };
        let mut principal = Principal::user(user);
        let groups = claims
            .get(&self.groups_claim)
            .or_else(|| claim_at_path(claims, &self.groups_claim));
        match groups {
            Some(Value::String(group)) => {
                principal.groups.insert(group.clone());
            }
            Some(Value::Array(items)) => {
                principal
                    .groups
                    .extend(items.iter().filter_map(Value::as_str).map(str::to_owned));
            }
            _ => {}
        }
        Ok(principal)
    }
}

/// `realm_access.roles`: walks objects of the claims by dot path.
fn claim_at_path<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let first = claims.get(parts.next()?)?;
    parts.try_fold(first, |value, part| value.as_object()?.get(part))
}

/// Most tokens kept in [`VerifiedTokens`]; beyond, it starts over empty.
const MAX_VERIFIED_TOKENS: usize = 4096;

/// The tokens that verified recently, by their exact text. A producer sends the same token with every
/// request, and checking an RS256 signature costs about 0.1 ms of CPU, most of a one-event request (see
/// docs/PERFORMANCE.md). A hit skips only the signature and the claims already checked: `exp` and `nbf`
/// are checked again against the clock, a hit counts only while the key that verified the token is
/// still configured (a key change forgets exactly the tokens of the keys that went; a JWKS refetch
/// that keeps the keys forgets nothing), and failures are never cached — so tokens with made-up `kid`s
/// neither fill nor flush it.
#[derive(Default)]
struct VerifiedTokens {
    tokens: Mutex<HashMap<String, VerifiedToken>>,
}

struct VerifiedToken {
    /// The key that verified it.
    key: Fingerprint,
    principal: Principal,
    exp: i64,
    nbf: Option<i64>,
}

impl VerifiedTokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VerifiedToken>> {
        self.tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The principal of a token verified with a key of `keys` that is still within its validity window
    /// (the same leeway as the full check); `None` sends the token through the full check, which also
    /// words the refusal.
    fn get(&self, token: &str, keys: &KeySet, now: i64, leeway_secs: u64) -> Option<Principal> {
        let leeway = i64::try_from(leeway_secs).unwrap_or(i64::MAX);
        let tokens = self.lock();
        let entry = tokens.get(token)?;
        let current = keys.fingerprints.contains(&entry.key)
            && entry.exp >= now.saturating_sub(leeway)
            && entry
                .nbf
                .is_none_or(|nbf| nbf <= now.saturating_add(leeway));
        current.then(|| entry.principal.clone())
    }

    fn insert(
        &self,
        token: &str,
        key: Fingerprint,
        principal: &Principal,
        claims: &Map<String, Value>,
    ) {
        let seconds = |claim: &str| {
            let value = claims.get(claim)?;
            value.as_i64().or_else(|| value.as_f64().map(|f| f as i64))
        };
        // `exp` is a required claim; a token that verified without a readable one is not cached.
        let Some(exp) = seconds("exp") else {
            return;
        };
        let mut tokens = self.lock();
        if tokens.len() >= MAX_VERIFIED_TOKENS {
            tokens.clear();
        }
        tokens.insert(
            token.to_owned(),
            VerifiedToken {
                key,
                principal: principal.clone(),
                exp,
                nbf: seconds("nbf"),
            },
        );
    }

    /// The keys changed: forgets the tokens verified with keys no longer in `keys`.
    fn retain(&self, keys: &std::collections::HashSet<Fingerprint>) {
        self.lock().retain(|_, entry| keys.contains(&entry.key));
    }
}

/// The `alg` and `kid` of a token's header, read without trusting anything else in it.
fn token_header(token: &str) -> Result<(String, Option<String>), ApiError> {
    let invalid = || unauthorized("token is not a valid JWT");
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| invalid())?;
    let header: Map<String, Value> = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.clone(),
        _ => return Err(unauthorized("token header has no algorithm (alg)")),
    };
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(invalid()),
    };
    Ok((alg, kid))
}

fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        // Only the two above are ever configured (see `JwtVerifier::empty`).
        _ => "unsupported",
    }
}

fn pem_key(path: &Path, pem: &[u8], accepted: &[Algorithm]) -> Result<VerificationKey, KeyError> {
    let (algorithm, key, kind) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        (Algorithm::RS256, key, "an RSA key")
    } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        (Algorithm::ES256, key, "an EC key")
    } else {
        return Err(KeyError::Format {
            path: path.display().to_string(),
        });
    };
    if !accepted.contains(&algorithm) {
        return Err(KeyError::Unusable {
            path: path.display().to_string(),
            kind,
            algorithm: algorithm_name(algorithm),
        });
    }
    Ok(VerificationKey {
        algorithm,
        kid: None,
        key,
        fingerprint: fingerprint(algorithm, None, pem),
    })
}

/// The usable keys of a JWKS document: RSA keys for RS256 and EC P-256 keys for ES256 (when accepted),
/// meant for signatures. Other keys (encryption keys, other curves and algorithms) are skipped; a
/// document with no usable key at all is an error, so a broken document never replaces a good one.
fn parse_jwks(
    document: &[u8],
    source_name: &str,
    accepted: &[Algorithm],
) -> Result<Vec<VerificationKey>, KeyError> {
    let error = |message: String| KeyError::Jwks {
        source_name: source_name.to_owned(),
        message,
    };
    if document.len() > MAX_JWKS_BYTES {
        return Err(error(format!("larger than {MAX_JWKS_BYTES} bytes")));
    }
    let value: Value =
        serde_json::from_slice(document).map_err(|e| error(format!("not JSON: {e}")))?;
    let Some(items) = value.get("keys").and_then(Value::as_array) else {
        return Err(error("no \"keys\" array".to_owned()));
    };
    let mut keys = Vec::new();
    for item in items {
        let Ok(jwk) = serde_json::from_value::<Jwk>(item.clone()) else {
            continue;
        };
        if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
            continue;
        }
        let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
            (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
            (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
                if p.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            _ => continue,
        };
        if !accepted.contains(&algorithm) {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        // The key material as parsed (not the document's text, whose order and spacing may change).
        let material = serde_json::to_vec(&jwk.algorithm).unwrap_or_default();
        keys.push(VerificationKey {
            algorithm,
            fingerprint: fingerprint(algorithm, jwk.common.key_id.as_deref(), &material),
            kid: jwk.common.key_id.clone(),
            key,
        });
    }
    if keys.is_empty() {
        return Err(error("no usable RS256/ES256 signing key".to_owned()));
    }
    Ok(keys)
}

/// `Bearer <token>`, the scheme matched case-insensitively as RFC 7235 requires.
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::Auth, message)
}

/// Fetching and refreshing the JWKS URL, and re-reading the key files (feature `reload`).
#[cfg(feature = "reload")]
mod refresh {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::{JwtVerifier, KeyError, MAX_JWKS_BYTES};

    const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
    /// Redirects followed, all within the URL's origin (an identity provider moving its document).
    const MAX_REDIRECTS: usize = 3;

    /// `scheme://host:port` of a URL, the port made explicit.
    fn origin(url: &reqwest::Url) -> (String, Option<String>, Option<u16>) {
        (
            url.scheme().to_owned(),
            url.host_str().map(str::to_ascii_lowercase),
            url.port_or_known_default(),
        )
    }

    /// Follows a redirect only to the same scheme, host and port: a redirect must not downgrade the
    /// fetch to http, nor hand the choice of our keys to another host.
    fn same_origin_redirects() -> reqwest::redirect::Policy {
        reqwest::redirect::Policy::custom(|attempt| {
            let Some(first) = attempt.previous().first() else {
                return attempt.stop();
            };
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            if origin(attempt.url()) != origin(first) {
                let refused = format!(
                    "redirect to {} refused: the JWKS may only be redirected within {}://{}",
                    attempt.url(),
                    first.scheme(),
                    first.host_str().unwrap_or_default(),
                );
                return attempt.error(refused);
            }
            attempt.follow()
        })
    }

    /// An error with its causes: reqwest's own message hides why a redirect or TLS failed.
    fn describe(error: &(dyn std::error::Error + 'static)) -> String {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        text
    }

    impl JwtVerifier {
        fn jwks_client(&self, source_name: &str) -> Result<reqwest::Client, KeyError> {
            let error = |message: String| KeyError::Jwks {
                source_name: source_name.to_owned(),
                message,
            };
            let mut builder = reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                .https_only(!self.jwks_allow_http)
                .redirect(same_origin_redirects());
            if let Some(path) = &self.jwks_ca_file {
                let pem = std::fs::read(path).map_err(|e| {
                    error(format!(
                        "cannot read auth.jwks_ca_file {}: {e}",
                        path.display()
                    ))
                })?;
                let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    error(format!(
                        "auth.jwks_ca_file {}: {}",
                        path.display(),
                        describe(&e)
                    ))
                })?;
                for certificate in certificates {
                    builder = builder.add_root_certificate(certificate);
                }
            }
            builder.build().map_err(|e| error(describe(&e)))
        }

        /// Fetches the JWKS URL (if configured) and installs its keys; returns how many. A failure is
        /// counted (`eventgate_jwks_refresh_failures_total`) and leaves the keys in use.
        pub async fn fetch_jwks_url(&self) -> Result<usize, KeyError> {
            let Some(url) = self.jwks_url.clone() else {
                return Ok(0);
            };
            let result = self.fetch_and_install(&url).await;
            if result.is_err() {
                self.record_jwks_failure();
            }
            result
        }

        async fn fetch_and_install(&self, url: &str) -> Result<usize, KeyError> {
            let error = |message: String| KeyError::Jwks {
                source_name: url.to_owned(),
                message,
            };
            let client = self.jwks_client(url)?;
            let mut response = client
                .get(url)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|e| error(describe(&e)))?;
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| error(describe(&e)))? {
                if body.len() + chunk.len() > MAX_JWKS_BYTES {
                    return Err(error(format!("larger than {MAX_JWKS_BYTES} bytes")));
                }
                body.extend_from_slice(&chunk);
            }
            self.install_jwks_url_keys(&body)
        }

        /// Re-reads every key source; failures are logged and the keys in use stay (the JWKS URL's
        /// until they are older than `auth.jwks_max_stale_secs`).
        pub async fn refresh_all(&self) {
            if let Err(error) = self.reload_files() {
                tracing::error!(%error, "token keys not reloaded; the previous keys stay in use");
            }
            if self.jwks_url.is_some() {
                match self.fetch_jwks_url().await {
                    Ok(keys) => tracing::debug!(keys, "JWKS fetched"),
                    Err(error) => {
                        tracing::error!(%error, "JWKS not fetched; the previous keys stay in use")
                    }
                }
                self.expire_stale_jwks(Instant::now());
            }
        }

        /// Re-reads the JWKS file and URL every `jwks_refresh_secs`, the URL early when a token named an
        /// unknown `kid` (at most once per `jwks_min_refetch_secs` since the last fetch), and drops the
        /// URL's keys once they are older than `jwks_max_stale_secs`. Does nothing (returns `None`)
        /// without a JWKS source.
        pub fn spawn_jwks_refresh(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
            if !self.has_jwks() {
                return None;
            }
            let verifier = Arc::clone(self);
            Some(tokio::spawn(async move {
                let mut last = Instant::now();
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    verifier.expire_stale_jwks(Instant::now());
                    let due = last.elapsed() >= verifier.refresh_interval();
                    let wanted = verifier.jwks_url.is_some()
                        && verifier.unknown_kid_seen()
                        && last.elapsed() >= verifier.min_refetch_interval();
                    if due || wanted {
                        verifier.refresh_all().await;
                        last = Instant::now();
                    }
                }
            }))
        }
    }
}

#[cfg(test)]
mod tests;
