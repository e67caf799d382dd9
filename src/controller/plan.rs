//! Validation and defaulting, pure: a TestInstallation, its profile and the
//! controller config become a `Plan` with every setting decided, or a
//! `PlanError` that says what is wrong in words a person understands.
//!
//! The API server's schema and CEL rules already refuse malformed specs; what
//! is checked here needs the profile or the config (sizes, seed command,
//! secret namespaces). The ttl is decided in `lifecycle::ttl`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;

use super::{
    allow_list::image_allowed,
    config::{ControllerConfig, forbidden_secret_namespace},
};
use crate::api::{
    DatabaseEngine, DatabaseStorage, EnvVar, FilestoreType, InstallationProfile, ProfileEnvVar,
    SecretKeyRef, SecretRef, SeedSpec, SizeClass, TestInstallation,
};

/// Everything needed to build an installation, decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub name: String,
    pub namespace: String,
    pub host: String,
    pub url: String,
    pub profile: String,
    pub image: String,
    /// The version the installation should end on.
    pub version: String,
    /// Set for upgrade tests: the version to start on.
    pub upgrade_from: Option<String>,
    pub size: String,
    pub replicas: i32,
    pub hibernate: bool,
    pub app_resources: Option<ResourceRequirements>,
    pub database_resources: Option<ResourceRequirements>,
    pub filestore_resources: Option<ResourceRequirements>,
    pub container_port: i32,
    pub health_path: Option<String>,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub run_as_non_root: bool,
    pub database: DatabasePlan,
    pub filestore: FilestorePlan,
    pub profile_env: Vec<ProfileEnvVar>,
    pub env: Vec<EnvVar>,
    pub seed: Option<SeedSpec>,
    pub ingress_class: Option<String>,
    pub ingress_annotations: BTreeMap<String, String>,
    pub tls_secret_name: Option<String>,
    pub ingress_controller_namespace: String,
    /// `spec.restartedAt`: a new value rolls the app's pods.
    pub restarted_at: Option<String>,
    /// The profile's links, rendered into the status.
    pub links: Vec<crate::api::ProfileLink>,
    /// Bound to read the generated `credentials` Secret, if configured.
    pub credentials_reader: Option<super::config::CredentialsReader>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DatabasePlan {
    pub engine: DatabaseEngine,
    /// Image with tag, for the engines ephemera runs.
    pub image: Option<String>,
    pub storage: DatabaseStorage,
    pub storage_size: String,
    pub name: String,
    pub external: Option<SecretRef>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FilestorePlan {
    pub kind: FilestoreType,
    pub mount_path: String,
    pub bucket: String,
    pub external: Option<SecretRef>,
    /// MinIO server and client images, for `minio`.
    pub image: String,
    pub client_image: String,
}

/// Why an installation cannot be built as asked. Each is shown to people as
/// the `Stalled` reason and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("size {size:?} is not defined by profile {profile:?}; available sizes: {available}")]
    UnknownSize {
        size: String,
        profile: String,
        available: String,
    },
    #[error("testData was requested but profile {0:?} has no seed command")]
    NoSeedCommand(String),
    #[error(
        "secret {namespace}/{name} is referenced but namespace {namespace:?} is not one the controller may read Secrets from ({allowed})"
    )]
    SecretNamespaceNotAllowed {
        namespace: String,
        name: String,
        allowed: String,
    },
    #[error(
        "secret {namespace}/{name} is referenced but namespace {namespace:?} can never hold Secrets for installations: {why}"
    )]
    SecretNamespaceForbidden {
        namespace: String,
        name: String,
        why: &'static str,
    },
    #[error(
        "secret {namespace}/{name} is not one profile {profile:?} lets installations reference; its sharedSecrets: {allowed}"
    )]
    SecretNotAllowedByProfile {
        namespace: String,
        name: String,
        profile: String,
        allowed: String,
    },
    #[error(
        "image {image:?} is not allowed by profile {profile:?}, which allows {allowed}; to allow it, add a pattern to the profile's allowedImages (`**` allows every image)"
    )]
    ImageNotAllowed {
        image: String,
        profile: String,
        allowed: String,
    },
    #[error(
        "namespace name {0:?} would be longer than 63 characters; shorten the installation name or the namespace prefix"
    )]
    NamespaceTooLong(String),
    #[error("{0}")]
    Unsupported(String),
}

