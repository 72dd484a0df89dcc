//! Bearer-token verification. Tokens are JWTs signed with RS256 or ES256 by an identity provider whose
//! public keys are configured; several keys may be configured at once so keys can be rotated without
//! downtime. The authenticated user is the token's `sub`.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::AuthConfig;
use crate::error::{ApiError, ErrorKind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: Option<String>,
}

struct VerificationKey {
    algorithm: Algorithm,
    key: DecodingKey,
}

pub struct JwtVerifier {
    keys: Vec<VerificationKey>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
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
    #[error("no public keys configured (auth.public_keys): every request would be refused")]
    None,
}

impl JwtVerifier {
    pub fn from_config(config: &AuthConfig) -> Result<JwtVerifier, KeyError> {
        let mut pems = Vec::new();
        for path in &config.public_keys {
            let pem = std::fs::read(path).map_err(|source| KeyError::Read {
                path: path.display().to_string(),
                source,
            })?;
            pems.push((path.as_path(), pem));
        }
        JwtVerifier::from_pems(&pems, config)
    }

    pub fn from_pems(
        pems: &[(&Path, Vec<u8>)],
        config: &AuthConfig,
    ) -> Result<JwtVerifier, KeyError> {
        if pems.is_empty() {
            return Err(KeyError::None);
        }
        let keys = pems
            .iter()
            .map(|(path, pem)| {
                if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
                    Ok(VerificationKey {
                        algorithm: Algorithm::RS256,
                        key,
                    })
                } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
                    Ok(VerificationKey {
                        algorithm: Algorithm::ES256,
                        key,
                    })
                } else {
                    Err(KeyError::Format {
                        path: path.display().to_string(),
                    })
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(JwtVerifier {
            keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway_secs: config.leeway_secs,
        })
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
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| unauthorized("token is not a valid JWT"))?;
        let candidates: Vec<&VerificationKey> = self
            .keys
            .iter()
            .filter(|k| k.algorithm == header.alg)
            .collect();
        if candidates.is_empty() {
            return Err(unauthorized(format!(
                "token algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let mut last_error = unauthorized("token signature does not match any configured key");
        for candidate in candidates {
            let mut validation = Validation::new(candidate.algorithm);
            validation.leeway = self.leeway_secs;
            validation.validate_nbf = true;
            validation.set_required_spec_claims(&["exp", "sub"]);
            if let Some(issuer) = &self.issuer {
                validation.set_issuer(&[issuer]);
            }
            match &self.audience {
                Some(audience) => validation.set_audience(&[audience]),
                None => validation.validate_aud = false,
            }
            match jsonwebtoken::decode::<Claims>(token, &candidate.key, &validation) {
                Ok(data) => {
                    return match data.claims.sub {
                        Some(user) if !user.is_empty() => Ok(Principal { user }),
                        _ => Err(unauthorized("token has no subject (sub)")),
                    };
                }
                Err(error) => {
                    use jsonwebtoken::errors::ErrorKind as Jwt;
                    let reason = match error.kind() {
                        Jwt::InvalidSignature => continue,
                        Jwt::ExpiredSignature => "token has expired",
                        Jwt::ImmatureSignature => "token is not valid yet (nbf)",
                        Jwt::InvalidIssuer => "token issuer is not accepted",
                        Jwt::InvalidAudience => "token audience is not accepted",
                        Jwt::MissingRequiredClaim(claim) if claim == "exp" => {
                            "token has no expiry (exp)"
                        }
                        Jwt::MissingRequiredClaim(claim) if claim == "sub" => {
                            "token has no subject (sub)"
                        }
                        _ => "token is invalid",
                    };
                    last_error = unauthorized(reason);
                }
            }
        }
        Err(last_error)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
    }

    #[test]
    fn no_keys_is_a_configuration_error() {
        assert!(matches!(
            JwtVerifier::from_pems(&[], &AuthConfig::default()),
            Err(KeyError::None)
        ));
    }

    #[test]
    fn garbage_key_is_rejected() {
        let result = JwtVerifier::from_pems(
            &[(Path::new("k.pem"), b"not a key".to_vec())],
            &AuthConfig::default(),
        );
        assert!(matches!(result, Err(KeyError::Format { .. })));
    }
}
