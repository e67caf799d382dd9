//! The database: a StatefulSet with a headless Service and a `database`
//! Secret for postgres and mysql; only the Secret (copied from the referenced
//! one) for an external database; nothing for `none`.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetSpec},
        core::v1::{
            Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction,
            PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe,
            SecretKeySelector, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
            VolumeResourceRequirements,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};

use super::{BuildError, BuildInput, DesiredObject, erase, meta, secrets, security, selector};
use crate::api::{DatabaseEngine, DatabaseStorage};

pub const NAME: &str = "database";
const COMPONENT: &str = "database";
const USER: &str = "app";

/// Port of each engine ephemera runs.
fn port(engine: DatabaseEngine) -> i32 {
    match engine {
        DatabaseEngine::Mysql => 3306,
        _ => 5432,
    }
}

/// The values the app's env templates may use as `{{ database.* }}`.
pub fn values(input: &BuildInput) -> Result<BTreeMap<String, String>, BuildError> {
    let plan = input.plan;
    let db = &plan.database;
    let host = format!("{NAME}.{}.svc", plan.namespace);
    let mut values = match db.engine {
        DatabaseEngine::None => return Ok(BTreeMap::new()),
        DatabaseEngine::External => {
            let r = db
                .external
                .as_ref()
                .ok_or(BuildError::MissingSecretRef("database engine external"))?;
            let mut v: BTreeMap<String, String> = input
                .external
                .all(&r.namespace, &r.name)
                .cloned()
                .unwrap_or_default();
            input.external.get(&r.namespace, &r.name, "url")?;
            v.insert("engine".into(), "external".into());
            v
        }
        engine @ (DatabaseEngine::Postgres | DatabaseEngine::Mysql) => {
            let password = &input.generated.database_password;
            let port = port(engine);
            let (scheme, engine_name) = match engine {
                DatabaseEngine::Mysql => ("mysql", "mysql"),
                _ => ("postgres", "postgres"),
            };
            let query = if engine == DatabaseEngine::Postgres {
                "?sslmode=disable"
            } else {
                ""
            };
            BTreeMap::from([
                ("engine".into(), engine_name.into()),
                ("host".into(), host.clone()),
                ("port".into(), port.to_string()),
                ("user".into(), USER.into()),
                ("password".into(), password.clone()),
                ("name".into(), db.name.clone()),
                (
                    "url".into(),
                    format!(
                        "{scheme}://{USER}:{password}@{host}:{port}/{}{query}",
                        db.name
                    ),
                ),
            ])
        }
    };
    // Keys of the external Secret other than these are kept as they are.
    values.retain(|_, v| !v.is_empty());
    Ok(values)
}

pub fn objects(input: &BuildInput) -> Result<Vec<DesiredObject>, BuildError> {
    let values = values(input)?;
    let db = &input.plan.database;
    let mut objects = Vec::new();
    if db.engine == DatabaseEngine::None {
        return Ok(objects);
    }
    let mut secret_data = values.clone();
    secret_data.insert(
        secrets::DATABASE_PASSWORD_KEY.into(),
        input.generated.database_password.clone(),
    );
    if let Some(p) = values.get("password") {
        secret_data.insert(secrets::DATABASE_PASSWORD_KEY.into(), p.clone());
    }
    objects.push(erase(secrets::secret(input, NAME, COMPONENT, secret_data)));
    if matches!(db.engine, DatabaseEngine::Postgres | DatabaseEngine::Mysql) {
        objects.push(erase(service(input)));
        objects.push(erase(stateful_set(input)));
    }
    Ok(objects)
}

