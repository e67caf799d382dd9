//! The Job of a run (pure): one container with the suite's or action's
//! fixed command, its arguments and env filled from the installation's
//! non-secret values and the run's checked parameters, credentials only by
//! reference to the installation's own Secrets.
//!
//! A template fills exactly one argv element or one env value: the command
//! is never given to a shell, so a parameter like `; rm -rf /` or `$(id)`
//! stays the literal text of one argument.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::ByteString;
use k8s_openapi::api::{
    batch::v1::{Job, JobSpec},
    core::v1::{
        Container, EnvVar, EnvVarSource, PodSpec, PodTemplateSpec, Secret, SecretKeySelector,
    },
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::api::{
    ProfileRun, RunCredential, TestRun, credentials, duration::parse_duration, labels,
};
use crate::controller::build::{app, secrets, security, template};
use crate::controller::plan::Plan;

/// Label on a run's Job and pod: the TestRun's name.
pub const RUN_LABEL: &str = labels::RUN;
/// The container of a run's pod.
pub const CONTAINER: &str = "run";
pub const COMPONENT: &str = "run";

pub const DEFAULT_TEST_TIMEOUT: &str = "30m";
pub const DEFAULT_ACTION_TIMEOUT: &str = "5m";

/// Why a run cannot be turned into a Job; each ends the run `Failed` with
/// its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("{what} {name}: {source}")]
    Template {
        what: &'static str,
        name: String,
        source: template::TemplateError,
    },
    #[error(
        "{name} is read-only but its env {env} asks for the write credential {credential:?}; read-only runs get only the regular user's login and the admin's user name"
    )]
    WriteCredential {
        name: String,
        env: String,
        credential: RunCredential,
    },
    #[error(
        "env {env} asks for {credential:?}, but this installation has none (no {secret} Secret)"
    )]
    CredentialUnavailable {
        env: String,
        credential: RunCredential,
        secret: &'static str,
    },
    #[error(
        "env {env} reads the Secret {secret}, outside the shared-secrets namespaces this controller allows ({allowed})"
    )]
    SecretNamespaceNotAllowed {
        env: String,
        secret: String,
        allowed: String,
    },
    #[error("env {env} reads key {key} of Secret {secret}, which does not exist")]
    SecretRefMissing {
        env: String,
        secret: String,
        key: String,
    },
    #[error("timeout {0:?} is not a duration like 90s, 10m or 1h")]
    Timeout(String),
}

impl JobError {
    /// The run's `status.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            JobError::Template { .. } => "TemplateInvalid",
            JobError::WriteCredential { .. } => "WriteCredentialInReadOnlyRun",
            JobError::CredentialUnavailable { .. } => "CredentialUnavailable",
            JobError::SecretNamespaceNotAllowed { .. } => "SecretNamespaceNotAllowed",
            JobError::SecretRefMissing { .. } => "SecretRefMissing",
            JobError::Timeout(_) => "TimeoutInvalid",
        }
    }
}

/// Whether a run is a test suite or an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunKind {
    Test,
    Action,
}

/// Everything a run's Job is built from.
pub struct JobInput<'a> {
    pub run: &'a TestRun,
    pub kind: RunKind,
    pub definition: &'a ProfileRun,
    /// The installation's plan (name, namespace, URLs, image).
    pub plan: &'a Plan,
    /// The version the installation runs now.
    pub version: &'a str,
    /// The run's parameters, checked and with defaults filled in.
    pub parameters: &'a BTreeMap<String, String>,
    /// Which of the installation's Secrets exist (`database`, `filestore`).
    pub has_database: bool,
    pub has_filestore: bool,
}

/// How long a run may take: its own `timeout`, else the default of its kind.
pub fn timeout(definition: &ProfileRun, kind: RunKind) -> Result<Duration, JobError> {
    let text = definition.timeout.as_deref().unwrap_or(match kind {
        RunKind::Test => DEFAULT_TEST_TIMEOUT,
        RunKind::Action => DEFAULT_ACTION_TIMEOUT,
    });
    parse_duration(text)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| JobError::Timeout(text.to_string()))
}

