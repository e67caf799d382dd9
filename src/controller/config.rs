//! Controller settings, read from a YAML file (`ephemera controller --config`).
//! Every key is optional; the defaults suit the local control plane.

use std::{collections::BTreeMap, path::Path};

use serde::Deserialize;

#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ControllerConfig {
    /// Prefix of each installation's namespace: `<prefix><name>`.
    pub namespace_prefix: String,
    /// Installations are served at `<name>.<baseDomain>`.
    pub base_domain: String,
    /// `https` or `http`, for the URL shown to people.
    pub url_scheme: String,
    pub ingress: IngressConfig,
    /// Namespaces whose Secrets installations may reference (external
    /// database, s3 file store, env `valueFrom`). Nothing else is readable
    /// through a TestInstallation. They must hold nothing but Secrets meant
    /// for installations: `kube-system`, the other `kube-*` namespaces,
    /// `default`, the controller's own namespace and installation namespaces
    /// are refused (see docs/security.md).
    pub allowed_secret_namespaces: Vec<String>,
    pub images: Images,
    /// Installations reconciled at the same time (8 measured best at 100
    /// installations on 2 cores; see docs/operations.md).
    pub concurrency: u16,
    /// Most installations in the cluster at once; more wait in `Pending`.
    pub max_installations: Option<u32>,
    /// Most installations per `ephemera.dev/requester`; more wait in `Pending`.
    pub max_per_requester: Option<u32>,
    /// How often namespaces left without an installation are looked for.
    pub orphan_sweep_interval: String,
    /// Label selector: only TestInstallations matching it are reconciled
    /// (for running a canary controller beside the main one, or one
    /// controller per test binary). Empty means all.
    pub installation_selector: Option<String>,
    /// Elect one leader among several replicas over a Lease (see
    /// `leader`); absent, this process reconciles on its own.
    pub leader_election: Option<super::leader::LeaderElection>,
    /// Who may read the generated `credentials` Secret of each installation
    /// (the chat adapter, to send them to the requester): the controller
    /// binds that ServiceAccount to the ClusterRole in every installation
    /// namespace, so no cluster-wide Secret access is needed. Absent, no
    /// binding is made.
    pub credentials_reader: Option<CredentialsReader>,
    /// How long finished TestRuns are kept before they are deleted, like
    /// `7d` or `12h`.
    pub run_retention: String,
    /// The namespace the controller runs in (never a shared-secrets
    /// namespace); found at start, not configured.
    #[serde(skip)]
    pub own_namespace: Option<String>,
}

/// A ServiceAccount that gets `clusterRole` (which should grant `get` on
/// the Secret `credentials` only) in each installation namespace.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialsReader {
    /// `namespace/name` of the ServiceAccount.
    pub service_account: String,
    pub cluster_role: String,
}

impl CredentialsReader {
    /// The ServiceAccount's namespace and name.
    pub fn subject(&self) -> Option<(&str, &str)> {
        let (namespace, name) = self.service_account.split_once('/')?;
        let valid = |part: &str| {
            !part.is_empty()
                && part.len() <= 253
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        };
        (valid(namespace) && valid(name)).then_some((namespace, name))
    }
}

/// The dedicated namespace for Secrets that installations may reference.
pub const DEFAULT_SHARED_SECRETS_NAMESPACE: &str = "ephemera-shared-secrets";

/// Why `namespace` may never be a shared-secrets namespace, if so.
/// `own_namespace` is where the controller (and the adapters, with their
/// tokens) run; `namespace_prefix` marks installation namespaces.
pub fn forbidden_secret_namespace(
    namespace: &str,
    own_namespace: Option<&str>,
    namespace_prefix: &str,
) -> Option<&'static str> {
    if namespace.starts_with("kube-") {
        Some("it belongs to Kubernetes itself")
    } else if namespace == "default" {
        Some("it is the cluster's default namespace and holds other workloads' Secrets")
    } else if Some(namespace) == own_namespace {
        Some("it is ephemera's own namespace and holds the adapters' and controller's tokens")
    } else if namespace.starts_with(namespace_prefix) {
        Some("it is (or may become) an installation's own namespace")
    } else {
        None
    }
}

/// The namespace this process runs in: `POD_NAMESPACE`, else the
/// ServiceAccount's namespace file; `None` outside a cluster.
pub fn own_namespace() -> Option<String> {
    std::env::var("POD_NAMESPACE")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace").ok()
        })
        .map(|ns| ns.trim().to_string())
        .filter(|ns| !ns.is_empty())
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            namespace_prefix: "ti-".into(),
            base_domain: "ephemera.localhost".into(),
            url_scheme: "https".into(),
            ingress: IngressConfig::default(),
            allowed_secret_namespaces: vec![DEFAULT_SHARED_SECRETS_NAMESPACE.into()],
            images: Images::default(),
            concurrency: 8,
            max_installations: None,
            max_per_requester: None,
            orphan_sweep_interval: "5m".into(),
            installation_selector: None,
            leader_election: None,
            credentials_reader: None,
            run_retention: "7d".into(),
            own_namespace: None,
        }
    }
}

