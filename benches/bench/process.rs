//! The controller under test, run as its own process (the `ephemera` binary
//! of this build), so its memory and CPU time are its own.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct Controller {
    child: Child,
    port: u16,
    pub log: PathBuf,
}

impl Controller {
    pub async fn start(kubeconfig: &Path, config_yaml: &str, dir: &Path) -> Self {
        let config = dir.join("controller.yaml");
        std::fs::write(&config, config_yaml).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let log = dir.join("controller.log");
        let child = controller_command()
            .args(["controller", "--config"])
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("KUBECONFIG", kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("BENCH_CONTROLLER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the ephemera binary (or the program BENCH_CONTROLLER_WRAPPER names)");
        let controller = Self { child, port, log };
        let started = Instant::now();
        while controller.reconciles().await.is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the controller did not serve /metrics within 60 s; see {}",
                controller.log.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        controller
    }

    /// Reconcile passes so far (its `ephemera_controller_reconciles_total`).
    pub async fn reconciles(&self) -> Option<f64> {
        self.metric("ephemera_controller_reconciles_total").await
    }

    /// Passes so far that sent children to the API server.
    pub async fn applying_reconciles(&self) -> Option<f64> {
        self.metric("ephemera_controller_applying_reconciles_total")
            .await
    }

    /// Status refreshes recorded so far (without a pass).
    pub async fn refreshes(&self) -> Option<f64> {
        self.metric("ephemera_controller_status_refreshes_total")
            .await
    }

    /// Seconds spent in passes, and in passes waiting for the stores to
    /// show their own writes, so far (the two histograms' sums).
    pub async fn pass_seconds(&self) -> (f64, f64) {
        let sum = |name| async move { self.metric(name).await.unwrap_or(0.0) };
        (
            sum("ephemera_controller_reconcile_duration_seconds_sum").await,
            sum("ephemera_controller_store_wait_seconds_sum").await,
        )
    }

    /// Installations counted in the time-to-ready histogram so far.
    pub async fn ready_observations(&self) -> Option<f64> {
        self.metric("ephemera_controller_time_to_ready_seconds_count")
            .await
    }

    /// The value of the unlabelled metric `name` on its /metrics.
    async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.port))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Samples its memory every second from now on (see `memory`).
    pub fn watch_memory(&self, phase: &'static str) -> super::memory::MemoryWatch {
        super::memory::MemoryWatch::start(self.child.id(), self.port, phase)
    }

    /// Peak resident memory in MiB (VmHWM).
    pub fn peak_rss_mib(&self) -> f64 {
        super::memory::status_mib(self.child.id(), "VmHWM")
    }

    /// User and system CPU time so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which may hold spaces): utime is
        // the 12th, stime the 13th.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
            .sum();
        ticks / clock_ticks_per_second()
    }

    /// SIGTERM, then wait for it to exit.
    pub async fn stop(mut self) {
        self.signal_tree("TERM");
        let started = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            if started.elapsed() > Duration::from_secs(20) {
                self.signal_tree("KILL");
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.child.wait();
    }

    /// Sends SIG`name` to the process started, and to its children: a
    /// wrapper (`BENCH_CONTROLLER_WRAPPER`) runs the controller as its child
    /// and does not pass signals on.
    fn signal_tree(&self, name: &str) {
        let pid = self.child.id().to_string();
        let _ = Command::new("pkill")
            .args([&format!("-{name}"), "-P", &pid])
            .status();
        let _ = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal_tree("KILL");
        }
        let _ = self.child.wait();
    }
}

/// The `ephemera` binary of this build, behind `BENCH_CONTROLLER_WRAPPER`
/// when that is set (for example `heaptrack -o /tmp/controller` to profile
/// its heap; the memory and CPU figures are then the wrapper's).
fn controller_command() -> Command {
    let binary = env!("CARGO_BIN_EXE_ephemera");
    let wrapper = std::env::var("BENCH_CONTROLLER_WRAPPER").unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(words).arg(binary);
            command
        }
        None => Command::new(binary),
    }
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
