//! The GitHub adapter's configuration file (YAML) and the secrets it names.
//!
//! Secrets are read from environment variables or files named in the file,
//! never from the file itself, and an empty secret stops the adapter from
//! starting.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::api::duration::parse_duration;

pub use crate::adapters::secret::Secret;

/// Where a secret comes from: exactly one of `env` or `file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Only here to refuse it with a clear message.
    #[serde(default)]
    value: Option<serde_yaml::Value>,
}

impl SecretSource {
    fn resolve(&self, what: &str) -> Result<Secret, ConfigError> {
        let bad = |reason: String| ConfigError::Secret(what.to_string(), reason);
        if self.value.is_some() {
            return Err(bad(
                "secrets are never read from the config file; name an environment variable (env) or a file (file)".into(),
            ));
        }
        let raw = match (&self.env, &self.file) {
            (Some(var), None) => std::env::var(var)
                .map_err(|_| bad(format!("environment variable {var} is not set")))?,
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|err| bad(format!("cannot read {}: {err}", path.display())))?,
            _ => return Err(bad("give exactly one of env or file".into())),
        };
        let value = raw.trim_end_matches(['\n', '\r']).to_string();
        if value.trim().is_empty() {
            return Err(bad("the secret is empty".into()));
        }
        Ok(Secret::new(value))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("config is not valid YAML for the GitHub adapter: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error("secret {0}: {1}")]
    Secret(String, String),
    #[error("{0}")]
    Invalid(String),
}

fn default_instance() -> String {
    "default".into()
}

fn default_delivery_attempts() -> u32 {
    6
}

fn default_delivery_retry_wait() -> String {
    "2s".into()
}

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default = "default_api")]
    pub api_base_url: String,
    /// The login of the adapter on GitHub (`<app-slug>[bot]` for an App);
    /// its own comments and labels are never treated as commands.
    pub bot_login: String,
    /// Names this adapter when several share a cluster: it reports only on
    /// the installations it created (label `ephemera.dev/github-instance`).
    #[serde(default = "default_instance")]
    pub instance: String,
    pub webhook_secrets: Vec<SecretSource>,
    pub auth: RawAuth,
    #[serde(default = "default_body")]
    pub max_body_bytes: usize,
    #[serde(default = "default_queue")]
    pub queue_capacity: usize,
    /// How often a delivery whose handling failed is tried, in all, before
    /// it is given up (answered with a failure reply where it is a command,
    /// or left for GitHub's redelivery).
    #[serde(default = "default_delivery_attempts")]
    pub delivery_attempts: u32,
    /// The wait before the second attempt; it doubles for each next one.
    #[serde(default = "default_delivery_retry_wait")]
    pub delivery_retry_wait: String,
    #[serde(default = "default_ttl")]
    pub default_ttl: String,
    #[serde(default)]
    pub commit_status: bool,
    #[serde(default)]
    pub allow_forks: bool,
    #[serde(default)]
    pub registry: Option<String>,
    #[serde(default = "default_image")]
    pub image: String,
    #[serde(default = "default_labels")]
    pub labels: Vec<LabelSettings>,
    #[serde(default = "default_sizes")]
    pub sizes: Vec<String>,
    pub repositories: Vec<RawRepository>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawAuth {
    #[serde(default)]
    pub token: Option<SecretSource>,
    #[serde(default)]
    pub app: Option<RawApp>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawApp {
    /// The App's client ID (recommended) or numeric App ID: the JWT issuer.
    pub app_id: String,
    pub private_key: SecretSource,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawRepository {
    /// `owner/name`.
    pub name: String,
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub allow_forks: Option<bool>,
}

/// What a label asks for.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSettings {
    pub name: String,
    #[serde(default)]
    pub size: Option<String>,
    #[serde(default)]
    pub test_data: bool,
    /// Start on the profile's default version, then roll to the PR's build.
    #[serde(default)]
    pub upgrade: bool,
    #[serde(default)]
    pub ttl: Option<String>,
    /// A test suite of the profile to run after each successful deploy of
    /// a new head commit (reported like `/e2e-test`).
    #[serde(default)]
    pub run_after_deploy: Option<String>,
}

fn default_api() -> String {
    "https://api.github.com".into()
}
fn default_body() -> usize {
    1024 * 1024
}
fn default_queue() -> usize {
    256
}
fn default_ttl() -> String {
    "48h".into()
}
fn default_image() -> String {
    "{sha7}".into()
}
fn default_sizes() -> Vec<String> {
    vec!["miniSingleton".into(), "miniHA".into()]
}

/// SpinWick's labels.
pub fn default_labels() -> Vec<LabelSettings> {
    vec![
        LabelSettings {
            name: "Setup Test Server".into(),
            ..Default::default()
        },
        LabelSettings {
            name: "Setup HA Test Server".into(),
            size: Some("miniHA".into()),
            ..Default::default()
        },
        LabelSettings {
            name: "Setup Upgrade Test Server".into(),
            upgrade: true,
            ..Default::default()
        },
    ]
}

/// How the adapter authenticates to GitHub.
#[derive(Debug, Clone)]
pub enum Auth {
    Token(Secret),
    App { app_id: String, private_key: Secret },
}

/// One repository the adapter serves.
#[derive(Debug, Clone)]
pub struct Repository {
    pub name: String,
    pub profile: Option<String>,
    pub image: ImageTemplate,
    pub allow_forks: bool,
}

/// The checked, resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub api_base_url: String,
    pub bot_login: String,
    pub instance: String,
    pub webhook_secrets: Vec<Secret>,
    pub auth: Auth,
    pub max_body_bytes: usize,
    pub queue_capacity: usize,
    pub delivery_attempts: u32,
    pub delivery_retry_wait: Duration,
    pub default_ttl: Duration,
    pub commit_status: bool,
    pub labels: Vec<LabelSettings>,
    pub sizes: Vec<String>,
    /// Keyed by lowercase `owner/name` (GitHub names are case-insensitive).
    pub repositories: BTreeMap<String, Repository>,
}

