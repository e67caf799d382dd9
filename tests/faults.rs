//! The fault suite: the controller recovers by itself from a kube-apiserver
//! kill and restart, a 20 s kube-apiserver freeze and an etcd kill and
//! restart (a stuck controller fails the test); repeated SIGKILLs of the
//! controller process and two controllers at once lose, duplicate or
//! re-generate nothing. Prints its figures.
//!
//! Tests that stop plane components take a lock, so they never overlap with
//! each other; cargo runs test binaries one at a time, so no other binary's
//! tests see the faults. `FAULT_KILLS` and `FAULT_INSTALLATIONS` make longer
//! runs (`make chaos`); `FAULT_SEED` repeats one.

mod support;

/// Prints a figure of this suite, and appends it to `EPHEMERA_FIGURES`
/// (which `make test` shows at the end).
fn figure(line: String) {
    println!("{line}");
    if let Some(path) = std::env::var_os("EPHEMERA_FIGURES") {
        use std::io::Write;
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(file, "{line}");
        }
    }
}

use std::{
    collections::BTreeMap,
    process::Stdio,
    time::{Duration, Instant},
};

use ephemera::{
    api::{InstallationProfile, Phase, TestInstallation},
    controller::{config::ControllerConfig, metrics::Metrics},
};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Namespace, Secret},
};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use support::{TEST_RUN_LABEL, client, install_crds, unique_name, wait_for};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Longest acceptable time from the API answering again to the controller
/// writing the first status of an installation created then
/// (`FAULT_RECOVERY_LIMIT` seconds, to measure a slow build).
fn recovery_limit() -> Duration {
    Duration::from_secs(env_number("FAULT_RECOVERY_LIMIT", 30))
}
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// One fault at a time in this binary.
static PLANE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator, so a failing run can be repeated with
/// its `FAULT_SEED`.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let seed = env_number("FAULT_SEED", 11);
        println!("FAULT_SEED={seed}");
        Self(seed.wrapping_mul(6364136223846793005).wrapping_add(1))
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

async fn plane_fault(args: &[&str]) {
    let status = tokio::process::Command::new(format!("{ROOT}/hack/plane-fault.sh"))
        .args(args)
        .env(
            "EPHEMERA_CLUSTER_DIR",
            support::kubeconfig_path().parent().unwrap(),
        )
        .status()
        .await
        .expect("run hack/plane-fault.sh");
    assert!(status.success(), "hack/plane-fault.sh {args:?} failed");
}

async fn api_answers(client: &Client) -> bool {
    Api::<Namespace>::all(client.clone())
        .list(&ListParams::default().limit(1))
        .await
        .is_ok()
}

async fn create_profile(client: &Client) -> String {
    let name = unique_name("faultprof");
    let profile: InstallationProfile = serde_json::from_value(serde_json::json!({
        "apiVersion": "ephemera.dev/v1alpha1", "kind": "InstallationProfile",
        "metadata": { "name": name },
        "spec": {
            "image": "registry.example/app", "defaultVersion": "1.0.0",
            "database": { "engine": "none" }, "filestore": { "type": "none" }
        }
    }))
    .unwrap();
    Api::<InstallationProfile>::all(client.clone())
        .create(&PostParams::default(), &profile)
        .await
        .unwrap();
    name
}

async fn create_installation(client: &Client, run: &str, profile: &str, name: &str) {
    let ti: TestInstallation = serde_json::from_value(serde_json::json!({
        "apiVersion": "ephemera.dev/v1alpha1", "kind": "TestInstallation",
        "metadata": { "name": name, "labels": { TEST_RUN_LABEL: run } },
        "spec": { "profile": profile, "ttl": "2h" }
    }))
    .unwrap();
    // The API server may still refuse writes right after a fault.
    let api: Api<TestInstallation> = Api::all(client.clone());
    wait_for(
        &format!("creating {name}"),
        Duration::from_secs(60),
        || async {
            match api.create(&PostParams::default(), &ti).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                Err(err) => Err(err.to_string()),
            }
        },
    )
    .await;
}

