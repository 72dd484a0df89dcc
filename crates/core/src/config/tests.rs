use super::*;

#[test]
fn env_overrides_file_overrides_defaults() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "eg.toml",
            "[kafka]\nbrokers = \"file:9092\"\npartitions = 6\n",
        )?;
        jail.set_env("EVENTGATE_KAFKA__BROKERS", "env:9092");
        jail.set_env("EVENTGATE_AUTH__PUBLIC_KEYS", "[a.pem, b.pem]");
        let config: Config = Config::figment(Path::new("eg.toml")).extract()?;
        assert_eq!(config.kafka.brokers, "env:9092");
        assert_eq!(config.kafka.partitions, 6);
        assert_eq!(config.kafka.topic_prefix, "eventgate.");
        assert_eq!(
            config.auth.public_keys,
            vec![PathBuf::from("a.pem"), PathBuf::from("b.pem")]
        );
        Ok(())
    });
}

#[test]
fn harness_and_file_variables_are_not_config_keys() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("EVENTGATE_TEST_KAFKA_BROKERS", "127.0.0.1:1");
        jail.set_env("EVENTGATE_CONFIG", "elsewhere.toml");
        // The CLI's own variables, exported in the shell that also runs `make run`.
        jail.set_env("EVENTGATE_TOKEN", "eyJ…");
        jail.set_env("EVENTGATE_PROFILE", "local");
        jail.set_env("EVENTGATE_CLI_CONFIG", "cli.toml");
        jail.set_env("EVENTGATE_INGEST_URL", "http://127.0.0.1:8080");
        jail.set_env("EVENTGATE_STATS_URL", "http://127.0.0.1:8081");
        let config: Config = Config::figment(Path::new("missing.toml")).extract()?;
        assert_eq!(config, Config::default());
        Ok(())
    });
}

#[test]
fn a_named_config_file_that_is_missing_is_an_error() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("EVENTGATE_CONFIG", "not-there.toml");
        match Config::load() {
            Err(ConfigError::MissingFile(path, _)) => {
                assert_eq!(path, PathBuf::from("not-there.toml"));
            }
            other => panic!("expected MissingFile, got {other:?}"),
        }
        jail.create_file("there.toml", "[kafka]\nbrokers = \"file:9092\"\n")?;
        jail.set_env("EVENTGATE_CONFIG", "there.toml");
        assert_eq!(Config::load().expect("loads").kafka.brokers, "file:9092");
        Ok(())
    });
}

#[test]
fn out_of_range_settings_fail_the_load() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("EVENTGATE_WRITER__BATCH_SIZE", "0");
        match Config::load() {
            Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "writer.batch_size"),
            other => panic!("expected Invalid, got {other:?}"),
        }
        Ok(())
    });
}

#[test]
fn unknown_keys_are_rejected() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("EVENTGATE_KAFKA__BROKRES", "typo:9092");
        let result: Result<Config, _> = Config::figment(Path::new("missing.toml")).extract();
        assert!(result.is_err());
        Ok(())
    });
}

#[test]
fn maintainer_email_settings_come_from_the_environment() {
    figment::Jail::expect_with(|jail| {
        jail.set_env(
            "EVENTGATE_ALERTS__MAINTAINERS",
            "[ops@example.com,oncall@example.com]",
        );
        jail.set_env("EVENTGATE_SMTP__TLS", "none");
        jail.set_env("EVENTGATE_SMTP__USERNAME", "mailer");
        // A password of digits only stays a string.
        jail.set_env("EVENTGATE_SMTP__PASSWORD", "123456");
        let config: Config = Config::figment(Path::new("missing.toml")).extract()?;
        assert_eq!(
            config.alerts.maintainers,
            vec![
                "ops@example.com".to_owned(),
                "oncall@example.com".to_owned()
            ]
        );
        assert_eq!(config.smtp.tls, SmtpTls::None);
        assert_eq!(config.smtp.username, Some(Secret::new("mailer")));
        assert_eq!(config.smtp.password, Some(Secret::new("123456")));
        assert!(!format!("{config:?}").contains("123456"));
        Ok(())
    });
}

#[test]
fn kafka_security_and_client_properties_from_file_and_environment() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "eg.toml",
            "[kafka]\nsecurity_protocol = \"SASL_SSL\"\nsasl_mechanism = \"SCRAM-SHA-512\"\n\
             [kafka.client]\n\"socket.keepalive.enable\" = false\nclient.id = \"eg\"\n\
             \"ssl.keystore.password\" = \"pw-in-file\"\n",
        )?;
        jail.set_env("EVENTGATE_KAFKA__SASL_USERNAME", "eventgate");
        jail.set_env("EVENTGATE_KAFKA__SASL_PASSWORD", "s3cret-0123");
        jail.set_env("EVENTGATE_KAFKA__CLIENT__SOCKET_KEEPALIVE_ENABLE", "true");
        jail.set_env("EVENTGATE_KAFKA__CLIENT__LOG_LEVEL", "7");
        jail.set_env(
            "EVENTGATE_KAFKA__CLIENT__SASL_OAUTHBEARER_CLIENT_SECRET",
            "t0p-s3cr3t",
        );
        let config: Config = Config::figment(Path::new("eg.toml")).extract()?;
        let kafka = &config.kafka;
        assert_eq!(kafka.security_protocol, KafkaSecurityProtocol::SaslSsl);
        assert_eq!(kafka.sasl_mechanism, Some(SaslMechanism::ScramSha512));
        assert_eq!(kafka.sasl_password, Some(Secret::new("s3cret-0123")));
        let properties = kafka.client.properties();
        // The variable wins over the file for the same property.
        assert_eq!(properties["socket.keepalive.enable"], "true");
        // Unquoted dotted TOML keys are nested tables, joined again.
        assert_eq!(properties["client.id"], "eg");
        assert_eq!(properties["log_level"], "7");
        assert_eq!(properties["sasl.oauthbearer.client.secret"], "t0p-s3cr3t");
        let printed = format!("{config:?}");
        for secret in ["s3cret-0123", "pw-in-file", "t0p-s3cr3t"] {
            assert!(!printed.contains(secret), "{secret} printed: {printed}");
        }
        assert!(printed.contains("client.id"), "{printed}");
        Ok(())
    });
}

#[test]
fn an_unsupported_sasl_mechanism_is_an_error_naming_the_choices() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("EVENTGATE_KAFKA__SASL_MECHANISM", "GSSAPI");
        let error = Config::figment(Path::new("missing.toml"))
            .extract::<Config>()
            .expect_err("GSSAPI is not supported");
        assert!(error.to_string().contains("SCRAM-SHA-512"), "{error}");
        Ok(())
    });
}

#[test]
fn secrets_are_not_printed() {
    let config = Config::default();
    let printed = format!("{config:?}");
    assert!(!printed.contains("postgres://"), "{printed}");
}

#[test]
fn every_key_is_documented_in_env_example() {
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.env.example"))
            .unwrap();
    let defaults = serde_json::to_value(Config::default()).unwrap();
    let mut missing = Vec::new();
    for (section, keys) in defaults.as_object().unwrap() {
        for key in keys.as_object().unwrap().keys() {
            let var = format!(
                "EVENTGATE_{}__{}=",
                section.to_uppercase(),
                key.to_uppercase()
            );
            if !example.contains(&var) {
                missing.push(var);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "undocumented in .env.example: {missing:?}"
    );
}