impl PlanError {
    /// The condition reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            PlanError::UnknownSize { .. } => "UnknownSize",
            PlanError::NoSeedCommand(_) => "NoSeedCommand",
            PlanError::SecretNamespaceNotAllowed { .. }
            | PlanError::SecretNamespaceForbidden { .. } => "SecretNamespaceNotAllowed",
            PlanError::SecretNotAllowedByProfile { .. } => "SecretNotAllowedByProfile",
            PlanError::ImageNotAllowed { .. } => "ImageNotAllowed",
            PlanError::NamespaceTooLong(_) => "NamespaceTooLong",
            PlanError::Unsupported(_) => "Unsupported",
        }
    }
}

/// The profile an installation uses: its own `spec.profile`, else `default`.
pub fn profile_name(installation: &TestInstallation) -> &str {
    installation.spec.profile.as_deref().unwrap_or("default")
}

/// The namespace of an installation.
pub fn namespace_name(config: &ControllerConfig, name: &str) -> String {
    format!("{}{}", config.namespace_prefix, name)
}

/// The built-in size classes, used when a profile does not define them.
pub fn builtin_size(name: &str) -> Option<SizeClass> {
    match name {
        "miniSingleton" => Some(SizeClass {
            replicas: 1,
            app: Some(resources("100m", "256Mi", "1", "1Gi")),
            database: Some(resources("100m", "256Mi", "1", "1Gi")),
            filestore: Some(resources("50m", "128Mi", "500m", "512Mi")),
        }),
        "miniHA" => Some(SizeClass {
            replicas: 2,
            app: Some(resources("200m", "512Mi", "2", "2Gi")),
            database: Some(resources("200m", "512Mi", "2", "2Gi")),
            filestore: Some(resources("100m", "256Mi", "1", "1Gi")),
        }),
        _ => None,
    }
}

fn resources(cpu_req: &str, mem_req: &str, cpu_lim: &str, mem_lim: &str) -> ResourceRequirements {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let map = |cpu: &str, mem: &str| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(mem.into())),
        ])
    };
    ResourceRequirements {
        requests: Some(map(cpu_req, mem_req)),
        limits: Some(map(cpu_lim, mem_lim)),
        ..Default::default()
    }
}

