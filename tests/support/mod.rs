//! Shared helpers for integration tests against the local control plane
//! (`make cluster-up`). Each test binary includes this with `mod support;`.
#![allow(dead_code)] // not every test binary uses every helper

pub mod chart;
pub mod leaks;
pub mod server;

use std::{
    fmt::Debug,
    future::Future,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};

/// Path of the kubeconfig of the local control plane: `EPHEMERA_KUBECONFIG`
/// when set, else `.cluster/kubeconfig` in the repository.
pub fn kubeconfig_path() -> PathBuf {
    std::env::var_os("EPHEMERA_KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cluster/kubeconfig"))
}

/// A client for the local control plane. Panics with what to do when the
/// plane is not running: these tests never fall back to anything else.
pub async fn client() -> Client {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path).unwrap_or_else(|err| {
        panic!(
            "cannot read the local control plane's kubeconfig at {}: {err}\n\
             start the plane with `make cluster-up` (or run `make test`, which starts it)",
            path.display()
        )
    });
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig of the local control plane is invalid");
    Client::try_from(config).expect("cannot build a Kubernetes client")
}

/// A name no other test (or earlier run) uses: `PREFIX-<pid>-<counter>-<random>`,
/// a valid DNS label for prefixes of up to 30 characters.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!(
        "{prefix}-{:x}-{n}-{:x}",
        std::process::id(),
        nanos & 0xfffff
    );
    assert!(
        name.len() <= 63,
        "unique name {name} is longer than a DNS label"
    );
    name
}

/// Polls `probe` until it yields `Ok(value)`, every 200 ms, for at most
/// `timeout`. `Err(state)` describes what was seen; on time-out the test fails
/// with that last state, so a failure says what was wrong, not just "timed out".
pub async fn wait_for<T, S, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    S: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, S>>,
{
    let start = Instant::now();
    loop {
        let last = match probe().await {
            Ok(value) => {
                note_a_slow_wait(what, start.elapsed(), timeout);
                return value;
            }
            Err(state) => state,
        };
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last state seen: {last:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Appends a wait that took more than half its time-out to the file named by
/// `EPHEMERA_SLOW_WAITS` (`make test` lists them at the end): a test that
/// passes close to its limit is the next one to fail on a busier machine.
fn note_a_slow_wait(what: &str, took: Duration, timeout: Duration) {
    use std::io::Write;
    if took * 2 <= timeout {
        return;
    }
    let Some(path) = std::env::var_os("EPHEMERA_SLOW_WAITS") else {
        return;
    };
    let binary = std::env::args()
        .next()
        .and_then(|arg0| {
            std::path::Path::new(&arg0)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .map(|file| match file.rsplit_once('-') {
            Some((binary, _hash)) => binary.to_string(),
            None => file,
        })
        .unwrap_or_default();
    let line = format!(
        "{binary}: {what}: {:.1} s of {:.0} s\n",
        took.as_secs_f64(),
        timeout.as_secs_f64()
    );
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = file.write_all(line.as_bytes());
    }
}

/// A namespace for one test. Tests call `delete` at the end; namespaces that
/// a failing test leaves behind carry the label `ephemera.dev/test=true`.
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    /// Creates a uniquely named namespace and waits until its `default`
    /// ServiceAccount exists, since pods are refused before that.
    pub async fn create(client: &Client, prefix: &str) -> Self {
        let name = unique_name(prefix);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "ephemera.dev/test": "true" } }
        }))
        .unwrap();
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|err| panic!("creating namespace {name}: {err}"));
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        wait_for(
            &format!("the default ServiceAccount in {name}"),
            Duration::from_secs(30),
            || async {
                accounts
                    .get_opt("default")
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| "absent".to_string())
            },
        )
        .await;
        Self {
            name,
            client: client.clone(),
        }
    }

    /// Deletes the namespace without waiting for it to be gone.
    pub async fn delete(self) {
        Api::<Namespace>::all(self.client)
            .delete(&self.name, &DeleteParams::default())
            .await
            .unwrap_or_else(|err| panic!("deleting namespace {}: {err}", self.name));
    }
}

