//! A service binary run as operators run it, for the tests that signal or kill the real process: its
//! configuration is `EVENTGATE_*` variables only, its logs go to a file the test shows when it fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::wait_until;

/// A running service binary, killed when dropped so that a failing test leaves nothing behind.
pub struct ServiceProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ServiceProcess {
    /// Starts `binary` (`env!("CARGO_BIN_EXE_…")`) with `env` as its whole configuration: the test's own
    /// `EVENTGATE_*` variables are removed (the harness's `EVENTGATE_TEST_*` stay), no configuration file
    /// is read, and stdout and stderr go to `log`. `name` labels the log in failure messages.
    pub fn spawn(binary: &str, name: &str, env: &[(&str, String)], log: &Path) -> ServiceProcess {
        let mut command = Command::new(binary);
        for (key, _) in std::env::vars() {
            if key.starts_with("EVENTGATE_") && !key.starts_with("EVENTGATE_TEST_") {
                command.env_remove(key);
            }
        }
        let file = std::fs::File::create(log)
            .unwrap_or_else(|e| panic!("log file {}: {e}", log.display()));
        // An empty configuration file of its own: not the repository's `config/eventgate.toml` (which the
        // default path would find), and not a missing file (which a service refuses to start with).
        let config_file = log.with_extension("empty.toml");
        std::fs::write(&config_file, "")
            .unwrap_or_else(|e| panic!("config file {}: {e}", config_file.display()));
        let child = command
            .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
            .env("EVENTGATE_CONFIG", &config_file)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().expect("log file")))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("{binary} does not start: {e}"));
        ServiceProcess {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process logged so far, under a line naming it.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("--- log of {}:\n{text}", self.name)
    }

    /// SIGTERM: the graceful stop.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {}", self.pid());
    }

    /// SIGKILL: no goodbye of any kind.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// Waits up to `timeout` for the process to exit and returns its status; fails the test, with the
    /// log, if it does not.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = &mut self.child;
        let exited = wait_until(&format!("{} to exit", self.name), timeout, || {
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            async move { exited }
        })
        .await;
        if let Err(error) = exited {
            panic!("{error:#}\n{}", self.log());
        }
        self.child.wait().expect("exit status")
    }

    /// SIGTERM, then the exit status once it is gone (within `timeout`).
    pub async fn terminate(mut self, timeout: Duration) -> ExitStatus {
        self.sigterm();
        self.wait_exit(timeout).await
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET url`: the status and the JSON body (null when not JSON), or `None` when nothing answered
/// within 5 s (not started yet, or gone).
pub async fn get_json(http: &reqwest::Client, url: &str) -> Option<(u16, Value)> {
    let response = http
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.unwrap_or(Value::Null)))
}

/// The value of an unlabelled metric on a service's `/metrics`, or `None` when it does not answer or
/// has no such metric.
pub async fn metric(http: &reqwest::Client, port: u16, name: &str) -> Option<f64> {
    let response = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let text = response.text().await.ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}
