//! The slash command grammar: a pure parser from the command text to a
//! [`Command`], with a specific error for every way the text can be wrong.

use std::time::Duration;

use crate::api::{
    DatabaseEngine, FilestoreType,
    duration::{format_duration, parse_duration},
};

/// Longest installation name: it prefixes the namespace and the host name.
pub const MAX_NAME_LEN: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Create(CreateArgs),
    List {
        all: bool,
    },
    Status {
        name: String,
    },
    Extend {
        name: String,
        by: Duration,
    },
    Hibernate {
        name: String,
    },
    Wake {
        name: String,
    },
    Lock {
        name: String,
    },
    Unlock {
        name: String,
    },
    Delete {
        name: String,
    },
    /// Runs a test suite (`None`: the profile's first).
    Test {
        name: String,
        suite: Option<String>,
    },
    /// Cancels the unfinished runs of a suite (`None`: of every suite).
    Cancel {
        name: String,
        suite: Option<String>,
    },
    /// Runs an action with its parameters, in the order given.
    Run {
        name: String,
        action: String,
        parameters: Vec<(String, String)>,
    },
    Actions {
        name: String,
    },
    Update {
        name: String,
        change: UpdateArgs,
    },
    Restart {
        name: String,
    },
    Share {
        name: String,
        person: Person,
    },
    Unshare {
        name: String,
        person: Person,
    },
    Help,
}

impl Command {
    /// The subcommand's name, for metrics and logs.
    pub fn verb(&self) -> Verb {
        match self {
            Command::Create(_) => Verb::Create,
            Command::List { .. } => Verb::List,
            Command::Status { .. } => Verb::Status,
            Command::Extend { .. } => Verb::Extend,
            Command::Hibernate { .. } => Verb::Hibernate,
            Command::Wake { .. } => Verb::Wake,
            Command::Lock { .. } => Verb::Lock,
            Command::Unlock { .. } => Verb::Unlock,
            Command::Delete { .. } => Verb::Delete,
            Command::Test { .. } => Verb::Test,
            Command::Cancel { .. } => Verb::Cancel,
            Command::Run { .. } => Verb::Run,
            Command::Actions { .. } => Verb::Actions,
            Command::Update { .. } => Verb::Update,
            Command::Restart { .. } => Verb::Restart,
            Command::Share { .. } => Verb::Share,
            Command::Unshare { .. } => Verb::Unshare,
            Command::Help => Verb::Help,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateArgs {
    pub name: String,
    pub profile: Option<String>,
    pub version: Option<String>,
    pub image: Option<String>,
    pub size: Option<String>,
    pub test_data: bool,
    pub database: Option<DatabaseEngine>,
    pub filestore: Option<FilestoreType>,
    /// Normalised, e.g. `48h` or `1h30m`.
    pub ttl: Option<String>,
    pub upgrade_from: Option<String>,
    /// In the order given; names are unique.
    pub env: Vec<(String, String)>,
}

/// What `update` changes; at least one field is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateArgs {
    pub version: Option<String>,
    pub image: Option<String>,
    pub size: Option<String>,
    /// Set or replaced, in the order given; names are unique.
    pub env: Vec<(String, String)>,
}

/// A person as the command names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Person {
    /// An escaped mention that carries the platform's user id (Slack
    /// `<@U123|alice>`).
    Id { id: String, name: Option<String> },
    /// A user name (`@alice`), to be looked up on the platform.
    Name(String),
}

impl Person {
    /// How to show the person in answers.
    pub fn display(&self) -> String {
        match self {
            Person::Id {
                name: Some(name), ..
            }
            | Person::Name(name) => format!("@{name}"),
            Person::Id { id, name: None } => format!("<@{id}>"),
        }
    }
}

/// The subcommands, also naming which usage line goes with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Create,
    List,
    Status,
    Extend,
    Hibernate,
    Wake,
    Lock,
    Unlock,
    Delete,
    Test,
    Cancel,
    Run,
    Actions,
    Update,
    Restart,
    Share,
    Unshare,
    Help,
}

