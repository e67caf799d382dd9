//! `make bench N=…`: the same N installations made two ways on the local
//! control plane, one after the other:
//!
//! - **ephemera**: N TestInstallations created at once; the controller (this
//!   build's `ephemera` binary, its own process) reconciles them at
//!   `BENCH_CONCURRENCY` until all are Ready;
//! - **direct**: the controller's own build output for N installations,
//!   applied by a plain client at the same parallelism, waiting for the same
//!   workloads to roll out.
//!
//! With `BENCH_ROUNDS=k` (`make bench ROUNDS=k`) both are measured k times,
//! in alternating order (ephemera first, then direct first, …), so that the
//! machine speeding up or slowing down between the two does not decide the
//! ratio; the ratio is then the median of the rounds' ratios and the other
//! figures are the first round's.
//!
//! Every figure is measured: times from the watch, API requests from the API
//! server's own `apiserver_request_total`, passes from the controller's
//! metrics, memory and CPU from /proc. Writes `bench/results/latest.json`
//! and `latest.md` (under `cargo bench`), or only prints them (under
//! `cargo test`, which runs it at N=3 with a short idle window so it cannot
//! rot).

#[path = "../tests/support/mod.rs"]
mod support;

mod bench;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use bench::{
    apiserver, direct, plane,
    process::Controller,
    report::{self, Figures, Machine, Round, Run},
};
use ephemera::{
    api::{
        InstallationProfile, InstallationProfileSpec, Phase, TestInstallation, TestInstallationSpec,
    },
    controller::config::ControllerConfig,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};

struct Settings {
    n: usize,
    concurrency: usize,
    idle: Duration,
    rounds: usize,
    /// Where results go; `None` in the smoke run of `cargo test`.
    output: Option<PathBuf>,
    profile: &'static str,
}

fn settings() -> Settings {
    let benching = std::env::args().any(|a| a == "--bench");
    let env = |key: &str| {
        std::env::var(key)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
    };
    let default_concurrency = ControllerConfig::default().concurrency as usize;
    if benching {
        Settings {
            n: env("BENCH_INSTALLATIONS").unwrap_or(100),
            concurrency: env("BENCH_CONCURRENCY").unwrap_or(default_concurrency),
            idle: Duration::from_secs(env("BENCH_IDLE_SECONDS").unwrap_or(60) as u64),
            rounds: env("BENCH_ROUNDS").unwrap_or(1).max(1),
            output: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/results")),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
        }
    } else {
        Settings {
            n: 3,
            concurrency: default_concurrency,
            idle: Duration::from_secs(5),
            rounds: 1,
            output: None,
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
        }
    }
}

fn step(started: Instant, what: &str) {
    eprintln!("[bench {:>6.1}s] {what}", started.elapsed().as_secs_f64());
}

fn bench_profile() -> InstallationProfileSpec {
    serde_json::from_value(serde_json::json!({
        "image": "registry.example/app", "defaultVersion": "1.0.0",
        "env": [{ "name": "DATABASE_URL", "value": "{{ database.url }}" }]
    }))
    .unwrap()
}

