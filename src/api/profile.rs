//! `InstallationProfile`: what a team's application needs, the template every
//! TestInstallation of that application is built from.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::installation::{DatabaseEngine, DatabaseStorage, FilestoreType, SecretKeyRef};
use super::run::{ProfileLink, ProfileRun};

/// The application template that TestInstallations are built from: image,
/// port, health check, environment templates, database and file store
/// defaults, seed command, size classes, lifetimes and ingress settings.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "ephemera.dev",
    version = "v1alpha1",
    kind = "InstallationProfile",
    shortname = "tiprofile",
    category = "ephemera",
    derive = "PartialEq",
    derive = "Default",
    doc = "The application template that TestInstallations are built from.",
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".spec.image"}"#,
    printcolumn = r#"{"name":"Default-Version","type":"string","jsonPath":".spec.defaultVersion"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct InstallationProfileSpec {
    /// Image repository of the app, without tag.
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]+([._-]+[a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*$')")
        .message("image must be an image repository without tag or digest, like ghcr.io/org/app"))]
    pub image: String,

    /// Version (tag or digest) used when an installation names none.
    #[schemars(length(min = 1, max = 128))]
    pub default_version: String,

    /// Port the app listens on.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub container_port: i32,

    /// HTTP path answering 200 when the app is ready (readiness probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("healthPath must start with '/'"))]
    pub health_path: Option<String>,

    /// Overrides the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,

    /// Whether the image runs as a non-root user (default true). Set false
    /// for images that must start as root; they still drop capabilities.
    #[serde(default = "default_true")]
    pub run_as_non_root: bool,

    /// Environment for the app. Values are templates that may use
    /// `{{ name }}`, `{{ namespace }}`, `{{ url }}`, `{{ host }}`,
    /// `{{ serviceUrl }}` (the app inside the cluster), `{{ version }}`,
    /// `{{ database.url }}`, `{{ database.host }}`, `{{ database.port }}`,
    /// `{{ database.user }}`, `{{ database.password }}`, `{{ database.name }}`,
    /// `{{ database.engine }}`, `{{ filestore.endpoint }}`,
    /// `{{ filestore.bucket }}`, `{{ filestore.accessKey }}`,
    /// `{{ filestore.secretKey }}`, `{{ filestore.path }}`,
    /// `{{ credentials.adminUser }}`, `{{ credentials.adminPassword }}`,
    /// `{{ credentials.user }}`, `{{ credentials.userPassword }}`.
    /// The rendered values are stored in a Secret, never in the Deployment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub env: Vec<ProfileEnvVar>,

    #[serde(default)]
    pub database: ProfileDatabase,

    #[serde(default)]
    pub filestore: ProfileFilestore,

    /// Command run as a Job to load test data when `testData` is requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<SeedSpec>,

    /// Size classes by name. `miniSingleton` and `miniHA` exist even when not
    /// listed; listing them here overrides the built-ins.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sizes: BTreeMap<String, SizeClass>,

    /// Size used when an installation names none (default `miniSingleton`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_size: Option<String>,

    #[serde(default)]
    pub ttl: ProfileTtl,

    #[serde(default)]
    pub ingress: ProfileIngress,

    /// Image repositories that installations of this profile may ask for in
    /// `spec.image` (chat `--image`, a GitHub adapter's image template, or
    /// kubectl), as patterns: `*` matches within one path segment, `**`
    /// across segments, e.g. `ghcr.io/acme/*`. The profile's own `image` is
    /// always allowed. Empty: only the profile's own image; `**` allows
    /// every image (docs/security.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(inner(
        length(min = 1, max = 255),
        regex(
            pattern = r"^[a-z0-9*]+([._*-]+[a-z0-9*]+)*(:[0-9]+)?(/[a-z0-9*]+([._*-]+[a-z0-9*]+)*)*$"
        )
    ))]
    pub allowed_images: Vec<String>,

    /// Secrets that installations of this profile may reference from their
    /// own spec (env `valueFrom`, an external database, an s3 file store),
    /// as `namespace/name`; the namespace must also be one of the
    /// controller's shared-secrets namespaces. Empty: none. The profile's
    /// own `env` may reference any Secret in those namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(inner(
        length(min = 3, max = 317),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")
    ))]
    pub shared_secrets: Vec<String>,

    /// Test suites people can run against an installation
    /// (`/testenv test NAME SUITE`, `/e2e-test SUITE`, or a TestRun).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(t, self.exists_one(u, u.name == t.name))")
        .message("test names must be unique"))]
    pub tests: Vec<ProfileRun>,

    /// Predefined operations with typed parameters
    /// (`/testenv run NAME ACTION --param value`, or a TestRun).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b.name == a.name))")
        .message("action names must be unique"))]
    pub actions: Vec<ProfileRun>,

    /// Links shown with every installation (logs, dashboards), rendered into
    /// its status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(l, self.exists_one(m, m.name == l.name))")
        .message("link names must be unique"))]
    pub links: Vec<ProfileLink>,
}

