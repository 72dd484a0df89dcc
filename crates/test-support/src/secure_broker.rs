//! A broker of its own for the Kafka security tests: tansu with SASL authentication required
//! (`--authentication`), behind a TLS-terminating proxy (Debian's stunnel) or both, with a certificate
//! authority, server and client certificates made by the test (the `openssl` command).
//!
//! Why a proxy: tansu 0.6 takes `--cert`/`--key` but never wraps its connections in TLS (its acceptor
//! is unused), so TLS is stunnel's job: it listens on a port of its own, optionally demands a client
//! certificate signed by the test CA (mutual TLS), and forwards the plain bytes to tansu, which
//! advertises the proxy's address, so that every connection the clients open goes through it.
//!
//! What tansu's authentication can show (read from its sources and tried): the SASL exchange is real
//! and required before any other request; tansu 0.6 offers SCRAM (and OAUTHBEARER, which its checks
//! then refuse). Unpatched, it stores no SCRAM credentials with memory storage and `tansu user create`
//! cannot reach a broker that requires authentication, so every login is refused; our patched build
//! stores them and creates the users named in `TANSU_SCRAM_USERS` at start
//! ([`SecureBrokerOptions::scram_users`]; docs/tansu-bugs.md, docs/OPERATIONS.md).
//!
//! Everything lives in a directory under `target/test-stack/`; the processes are stopped and the
//! directory removed on drop, and by a watchdog if the test process dies first.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::free_port;

/// The passphrase of the client's private key.
pub const CLIENT_KEY_PASSWORD: &str = "client-key-passphrase";

/// What the broker demands.
#[derive(Debug, Clone, Copy, Default)]
pub struct SecureBrokerOptions {
    /// `tansu --authentication`: SASL before any other request.
    pub authentication: bool,
    /// A TLS-terminating proxy in front (clients connect with `SSL` / `SASL_SSL`).
    pub tls: bool,
    /// The proxy demands a client certificate signed by the test CA (mutual TLS).
    pub require_client_certificate: bool,
    /// SCRAM users (name, password) the broker creates at start, with a SCRAM-SHA-256 and a
    /// SCRAM-SHA-512 credential each (`TANSU_SCRAM_USERS`, a patch of ours: scripts/tansu-patches).
    /// Names hold no `:`, `,` or whitespace; passwords no `,` or whitespace.
    pub scram_users: &'static [(&'static str, &'static str)],
}

/// The certificates the test made (PEM files).
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA that signed the server and client certificates.
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// The client's certificate and its encrypted key (passphrase [`CLIENT_KEY_PASSWORD`]).
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Another CA, which signed nothing the broker shows: trusting only it must fail.
    pub other_ca_cert: PathBuf,
    /// A client certificate (unencrypted key) signed by the other CA: the proxy must refuse it.
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
}

/// A running tansu (and proxy); stopped on drop.
#[derive(Debug)]
pub struct SecureBroker {
    /// What clients bootstrap from (the proxy's address when there is one): `127.0.0.1:PORT`.
    pub brokers: String,
    /// tansu's own plain address, behind the proxy.
    pub tansu_address: String,
    pub pki: Option<TestPki>,
    pub dir: PathBuf,
    tansu: Child,
    proxy: Option<Child>,
    reaper: Child,
}