#[tokio::main]
async fn main() {
    let settings = settings();
    let load_at_start = report::load_average();
    let clock = Instant::now();
    let client = support::client().await;
    support::install_crds(&client).await;
    let run = support::unique_name("bench");
    let work = std::env::temp_dir().join(&run);
    std::fs::create_dir_all(&work).unwrap();
    step(
        clock,
        &format!(
            "{} installations, concurrency {}, {} build, {} round(s); run {run}",
            settings.n, settings.concurrency, settings.profile, settings.rounds
        ),
    );

    let profile = InstallationProfile::new(&run, bench_profile());
    Api::<InstallationProfile>::all(client.clone())
        .create(&PostParams::default(), &profile)
        .await
        .unwrap();
    let _cleanup = Cleanup {
        run: run.clone(),
        selector: format!("{}={run}", support::TEST_RUN_LABEL),
    };

    let mut runs: Vec<(Run, Run)> = Vec::new();
    let mut rounds = Vec::new();
    for round in 0..settings.rounds {
        let direct_first = !round.is_multiple_of(2);
        if settings.rounds > 1 {
            step(
                clock,
                &format!(
                    "round {} of {}: {} first",
                    round + 1,
                    settings.rounds,
                    if direct_first { "direct" } else { "ephemera" }
                ),
            );
        }
        let (ephemera, direct) = if direct_first {
            let direct = direct_run(&client, &settings, &run, round, &profile, clock).await;
            let ephemera = ephemera_run(&client, &settings, &run, round, clock, &work).await;
            (ephemera, direct)
        } else {
            let ephemera = ephemera_run(&client, &settings, &run, round, clock, &work).await;
            let direct = direct_run(&client, &settings, &run, round, &profile, clock).await;
            (ephemera, direct)
        };
        rounds.push(Round::new(&ephemera, &direct, direct_first));
        runs.push((ephemera, direct));
    }
    let (ephemera, direct) = runs.swap_remove(0);

    let figures = Figures {
        installations: settings.n,
        concurrency: settings.concurrency,
        build: settings.profile.to_string(),
        machine: Machine::this(load_at_start),
        ratio: report::median_ratio(&rounds),
        rounds,
        ephemera,
        direct,
    };
    let markdown = figures.markdown();
    println!("\n{markdown}");
    if let Some(dir) = &settings.output {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("latest.json"),
            serde_json::to_string_pretty(&figures).unwrap() + "\n",
        )
        .unwrap();
        std::fs::write(dir.join("latest.md"), markdown).unwrap();
        step(
            clock,
            &format!("wrote {}/latest.json and latest.md", dir.display()),
        );
    }
    let _ = Api::<InstallationProfile>::all(client.clone())
        .delete(&run, &DeleteParams::default())
        .await;
    let _ = std::fs::remove_dir_all(&work);
}