impl Verb {
    pub const ALL: [Verb; 18] = [
        Verb::Create,
        Verb::List,
        Verb::Status,
        Verb::Extend,
        Verb::Hibernate,
        Verb::Wake,
        Verb::Lock,
        Verb::Unlock,
        Verb::Delete,
        Verb::Update,
        Verb::Restart,
        Verb::Share,
        Verb::Unshare,
        Verb::Test,
        Verb::Cancel,
        Verb::Actions,
        Verb::Run,
        Verb::Help,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::List => "list",
            Verb::Status => "status",
            Verb::Extend => "extend",
            Verb::Hibernate => "hibernate",
            Verb::Wake => "wake",
            Verb::Lock => "lock",
            Verb::Unlock => "unlock",
            Verb::Delete => "delete",
            Verb::Test => "test",
            Verb::Cancel => "cancel",
            Verb::Run => "run",
            Verb::Actions => "actions",
            Verb::Update => "update",
            Verb::Restart => "restart",
            Verb::Share => "share",
            Verb::Unshare => "unshare",
            Verb::Help => "help",
        }
    }

    fn from_word(word: &str) -> Option<Verb> {
        Verb::ALL.into_iter().find(|v| v.as_str() == word)
    }

    /// Arguments after the verb, as shown in usage lines.
    pub fn synopsis(self) -> &'static str {
        match self {
            Verb::Create => {
                "create NAME [--profile P] [--version V] [--image I] [--size S] [--test-data] \
                 [--database postgres|mysql|none] [--filestore local|minio|none] [--ttl D] \
                 [--upgrade-from V] [--env K=V,...]"
            }
            Verb::List => "list [--all]",
            Verb::Status => "status NAME",
            Verb::Extend => "extend NAME DURATION",
            Verb::Hibernate => "hibernate NAME",
            Verb::Wake => "wake NAME",
            Verb::Lock => "lock NAME",
            Verb::Unlock => "unlock NAME",
            Verb::Delete => "delete NAME",
            Verb::Test => "test NAME [SUITE]",
            Verb::Cancel => "cancel NAME [SUITE]",
            Verb::Run => "run NAME ACTION [--PARAMETER VALUE ...]",
            Verb::Actions => "actions NAME",
            Verb::Update => "update NAME [--version V] [--image I] [--size S] [--env K=V,...]",
            Verb::Restart => "restart NAME",
            Verb::Share => "share NAME @PERSON",
            Verb::Unshare => "unshare NAME @PERSON",
            Verb::Help => "help",
        }
    }

    pub fn summary(self) -> &'static str {
        match self {
            Verb::Create => "create an installation; you get a direct message when it is ready",
            Verb::List => "your installations (--all: everyone's)",
            Verb::Status => "phase, URL and expiry of an installation",
            Verb::Extend => "keep an installation until DURATION from now (like 24h or 3d)",
            Verb::Hibernate => "scale an installation to zero, keeping its data",
            Verb::Wake => "bring a hibernated installation back",
            Verb::Lock => "protect an installation from deletion and expiry",
            Verb::Unlock => "allow deletion again",
            Verb::Delete => "delete an installation and all its data",
            Verb::Test => {
                "run a test suite (default: the profile's first); the result comes by direct message"
            }
            Verb::Cancel => "stop the running test suite (or the named one)",
            Verb::Run => {
                "run a predefined operation with its parameters; the result comes by direct message"
            }
            Verb::Actions => {
                "the suites and operations an installation's profile offers, with their parameters"
            }
            Verb::Update => "change the version, image, size or environment of an installation",
            Verb::Restart => "restart the app, pod by pod",
            Verb::Share => "let another person manage an installation too",
            Verb::Unshare => "stop sharing an installation with a person",
            Verb::Help => "this help",
        }
    }
}

/// What was wrong with the text, and which usage line to show with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub problem: String,
    /// `None` when no subcommand was recognised: show every usage line.
    pub usage: Option<Verb>,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.problem)?;
        match self.usage {
            Some(verb) => write!(f, " (usage: {})", verb.synopsis()),
            None => Ok(()),
        }
    }
}

