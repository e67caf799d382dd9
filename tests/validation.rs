//! Every CEL rule of the CRDs: the API server refuses a bad spec with that
//! rule's message, and the refused object does not exist afterwards.

mod support;

use ephemera::api::{InstallationProfile, TestInstallation};
use kube::{
    Api,
    api::{DynamicObject, PostParams},
};
use serde_json::{Value, json};
use support::{client, install_crds, unique_name};

/// Creates a TestInstallation from raw JSON (so specs the Rust types would
/// not even let us write can be sent) and returns the API server's message.
async fn refused_installation(name: &str, spec: Value) -> String {
    let client = client().await;
    install_crds(&client).await;
    let api: Api<TestInstallation> = Api::all(client.clone());
    let raw: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &kube::api::ApiResource::erase::<TestInstallation>(&()),
    );
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "ephemera.dev/v1alpha1",
        "kind": "TestInstallation",
        "metadata": { "name": name },
        "spec": spec
    }))
    .unwrap();
    let err = raw
        .create(&PostParams::default(), &object)
        .await
        .expect_err("the API server accepted an invalid TestInstallation");
    assert!(
        api.get_opt(name).await.unwrap().is_none(),
        "a refused object exists"
    );
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422, "{status:?}");
            status.message
        }
        other => panic!("unexpected error {other}"),
    }
}

async fn refused_profile(spec: Value) -> String {
    let client = client().await;
    install_crds(&client).await;
    let raw: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &kube::api::ApiResource::erase::<InstallationProfile>(&()),
    );
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "ephemera.dev/v1alpha1",
        "kind": "InstallationProfile",
        "metadata": { "name": unique_name("bad") },
        "spec": spec
    }))
    .unwrap();
    match raw.create(&PostParams::default(), &object).await {
        Err(kube::Error::Api(status)) if status.code == 422 => status.message,
        other => panic!("expected 422, got {other:?}"),
    }
}

fn assert_mentions(message: &str, expected: &str) {
    assert!(
        message.contains(expected),
        "expected {expected:?} in: {message}"
    );
}

#[tokio::test]
async fn name_must_be_a_short_dns_label() {
    let long = format!("a{}", "b".repeat(45));
    let msg = refused_installation(&long, json!({})).await;
    assert_mentions(
        &msg,
        "metadata.name must be a DNS label of at most 40 characters",
    );
    let msg = refused_installation("ends-with-dash-", json!({})).await;
    assert_mentions(&msg, "metadata.name must be a DNS label");
}

#[tokio::test]
async fn ttl_must_be_a_positive_duration() {
    for bad in ["48", "2 days", "0h", "1.5h"] {
        let msg = refused_installation(&unique_name("ttl"), json!({ "ttl": bad })).await;
        assert_mentions(&msg, "ttl must be a duration like 90m, 48h or 7d");
    }
}

#[tokio::test]
async fn image_and_versions_are_checked() {
    let msg = refused_installation(
        &unique_name("img"),
        json!({ "image": "ghcr.io/org/app:1.0" }),
    )
    .await;
    assert_mentions(
        &msg,
        "image must be an image repository without tag or digest",
    );
    let msg = refused_installation(&unique_name("ver"), json!({ "version": "has space" })).await;
    assert_mentions(&msg, "version must be an image tag");
    let msg = refused_installation(&unique_name("upf"), json!({ "upgradeFrom": "bad/tag" })).await;
    assert_mentions(&msg, "upgradeFrom must be an image tag");
    let msg = refused_installation(
        &unique_name("same"),
        json!({ "version": "1.0", "upgradeFrom": "1.0" }),
    )
    .await;
    assert_mentions(&msg, "upgradeFrom must differ from version");
}

#[tokio::test]
async fn enums_and_ranges_are_checked() {
    let msg = refused_installation(
        &unique_name("eng"),
        json!({ "database": { "engine": "oracle" } }),
    )
    .await;
    assert_mentions(&msg, "Unsupported value: \"oracle\"");
    let msg = refused_installation(
        &unique_name("fs"),
        json!({ "filestore": { "type": "nfs" } }),
    )
    .await;
    assert_mentions(&msg, "Unsupported value: \"nfs\"");
    let msg = refused_installation(&unique_name("rep"), json!({ "replicas": 50 })).await;
    assert_mentions(&msg, "should be less than or equal to 10");
}

#[tokio::test]
async fn database_rules() {
    let msg = refused_installation(
        &unique_name("ext"),
        json!({ "database": { "engine": "external" } }),
    )
    .await;
    assert_mentions(
        &msg,
        "database.secretRef is required when engine is external",
    );
    let msg = refused_installation(
        &unique_name("ref"),
        json!({ "database": { "engine": "postgres", "secretRef": { "name": "db", "namespace": "ephemera-system" } } }),
    )
    .await;
    assert_mentions(
        &msg,
        "database.secretRef is required when engine is external, and only allowed then",
    );
    let msg = refused_installation(
        &unique_name("size"),
        json!({ "database": { "storageSize": "5Gi" } }),
    )
    .await;
    assert_mentions(
        &msg,
        "database.storageSize is only allowed with storage: persistent",
    );
    let msg = refused_installation(
        &unique_name("sz"),
        json!({ "database": { "storage": "persistent", "storageSize": "lots" } }),
    )
    .await;
    assert_mentions(
        &msg,
        "database.storageSize must be a size like 512Mi or 5Gi",
    );
    let msg = refused_installation(
        &unique_name("dbv"),
        json!({ "database": { "version": "16 beta" } }),
    )
    .await;
    assert_mentions(&msg, "database.version must be an image tag");
}

