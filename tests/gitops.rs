//! GitOps tools read TestInstallations right: installations in each phase,
//! taken from the real API server, are judged by the real kstatus library
//! (sigs.k8s.io/cli-utils, what Flux and kpt use; built by
//! hack/kstatus/build.sh) and by the Argo CD health check we ship
//! (examples/gitops/argocd-health.lua, run by a real Lua 5.1 interpreter as
//! Argo CD's gopher-lua runs it), and `kubectl wait` returns for each
//! settled installation.

mod support;

use std::process::Stdio;

use ephemera::api::{InstallationProfile, InstallationProfileSpec, Phase, TestInstallation};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, PostParams},
};
use serde_json::{Value, json};
use support::{TEST_RUN_LABEL, client, controller_for_this_binary, unique_name, wait_until};
use tokio::io::AsyncWriteExt;

const HEALTH_LUA: &str = include_str!("../examples/gitops/argocd-health.lua");
const GITOPS_DOC: &str = include_str!("../docs/gitops.md");

async fn create(client: &Client, prefix: &str, spec: Value) -> String {
    let run = controller_for_this_binary();
    let name = unique_name(prefix);
    let mut ti = TestInstallation::new(&name, serde_json::from_value(spec).unwrap());
    ti.labels_mut().insert(TEST_RUN_LABEL.into(), run.into());
    Api::<TestInstallation>::all(client.clone())
        .create(&PostParams::default(), &ti)
        .await
        .unwrap_or_else(|err| panic!("creating {name}: {err}"));
    name
}

fn condition_is(ti: &TestInstallation, type_: &str, status: &str) -> bool {
    ti.condition(type_).is_some_and(|c| c.status == status)
}

/// The object as the API server returns it, as JSON.
async fn fetch(client: &Client, name: &str) -> Value {
    let ti = Api::<TestInstallation>::all(client.clone())
        .get(name)
        .await
        .unwrap();
    serde_json::to_value(&ti).unwrap()
}

/// kstatus' verdict on `object`: "Current", "InProgress", "Failed", ...
async fn kstatus(object: &Value) -> String {
    let build = tokio::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/hack/kstatus/build.sh"
    ))
    .stderr(Stdio::inherit())
    .output()
    .await
    .expect("running hack/kstatus/build.sh");
    assert!(build.status.success(), "building the kstatus helper failed");
    let binary = String::from_utf8(build.stdout).unwrap().trim().to_string();
    let mut child = tokio::process::Command::new(&binary)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("running {binary}: {err}"));
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(object.to_string().as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "kstatus: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = String::from_utf8(output.stdout).unwrap();
    line.split('\t').next().unwrap().trim().to_string()
}