async fn ephemera_run(
    client: &Client,
    settings: &Settings,
    run: &str,
    round: usize,
    clock: Instant,
    work: &std::path::Path,
) -> Run {
    let selector = format!("{}={run}", support::TEST_RUN_LABEL);
    step(
        clock,
        "ephemera: waiting for earlier runs' deletions to finish",
    );
    plane::wait_until_no_namespace_terminates(client, Duration::from_secs(600)).await;
    let controller = Controller::start(
        &support::kubeconfig_path(),
        &format!(
            "installationSelector: {selector}\nconcurrency: {}\n",
            settings.concurrency
        ),
        work,
    )
    .await;
    step(
        clock,
        "ephemera: controller started; creating the installations",
    );
    let api: Api<TestInstallation> = Api::all(client.clone());
    let names: Vec<String> = (0..settings.n)
        .map(|i| format!("{run}-e{round}-{i}"))
        .collect();
    let memory = controller.watch_memory("creating");
    let before = apiserver::scrape(client).await;
    let passes_before = controller.reconciles().await.unwrap_or(0.0);
    let applying_before = controller.applying_reconciles().await.unwrap_or(0.0);
    let refreshes_before = controller.refreshes().await.unwrap_or(0.0);
    let seconds_before = controller.pass_seconds().await;
    let started = Instant::now();
    let watch = tokio::spawn(ready_installations(
        client.clone(),
        selector.clone(),
        names.len(),
        started,
    ));
    futures::stream::iter(&names)
        .map(|name| {
            let api = api.clone();
            async move {
                let mut ti = TestInstallation::new(
                    name,
                    TestInstallationSpec {
                        profile: Some(run.to_string()),
                        ..Default::default()
                    },
                );
                ti.labels_mut()
                    .insert(support::TEST_RUN_LABEL.into(), run.to_string());
                api.create(&PostParams::default(), &ti).await.unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    let ready = tokio::time::timeout(ready_timeout(settings.n), watch)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "not every installation became Ready in time; controller log: {}",
                controller.log.display()
            )
        })
        .unwrap();
    let all_ready = started.elapsed().as_secs_f64();
    let after = apiserver::scrape(client).await;
    let passes_ready = controller.reconciles().await.unwrap_or(0.0);
    let applying_ready = controller.applying_reconciles().await.unwrap_or(0.0);
    let refreshes_ready = controller.refreshes().await.unwrap_or(0.0);
    let seconds_ready = controller.pass_seconds().await;
    step(
        clock,
        &format!(
            "ephemera: all Ready after {all_ready:.1} s; idle for {:?}",
            settings.idle
        ),
    );

    memory.phase("idle");
    let idle_started = k8s_openapi::jiff::Timestamp::now();
    tokio::time::sleep(settings.idle).await;
    let idle_end = apiserver::scrape(client).await;
    let idle_events = plane::events_since(client, idle_started).await;
    let passes_idle = controller.reconciles().await.unwrap_or(0.0);
    let refreshes_idle = controller.refreshes().await.unwrap_or(0.0);
    let ready_observations = controller.ready_observations().await.unwrap_or(0.0);
    assert_eq!(
        ready_observations, settings.n as f64,
        "the time-to-ready histogram must count each installation once"
    );
    let idle = after.until(&idle_end).outside_housekeeping();

    step(clock, "ephemera: deleting every installation");
    memory.phase("deleting");
    let deleting = Instant::now();
    futures::stream::iter(&names)
        .map(|name| {
            let api = api.clone();
            async move {
                let _ = api.delete(name, &DeleteParams::default()).await;
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    let namespaces: Vec<String> = names.iter().map(|n| format!("ti-{n}")).collect();
    wait_gone(client, Some(&selector), &namespaces, settings.n).await;
    let delete_s = deleting.elapsed().as_secs_f64();
    let passes_deleted = controller.reconciles().await.unwrap_or(0.0);
    let peak_rss = controller.peak_rss_mib();
    let cpu = controller.cpu_seconds();
    let memory_by_phase = memory.peaks();
    drop(memory);
    controller.stop().await;
    step(
        clock,
        &format!("ephemera: all deleted after {delete_s:.1} s"),
    );

    let n = settings.n as f64;
    Run::new(
        ready.into_values().collect(),
        all_ready,
        &before.until(&after),
        settings.n,
    )
    .with_controller(
        (passes_ready - passes_before) / n,
        peak_rss,
        cpu,
        idle.writes(),
        passes_idle - passes_ready,
        &idle,
        (passes_deleted - passes_idle) / n,
        ready_observations,
    )
    .with_idle_events(idle_events)
    .with_memory(memory_by_phase)
    .with_applying_passes((applying_ready - applying_before) / n)
    .with_refreshes(
        (refreshes_ready - refreshes_before) / n,
        refreshes_idle - refreshes_ready,
    )
    .with_pass_seconds(
        (seconds_ready.0 - seconds_before.0) / (passes_ready - passes_before).max(1.0),
        (seconds_ready.1 - seconds_before.1) / (applying_ready - applying_before).max(1.0),
    )
    .with_delete(delete_s)
}

async fn direct_run(
    client: &Client,
    settings: &Settings,
    run: &str,
    round: usize,
    profile: &InstallationProfile,
    clock: Instant,
) -> Run {
    step(clock, "direct: waiting for earlier deletions to finish");
    plane::wait_until_no_namespace_terminates(client, Duration::from_secs(600)).await;
    let config = ControllerConfig::default();
    let installations: Vec<direct::Installation> = (0..settings.n)
        .map(|i| direct::build_installation(&format!("{run}-d{round}-{i}"), profile, &config, run))
        .collect();
    step(
        clock,
        &format!(
            "direct: applying {} objects per installation at parallelism {}",
            installations[0].children.len() + 1,
            settings.concurrency
        ),
    );
    let before = apiserver::scrape(client).await;
    let started = Instant::now();
    let watch = {
        let client = client.clone();
        let wanted: Vec<(String, std::collections::BTreeSet<(String, String)>)> = installations
            .iter()
            .map(|i| (i.namespace.name_any(), i.workloads.clone()))
            .collect();
        tokio::spawn(async move { direct::wait_ready(&client, &wanted, started).await })
    };
    direct::apply_all(client, &installations, settings.concurrency).await;
    let ready = tokio::time::timeout(ready_timeout(settings.n), watch)
        .await
        .expect("the direct workloads did not roll out in time")
        .unwrap();
    let all_ready = started.elapsed().as_secs_f64();
    let after = apiserver::scrape(client).await;
    step(
        clock,
        &format!("direct: all rolled out after {all_ready:.1} s; deleting the namespaces"),
    );

    let deleting = Instant::now();
    let namespaces: Vec<String> = installations
        .iter()
        .map(|i| i.namespace.name_any())
        .collect();
    let api: Api<Namespace> = Api::all(client.clone());
    futures::stream::iter(&namespaces)
        .map(|ns| {
            let api = api.clone();
            async move {
                let _ = api.delete(ns, &DeleteParams::background()).await;
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    wait_gone(client, None, &namespaces, settings.n).await;
    let delete_s = deleting.elapsed().as_secs_f64();
    step(clock, &format!("direct: all deleted after {delete_s:.1} s"));
    Run::new(
        ready.into_values().collect(),
        all_ready,
        &before.until(&after),
        settings.n,
    )
    .with_delete(delete_s)
}

/// Generous: 5 s per installation on top of two minutes.
fn ready_timeout(n: usize) -> Duration {
    Duration::from_secs(120 + 5 * n as u64)
}

/// Seconds from `started` until each installation was first seen Ready.
async fn ready_installations(
    client: Client,
    selector: String,
    n: usize,
    started: Instant,
) -> BTreeMap<String, f64> {
    let api: Api<TestInstallation> = Api::all(client);
    let mut events = watcher(api, watcher::Config::default().labels(&selector))
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut ready = BTreeMap::new();
    while ready.len() < n {
        match events.next().await {
            Some(Ok(ti)) if ti.phase() == Some(Phase::Ready) => {
                ready
                    .entry(ti.name_any())
                    .or_insert_with(|| started.elapsed().as_secs_f64());
            }
            Some(_) => {}
            None => panic!("the TestInstallation watch ended"),
        }
    }
    ready
}

/// Waits until the installations of `selector` (if any) and `namespaces`
/// are gone, polling once a second.
async fn wait_gone(client: &Client, selector: Option<&str>, namespaces: &[String], n: usize) {
    let installations: Api<TestInstallation> = Api::all(client.clone());
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let started = Instant::now();
    loop {
        let left_installations = match selector {
            Some(selector) => installations
                .list_metadata(&ListParams::default().labels(selector))
                .await
                .map(|l| l.items.len())
                .unwrap_or(usize::MAX),
            None => 0,
        };
        let existing: std::collections::BTreeSet<String> = ns_api
            .list_metadata(&ListParams::default())
            .await
            .map(|l| l.items.into_iter().map(|ns| ns.name_any()).collect())
            .unwrap_or_default();
        let left_namespaces = namespaces
            .iter()
            .filter(|ns| existing.contains(*ns))
            .count();
        if left_installations == 0 && left_namespaces == 0 {
            return;
        }
        assert!(
            started.elapsed() < ready_timeout(n),
            "{left_installations} installations and {left_namespaces} namespaces still there"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Removes what a failed run leaves behind.
struct Cleanup {
    run: String,
    selector: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        support::force_remove_installations(vec![self.selector.clone()], vec![self.run.clone()]);
        let run = self.run.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let client = support::client().await;
                let api: Api<Namespace> = Api::all(client);
                let selector = format!("{}={run}", direct::DIRECT_LABEL);
                if let Ok(list) = api
                    .list_metadata(&ListParams::default().labels(&selector))
                    .await
                {
                    for ns in list.items {
                        let _ = api
                            .delete(&ns.name_any(), &DeleteParams::background())
                            .await;
                    }
                }
            });
        })
        .join();
    }
}
