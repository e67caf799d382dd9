//! `/testenv ...`, `/e2e-test` and `/e2e-cancel` commands in pull-request
//! comments.
//!
//! Only a line that starts with one of the prefixes counts; text in fenced or indented
//! code blocks and in quotes is ignored, so quoting someone's command or
//! showing the syntax does not run it. The first command line of a comment
//! is the command; arguments are split like a shell would, never run by one.

use std::{collections::BTreeMap, time::Duration};

use crate::api::duration::parse_duration;

pub const PREFIX: &str = "/testenv";
/// Runs a test suite of the PR's installation (Mattermost's spelling).
pub const E2E_TEST: &str = "/e2e-test";
/// Cancels the PR's unfinished runs of a suite.
pub const E2E_CANCEL: &str = "/e2e-cancel";
const PREFIXES: [&str; 3] = [PREFIX, E2E_TEST, E2E_CANCEL];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Deploy {
        size: Option<String>,
        test_data: bool,
    },
    Destroy,
    Status,
    Extend(Duration),
    Help,
    /// `/e2e-test [SUITE]`: without a suite, the profile's first one.
    Test {
        suite: Option<String>,
    },
    /// `/e2e-cancel [SUITE]`: without a suite, every unfinished suite run.
    Cancel {
        suite: Option<String>,
    },
    /// `/testenv run ACTION [--param value ...]`: parameters are text here;
    /// they are checked against the profile's declaration before anything
    /// is created.
    Run {
        action: String,
        parameters: BTreeMap<String, String>,
    },
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Deploy { .. } => "deploy",
            Command::Destroy => "destroy",
            Command::Status => "status",
            Command::Extend(_) => "extend",
            Command::Help => "help",
            Command::Test { .. } => "e2e-test",
            Command::Cancel { .. } => "e2e-cancel",
            Command::Run { .. } => "run",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("`/testenv` needs a subcommand")]
    MissingSubcommand,
    #[error("unknown subcommand `{0}`")]
    UnknownSubcommand(String),
    #[error("`{0}` is not an option of `/testenv {1}`")]
    UnknownOption(String, &'static str),
    #[error("`{0}` needs a value")]
    MissingValue(&'static str),
    #[error("unexpected argument `{0}` for `/testenv {1}`")]
    UnexpectedArgument(String, &'static str),
    #[error("size `{0}` is not a size class name (letters and digits, like miniHA)")]
    BadSize(String),
    #[error("`/testenv extend` needs a duration like 24h: {0}")]
    BadDuration(String),
    #[error("the command line has an unbalanced quote")]
    Unbalanced,
    #[error("`{0}` is not a test or action name (lowercase letters, digits and '-')")]
    BadRunName(String),
    #[error("`/testenv run` needs the name of an action")]
    MissingAction,
    #[error("`{0}` is not a parameter option: write `--NAME value` with a lowercase name")]
    BadParameter(String),
    #[error("parameter `{0}` is given twice")]
    DuplicateParameter(String),
}

/// The command in a comment body: `None` when there is none, `Some(Err)` when
/// a command line is there but malformed.
pub fn find_command(body: &str) -> Option<Result<Command, CommandError>> {
    command_lines(body).next().map(|line| parse_line(&line))
}

/// Lines outside code blocks and quotes that start with the prefix.
fn command_lines(body: &str) -> impl Iterator<Item = String> + '_ {
    let mut fence: Option<String> = None;
    body.lines().filter_map(move |raw| {
        let line = raw.trim_end_matches('\r');
        let indent = line.len() - line.trim_start_matches(' ').len();
        let trimmed = line.trim_start();
        if let Some(open) = &fence {
            if trimmed.starts_with(open.as_str()) && indent < 4 {
                fence = None;
            }
            return None;
        }
        if indent < 4 {
            for marker in ["```", "~~~"] {
                if trimmed.starts_with(marker) {
                    let run: String = trimmed
                        .chars()
                        .take_while(|c| *c == marker.as_bytes()[0] as char)
                        .collect();
                    fence = Some(run);
                    return None;
                }
            }
        }
        if indent >= 4 || line.starts_with('\t') || trimmed.starts_with('>') {
            return None;
        }
        PREFIXES.iter().find_map(|prefix| {
            let rest = trimmed.strip_prefix(prefix)?;
            (rest.is_empty() || rest.starts_with(char::is_whitespace)).then(|| trimmed.to_string())
        })
    })
}

fn parse_line(line: &str) -> Result<Command, CommandError> {
    let words = shlex::split(line).ok_or(CommandError::Unbalanced)?;
    let mut words = words.into_iter();
    let prefix = words.next().unwrap_or_default();
    if prefix == E2E_TEST || prefix == E2E_CANCEL {
        let suite = optional_run_name(words.collect(), &prefix)?;
        return Ok(if prefix == E2E_TEST {
            Command::Test { suite }
        } else {
            Command::Cancel { suite }
        });
    }
    let sub = words.next().ok_or(CommandError::MissingSubcommand)?;
    let rest: Vec<String> = words.collect();
    match sub.as_str() {
        "run" => parse_run(rest),
        "deploy" => parse_deploy(rest),
        "destroy" => no_arguments(rest, "destroy", Command::Destroy),
        "status" => no_arguments(rest, "status", Command::Status),
        "help" => no_arguments(rest, "help", Command::Help),
        "extend" => {
            let mut rest = rest.into_iter();
            let text = rest.next().ok_or(CommandError::MissingValue("extend"))?;
            if let Some(extra) = rest.next() {
                return Err(CommandError::UnexpectedArgument(extra, "extend"));
            }
            parse_duration(&text)
                .map(Command::Extend)
                .map_err(|err| CommandError::BadDuration(err.to_string()))
        }
        other => Err(CommandError::UnknownSubcommand(other.to_string())),
    }
}

fn no_arguments(
    rest: Vec<String>,
    name: &'static str,
    command: Command,
) -> Result<Command, CommandError> {
    match rest.into_iter().next() {
        None => Ok(command),
        Some(extra) if extra.starts_with('-') => Err(CommandError::UnknownOption(extra, name)),
        Some(extra) => Err(CommandError::UnexpectedArgument(extra, name)),
    }
}

fn parse_deploy(rest: Vec<String>) -> Result<Command, CommandError> {
    let mut size = None;
    let mut test_data = false;
    let mut words = rest.into_iter();
    while let Some(word) = words.next() {
        let (flag, inline) = match word.split_once('=') {
            Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
            None => (word.clone(), None),
        };
        match flag.as_str() {
            "--size" => {
                let value = match inline {
                    Some(value) => value,
                    None => words.next().ok_or(CommandError::MissingValue("--size"))?,
                };
                if !is_size_name(&value) {
                    return Err(CommandError::BadSize(value));
                }
                size = Some(value);
            }
            "--test-data" if inline.is_none() => test_data = true,
            _ if word.starts_with('-') => {
                return Err(CommandError::UnknownOption(word, "deploy"));
            }
            _ => return Err(CommandError::UnexpectedArgument(word, "deploy")),
        }
    }
    Ok(Command::Deploy { size, test_data })
}

/// The one optional suite name of `/e2e-test` and `/e2e-cancel`.
fn optional_run_name(rest: Vec<String>, prefix: &str) -> Result<Option<String>, CommandError> {
    let name: &'static str = if prefix == E2E_TEST {
        "e2e-test"
    } else {
        "e2e-cancel"
    };
    let mut rest = rest.into_iter();
    let Some(suite) = rest.next() else {
        return Ok(None);
    };
    if suite.starts_with('-') {
        return Err(CommandError::UnknownOption(suite, name));
    }
    if let Some(extra) = rest.next() {
        return Err(CommandError::UnexpectedArgument(extra, name));
    }
    if !is_run_name(&suite) {
        return Err(CommandError::BadRunName(suite));
    }
    Ok(Some(suite))
}