/// The values a run's templates may use: the installation's non-secret
/// values and `params.NAME` for each parameter.
pub fn template_values(input: &JobInput) -> BTreeMap<String, String> {
    let plan = input.plan;
    let mut values = BTreeMap::from([
        ("name".to_string(), plan.name.clone()),
        ("namespace".to_string(), plan.namespace.clone()),
        ("url".to_string(), plan.url.clone()),
        ("host".to_string(), plan.host.clone()),
        (
            "serviceUrl".to_string(),
            format!(
                "http://{}.{}.svc:{}",
                app::NAME,
                plan.namespace,
                app::SERVICE_PORT
            ),
        ),
        ("version".to_string(), input.version.to_string()),
    ]);
    for (name, value) in input.parameters {
        values.insert(format!("params.{name}"), value.clone());
    }
    values
}

/// The Secret and key holding `credential` in the installation's namespace.
pub fn credential_source(credential: RunCredential) -> (&'static str, &'static str) {
    match credential {
        RunCredential::AdminUser => (credentials::SECRET_NAME, credentials::ADMIN_USER),
        RunCredential::AdminPassword => (credentials::SECRET_NAME, credentials::ADMIN_PASSWORD),
        RunCredential::User => (credentials::SECRET_NAME, credentials::USER),
        RunCredential::UserPassword => (credentials::SECRET_NAME, credentials::USER_PASSWORD),
        RunCredential::DatabaseUrl => ("database", "url"),
        RunCredential::DatabasePassword => ("database", secrets::DATABASE_PASSWORD_KEY),
        RunCredential::FilestoreAccessKey => ("filestore", secrets::FILESTORE_ACCESS_KEY),
        RunCredential::FilestoreSecretKey => ("filestore", secrets::FILESTORE_SECRET_KEY),
    }
}

