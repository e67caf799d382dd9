//! The file store: a volume mounted into the app (`local`), a MinIO server
//! with its bucket (`minio`), an external bucket (`s3`), or nothing.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy},
        batch::v1::{Job, JobSpec},
        core::v1::{
            Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, HTTPGetAction, PodSpec,
            PodTemplateSpec, Probe, SecretEnvSource, Service, ServicePort, ServiceSpec, Volume,
            VolumeMount,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};

use super::{
    BuildError, BuildInput, DesiredObject, erase, labels, meta, secrets, security, selector,
};
use crate::api::FilestoreType;

pub const NAME: &str = "filestore";
pub const BUCKET_JOB: &str = "filestore-bucket";
const COMPONENT: &str = "filestore";
const PORT: i32 = 9000;

/// The values the app's env templates may use as `{{ filestore.* }}`.
pub fn values(input: &BuildInput) -> Result<BTreeMap<String, String>, BuildError> {
    let plan = input.plan;
    let fs = &plan.filestore;
    Ok(match fs.kind {
        FilestoreType::None => BTreeMap::new(),
        FilestoreType::Local => BTreeMap::from([
            ("type".into(), "local".into()),
            ("path".into(), fs.mount_path.clone()),
        ]),
        FilestoreType::Minio => BTreeMap::from([
            ("type".into(), "minio".into()),
            (
                "endpoint".into(),
                format!("{NAME}.{}.svc:{PORT}", plan.namespace),
            ),
            ("bucket".into(), fs.bucket.clone()),
            (
                secrets::FILESTORE_ACCESS_KEY.into(),
                input.generated.filestore_access_key.clone(),
            ),
            (
                secrets::FILESTORE_SECRET_KEY.into(),
                input.generated.filestore_secret_key.clone(),
            ),
        ]),
        FilestoreType::S3 => {
            let r = fs
                .external
                .as_ref()
                .ok_or(BuildError::MissingSecretRef("file store type s3"))?;
            let mut v = BTreeMap::from([("type".to_string(), "s3".to_string())]);
            for key in [
                "endpoint",
                "bucket",
                secrets::FILESTORE_ACCESS_KEY,
                secrets::FILESTORE_SECRET_KEY,
            ] {
                v.insert(
                    key.into(),
                    input.external.get(&r.namespace, &r.name, key)?.to_string(),
                );
            }
            v
        }
    })
}

pub fn objects(input: &BuildInput) -> Result<Vec<DesiredObject>, BuildError> {
    let values = values(input)?;
    Ok(match input.plan.filestore.kind {
        FilestoreType::None | FilestoreType::Local => vec![],
        FilestoreType::S3 => vec![erase(secrets::secret(input, NAME, COMPONENT, values))],
        FilestoreType::Minio => vec![
            erase(secrets::secret(input, NAME, COMPONENT, values)),
            erase(service(input)),
            erase(deployment(input)),
            erase(bucket_job(input)),
        ],
    })
}

/// Volumes and mounts the app needs for its file store.
pub fn app_volume(input: &BuildInput) -> Option<(Volume, VolumeMount)> {
    let fs = &input.plan.filestore;
    (fs.kind == FilestoreType::Local).then(|| {
        (
            Volume {
                name: "filestore".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            },
            VolumeMount {
                name: "filestore".into(),
                mount_path: fs.mount_path.clone(),
                ..Default::default()
            },
        )
    })
}