/// Parses the text after the slash command's trigger.
pub fn parse(text: &str) -> Result<Command, ParseError> {
    let words = shlex::split(text).ok_or_else(|| ParseError {
        problem: "the command has an unclosed quote".into(),
        usage: None,
    })?;
    let Some((first, rest)) = words.split_first() else {
        return Ok(Command::Help);
    };
    let Some(verb) = Verb::from_word(first) else {
        return Err(ParseError {
            problem: format!("unknown command {first:?}"),
            usage: None,
        });
    };
    let fail = |problem: String| ParseError {
        problem,
        usage: Some(verb),
    };
    match verb {
        Verb::Create => parse_create(rest).map(Command::Create).map_err(fail),
        Verb::List => {
            let mut all = false;
            for word in rest {
                match word.as_str() {
                    "--all" if !all => all = true,
                    "--all" => return Err(fail("--all is given twice".into())),
                    other if other.starts_with('-') => {
                        return Err(fail(format!("unknown flag {other}")));
                    }
                    other => return Err(fail(format!("unexpected argument {other:?}"))),
                }
            }
            Ok(Command::List { all })
        }
        Verb::Help => match rest {
            [] => Ok(Command::Help),
            [extra, ..] => Err(fail(format!("unexpected argument {extra:?}"))),
        },
        Verb::Extend => {
            let [name, duration] = positionals::<2>(rest, &["NAME", "DURATION"]).map_err(fail)?;
            let name = valid_name(&name).map_err(fail)?;
            let by = parse_duration(&duration).map_err(|err| fail(err.to_string()))?;
            Ok(Command::Extend { name, by })
        }
        Verb::Test | Verb::Cancel => {
            if let Some(flag) = rest.iter().find(|w| w.starts_with('-')) {
                return Err(fail(format!("unknown flag {flag}")));
            }
            let (name, suite) = match rest {
                [] => return Err(fail("NAME is missing".into())),
                [name] => (name, None),
                [name, suite] => (name, Some(valid_run_name(suite, "SUITE").map_err(fail)?)),
                [_, _, extra, ..] => return Err(fail(format!("unexpected argument {extra:?}"))),
            };
            let name = valid_name(name).map_err(fail)?;
            Ok(match verb {
                Verb::Test => Command::Test { name, suite },
                _ => Command::Cancel { name, suite },
            })
        }
        Verb::Run => parse_run(rest).map_err(fail),
        Verb::Update => parse_update(rest).map_err(fail),
        Verb::Share | Verb::Unshare => {
            let [name, person] = positionals::<2>(rest, &["NAME", "PERSON"]).map_err(fail)?;
            let name = valid_name(&name).map_err(fail)?;
            let person = parse_person(&person).map_err(fail)?;
            Ok(match verb {
                Verb::Share => Command::Share { name, person },
                _ => Command::Unshare { name, person },
            })
        }
        Verb::Status
        | Verb::Hibernate
        | Verb::Wake
        | Verb::Lock
        | Verb::Unlock
        | Verb::Delete
        | Verb::Actions
        | Verb::Restart => {
            let [name] = positionals::<1>(rest, &["NAME"]).map_err(fail)?;
            let name = valid_name(&name).map_err(fail)?;
            Ok(match verb {
                Verb::Status => Command::Status { name },
                Verb::Hibernate => Command::Hibernate { name },
                Verb::Wake => Command::Wake { name },
                Verb::Lock => Command::Lock { name },
                Verb::Unlock => Command::Unlock { name },
                Verb::Actions => Command::Actions { name },
                Verb::Restart => Command::Restart { name },
                _ => Command::Delete { name },
            })
        }
    }
}

/// Exactly `N` positional arguments, no flags.
fn positionals<const N: usize>(words: &[String], names: &[&str; N]) -> Result<[String; N], String> {
    if let Some(flag) = words.iter().find(|w| w.starts_with('-')) {
        return Err(format!("unknown flag {flag}"));
    }
    if words.len() < N {
        return Err(format!("{} is missing", names[words.len()]));
    }
    if words.len() > N {
        return Err(format!("unexpected argument {:?}", words[N]));
    }
    Ok(std::array::from_fn(|i| words[i].clone()))
}

/// A DNS label of at most [`MAX_NAME_LEN`] characters, as the API requires.
pub fn valid_name(name: &str) -> Result<String, String> {
    let problem = if name.is_empty() {
        Some("NAME is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("is longer than 40 characters")
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        Some("must start with a lowercase letter")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        Some("may only contain lowercase letters, digits and '-'")
    } else if name.ends_with('-') {
        Some("must end with a letter or digit")
    } else {
        None
    };
    match problem {
        None => Ok(name.to_string()),
        Some(p) if name.is_empty() => Err(p.to_string()),
        Some(p) => Err(format!("name {name:?} {p}")),
    }
}

/// Longest suite, action or parameter name (as the profile allows).
pub const MAX_RUN_NAME_LEN: usize = 40;

/// A suite or action name as the profile declares them: lowercase letters,
/// digits and '-', starting with a letter and ending with a letter or digit.
fn valid_run_name(word: &str, what: &str) -> Result<String, String> {
    let valid = word.len() <= MAX_RUN_NAME_LEN
        && word.starts_with(|c: char| c.is_ascii_lowercase())
        && !word.ends_with('-')
        && word
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(word.to_string())
    } else {
        Err(format!(
            "{what} {word:?} is not a valid name: lowercase letters, digits and '-', \
             starting with a letter, at most {MAX_RUN_NAME_LEN} characters"
        ))
    }
}

