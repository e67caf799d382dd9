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
    /// through a TestInstallation.
    pub allowed_secret_namespaces: Vec<String>,
    pub images: Images,
    /// Installations reconciled at the same time.
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
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            namespace_prefix: "ti-".into(),
            base_domain: "ephemera.localhost".into(),
            url_scheme: "https".into(),
            ingress: IngressConfig::default(),
            allowed_secret_namespaces: vec!["ephemera-system".into()],
            images: Images::default(),
            concurrency: 4,
            max_installations: None,
            max_per_requester: None,
            orphan_sweep_interval: "5m".into(),
            installation_selector: None,
            leader_election: None,
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
        let config: Self = serde_yaml::from_str(&text).map_err(|err| {
            anyhow::anyhow!("controller config {} is invalid: {err}", path.display())
        })?;
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
        if let Some(election) = &self.leader_election {
            election.timing()?;
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
}