#[tokio::test]
async fn filestore_rules() {
    let msg =
        refused_installation(&unique_name("s3"), json!({ "filestore": { "type": "s3" } })).await;
    assert_mentions(&msg, "filestore.secretRef is required when type is s3");
}

#[tokio::test]
async fn env_rules() {
    let msg = refused_installation(
        &unique_name("envn"),
        json!({ "env": [{ "name": "1BAD", "value": "x" }] }),
    )
    .await;
    assert_mentions(&msg, "env names must start with a letter or '_'");
    let msg = refused_installation(&unique_name("envb"), json!({ "env": [{ "name": "A" }] })).await;
    assert_mentions(
        &msg,
        "each env entry needs exactly one of value or valueFrom",
    );
    let msg = refused_installation(
        &unique_name("envs"),
        json!({ "env": [{ "name": "DB_PASSWORD", "value": "hunter2" }] }),
    )
    .await;
    assert_mentions(&msg, "this env name looks like a secret");
    assert!(
        !msg.contains("hunter2"),
        "the refusal echoes the secret: {msg}"
    );
    let msg = refused_installation(
        &unique_name("envd"),
        json!({ "env": [{ "name": "A", "value": "1" }, { "name": "A", "value": "2" }] }),
    )
    .await;
    assert_mentions(&msg, "env names must be unique");
}

#[tokio::test]
async fn profile_rules() {
    let msg =
        refused_profile(json!({ "image": "ghcr.io/org/app:latest", "defaultVersion": "1" })).await;
    assert_mentions(
        &msg,
        "image must be an image repository without tag or digest",
    );
    let msg =
        refused_profile(json!({ "image": "app", "defaultVersion": "1", "healthPath": "health" }))
            .await;
    assert_mentions(&msg, "healthPath must start with '/'");
    let msg = refused_profile(
        json!({ "image": "app", "defaultVersion": "1", "ttl": { "default": "forever" } }),
    )
    .await;
    assert_mentions(&msg, "ttl.default must be a duration like 48h");
    let msg = refused_profile(
        json!({ "image": "app", "defaultVersion": "1", "ttl": { "max": "1 week" } }),
    )
    .await;
    assert_mentions(&msg, "ttl.max must be a duration like 7d");
    let msg =
        refused_profile(json!({ "image": "app", "defaultVersion": "1", "env": [{ "name": "A" }] }))
            .await;
    assert_mentions(
        &msg,
        "each env entry needs exactly one of value or secretKeyRef",
    );
    let msg = refused_profile(
        json!({ "image": "app", "defaultVersion": "1", "env": [{ "name": "A-B", "value": "x" }] }),
    )
    .await;
    assert_mentions(&msg, "env names must start with a letter or '_'");
}

#[tokio::test]
async fn database_engine_cannot_change_after_creation() {
    let client = client().await;
    install_crds(&client).await;
    let api: Api<TestInstallation> = Api::all(client.clone());
    let message = "database.engine cannot be set, changed or removed after creation";
    let create = |name: String, spec: Value| {
        let api = api.clone();
        async move {
            let ti: TestInstallation = serde_json::from_value(json!({
                "apiVersion": "ephemera.dev/v1alpha1",
                "kind": "TestInstallation",
                "metadata": { "name": name },
                "spec": spec
            }))
            .unwrap();
            api.create(&PostParams::default(), &ti).await.unwrap();
            name
        }
    };
    let patch = |name: String, spec: Value| {
        let api = api.clone();
        async move {
            api.patch(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({ "spec": spec })),
            )
            .await
        }
    };
    let named = create(
        unique_name("engine"),
        json!({ "database": { "engine": "postgres" } }),
    )
    .await;
    let unnamed = create(unique_name("noengine"), json!({})).await;
    for (name, change) in [
        (&named, json!({ "database": { "engine": "mysql" } })),
        (&named, json!({ "database": null })),
        (&unnamed, json!({ "database": { "engine": "mysql" } })),
    ] {
        match patch(name.clone(), change.clone()).await {
            Err(kube::Error::Api(status)) if status.code == 422 => {
                assert_mentions(&status.message, message)
            }
            other => panic!("{change} on {name} was not refused: {other:?}"),
        }
    }
    // Everything else about the database may still change.
    patch(
        named.clone(),
        json!({ "database": { "storage": "persistent", "storageSize": "2Gi" } }),
    )
    .await
    .expect("a storage change is allowed (the controller recreates the database)");
    for name in [named, unnamed] {
        api.delete(&name, &kube::api::DeleteParams::default())
            .await
            .unwrap();
    }
}