/// `NAME ACTION [--PARAMETER VALUE | --PARAMETER=VALUE ...]`. Values are
/// kept as typed (one word each, quotes allowed); the profile decides
/// whether they are valid.
fn parse_run(words: &[String]) -> Result<Command, String> {
    let mut positional: Vec<&String> = Vec::new();
    let mut parameters: Vec<(String, String)> = Vec::new();
    let mut iter = words.iter();
    while let Some(word) = iter.next() {
        let Some(flag_text) = word.strip_prefix("--") else {
            if word.starts_with('-') {
                return Err(format!(
                    "parameter {word} must be written --NAME VALUE (two dashes)"
                ));
            }
            if positional.len() == 2 {
                return Err(format!(
                    "unexpected argument {word:?}; quote a value that has spaces, \
                     like --query 'a b'"
                ));
            }
            positional.push(word);
            continue;
        };
        let (flag, inline_value) = match flag_text.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_string())),
            None => (flag_text, None),
        };
        let valid_flag = flag.len() <= MAX_RUN_NAME_LEN
            && flag.starts_with(|c: char| c.is_ascii_lowercase())
            && flag
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid_flag {
            return Err(format!(
                "--{flag} is not a parameter name: lowercase letters, digits and '-', \
                 starting with a letter"
            ));
        }
        if parameters.iter().any(|(name, _)| name == flag) {
            return Err(format!("--{flag} is given twice"));
        }
        let value = match inline_value {
            Some(v) => v,
            None => match iter.next() {
                Some(v) if !v.starts_with("--") => v.clone(),
                _ => return Err(format!("--{flag} needs a value")),
            },
        };
        parameters.push((flag.to_string(), value));
    }
    let (name, action) = match positional.as_slice() {
        [] => return Err("NAME is missing".into()),
        [_] => return Err("ACTION is missing".into()),
        [name, action] => (valid_name(name)?, valid_run_name(action, "ACTION")?),
        _ => unreachable!("at most two positional words are taken"),
    };
    Ok(Command::Run {
        name,
        action,
        parameters,
    })
}

fn parse_update(words: &[String]) -> Result<Command, String> {
    let mut change = UpdateArgs::default();
    let mut name: Option<String> = None;
    let mut seen: Vec<&str> = Vec::new();
    let mut iter = words.iter();
    while let Some(word) = iter.next() {
        let Some(flag_text) = word.strip_prefix("--") else {
            if word.starts_with('-') {
                return Err(format!("unknown flag {word}"));
            }
            if name.is_some() {
                return Err(format!("unexpected argument {word:?}"));
            }
            name = Some(valid_name(word)?);
            continue;
        };
        let (flag, inline_value) = match flag_text.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_string())),
            None => (flag_text, None),
        };
        let Some(flag) = ["version", "image", "size", "env"]
            .into_iter()
            .find(|k| *k == flag)
        else {
            return Err(format!(
                "unknown flag --{flag}; update changes --version, --image, --size or --env"
            ));
        };
        if seen.contains(&flag) {
            return Err(format!("--{flag} is given twice"));
        }
        seen.push(flag);
        let value = match inline_value {
            Some(v) => v,
            None => match iter.next() {
                Some(v) if !v.starts_with("--") => v.clone(),
                _ => return Err(format!("--{flag} needs a value")),
            },
        };
        if value.is_empty() {
            return Err(format!("--{flag} needs a value"));
        }
        match flag {
            "version" => change.version = Some(value),
            "image" => change.image = Some(value),
            "size" => change.size = Some(value),
            _ => change.env = parse_env(&value)?,
        }
    }
    let name = name.ok_or("NAME is missing")?;
    if seen.is_empty() {
        return Err("nothing to change: give --version, --image, --size or --env".into());
    }
    Ok(Command::Update { name, change })
}

