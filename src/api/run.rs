//! `TestRun`: one run of a profile's test suite or action against one
//! installation, and the profile's declarations of those suites and actions.
//!
//! One kind serves both: a suite and an action are both "a container with a
//! fixed command, run once against an installation, with a result"; they
//! differ only in who may start them, whether they take parameters and what
//! their result means to people. A TestRun is cluster-scoped like the
//! TestInstallation it targets and owned by it, so the garbage collector
//! deletes runs with their installation, adapters need no rights inside
//! installation namespaces, and a GitOps tool can apply one next to the
//! installation it belongs to. The controller turns a run into a Job in the
//! installation's namespace; the Job's container reports its result through
//! its termination message, so nothing needs log access.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::installation::SecretKeyRef;

/// Starts a profile's test suite (`test`) or action (`action`) against an
/// installation. Everything but `cancelled` is fixed at creation.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "ephemera.dev",
    version = "v1alpha1",
    kind = "TestRun",
    shortname = "tr",
    category = "ephemera",
    status = "TestRunStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "One run of a profile's test suite or action against a TestInstallation.",
    printcolumn = r#"{"name":"Installation","type":"string","jsonPath":".spec.installation"}"#,
    printcolumn = r#"{"name":"Test","type":"string","jsonPath":".spec.test"}"#,
    printcolumn = r#"{"name":"Action","type":"string","jsonPath":".spec.action"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Summary","type":"string","jsonPath":".status.message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.size() <= 63")
        .message("metadata.name must be at most 63 characters: it names the run's Job")
        .reason(Reason::FieldValueInvalid)
)]
#[x_kube(validation = Rule::new("has(self.test) != has(self.action)")
    .message("a run names exactly one of test (a suite) or action"))]
#[x_kube(validation = Rule::new("!has(self.test) || !has(self.parameters) || size(self.parameters) == 0")
    .message("parameters are only for actions; test suites take none"))]
#[x_kube(validation = Rule::new("self.installation == oldSelf.installation && has(self.test) == has(oldSelf.test) && (!has(self.test) || self.test == oldSelf.test) && has(self.action) == has(oldSelf.action) && (!has(self.action) || self.action == oldSelf.action) && has(self.parameters) == has(oldSelf.parameters) && (!has(self.parameters) || self.parameters == oldSelf.parameters)")
    .message("a run cannot be changed after it was created, only cancelled: create a new run instead"))]
#[x_kube(validation = Rule::new("!(has(oldSelf.cancelled) && oldSelf.cancelled) || (has(self.cancelled) && self.cancelled)")
    .message("a cancelled run cannot be resumed: create a new run instead"))]
#[serde(rename_all = "camelCase")]
pub struct TestRunSpec {
    /// Name of the TestInstallation to run against.
    #[schemars(length(min = 1, max = 40))]
    pub installation: String,

    /// Name of a suite in the installation's profile (`spec.tests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub test: Option<String>,

    /// Name of an action in the installation's profile (`spec.actions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub action: Option<String>,

    /// The action's parameters by name, as text; the controller checks each
    /// against the action's declared type before anything runs.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub parameters: BTreeMap<String, String>,

    /// Set to stop the run: its Job is deleted and the run ends `Cancelled`.
    #[serde(default)]
    pub cancelled: bool,
}

/// What happened to a run. Written only by the controller.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TestRunStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RunPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One human sentence: the result, or why the run did not start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Why the run ended as it did, one word (`Completed`, `TestsFailed`,
    /// `Timeout`, `Superseded`, `CancelledByUser`, `InvalidParameters`,
    /// `UnknownTest`, `InstallationNotReady`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The Job that runs it, in `namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Counts the container reported, when it reported any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<RunSummary>,
    /// The end of what the container reported, size-bounded, with every
    /// credential of the installation replaced by `[redacted]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Whether the run was given only read-only credentials.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// The newer run of the same suite that replaced this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
}

/// Test counts reported by a suite.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub passed: i32,
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub failed: i32,
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub skipped: i32,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunPhase {
    /// Accepted, waiting for its installation or its Job's pod.
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            RunPhase::Pending => "Pending",
            RunPhase::Running => "Running",
            RunPhase::Succeeded => "Succeeded",
            RunPhase::Failed => "Failed",
            RunPhase::Cancelled => "Cancelled",
        }
    }

    /// Whether the run has ended and will not change again.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunPhase::Succeeded | RunPhase::Failed | RunPhase::Cancelled
        )
    }
}

impl std::fmt::Display for RunPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TestRun {
    pub fn phase(&self) -> Option<RunPhase> {
        self.status.as_ref()?.phase
    }

    /// The suite or action this run starts.
    pub fn target(&self) -> RunTarget<'_> {
        match (&self.spec.test, &self.spec.action) {
            (Some(test), _) => RunTarget::Test(test),
            (None, Some(action)) => RunTarget::Action(action),
            (None, None) => RunTarget::Test(""),
        }
    }
}

/// A run's suite or action by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunTarget<'a> {
    Test(&'a str),
    Action(&'a str),
}

/// A suite (`spec.tests`) or an action (`spec.actions`) of a profile: a
/// container image with a fixed command, run as a Job against one
/// installation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.parameters) || self.parameters.all(p, self.parameters.exists_one(q, q.name == p.name))")
    .message("parameter names must be unique within a test or action"))]
#[x_kube(validation = Rule::new("!has(self.env) || self.env.all(e, self.env.exists_one(f, f.name == e.name))")
    .message("env names must be unique within a test or action"))]