impl Config {
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|err| ConfigError::Read(path.into(), err))?;
        Self::from_yaml(&text)
    }

    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_yaml::from_str(text)?;
        Self::resolve(raw)
    }

    pub fn resolve(raw: RawConfig) -> Result<Self, ConfigError> {
        let base = reqwest::Url::parse(&raw.api_base_url)
            .map_err(|err| invalid(format!("apiBaseUrl {:?}: {err}", raw.api_base_url)))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("apiBaseUrl must be an http(s) URL"));
        }
        if raw.instance.is_empty() || crate::api::labels::label_value(&raw.instance) != raw.instance
        {
            return Err(invalid(format!(
                "instance {:?} must be a label value: letters, digits, '-', '_', '.', at most 63",
                raw.instance
            )));
        }
        if raw.bot_login.trim().is_empty() {
            return Err(invalid("botLogin must name the adapter's GitHub login"));
        }
        if raw.webhook_secrets.is_empty() {
            return Err(invalid(
                "webhookSecrets needs at least one secret (env or file)",
            ));
        }
        let webhook_secrets = raw
            .webhook_secrets
            .iter()
            .enumerate()
            .map(|(i, s)| s.resolve(&format!("webhookSecrets[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let auth = match (&raw.auth.token, &raw.auth.app) {
            (Some(token), None) => Auth::Token(token.resolve("auth.token")?),
            (None, Some(app)) => {
                if app.app_id.trim().is_empty() {
                    return Err(invalid("auth.app.appId is empty"));
                }
                let private_key = app.private_key.resolve("auth.app.privateKey")?;
                jsonwebtoken::EncodingKey::from_rsa_pem(private_key.expose().as_bytes()).map_err(
                    |err| invalid(format!("auth.app.privateKey is not an RSA PEM key: {err}")),
                )?;
                Auth::App {
                    app_id: app.app_id.clone(),
                    private_key,
                }
            }
            _ => return Err(invalid("auth needs exactly one of token or app")),
        };
        if raw.max_body_bytes < 1024 {
            return Err(invalid("maxBodyBytes must be at least 1024"));
        }
        if raw.queue_capacity == 0 {
            return Err(invalid("queueCapacity must be at least 1"));
        }
        if raw.delivery_attempts == 0 {
            return Err(invalid("deliveryAttempts must be at least 1"));
        }
        let delivery_retry_wait = parse_duration(&raw.delivery_retry_wait)
            .map_err(|err| invalid(format!("deliveryRetryWait: {err}")))?;
        let default_ttl = parse_duration(&raw.default_ttl)
            .map_err(|err| invalid(format!("defaultTtl: {err}")))?;
        if raw.labels.is_empty() {
            return Err(invalid("labels must name at least one label"));
        }
        for (i, label) in raw.labels.iter().enumerate() {
            if label.name.trim().is_empty() {
                return Err(invalid(format!("labels[{i}].name is empty")));
            }
            if raw.labels[..i].iter().any(|l| l.name == label.name) {
                return Err(invalid(format!("label {:?} is listed twice", label.name)));
            }
            if let Some(size) = &label.size
                && !raw.sizes.contains(size)
            {
                return Err(invalid(format!(
                    "label {:?} asks for size {size:?}, which is not in sizes {:?}",
                    label.name, raw.sizes
                )));
            }
            if let Some(suite) = &label.run_after_deploy {
                let valid = (1..=40).contains(&suite.len())
                    && suite.starts_with(|c: char| c.is_ascii_lowercase())
                    && suite
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                if !valid {
                    return Err(invalid(format!(
                        "label {:?} runAfterDeploy {suite:?} is not a test suite name (lowercase letters, digits and '-')",
                        label.name
                    )));
                }
            }
            if let Some(ttl) = &label.ttl {
                parse_duration(ttl)
                    .map_err(|err| invalid(format!("label {:?} ttl: {err}", label.name)))?;
            }
        }
        if raw.repositories.is_empty() {
            return Err(invalid(
                "repositories must list at least one owner/name (the allowlist)",
            ));
        }
        let mut repositories = BTreeMap::new();
        for repo in &raw.repositories {
            let parts: Vec<&str> = repo.name.split('/').collect();
            if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
                return Err(invalid(format!(
                    "repository {:?} must be written owner/name",
                    repo.name
                )));
            }
            let template = repo.image.as_deref().unwrap_or(&raw.image);
            let image = ImageTemplate::new(template, raw.registry.as_deref())
                .map_err(|err| invalid(format!("repository {}: {err}", repo.name)))?;
            let key = repo.name.to_ascii_lowercase();
            let entry = Repository {
                name: repo.name.clone(),
                profile: repo.profile.clone(),
                image,
                allow_forks: repo.allow_forks.unwrap_or(raw.allow_forks),
            };
            if repositories.insert(key, entry).is_some() {
                return Err(invalid(format!("repository {} is listed twice", repo.name)));
            }
        }
        Ok(Config {
            api_base_url: raw.api_base_url.trim_end_matches('/').to_string(),
            bot_login: raw.bot_login,
            instance: raw.instance,
            webhook_secrets,
            auth,
            max_body_bytes: raw.max_body_bytes,
            queue_capacity: raw.queue_capacity,
            delivery_attempts: raw.delivery_attempts,
            delivery_retry_wait,
            default_ttl,
            commit_status: raw.commit_status,
            labels: raw.labels,
            sizes: raw.sizes,
            repositories,
        })
    }

    pub fn repository(&self, full_name: &str) -> Option<&Repository> {
        self.repositories.get(&full_name.to_ascii_lowercase())
    }

    pub fn label(&self, name: &str) -> Option<&LabelSettings> {
        self.labels.iter().find(|l| l.name == name)
    }

    /// The first configured label (in config order) among `labels`.
    pub fn active_label<'a>(
        &self,
        labels: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Option<&LabelSettings> {
        self.labels
            .iter()
            .find(|l| labels.clone().into_iter().any(|name| name == l.name))
    }
}

