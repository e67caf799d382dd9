//! A restarted controller over unchanged installations writes nothing, its
//! probes and metrics answer, and no credential reaches its logs, the status
//! or events.

mod support;

use std::{
    collections::BTreeMap,
    io::Write,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use ephemera::api::{
    InstallationProfile, InstallationProfileSpec, Phase, TestInstallation, TestInstallationSpec,
};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::{LimitRange, Namespace, ResourceQuota, Secret, Service},
    events::v1::Event,
    networking::v1::{Ingress, NetworkPolicy},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
};
use support::{
    TEST_RUN_LABEL, client, install_crds,
    server::{RunningServer, spawn_controller},
    unique_name, wait_for,
};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Everything logged by this test process, at debug level.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_writer(move || SharedWriter(writer.clone()))
            .init();
        buffer
    })
    .clone()
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Stops `controller`, failing with its last logs when it does not stop.
async fn stop_controller(controller: RunningServer) {
    controller
        .stop_or(|| {
            let logs = String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned();
            let tail: Vec<&str> = logs
                .lines()
                .filter(|l| !l.contains("hyper") && !l.contains("tower"))
                .collect();
            format!(
                "the controller's last logs:\n{}",
                tail[tail.len().saturating_sub(150)..].join("\n")
            )
        })
        .await;
}

async fn get(port: u16, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The value of a metric line `name value` in Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The controller's own managed-fields entries of `object` (their times
/// move only when it writes; other writers, such as the quota controller
/// updating a ResourceQuota's usage, change the resourceVersion alone).
fn own_entries(object: &impl Resource) -> String {
    let own: Vec<_> = object
        .meta()
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            entry.manager.as_deref() == Some(ephemera::controller::apply::FIELD_MANAGER)
        })
        .collect();
    serde_json::to_string(&own).unwrap()
}

/// `own_entries` of every object of the installations, by kind/namespace/name.
async fn snapshot(client: &Client, names: &[String]) -> BTreeMap<String, String> {
    async fn collect<K>(client: &Client, ns: &str, out: &mut BTreeMap<String, String>)
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(client.clone(), ns);
        for o in api.list(&ListParams::default()).await.unwrap() {
            out.insert(
                format!("{}/{ns}/{}", K::kind(&()), o.name_any()),
                own_entries(&o),
            );
        }
    }
    let mut out = BTreeMap::new();
    for name in names {
        let ti = Api::<TestInstallation>::all(client.clone())
            .get(name)
            .await
            .unwrap();
        out.insert(format!("TestInstallation/{name}"), own_entries(&ti));
        let ns = format!("ti-{name}");
        let namespace = Api::<Namespace>::all(client.clone())
            .get(&ns)
            .await
            .unwrap();
        out.insert(format!("Namespace/{ns}"), own_entries(&namespace));
        collect::<Secret>(client, &ns, &mut out).await;
        collect::<Service>(client, &ns, &mut out).await;
        collect::<Deployment>(client, &ns, &mut out).await;
        collect::<StatefulSet>(client, &ns, &mut out).await;
        collect::<Ingress>(client, &ns, &mut out).await;
        collect::<ResourceQuota>(client, &ns, &mut out).await;
        collect::<LimitRange>(client, &ns, &mut out).await;
        collect::<NetworkPolicy>(client, &ns, &mut out).await;
    }
    out
}