struct InProcessController {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    port: u16,
}

async fn start_in_process(client: &Client, run: &str) -> InProcessController {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = ControllerConfig {
        installation_selector: Some(format!("{TEST_RUN_LABEL}={run}")),
        ..Default::default()
    };
    let task = tokio::spawn(ephemera::controller::run_with(
        client.clone(),
        config,
        listener,
        registry,
        metrics,
        async move {
            let _ = stopped.await;
        },
    ));
    InProcessController { stop, task, port }
}

async fn probe(port: u16, path: &str) -> Option<u16> {
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}

/// Waits until `name` has a phase; returns how long that took.
async fn first_status(client: &Client, name: &str, limit: Duration) -> Duration {
    let api: Api<TestInstallation> = Api::all(client.clone());
    let start = Instant::now();
    wait_for(
        &format!("the first status of {name} (a stuck controller fails here)"),
        limit,
        || async {
            match api.get_opt(name).await {
                Ok(Some(ti)) if ti.phase().is_some() => Ok(()),
                Ok(other) => Err(format!("{:?}", other.map(|t| t.status))),
                Err(err) => Err(err.to_string()),
            }
        },
    )
    .await;
    start.elapsed()
}

/// Injects `fault` while watching the controller's /readyz; returns whether
/// it was ever not ready during the fault and the recovery time: from the
/// API answering again to the first status of an installation created then.
async fn recover_from(
    client: &Client,
    controller: &InProcessController,
    run: &str,
    profile: &str,
    fault: &[&str],
) -> (bool, Duration) {
    let port = controller.port;
    let watch_ready = tokio::spawn(async move {
        let mut seen_unready = false;
        loop {
            if probe(port, "/readyz").await != Some(200) {
                seen_unready = true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            if seen_unready {
                return true;
            }
        }
    });
    plane_fault(fault).await;
    wait_for(
        "the API server to answer again",
        Duration::from_secs(120),
        || async { api_answers(client).await.then_some(()).ok_or("not yet") },
    )
    .await;
    let back = Instant::now();
    let name = unique_name("fault");
    create_installation(client, run, profile, &name).await;
    let taken = first_status(client, &name, recovery_limit()).await;
    let recovery = back.elapsed().max(taken);
    let seen_unready = if watch_ready.is_finished() {
        watch_ready.await.unwrap_or(false)
    } else {
        watch_ready.abort();
        false
    };
    // Readiness comes back by itself once the watches are quiet.
    wait_for(
        "the controller to be ready again",
        Duration::from_secs(60),
        || async {
            match probe(port, "/readyz").await {
                Some(200) => Ok(()),
                other => Err(other),
            }
        },
    )
    .await;
    (seen_unready, recovery)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn controller_recovers_from_plane_faults_by_itself() {
    let _plane = PLANE.lock().await;
    let client = client().await;
    install_crds(&client).await;
    let run = unique_name("faults");
    let profile = create_profile(&client).await;
    let controller = start_in_process(&client, &run).await;
    let warm = unique_name("warm");
    create_installation(&client, &run, &profile, &warm).await;
    first_status(&client, &warm, Duration::from_secs(60)).await;

    let faults: [(&str, &[&str]); 3] = [
        (
            "kube-apiserver SIGKILL, back after 20 s",
            &["kill", "kube-apiserver", "20"],
        ),
        (
            "kube-apiserver frozen 20 s (SIGSTOP/SIGCONT)",
            &["freeze", "kube-apiserver", "20"],
        ),
        ("etcd SIGKILL, back after 5 s", &["kill", "etcd", "5"]),
    ];
    let mut figures = Vec::new();
    for (what, fault) in faults {
        println!("fault: {what}");
        let (unready, recovery) = recover_from(&client, &controller, &run, &profile, fault).await;
        println!(
            "  recovered {:.1}s after the API answered again; /readyz went unready during the fault: {unready}",
            recovery.as_secs_f64()
        );
        assert!(
            recovery <= recovery_limit(),
            "{what}: the controller took {recovery:?} to reconcile again"
        );
        figures.push((what, recovery, unready));
    }
    for (what, recovery, unready) in &figures {
        figure(format!(
            "FIGURES plane fault {what}: recovered {:.1}s after the API answered again (to the first status of a new installation); /readyz unready during the fault: {unready}",
            recovery.as_secs_f64()
        ));
    }
    // A kill of the API server fails every watch: readiness must show it.
    assert!(
        figures[0].2,
        "/readyz stayed 200 while kube-apiserver was down"
    );

    support::delete_installations_and_wait(
        &client,
        &[format!("{TEST_RUN_LABEL}={run}")],
        Duration::from_secs(120),
    )
    .await;
    controller.stop.send(()).unwrap();
    controller.task.await.unwrap().unwrap();
    let _ = Api::<InstallationProfile>::all(client)
        .delete(&profile, &Default::default())
        .await;
}

/// The controller binary, as a child process that can be SIGKILLed.
struct ControllerProcess {
    child: tokio::process::Child,
}

impl ControllerProcess {
    async fn start(config_path: &std::path::Path) -> Self {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ephemera"))
            .args(["controller", "--listen", "127.0.0.1:0", "--config"])
            .arg(config_path)
            .env("KUBECONFIG", support::kubeconfig_path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start the ephemera binary");
        Self { child }
    }

    async fn sigkill(mut self) {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
    }
}

/// Per installation: its namespace, the admin password first seen, and the
/// number of app Deployments. Installations without a credentials Secret
/// yet are left out.
async fn observe(client: &Client, names: &[String]) -> BTreeMap<String, (String, usize)> {
    let mut seen = BTreeMap::new();
    for name in names {
        let ns = format!("ti-{name}");
        let Ok(Some(secret)) = Api::<Secret>::namespaced(client.clone(), &ns)
            .get_opt("credentials")
            .await
        else {
            continue;
        };
        let password = secret
            .data
            .and_then(|d| d.get("adminPassword").cloned())
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default();
        let deployments = Api::<Deployment>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .map(|l| l.items.len())
            .unwrap_or(0);
        seen.insert(name.clone(), (password, deployments));
    }
    seen
}

/// Counts what a run of kills did: installations not Ready or without a
/// namespace (lost), more namespaces or app Deployments than installations
/// (duplicated), passwords that changed after they were first seen.
async fn audit(
    client: &Client,
    run: &str,
    names: &[String],
    first_passwords: &BTreeMap<String, String>,
) -> (usize, usize, usize) {
    let api: Api<TestInstallation> = Api::all(client.clone());
    let listed = api
        .list(&ListParams::default().labels(&format!("{TEST_RUN_LABEL}={run}")))
        .await
        .unwrap()
        .items;
    let mut lost = names.len().saturating_sub(listed.len());
    for ti in &listed {
        if ti.phase() != Some(Phase::Ready) {
            lost += 1;
        }
    }
    let now = observe(client, names).await;
    lost += names.len().saturating_sub(now.len());
    let duplicated = listed.len().saturating_sub(names.len())
        + now
            .values()
            .filter(|(_, deployments)| *deployments > 1)
            .count();
    let changed = first_passwords
        .iter()
        .filter(|(name, password)| now.get(*name).map(|(p, _)| p) != Some(*password))
        .count();
    (lost, duplicated, changed)
}

async fn wait_all_ready(client: &Client, names: &[String]) {
    let api: Api<TestInstallation> = Api::all(client.clone());
    wait_for("every installation Ready", READY_TIMEOUT, || async {
        let mut waiting = Vec::new();
        for name in names {
            match api.get_opt(name).await {
                Ok(Some(ti)) if ti.phase() == Some(Phase::Ready) => {}
                Ok(Some(ti)) => waiting.push(format!("{name}: {:?}", ti.phase())),
                Ok(None) => waiting.push(format!("{name}: gone")),
                Err(err) => waiting.push(format!("{name}: {err}")),
            }
        }
        waiting.is_empty().then_some(()).ok_or(waiting)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_chaos_loses_duplicates_and_regenerates_nothing() {
    let _plane = PLANE.lock().await;
    let client = client().await;
    install_crds(&client).await;
    let kills = env_number("FAULT_KILLS", 8);
    let count = env_number("FAULT_INSTALLATIONS", 20) as usize;
    let mut rng = Rng::seeded();
    let run = unique_name("chaos");
    let profile = create_profile(&client).await;
    let dir = std::env::temp_dir().join(unique_name("chaos"));
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("controller.yaml");
    std::fs::write(
        &config_path,
        format!("installationSelector: {TEST_RUN_LABEL}={run}\nconcurrency: 4\n"),
    )
    .unwrap();

    let names: Vec<String> = (0..count).map(|_| unique_name("chaos")).collect();
    let mut first_passwords: BTreeMap<String, String> = BTreeMap::new();
    let mut created = 0;
    let started = Instant::now();
    for kill in 0..kills {
        let controller = ControllerProcess::start(&config_path).await;
        // Create a share of the installations while this controller runs,
        // then kill it at a seeded moment, mid-reconcile.
        let batch = count.div_ceil(kills as usize);
        for name in names.iter().skip(created).take(batch) {
            create_installation(&client, &run, &profile, name).await;
            created += 1;
        }
        tokio::time::sleep(Duration::from_millis(300 + rng.below(2500))).await;
        for (name, (password, _)) in observe(&client, &names).await {
            first_passwords.entry(name).or_insert(password);
        }
        controller.sigkill().await;
        println!(
            "  kill {} of {kills}: {created} installations created",
            kill + 1
        );
    }
    for name in names.iter().skip(created) {
        create_installation(&client, &run, &profile, name).await;
    }
    let last = ControllerProcess::start(&config_path).await;
    wait_all_ready(&client, &names).await;
    for (name, (password, _)) in observe(&client, &names).await {
        first_passwords.entry(name).or_insert(password);
    }
    // Let the survivor run on a while: nothing may change any more.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (lost, duplicated, changed) = audit(&client, &run, &names, &first_passwords).await;
    figure(format!(
        "FIGURES SIGKILL chaos: {kills} kills survived, {count} installations, lost {lost}, duplicated {duplicated}, passwords changed {changed} ({:.0}s)",
        started.elapsed().as_secs_f64()
    ));
    assert_eq!((lost, duplicated, changed), (0, 0, 0));

    support::delete_installations_and_wait(
        &client,
        &[format!("{TEST_RUN_LABEL}={run}")],
        Duration::from_secs(180),
    )
    .await;
    last.sigkill().await;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = Api::<InstallationProfile>::all(client)
        .delete(&profile, &Default::default())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_controllers_at_once_build_each_installation_once() {
    let _plane = PLANE.lock().await;
    let client = client().await;
    install_crds(&client).await;
    let run = unique_name("twin");
    let profile = create_profile(&client).await;
    let first = start_in_process(&client, &run).await;
    let second = start_in_process(&client, &run).await;
    let names: Vec<String> = (0..10).map(|_| unique_name("twin")).collect();
    for name in &names {
        create_installation(&client, &run, &profile, name).await;
    }
    wait_all_ready(&client, &names).await;
    let first_passwords: BTreeMap<String, String> = observe(&client, &names)
        .await
        .into_iter()
        .map(|(name, (password, _))| (name, password))
        .collect();
    assert_eq!(first_passwords.len(), names.len());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (lost, duplicated, changed) = audit(&client, &run, &names, &first_passwords).await;
    figure(format!(
        "FIGURES two controllers: {} installations, lost {lost}, duplicated {duplicated}, passwords changed {changed}",
        names.len()
    ));
    assert_eq!((lost, duplicated, changed), (0, 0, 0));
    support::delete_installations_and_wait(
        &client,
        &[format!("{TEST_RUN_LABEL}={run}")],
        Duration::from_secs(120),
    )
    .await;
    for c in [first, second] {
        c.stop.send(()).unwrap();
        c.task.await.unwrap().unwrap();
    }
    let _ = Api::<InstallationProfile>::all(client)
        .delete(&profile, &Default::default())
        .await;
}