#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IngressConfig {
    /// IngressClass of every Ingress (a profile may override it).
    pub class_name: Option<String>,
    /// Annotations on every Ingress, e.g. cert-manager's cluster-issuer.
    pub annotations: BTreeMap<String, String>,
    /// Secret holding a TLS certificate for `*.<baseDomain>`; when set the
    /// Ingress lists it for its host.
    pub tls_secret_name: Option<String>,
    /// Namespace of the ingress controller: the only namespace, besides the
    /// installation's own, that its NetworkPolicy admits traffic from.
    pub controller_namespace: String,
}

/// Images of the parts ephemera runs itself. The tag of the database comes
/// from the installation or profile (`database.version`).
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Images {
    pub postgres: String,
    pub postgres_default_version: String,
    pub mysql: String,
    pub mysql_default_version: String,
    pub minio: String,
    pub minio_client: String,
}

impl Default for Images {
    fn default() -> Self {
        Self {
            postgres: "docker.io/library/postgres".into(),
            postgres_default_version: "16".into(),
            mysql: "docker.io/library/mysql".into(),
            mysql_default_version: "8.4".into(),
            minio: "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z".into(),
            minio_client: "quay.io/minio/mc:RELEASE.2025-04-16T18-13-26Z".into(),
        }
    }
}

impl ControllerConfig {
    /// Reads the config file; unknown keys are errors, so typos are caught.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            anyhow::anyhow!("cannot read controller config {}: {err}", path.display())
        })?;
        let mut config: Self = serde_yaml::from_str(&text).map_err(|err| {
            anyhow::anyhow!("controller config {} is invalid: {err}", path.display())
        })?;
        config.own_namespace = own_namespace();
        config.check()?;
        Ok(config)
    }

    /// Checks values the types cannot.
    pub fn check(&self) -> anyhow::Result<()> {
        let prefix_ok = !self.namespace_prefix.is_empty()
            && self.namespace_prefix.len() <= 22
            && self
                .namespace_prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && self
                .namespace_prefix
                .starts_with(|c: char| c.is_ascii_lowercase());
        if !prefix_ok {
            anyhow::bail!(
                "namespacePrefix {:?} must be 1-22 lowercase letters, digits or '-', starting with a letter",
                self.namespace_prefix
            );
        }
        if self.url_scheme != "https" && self.url_scheme != "http" {
            anyhow::bail!("urlScheme must be http or https, not {:?}", self.url_scheme);
        }
        if self.base_domain.is_empty() {
            anyhow::bail!("baseDomain must not be empty");
        }
        if self.concurrency == 0 {
            anyhow::bail!("concurrency must be at least 1");
        }
        crate::api::duration::parse_duration(&self.orphan_sweep_interval)
            .map_err(|err| anyhow::anyhow!("orphanSweepInterval: {err}"))?;
        crate::api::duration::parse_duration(&self.run_retention)
            .map_err(|err| anyhow::anyhow!("runRetention: {err}"))?;
        if let Some(election) = &self.leader_election {
            election.timing()?;
        }
        self.check_secret_namespaces(self.own_namespace.as_deref())?;
        if let Some(reader) = &self.credentials_reader {
            if reader.subject().is_none() {
                anyhow::bail!(
                    "credentialsReader.serviceAccount must be namespace/name, not {:?}",
                    reader.service_account
                );
            }
            if reader.cluster_role.is_empty() {
                anyhow::bail!("credentialsReader.clusterRole must not be empty");
            }
        }
        Ok(())
    }

    /// Refuses shared-secrets namespaces that hold other Secrets.
    pub fn check_secret_namespaces(&self, own_namespace: Option<&str>) -> anyhow::Result<()> {
        for namespace in &self.allowed_secret_namespaces {
            if let Some(why) =
                forbidden_secret_namespace(namespace, own_namespace, &self.namespace_prefix)
            {
                anyhow::bail!(
                    "allowedSecretNamespaces must not list {namespace:?}: {why}; use a dedicated namespace such as {DEFAULT_SHARED_SECRETS_NAMESPACE}"
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let config: ControllerConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(config, ControllerConfig::default());
        config.check().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(serde_yaml::from_str::<ControllerConfig>("baseDomian: x").is_err());
        let config: ControllerConfig = serde_yaml::from_str("namespacePrefix: Bad_").unwrap();
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("namespacePrefix"), "{err}");
    }

    #[test]
    fn namespaces_holding_other_secrets_cannot_be_shared_secret_namespaces() {
        let with = |ns: &str| ControllerConfig {
            allowed_secret_namespaces: vec![DEFAULT_SHARED_SECRETS_NAMESPACE.into(), ns.into()],
            ..Default::default()
        };
        for ns in [
            "kube-system",
            "kube-public",
            "default",
            "ephemera-system",
            "ti-x",
        ] {
            let err = with(ns)
                .check_secret_namespaces(Some("ephemera-system"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(ns), "{err}");
        }
        with("team-secrets")
            .check_secret_namespaces(Some("ephemera-system"))
            .unwrap();
    }
}