/// `{registry}/{repo}:{sha7}`-style template of the image to run for a
/// commit. Without a `:` it is only the tag and the profile's image is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageTemplate {
    template: String,
    registry: String,
}

/// The image repository (or none: the profile's) and the tag for one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub image: Option<String>,
    pub version: String,
}

impl ImageTemplate {
    pub fn new(template: &str, registry: Option<&str>) -> Result<Self, String> {
        if !template.contains("{sha}") && !template.contains("{sha7}") {
            return Err(format!(
                "image template {template:?} must contain {{sha}} or {{sha7}} so a push changes the version"
            ));
        }
        if template.contains("{registry}") && registry.is_none() {
            return Err(format!(
                "image template {template:?} uses {{registry}} but registry is not set"
            ));
        }
        let this = Self {
            template: template.to_string(),
            registry: registry.unwrap_or_default().to_string(),
        };
        let sample = this.render("owner/repo", 1, &"0".repeat(40))?;
        if let Some(image) = &sample.image
            && !is_image_repository(image)
        {
            return Err(format!(
                "image template {template:?} gives {image:?}, which is not an image repository"
            ));
        }
        Ok(this)
    }

    pub fn render(&self, repository: &str, number: u64, sha: &str) -> Result<ImageRef, String> {
        let (owner, repo) = repository.split_once('/').unwrap_or(("", repository));
        let sha7: String = sha.chars().take(7).collect();
        let text = self
            .template
            .replace("{registry}", &self.registry)
            .replace("{owner}", &owner.to_ascii_lowercase())
            .replace("{repo}", &repo.to_ascii_lowercase())
            .replace("{pr}", &number.to_string())
            .replace("{sha7}", &sha7)
            .replace("{sha}", sha);
        let (image, version) = match text.rsplit_once(':') {
            Some((image, tag)) if !tag.contains('/') => (Some(image.to_string()), tag.to_string()),
            _ if !text.contains('/') => (None, text.clone()),
            _ => return Err(format!("image {text:?} has no tag")),
        };
        if !is_tag(&version) {
            return Err(format!("{version:?} is not a valid image tag"));
        }
        Ok(ImageRef { image, version })
    }
}

