//! `make bench`: how fast the controller turns TestInstallations into Ready
//! installations on the local control plane, compared with the API server's
//! own write rate, and how much memory the controller uses. Figures are
//! printed, never asserted.
//!
//! BENCH_INSTALLATIONS (default 40) installations are created at once; each
//! becomes about 15 objects and 3–4 pods.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use ephemera::{
    api::{
        InstallationProfile, InstallationProfileSpec, Phase, TestInstallation, TestInstallationSpec,
    },
    controller::{config::ControllerConfig, metrics::Metrics},
};
use futures::future::join_all;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
};

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_INSTALLATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let client = support::client().await;
    support::install_crds(&client).await;

    // Baseline: the API server's write rate for small objects, 8 at a time.
    let ns = support::TestNamespace::create(&client, "bench").await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let writes = n * 15;
    let started = Instant::now();
    for chunk in (0..writes).collect::<Vec<_>>().chunks(8) {
        join_all(chunk.iter().map(|i| {
            let maps = maps.clone();
            async move {
                let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                    "metadata": { "name": format!("cm-{i}") }, "data": { "k": "v" }
                }))
                .unwrap();
                maps.create(&PostParams::default(), &cm).await.unwrap();
            }
        }))
        .await;
    }
    let baseline = started.elapsed();
    let api_rate = writes as f64 / baseline.as_secs_f64();
    ns.delete().await;

    // The controller, in this process, on installations labelled for it.
    let run = support::unique_name("bench");
    let rss_before = rss_mib();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let config = ControllerConfig {
        installation_selector: Some(format!("{}={run}", support::TEST_RUN_LABEL)),
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(ephemera::controller::run_with(
        client.clone(),
        config,
        listener,
        registry,
        metrics.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    let profile = support::unique_name("benchprof");
    let spec: InstallationProfileSpec = serde_json::from_value(serde_json::json!({
        "image": "registry.example/app", "defaultVersion": "1.0.0",
        "env": [{ "name": "DATABASE_URL", "value": "{{ database.url }}" }]
    }))
    .unwrap();
    Api::<InstallationProfile>::all(client.clone())
        .create(
            &PostParams::default(),
            &InstallationProfile::new(&profile, spec),
        )
        .await
        .unwrap();

    let api: Api<TestInstallation> = Api::all(client.clone());
    let started = Instant::now();
    let names: Vec<String> = (0..n).map(|i| format!("{run}-{i}")).collect();
    join_all(names.iter().map(|name| {
        let api = api.clone();
        let profile = profile.clone();
        let run = run.clone();
        async move {
            let mut ti = TestInstallation::new(
                name,
                TestInstallationSpec {
                    profile: Some(profile),
                    ..Default::default()
                },
            );
            ti.labels_mut().insert(support::TEST_RUN_LABEL.into(), run);
            api.create(&PostParams::default(), &ti).await.unwrap();
        }
    }))
    .await;
    let selector = format!("{}={run}", support::TEST_RUN_LABEL);
    let mut first_ready: Option<Duration> = None;
    loop {
        let list = api
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap();
        let ready = list
            .items
            .iter()
            .filter(|ti| ti.phase() == Some(Phase::Ready))
            .count();
        if ready > 0 && first_ready.is_none() {
            first_ready = Some(started.elapsed());
        }
        if ready == n {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            let stuck = list
                .items
                .iter()
                .find(|ti| ti.phase() != Some(Phase::Ready));
            panic!(
                "only {ready} of {n} installations became Ready within 5 minutes; one that did not: {:?}",
                stuck
                    .and_then(|ti| ti.status.as_ref())
                    .and_then(|s| s.message.clone())
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_ready = started.elapsed();
    let rss_after = rss_mib();
    let reconciles = metrics.reconciles.get();

    // Objects the installations consist of, to express the rate in writes.
    let namespaces = Api::<Namespace>::all(client.clone())
        .list(
            &ListParams::default()
                .labels("ephemera.dev/installation,app.kubernetes.io/managed-by=ephemera"),
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|ns| names.iter().any(|n| ns.name_any() == format!("ti-{n}")))
        .count();
    let objects_per_installation = 15.0;
    let controller_rate = n as f64 * objects_per_installation / all_ready.as_secs_f64();

    println!();
    println!("ephemera benchmark on the local control plane ({n} installations, debug build)");
    println!("| figure | value |");
    println!("|---|---|");
    println!("| API server write rate (ConfigMaps, 8 in flight) | {api_rate:.0} writes/s |");
    println!(
        "| first installation Ready | {:.2} s |",
        first_ready.unwrap_or_default().as_secs_f64()
    );
    println!(
        "| all {n} installations Ready | {:.2} s |",
        all_ready.as_secs_f64()
    );
    println!(
        "| installations per second | {:.1} |",
        n as f64 / all_ready.as_secs_f64()
    );
    println!(
        "| controller object writes per second (~15 per installation) | {controller_rate:.0} |"
    );
    println!(
        "| ratio to the API server's write rate | {:.2} |",
        controller_rate / api_rate
    );
    println!(
        "| reconcile passes | {reconciles} ({:.1} per installation) |",
        reconciles as f64 / n as f64
    );
    println!("| namespaces created | {namespaces} |");
    println!("| process memory before / after (RSS) | {rss_before:.0} MiB / {rss_after:.0} MiB |");

    join_all(names.iter().map(|name| {
        let api = api.clone();
        async move {
            let _ = api.delete(name, &DeleteParams::default()).await;
        }
    }))
    .await;
    let cleanup = Instant::now();
    loop {
        let left = api
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
            .len();
        if left == 0 || cleanup.elapsed() > Duration::from_secs(300) {
            println!(
                "| all deleted (namespaces included) | {:.2} s, {left} left |",
                cleanup.elapsed().as_secs_f64()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.send(()).unwrap();
    let _ = controller.await;
}