fn service(input: &BuildInput) -> Service {
    let port = port(input.plan.database.engine);
    Service {
        metadata: meta(input, NAME, COMPONENT),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector(input.plan, COMPONENT)),
            ports: Some(vec![ServicePort {
                name: Some("db".into()),
                port,
                target_port: Some(IntOrString::Int(port)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn secret_env(name: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: NAME.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

pub fn stateful_set(input: &BuildInput) -> StatefulSet {
    let plan = input.plan;
    let db = &plan.database;
    let engine = db.engine;
    let (env, data_path, probe, uid) = match engine {
        DatabaseEngine::Mysql => (
            vec![
                plain_env("MYSQL_USER", USER),
                secret_env("MYSQL_PASSWORD", secrets::DATABASE_PASSWORD_KEY),
                plain_env("MYSQL_DATABASE", &db.name),
                plain_env("MYSQL_RANDOM_ROOT_PASSWORD", "yes"),
            ],
            "/var/lib/mysql",
            vec![
                "mysqladmin".into(),
                "ping".into(),
                "-h".into(),
                "127.0.0.1".into(),
            ],
            999,
        ),
        _ => (
            vec![
                plain_env("POSTGRES_USER", USER),
                secret_env("POSTGRES_PASSWORD", secrets::DATABASE_PASSWORD_KEY),
                plain_env("POSTGRES_DB", &db.name),
                plain_env("PGDATA", "/var/lib/postgresql/data/pgdata"),
            ],
            "/var/lib/postgresql/data",
            vec![
                "pg_isready".into(),
                "-U".into(),
                USER.into(),
                "-d".into(),
                db.name.clone(),
            ],
            999,
        ),
    };
    let volume_name = "data";
    let persistent = db.storage == DatabaseStorage::Persistent;
    let volumes = (!persistent).then(|| {
        vec![Volume {
            name: volume_name.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        }]
    });
    let claims = persistent.then(|| {
        vec![PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(volume_name.into()),
                labels: Some(super::labels(plan, COMPONENT)),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_string(),
                        Quantity(db.storage_size.clone()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]
    });
    let mut pod_labels = super::labels(plan, COMPONENT);
    pod_labels.extend(selector(plan, COMPONENT));
    StatefulSet {
        metadata: meta(input, NAME, COMPONENT),
        spec: Some(StatefulSetSpec {
            replicas: Some(if plan.hibernate { 0 } else { 1 }),
            service_name: Some(NAME.into()),
            selector: LabelSelector {
                match_labels: Some(selector(plan, COMPONENT)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    security_context: Some(security::pod(true, Some(uid))),
                    automount_service_account_token: Some(false),
                    containers: vec![Container {
                        name: COMPONENT.into(),
                        image: db.image.clone(),
                        env: Some(env),
                        ports: Some(vec![ContainerPort {
                            name: Some("db".into()),
                            container_port: port(engine),
                            ..Default::default()
                        }]),
                        readiness_probe: Some(Probe {
                            exec: Some(ExecAction {
                                command: Some(probe),
                            }),
                            period_seconds: Some(5),
                            ..Default::default()
                        }),
                        resources: plan.database_resources.clone(),
                        security_context: Some(security::container()),
                        volume_mounts: Some(vec![VolumeMount {
                            name: volume_name.into(),
                            mount_path: data_path.into(),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }],
                    volumes,
                    ..Default::default()
                }),
            },
            volume_claim_templates: claims,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DatabaseSpec, TestInstallationSpec};
    use crate::controller::build::{ExternalSecrets, test_support::*};
    use crate::controller::plan::tests::profile;

    #[test]
    fn postgres_gets_a_statefulset_service_and_secret_with_the_generated_password() {
        let plan = plan_with(Default::default(), profile());
        let generated = generated();
        let external = ExternalSecrets::default();
        let input = input(&plan, &generated, &external);
        let values = values(&input).unwrap();
        assert_eq!(
            values["url"],
            "postgres://app:db-pw@database.ti-demo.svc:5432/app?sslmode=disable"
        );
        let kinds: Vec<String> = objects(&input)
            .unwrap()
            .iter()
            .map(|o| o.kind().to_string())
            .collect();
        assert_eq!(kinds, ["Secret", "Service", "StatefulSet"]);
        let sts = stateful_set(&input);
        let pod = sts.spec.unwrap().template.spec.unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("docker.io/library/postgres:16"));
        // The password is referenced, never written into the pod spec.
        let env = c.env.as_ref().unwrap();
        assert!(env.iter().all(|e| e.value.as_deref() != Some("db-pw")));
        assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
    }

    #[test]
    fn hibernation_scales_to_zero_and_persistent_storage_uses_a_claim() {
        let spec = TestInstallationSpec {
            hibernate: true,
            database: Some(DatabaseSpec {
                storage: Some(DatabaseStorage::Persistent),
                storage_size: Some("5Gi".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let plan = plan_with(spec, profile());
        let generated = generated();
        let external = ExternalSecrets::default();
        let sts = stateful_set(&input(&plan, &generated, &external))
            .spec
            .unwrap();
        assert_eq!(sts.replicas, Some(0));
        let claim = &sts.volume_claim_templates.unwrap()[0];
        let size = &claim
            .spec
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"];
        assert_eq!(size.0, "5Gi");
    }

    #[test]
    fn mysql_uses_its_own_port_and_url() {
        let spec = TestInstallationSpec {
            database: Some(DatabaseSpec {
                engine: Some(DatabaseEngine::Mysql),
                ..Default::default()
            }),
            ..Default::default()
        };
        let plan = plan_with(spec, profile());
        let generated = generated();
        let external = ExternalSecrets::default();
        let values = values(&input(&plan, &generated, &external)).unwrap();
        assert_eq!(
            values["url"],
            "mysql://app:db-pw@database.ti-demo.svc:3306/app"
        );
    }

    #[test]
    fn no_database_builds_nothing() {
        let spec = TestInstallationSpec {
            database: Some(DatabaseSpec {
                engine: Some(DatabaseEngine::None),
                ..Default::default()
            }),
            ..Default::default()
        };
        let plan = plan_with(spec, profile());
        let generated = generated();
        let external = ExternalSecrets::default();
        assert!(
            objects(&input(&plan, &generated, &external))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn an_external_database_without_its_secret_ref_is_an_error_not_a_panic() {
        let spec = TestInstallationSpec {
            database: Some(DatabaseSpec {
                engine: Some(DatabaseEngine::External),
                secret_ref: Some(crate::api::SecretRef {
                    name: "db".into(),
                    namespace: "ephemera-shared-secrets".into(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut profile = profile();
        profile.spec.shared_secrets = vec!["ephemera-shared-secrets/db".into()];
        let mut plan = plan_with(spec, profile);
        plan.database.external = None;
        let (generated, external) = (generated(), ExternalSecrets::default());
        let err = values(&input(&plan, &generated, &external)).unwrap_err();
        assert_eq!(err.reason(), "SecretRefMissing");
    }
}
