//! TLS to Postgres against a real server: a private cluster started with `ssl=on`, a certificate signed
//! by a CA this test makes, and a `pg_hba.conf` that admits TCP connections only over TLS (`hostssl`).
//! `verify-full` with the right CA connects (pool, migrations, field indexes); a wrong CA or a host name
//! the certificate does not carry fails with a clear error; a connection without TLS is refused by the
//! server.

use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use eventgate_core::db::pool::PoolSettings;
use eventgate_core::db::{build_pool, ping, run_migrations};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Ca {
    pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

fn make_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key"))
        .expect("CA certificate");
    Ca {
        pem: issuer.pem(),
        issuer,
    }
}

/// The server's certificate: valid for `localhost` only, so `127.0.0.1` is a name it does not carry.
fn server_certificate(ca: &Ca) -> (String, String) {
    let params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    let key = KeyPair::generate().expect("key");
    let cert = params
        .signed_by(&key, &ca.issuer)
        .expect("server certificate");
    (cert.pem(), key.serialize_pem())
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
}

/// The OS user the test stack runs Postgres as (root cannot): it must own the key file.
fn chown_to_postgres(path: &Path) {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if is_root {
        let user = std::env::var("PG_OS_USER").unwrap_or_else(|_| "postgres".to_owned());
        let status = Command::new("chown")
            .arg(format!("{user}:"))
            .arg(path)
            .status()
            .expect("chown");
        assert!(status.success(), "chown {}", path.display());
    }
}

fn free_port() -> u16 {
    eventgate_test_support::free_port()
}

/// Starts a TLS-only cluster with the test stack's script; returns its data dir and port.
fn start_tls_postgres(dir: &Path) -> u16 {
    let port = free_port();
    let extra = format!(
        "-c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key -c hba_file={dir}/pg_hba.conf -c fsync=off",
        dir = dir.display()
    );
    let output = Command::new("bash")
        .arg(repo_root().join("scripts/stack.sh"))
        .arg("start-postgres")
        .arg(dir.join("data"))
        .arg(port.to_string())
        .env("PG_EXTRA_OPTS", extra)
        .output()
        .expect("stack.sh");
    assert!(
        output.status.success(),
        "postgres with TLS did not start: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    port
}

fn stop_postgres(dir: &Path) {
    let _ = Command::new("bash")
        .arg(repo_root().join("scripts/stack.sh"))
        .arg("stop-postgres")
        .arg(dir.join("data"))
        .output();
}

struct Cluster {
    dir: PathBuf,
    port: u16,
    ca_file: PathBuf,
    other_ca_file: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        stop_postgres(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn cluster() -> Cluster {
    let dir = std::env::temp_dir().join(format!("eventgate-pg-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).expect("dir");
    let ca = make_ca("eventgate test CA");
    let other = make_ca("some other CA");
    let (cert, key) = server_certificate(&ca);
    write(&dir.join("server.crt"), &cert);
    write(&dir.join("server.key"), &key);
    write(&dir.join("ca.pem"), &ca.pem);
    write(&dir.join("other-ca.pem"), &other.pem);
    // TCP only over TLS; the Unix socket (the script's own set-up uses TCP with TLS too) stays open.
    write(
        &dir.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
    );
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    for file in ["server.crt", "server.key", "pg_hba.conf"] {
        chown_to_postgres(&dir.join(file));
    }
    let port = start_tls_postgres(&dir);
    Cluster {
        ca_file: dir.join("ca.pem"),
        other_ca_file: dir.join("other-ca.pem"),
        dir,
        port,
    }
}

fn url(cluster: &Cluster, host: &str, tls: &str) -> String {
    format!("postgres://postgres@{host}:{}/postgres?{tls}", cluster.port)
}

async fn error_of(url: &str) -> String {
    let mut settings = PoolSettings::new(1);
    settings.connection_timeout = std::time::Duration::from_secs(3);
    let pool = match build_pool(url, &settings) {
        Ok(pool) => pool,
        Err(error) => return error.to_string(),
    };
    match ping(&pool).await {
        Ok(()) => panic!("{url} must not connect"),
        Err(error) => format!("{error} {error:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_postgres_as_libpq_reads_the_url() {
    let cluster = cluster();
    let ca = cluster.ca_file.display().to_string();

    // verify-full with the CA that signed the server's certificate: pool, migrations, indexes.
    let verified = url(
        &cluster,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let pool = build_pool(&verified, &PoolSettings::new(1)).expect("pool");
    ping(&pool).await.expect("verify-full connects");
    let conn = pool.get().await.expect("connection");
    let row = conn
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl");
    assert!(row.get::<_, bool>(0), "the connection is encrypted");
    drop(conn);
    conn_for_migrations(&cluster, &ca).await;

    // verify-ca checks the chain only: the address, which the certificate does not name, works.
    let chain_only = url(
        &cluster,
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    );
    ping(&build_pool(&chain_only, &PoolSettings::new(1)).expect("pool"))
        .await
        .expect("verify-ca connects");

    // require encrypts without checking who answers.
    ping(
        &build_pool(
            &url(&cluster, "127.0.0.1", "sslmode=require"),
            &PoolSettings::new(1),
        )
        .expect("pool"),
    )
    .await
    .expect("require connects");

    // A CA that did not sign the server's certificate.
    let other = cluster.other_ca_file.display().to_string();
    let error = error_of(&url(
        &cluster,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={other}"),
    ))
    .await;
    assert!(
        error.to_lowercase().contains("certificate"),
        "a wrong CA is named as a certificate problem: {error}"
    );

    // A name the certificate does not carry (the same server, by its address): verify-full refuses it.
    let error = error_of(&url(
        &cluster,
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await;
    assert!(
        error.to_lowercase().contains("certificate") || error.contains("NotValidForName"),
        "a wrong host name is named: {error}"
    );

    // Without TLS the server refuses the connection (pg_hba.conf: hostssl only).
    let error = error_of(&url(&cluster, "127.0.0.1", "sslmode=disable")).await;
    assert!(
        error.contains("pg_hba.conf"),
        "the server refuses plaintext: {error}"
    );
}

/// Migrations and the field indexes go through the same TLS settings as the pools.
async fn conn_for_migrations(cluster: &Cluster, ca: &str) {
    let admin = build_pool(
        &url(
            cluster,
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        &PoolSettings::new(1),
    )
    .expect("pool");
    let conn = admin.get().await.expect("connection");
    conn.batch_execute("CREATE DATABASE tls_migrated")
        .await
        .expect("database");
    drop(conn);
    let migrated = format!(
        "postgres://postgres@localhost:{}/tls_migrated?sslmode=verify-full&sslrootcert={ca}",
        cluster.port
    );
    let applied = run_migrations(&migrated)
        .await
        .expect("migrations over TLS");
    assert!(applied > 0);
}