/// Decides every setting of an installation from its spec, its profile and the
/// controller config.
pub fn plan(
    installation: &TestInstallation,
    profile: &InstallationProfile,
    config: &ControllerConfig,
) -> Result<Plan, PlanError> {
    let spec = &installation.spec;
    let p = &profile.spec;
    let profile_name = profile.metadata.name.clone().unwrap_or_default();
    let name = installation.metadata.name.clone().unwrap_or_default();

    let namespace = namespace_name(config, &name);
    if namespace.len() > 63 {
        return Err(PlanError::NamespaceTooLong(namespace));
    }

    let size_name = spec
        .size
        .clone()
        .or_else(|| p.default_size.clone())
        .unwrap_or_else(|| "miniSingleton".into());
    let size = p
        .sizes
        .get(&size_name)
        .cloned()
        .or_else(|| builtin_size(&size_name))
        .ok_or_else(|| {
            let mut available: Vec<String> = p.sizes.keys().cloned().collect();
            for builtin in ["miniSingleton", "miniHA"] {
                if !available.iter().any(|s| s == builtin) {
                    available.push(builtin.into());
                }
            }
            PlanError::UnknownSize {
                size: size_name.clone(),
                profile: profile_name.clone(),
                available: available.join(", "),
            }
        })?;

    let seed = if spec.test_data {
        Some(
            p.seed
                .clone()
                .ok_or_else(|| PlanError::NoSeedCommand(profile_name.clone()))?,
        )
    } else {
        None
    };

    let db_spec = spec.database.clone().unwrap_or_default();
    let engine = db_spec.engine.unwrap_or(p.database.engine);
    let db_version = db_spec
        .version
        .clone()
        .or_else(|| p.database.version.clone());
    let db_image = match engine {
        DatabaseEngine::Postgres => Some(format!(
            "{}:{}",
            config.images.postgres,
            db_version.unwrap_or_else(|| config.images.postgres_default_version.clone())
        )),
        DatabaseEngine::Mysql => Some(format!(
            "{}:{}",
            config.images.mysql,
            db_version.unwrap_or_else(|| config.images.mysql_default_version.clone())
        )),
        DatabaseEngine::External | DatabaseEngine::None => None,
    };
    let database = DatabasePlan {
        engine,
        image: db_image,
        storage: db_spec.storage.unwrap_or(p.database.storage),
        storage_size: db_spec
            .storage_size
            .clone()
            .or_else(|| p.database.storage_size.clone())
            .unwrap_or_else(|| "1Gi".into()),
        name: p.database.name.clone(),
        external: db_spec.secret_ref.clone(),
    };
    if engine == DatabaseEngine::External && database.external.is_none() {
        return Err(PlanError::Unsupported(
            "database engine external needs database.secretRef".into(),
        ));
    }

    let fs_spec = spec.filestore.clone().unwrap_or_default();
    let filestore = FilestorePlan {
        kind: fs_spec.kind.unwrap_or(p.filestore.kind),
        mount_path: p.filestore.mount_path.clone(),
        bucket: p.filestore.bucket.clone(),
        external: fs_spec.secret_ref.clone(),
        image: config.images.minio.clone(),
        client_image: config.images.minio_client.clone(),
    };
    if filestore.kind == FilestoreType::S3 && filestore.external.is_none() {
        return Err(PlanError::Unsupported(
            "file store type s3 needs filestore.secretRef".into(),
        ));
    }

    check_images(spec.image.as_deref(), profile)?;
    check_spec_secrets(spec, profile, config)?;
    for (namespace, name) in
        referenced_secrets(spec_env_refs(&spec.env), &database, &filestore, &p.env)
    {
        if let Some(why) = forbidden_secret_namespace(
            &namespace,
            config.own_namespace.as_deref(),
            &config.namespace_prefix,
        ) {
            return Err(PlanError::SecretNamespaceForbidden {
                namespace,
                name,
                why,
            });
        }
        if !config.allowed_secret_namespaces.contains(&namespace) {
            return Err(PlanError::SecretNamespaceNotAllowed {
                namespace,
                name,
                allowed: config.allowed_secret_namespaces.join(", "),
            });
        }
    }

    let host = format!("{name}.{}", config.base_domain);
    let mut ingress_annotations = config.ingress.annotations.clone();
    ingress_annotations.extend(p.ingress.annotations.clone());

    Ok(Plan {
        url: format!("{}://{host}", config.url_scheme),
        host,
        namespace,
        profile: profile.metadata.name.clone().unwrap_or_default(),
        image: spec.image.clone().unwrap_or_else(|| p.image.clone()),
        version: spec
            .version
            .clone()
            .unwrap_or_else(|| p.default_version.clone()),
        upgrade_from: spec.upgrade_from.clone(),
        replicas: spec.replicas.unwrap_or(size.replicas),
        hibernate: spec.hibernate,
        app_resources: spec.resources.clone().or(size.app.clone()),
        database_resources: size.database.clone(),
        filestore_resources: size.filestore.clone(),
        size: size_name,
        container_port: p.container_port,
        health_path: p.health_path.clone(),
        command: p.command.clone(),
        args: p.args.clone(),
        run_as_non_root: p.run_as_non_root,
        database,
        filestore,
        profile_env: p.env.clone(),
        env: spec.env.clone(),
        seed,
        ingress_class: p
            .ingress
            .class_name
            .clone()
            .or_else(|| config.ingress.class_name.clone()),
        ingress_annotations,
        tls_secret_name: config.ingress.tls_secret_name.clone(),
        ingress_controller_namespace: config.ingress.controller_namespace.clone(),
        restarted_at: spec.restarted_at.clone().filter(|r| !r.is_empty()),
        links: p.links.clone(),
        credentials_reader: config.credentials_reader.clone(),
        name,
    })
}

