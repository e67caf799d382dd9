//! The chat adapter's configuration file (YAML). Secrets are never written in
//! it: each secret names a file or an environment variable to read it from.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer};

use crate::api::duration::parse_duration;

/// The configuration as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Names this adapter when several share a cluster (e.g. one per chat
    /// server): it only tells about installations it created, which carry
    /// this value in the `ephemera.dev/chat-instance` label.
    #[serde(default = "default_instance")]
    pub instance: String,
    #[serde(default)]
    pub mattermost: Option<MattermostConfig>,
    #[serde(default)]
    pub slack: Option<SlackConfig>,
    /// Requester ids (as in the `ephemera.dev/requester` label, e.g.
    /// `mattermost.<user id>` or `slack.<team id>.<user id>`) that may act on
    /// any installation.
    #[serde(default)]
    pub admins: Vec<String>,
    /// Most installations one person may have at once (not counting those
    /// being deleted).
    #[serde(default = "default_max_per_user")]
    pub max_installations_per_user: usize,
    /// Defaults for `create` when the command does not say.
    #[serde(default)]
    pub defaults: CreateDefaults,
    /// How long before `status.expiresAt` the requester is warned.
    #[serde(
        default = "default_expiry_warning",
        deserialize_with = "human_duration"
    )]
    pub expiry_warning: Duration,
    /// How long a deleted installation waits for its deletion message when
    /// the requester cannot be told (deactivated user, closed DM, platform
    /// down); then the adapter gives up (log, metric, Event) and lets it go.
    #[serde(default = "default_give_up_after", deserialize_with = "human_duration")]
    pub give_up_after: Duration,
    /// Largest request body accepted on the command endpoints.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateDefaults {
    pub profile: Option<String>,
    pub ttl: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MattermostConfig {
    /// The Mattermost site URL; the REST API is under `<url>/api/v4`.
    pub url: String,
    /// The bot account's access token (`Authorization: Bearer`).
    pub bot_token: SecretSource,
    /// Tokens of the slash command; several allow rotation.
    pub command_tokens: Vec<SecretSource>,
    /// When set, only these team ids may use the command.
    #[serde(default)]
    pub allowed_teams: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlackConfig {
    /// Base URL of the Web API.
    #[serde(default = "default_slack_api_url")]
    pub api_url: String,
    /// The bot token (`xoxb-…`).
    pub bot_token: SecretSource,
    /// The app's signing secret.
    pub signing_secret: SecretSource,
    /// When set, only these workspace (team) ids may use the command.
    #[serde(default)]
    pub allowed_teams: Vec<String>,
}

/// Where a secret is read from: `{file: PATH}` or `{env: NAME}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Named {
                #[serde(default)]
                file: Option<PathBuf>,
                #[serde(default)]
                env: Option<String>,
            },
            Inline(serde::de::IgnoredAny),
        }
        use serde::de::Error;
        match Raw::deserialize(deserializer)? {
            Raw::Named {
                file: Some(file),
                env: None,
            } => Ok(SecretSource::File(file)),
            Raw::Named {
                file: None,
                env: Some(env),
            } => Ok(SecretSource::Env(env)),
            Raw::Named { .. } => Err(D::Error::custom(
                "a secret needs exactly one of `file: PATH` or `env: NAME`",
            )),
            Raw::Inline(_) => Err(D::Error::custom(
                "secrets are never written in the config: use `{file: PATH}` or `{env: NAME}`",
            )),
        }
    }
}

impl SecretSource {
    /// Reads the secret (surrounding whitespace trimmed). An empty or
    /// missing secret is an error, so the adapter refuses to start with it.
    pub fn read(&self) -> anyhow::Result<Secret> {
        let value = match self {
            SecretSource::File(path) => std::fs::read_to_string(path).map_err(|err| {
                anyhow::anyhow!("cannot read secret file {}: {err}", path.display())
            })?,
            SecretSource::Env(name) => std::env::var(name)
                .map_err(|_| anyhow::anyhow!("environment variable {name} is not set"))?,
        };
        let value = value.trim();
        if value.is_empty() {
            anyhow::bail!("the secret from {self} is empty");
        }
        Ok(Secret::new(value.to_string()))
    }
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::File(path) => write!(f, "file {}", path.display()),
            SecretSource::Env(name) => write!(f, "environment variable {name}"),
        }
    }
}

pub use crate::adapters::secret::Secret;