/// The container's env: literal or rendered values, credentials by
/// `secretKeyRef`. A read-only run never gets a write credential.
pub fn env(input: &JobInput, values: &BTreeMap<String, String>) -> Result<Vec<EnvVar>, JobError> {
    let definition = input.definition;
    definition
        .env
        .iter()
        .map(|entry| {
            if let Some(credential) = entry.credential {
                if definition.read_only && !credential.is_read_only() {
                    return Err(JobError::WriteCredential {
                        name: definition.name.clone(),
                        env: entry.name.clone(),
                        credential,
                    });
                }
                let (secret, key) = credential_source(credential);
                let present = match secret {
                    "database" => input.has_database,
                    "filestore" => input.has_filestore,
                    _ => true,
                };
                if !present {
                    return Err(JobError::CredentialUnavailable {
                        env: entry.name.clone(),
                        credential,
                        secret,
                    });
                }
                return Ok(EnvVar {
                    name: entry.name.clone(),
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: secret.into(),
                            key: key.into(),
                            optional: Some(false),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
            if entry.secret_key_ref.is_some() {
                // Copied into the run's own Secret (see `shared_values`):
                // a pod reads Secrets of its own namespace only.
                return Ok(EnvVar {
                    name: entry.name.clone(),
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: input.run.metadata.name.clone().unwrap_or_default(),
                            key: entry.name.clone(),
                            optional: Some(false),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
            let value = template::render(entry.value.as_deref().unwrap_or_default(), values)
                .map_err(|source| JobError::Template {
                    what: "env",
                    name: entry.name.clone(),
                    source,
                })?;
            Ok(EnvVar {
                name: entry.name.clone(),
                value: Some(value),
                ..Default::default()
            })
        })
        .collect()
}

/// The values of the env entries that read a shared Secret, by env name,
/// looked up by `lookup(namespace, name, key)`; only Secrets in `allowed`
/// namespaces are read.
pub fn shared_values(
    definition: &ProfileRun,
    allowed: &[String],
    lookup: impl Fn(&str, &str, &str) -> Option<String>,
) -> Result<BTreeMap<String, String>, JobError> {
    let mut values = BTreeMap::new();
    for entry in &definition.env {
        let Some(r) = &entry.secret_key_ref else {
            continue;
        };
        let secret = format!("{}/{}", r.namespace, r.name);
        if !allowed.contains(&r.namespace) {
            return Err(JobError::SecretNamespaceNotAllowed {
                env: entry.name.clone(),
                secret,
                allowed: allowed.join(", "),
            });
        }
        let value =
            lookup(&r.namespace, &r.name, &r.key).ok_or_else(|| JobError::SecretRefMissing {
                env: entry.name.clone(),
                secret,
                key: r.key.clone(),
            })?;
        values.insert(entry.name.clone(), value);
    }
    Ok(values)
}

/// The run's own Secret with the shared values its env reads, named like
/// the run and owned by it.
pub fn env_secret(
    run: &str,
    installation: &str,
    namespace: &str,
    values: &BTreeMap<String, String>,
    owner: OwnerReference,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(run.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(job_labels(run, installation)),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            values
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// Renders each element of `list` on its own: one template, one argument.
fn render_each(
    what: &'static str,
    list: &[String],
    values: &BTreeMap<String, String>,
) -> Result<Option<Vec<String>>, JobError> {
    if list.is_empty() {
        return Ok(None);
    }
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            template::render(t, values).map_err(|source| JobError::Template {
                what,
                name: format!("element {}", i + 1),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The labels of a run's Job and pod. No `managed-by`: the installation's
/// pruning (which selects on it) must never touch a run's Job.
pub fn job_labels(run: &str, installation: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            labels::INSTALLATION.to_string(),
            labels::label_value(installation),
        ),
        (RUN_LABEL.to_string(), run.to_string()),
        (labels::COMPONENT.to_string(), COMPONENT.to_string()),
    ])
}

/// The run's Job, named like the run, in the installation's namespace.
pub fn job(input: &JobInput, owner: OwnerReference) -> Result<Job, JobError> {
    let definition = input.definition;
    let run_name = input.run.metadata.name.clone().unwrap_or_default();
    let values = template_values(input);
    let deadline = timeout(definition, input.kind)?;
    let labels = job_labels(&run_name, &input.plan.name);
    let image = definition
        .image
        .clone()
        .unwrap_or_else(|| input.plan.image_ref(input.version));
    let container = Container {
        name: CONTAINER.into(),
        image: Some(image),
        command: render_each("command", &definition.command, &values)?,
        args: render_each("args", &definition.args, &values)?,
        env: Some(env(input, &values)?).filter(|e| !e.is_empty()),
        security_context: Some(security::container()),
        // A container that writes no report still tells why it failed.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(run_name),
            namespace: Some(input.plan.namespace.clone()),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(deadline.as_secs().max(1) as i64),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(security::pod(input.plan.run_as_non_root, None)),
                    containers: vec![container],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{RunEnvVar, TestRunSpec};
    use crate::controller::build::test_support::plan_with;
    use crate::controller::plan::tests::profile;

    fn definition() -> ProfileRun {
        ProfileRun {
            name: "list-users".into(),
            image: Some("ghcr.io/acme/tools:1".into()),
            command: vec!["mmctl".into()],
            args: vec![
                "user".into(),
                "list".into(),
                "--team".into(),
                "{{ params.team }}".into(),
                "--url={{ url }}".into(),
            ],
            env: vec![
                RunEnvVar {
                    name: "SITE".into(),
                    value: Some("{{ serviceUrl }}".into()),
                    ..Default::default()
                },
                RunEnvVar {
                    name: "PASSWORD".into(),
                    credential: Some(RunCredential::UserPassword),
                    ..Default::default()
                },
            ],
            read_only: true,
            ..Default::default()
        }
    }

    fn run() -> TestRun {
        TestRun::new(
            "demo-list-users-1",
            TestRunSpec {
                installation: "demo".into(),
                action: Some("list-users".into()),
                ..Default::default()
            },
        )
    }

    fn build(definition: &ProfileRun, team: &str) -> Result<Job, JobError> {
        let plan = plan_with(Default::default(), profile());
        let parameters = BTreeMap::from([("team".to_string(), team.to_string())]);
        let run = run();
        let input = JobInput {
            run: &run,
            kind: RunKind::Action,
            definition,
            plan: &plan,
            version: "1.0",
            parameters: &parameters,
            has_database: true,
            has_filestore: false,
        };
        job(&input, OwnerReference::default())
    }

    fn container(job: &Job) -> &Container {
        &job.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
    }

    #[test]
    fn hostile_parameters_stay_one_literal_argument() {
        for hostile in ["; rm -rf /", "$(id)", "a\nb", "{{ url }}", "x y"] {
            let job = build(&definition(), hostile).unwrap();
            let args = container(&job).args.clone().unwrap();
            assert_eq!(args.len(), 5, "{args:?}");
            assert_eq!(args[3], hostile);
            assert!(container(&job).command.as_ref().unwrap() == &vec!["mmctl".to_string()]);
        }
    }

    #[test]
    fn job_runs_once_within_its_deadline_without_a_token_and_credentials_by_reference() {
        let job = build(&definition(), "core").unwrap();
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(300));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let c = container(&job);
        assert_eq!(c.image.as_deref(), Some("ghcr.io/acme/tools:1"));
        assert_eq!(
            c.args.as_ref().unwrap()[4],
            "--url=https://demo.ephemera.localhost"
        );
        let env = c.env.as_ref().unwrap();
        assert_eq!(env[0].value.as_deref(), Some("http://app.ti-demo.svc:80"));
        let r = env[1]
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (r.name.as_str(), r.key.as_str()),
            ("credentials", "userPassword")
        );
        assert!(env[1].value.is_none());
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[RUN_LABEL], "demo-list-users-1");
        assert!(!labels.contains_key(labels::MANAGED_BY_KEY));
    }

    #[test]
    fn read_only_runs_never_get_write_credentials() {
        let mut d = definition();
        d.env[1].credential = Some(RunCredential::AdminPassword);
        let err = build(&d, "core").unwrap_err();
        assert_eq!(err.reason(), "WriteCredentialInReadOnlyRun");
        d.read_only = false;
        assert!(build(&d, "core").is_ok());
        d.env[1].credential = Some(RunCredential::FilestoreSecretKey);
        assert_eq!(
            build(&d, "core").unwrap_err().reason(),
            "CredentialUnavailable"
        );
    }

    #[test]
    fn shared_secrets_come_from_allowed_namespaces_through_the_runs_own_secret() {
        let mut d = definition();
        d.env.push(RunEnvVar {
            name: "LICENSE".into(),
            secret_key_ref: Some(crate::api::installation::SecretKeyRef {
                namespace: "ephemera-shared-secrets".into(),
                name: "mm".into(),
                key: "license".into(),
            }),
            ..Default::default()
        });
        let allowed = vec!["ephemera-shared-secrets".to_string()];
        let lookup = |ns: &str, name: &str, key: &str| {
            ((ns, name, key) == ("ephemera-shared-secrets", "mm", "license"))
                .then(|| "L-123".to_string())
        };
        let values = shared_values(&d, &allowed, lookup).unwrap();
        assert_eq!(values["LICENSE"], "L-123");
        let job = build(&d, "core").unwrap();
        let env = container(&job).env.clone().unwrap();
        let r = env[2]
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (r.name.as_str(), r.key.as_str()),
            ("demo-list-users-1", "LICENSE")
        );
        assert!(!serde_json::to_string(&job).unwrap().contains("L-123"));
        let err = shared_values(&d, &["other".to_string()], lookup).unwrap_err();
        assert_eq!(err.reason(), "SecretNamespaceNotAllowed");
        let err = shared_values(&d, &allowed, |_, _, _| None).unwrap_err();
        assert_eq!(err.reason(), "SecretRefMissing");
    }

    #[test]
    fn unknown_placeholders_and_the_default_image_and_timeouts() {
        let mut d = definition();
        d.args.push("{{ credentials.adminPassword }}".into());
        assert_eq!(build(&d, "core").unwrap_err().reason(), "TemplateInvalid");
        let mut d = definition();
        d.image = None;
        d.timeout = Some("90s".into());
        let job = build(&d, "core").unwrap();
        assert_eq!(
            container(&job).image.as_deref(),
            Some("example.com/app:1.0")
        );
        assert_eq!(job.spec.unwrap().active_deadline_seconds, Some(90));
        assert_eq!(
            timeout(&ProfileRun::default(), RunKind::Test).unwrap(),
            Duration::from_secs(1800)
        );
    }
}
