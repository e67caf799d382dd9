//! Two or more controller processes elect one leader over a Lease: only the
//! leader reconciles; a standby takes over within the lease duration when the
//! leader is killed or frozen (as if partitioned from the API server), at
//! once when it is stopped with SIGTERM; the frozen leader, when it comes
//! back, steps down and exits; no installation is lost and no phase
//! transition is reported twice.

mod support;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use ephemera::api::{
    InstallationProfile, InstallationProfileSpec, Phase, TestInstallation, TestInstallationSpec,
};
use k8s_openapi::api::{coordination::v1::Lease, events::v1::Event};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, PostParams},
};
use support::{TEST_RUN_LABEL, client, install_crds, unique_name, wait_for};

const LEASE_SECONDS: u64 = 8;
/// A standby notices expiry when its own wait ends, then waits up to a
/// second more to avoid a collision.
const TAKEOVER_SLACK: Duration = Duration::from_secs(4);
const TIMEOUT: Duration = Duration::from_secs(90);

/// One `ephemera controller` process, killed (by its pid) when dropped.
struct Process {
    identity: String,
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Process {
    fn start(config: &std::path::Path, identity: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let log = std::env::temp_dir().join(format!("{identity}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_ephemera"))
            .args(["controller", "--config"])
            .arg(config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("KUBECONFIG", support::kubeconfig_path())
            .env("POD_NAME", identity)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the ephemera binary");
        Self {
            identity: identity.to_string(),
            child,
            port,
            log,
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {}", self.child.id());
    }

    /// Reconcile passes run so far, from its /metrics.
    async fn reconciles(&self) -> u64 {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.port))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("ephemera_controller_reconciles_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    async fn exit_status(&mut self, within: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if started.elapsed() > within {
                panic!(
                    "{} still runs {within:?} later; its log:\n{}",
                    self.identity,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
        .filter(|h| !h.is_empty())
}

async fn wait_for_holder(leases: &Api<Lease>, lease: &str, identity: &str, timeout: Duration) {
    wait_for(
        &format!("{identity} to hold the lease"),
        timeout,
        || async {
            match holder(leases, lease).await {
                Some(h) if h == identity => Ok(()),
                other => Err(other),
            }
        },
    )
    .await;
}

async fn create_installations(client: &Client, run: &str, profile: &str, names: &[String]) {
    let api: Api<TestInstallation> = Api::all(client.clone());
    for name in names {
        let mut ti = TestInstallation::new(
            name,
            TestInstallationSpec {
                profile: Some(profile.to_string()),
                ..Default::default()
            },
        );
        ti.labels_mut().insert(TEST_RUN_LABEL.into(), run.into());
        api.create(&PostParams::default(), &ti).await.unwrap();
    }
}

async fn wait_all_ready(client: &Client, names: &[String]) {
    let api: Api<TestInstallation> = Api::all(client.clone());
    wait_for("every installation Ready", TIMEOUT, || async {
        let mut not_ready = Vec::new();
        for name in names {
            let ti = api.get(name).await.map_err(|e| e.to_string())?;
            if ti.phase() != Some(Phase::Ready) {
                not_ready.push(format!("{name}: {:?}", ti.phase()));
            }
        }
        if not_ready.is_empty() {
            Ok(())
        } else {
            Err(format!("{not_ready:?}"))
        }
    })
    .await;
}

/// Events about the installations, per (installation, reason), counting
/// each series' repeats, and per reporting instance.
async fn event_counts(
    client: &Client,
    names: &[String],
) -> (BTreeMap<(String, String), i32>, BTreeMap<String, i32>) {
    let events: Api<Event> = Api::all(client.clone());
    let mut per_reason = BTreeMap::new();
    let mut per_instance = BTreeMap::new();
    for event in events.list(&ListParams::default()).await.unwrap().items {
        let Some(regarding) = event.regarding.as_ref().and_then(|r| r.name.clone()) else {
            continue;
        };
        if !names.contains(&regarding) {
            continue;
        }
        let count = event.series.as_ref().map_or(1, |s| s.count);
        *per_reason
            .entry((regarding, event.reason.clone().unwrap_or_default()))
            .or_insert(0) += count;
        *per_instance
            .entry(event.reporting_instance.clone().unwrap_or_default())
            .or_insert(0) += count;
    }
    (per_reason, per_instance)
}

#[tokio::test]
async fn one_leader_reconciles_and_a_standby_takes_over() {
    let client = client().await;
    install_crds(&client).await;
    let run = unique_name("leader");
    let selector = format!("{TEST_RUN_LABEL}={run}");
    let _cleanup = support::RemoveOnDrop {
        selector: selector.clone(),
        profile: run.clone(),
    };
    let config = std::env::temp_dir().join(format!("{run}.yaml"));
    std::fs::write(
        &config,
        format!(
            "installationSelector: {selector}\n\
             leaderElection:\n  leaseName: {run}\n  namespace: default\n  leaseDuration: {LEASE_SECONDS}s\n"
        ),
    )
    .unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let lease_duration = Duration::from_secs(LEASE_SECONDS);
    let spec: InstallationProfileSpec = serde_json::from_value(serde_json::json!({
        "image": "registry.example/app", "defaultVersion": "1.0.0"
    }))
    .unwrap();
    Api::<InstallationProfile>::all(client.clone())
        .create(
            &PostParams::default(),
            &InstallationProfile::new(&run, spec),
        )
        .await
        .unwrap();

    // A leads, B stands by and does nothing.
    let a = Process::start(&config, &format!("{run}-a"));
    wait_for_holder(&leases, &run, &a.identity, TIMEOUT).await;
    let b = Process::start(&config, &format!("{run}-b"));
    let first: Vec<String> = (0..4).map(|i| format!("{run}-{i}")).collect();
    create_installations(&client, &run, &run, &first).await;

    // Killed mid-run: as soon as the first installation has a status.
    let api: Api<TestInstallation> = Api::all(client.clone());
    wait_for("a first status", TIMEOUT, || async {
        let list = api.list(&ListParams::default().labels(&selector)).await;
        let list = list.map_err(|e| e.to_string())?;
        if list.items.iter().any(|ti| ti.status.is_some()) {
            Ok(())
        } else {
            Err("no status yet".to_string())
        }
    })
    .await;
    assert_eq!(b.reconciles().await, 0, "the standby reconciled");
    let mut a = a;
    a.signal("-KILL");
    let killed = Instant::now();
    wait_for_holder(&leases, &run, &b.identity, lease_duration + TAKEOVER_SLACK).await;
    let failover = killed.elapsed();
    assert!(failover <= lease_duration + TAKEOVER_SLACK, "{failover:?}");
    wait_all_ready(&client, &first).await;
    a.exit_status(Duration::from_secs(5)).await;

    // B frozen, as if cut off from the API server: C takes over, and B,
    // when it thaws, finds the lease gone and exits.
    let c = Process::start(&config, &format!("{run}-c"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.reconciles().await, 0, "the standby reconciled");
    let mut b = b;
    b.signal("-STOP");
    let frozen = Instant::now();
    let second: Vec<String> = (4..6).map(|i| format!("{run}-{i}")).collect();
    create_installations(&client, &run, &run, &second).await;
    wait_for_holder(&leases, &run, &c.identity, lease_duration + TAKEOVER_SLACK).await;
    let partition_failover = frozen.elapsed();
    wait_all_ready(&client, &second).await;
    b.signal("-CONT");
    let status = b.exit_status(lease_duration).await;
    assert!(
        !status.success(),
        "the deposed leader should exit with an error, got {status}"
    );

    // SIGTERM releases the lease at once: D takes over long before it
    // would have expired.
    let d = Process::start(&config, &format!("{run}-d"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut c = c;
    c.signal("-TERM");
    let terminated = Instant::now();
    wait_for_holder(&leases, &run, &d.identity, lease_duration).await;
    let handover = terminated.elapsed();
    assert!(
        handover < Duration::from_secs(3),
        "SIGTERM handover took {handover:?}"
    );
    assert!(c.exit_status(Duration::from_secs(10)).await.success());

    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    let (per_reason, per_instance) = event_counts(&client, &all).await;
    let duplicated: Vec<_> = per_reason.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "phase transitions reported twice: {duplicated:?} (all: {per_reason:?})"
    );
    for name in &all {
        assert_eq!(
            per_reason.get(&(name.clone(), "Ready".to_string())),
            Some(&1),
            "{name} has no single Ready event: {per_reason:?}"
        );
    }
    println!(
        "failover after SIGKILL {failover:?}, after SIGSTOP {partition_failover:?}, \
         after SIGTERM {handover:?}; events per instance {per_instance:?}"
    );

    // The new leader does the deletions.
    support::delete_installations_and_wait(&client, std::slice::from_ref(&selector), TIMEOUT).await;
    d.signal("-TERM");
    let mut d = d;
    assert!(d.exit_status(Duration::from_secs(10)).await.success());
    assert_eq!(
        holder(&leases, &run).await,
        None,
        "the lease was not released"
    );
}
