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
    assert!(verifier
        .verified
        .get(&token, &verifier.current(), now, 0)
        .is_none());
    assert_eq!(verifier.verify(&token).unwrap().user, "alice");
    let cached = |at: i64| {
        verifier
            .verified
            .get(&token, &verifier.current(), at, 0)
            .map(|p| p.user)
    };
    assert_eq!(cached(now), Some("alice".to_owned()));
    assert_eq!(verifier.verify(&token).unwrap().user, "alice");
    // The token expires 600 s from now: then the cached verdict no longer counts.
    assert_eq!(cached(now + 601), None);
    // The same key read again: still verified.
    verifier.reload_files().unwrap();
    assert_eq!(cached(now), Some("alice".to_owned()));
    // New keys: nothing verified with the old ones counts, and the token no longer verifies.
    std::fs::write(&path, fixture("rsa-other-public.pem")).unwrap();
    verifier.reload_files().unwrap();
    assert_eq!(cached(now), None);
    assert!(
        verifier.verified.lock().is_empty(),
        "forgotten, not only ignored"
    );
    assert_eq!(verifier.verify(&token).unwrap_err().status(), 401);
}

#[test]
fn the_verified_token_cache_is_bounded() {
    let cache = VerifiedTokens::default();
    let claims = serde_json::json!({"sub": "a", "exp": 100, "nbf": 50});
    let claims = claims.as_object().unwrap();
    let key = pem_key(
        Path::new("k.pem"),
        &fixture("es256-public.pem"),
        &[Algorithm::ES256],
    )
    .unwrap();
    let other = pem_key(
        Path::new("o.pem"),
        &fixture("rsa-other-public.pem"),
        &[Algorithm::RS256],
    )
    .unwrap();
    let keys = KeySet::new(vec![key.clone()], Vec::new(), Vec::new(), None);
    for i in 0..=MAX_VERIFIED_TOKENS {
        cache.insert(
            &format!("t{i}"),
            key.fingerprint,
            &Principal::user("a"),
            claims,
        );
    }
    assert!(cache.lock().len() <= MAX_VERIFIED_TOKENS);
    let last = format!("t{MAX_VERIFIED_TOKENS}");
    assert!(cache.get(&last, &keys, 60, 0).is_some());
    assert!(cache.get(&last, &keys, 40, 0).is_none(), "before nbf");
    assert!(
        cache.get(&last, &keys, 40, 10).is_some(),
        "within the leeway"
    );
    let other_keys = KeySet::new(vec![other], Vec::new(), Vec::new(), None);
    assert!(
        cache.get(&last, &other_keys, 60, 0).is_none(),
        "its key is not configured"
    );
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

#[test]
fn jwks_urls_must_be_https_unless_http_is_allowed() {
    assert!(check_jwks_url("https://login.example.com/jwks.json", false).is_ok());
    assert!(check_jwks_url("HTTPS://login.example.com", false).is_ok());
    let refused = check_jwks_url("http://login.example.com/jwks.json", false).unwrap_err();
    assert!(refused.contains("plain http"), "{refused}");
    assert!(refused.contains("auth.jwks_allow_http"), "{refused}");
    assert!(check_jwks_url("http://127.0.0.1:8000/jwks.json", true).is_ok());
    assert!(check_jwks_url("ftp://login.example.com/jwks.json", true).is_err());
    assert!(check_jwks_url("https:///jwks.json", false).is_err());
    assert!(check_jwks_url("login.example.com/jwks.json", false).is_err());

    let config = |allow_http| AuthConfig {
        jwks_url: Some("http://127.0.0.1:1/jwks.json".into()),
        jwks_allow_http: allow_http,
        ..AuthConfig::default()
    };
    match JwtVerifier::from_config(&config(false)) {
        Err(KeyError::Jwks { message, .. }) => assert!(message.contains("plain http"), "{message}"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("an http JWKS URL was accepted"),
    }
    assert!(JwtVerifier::from_config(&config(true)).is_ok());
}

/// JWKS fetching against real HTTP(S) servers started by the test (feature `reload`, which core's
/// tests enable).
#[cfg(feature = "reload")]
mod jwks_url {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};

    use super::*;

    /// What the test server answers.
    #[derive(Clone)]
    enum Answer {
        Document(String),
        Redirect(String),
    }

    /// A JWKS server on 127.0.0.1 (plain, or TLS with a certificate for `localhost` and `127.0.0.1`),
    /// counting the requests it got; [`JwksServer::stop`] closes its listener, [`JwksServer::start`]
    /// on the same port brings it back.
    struct JwksServer {
        port: u16,
        answer: Arc<Mutex<Answer>>,
        requests: Arc<AtomicUsize>,
        running: Arc<AtomicBool>,
        tls: Option<Arc<rustls::ServerConfig>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl JwksServer {
        fn http(answer: Answer) -> JwksServer {
            JwksServer::start(0, answer, None)
        }

        fn start(port: u16, answer: Answer, tls: Option<Arc<rustls::ServerConfig>>) -> JwksServer {
            let mut server = JwksServer {
                port,
                answer: Arc::new(Mutex::new(answer)),
                requests: Arc::new(AtomicUsize::new(0)),
                running: Arc::new(AtomicBool::new(false)),
                tls,
                thread: None,
            };
            server.resume();
            server
        }

        fn resume(&mut self) {
            let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
            self.port = listener.local_addr().unwrap().port();
            self.running.store(true, Ordering::SeqCst);
            let (answer, requests, running, tls) = (
                self.answer.clone(),
                self.requests.clone(),
                self.running.clone(),
                self.tls.clone(),
            );
            self.thread = Some(std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if !running.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let answer = answer.lock().unwrap().clone();
                    match &tls {
                        None => serve(stream, &answer, &requests),
                        Some(config) => {
                            let Ok(connection) = rustls::ServerConnection::new(config.clone())
                            else {
                                continue;
                            };
                            serve(
                                rustls::StreamOwned::new(connection, stream),
                                &answer,
                                &requests,
                            );
                        }
                    }
                }
            }));
        }

        fn url(&self, scheme: &str, host: &str, path: &str) -> String {
            format!("{scheme}://{host}:{}{path}", self.port)
        }

        fn set(&self, answer: Answer) {
            *self.answer.lock().unwrap() = answer;
        }

        fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }

        /// Closes the listener: connections are refused until [`JwksServer::resume`].
        fn stop(&mut self) {
            self.running.store(false, Ordering::SeqCst);
            // Wakes the accept loop, which sees `running` false and drops the listener.
            let _ = TcpStream::connect(("127.0.0.1", self.port));
            if let Some(thread) = self.thread.take() {
                thread.join().unwrap();
            }
        }
    }

    impl Drop for JwksServer {
        fn drop(&mut self) {
            self.stop();
        }
    }

    fn serve(mut stream: impl Read + Write, answer: &Answer, requests: &AtomicUsize) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        requests.fetch_add(1, Ordering::SeqCst);
        let path = String::from_utf8_lossy(&head)
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let response = match answer {
            // `/moved` redirects within the server, to its own `/jwks.json`.
            Answer::Document(_) if path == "/moved" => {
                "HTTP/1.1 302 Found\r\nlocation: /jwks.json\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned()
            }
            Answer::Document(body) => format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            ),
            Answer::Redirect(location) => format!(
                "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            ),
        };
        let _ = stream.write_all(response.as_bytes());
        let _ = stream.flush();
    }

    /// A JWKS document with the ES256 fixture key under each of `kids`.
    fn document(kids: &[&str]) -> String {
        let public = DecodingKey::from_ec_pem(&fixture("es256-public.pem")).unwrap();
        let keys: Vec<Jwk> = kids
            .iter()
            .map(|kid| {
                let mut jwk = Jwk::from_decoding_key(&public, Some(Algorithm::ES256)).unwrap();
                jwk.common.key_id = Some((*kid).to_owned());
                jwk
            })
            .collect();
        serde_json::json!({ "keys": keys }).to_string()
    }

    fn http_config(url: String) -> AuthConfig {
        AuthConfig {
            jwks_url: Some(url),
            jwks_allow_http: true,
            ..AuthConfig::default()
        }
    }

    fn fetch_error(verifier: &JwtVerifier) -> String {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        match runtime.block_on(verifier.fetch_jwks_url()) {
            Ok(keys) => panic!("fetched {keys} keys"),
            Err(error) => error.to_string(),
        }
    }

    fn fetch(verifier: &JwtVerifier) -> usize {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(verifier.fetch_jwks_url()).unwrap()
    }

    /// A CA, and a server configuration with a certificate it signed for `localhost` and 127.0.0.1.
    fn tls_server_config() -> (String, Arc<rustls::ServerConfig>) {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            )
            .unwrap();
        (ca.pem(), Arc::new(config))
    }

    #[test]
    fn https_with_the_configured_ca_and_no_downgrading_redirect() {
        let (ca_pem, tls) = tls_server_config();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &ca_pem).unwrap();
        let https = JwksServer::start(0, Answer::Document(document(&["k1"])), Some(tls));
        let http = JwksServer::http(Answer::Document(document(&["k1"])));
        let config = |url: String| AuthConfig {
            jwks_url: Some(url),
            jwks_ca_file: Some(ca_file.clone()),
            ..AuthConfig::default()
        };

        let verifier =
            JwtVerifier::from_config(&config(https.url("https", "localhost", "/jwks.json")))
                .unwrap();
        assert_eq!(fetch(&verifier), 1);
        assert!(verifier.verify(&es256_token(Some("k1"))).is_ok());
        // A same-origin redirect is followed.
        let moved =
            JwtVerifier::from_config(&config(https.url("https", "localhost", "/moved"))).unwrap();
        assert_eq!(fetch(&moved), 1);

        // Without the CA the certificate is not trusted.
        let untrusted = JwtVerifier::from_config(&AuthConfig {
            jwks_ca_file: None,
            ..config(https.url("https", "localhost", "/jwks.json"))
        })
        .unwrap();
        let error = fetch_error(&untrusted);
        assert!(error.to_lowercase().contains("certificate"), "{error}");

        // https → http, even to the same host: refused, and the http server is never asked.
        https.set(Answer::Redirect(http.url(
            "http",
            "localhost",
            "/jwks.json",
        )));
        let error = fetch_error(&verifier);
        assert!(error.contains("redirect to http://localhost"), "{error}");
        assert!(error.contains("refused"), "{error}");
        assert_eq!(http.requests(), 0);
        assert!(
            verifier.verify(&es256_token(Some("k1"))).is_ok(),
            "the keys stay"
        );
        assert_eq!(verifier.jwks_status().unwrap().failures, 1);
    }

    #[test]
    fn redirects_to_another_host_or_port_are_refused() {
        let target = JwksServer::http(Answer::Document(document(&["k1"])));
        let origin = JwksServer::http(Answer::Document(document(&["k1"])));
        let verifier =
            JwtVerifier::from_config(&http_config(origin.url("http", "127.0.0.1", "/moved")))
                .unwrap();
        assert_eq!(fetch(&verifier), 1, "same origin: followed");
        for elsewhere in [
            // Another host name (the same machine: only the name differs).
            target.url("http", "localhost", "/jwks.json"),
            // Another port.
            target.url("http", "127.0.0.1", "/jwks.json"),
        ] {
            origin.set(Answer::Redirect(elsewhere.clone()));
            let error = fetch_error(&verifier);
            assert!(
                error.contains(&format!("redirect to {elsewhere} refused")),
                "{error}"
            );
        }
        assert_eq!(target.requests(), 0, "the other origin was never asked");
        // A redirect loop within the origin ends.
        origin.set(Answer::Redirect("/again".into()));
        let error = fetch_error(&verifier);
        assert!(error.contains("redirects"), "{error}");
    }

    #[test]
    fn keys_expire_after_the_staleness_bound_and_come_back_with_the_server() {
        let mut server = JwksServer::http(Answer::Document(document(&["k1"])));
        let verifier = JwtVerifier::from_config(&AuthConfig {
            jwks_max_stale_secs: 60,
            ..http_config(server.url("http", "127.0.0.1", "/jwks.json"))
        })
        .unwrap();
        let token = es256_token(Some("k1"));

        // Before the first fetch: the token may be fine, we cannot tell yet.
        let error = verifier.verify(&token).unwrap_err();
        assert_eq!(error.status(), 503);
        assert_eq!(error.kind(), ErrorKind::AuthUnavailable);
        assert!(
            error.to_string().contains("not been fetched yet"),
            "{error}"
        );
        assert_eq!(verifier.jwks_status().unwrap().keys, 0);

        assert_eq!(fetch(&verifier), 1);
        assert_eq!(verifier.verify(&token).unwrap().user, "alice");
        let fetched = Instant::now();

        // The server goes away: fetches fail, the keys stay until the bound.
        server.stop();
        fetch_error(&verifier);
        fetch_error(&verifier);
        let status = verifier.jwks_status().unwrap();
        assert_eq!((status.keys, status.failures), (1, 2));
        assert!(!verifier.expire_stale_jwks(fetched + Duration::from_secs(59)));
        assert_eq!(verifier.verify(&token).unwrap().user, "alice");

        // Past the bound: dropped, with the cached verdict; 503 names the reason.
        assert!(verifier.expire_stale_jwks(fetched + Duration::from_secs(61)));
        let error = verifier.verify(&token).unwrap_err();
        assert_eq!(error.status(), 503);
        assert!(
            error
                .to_string()
                .contains("auth.jwks_max_stale_secs (60 s)"),
            "{error}"
        );
        assert_eq!(verifier.jwks_status().unwrap().keys, 0);
        // A token no key could ever verify is still a 503: without the keys we cannot tell.
        assert_eq!(
            verifier
                .verify(&es256_token(Some("other")))
                .unwrap_err()
                .status(),
            503
        );

        // The server is back: the next fetch restores the keys.
        server.resume();
        assert_eq!(fetch(&verifier), 1);
        assert_eq!(verifier.verify(&token).unwrap().user, "alice");
    }

    #[test]
    fn pem_keys_still_verify_while_the_jwks_keys_are_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, fixture("es256-public.pem")).unwrap();
        let verifier = JwtVerifier::from_config(&AuthConfig {
            public_keys: vec![path],
            ..http_config("http://127.0.0.1:1/jwks.json".into())
        })
        .unwrap();
        assert_eq!(verifier.verify(&es256_token(None)).unwrap().user, "alice");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unknown_kid_floods_neither_evict_verified_tokens_nor_hammer_the_provider() {
        let server = JwksServer::http(Answer::Document(document(&["k1"])));
        let verifier = Arc::new(
            JwtVerifier::from_config(&AuthConfig {
                jwks_refresh_secs: 3_600,
                jwks_min_refetch_secs: 1,
                ..http_config(server.url("http", "127.0.0.1", "/jwks.json"))
            })
            .unwrap(),
        );
        verifier.fetch_jwks_url().await.unwrap();
        let refresher = verifier.spawn_jwks_refresh().unwrap();
        let good = es256_token(Some("k1"));
        assert!(verifier.verify(&good).is_ok());
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let cached = || {
            verifier
                .verified
                .get(&good, &verifier.current(), now, 30)
                .is_some()
        };
        assert!(cached());

        // 3.5 s of tokens with made-up kids: each is refused, and asks for a refetch.
        let before = server.requests();
        let flood = Instant::now();
        let mut sent = 0;
        while flood.elapsed() < Duration::from_millis(3_500) {
            let kid = uuid::Uuid::new_v4().to_string();
            assert_eq!(
                verifier
                    .verify(&es256_token(Some(&kid)))
                    .unwrap_err()
                    .status(),
                401
            );
            sent += 1;
            assert!(
                cached(),
                "a verified token was forgotten after {sent} made-up kids"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let fetches = server.requests() - before;
        assert!(sent > 100, "{sent}");
        // At most one fetch per second (the refresher ticks once a second), and at least one.
        assert!(
            (1..=4).contains(&fetches),
            "{fetches} fetches for {sent} tokens"
        );

        // A rotation that keeps k1 keeps its tokens; one that withdraws it forgets them.
        server.set(Answer::Document(document(&["k1", "k2"])));
        verifier.fetch_jwks_url().await.unwrap();
        assert!(cached());
        server.set(Answer::Document(document(&["k2"])));
        verifier.fetch_jwks_url().await.unwrap();
        assert!(!cached());
        assert!(verifier.verified.lock().is_empty());
        assert_eq!(verifier.verify(&good).unwrap_err().status(), 401);
        refresher.abort();
    }
}
