//! The fault suite: the controller recovers by itself from a kube-apiserver
//! kill and restart, a 20 s kube-apiserver freeze and an etcd kill and
//! restart (a stuck controller fails the test); repeated SIGKILLs of the
//! controller process and two controllers at once lose, duplicate or
//! re-generate nothing; both adapters go unready while kube-apiserver is
//! down and act on new installations within seconds once it is back.
//! Prints its figures.
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

use ephemera::api::{InstallationProfile, Phase, TestInstallation};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Namespace, Secret},
};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use support::{
    TEST_RUN_LABEL, client, install_crds,
    server::{RunningServer, spawn_controller},
    unique_name, wait_for,
};

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
    controller: &RunningServer,
    run: &str,
    profile: &str,
    fault: &[&str],
) -> (bool, Duration) {
    let port = controller.port();
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
    let controller = spawn_controller(&client, &run);
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
    controller.stop().await;
    let _ = Api::<InstallationProfile>::all(client)
        .delete(&profile, &Default::default())
        .await;
}

/// An adapter serving in this process.
struct RunningAdapter {
    name: &'static str,
    server: RunningServer,
}

fn secret_file(dir: &std::path::Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.display().to_string()
}

/// The chat and GitHub adapters, each with platforms nobody listens on (the
/// installations of this test need no message, only the finalizer released).
async fn start_adapters(
    client: &Client,
    dir: &std::path::Path,
    chat_instance: &str,
    github_instance: &str,
) -> [RunningAdapter; 2] {
    let bot = secret_file(dir, "bot", "bot-token");
    let command = secret_file(dir, "command", "command-token");
    let webhook = secret_file(dir, "webhook", "webhook-secret");
    let token = secret_file(dir, "token", "gh-token");
    let chat_yaml = format!(
        "instance: {chat_instance}\nmattermost:\n  url: http://127.0.0.1:9\n  botToken: {{file: {bot}}}\n  commandTokens: [{{file: {command}}}]\n"
    );
    let github_yaml = format!(
        "apiBaseUrl: http://127.0.0.1:9\nbotLogin: bot\ninstance: {github_instance}\nwebhookSecrets: [{{file: {webhook}}}]\n\
         auth: {{token: {{file: {token}}}}}\nrepositories: [{{name: acme/x}}]\n"
    );
    let chat_config = ephemera::adapters::chat::config::Config::from_yaml(&chat_yaml).unwrap();
    let github_config = ephemera::adapters::github::Config::from_yaml(&github_yaml).unwrap();
    let chat_client = client.clone();
    let github_client = client.clone();
    [
        RunningAdapter {
            name: "chat",
            server: RunningServer::spawn(move |listener, shutdown| {
                ephemera::adapters::chat::serve(chat_client, chat_config, listener, shutdown)
            }),
        },
        RunningAdapter {
            name: "github",
            server: RunningServer::spawn(move |listener, shutdown| {
                ephemera::adapters::github::run(listener, github_config, github_client, shutdown)
            }),
        },
    ]
}

async fn wait_until_ready(adapter: &RunningAdapter, limit: Duration) -> Duration {
    let started = Instant::now();
    wait_for(
        &format!("the {} adapter to be ready", adapter.name),
        limit,
        || async {
            match probe(adapter.server.port(), "/readyz").await {
                Some(200) => Ok(()),
                other => Err(other),
            }
        },
    )
    .await;
    started.elapsed()
}