/// `@alice`, or an escaped Slack mention `<@U123|alice>` / `<@U123>`.
fn parse_person(word: &str) -> Result<Person, String> {
    if let Some(inner) = word.strip_prefix("<@").and_then(|w| w.strip_suffix('>')) {
        let (id, name) = match inner.split_once('|') {
            Some((id, name)) => (id, Some(name.to_string())),
            None => (inner, None),
        };
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("PERSON {word:?} is not a mention of a user"));
        }
        return Ok(Person::Id {
            id: id.to_string(),
            name,
        });
    }
    let Some(name) = word.strip_prefix('@') else {
        return Err(format!("PERSON {word:?} must be a mention, like @alice"));
    };
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid {
        return Err(format!(
            "PERSON {word:?} is not a user name: letters, digits, '.', '_' and '-' after the @"
        ));
    }
    Ok(Person::Name(name.to_string()))
}

fn parse_create(words: &[String]) -> Result<CreateArgs, String> {
    let mut args = CreateArgs::default();
    let mut name: Option<String> = None;
    let mut seen: Vec<&str> = Vec::new();
    let mut iter = words.iter();
    while let Some(word) = iter.next() {
        let Some(flag_text) = word.strip_prefix("--") else {
            if word.starts_with('-') {
                return Err(format!("unknown flag {word}"));
            }
            if name.is_some() {
                return Err(format!("unexpected argument {word:?}"));
            }
            name = Some(valid_name(word)?);
            continue;
        };
        let (flag, inline_value) = match flag_text.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_string())),
            None => (flag_text, None),
        };
        let known = [
            "profile",
            "version",
            "image",
            "size",
            "test-data",
            "database",
            "filestore",
            "ttl",
            "upgrade-from",
            "env",
        ];
        let Some(flag) = known.into_iter().find(|k| *k == flag) else {
            return Err(format!("unknown flag --{flag}"));
        };
        if seen.contains(&flag) {
            return Err(format!("--{flag} is given twice"));
        }
        seen.push(flag);
        if flag == "test-data" {
            if inline_value.is_some() {
                return Err("--test-data takes no value".into());
            }
            args.test_data = true;
            continue;
        }
        let value = match inline_value {
            Some(v) => v,
            None => match iter.next() {
                Some(v) if !v.starts_with("--") => v.clone(),
                _ => return Err(format!("--{flag} needs a value")),
            },
        };
        if value.is_empty() {
            return Err(format!("--{flag} needs a value"));
        }
        match flag {
            "profile" => args.profile = Some(value),
            "version" => args.version = Some(value),
            "image" => args.image = Some(value),
            "size" => args.size = Some(value),
            "upgrade-from" => args.upgrade_from = Some(value),
            "database" => {
                args.database = Some(match value.as_str() {
                    "postgres" => DatabaseEngine::Postgres,
                    "mysql" => DatabaseEngine::Mysql,
                    "none" => DatabaseEngine::None,
                    "external" => {
                        return Err("--database external needs a Secret with the connection \
                                    settings; create the installation with kubectl instead"
                            .into());
                    }
                    other => {
                        return Err(format!(
                            "--database {other:?} is not one of postgres, mysql, none"
                        ));
                    }
                })
            }
            "filestore" => {
                args.filestore = Some(match value.as_str() {
                    "local" => FilestoreType::Local,
                    "minio" => FilestoreType::Minio,
                    "none" => FilestoreType::None,
                    "s3" => {
                        return Err("--filestore s3 needs a Secret with the bucket settings; \
                                    create the installation with kubectl instead"
                            .into());
                    }
                    other => {
                        return Err(format!(
                            "--filestore {other:?} is not one of local, minio, none"
                        ));
                    }
                })
            }
            "ttl" => {
                let ttl = parse_duration(&value).map_err(|err| format!("--ttl: {err}"))?;
                args.ttl = Some(format_duration(ttl));
            }
            "env" => args.env = parse_env(&value)?,
            _ => unreachable!("every known flag is handled"),
        }
    }
    args.name = name.ok_or("NAME is missing")?;
    Ok(args)
}