impl Config {
    pub fn from_yaml(text: &str) -> anyhow::Result<Self> {
        let mut config: Config = serde_yaml::from_str(text)?;
        if config.mattermost.is_none() && config.slack.is_none() {
            anyhow::bail!("configure at least one of `mattermost` or `slack`");
        }
        if let Some(mm) = &config.mattermost
            && mm.command_tokens.is_empty()
        {
            anyhow::bail!("mattermost.commandTokens needs at least one token");
        }
        if crate::adapters::chat::messenger::label_safe(&config.instance) != config.instance
            || config.instance.is_empty()
        {
            anyhow::bail!(
                "instance {:?} must be a label value: letters, digits, '-', '_', '.', at most 63",
                config.instance
            );
        }
        if config.max_installations_per_user == 0 {
            anyhow::bail!("maxInstallationsPerUser must be at least 1");
        }
        if let Some(ttl) = &config.defaults.ttl {
            let ttl = parse_duration(ttl).map_err(|err| anyhow::anyhow!("defaults.ttl: {err}"))?;
            config.defaults.ttl = Some(crate::api::duration::format_duration(ttl));
        }
        Ok(config)
    }

    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", path.display()))?;
        Self::from_yaml(&text).map_err(|err| anyhow::anyhow!("{}: {err:#}", path.display()))
    }

    /// Reads every secret the config names; fails on the first missing or
    /// empty one.
    pub fn resolve_secrets(&self) -> anyhow::Result<Secrets> {
        let mattermost = match &self.mattermost {
            Some(mm) => Some(MattermostSecrets {
                bot_token: mm
                    .bot_token
                    .read()
                    .map_err(|e| anyhow::anyhow!("mattermost.botToken: {e}"))?,
                command_tokens: mm
                    .command_tokens
                    .iter()
                    .map(|s| s.read())
                    .collect::<anyhow::Result<_>>()
                    .map_err(|e| anyhow::anyhow!("mattermost.commandTokens: {e}"))?,
            }),
            None => None,
        };
        let slack = match &self.slack {
            Some(slack) => Some(SlackSecrets {
                bot_token: slack
                    .bot_token
                    .read()
                    .map_err(|e| anyhow::anyhow!("slack.botToken: {e}"))?,
                signing_secret: slack
                    .signing_secret
                    .read()
                    .map_err(|e| anyhow::anyhow!("slack.signingSecret: {e}"))?,
            }),
            None => None,
        };
        Ok(Secrets { mattermost, slack })
    }
}

#[derive(Debug, Clone)]
pub struct Secrets {
    pub mattermost: Option<MattermostSecrets>,
    pub slack: Option<SlackSecrets>,
}

#[derive(Debug, Clone)]
pub struct MattermostSecrets {
    pub bot_token: Secret,
    pub command_tokens: Vec<Secret>,
}

#[derive(Debug, Clone)]
pub struct SlackSecrets {
    pub bot_token: Secret,
    pub signing_secret: Secret,
}

fn default_instance() -> String {
    "default".into()
}

fn default_max_per_user() -> usize {
    3
}

fn default_expiry_warning() -> Duration {
    Duration::from_secs(3600)
}

fn default_give_up_after() -> Duration {
    Duration::from_secs(10 * 60)
}

fn default_max_body_bytes() -> usize {
    64 * 1024
}

fn default_slack_api_url() -> String {
    "https://slack.com/api".into()
}

fn human_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
mattermost:
  url: http://127.0.0.1:8065
  botToken: {env: MM_BOT}
  commandTokens:
    - {file: /run/secrets/mm-command}
    - {env: MM_COMMAND_OLD}
  allowedTeams: [team1]
slack:
  botToken: {env: SLACK_BOT}
  signingSecret: {file: /run/secrets/slack-signing}
admins: [mattermost.abc]
maxInstallationsPerUser: 2
defaults: {profile: default, ttl: 24h}
expiryWarning: 30m
"#;

    #[test]
    fn reads_a_full_config() {
        let config = Config::from_yaml(FULL).unwrap();
        let mm = config.mattermost.unwrap();
        assert_eq!(mm.command_tokens.len(), 2);
        assert_eq!(
            mm.command_tokens[0],
            SecretSource::File("/run/secrets/mm-command".into())
        );
        assert_eq!(config.slack.unwrap().api_url, "https://slack.com/api");
        assert_eq!(config.expiry_warning, Duration::from_secs(1800));
        assert_eq!(config.max_installations_per_user, 2);
    }

    #[test]
    fn refuses_inline_secrets_and_ambiguous_sources() {
        let inline = FULL.replace("{env: MM_BOT}", "\"xoxb-123\"");
        let err = Config::from_yaml(&inline).unwrap_err().to_string();
        assert!(err.contains("never written in the config"), "{err}");
        let both = FULL.replace("{env: MM_BOT}", "{env: A, file: /b}");
        let err = Config::from_yaml(&both).unwrap_err().to_string();
        assert!(err.contains("exactly one of"), "{err}");
    }

    #[test]
    fn refuses_unknown_keys_and_empty_configs() {
        assert!(Config::from_yaml("admins: []").is_err());
        let typo = FULL.replace("admins:", "admin:");
        assert!(Config::from_yaml(&typo).is_err());
    }

    #[test]
    fn empty_or_missing_secret_is_an_error() {
        let dir = std::env::temp_dir().join(format!("ephemera-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, "  \n").unwrap();
        let err = SecretSource::File(empty).read().unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        let err = SecretSource::Env("EPHEMERA_TEST_SURELY_UNSET_VAR".into())
            .read()
            .unwrap_err()
            .to_string();
        assert!(err.contains("not set"), "{err}");
        let full = dir.join("full");
        std::fs::write(&full, "s3cret\n").unwrap();
        let secret = SecretSource::File(full).read().unwrap();
        assert_eq!(secret.expose(), "s3cret");
        assert!(!format!("{secret:?}").contains("s3cret"));
    }
}
