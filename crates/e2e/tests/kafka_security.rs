//! Kafka over TLS and SASL, against real servers the tests start: a tansu of their own with SASL
//! authentication required, behind stunnel (TLS, client certificates demanded) with certificates made
//! by the test (`eventgate_test_support::SecureBroker`).
//!
//! - The whole pipeline (topic creation, the ingest-api's producer, the writers' consumer group, the
//!   probes) over TLS with mutual authentication and an encrypted client key: every event answered 202
//!   is stored and read back.
//! - The whole pipeline over SASL SCRAM (SCRAM-SHA-512 over SASL_SSL through the proxy), logged in as a
//!   user the broker created at start (`TANSU_SCRAM_USERS`, our tansu patch); and SCRAM-SHA-256 over
//!   SASL_PLAINTEXT: the right password is let in, a wrong one and an unknown user are refused, each
//!   with the broker's word for it (invalid-proof, unknown-user).
//! - Each setting that cannot work stops the start within seconds with an error naming it: SCRAM
//!   credentials the broker refuses (a wrong password of a user it knows), over SASL_SSL through the
//!   proxy (`kafka.sasl_password`, for the ingest-api and the writer), a CA that did not sign the
//!   broker's certificate
//!   (`kafka.ssl_ca_location`), a client certificate the proxy does not trust or none
//!   (`kafka.ssl_certificate_location`), a wrong key passphrase (`kafka.ssl_key_password`). Protocol
//!   mismatches and unreachable brokers are not fatal, but reported within the check.
//!
//! What tansu cannot do (docs/OPERATIONS.md, "Connecting to managed Kafka"): TLS itself (hence stunnel).
//! Unpatched, tansu 0.6 also refuses every SASL login with memory storage (it stores no SCRAM
//! credentials there, and `tansu user create` cannot reach a broker that demands authentication); our
//! build stores them and creates the users of `TANSU_SCRAM_USERS` at start (docs/tansu-bugs.md).

use std::time::{Duration, Instant};

use eventgate_core::config::{Config, KafkaConfig, KafkaSecurityProtocol, SaslMechanism, Secret};
use eventgate_core::kafka::{check_brokers, BrokerCheck, KafkaSettingError};
use eventgate_e2e::System;
use eventgate_test_support::{
    stack, SecureBroker, SecureBrokerOptions, TestPki, CLIENT_KEY_PASSWORD,
};
use serde_json::json;

/// The users the authenticating brokers create at start (`TANSU_SCRAM_USERS`).
const SCRAM_USERS: &[(&str, &str)] = &[
    ("eventgate", "eventgate-scram-secret"),
    ("auditor", "auditor:pass"),
];

/// A refusal must be reported well within this (librdkafka retries forever; the check must not).
const FAST: Duration = Duration::from_secs(8);

fn broker(options: SecureBrokerOptions) -> SecureBroker {
    SecureBroker::start(options).unwrap_or_else(|e| panic!("cannot start the secure broker: {e:#}"))
}

fn pki(broker: &SecureBroker) -> &TestPki {
    broker.pki.as_ref().expect("the broker has certificates")
}

/// TLS trusting the test CA, with the client certificate and its encrypted key.
fn mutual_tls(kafka: &mut KafkaConfig, broker: &SecureBroker) {
    let pki = pki(broker);
    kafka.brokers = broker.brokers.clone();
    kafka.security_protocol = KafkaSecurityProtocol::Ssl;
    kafka.ssl_ca_location = Some(pki.ca_cert.clone());
    kafka.ssl_certificate_location = Some(pki.client_cert.clone());
    kafka.ssl_key_location = Some(pki.client_key.clone());
    kafka.ssl_key_password = Some(Secret::new(CLIENT_KEY_PASSWORD));
}

/// Runs the start-up check and expects a refusal naming `setting`, fast.
async fn expect_refused(kafka: &KafkaConfig, broker: &SecureBroker, setting: &str) -> String {
    let started = Instant::now();
    let result = check_brokers(kafka, Duration::from_secs(20)).await;
    let elapsed = started.elapsed();
    match result {
        Err(KafkaSettingError {
            setting: named,
            message,
        }) if named == setting => {
            assert!(elapsed < FAST, "refused only after {elapsed:?}: {message}");
            eprintln!("refused in {elapsed:?}: {named}: {message}");
            message
        }
        other => panic!(
            "expected a refusal naming {setting}, got {other:?} after {elapsed:?}\n{}",
            broker.logs()
        ),
    }
}

