//! `/testenv ...` commands in pull-request comments.
//!
//! Only a line that starts with `/testenv` counts; text in fenced or indented
//! code blocks and in quotes is ignored, so quoting someone's command or
//! showing the syntax does not run it. The first command line of a comment
//! is the command; arguments are split like a shell would, never run by one.

use std::time::Duration;

use crate::api::duration::parse_duration;

pub const PREFIX: &str = "/testenv";

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
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Deploy { .. } => "deploy",
            Command::Destroy => "destroy",
            Command::Status => "status",
            Command::Extend(_) => "extend",
            Command::Help => "help",
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
        let rest = trimmed.strip_prefix(PREFIX)?;
        if rest.is_empty() || rest.starts_with(char::is_whitespace) {
            Some(trimmed.to_string())
        } else {
            None
        }
    })
}

fn parse_line(line: &str) -> Result<Command, CommandError> {
    let words = shlex::split(line).ok_or(CommandError::Unbalanced)?;
    let mut words = words.into_iter().skip(1);
    let sub = words.next().ok_or(CommandError::MissingSubcommand)?;
    let rest: Vec<String> = words.collect();
    match sub.as_str() {
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
         | `{PREFIX} help` | this list |\n"
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