/// The image the installation asks for must be allowed by its profile.
fn check_images(image: Option<&str>, profile: &InstallationProfile) -> Result<(), PlanError> {
    let p = &profile.spec;
    match image {
        Some(image) if !image_allowed(image, &p.image, &p.allowed_images) => {
            Err(PlanError::ImageNotAllowed {
                image: image.to_string(),
                profile: profile.metadata.name.clone().unwrap_or_default(),
                allowed: std::iter::once(p.image.as_str())
                    .chain(p.allowed_images.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
        _ => Ok(()),
    }
}

/// Secrets named in the installation's own spec must be listed in the
/// profile's `sharedSecrets` (the profile's own env is trusted).
fn check_spec_secrets(
    spec: &crate::api::TestInstallationSpec,
    profile: &InstallationProfile,
    config: &ControllerConfig,
) -> Result<(), PlanError> {
    let from_spec = spec_env_refs(&spec.env)
        .map(|r| (&r.namespace, &r.name))
        .chain(
            spec.database
                .iter()
                .filter_map(|d| d.secret_ref.as_ref())
                .chain(spec.filestore.iter().filter_map(|f| f.secret_ref.as_ref()))
                .map(|r| (&r.namespace, &r.name)),
        );
    for (namespace, name) in from_spec {
        if let Some(why) = forbidden_secret_namespace(
            namespace,
            config.own_namespace.as_deref(),
            &config.namespace_prefix,
        ) {
            return Err(PlanError::SecretNamespaceForbidden {
                namespace: namespace.clone(),
                name: name.clone(),
                why,
            });
        }
        let listed = profile
            .spec
            .shared_secrets
            .iter()
            .any(|s| s.split_once('/') == Some((namespace.as_str(), name.as_str())));
        if !listed {
            let allowed = &profile.spec.shared_secrets;
            return Err(PlanError::SecretNotAllowedByProfile {
                namespace: namespace.clone(),
                name: name.clone(),
                profile: profile.metadata.name.clone().unwrap_or_default(),
                allowed: if allowed.is_empty() {
                    "none".into()
                } else {
                    allowed.join(", ")
                },
            });
        }
    }
    Ok(())
}

fn spec_env_refs(env: &[EnvVar]) -> impl Iterator<Item = &SecretKeyRef> {
    env.iter()
        .filter_map(|e| e.value_from.as_ref().map(|v| &v.secret_key_ref))
}

/// Every Secret (namespace, name) an installation reads from outside its
/// own namespace.
pub fn referenced_secrets<'a>(
    spec_env: impl Iterator<Item = &'a SecretKeyRef>,
    database: &DatabasePlan,
    filestore: &FilestorePlan,
    profile_env: &[ProfileEnvVar],
) -> Vec<(String, String)> {
    let mut refs: Vec<(String, String)> = spec_env
        .map(|r| (r.namespace.clone(), r.name.clone()))
        .chain(
            profile_env
                .iter()
                .filter_map(|e| e.secret_key_ref.as_ref())
                .map(|r| (r.namespace.clone(), r.name.clone())),
        )
        .chain(
            database
                .external
                .iter()
                .chain(filestore.external.iter())
                .map(|r| (r.namespace.clone(), r.name.clone())),
        )
        .collect();
    refs.sort();
    refs.dedup();
    refs
}

impl Plan {
    /// The image reference of `version`: `repo:tag` or `repo@sha256:...`.
    pub fn image_ref(&self, version: &str) -> String {
        if version.starts_with("sha256:") {
            format!("{}@{version}", self.image)
        } else {
            format!("{}:{version}", self.image)
        }
    }

    /// Every Secret this plan reads from outside the installation's namespace.
    pub fn referenced_secrets(&self) -> Vec<(String, String)> {
        referenced_secrets(
            spec_env_refs(&self.env),
            &self.database,
            &self.filestore,
            &self.profile_env,
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::{InstallationProfileSpec, TestInstallationSpec};

    pub fn profile() -> InstallationProfile {
        let mut p = InstallationProfile::new(
            "default",
            InstallationProfileSpec {
                image: "example.com/app".into(),
                default_version: "1.0.0".into(),
                container_port: 8080,
                run_as_non_root: true,
                ..Default::default()
            },
        );
        p.spec.ttl.default = "48h".into();
        p.spec.ttl.max = "7d".into();
        p
    }

    pub fn installation(spec: TestInstallationSpec) -> TestInstallation {
        TestInstallation::new("demo", spec)
    }

    #[test]
    fn defaults_come_from_profile_and_config() {
        let plan = plan(
            &installation(Default::default()),
            &profile(),
            &ControllerConfig::default(),
        )
        .unwrap();
        assert_eq!(plan.namespace, "ti-demo");
        assert_eq!(plan.url, "https://demo.ephemera.localhost");
        assert_eq!(plan.image_ref(&plan.version), "example.com/app:1.0.0");
        assert_eq!(plan.size, "miniSingleton");
        assert_eq!(plan.replicas, 1);
        assert_eq!(plan.database.engine, DatabaseEngine::Postgres);
        assert_eq!(
            plan.database.image.as_deref(),
            Some("docker.io/library/postgres:16")
        );
        assert_eq!(plan.filestore.kind, FilestoreType::Local);
    }

    #[test]
    fn spec_overrides_profile() {
        let spec = TestInstallationSpec {
            version: Some("sha256:".to_string() + &"a".repeat(64)),
            size: Some("miniHA".into()),
            replicas: Some(3),
            ..Default::default()
        };
        let plan = plan(
            &installation(spec),
            &profile(),
            &ControllerConfig::default(),
        )
        .unwrap();
        assert!(
            plan.image_ref(&plan.version)
                .starts_with("example.com/app@sha256:aaa")
        );
        assert_eq!(plan.size, "miniHA");
        assert_eq!(plan.replicas, 3);
    }

    #[test]
    fn unknown_size_lists_the_available_ones() {
        let spec = TestInstallationSpec {
            size: Some("huge".into()),
            ..Default::default()
        };
        let err = plan(
            &installation(spec),
            &profile(),
            &ControllerConfig::default(),
        )
        .unwrap_err();
        assert_eq!(err.reason(), "UnknownSize");
        let text = err.to_string();
        assert!(
            text.contains("huge") && text.contains("miniSingleton, miniHA"),
            "{text}"
        );
    }

    #[test]
    fn test_data_needs_a_seed_command() {
        let spec = TestInstallationSpec {
            test_data: true,
            ..Default::default()
        };
        let err = plan(
            &installation(spec),
            &profile(),
            &ControllerConfig::default(),
        )
        .unwrap_err();
        assert_eq!(err.reason(), "NoSeedCommand");
    }

    #[test]
    fn secrets_only_from_allowed_namespaces() {
        let spec = TestInstallationSpec {
            env: vec![EnvVar {
                name: "API_TOKEN".into(),
                value: None,
                value_from: Some(crate::api::EnvVarSource {
                    secret_key_ref: SecretKeyRef {
                        name: "tokens".into(),
                        namespace: "kube-system".into(),
                        key: "t".into(),
                    },
                }),
            }],
            ..Default::default()
        };
        let err = plan(
            &installation(spec),
            &profile(),
            &ControllerConfig::default(),
        )
        .unwrap_err();
        assert_eq!(err.reason(), "SecretNamespaceNotAllowed");
        assert!(err.to_string().contains("kube-system/tokens"));
    }

    fn env_from(namespace: &str, name: &str) -> TestInstallationSpec {
        TestInstallationSpec {
            env: vec![EnvVar {
                name: "SHARED".into(),
                value: None,
                value_from: Some(crate::api::EnvVarSource {
                    secret_key_ref: SecretKeyRef {
                        name: name.into(),
                        namespace: namespace.into(),
                        key: "k".into(),
                    },
                }),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn the_release_namespace_and_kube_namespaces_are_refused_even_if_configured() {
        let config = ControllerConfig {
            allowed_secret_namespaces: vec!["ephemera-system".into(), "kube-system".into()],
            own_namespace: Some("ephemera-system".into()),
            ..Default::default()
        };
        let mut p = profile();
        p.spec.shared_secrets = vec![
            "ephemera-system/ephemera-chat-tokens".into(),
            "kube-system/x".into(),
        ];
        for (ns, name) in [
            ("ephemera-system", "ephemera-chat-tokens"),
            ("kube-system", "x"),
        ] {
            let err = plan(&installation(env_from(ns, name)), &p, &config).unwrap_err();
            assert_eq!(err.reason(), "SecretNamespaceNotAllowed", "{err}");
            assert!(err.to_string().contains("can never hold"), "{err}");
        }
    }

    #[test]
    fn shared_secrets_need_the_profiles_consent() {
        let config = ControllerConfig::default();
        let err = plan(
            &installation(env_from("ephemera-shared-secrets", "db")),
            &profile(),
            &config,
        )
        .unwrap_err();
        assert_eq!(err.reason(), "SecretNotAllowedByProfile");
        assert!(err.to_string().contains("none"), "{err}");
        let mut p = profile();
        p.spec.shared_secrets = vec!["ephemera-shared-secrets/db".into()];
        plan(
            &installation(env_from("ephemera-shared-secrets", "db")),
            &p,
            &config,
        )
        .unwrap();
    }

    #[test]
    fn images_outside_the_profiles_allow_list_are_refused() {
        let mut p = profile();
        p.spec.allowed_images = vec!["ghcr.io/acme/*".into()];
        let with_image = |image: &str| {
            installation(TestInstallationSpec {
                image: Some(image.into()),
                ..Default::default()
            })
        };
        let config = ControllerConfig::default();
        let err = plan(&with_image("docker.io/library/alpine"), &p, &config).unwrap_err();
        assert_eq!(err.reason(), "ImageNotAllowed");
        assert!(err.to_string().contains("ghcr.io/acme/*"), "{err}");
        plan(&with_image("ghcr.io/acme/app"), &p, &config).unwrap();
        plan(&with_image(&p.spec.image.clone()), &p, &config).unwrap();
        // No list: the profile's own image only; `**`: any.
        p.spec.allowed_images.clear();
        let err = plan(&with_image("ghcr.io/acme/app"), &p, &config).unwrap_err();
        assert_eq!(err.reason(), "ImageNotAllowed");
        assert!(err.to_string().contains("allowedImages"), "{err}");
        plan(&with_image(&p.spec.image.clone()), &p, &config).unwrap();
        p.spec.allowed_images = vec!["**".into()];
        plan(&with_image("docker.io/library/alpine"), &p, &config).unwrap();
    }
}
