//! The application: its environment (a Secret, because rendered templates
//! may hold passwords), its Deployment and its Service.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{
            Container, ContainerPort, EnvFromSource, HTTPGetAction, PodSpec, PodTemplateSpec,
            Probe, SecretEnvSource, Service, ServicePort, ServiceSpec,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};

use super::{
    BuildError, BuildInput, DesiredObject, content_hash, database, erase, filestore, labels, meta,
    secrets, security, selector, template,
};
use crate::api::credentials;

pub const NAME: &str = "app";
pub const ENV_SECRET: &str = "app-env";
pub const COMPONENT: &str = "app";
/// Pod template annotation that changes whenever the app's env does, so a
/// changed env rolls the pods.
pub const ENV_HASH_ANNOTATION: &str = "ephemera.dev/env-hash";
/// Pod template annotation set from `spec.restartedAt`: a new value rolls
/// the pods one by one (as `kubectl rollout restart` does); the same value
/// changes nothing, so nothing is written.
pub const RESTARTED_AT_ANNOTATION: &str = "ephemera.dev/restarted-at";
pub const SERVICE_PORT: i32 = 80;

/// Everything `{{ ... }}` in the profile's env may name.
pub fn template_values(input: &BuildInput) -> Result<BTreeMap<String, String>, BuildError> {
    let plan = input.plan;
    let creds = &input.generated.credentials;
    let mut values = BTreeMap::from([
        ("name".to_string(), plan.name.clone()),
        ("namespace".to_string(), plan.namespace.clone()),
        ("url".to_string(), plan.url.clone()),
        ("host".to_string(), plan.host.clone()),
        (
            "serviceUrl".to_string(),
            format!("http://{NAME}.{}.svc:{SERVICE_PORT}", plan.namespace),
        ),
        ("version".to_string(), input.app_version.to_string()),
        (
            format!("credentials.{}", credentials::ADMIN_USER),
            creds.admin_user.clone(),
        ),
        (
            format!("credentials.{}", credentials::ADMIN_PASSWORD),
            creds.admin_password.clone(),
        ),
        (
            format!("credentials.{}", credentials::USER),
            creds.user.clone(),
        ),
        (
            format!("credentials.{}", credentials::USER_PASSWORD),
            creds.user_password.clone(),
        ),
    ]);
    for (k, v) in database::values(input)? {
        values.insert(format!("database.{k}"), v);
    }
    for (k, v) in filestore::values(input)? {
        values.insert(format!("filestore.{k}"), v);
    }
    Ok(values)
}

/// The app's environment: the profile's rendered templates, then the
/// installation's own entries (which win on equal names).
pub fn environment(input: &BuildInput) -> Result<BTreeMap<String, String>, BuildError> {
    let values = template_values(input)?;
    let mut env = BTreeMap::new();
    for entry in &input.plan.profile_env {
        let value = match (&entry.value, &entry.secret_key_ref) {
            (Some(t), _) => {
                template::render(t, &values).map_err(|source| BuildError::Template {
                    name: entry.name.clone(),
                    source,
                })?
            }
            (None, Some(r)) => input
                .external
                .get(&r.namespace, &r.name, &r.key)?
                .to_string(),
            (None, None) => String::new(),
        };
        env.insert(entry.name.clone(), value);
    }
    for entry in &input.plan.env {
        let value = match (&entry.value, &entry.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => {
                let r = &from.secret_key_ref;
                input
                    .external
                    .get(&r.namespace, &r.name, &r.key)?
                    .to_string()
            }
            (None, None) => String::new(),
        };
        env.insert(entry.name.clone(), value);
    }
    Ok(env)
}

