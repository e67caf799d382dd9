//! `TestInstallation`: one throw-away installation of an application.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A throw-away installation of an application: its own namespace, database,
/// file store, app and ingress, deleted when it expires or is no longer needed.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "ephemera.dev",
    version = "v1alpha1",
    kind = "TestInstallation",
    shortname = "ti",
    shortname = "testinst",
    category = "ephemera",
    status = "TestInstallationStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A throw-away installation of an application, with its own namespace, database, file store and ingress.",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.version"}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.url"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".status.expiresAt"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Links","type":"string","priority":1,"jsonPath":".status.links[*].url"}"#,
    validation = Rule::new("self.metadata.name.size() <= 40 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be a DNS label of at most 40 characters: lowercase letters, digits and '-', starting with a letter and ending with a letter or digit (it names the namespace and the host of the installation)")
        .reason(Reason::FieldValueInvalid)
)]
#[x_kube(validation = Rule::new("!has(self.upgradeFrom) || !has(self.version) || self.upgradeFrom != self.version")
    .message("upgradeFrom must differ from version: an upgrade test starts on upgradeFrom and then rolls to version"))]
#[x_kube(validation = Rule::new("(has(self.database) && has(self.database.engine)) == (has(oldSelf.database) && has(oldSelf.database.engine)) && (!(has(self.database) && has(self.database.engine)) || self.database.engine == oldSelf.database.engine)")
    .message("database.engine cannot be set, changed or removed after creation: the data of one engine cannot be carried over to another; create a new installation instead"))]
#[serde(rename_all = "camelCase")]
pub struct TestInstallationSpec {
    /// Name of the InstallationProfile (the app template). Defaults to the
    /// profile named `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub profile: Option<String>,

    /// Image repository without tag or digest; defaults to the profile's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]+([._-]+[a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*$')")
        .message("image must be an image repository without tag or digest, like ghcr.io/org/app; put the tag or digest in version"))]
    pub image: Option<String>,

    /// Image tag or digest (`sha256:...`) to run; defaults to the profile's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$') || self.matches('^sha256:[a-f0-9]{64}$')")
        .message("version must be an image tag (letters, digits, '_', '.', '-', at most 128) or a digest sha256:<64 hex digits>"))]
    pub version: Option<String>,

    /// Start on this version, become Ready, then roll to `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$') || self.matches('^sha256:[a-f0-9]{64}$')")
        .message("upgradeFrom must be an image tag (letters, digits, '_', '.', '-', at most 128) or a digest sha256:<64 hex digits>"))]
    pub upgrade_from: Option<String>,

    /// Size class from the profile (built-ins: `miniSingleton`, `miniHA`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub size: Option<String>,

    /// App replicas; overrides the size class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub replicas: Option<i32>,

    /// App container resources; override the size class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,

    /// The database; defaults come from the profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseSpec>,

    /// The file store; defaults come from the profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filestore: Option<FilestoreSpec>,

    /// Run the profile's seed command as a Job once the app is Ready.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub test_data: bool,

    /// Extra environment for the app: values, or references to Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(e, self.exists_one(f, f.name == e.name))")
        .message("env names must be unique"))]
    pub env: Vec<EnvVar>,

    /// Lifetime from creation, like `90m`, `48h` or `7d`; raise it to extend.
    /// Defaults to the profile's default ttl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+[smhd])+$') && !self.matches('^(0+[smhd])+$')")
        .message("ttl must be a duration like 90m, 48h or 7d (units s, m, h, d) and longer than zero"))]
    pub ttl: Option<String>,

    /// Scale everything to zero and keep the data.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hibernate: bool,

    /// Refuse deletion (by people and by expiry) while true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deletion_locked: bool,

    /// Set to a new value (by convention the current time, RFC 3339) to
    /// restart the app: it becomes an annotation of the app's pod template,
    /// so the Deployment rolls its pods one by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub restarted_at: Option<String>,

    /// People besides the requester who may manage this installation from
    /// chat or GitHub (adapter user ids, like the requester label).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(inner(length(min = 1, max = 128)))]
    pub shared_with: Vec<String>,
}

/// The database of an installation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("has(self.engine) && self.engine == 'external' ? has(self.secretRef) : !has(self.secretRef)")
    .message("database.secretRef is required when engine is external, and only allowed then"))]