fn service(input: &BuildInput) -> Service {
    Service {
        metadata: meta(input, NAME, COMPONENT),
        spec: Some(ServiceSpec {
            selector: Some(selector(input.plan, COMPONENT)),
            ports: Some(vec![ServicePort {
                name: Some("s3".into()),
                port: PORT,
                target_port: Some(IntOrString::Int(PORT)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn minio_env() -> Vec<EnvFromSource> {
    vec![EnvFromSource {
        secret_ref: Some(SecretEnvSource {
            name: NAME.into(),
            optional: Some(false),
        }),
        prefix: Some("FS_".into()),
        ..Default::default()
    }]
}

pub fn deployment(input: &BuildInput) -> Deployment {
    let plan = input.plan;
    let mut pod_labels = labels(plan, COMPONENT);
    pod_labels.extend(selector(plan, COMPONENT));
    Deployment {
        metadata: meta(input, NAME, COMPONENT),
        spec: Some(DeploymentSpec {
            replicas: Some(if plan.hibernate { 0 } else { 1 }),
            // One pod owns the data directory at a time.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                ..Default::default()
            }),
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
                    security_context: Some(security::pod(true, Some(1000))),
                    automount_service_account_token: Some(false),
                    containers: vec![Container {
                        name: "minio".into(),
                        image: Some(plan.filestore.image.clone()),
                        command: Some(vec!["sh".into(), "-c".into(),
                            "MINIO_ROOT_USER=\"$FS_accessKey\" MINIO_ROOT_PASSWORD=\"$FS_secretKey\" exec minio server /data".into()]),
                        env_from: Some(minio_env()),
                        ports: Some(vec![ContainerPort {
                            name: Some("s3".into()),
                            container_port: PORT,
                            ..Default::default()
                        }]),
                        readiness_probe: Some(Probe {
                            http_get: Some(HTTPGetAction {
                                path: Some("/minio/health/ready".into()),
                                port: IntOrString::Int(PORT),
                                ..Default::default()
                            }),
                            period_seconds: Some(5),
                            ..Default::default()
                        }),
                        resources: plan.filestore_resources.clone(),
                        security_context: Some(security::container()),
                        volume_mounts: Some(vec![VolumeMount {
                            name: "data".into(),
                            mount_path: "/data".into(),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }],
                    volumes: Some(vec![Volume {
                        name: "data".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Creates the app's bucket once MinIO answers (retried by the Job).
pub fn bucket_job(input: &BuildInput) -> Job {
    let plan = input.plan;
    let script = format!(
        "mc alias set fs http://{NAME}:{PORT} \"$FS_accessKey\" \"$FS_secretKey\" && mc mb --ignore-existing fs/{}",
        plan.filestore.bucket
    );
    Job {
        metadata: meta(input, BUCKET_JOB, COMPONENT),
        spec: Some(JobSpec {
            backoff_limit: Some(20),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(plan, COMPONENT)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("OnFailure".into()),
                    security_context: Some(security::pod(true, Some(1000))),
                    automount_service_account_token: Some(false),
                    containers: vec![Container {
                        name: "mc".into(),
                        image: Some(plan.filestore.client_image.clone()),
                        command: Some(vec!["sh".into(), "-c".into(), script]),
                        env: Some(vec![k8s_openapi::api::core::v1::EnvVar {
                            name: "HOME".into(),
                            value: Some("/tmp".into()),
                            ..Default::default()
                        }]),
                        env_from: Some(minio_env()),
                        security_context: Some(security::container()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{FilestoreSpec, TestInstallationSpec};
    use crate::controller::build::{ExternalSecrets, test_support::*};
    use crate::controller::plan::tests::profile;

    fn spec(kind: FilestoreType) -> TestInstallationSpec {
        TestInstallationSpec {
            filestore: Some(FilestoreSpec {
                kind: Some(kind),
                secret_ref: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn minio_gets_server_service_secret_and_bucket_job() {
        let plan = plan_with(spec(FilestoreType::Minio), profile());
        let (generated, external) = (generated(), ExternalSecrets::default());
        let input = input(&plan, &generated, &external);
        let kinds: Vec<String> = objects(&input)
            .unwrap()
            .iter()
            .map(|o| format!("{}/{}", o.kind(), o.name()))
            .collect();
        assert_eq!(
            kinds,
            [
                "Secret/filestore",
                "Service/filestore",
                "Deployment/filestore",
                "Job/filestore-bucket"
            ]
        );
        let v = values(&input).unwrap();
        assert_eq!(v["endpoint"], "filestore.ti-demo.svc:9000");
        assert_eq!(v["accessKey"], "fs-access");
        // Keys reach MinIO through the Secret, never as literal env values.
        let d = serde_json::to_string(&deployment(&input)).unwrap();
        assert!(!d.contains("fs-secret"));
    }

    #[test]
    fn local_mounts_a_volume_into_the_app() {
        let plan = plan_with(spec(FilestoreType::Local), profile());
        let (generated, external) = (generated(), ExternalSecrets::default());
        let input = input(&plan, &generated, &external);
        assert!(objects(&input).unwrap().is_empty());
        let (_, mount) = app_volume(&input).unwrap();
        assert_eq!(mount.mount_path, "/data");
    }
}