/// A protocol mismatch that the broker answers by closing the connection (or not at all) looks like a
/// broker that is starting: not fatal, but reported within the check, with what to check.
async fn expect_unreachable_with_hint(kafka: &KafkaConfig, hint: &str) {
    let started = Instant::now();
    let result = check_brokers(kafka, Duration::from_secs(4)).await;
    assert!(started.elapsed() < FAST, "{:?}", started.elapsed());
    match result {
        Ok(BrokerCheck::Unreachable(reason)) => assert!(reason.contains(hint), "{reason}"),
        other => panic!("expected unreachable with a hint, got {other:?}"),
    }
}

/// The whole pipeline with the Kafka settings `secure` makes: the settings hold together as
/// `Config::load` would check them, the start-up check reaches the broker, then topic creation, the
/// ingest-api's producer, the writers' group and the probes all use them — 21 events posted, stored,
/// queried back, and found on the broker (read back over the same settings).
async fn pipeline_carries_events(broker: &SecureBroker, secure: impl Fn(&mut KafkaConfig)) {
    let mut kafka = KafkaConfig::default();
    secure(&mut kafka);
    let whole = Config {
        kafka: kafka.clone(),
        ..Config::default()
    };
    whole.validate().expect("valid settings");
    assert_eq!(
        check_brokers(&kafka, Duration::from_secs(20)).await,
        Ok(BrokerCheck::Reachable),
        "{}",
        broker.logs()
    );

    let system = System::start_with(stack().await, 2, |config| secure(&mut config.kafka)).await;
    let events: Vec<_> = (0..20)
        .map(|i| json!({"event_name": "login", "description": format!("secured {i}"), "customer_id": i}))
        .collect();
    let (status, answer) = system.post("audit.logs", "dev", &json!(events)).await;
    assert_eq!(status, 202, "{answer}\n{}", broker.logs());
    let (status, answer) = system
        .post(
            "audit.logs",
            "dev",
            &json!({"event_name": "logout", "description": "one more", "customer_id": 99}),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    system.wait_for_rows(21, Duration::from_secs(60)).await;
    let (status, answer) = system
        .query(
            "audit.logs",
            "dev",
            &json!({"filter": {"event_name": "logout"}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"][0]["payload"]["customer_id"], 99, "{answer}");
    assert_eq!(system.published_messages("audit.logs"), 21);
}

// Two worker threads, as the other end-to-end tests: the whole system runs in this test's runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_flow_end_to_end_over_mutual_tls() {
    let broker = broker(SecureBrokerOptions {
        tls: true,
        require_client_certificate: true,
        ..Default::default()
    });
    pipeline_carries_events(&broker, |kafka| mutual_tls(kafka, &broker)).await;
}

// Two worker threads, as the other end-to-end tests: the whole system runs in this test's runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_flow_end_to_end_over_sasl_scram_over_tls() {
    let broker = broker(SecureBrokerOptions {
        authentication: true,
        tls: true,
        require_client_certificate: true,
        scram_users: SCRAM_USERS,
    });
    // Every client logs in with SCRAM-SHA-512 (no request is served before: tansu --authentication).
    pipeline_carries_events(&broker, |kafka| {
        mutual_tls(kafka, &broker);
        kafka.security_protocol = KafkaSecurityProtocol::SaslSsl;
        kafka.sasl_mechanism = Some(SaslMechanism::ScramSha512);
        kafka.sasl_username = Some("eventgate".into());
        kafka.sasl_password = Some(Secret::new("eventgate-scram-secret"));
    })
    .await;
}

#[tokio::test]
async fn scram_sha_256_over_sasl_plaintext_lets_in_the_right_password_only() {
    let broker = broker(SecureBrokerOptions {
        authentication: true,
        scram_users: SCRAM_USERS,
        ..Default::default()
    });
    let login = |user: &str, password: &str| KafkaConfig {
        brokers: broker.brokers.clone(),
        security_protocol: KafkaSecurityProtocol::SaslPlaintext,
        sasl_mechanism: Some(SaslMechanism::ScramSha256),
        sasl_username: Some(user.into()),
        sasl_password: Some(Secret::new(password)),
        ..KafkaConfig::default()
    };
    // A password holding ':' (TANSU_SCRAM_USERS splits at the first one).
    assert_eq!(
        check_brokers(&login("auditor", "auditor:pass"), Duration::from_secs(20)).await,
        Ok(BrokerCheck::Reachable),
        "{}",
        broker.logs()
    );
    let message =
        expect_refused(&login("auditor", "auditor"), &broker, "kafka.sasl_password").await;
    assert!(!message.contains("auditor:pass"), "{message}");
    // The broker tells a wrong password (invalid-proof) from a user it does not know (unknown-user), and
    // librdkafka passes its word on.
    assert!(message.contains("invalid-proof"), "{message}");
    let message = expect_refused(
        &login("nobody", "auditor:pass"),
        &broker,
        "kafka.sasl_password",
    )
    .await;
    assert!(message.contains("unknown-user"), "{message}");
}

#[tokio::test]
async fn the_broker_demands_sasl_a_client_without_it_gets_nothing() {
    let broker = broker(SecureBrokerOptions {
        authentication: true,
        ..Default::default()
    });
    let kafka = KafkaConfig {
        brokers: broker.brokers.clone(),
        ..KafkaConfig::default()
    };
    let result = check_brokers(&kafka, Duration::from_secs(5)).await;
    assert_ne!(result, Ok(BrokerCheck::Reachable), "{}", broker.logs());
    eprintln!("PLAINTEXT against an authenticating broker: {result:?}");
}

#[tokio::test]
async fn refused_scram_credentials_over_tls_stop_every_service_naming_the_password() {
    // The worked example of docs/OPERATIONS.md: SCRAM-SHA-512 over TLS (here with a client certificate
    // too, which the proxy demands), with a wrong password for a user the broker knows.
    let broker = broker(SecureBrokerOptions {
        authentication: true,
        tls: true,
        require_client_certificate: true,
        scram_users: SCRAM_USERS,
    });
    let scram = |kafka: &mut KafkaConfig| {
        mutual_tls(kafka, &broker);
        kafka.security_protocol = KafkaSecurityProtocol::SaslSsl;
        kafka.sasl_mechanism = Some(SaslMechanism::ScramSha512);
        kafka.sasl_username = Some("eventgate".into());
        kafka.sasl_password = Some(Secret::new("not-the-password"));
    };
    let mut kafka = KafkaConfig::default();
    scram(&mut kafka);
    let message = expect_refused(&kafka, &broker, "kafka.sasl_password").await;
    assert!(
        message.contains("refused the credentials of user `eventgate` (SCRAM-SHA-512)"),
        "{message}"
    );
    assert!(!message.contains("not-the-password"), "{message}");
    assert!(message.contains("invalid-proof"), "{message}");

    // Each service fails its start with that error, instead of running without a broker.
    let stack = stack().await;
    let database = stack.fresh_database().await;
    let mut config = eventgate_e2e::test_config(stack, &database);
    scram(&mut config.kafka);
    config.validate().expect("valid settings");
    let started = Instant::now();
    let error = match eventgate_ingest_api::Application::build(config.clone()).await {
        Err(error) => format!("{error:#}"),
        Ok(_) => panic!("the ingest-api started with refused credentials"),
    };
    assert!(error.contains("kafka.sasl_password"), "{error}");
    let error = match eventgate_db_writer::Writer::build(&config).await {
        Err(error) => format!("{error:#}"),
        Ok(_) => panic!("the writer started with refused credentials"),
    };
    assert!(error.contains("kafka.sasl_password"), "{error}");
    assert!(started.elapsed() < 2 * FAST, "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_ca_that_did_not_sign_the_broker_certificate_is_named() {
    let broker = broker(SecureBrokerOptions {
        tls: true,
        ..Default::default()
    });
    let kafka = KafkaConfig {
        brokers: broker.brokers.clone(),
        security_protocol: KafkaSecurityProtocol::Ssl,
        ssl_ca_location: Some(pki(&broker).other_ca_cert.clone()),
        ..KafkaConfig::default()
    };
    let message = expect_refused(&kafka, &broker, "kafka.ssl_ca_location").await;
    assert!(message.contains("not signed by the CA in"), "{message}");

    // With the right CA, plain TLS (no SASL, no client certificate) works.
    let kafka = KafkaConfig {
        ssl_ca_location: Some(pki(&broker).ca_cert.clone()),
        ..kafka
    };
    assert_eq!(
        check_brokers(&kafka, Duration::from_secs(20)).await,
        Ok(BrokerCheck::Reachable),
        "{}",
        broker.logs()
    );
}

#[tokio::test]
async fn a_client_certificate_the_broker_does_not_trust_is_named() {
    let broker = broker(SecureBrokerOptions {
        tls: true,
        require_client_certificate: true,
        ..Default::default()
    });
    let pki = pki(&broker).clone();
    let stranger = KafkaConfig {
        brokers: broker.brokers.clone(),
        security_protocol: KafkaSecurityProtocol::Ssl,
        ssl_ca_location: Some(pki.ca_cert.clone()),
        ssl_certificate_location: Some(pki.stranger_cert.clone()),
        ssl_key_location: Some(pki.stranger_key.clone()),
        ..KafkaConfig::default()
    };
    expect_refused(&stranger, &broker, "kafka.ssl_certificate_location").await;
    let none = KafkaConfig {
        ssl_certificate_location: None,
        ssl_key_location: None,
        ..stranger.clone()
    };
    expect_refused(&none, &broker, "kafka.ssl_certificate_location").await;
}

#[tokio::test]
async fn a_wrong_key_passphrase_is_named() {
    let broker = broker(SecureBrokerOptions {
        tls: true,
        require_client_certificate: true,
        ..Default::default()
    });
    let pki = pki(&broker).clone();
    let kafka = KafkaConfig {
        brokers: broker.brokers.clone(),
        security_protocol: KafkaSecurityProtocol::Ssl,
        ssl_ca_location: Some(pki.ca_cert.clone()),
        ssl_certificate_location: Some(pki.client_cert.clone()),
        ssl_key_location: Some(pki.client_key.clone()),
        ssl_key_password: Some(Secret::new("wrong-passphrase")),
        ..KafkaConfig::default()
    };
    let message = expect_refused(&kafka, &broker, "kafka.ssl_key_password").await;
    assert!(!message.contains("wrong-passphrase"), "{message}");
}

#[tokio::test]
async fn a_plain_client_against_the_tls_listener_is_told_to_check_the_security_protocol() {
    let broker = broker(SecureBrokerOptions {
        tls: true,
        ..Default::default()
    });
    let kafka = KafkaConfig {
        brokers: broker.brokers.clone(),
        ..KafkaConfig::default()
    };
    expect_unreachable_with_hint(&kafka, "kafka.security_protocol is PLAINTEXT").await;
}

#[tokio::test]
async fn tls_against_a_plain_listener_is_told_to_check_the_security_protocol() {
    // tansu holds a connection whose first bytes are a TLS hello (it waits for the rest of what it takes
    // for a huge request), so librdkafka sees no answer rather than a refusal.
    let broker = broker(SecureBrokerOptions::default());
    let kafka = KafkaConfig {
        brokers: broker.brokers.clone(),
        security_protocol: KafkaSecurityProtocol::Ssl,
        ..KafkaConfig::default()
    };
    expect_unreachable_with_hint(&kafka, "kafka.security_protocol is SSL").await;
}

#[tokio::test]
async fn unreachable_brokers_are_reported_quickly_and_are_not_fatal() {
    // A port nothing listens on (free_port's listener is closed again).
    let port = eventgate_test_support::free_port();
    let kafka = KafkaConfig {
        brokers: format!("127.0.0.1:{port}"),
        ..KafkaConfig::default()
    };
    let started = Instant::now();
    let result = check_brokers(&kafka, Duration::from_secs(20)).await;
    assert!(
        matches!(result, Ok(BrokerCheck::Unreachable(_))),
        "{result:?}"
    );
    assert!(started.elapsed() < FAST, "{:?}", started.elapsed());
}