pub fn objects(input: &BuildInput) -> Result<Vec<DesiredObject>, BuildError> {
    let env = environment(input)?;
    let env_hash = content_hash(env.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
    Ok(vec![
        erase(secrets::secret(input, ENV_SECRET, COMPONENT, env)),
        erase(deployment(input, &env_hash)),
        erase(service(input)),
    ])
}

pub fn deployment(input: &BuildInput, env_hash: &str) -> Deployment {
    let plan = input.plan;
    let mut pod_labels = labels(plan, COMPONENT);
    pod_labels.extend(selector(plan, COMPONENT));
    pod_labels.insert(
        "ephemera.dev/version".into(),
        version_label(input.app_version),
    );
    let volume = filestore::app_volume(input);
    let readiness_probe = plan.health_path.as_ref().map(|path| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.clone()),
            port: IntOrString::Int(plan.container_port),
            ..Default::default()
        }),
        period_seconds: Some(5),
        failure_threshold: Some(3),
        ..Default::default()
    });
    Deployment {
        metadata: meta(input, NAME, COMPONENT),
        spec: Some(DeploymentSpec {
            replicas: Some(if plan.hibernate { 0 } else { plan.replicas }),
            revision_history_limit: Some(5),
            selector: LabelSelector {
                match_labels: Some(selector(plan, COMPONENT)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations(env_hash, plan.restarted_at.as_deref())),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    security_context: Some(security::pod(plan.run_as_non_root, None)),
                    automount_service_account_token: Some(false),
                    containers: vec![Container {
                        name: COMPONENT.into(),
                        image: Some(plan.image_ref(input.app_version)),
                        command: (!plan.command.is_empty()).then(|| plan.command.clone()),
                        args: (!plan.args.is_empty()).then(|| plan.args.clone()),
                        env_from: Some(vec![EnvFromSource {
                            secret_ref: Some(SecretEnvSource {
                                name: ENV_SECRET.into(),
                                optional: Some(false),
                            }),
                            ..Default::default()
                        }]),
                        ports: Some(vec![ContainerPort {
                            name: Some("http".into()),
                            container_port: plan.container_port,
                            ..Default::default()
                        }]),
                        readiness_probe,
                        resources: plan.app_resources.clone(),
                        security_context: Some(security::container()),
                        volume_mounts: volume.as_ref().map(|(_, m)| vec![m.clone()]),
                        ..Default::default()
                    }],
                    volumes: volume.map(|(v, _)| vec![v]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The app's pod template annotations: the env hash and, once asked for,
/// the time of the last restart.
fn pod_annotations(env_hash: &str, restarted_at: Option<&str>) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::from([(ENV_HASH_ANNOTATION.to_string(), env_hash.to_string())]);
    if let Some(at) = restarted_at {
        annotations.insert(RESTARTED_AT_ANNOTATION.to_string(), at.to_string());
    }
    annotations
}

/// A label-safe form of a version (digests are too long and contain ':').
pub fn version_label(version: &str) -> String {
    let cleaned: String = version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

fn service(input: &BuildInput) -> Service {
    Service {
        metadata: meta(input, NAME, COMPONENT),
        spec: Some(ServiceSpec {
            selector: Some(selector(input.plan, COMPONENT)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::String("http".into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{EnvVar, ProfileEnvVar, TestInstallationSpec};
    use crate::controller::build::{ExternalSecrets, test_support::*};
    use crate::controller::plan::tests::profile;

    #[test]
    fn profile_templates_render_and_spec_env_wins() {
        let mut p = profile();
        p.spec.env = vec![
            ProfileEnvVar {
                name: "SITE_URL".into(),
                value: Some("{{ url }}".into()),
                secret_key_ref: None,
            },
            ProfileEnvVar {
                name: "DATASOURCE".into(),
                value: Some("{{ database.url }}".into()),
                secret_key_ref: None,
            },
            ProfileEnvVar {
                name: "MODE".into(),
                value: Some("prod".into()),
                secret_key_ref: None,
            },
        ];
        let spec = TestInstallationSpec {
            env: vec![EnvVar {
                name: "MODE".into(),
                value: Some("test".into()),
                value_from: None,
            }],
            ..Default::default()
        };
        let plan = plan_with(spec, p);
        let (generated, external) = (generated(), ExternalSecrets::default());
        let env = environment(&input(&plan, &generated, &external)).unwrap();
        assert_eq!(env["SITE_URL"], "https://demo.ephemera.localhost");
        assert!(env["DATASOURCE"].starts_with("postgres://app:db-pw@database.ti-demo.svc"));
        assert_eq!(env["MODE"], "test");
    }

    #[test]
    fn unknown_placeholder_names_the_env_entry() {
        let mut p = profile();
        p.spec.env = vec![ProfileEnvVar {
            name: "X".into(),
            value: Some("{{ nope }}".into()),
            secret_key_ref: None,
        }];
        let plan = plan_with(Default::default(), p);
        let (generated, external) = (generated(), ExternalSecrets::default());
        let err = environment(&input(&plan, &generated, &external)).unwrap_err();
        assert_eq!(err.reason(), "ProfileTemplateInvalid");
        assert!(err.to_string().starts_with("profile env X:"), "{err}");
    }

    #[test]
    fn deployment_runs_the_version_of_this_pass_without_secrets_in_its_spec() {
        let mut p = profile();
        p.spec.health_path = Some("/health".into());
        p.spec.env = vec![ProfileEnvVar {
            name: "DATASOURCE".into(),
            value: Some("{{ database.url }}".into()),
            secret_key_ref: None,
        }];
        let plan = plan_with(Default::default(), p);
        let (generated, external) = (generated(), ExternalSecrets::default());
        let mut input = input(&plan, &generated, &external);
        input.app_version = "0.9.0";
        let objects = objects(&input).unwrap();
        let deployment = objects.iter().find(|o| o.kind() == "Deployment").unwrap();
        let text = serde_json::to_string(&deployment.object).unwrap();
        assert!(
            !text.contains("db-pw"),
            "password leaked into the Deployment"
        );
        assert!(text.contains("example.com/app:0.9.0"));
        let typed = super::deployment(&input, "h");
        let c = &typed.spec.unwrap().template.spec.unwrap().containers[0];
        assert_eq!(
            c.readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/health")
        );
        assert_eq!(
            c.security_context
                .as_ref()
                .unwrap()
                .allow_privilege_escalation,
            Some(false)
        );
    }

    #[test]
    fn restarted_at_becomes_a_pod_template_annotation() {
        let annotations = |restarted_at: Option<&str>| {
            let spec = TestInstallationSpec {
                restarted_at: restarted_at.map(String::from),
                ..Default::default()
            };
            let plan = plan_with(spec, profile());
            let (generated, external) = (generated(), ExternalSecrets::default());
            let d = super::deployment(&input(&plan, &generated, &external), "h");
            d.spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()
        };
        assert!(!annotations(None).contains_key(RESTARTED_AT_ANNOTATION));
        assert!(!annotations(Some("")).contains_key(RESTARTED_AT_ANNOTATION));
        let at = "2026-12-02T08:00:00Z";
        assert_eq!(annotations(Some(at))[RESTARTED_AT_ANNOTATION], at);
        assert_eq!(annotations(Some(at)), annotations(Some(at)));
    }

    #[test]
    fn version_labels_are_label_safe() {
        assert_eq!(version_label("9.11.0"), "9.11.0");
        let digest = format!("sha256:{}", "a".repeat(64));
        let label = version_label(&digest);
        assert!(label.len() <= 63 && !label.contains(':'), "{label}");
    }
}