#[x_kube(validation = Rule::new("!has(self.storageSize) || (has(self.storage) && self.storage == 'persistent')")
    .message("database.storageSize is only allowed with storage: persistent"))]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<DatabaseEngine>,
    /// Database server version (image tag), e.g. `16` for postgres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_][A-Za-z0-9_.-]*$')")
        .message("database.version must be an image tag such as 16 or 8.4"))]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<DatabaseStorage>,
    /// Volume size for `storage: persistent`, e.g. `5Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+(Mi|Gi|Ti)$')")
        .message("database.storageSize must be a size like 512Mi or 5Gi"))]
    pub storage_size: Option<String>,
    /// Connection settings of an `external` database: a Secret with keys
    /// `url` (and optionally `host`, `port`, `user`, `password`, `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseEngine {
    Postgres,
    Mysql,
    External,
    None,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseStorage {
    /// Data lives as long as the database pod (emptyDir).
    Ephemeral,
    /// Data lives on a PersistentVolumeClaim.
    Persistent,
}

/// The file store of an installation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("has(self.type) && self.type == 's3' ? has(self.secretRef) : !has(self.secretRef)")
    .message("filestore.secretRef is required when type is s3, and only allowed then"))]
#[serde(rename_all = "camelCase")]
pub struct FilestoreSpec {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<FilestoreType>,
    /// S3 settings for `type: s3`: a Secret with keys `endpoint`, `bucket`,
    /// `accessKey`, `secretKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum FilestoreType {
    /// A volume mounted into the app.
    Local,
    /// A MinIO server inside the installation.
    Minio,
    /// An external S3 bucket.
    S3,
    None,
}

/// A Secret in one of the namespaces the controller is allowed to read
/// references from (its `allowedSecretNamespaces` setting).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
}

/// One environment variable of the app.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("has(self.value) != has(self.valueFrom)")
    .message("each env entry needs exactly one of value or valueFrom"))]
#[x_kube(validation = Rule::new("!has(self.value) || !self.name.upperAscii().matches('(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|CREDENTIAL)')")
    .message("this env name looks like a secret: put the value in a Secret and use valueFrom.secretKeyRef instead of a literal value"))]
#[x_kube(validation = Rule::new("!has(self.value) || !self.value.matches('(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|xox[abposr]-[A-Za-z0-9-]{10,}|glpat-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|sk_live_[A-Za-z0-9]{16,}|-----BEGIN [A-Z ]*PRIVATE KEY|eyJ[A-Za-z0-9_-]{10,}[.]eyJ[A-Za-z0-9_-]{10,}[.])')")
    .message("this env value looks like a secret (a token, key or JWT): put it in a Secret and use valueFrom.secretKeyRef instead of a literal value"))]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_]*$')")
        .message("env names must start with a letter or '_' and contain only letters, digits and '_'"))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    pub secret_key_ref: SecretKeyRef,
}

/// A key of a Secret in one of the namespaces the controller may read from.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Observed state, written only by the controller. kstatus-compatible.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TestInstallationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One human sentence about the current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The version that runs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Where the generated credentials are; never the values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<CredentialsSecretRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// The lifetime promised to this installation, fixed when it was first
    /// admitted (its `spec.ttl`, else the profile's default then). It changes
    /// only when `spec.ttl` does; profile edits never move it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// The profile's links rendered for this installation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<super::run::Link>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    pub namespace: String,
    pub name: String,
}

#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum Phase {
    Pending,
    Provisioning,
    Upgrading,
    Ready,
    Hibernated,
    Failed,
    Terminating,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Provisioning => "Provisioning",
            Phase::Upgrading => "Upgrading",
            Phase::Ready => "Ready",
            Phase::Hibernated => "Hibernated",
            Phase::Failed => "Failed",
            Phase::Terminating => "Terminating",
        }
    }

    pub const ALL: [Phase; 7] = [
        Phase::Pending,
        Phase::Provisioning,
        Phase::Upgrading,
        Phase::Ready,
        Phase::Hibernated,
        Phase::Failed,
        Phase::Terminating,
    ];
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TestInstallation {
    /// The condition of the given type, if the controller has set it.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
    }

    pub fn phase(&self) -> Option<Phase> {
        self.status.as_ref()?.phase
    }
}