/// Installs (or updates) what `crds/` holds, by server-side apply: the CRDs
/// (waiting until they are established) and the deletion-lock admission
/// policy with its binding.
pub async fn install_crds(client: &Client) {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};
    use kube::runtime::wait::{await_condition, conditions};
    let params = PatchParams::apply("ephemera-tests").force();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for doc in ephemera::api::crds_yaml()
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
    {
        let value: serde_yaml::Value = serde_yaml::from_str(doc).expect("generated YAML parses");
        let name = value["metadata"]["name"].as_str().unwrap().to_string();
        match value["kind"].as_str() {
            Some("CustomResourceDefinition") => {
                let crd: CustomResourceDefinition = serde_yaml::from_value(value).unwrap();
                crds.patch(&name, &params, &Patch::Apply(&crd))
                    .await
                    .unwrap_or_else(|err| panic!("applying CRD {name}: {err}"));
                tokio::time::timeout(
                    Duration::from_secs(30),
                    await_condition(crds.clone(), &name, conditions::is_crd_established()),
                )
                .await
                .unwrap_or_else(|_| panic!("CRD {name} not established within 30s"))
                .unwrap();
            }
            Some("ValidatingAdmissionPolicy") => {
                let policy: ValidatingAdmissionPolicy = serde_yaml::from_value(value).unwrap();
                Api::<ValidatingAdmissionPolicy>::all(client.clone())
                    .patch(&name, &params, &Patch::Apply(&policy))
                    .await
                    .unwrap_or_else(|err| panic!("applying policy {name}: {err}"));
            }
            Some("ValidatingAdmissionPolicyBinding") => {
                let binding: ValidatingAdmissionPolicyBinding =
                    serde_yaml::from_value(value).unwrap();
                Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
                    .patch(&name, &params, &Patch::Apply(&binding))
                    .await
                    .unwrap_or_else(|err| panic!("applying binding {name}: {err}"));
            }
            other => panic!("unexpected kind {other:?} in crds/"),
        }
    }
}

/// A controller for this test binary, running on its own thread and runtime
/// for the whole test process. It only reconciles TestInstallations labelled
/// `ephemera.dev/test-run=<the returned value>`, so test binaries running at
/// the same time never share installations.
pub fn controller_for_this_binary() -> &'static str {
    controller_with(|_| {})
}

/// Like `controller_for_this_binary`, with settings changed by `adjust`; the
/// first call in a test binary decides them.
pub fn controller_with(
    adjust: impl FnOnce(&mut ephemera::controller::config::ControllerConfig),
) -> &'static str {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RUN.get_or_init(|| {
        let run = unique_name("run");
        let mut config = ephemera::controller::config::ControllerConfig {
            installation_selector: Some(format!("{TEST_RUN_LABEL}={run}")),
            ..Default::default()
        };
        adjust(&mut config);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime for the controller");
            runtime.block_on(async move {
                let client = client().await;
                install_crds(&client).await;
                ready_tx.send(()).unwrap();
                let listen = "127.0.0.1:0".parse().unwrap();
                if let Err(err) = ephemera::controller::run(client, config, listen).await {
                    panic!("controller stopped: {err:#}");
                }
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("controller thread did not start");
        run
    })
}

/// Label that assigns a TestInstallation to one test binary's controller.
pub const TEST_RUN_LABEL: &str = "ephemera.dev/test-run";

/// Runs the local control plane's kubectl against it with `args`.
pub async fn kubectl(args: &[&str]) -> std::process::Output {
    let kubectl = std::env::var("EPHEMERA_KUBECTL")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.cluster/bin/kubectl").into());
    tokio::process::Command::new(&kubectl)
        .arg(format!("--kubeconfig={}", kubeconfig_path().display()))
        .args(args)
        .output()
        .await
        .unwrap_or_else(|err| panic!("running {kubectl}: {err}"))
}