/// An installation that only an adapter's finalizer holds once deleted:
/// created and deleted at once, it disappears only when that adapter's watch
/// sees it and lets go. Returns how long that took from its creation.
async fn adapter_lets_go(
    client: &Client,
    run: &str,
    adapter: &str,
    instance: &str,
    limit: Duration,
) -> Duration {
    use ephemera::adapters::{chat, github};
    let (labels, finalizer) = match adapter {
        "chat" => (
            serde_json::json!({ chat::LABEL_INSTANCE: instance,
                ephemera::api::labels::SOURCE: chat::SOURCE_CHAT, TEST_RUN_LABEL: run }),
            chat::FINALIZER,
        ),
        _ => (
            serde_json::json!({ github::annotations::INSTANCE: instance,
                ephemera::api::labels::SOURCE: "github", TEST_RUN_LABEL: run }),
            github::annotations::FINALIZER,
        ),
    };
    let name = unique_name(&format!("held-{adapter}"));
    let ti: TestInstallation = serde_json::from_value(serde_json::json!({
        "apiVersion": "ephemera.dev/v1alpha1", "kind": "TestInstallation",
        "metadata": { "name": name, "labels": labels, "finalizers": [finalizer] },
        "spec": { "profile": "not-reconciled-here", "ttl": "1h" }
    }))
    .unwrap();
    let api: Api<TestInstallation> = Api::all(client.clone());
    let started = Instant::now();
    wait_for(
        &format!("creating and deleting {name}"),
        Duration::from_secs(60),
        || async {
            match api.create(&PostParams::default(), &ti).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(err) => return Err(err.to_string()),
            }
            match api.delete(&name, &Default::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                Err(err) => Err(err.to_string()),
            }
        },
    )
    .await;
    let written = started.elapsed();
    wait_for(
        &format!("the {adapter} adapter to release {name} (a stuck watch fails here)"),
        limit,
        || async {
            match api.get_opt(&name).await {
                Ok(None) => Ok(()),
                Ok(Some(ti)) => Err(format!(
                    "still there: {:?}",
                    kube::ResourceExt::finalizers(&ti)
                )),
                Err(err) => Err(err.to_string()),
            }
        },
    )
    .await;
    println!(
        "  {adapter}: {name} created and deleted after {:.1}s of trying, released {:.1}s later",
        written.as_secs_f64(),
        (started.elapsed() - written).as_secs_f64()
    );
    started.elapsed() - written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adapters_go_unready_and_recover_from_a_kube_apiserver_kill() {
    let _plane = PLANE.lock().await;
    let client = client().await;
    install_crds(&client).await;
    let run = unique_name("adapterfault");
    let dir = std::env::temp_dir().join(unique_name("adapterfault"));
    std::fs::create_dir_all(&dir).unwrap();
    let chat_instance = unique_name("faultchat");
    let github_instance = unique_name("faultgh");
    let adapters = start_adapters(&client, &dir, &chat_instance, &github_instance).await;
    let instance = |adapter: &str| {
        if adapter == "chat" {
            chat_instance.clone()
        } else {
            github_instance.clone()
        }
    };
    for adapter in &adapters {
        wait_until_ready(adapter, Duration::from_secs(30)).await;
        adapter_lets_go(
            &client,
            &run,
            adapter.name,
            &instance(adapter.name),
            Duration::from_secs(30),
        )
        .await;
    }

    let ports: Vec<u16> = adapters.iter().map(|a| a.server.port()).collect();
    let watch_ready = tokio::spawn(async move {
        let mut unready = vec![false; ports.len()];
        loop {
            for (i, port) in ports.iter().enumerate() {
                if probe(*port, "/readyz").await == Some(503) {
                    unready[i] = true;
                }
            }
            if unready.iter().all(|u| *u) {
                return unready;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    println!("fault: kube-apiserver SIGKILL, back after 20 s (adapters)");
    plane_fault(&["kill", "kube-apiserver", "20"]).await;
    wait_for(
        "the API server to answer again",
        Duration::from_secs(120),
        || async { api_answers(&client).await.then_some(()).ok_or("not yet") },
    )
    .await;
    let back = Instant::now();
    let unready = if watch_ready.is_finished() {
        watch_ready.await.unwrap()
    } else {
        watch_ready.abort();
        vec![false; adapters.len()]
    };
    let mut acted = Vec::new();
    for adapter in &adapters {
        let taken = adapter_lets_go(
            &client,
            &run,
            adapter.name,
            &instance(adapter.name),
            recovery_limit(),
        )
        .await;
        acted.push((taken, back.elapsed()));
    }
    let mut ready_again = Vec::new();
    for adapter in &adapters {
        wait_until_ready(adapter, Duration::from_secs(60)).await;
        ready_again.push(back.elapsed());
    }
    for (i, adapter) in adapters.iter().enumerate() {
        figure(format!(
            "FIGURES plane fault kube-apiserver SIGKILL, back after 20 s, {} adapter: /readyz 503 during the fault: {}, acted on a new installation {:.1}s after its creation ({:.1}s after the API answered again), ready again after {:.1}s",
            adapter.name,
            unready[i],
            acted[i].0.as_secs_f64(),
            acted[i].1.as_secs_f64(),
            ready_again[i].as_secs_f64()
        ));
    }
    for (i, adapter) in adapters.iter().enumerate() {
        assert!(
            unready[i],
            "the {} adapter's /readyz stayed 200 while kube-apiserver was down",
            adapter.name
        );
        assert!(
            acted[i].0 <= recovery_limit(),
            "the {} adapter took {:?} to act on a new installation after the API returned",
            adapter.name,
            acted[i].0
        );
    }
    for adapter in adapters {
        adapter.server.stop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
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
    let first = spawn_controller(&client, &run);
    let second = spawn_controller(&client, &run);
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
    for controller in [first, second] {
        controller.stop().await;
    }
    let _ = Api::<InstallationProfile>::all(client)
        .delete(&profile, &Default::default())
        .await;
}
