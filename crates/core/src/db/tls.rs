//! TLS to Postgres, the way libpq reads it from a connection URL: `sslmode` (`disable`, `prefer` — the
//! default —, `require`, `verify-ca`, `verify-full`), `sslrootcert` (a PEM file of trusted CAs, or
//! `system` for Mozilla's roots), `sslcert` and `sslkey` (a client certificate). tokio-postgres knows
//! only `disable`/`prefer`/`require` and none of the files, so these parameters are taken out of the URL
//! here and become a rustls connector (rustls with ring, as the rest of the workspace).
//!
//! As in libpq: `prefer` and `require` encrypt without checking the server's certificate, unless
//! `sslrootcert` is given (then `require` checks the chain like `verify-ca`); `verify-ca` checks the
//! chain; `verify-full` checks the chain and that the certificate names the host.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Where trusted certificate authorities come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// A PEM file (`sslrootcert=/path/ca.pem`).
    File(PathBuf),
    /// Mozilla's roots (`sslrootcert=system`), for servers with a publicly trusted certificate.
    System,
}

/// The TLS parameters of a connection URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_certs: Option<RootCerts>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// A connection URL that cannot be used, naming the parameter.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("sslmode={0:?} is not one of disable, prefer, require, verify-ca, verify-full")]
    UnknownMode(String),
    #[error("sslmode={0} needs sslrootcert (a PEM file of the CAs to trust, or `system`)")]
    MissingRootCert(&'static str),
    #[error("sslcert and sslkey go together")]
    HalfClientCert,
    #[error("{parameter}={path}: {reason}")]
    File {
        parameter: &'static str,
        path: String,
        reason: String,
    },
    #[error("the TLS configuration is refused: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0}")]
    Url(#[from] tokio_postgres::Error),
}

/// Splits a URL into the configuration tokio-postgres understands and the TLS settings.
pub fn parse(database_url: &str) -> Result<(tokio_postgres::Config, TlsSettings), TlsError> {
    let mut settings = TlsSettings {
        mode: SslMode::Prefer,
        root_certs: None,
        client_cert: None,
        client_key: None,
    };
    let (base, query) = match database_url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (database_url, ""),
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(raw)
            .decode_utf8_lossy()
            .into_owned();
        match key {
            "sslmode" => {
                settings.mode = match value.as_str() {
                    "disable" => SslMode::Disable,
                    // libpq's `allow` tries without TLS first; tokio-postgres cannot, so it is `prefer`.
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    _ => return Err(TlsError::UnknownMode(value)),
                }
            }
            "sslrootcert" => {
                settings.root_certs = Some(match value.as_str() {
                    "system" => RootCerts::System,
                    _ => RootCerts::File(PathBuf::from(value)),
                })
            }
            "sslcert" => settings.client_cert = Some(PathBuf::from(value)),
            "sslkey" => settings.client_key = Some(PathBuf::from(value)),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config: tokio_postgres::Config = url.parse()?;
    config.ssl_mode(match settings.mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    });
    match settings.mode {
        SslMode::VerifyCa if settings.root_certs.is_none() => {
            return Err(TlsError::MissingRootCert("verify-ca"))
        }
        SslMode::VerifyFull if settings.root_certs.is_none() => {
            return Err(TlsError::MissingRootCert("verify-full"))
        }
        _ => {}
    }
    if settings.client_cert.is_some() != settings.client_key.is_some() {
        return Err(TlsError::HalfClientCert);
    }
    Ok((config, settings))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(parameter: &'static str, path: &std::path::Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        parameter,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn root_store(roots: &RootCerts) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    match roots {
        RootCerts::System => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        RootCerts::File(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| file_error("sslrootcert", path, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| file_error("sslrootcert", path, e))?;
            if certs.is_empty() {
                return Err(file_error("sslrootcert", path, "holds no certificate"));
            }
            for cert in certs {
                store
                    .add(cert)
                    .map_err(|e| file_error("sslrootcert", path, e))?;
            }
        }
    }
    Ok(store)
}

/// The connector for these settings.
pub fn connector(settings: &TlsSettings) -> Result<MakeRustlsConnect, TlsError> {
    let provider = provider();
    let check_chain = match settings.mode {
        SslMode::Disable | SslMode::Prefer => settings.root_certs.is_some(),
        SslMode::Require => settings.root_certs.is_some(),
        SslMode::VerifyCa | SslMode::VerifyFull => true,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (&settings.root_certs, check_chain) {
        (Some(roots), true) => {
            let webpki = WebPkiServerVerifier::builder_with_provider(
                Arc::new(root_store(roots)?),
                provider.clone(),
            )
            .build()
            .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
            if settings.mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
        _ => Arc::new(EncryptOnly(provider.clone())),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&settings.client_cert, &settings.client_key) {
        (Some(cert_path), Some(key_path)) => {
            let certs = CertificateDer::pem_file_iter(cert_path)
                .map_err(|e| file_error("sslcert", cert_path, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| file_error("sslcert", cert_path, e))?;
            let key = PrivateKeyDer::from_pem_file(key_path)
                .map_err(|e| file_error("sslkey", key_path, e))?;
            builder.with_client_auth_cert(certs, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// `verify-ca` (and `require` with a root certificate): the chain must lead to a trusted CA; the name
/// on the certificate is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a root certificate: libpq encrypts without checking who answers.
/// The handshake's signatures are still checked against the certificate presented.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A diesel connection, TLS as the URL says (diesel-async's own `establish` knows no TLS).
pub async fn diesel_connection(
    database_url: &str,
) -> Result<diesel_async::AsyncPgConnection, super::DbError> {
    let (config, settings) = parse(database_url).map_err(super::DbError::Tls)?;
    let tls = connector(&settings).map_err(super::DbError::Tls)?;
    let (client, connection) = config.connect(tls).await?;
    diesel_async::AsyncPgConnection::try_from_client_and_connection(client, connection)
        .await
        .map_err(super::DbError::Setup)
}

/// One connection, TLS as the URL says, its I/O driven by a task of its own.
pub async fn connect(database_url: &str) -> Result<tokio_postgres::Client, super::DbError> {
    let (config, settings) = parse(database_url).map_err(super::DbError::Tls)?;
    let tls = connector(&settings).map_err(super::DbError::Tls)?;
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "database connection closed");
        }
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_leave_the_url() {
        let (config, settings) = parse(
            "postgres://u:p@db.example.com:5432/eventgate?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .expect("parses");
        assert_eq!(settings.mode, SslMode::VerifyFull);
        assert_eq!(
            settings.root_certs,
            Some(RootCerts::File(PathBuf::from("/etc/ca.pem")))
        );
        assert_eq!(config.get_application_name(), Some("x"));
        assert_eq!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }

    #[test]
    fn the_default_is_prefer_as_in_libpq() {
        let (config, settings) = parse("postgres://u@h/db").expect("parses");
        assert_eq!(settings.mode, SslMode::Prefer);
        assert_eq!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Prefer
        );
    }

    #[test]
    fn verification_needs_a_root_certificate_and_names_it() {
        let error = parse("postgres://u@h/db?sslmode=verify-full").expect_err("no root");
        assert!(error.to_string().contains("sslrootcert"), "{error}");
        let error = parse("postgres://u@h/db?sslmode=maybe").expect_err("unknown mode");
        assert!(error.to_string().contains("sslmode"), "{error}");
        let error = parse("postgres://u@h/db?sslcert=/c.pem").expect_err("half a client cert");
        assert!(error.to_string().contains("sslkey"), "{error}");
    }

    #[test]
    fn a_missing_root_file_is_named() {
        let (_, settings) =
            parse("postgres://u@h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem")
                .expect("parses");
        let Err(error) = connector(&settings) else {
            panic!("a missing sslrootcert file must be refused");
        };
        assert!(
            error
                .to_string()
                .contains("sslrootcert=/nonexistent/ca.pem"),
            "{error}"
        );
    }
}