impl SecureBroker {
    /// Makes the certificates (with `tls`), starts tansu and the proxy, and waits until they listen.
    pub fn start(options: SecureBrokerOptions) -> anyhow::Result<SecureBroker> {
        let dir = workspace_root()
            .join("target/test-stack/secure-broker")
            .join(format!(
                "{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let pki = if options.tls {
            Some(make_pki(&dir).context("making the test certificates (openssl)")?)
        } else {
            None
        };
        let tansu_bin = tansu_binary()?;
        let tansu_port = free_port();
        let proxy_port = options.tls.then(free_port);
        let advertised = proxy_port.unwrap_or(tansu_port);
        let mut tansu = Command::new(&tansu_bin);
        tansu
            .arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://127.0.0.1:{tansu_port}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://127.0.0.1:{advertised}"))
            .arg("--storage-engine")
            .arg("memory://tansu/")
            .arg("--silent");
        if options.authentication {
            tansu.arg("--authentication");
        }
        if options.scram_users.is_empty() {
            tansu.env_remove("TANSU_SCRAM_USERS");
        } else {
            let users: Vec<String> = options
                .scram_users
                .iter()
                .map(|(name, password)| format!("{name}:{password}"))
                .collect();
            tansu.env("TANSU_SCRAM_USERS", users.join(","));
        }
        let tansu = tansu
            // tansu reads a .env of its working directory and its parents.
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(log_file(&dir, "tansu.log")?)
            .stderr(log_file(&dir, "tansu.log")?)
            .spawn()
            .with_context(|| format!("starting {}", tansu_bin.display()))?;
        let proxy = match (&pki, proxy_port) {
            (Some(pki), Some(port)) => Some(start_proxy(
                &dir,
                pki,
                port,
                tansu_port,
                options.require_client_certificate,
            )?),
            _ => None,
        };
        let reaper = watchdog(&dir, tansu.id(), proxy.as_ref().map(Child::id))?;
        let broker = SecureBroker {
            brokers: format!("127.0.0.1:{advertised}"),
            tansu_address: format!("127.0.0.1:{tansu_port}"),
            pki,
            dir,
            tansu,
            proxy,
            reaper,
        };
        wait_port(tansu_port, &broker.dir.join("tansu.log"))?;
        if let Some(port) = proxy_port {
            wait_port(port, &broker.dir.join("stunnel.log"))?;
        }
        Ok(broker)
    }

    /// The last lines of the broker's and the proxy's logs, for a failing test's message.
    pub fn logs(&self) -> String {
        ["tansu.log", "stunnel.log"]
            .iter()
            .filter_map(|name| {
                let text = std::fs::read_to_string(self.dir.join(name)).ok()?;
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                Some(format!("--- {name}\n{tail}"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        for child in [Some(&mut self.tansu), self.proxy.as_mut()]
            .into_iter()
            .flatten()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.reaper.kill();
        let _ = self.reaper.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn log_file(dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .with_context(|| format!("opening {name}"))
}

/// `TANSU_BIN` (scripts/test.sh exports it), else what `scripts/stack.sh ensure-tansu` prints (it builds
/// tansu first if needed, waiting for a build under way).
fn tansu_binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("TANSU_BIN").filter(|bin| !bin.is_empty()) {
        return Ok(PathBuf::from(bin));
    }
    let output = Command::new("bash")
        .arg(workspace_root().join("scripts/stack.sh"))
        .arg("ensure-tansu")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running scripts/stack.sh ensure-tansu")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout.lines().last() {
        Some(path) if output.status.success() && !path.trim().is_empty() => {
            Ok(PathBuf::from(path.trim()))
        }
        _ => bail!("scripts/stack.sh ensure-tansu failed: {stdout}"),
    }
}

/// Debian's stunnel (package stunnel4; scripts/test.sh installs it).
fn stunnel_binary() -> anyhow::Result<PathBuf> {
    for candidate in [
        "/usr/bin/stunnel4",
        "/usr/bin/stunnel",
        "/usr/sbin/stunnel4",
    ] {
        if Path::new(candidate).exists() {
            return Ok(PathBuf::from(candidate));
        }
    }
    bail!("stunnel not found: install Debian's stunnel4 (scripts/test.sh does)")
}

fn start_proxy(
    dir: &Path,
    pki: &TestPki,
    port: u16,
    tansu_port: u16,
    require_client_certificate: bool,
) -> anyhow::Result<Child> {
    let client_certificates = if require_client_certificate {
        // Mutual TLS: a client must show a certificate that chains to the test CA.
        format!(
            "CAfile = {}\nverifyChain = yes\nrequireCert = yes\n",
            pki.ca_cert.display()
        )
    } else {
        String::new()
    };
    let conf = format!(
        "foreground = yes\npid =\noutput = {log}\ndebug = notice\n\n[kafka]\naccept = 127.0.0.1:{port}\n\
         connect = 127.0.0.1:{tansu_port}\ncert = {cert}\nkey = {key}\n{client_certificates}",
        log = dir.join("stunnel.log").display(),
        cert = pki.server_cert.display(),
        key = pki.server_key.display(),
    );
    let conf_path = dir.join("stunnel.conf");
    std::fs::write(&conf_path, conf)?;
    let bin = stunnel_binary()?;
    Command::new(&bin)
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(log_file(dir, "stunnel.log")?)
        .stderr(log_file(dir, "stunnel.log")?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))
}

/// Stops the servers and removes the directory once this process is gone, however it ends (a test
/// killed by the runner does not drop its broker).
fn watchdog(dir: &Path, tansu: u32, proxy: Option<u32>) -> anyhow::Result<Child> {
    let pids = format!(
        "{tansu} {}",
        proxy.map(|p| p.to_string()).unwrap_or_default()
    );
    Command::new("bash")
        .arg("-c")
        .arg(
            "while kill -0 \"$1\" 2>/dev/null; do sleep 0.5; done; kill $2 2>/dev/null; \
             sleep 0.5; rm -rf \"$3\"",
        )
        .arg("watchdog")
        .arg(std::process::id().to_string())
        .arg(pids)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a runner killing ours must not take the watchdog with it.
        .process_group(0)
        .spawn()
        .context("starting the secure broker's watchdog")
}

fn wait_port(port: u16, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() >= deadline {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            bail!(
                "nothing listens on 127.0.0.1:{port} after 30 s; {}:\n{text}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .context("running openssl (Debian's openssl package)")?;
    if !output.status.success() {
        bail!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate signed by it (the client
/// key encrypted), and a second CA with a client certificate of its own. EC P-256 keys: fast to make.
fn make_pki(dir: &Path) -> anyhow::Result<TestPki> {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
    for (name, subject) in [
        ("ca", "/CN=eventgate test CA"),
        ("other-ca", "/CN=another test CA"),
    ] {
        let (key, cert) = (format!("{name}.key"), format!("{name}.pem"));
        let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
        args.extend(ec);
        args.extend([
            "-keyout",
            &key,
            "-out",
            &cert,
            "-subj",
            subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &args)?;
    }
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )?;
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")?;
    let pass = format!("pass:{CLIENT_KEY_PASSWORD}");
    // The server's key, and the stranger's, unencrypted.
    for (name, subject) in [
        ("server", "/CN=127.0.0.1"),
        ("stranger", "/CN=eventgate stranger"),
    ] {
        let mut args = vec!["req", "-new", "-nodes"];
        args.extend(ec);
        let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
        args.extend(["-keyout", &key, "-out", &csr, "-subj", subject]);
        openssl(dir, &args)?;
    }
    // The client's key, encrypted with a passphrase.
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-aes256",
            "-pass",
            &pass,
            "-out",
            "client.key",
        ],
    )?;
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "client.key",
            "-passin",
            &pass,
            "-subj",
            "/CN=eventgate-client",
            "-out",
            "client.csr",
        ],
    )?;
    for (name, ca, ext) in [
        ("server", "ca", "server.ext"),
        ("client", "ca", "client.ext"),
        ("stranger", "other-ca", "client.ext"),
    ] {
        let (csr, cert) = (format!("{name}.csr"), format!("{name}.pem"));
        let (ca_cert, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_cert,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                ext,
                "-out",
                &cert,
            ],
        )?;
    }
    Ok(TestPki {
        ca_cert: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
        other_ca_cert: dir.join("other-ca.pem"),
        stranger_cert: dir.join("stranger.pem"),
        stranger_key: dir.join("stranger.key"),
    })
}
