use super::*;

#[test]
fn bearer_scheme_is_case_insensitive() {
    assert_eq!(bearer_token("Bearer abc"), Some("abc"));
    assert_eq!(bearer_token("bearer  abc "), Some("abc"));
    assert_eq!(bearer_token("BEARER abc"), Some("abc"));
    assert_eq!(bearer_token("Basic abc"), None);
    assert_eq!(bearer_token("Bearer"), None);
    assert_eq!(bearer_token("Bearerabc"), None);
}

#[test]
fn no_keys_is_a_configuration_error() {
    assert!(matches!(
        JwtVerifier::from_pems(&[], &AuthConfig::default()),
        Err(KeyError::None)
    ));
    assert!(matches!(
        JwtVerifier::from_config(&AuthConfig::default()),
        Err(KeyError::None)
    ));
    let blank_url = AuthConfig {
        jwks_url: Some(" ".into()),
        ..AuthConfig::default()
    };
    assert!(matches!(
        JwtVerifier::from_config(&blank_url),
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

#[test]
fn only_rs256_and_es256_can_be_configured() {
    for bad in ["HS256", "none", "RS384", "rs256"] {
        let config = AuthConfig {
            algorithms: vec![bad.into()],
            ..AuthConfig::default()
        };
        assert!(
            matches!(JwtVerifier::empty(&config), Err(KeyError::Algorithm(_))),
            "{bad}"
        );
    }
    let config = AuthConfig {
        algorithms: Vec::new(),
        ..AuthConfig::default()
    };
    assert!(matches!(
        JwtVerifier::empty(&config),
        Err(KeyError::NoAlgorithms)
    ));
}

#[test]
fn header_is_read_without_trusting_it() {
    let header = |json: &str| format!("{}.e30.sig", URL_SAFE_NO_PAD.encode(json));
    assert_eq!(
        token_header(&header(r#"{"alg":"none"}"#)).unwrap(),
        ("none".into(), None)
    );
    assert_eq!(
        token_header(&header(r#"{"alg":"RS256","kid":"k1"}"#)).unwrap(),
        ("RS256".into(), Some("k1".into()))
    );
    assert!(token_header(&header(r#"{"typ":"JWT"}"#)).is_err());
    assert!(token_header(&header(r#"{"alg":"RS256","kid":5}"#)).is_err());
    assert!(token_header("a.b").is_err());
    assert!(token_header("a.b.c.d").is_err());
    assert!(token_header("!!!.b.c").is_err());
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/keys")
            .join(name),
    )
    .unwrap()
}

fn es256_token(kid: Option<&str>) -> String {
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&fixture("es256-private.pem")).unwrap();
    let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 600;
    jsonwebtoken::encode(
        &header,
        &serde_json::json!({"sub": "alice", "exp": exp}),
        &key,
    )
    .unwrap()
}

#[test]
fn verified_tokens_count_until_they_expire_or_the_keys_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.pem");
    std::fs::write(&path, fixture("es256-public.pem")).unwrap();
    let verifier = JwtVerifier::from_config(&AuthConfig {
        public_keys: vec![path.clone()],
        leeway_secs: 0,
        ..AuthConfig::default()
    })
    .unwrap();
    let token = es256_token(None);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let generation = verifier.verified.generation();
    assert!(verifier.verified.get(&token, generation, now, 0).is_none());
    assert_eq!(verifier.verify(&token).unwrap().user, "alice");
    let cached = |at: i64| {
        let generation = verifier.verified.generation();
        verifier
            .verified
            .get(&token, generation, at, 0)
            .map(|p| p.user)
    };
    assert_eq!(cached(now), Some("alice".to_owned()));
    assert_eq!(verifier.verify(&token).unwrap().user, "alice");
    // The token expires 600 s from now: then the cached verdict no longer counts.
    assert_eq!(cached(now + 601), None);
    // New keys: nothing verified with the old ones counts, and the token no longer verifies.
    std::fs::write(&path, fixture("rsa-other-public.pem")).unwrap();
    verifier.reload_files().unwrap();
    assert_eq!(cached(now), None);
    assert!(verifier.verified.get(&token, generation, now, 0).is_none());
    assert_eq!(verifier.verify(&token).unwrap_err().status(), 401);
}

#[test]
fn the_verified_token_cache_is_bounded() {
    let cache = VerifiedTokens::default();
    let claims = serde_json::json!({"sub": "a", "exp": 100, "nbf": 50});
    let claims = claims.as_object().unwrap();
    for i in 0..=MAX_VERIFIED_TOKENS {
        cache.insert(&format!("t{i}"), 0, &Principal::user("a"), claims);
    }
    assert!(cache.lock().len() <= MAX_VERIFIED_TOKENS);
    let last = format!("t{MAX_VERIFIED_TOKENS}");
    assert!(cache.get(&last, 0, 60, 0).is_some());
    assert!(cache.get(&last, 0, 40, 0).is_none(), "before nbf");
    assert!(cache.get(&last, 0, 40, 10).is_some(), "within the leeway");
    assert!(cache.get(&last, 1, 60, 0).is_none(), "another generation");
}

#[test]
fn reload_keeps_the_keys_when_a_file_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.pem");
    std::fs::write(&path, fixture("es256-public.pem")).unwrap();
    let verifier = JwtVerifier::from_config(&AuthConfig {
        public_keys: vec![path.clone()],
        ..AuthConfig::default()
    })
    .unwrap();
    assert_eq!(verifier.verify(&es256_token(None)).unwrap().user, "alice");
    std::fs::write(&path, b"garbage").unwrap();
    assert!(verifier.reload_files().is_err());
    assert!(
        verifier.verify(&es256_token(None)).is_ok(),
        "old key still in use"
    );
    std::fs::write(&path, fixture("rsa-other-public.pem")).unwrap();
    verifier.reload_files().unwrap();
    assert_eq!(
        verifier.verify(&es256_token(None)).unwrap_err().status(),
        401
    );
}

#[test]
fn jwks_keys_are_chosen_by_kid_and_unusable_ones_skipped() {
    let public = DecodingKey::from_ec_pem(&fixture("es256-public.pem")).unwrap();
    let mut jwk = Jwk::from_decoding_key(&public, Some(Algorithm::ES256)).unwrap();
    jwk.common.key_id = Some("k1".into());
    let mut encryption = jwk.clone();
    encryption.common.key_id = Some("enc".into());
    encryption.common.public_key_use = Some(PublicKeyUse::Encryption);
    let document = serde_json::json!({"keys": [
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"},
        {"kty": "XYZ", "kid": "unknown"},
        encryption,
        jwk,
    ]});
    let algorithms = [Algorithm::RS256, Algorithm::ES256];
    let keys = parse_jwks(document.to_string().as_bytes(), "test", &algorithms).unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].kid.as_deref(), Some("k1"));
    assert!(parse_jwks(
        br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#,
        "t",
        &algorithms
    )
    .is_err());
    assert!(parse_jwks(b"[]", "t", &algorithms).is_err());
    assert!(parse_jwks(document.to_string().as_bytes(), "t", &[Algorithm::RS256]).is_err());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, document.to_string()).unwrap();
    let verifier = JwtVerifier::from_config(&AuthConfig {
        jwks_file: Some(path),
        ..AuthConfig::default()
    })
    .unwrap();
    assert!(verifier.verify(&es256_token(Some("k1"))).is_ok());
    assert!(
        verifier.verify(&es256_token(None)).is_ok(),
        "no kid: every key of the algorithm"
    );
    assert_eq!(
        verifier
            .verify(&es256_token(Some("enc")))
            .unwrap_err()
            .status(),
        401
    );
    assert!(
        verifier.unknown_kid_seen(),
        "an unknown kid asks for a JWKS refresh"
    );
}

#[test]
fn groups_claim_may_be_a_dot_path() {
    let verifier = JwtVerifier::empty(&AuthConfig {
        groups_claim: "realm_access.roles".into(),
        ..AuthConfig::default()
    })
    .unwrap();
    let claims = serde_json::json!({"sub": "alice", "realm_access": {"roles": ["ops", 5, "dev"]}});
    let principal = verifier.principal(claims.as_object().unwrap()).unwrap();
    assert_eq!(
        principal,
        Principal::user("alice").with_groups(["ops", "dev"])
    );
    let claims = serde_json::json!({"sub": "bob", "realm_access.roles": "admins"});
    let principal = verifier.principal(claims.as_object().unwrap()).unwrap();
    assert!(principal.in_group("admins"));
    let claims = serde_json::json!({"sub": " "});
    assert!(verifier.principal(claims.as_object().unwrap()).is_err());
}