/// Removes, when dropped, the installations matching `selector` and the
/// profile `profile` (`force_remove_installations`), so that a test that
/// fails half-way leaves nothing behind.
pub struct RemoveOnDrop {
    pub selector: String,
    pub profile: String,
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        force_remove_installations(vec![self.selector.clone()], vec![self.profile.clone()]);
    }
}

/// For `Drop` guards of tests that failed half-way: deletes the
/// TestInstallations matching any of `selectors` (stripping their
/// finalizers, since no controller or adapter will run for them once the
/// test binary ends), their `ti-<name>` namespaces, and `profiles`. Blocks
/// until done, on a thread of its own so it works inside a runtime.
pub fn force_remove_installations(selectors: Vec<String>, profiles: Vec<String>) {
    use kube::api::{ListParams, Patch, PatchParams};
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for cleaning up");
        runtime.block_on(async move {
            let client = client().await;
            let api: Api<ephemera::api::TestInstallation> = Api::all(client.clone());
            let namespaces: Api<Namespace> = Api::all(client.clone());
            let profile_api: Api<ephemera::api::InstallationProfile> = Api::all(client);
            for name in profiles {
                let _ = profile_api.delete(&name, &DeleteParams::default()).await;
            }
            for selector in selectors {
                let Ok(list) = api.list(&ListParams::default().labels(&selector)).await else {
                    continue;
                };
                for ti in list.items {
                    let name = kube::ResourceExt::name_any(&ti);
                    let strip = serde_json::json!({ "metadata": { "finalizers": null } });
                    let _ = api
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&strip))
                        .await;
                    let _ = api.delete(&name, &DeleteParams::default()).await;
                    let _ = namespaces
                        .delete(&format!("ti-{name}"), &DeleteParams::default())
                        .await;
                }
            }
        });
    })
    .join();
}

/// Deletes every TestInstallation matching any of `selectors` and waits
/// until they are gone (finalizers released by whoever holds them), then
/// checks that their `ti-<name>` namespaces went with them.
pub async fn delete_installations_and_wait(
    client: &Client,
    selectors: &[String],
    timeout: Duration,
) {
    use kube::{ResourceExt, api::ListParams};
    let api: Api<ephemera::api::TestInstallation> = Api::all(client.clone());
    let matching = || async {
        let mut all = Vec::new();
        for selector in selectors {
            let list = api
                .list(&ListParams::default().labels(selector))
                .await
                .unwrap_or_else(|err| panic!("listing installations {selector}: {err}"));
            all.extend(list.items);
        }
        all
    };
    let items = matching().await;
    for ti in &items {
        match api.delete(&ti.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(err) => panic!("deleting {}: {err}", ti.name_any()),
        }
    }
    wait_for("this test's installations to be gone", timeout, || async {
        let left: Vec<String> = matching()
            .await
            .iter()
            .map(|ti| {
                format!(
                    "{} finalizers={:?} phase={:?}",
                    ti.name_any(),
                    ti.finalizers(),
                    ti.phase()
                )
            })
            .collect();
        left.is_empty().then_some(()).ok_or(left)
    })
    .await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ti in &items {
        let ns = format!("ti-{}", ti.name_any());
        assert!(
            namespaces.get_opt(&ns).await.unwrap().is_none(),
            "namespace {ns} outlived its installation"
        );
    }
}

/// Waits (up to a minute) until the TestInstallation `name` passes `check`,
/// and returns it; on time-out the panic shows its last status.
pub async fn wait_until(
    client: &Client,
    name: &str,
    what: &str,
    check: impl Fn(&ephemera::api::TestInstallation) -> bool,
) -> ephemera::api::TestInstallation {
    let api: Api<ephemera::api::TestInstallation> = Api::all(client.clone());
    wait_for(
        &format!("{name}: {what}"),
        Duration::from_secs(60),
        || async {
            let ti = api.get(name).await.map_err(|e| e.to_string())?;
            if check(&ti) {
                Ok(ti)
            } else {
                Err(format!("{:#?}", ti.status))
            }
        },
    )
    .await
}