#[serde(rename_all = "camelCase")]
pub struct ProfileRun {
    /// The name people type (`/testenv test demo42 e2e`).
    #[schemars(length(min = 1, max = 40))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("test and action names must be lowercase letters, digits and '-', starting with a letter"))]
    pub name: String,

    /// One line shown by `/testenv actions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub description: Option<String>,

    /// Image with tag or digest, e.g. `ghcr.io/acme/e2e:1.4`; defaults to the
    /// installation's own app image and version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 400))]
    pub image: Option<String>,

    /// The container's command and arguments, each one argument as is (no
    /// shell). Arguments may use the installation's non-secret values
    /// (`{{ name }}`, `{{ namespace }}`, `{{ url }}`, `{{ host }}`,
    /// `{{ serviceUrl }}`, `{{ version }}`) and, in actions, the run's
    /// parameters as `{{ params.NAME }}`; a template fills one argument and
    /// can never split it or start a shell.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub args: Vec<String>,

    /// Environment of the container. Credentials come only by reference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub env: Vec<RunEnvVar>,

    /// Longest run time, like `10m` (default `30m` for tests, `5m` for
    /// actions); the Job is stopped and the run fails with `Timeout` after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+[smhd])+$') && !self.matches('^(0+[smhd])+$')")
        .message("timeout must be a duration like 90s, 10m or 1h and longer than zero"))]
    pub timeout: Option<String>,

    /// Who may start it through the adapters (default `requester`: the
    /// person who asked for the installation, the people it is shared with,
    /// and admins). Runs created with kubectl are governed by RBAC.
    #[serde(default)]
    pub startable_by: StartableBy,

    /// The operation must not change the installation's data: the run gets
    /// no write credentials (only the regular user's name and password and
    /// the installation's URLs), and its Job no service account token.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,

    /// Typed parameters of an action, checked before anything runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub parameters: Vec<RunParameter>,
}

/// Who may start a suite or an action from chat or a pull request.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum StartableBy {
    /// The installation's requester, the people it is shared with, admins.
    #[default]
    Requester,
    /// Only the adapters' admins.
    Admins,
    /// Anyone who may use the adapter (on GitHub: anyone with write access).
    Anyone,
}

/// One environment variable of a run: a template of the installation's
/// non-secret values, one of its credentials, or a shared Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("(has(self.value) ? 1 : 0) + (has(self.credential) ? 1 : 0) + (has(self.secretKeyRef) ? 1 : 0) == 1")
    .message("each env entry of a test or action needs exactly one of value, credential or secretKeyRef"))]
#[serde(rename_all = "camelCase")]
pub struct RunEnvVar {
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_]*$')")
        .message("env names must start with a letter or '_' and contain only letters, digits and '_'"))]
    pub name: String,
    /// A template of non-secret values (see `args`), or a literal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub value: Option<String>,
    /// One of the installation's credentials, passed by Secret reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<RunCredential>,
    /// A key of a Secret the profile may reference (`sharedSecrets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

/// The installation credentials a run may receive (always as a
/// `secretKeyRef` to the installation's own Secrets, never as a literal).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum RunCredential {
    AdminUser,
    AdminPassword,
    User,
    UserPassword,
    DatabaseUrl,
    DatabasePassword,
    FilestoreAccessKey,
    FilestoreSecretKey,
}

impl RunCredential {
    /// Whether a read-only run may receive it: the regular user's name and
    /// password (whatever that user can change, the app must refuse to
    /// read-only tooling too) and the admin's user name.
    pub fn is_read_only(self) -> bool {
        matches!(
            self,
            RunCredential::User | RunCredential::UserPassword | RunCredential::AdminUser
        )
    }
}

/// A typed parameter of an action.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("self.type != 'enum' || (has(self.values) && size(self.values) > 0)")
    .message("an enum parameter needs values"))]
#[x_kube(validation = Rule::new("self.type != 'string' || has(self.pattern)")
    .message("a string parameter needs a pattern that every value must match"))]
#[x_kube(validation = Rule::new("self.type == 'integer' || (!has(self.minimum) && !has(self.maximum))")
    .message("minimum and maximum are only for integer parameters"))]
#[serde(rename_all = "camelCase")]
pub struct RunParameter {
    /// The name used in `--NAME value` and `{{ params.NAME }}`.
    #[schemars(length(min = 1, max = 40))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z][a-z0-9-]*$')")
        .message("parameter names must be lowercase letters, digits and '-', starting with a letter"))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub kind: ParameterType,
    /// The allowed values of an `enum` parameter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub values: Vec<String>,
    /// Bounds of an `integer` parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<i64>,
    /// A regular expression every value of a `string` parameter must match
    /// as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub pattern: Option<String>,
    /// Used when the run does not give the parameter; without a default
    /// the parameter is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub default: Option<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ParameterType {
    #[default]
    String,
    Integer,
    Enum,
}

/// A link shown with an installation (logs, dashboards): a URL template
/// that may use `{{ name }}`, `{{ namespace }}`, `{{ host }}` and
/// `{{ url }}`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProfileLink {
    #[schemars(length(min = 1, max = 40))]
    pub name: String,
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')")
        .message("link urls must start with https:// or http://"))]
    pub url: String,
}

/// A rendered profile link, in an installation's status.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub url: String,
}

/// The most a container may report: Kubernetes keeps at most 4096 bytes of
/// a termination message.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// What a run's container writes to `/dev/termination-log` to report its
/// result, as JSON; any other text is taken as `output` alone.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TerminationReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<RunSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}