#[tokio::test]
async fn restart_writes_nothing_and_no_credential_leaks() {
    let logs = captured_logs();
    let client = client().await;
    install_crds(&client).await;
    let run = unique_name("restart");

    let first = spawn_controller(&client, &run);
    let (code, body) = get(first.port(), "/healthz").await;
    assert_eq!((code, body.as_str()), (200, "ok"));

    let profile = unique_name("rprof");
    let profile_spec: InstallationProfileSpec = serde_json::from_value(serde_json::json!({
        "image": "registry.example/app", "defaultVersion": "1.0.0",
        "env": [{ "name": "ADMIN_PASSWORD_FOR_SEED", "value": "{{ credentials.adminPassword }}" },
                { "name": "DATASOURCE", "value": "{{ database.url }}" }],
        "filestore": { "type": "minio" }
    }))
    .unwrap();
    Api::<InstallationProfile>::all(client.clone())
        .create(
            &PostParams::default(),
            &InstallationProfile::new(&profile, profile_spec),
        )
        .await
        .unwrap();
    let api: Api<TestInstallation> = Api::all(client.clone());
    let names: Vec<String> = (0..3).map(|i| unique_name(&format!("r{i}"))).collect();
    for name in &names {
        let mut ti = TestInstallation::new(
            name,
            TestInstallationSpec {
                profile: Some(profile.clone()),
                ..Default::default()
            },
        );
        ti.labels_mut().insert(TEST_RUN_LABEL.into(), run.clone());
        api.create(&PostParams::default(), &ti).await.unwrap();
    }
    for name in &names {
        wait_for(&format!("{name} Ready"), TIMEOUT, || async {
            let ti = api.get(name).await.map_err(|e| e.to_string())?;
            if ti.phase() == Some(Phase::Ready) {
                Ok(())
            } else {
                Err(format!("{:?}", ti.status))
            }
        })
        .await;
    }
    let (code, _) = get(first.port(), "/readyz").await;
    assert_eq!(code, 200);
    let (_, text) = get(first.port(), "/metrics").await;
    assert!(
        metric(&text, "ephemera_controller_reconciles_total") >= 3.0,
        "{text}"
    );
    assert!(
        text.contains("ephemera_controller_time_to_ready_seconds_count"),
        "{text}"
    );
    stop_controller(first).await;

    let before = snapshot(&client, &names).await;
    let second = spawn_controller(&client, &run);
    wait_for(
        "the restarted controller to reconcile every installation",
        TIMEOUT,
        || async {
            let (_, text) = get(second.port(), "/metrics").await;
            let passes = metric(
                &text,
                "ephemera_controller_reconcile_duration_seconds_count",
            );
            if passes >= names.len() as f64 {
                Ok(())
            } else {
                Err(format!("{passes} passes"))
            }
        },
    )
    .await;
    let after = snapshot(&client, &names).await;
    stop_controller(second).await;
    let writes: Vec<&String> = before
        .keys()
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    println!(
        "restart over {} unchanged installations ({} objects): {} writes",
        names.len(),
        before.len(),
        writes.len()
    );
    assert!(
        writes.is_empty(),
        "the restarted controller wrote {writes:?}"
    );

    // No credential value in the logs, the status or the events.
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("controller started"),
        "logs were not captured"
    );
    let events: Vec<Event> = Api::<Event>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .and_then(|r| r.name.as_ref())
                .is_some_and(|n| names.contains(n))
        })
        .collect();
    assert!(
        !events.is_empty(),
        "no events were published for the installations"
    );
    let events_text = serde_json::to_string(&events).unwrap();
    for name in &names {
        let ns = format!("ti-{name}");
        let status = serde_json::to_string(&api.get(name).await.unwrap().status).unwrap();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        for secret in ["credentials", "database", "filestore"] {
            for (key, value) in secrets.get(secret).await.unwrap().data.unwrap() {
                let value = String::from_utf8(value.0).unwrap();
                if value.len() < 12 {
                    continue; // user names and ports, not secrets
                }
                assert!(!logs.contains(&value), "{secret}/{key} appears in the logs");
                assert!(
                    !status.contains(&value),
                    "{secret}/{key} appears in the status"
                );
                assert!(
                    !events_text.contains(&value),
                    "{secret}/{key} appears in an event"
                );
            }
        }
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
}

/// A controller stopped at any moment of its start stops: while its stores
/// fill, just after, and once it is running. (A second waiter on the
/// installation store once took the wake-up the controller's runner was
/// waiting for, and shutdown then waited forever.)
#[tokio::test]
async fn a_controller_stopped_at_any_moment_of_its_start_stops() {
    let _logs = captured_logs();
    let client = client().await;
    install_crds(&client).await;
    let run = unique_name("startstop");
    for step in 0..12u64 {
        let controller = spawn_controller(&client, &run);
        tokio::time::sleep(Duration::from_millis(step * 250)).await;
        let started = std::time::Instant::now();
        stop_controller(controller).await;
        println!(
            "stopped {} ms after the start in {:.2} s",
            step * 250,
            started.elapsed().as_secs_f64()
        );
    }
}