fn default_port() -> i32 {
    8080
}

fn default_true() -> bool {
    true
}

/// An environment variable template of the profile.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("has(self.value) != has(self.secretKeyRef)")
    .message("each env entry needs exactly one of value or secretKeyRef"))]
#[serde(rename_all = "camelCase")]
pub struct ProfileEnvVar {
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_]*$')")
        .message("env names must start with a letter or '_' and contain only letters, digits and '_'"))]
    pub name: String,
    /// A template, see `env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProfileDatabase {
    #[serde(default = "default_engine")]
    pub engine: DatabaseEngine,
    /// Server version (image tag); defaults per engine (postgres 16, mysql 8.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default = "default_storage")]
    pub storage: DatabaseStorage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_size: Option<String>,
    /// Database name created for the app.
    #[serde(default = "default_db_name")]
    pub name: String,
}

impl Default for ProfileDatabase {
    fn default() -> Self {
        Self {
            engine: default_engine(),
            version: None,
            storage: default_storage(),
            storage_size: None,
            name: default_db_name(),
        }
    }
}

fn default_engine() -> DatabaseEngine {
    DatabaseEngine::Postgres
}
fn default_storage() -> DatabaseStorage {
    DatabaseStorage::Ephemeral
}
fn default_db_name() -> String {
    "app".into()
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProfileFilestore {
    #[serde(rename = "type", default = "default_filestore")]
    pub kind: FilestoreType,
    /// Where a `local` file store is mounted in the app (default `/data`).
    #[serde(default = "default_mount")]
    pub mount_path: String,
    /// Bucket created in a `minio` file store (default `app`).
    #[serde(default = "default_bucket")]
    pub bucket: String,
}

impl Default for ProfileFilestore {
    fn default() -> Self {
        Self {
            kind: default_filestore(),
            mount_path: default_mount(),
            bucket: default_bucket(),
        }
    }
}

fn default_filestore() -> FilestoreType {
    FilestoreType::Local
}
fn default_mount() -> String {
    "/data".into()
}
fn default_bucket() -> String {
    "app".into()
}

/// The seed Job's command; it runs in the app image (or `image`) with the
/// app's environment.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SeedSpec {
    #[schemars(length(min = 1))]
    pub command: Vec<String>,
    /// Image (with tag) to run the command in; defaults to the app's image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Retries before the seed is reported failed (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub backoff_limit: Option<i32>,
}

/// Replicas and resources of each part for one size.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SizeClass {
    #[schemars(range(min = 1, max = 10))]
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filestore: Option<ResourceRequirements>,
}

/// Lifetimes of installations of this profile.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProfileTtl {
    /// Lifetime when an installation names none (default `48h`).
    #[serde(default = "default_ttl")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+[smhd])+$')").message("ttl.default must be a duration like 48h"))]
    pub default: String,
    /// Longest lifetime an installation may ask for (default `7d`).
    #[serde(default = "default_max_ttl")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+[smhd])+$')").message("ttl.max must be a duration like 7d"))]
    pub max: String,
}

impl Default for ProfileTtl {
    fn default() -> Self {
        Self {
            default: default_ttl(),
            max: default_max_ttl(),
        }
    }
}

fn default_ttl() -> String {
    "48h".into()
}
fn default_max_ttl() -> String {
    "7d".into()
}

/// Ingress settings added to the controller's own.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProfileIngress {
    /// IngressClass; defaults to the controller's setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Extra annotations on the Ingress (e.g. body size limits).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}