fn is_tag(tag: &str) -> bool {
    (1..=128).contains(&tag.len())
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn is_image_repository(image: &str) -> bool {
    !image.is_empty()
        && image.len() <= 255
        && image.split('/').all(|part| {
            let part = part.split_once(':').map_or(part, |(host, _port)| host);
            !part.is_empty()
                && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_file(content: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "ephemera-github-config-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::write(&path, content).unwrap();
        path
    }

    fn yaml(secret: &std::path::Path, extra: &str) -> String {
        format!(
            "botLogin: ephemera[bot]\n\
             webhookSecrets: [{{file: {s}}}]\n\
             auth: {{token: {{file: {s}}}}}\n\
             repositories: [{{name: acme/webapp, profile: generic}}]\n{extra}",
            s = secret.display()
        )
    }

    #[test]
    fn minimal_config_gets_spinwick_defaults() {
        let s = secret_file("hunter2\n");
        let config = Config::from_yaml(&yaml(&s, "")).unwrap();
        assert_eq!(config.webhook_secrets[0].expose(), "hunter2");
        assert_eq!(config.labels, default_labels());
        assert_eq!(config.default_ttl, Duration::from_secs(48 * 3600));
        let repo = config.repository("ACME/WebApp").unwrap();
        assert_eq!(repo.profile.as_deref(), Some("generic"));
        assert!(!repo.allow_forks);
        assert_eq!(config.api_base_url, "https://api.github.com");
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn refuses_empty_missing_and_inline_secrets() {
        let empty = secret_file("\n");
        let err = Config::from_yaml(&yaml(&empty, ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty"), "{err}");
        let s = secret_file("x");
        let inline = yaml(&s, "").replace(
            &format!("webhookSecrets: [{{file: {}}}]", s.display()),
            "webhookSecrets: [{value: hunter2}]",
        );
        let err = Config::from_yaml(&inline).unwrap_err().to_string();
        assert!(err.contains("never read from the config file"), "{err}");
        let missing = yaml(&s, "").replace(
            &format!("webhookSecrets: [{{file: {}}}]", s.display()),
            "webhookSecrets: [{env: EPHEMERA_TEST_SURELY_UNSET_VARIABLE}]",
        );
        let err = Config::from_yaml(&missing).unwrap_err().to_string();
        assert!(err.contains("EPHEMERA_TEST_SURELY_UNSET_VARIABLE"), "{err}");
        let none = yaml(&s, "").replace(
            &format!("webhookSecrets: [{{file: {}}}]", s.display()),
            "webhookSecrets: []",
        );
        assert!(Config::from_yaml(&none).is_err());
    }

    #[test]
    fn refuses_bad_settings_with_specific_messages() {
        let s = secret_file("x");
        for (extra, expected) in [
            ("defaultTtl: forever\n", "defaultTtl"),
            ("image: 'ghcr.io/acme/app:latest'\n", "{sha}"),
            ("image: '{registry}/{repo}:{sha7}'\n", "registry is not set"),
            ("sizes: [small]\n", "not in sizes"),
            ("unknownKey: 1\n", "unknown field"),
            (
                "labels: [{name: x, runAfterDeploy: 'E2E; rm'}]\n",
                "not a test suite name",
            ),
        ] {
            let err = Config::from_yaml(&yaml(&s, extra))
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{extra}: {err}");
        }
        let bad_repo = yaml(&s, "").replace("acme/webapp", "webapp");
        assert!(
            Config::from_yaml(&bad_repo)
                .unwrap_err()
                .to_string()
                .contains("owner/name")
        );
    }

    #[test]
    fn image_template_splits_repository_and_tag() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let t = ImageTemplate::new("{registry}/{repo}:{sha7}", Some("ghcr.io/acme")).unwrap();
        assert_eq!(
            t.render("Acme/WebApp", 5, sha).unwrap(),
            ImageRef {
                image: Some("ghcr.io/acme/webapp".into()),
                version: "0123456".into()
            }
        );
        let t = ImageTemplate::new("localhost:5000/{owner}/{repo}:pr-{pr}-{sha}", None).unwrap();
        let r = t.render("acme/webapp", 5, sha).unwrap();
        assert_eq!(r.image.as_deref(), Some("localhost:5000/acme/webapp"));
        assert_eq!(r.version, format!("pr-5-{sha}"));
        let t = ImageTemplate::new("{sha7}", None).unwrap();
        assert_eq!(
            t.render("acme/webapp", 5, sha).unwrap(),
            ImageRef {
                image: None,
                version: "0123456".into()
            }
        );
        assert!(ImageTemplate::new("Bad Image/{repo}:{sha}", None).is_err());
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/github-config.yaml");
        let mut raw: RawConfig =
            serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(
            raw.webhook_secrets[0].env.as_deref(),
            Some("EPHEMERA_GITHUB_WEBHOOK_SECRET")
        );
        // The environment of the test run has no secrets; read them from a file.
        let file = SecretSource {
            env: None,
            file: Some(secret_file("x")),
            value: None,
        };
        raw.webhook_secrets = vec![file.clone()];
        raw.auth.token = Some(file);
        let config = Config::resolve(raw).unwrap();
        assert_eq!(config.labels, default_labels());
        assert!(config.repository("acme/docs-site").unwrap().allow_forks);
        assert!(!config.repository("acme/webapp").unwrap().allow_forks);
    }

    #[test]
    fn active_label_follows_config_order() {
        let s = secret_file("x");
        let config = Config::from_yaml(&yaml(&s, "")).unwrap();
        let labels = ["bug", "Setup HA Test Server", "Setup Test Server"];
        assert_eq!(
            config.active_label(labels.iter().copied()).unwrap().name,
            "Setup Test Server"
        );
        assert!(config.active_label(["bug"].iter().copied()).is_none());
    }
}