/// A Lua table constructor for a JSON value.
fn lua_value(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => format!(
            "{{{}}}",
            items.iter().map(lua_value).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(fields) => format!(
            "{{{}}}",
            fields
                .iter()
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The Argo CD health status the shipped Lua gives `object`. As in Argo CD,
/// the script sees the object as the global `obj` and returns a table.
async fn argocd_health(object: &Value) -> String {
    let program = format!(
        "obj = {}\nlocal function health()\n{HEALTH_LUA}\nend\nlocal hs = health()\nio.write(hs.status)\n",
        lua_value(object)
    );
    let output = tokio::process::Command::new("lua5.1")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(|mut child| {
            let mut stdin = child.stdin.take().unwrap();
            let program = program.clone();
            tokio::spawn(async move {
                stdin.write_all(program.as_bytes()).await.unwrap();
            });
            child
        })
        .expect("running lua5.1 (apt-get install lua5.1; .ci/run installs it)")
        .wait_with_output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "lua5.1: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn kstatus_and_the_argocd_health_check_read_every_phase_right() {
    let client = client().await;
    controller_for_this_binary();
    let profile = unique_name("gitops");
    let spec: InstallationProfileSpec = serde_json::from_value(json!({
        "image": "registry.example/team/app",
        "allowedImages": ["missing.invalid/**"],
        "defaultVersion": "1.0.0"
    }))
    .unwrap();
    Api::<InstallationProfile>::all(client.clone())
        .create(
            &PostParams::default(),
            &InstallationProfile::new(&profile, spec),
        )
        .await
        .unwrap();

    let ready = create(&client, "g-ready", json!({ "profile": profile })).await;
    let hibernated = create(
        &client,
        "g-hib",
        json!({ "profile": profile, "hibernate": true }),
    )
    .await;
    // Pods of the tag never-ready run but never become ready.
    let provisioning = create(
        &client,
        "g-prov",
        json!({ "profile": profile, "version": "never-ready" }),
    )
    .await;
    let stalled = create(
        &client,
        "g-stall",
        json!({ "profile": profile, "size": "huge" }),
    )
    .await;
    let pull_failed = create(
        &client,
        "g-pull",
        json!({ "profile": profile, "image": "missing.invalid/app" }),
    )
    .await;

    let cases = [
        (&ready, Phase::Ready, "Current", "Healthy"),
        (&hibernated, Phase::Hibernated, "Current", "Suspended"),
        (
            &provisioning,
            Phase::Provisioning,
            "InProgress",
            "Progressing",
        ),
        (&stalled, Phase::Failed, "Failed", "Degraded"),
        (&pull_failed, Phase::Failed, "Failed", "Degraded"),
    ];
    for (name, phase, want_kstatus, want_health) in cases {
        wait_until(&client, name, &format!("{phase} and settled"), |ti| {
            ti.phase() == Some(phase)
                && ti.status.as_ref().and_then(|s| s.observed_generation) == ti.metadata.generation
                && (phase == Phase::Provisioning || condition_is(ti, "Reconciling", "False"))
        })
        .await;
        let object = fetch(&client, name).await;
        assert_eq!(
            kstatus(&object).await,
            want_kstatus,
            "kstatus of {name} in {phase}: {object:#}"
        );
        assert_eq!(
            argocd_health(&object).await,
            want_health,
            "Argo CD health of {name} in {phase}: {object:#}"
        );
    }

    // `kubectl wait --for=condition=Ready` returns for the settled ones,
    // hibernated included.
    for name in [&ready, &hibernated] {
        let output = support::kubectl(&[
            "wait",
            "--for=condition=Ready",
            "--timeout=10s",
            &format!("ti/{name}"),
        ])
        .await;
        assert!(
            output.status.success(),
            "kubectl wait on {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let api: Api<TestInstallation> = Api::all(client.clone());
    for name in [&ready, &hibernated, &provisioning, &stalled, &pull_failed] {
        let _ = api.delete(name, &DeleteParams::default()).await;
    }
}

#[tokio::test]
async fn health_check_for_objects_without_status_or_with_a_newer_spec() {
    let fresh = json!({ "metadata": { "name": "x", "generation": 1 } });
    assert_eq!(argocd_health(&fresh).await, "Progressing");
    let behind = json!({
        "metadata": { "name": "x", "generation": 2 },
        "status": { "phase": "Ready", "observedGeneration": 1 }
    });
    assert_eq!(argocd_health(&behind).await, "Progressing");
    let upgrading = json!({
        "metadata": { "name": "x", "generation": 1 },
        "status": { "phase": "Upgrading", "observedGeneration": 1 }
    });
    assert_eq!(argocd_health(&upgrading).await, "Progressing");
}

#[test]
fn the_docs_ship_the_same_health_check() {
    let indented: String = HEALTH_LUA
        .lines()
        .map(|line| {
            if line.is_empty() {
                "\n".to_string()
            } else {
                format!("    {line}\n")
            }
        })
        .collect();
    assert!(
        GITOPS_DOC.contains(&indented),
        "docs/gitops.md must hold examples/gitops/argocd-health.lua, indented by four spaces, in its resource.customizations snippet"
    );
}