fn parse_env(value: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for entry in value.split(',') {
        let Some((key, val)) = entry.split_once('=') else {
            return Err(format!("--env entry {entry:?} is not KEY=VALUE"));
        };
        let valid_key = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key {
            return Err(format!(
                "--env name {key:?} must start with a letter or '_' and contain only letters, digits and '_'"
            ));
        }
        if pairs.iter().any(|(k, _)| k == key) {
            return Err(format!("--env sets {key} twice"));
        }
        pairs.push((key.to_string(), val.to_string()));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ParseError {
        parse(text).expect_err(text)
    }

    #[test]
    fn empty_text_and_help_show_help() {
        assert_eq!(parse(""), Ok(Command::Help));
        assert_eq!(parse("   "), Ok(Command::Help));
        assert_eq!(parse("help"), Ok(Command::Help));
        assert_eq!(err("help me").problem, "unexpected argument \"me\"");
    }

    #[test]
    fn create_with_every_flag() {
        let cmd = parse(
            "create demo42 --profile mm --version 9.11.0 --image ghcr.io/org/app --size miniHA \
             --test-data --database mysql --filestore=minio --ttl 90m --upgrade-from 9.10.0 \
             --env 'A=1,B_2=x y'",
        )
        .unwrap();
        assert_eq!(
            cmd,
            Command::Create(CreateArgs {
                name: "demo42".into(),
                profile: Some("mm".into()),
                version: Some("9.11.0".into()),
                image: Some("ghcr.io/org/app".into()),
                size: Some("miniHA".into()),
                test_data: true,
                database: Some(DatabaseEngine::Mysql),
                filestore: Some(FilestoreType::Minio),
                ttl: Some("1h30m".into()),
                upgrade_from: Some("9.10.0".into()),
                env: vec![("A".into(), "1".into()), ("B_2".into(), "x y".into())],
            })
        );
    }

    #[test]
    fn create_with_flags_before_the_name() {
        let Command::Create(args) = parse("create --size miniHA demo").unwrap() else {
            panic!("not create")
        };
        assert_eq!(args.name, "demo");
        assert_eq!(args.size.as_deref(), Some("miniHA"));
    }

    #[test]
    fn every_create_mistake_has_its_own_message() {
        let cases = [
            ("create", "NAME is missing"),
            ("create demo --colour red", "unknown flag --colour"),
            ("create demo -v 1", "unknown flag -v"),
            ("create demo --version", "--version needs a value"),
            ("create demo --version --size x", "--version needs a value"),
            ("create demo --version=", "--version needs a value"),
            ("create demo --size a --size b", "--size is given twice"),
            ("create demo --test-data=yes", "--test-data takes no value"),
            ("create demo other", "unexpected argument \"other\""),
            (
                "create Demo",
                "name \"Demo\" must start with a lowercase letter",
            ),
            (
                "create 9lives",
                "name \"9lives\" must start with a lowercase letter",
            ),
            (
                "create de_mo",
                "name \"de_mo\" may only contain lowercase letters, digits and '-'",
            ),
            (
                "create demo-",
                "name \"demo-\" must end with a letter or digit",
            ),
            (
                "create demo --database oracle",
                "--database \"oracle\" is not one of postgres, mysql, none",
            ),
            (
                "create demo --filestore nfs",
                "--filestore \"nfs\" is not one of local, minio, none",
            ),
            (
                "create demo --ttl 2 days",
                "--ttl: duration \"2\" must be a number followed by a unit s, m, h or d, like 90m, 48h or 7d",
            ),
            (
                "create demo --ttl 0h",
                "--ttl: duration \"0h\" must be longer than zero",
            ),
            ("create demo --env A", "--env entry \"A\" is not KEY=VALUE"),
            ("create demo --env A=1,A=2", "--env sets A twice"),
            (
                "create demo --env 1A=x",
                "--env name \"1A\" must start with a letter or '_' and contain only letters, digits and '_'",
            ),
        ];
        for (text, problem) in cases {
            let e = err(text);
            assert_eq!(e.problem, problem, "for {text:?}");
            assert_eq!(e.usage, Some(Verb::Create), "for {text:?}");
            assert!(e.to_string().contains("usage: create NAME"), "{e}");
        }
        assert!(
            err("create demo --database external")
                .problem
                .contains("kubectl")
        );
        assert!(
            err("create demo --filestore s3")
                .problem
                .contains("kubectl")
        );
        let long = format!("create {}", "a".repeat(41));
        assert!(err(&long).problem.ends_with("is longer than 40 characters"));
        assert!(parse(&format!("create {}", "a".repeat(40))).is_ok());
    }

    #[test]
    fn name_commands() {
        assert_eq!(
            parse("delete demo"),
            Ok(Command::Delete {
                name: "demo".into()
            })
        );
        assert_eq!(
            parse("wake demo"),
            Ok(Command::Wake {
                name: "demo".into()
            })
        );
        assert_eq!(
            parse("lock demo"),
            Ok(Command::Lock {
                name: "demo".into()
            })
        );
        assert_eq!(
            parse("unlock demo"),
            Ok(Command::Unlock {
                name: "demo".into()
            })
        );
        assert_eq!(
            parse("hibernate demo"),
            Ok(Command::Hibernate {
                name: "demo".into()
            })
        );
        assert_eq!(
            parse("status demo"),
            Ok(Command::Status {
                name: "demo".into()
            })
        );
        let e = err("delete");
        assert_eq!(
            (e.problem.as_str(), e.usage),
            ("NAME is missing", Some(Verb::Delete))
        );
        assert_eq!(err("delete a b").problem, "unexpected argument \"b\"");
        assert_eq!(err("delete a --force").problem, "unknown flag --force");
        assert_eq!(
            err("status A").problem,
            "name \"A\" must start with a lowercase letter"
        );
    }

    #[test]
    fn extend_and_list() {
        assert_eq!(
            parse("extend demo 2d"),
            Ok(Command::Extend {
                name: "demo".into(),
                by: Duration::from_secs(2 * 86_400)
            })
        );
        assert_eq!(err("extend demo").problem, "DURATION is missing");
        assert!(err("extend demo soon").problem.contains("\"soon\""));
        assert_eq!(parse("list"), Ok(Command::List { all: false }));
        assert_eq!(parse("list --all"), Ok(Command::List { all: true }));
        assert_eq!(err("list --mine").problem, "unknown flag --mine");
        assert_eq!(err("list --all --all").problem, "--all is given twice");
    }

    #[test]
    fn test_and_cancel_take_an_optional_suite() {
        assert_eq!(
            parse("test demo"),
            Ok(Command::Test {
                name: "demo".into(),
                suite: None
            })
        );
        assert_eq!(
            parse("test demo e2e"),
            Ok(Command::Test {
                name: "demo".into(),
                suite: Some("e2e".into())
            })
        );
        assert_eq!(
            parse("cancel demo smoke-1"),
            Ok(Command::Cancel {
                name: "demo".into(),
                suite: Some("smoke-1".into())
            })
        );
        let cases = [
            ("test", "NAME is missing", Verb::Test),
            (
                "test demo e2e extra",
                "unexpected argument \"extra\"",
                Verb::Test,
            ),
            ("test demo --all", "unknown flag --all", Verb::Test),
            (
                "test demo E2E",
                "SUITE \"E2E\" is not a valid name: lowercase letters, digits and '-', starting with a letter, at most 40 characters",
                Verb::Test,
            ),
            (
                "cancel Demo",
                "name \"Demo\" must start with a lowercase letter",
                Verb::Cancel,
            ),
        ];
        for (text, problem, verb) in cases {
            let e = err(text);
            assert_eq!(
                (e.problem.as_str(), e.usage),
                (problem, Some(verb)),
                "{text}"
            );
        }
        assert!(
            err("test demo 'e2e;rm'")
                .problem
                .starts_with("SUITE \"e2e;rm\"")
        );
    }

    #[test]
    fn run_keeps_parameter_values_as_single_words() {
        assert_eq!(
            parse("run demo list-users --team 'a b' --limit=20 --query '$(reboot); rm -rf /'"),
            Ok(Command::Run {
                name: "demo".into(),
                action: "list-users".into(),
                parameters: vec![
                    ("team".into(), "a b".into()),
                    ("limit".into(), "20".into()),
                    ("query".into(), "$(reboot); rm -rf /".into()),
                ],
            })
        );
        assert_eq!(
            parse("run --limit 1 demo stats"),
            Ok(Command::Run {
                name: "demo".into(),
                action: "stats".into(),
                parameters: vec![("limit".into(), "1".into())],
            })
        );
        assert_eq!(
            parse("run demo stats --empty="),
            Ok(Command::Run {
                name: "demo".into(),
                action: "stats".into(),
                parameters: vec![("empty".into(), String::new())],
            })
        );
        let cases = [
            ("run", "NAME is missing"),
            ("run demo", "ACTION is missing"),
            ("run demo stats --limit", "--limit needs a value"),
            ("run demo stats --limit --team x", "--limit needs a value"),
            (
                "run demo stats --limit 1 --limit 2",
                "--limit is given twice",
            ),
            (
                "run demo stats -l 1",
                "parameter -l must be written --NAME VALUE (two dashes)",
            ),
            (
                "run demo stats --Limit 1",
                "--Limit is not a parameter name: lowercase letters, digits and '-', starting with a letter",
            ),
            (
                "run demo stats --query ; rm -rf /",
                "unexpected argument \"rm\"; quote a value that has spaces, like --query 'a b'",
            ),
            (
                "run demo 'stats;reboot'",
                "ACTION \"stats;reboot\" is not a valid name: lowercase letters, digits and '-', starting with a letter, at most 40 characters",
            ),
        ];
        for (text, problem) in cases {
            let e = err(text);
            assert_eq!(
                (e.problem.as_str(), e.usage),
                (problem, Some(Verb::Run)),
                "{text}"
            );
        }
        // A newline separates words like a space: it cannot end the command.
        assert!(
            err("run demo stats --query a\nrm")
                .problem
                .starts_with("unexpected argument \"rm\"")
        );
    }

    #[test]
    fn update_needs_something_to_change() {
        assert_eq!(
            parse("update demo --version 9.12.0 --env A=1,B=2"),
            Ok(Command::Update {
                name: "demo".into(),
                change: UpdateArgs {
                    version: Some("9.12.0".into()),
                    env: vec![("A".into(), "1".into()), ("B".into(), "2".into())],
                    ..Default::default()
                }
            })
        );
        assert_eq!(
            parse("update demo --image=ghcr.io/a/b --size miniHA"),
            Ok(Command::Update {
                name: "demo".into(),
                change: UpdateArgs {
                    image: Some("ghcr.io/a/b".into()),
                    size: Some("miniHA".into()),
                    ..Default::default()
                }
            })
        );
        let cases = [
            (
                "update demo",
                "nothing to change: give --version, --image, --size or --env",
            ),
            ("update --version 1", "NAME is missing"),
            (
                "update demo --ttl 1h",
                "unknown flag --ttl; update changes --version, --image, --size or --env",
            ),
            ("update demo --version", "--version needs a value"),
            ("update demo --size a --size b", "--size is given twice"),
            ("update demo --env X", "--env entry \"X\" is not KEY=VALUE"),
            (
                "update demo other --size a",
                "unexpected argument \"other\"",
            ),
        ];
        for (text, problem) in cases {
            let e = err(text);
            assert_eq!(
                (e.problem.as_str(), e.usage),
                (problem, Some(Verb::Update)),
                "{text}"
            );
        }
    }

    #[test]
    fn share_takes_a_mention() {
        assert_eq!(
            parse("share demo @alice.b"),
            Ok(Command::Share {
                name: "demo".into(),
                person: Person::Name("alice.b".into())
            })
        );
        assert_eq!(
            parse("unshare demo <@U024BE7LH|bob>"),
            Ok(Command::Unshare {
                name: "demo".into(),
                person: Person::Id {
                    id: "U024BE7LH".into(),
                    name: Some("bob".into())
                }
            })
        );
        assert_eq!(
            Person::Id {
                id: "U1".into(),
                name: None
            }
            .display(),
            "<@U1>"
        );
        let cases = [
            ("share demo", "PERSON is missing"),
            (
                "share demo alice",
                "PERSON \"alice\" must be a mention, like @alice",
            ),
            (
                "share demo @",
                "PERSON \"@\" is not a user name: letters, digits, '.', '_' and '-' after the @",
            ),
            (
                "share demo '@a;b'",
                "PERSON \"@a;b\" is not a user name: letters, digits, '.', '_' and '-' after the @",
            ),
            (
                "share demo <@U1;x>",
                "PERSON \"<@U1;x>\" is not a mention of a user",
            ),
            ("share demo @a @b", "unexpected argument \"@b\""),
        ];
        for (text, problem) in cases {
            let e = err(text);
            assert_eq!(
                (e.problem.as_str(), e.usage),
                (problem, Some(Verb::Share)),
                "{text}"
            );
        }
        assert_eq!(
            parse("restart demo"),
            Ok(Command::Restart {
                name: "demo".into()
            })
        );
        assert_eq!(
            parse("actions demo"),
            Ok(Command::Actions {
                name: "demo".into()
            })
        );
        assert_eq!(
            err("restart demo now").problem,
            "unexpected argument \"now\""
        );
    }

    #[test]
    fn unknown_command_and_bad_quoting() {
        let e = err("destroy demo");
        assert_eq!(e.problem, "unknown command \"destroy\"");
        assert_eq!(e.usage, None);
        assert_eq!(
            err("create 'demo").problem,
            "the command has an unclosed quote"
        );
    }
}