fn parse_run(rest: Vec<String>) -> Result<Command, CommandError> {
    let mut words = rest.into_iter();
    let action = words.next().ok_or(CommandError::MissingAction)?;
    if !is_run_name(&action) {
        return Err(CommandError::BadRunName(action));
    }
    let mut parameters = BTreeMap::new();
    while let Some(word) = words.next() {
        let Some(option) = word.strip_prefix("--") else {
            return Err(CommandError::UnexpectedArgument(word, "run"));
        };
        let (name, value) = match option.split_once('=') {
            Some((name, value)) => (name.to_string(), value.to_string()),
            None => {
                let value = words
                    .next()
                    .ok_or_else(|| CommandError::BadParameter(word.clone()))?;
                (option.to_string(), value)
            }
        };
        if !is_parameter_name(&name) {
            return Err(CommandError::BadParameter(word));
        }
        if parameters.insert(name.clone(), value).is_some() {
            return Err(CommandError::DuplicateParameter(name));
        }
    }
    Ok(Command::Run { action, parameters })
}

/// The profile's rule for test and action names.
fn is_run_name(value: &str) -> bool {
    (1..=40).contains(&value.len())
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && !value.ends_with('-')
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The profile's rule for parameter names.
fn is_parameter_name(value: &str) -> bool {
    (1..=40).contains(&value.len())
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn is_size_name(value: &str) -> bool {
    (1..=63).contains(&value.len())
        && value.starts_with(|c: char| c.is_ascii_alphabetic())
        && value.chars().all(|c| c.is_ascii_alphanumeric())
}

/// The reply to `/testenv help` and to malformed commands.
pub fn help_text() -> String {
    format!(
        "Commands (people with write permission on the repository):\n\n\
         | command | what it does |\n|---|---|\n\
         | `{PREFIX} deploy [--size S] [--test-data]` | create the test installation (adds the label) |\n\
         | `{PREFIX} destroy` | delete it (removes the label) |\n\
         | `{PREFIX} status` | show its state |\n\
         | `{PREFIX} extend 24h` | keep it longer (durations like `90m`, `24h`, `2d`) |\n\
         | `{PREFIX} help` | this list |\n\
         | `{E2E_TEST} [SUITE]` | run a test suite of the installation (default: the profile's first) |\n\
         | `{E2E_CANCEL} [SUITE]` | cancel the unfinished runs of a suite (default: all suites) |\n\
         | `{PREFIX} run ACTION [--param value ...]` | run one of the profile's actions |\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(body: &str) -> Option<Result<Command, CommandError>> {
        find_command(body)
    }

    #[test]
    fn parses_every_command() {
        assert_eq!(
            cmd("/testenv deploy"),
            Some(Ok(Command::Deploy {
                size: None,
                test_data: false
            }))
        );
        assert_eq!(
            cmd("please\n/testenv deploy --size miniHA --test-data\nthanks"),
            Some(Ok(Command::Deploy {
                size: Some("miniHA".into()),
                test_data: true
            }))
        );
        assert_eq!(
            cmd("/testenv deploy --size=miniSingleton"),
            Some(Ok(Command::Deploy {
                size: Some("miniSingleton".into()),
                test_data: false
            }))
        );
        assert_eq!(cmd("/testenv destroy"), Some(Ok(Command::Destroy)));
        assert_eq!(cmd("  /testenv status  "), Some(Ok(Command::Status)));
        assert_eq!(cmd("/testenv help"), Some(Ok(Command::Help)));
        assert_eq!(
            cmd("/testenv extend 1h30m"),
            Some(Ok(Command::Extend(Duration::from_secs(5400))))
        );
    }

    #[test]
    fn parses_run_commands() {
        assert_eq!(cmd("/e2e-test"), Some(Ok(Command::Test { suite: None })));
        assert_eq!(
            cmd("thanks!\n/e2e-test smoke"),
            Some(Ok(Command::Test {
                suite: Some("smoke".into())
            }))
        );
        assert_eq!(
            cmd("/e2e-cancel e2e"),
            Some(Ok(Command::Cancel {
                suite: Some("e2e".into())
            }))
        );
        assert_eq!(
            cmd("/e2e-cancel"),
            Some(Ok(Command::Cancel { suite: None }))
        );
        assert_eq!(
            cmd("/testenv run list-users --team core --limit=5 --query 'a b; rm -rf /'"),
            Some(Ok(Command::Run {
                action: "list-users".into(),
                parameters: BTreeMap::from([
                    ("team".into(), "core".into()),
                    ("limit".into(), "5".into()),
                    ("query".into(), "a b; rm -rf /".into()),
                ])
            }))
        );
        assert_eq!(cmd("/e2e-testing"), None);
        assert_eq!(cmd("```\n/e2e-test\n```"), None);
    }

    #[test]
    fn malformed_run_commands_are_specific_errors() {
        assert_eq!(
            cmd("/e2e-test Smoke"),
            Some(Err(CommandError::BadRunName("Smoke".into())))
        );
        assert_eq!(
            cmd("/e2e-test a b"),
            Some(Err(CommandError::UnexpectedArgument(
                "b".into(),
                "e2e-test"
            )))
        );
        assert_eq!(
            cmd("/e2e-cancel --all"),
            Some(Err(CommandError::UnknownOption(
                "--all".into(),
                "e2e-cancel"
            )))
        );
        assert_eq!(cmd("/testenv run"), Some(Err(CommandError::MissingAction)));
        assert_eq!(
            cmd("/testenv run '$(id)'"),
            Some(Err(CommandError::BadRunName("$(id)".into())))
        );
        assert_eq!(
            cmd("/testenv run x --limit"),
            Some(Err(CommandError::BadParameter("--limit".into())))
        );
        assert_eq!(
            cmd("/testenv run x --Limit 3"),
            Some(Err(CommandError::BadParameter("--Limit".into())))
        );
        assert_eq!(
            cmd("/testenv run x --a 1 --a 2"),
            Some(Err(CommandError::DuplicateParameter("a".into())))
        );
        assert_eq!(
            cmd("/testenv run x stray"),
            Some(Err(CommandError::UnexpectedArgument("stray".into(), "run")))
        );
    }

    #[test]
    fn ignores_code_blocks_quotes_and_prose() {
        assert_eq!(cmd("no command here"), None);
        assert_eq!(cmd("run `/testenv deploy` to try"), None);
        assert_eq!(cmd("/testenvdeploy"), None);
        assert_eq!(cmd("```\n/testenv deploy\n```"), None);
        assert_eq!(cmd("~~~sh\n/testenv destroy\n~~~"), None);
        assert_eq!(cmd("````\n```\n/testenv destroy\n````"), None);
        assert_eq!(cmd("> /testenv destroy\nI agree"), None);
        assert_eq!(cmd("    /testenv destroy"), None);
        assert_eq!(
            cmd("```\n/testenv destroy\n```\n/testenv status"),
            Some(Ok(Command::Status))
        );
    }

    #[test]
    fn malformed_commands_are_specific_errors() {
        assert_eq!(cmd("/testenv"), Some(Err(CommandError::MissingSubcommand)));
        assert_eq!(
            cmd("/testenv nuke"),
            Some(Err(CommandError::UnknownSubcommand("nuke".into())))
        );
        assert_eq!(
            cmd("/testenv deploy --force"),
            Some(Err(CommandError::UnknownOption("--force".into(), "deploy")))
        );
        assert_eq!(
            cmd("/testenv deploy --size"),
            Some(Err(CommandError::MissingValue("--size")))
        );
        assert_eq!(
            cmd("/testenv deploy --size '$(rm -rf /)'"),
            Some(Err(CommandError::BadSize("$(rm -rf /)".into())))
        );
        assert_eq!(
            cmd("/testenv destroy now"),
            Some(Err(CommandError::UnexpectedArgument(
                "now".into(),
                "destroy"
            )))
        );
        assert!(matches!(
            cmd("/testenv extend forever"),
            Some(Err(CommandError::BadDuration(_)))
        ));
        assert_eq!(
            cmd("/testenv extend"),
            Some(Err(CommandError::MissingValue("extend")))
        );
        assert_eq!(
            cmd("/testenv deploy --size 'miniHA"),
            Some(Err(CommandError::Unbalanced))
        );
    }
}
