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
    List { all: bool },
    Status { name: String },
    Extend { name: String, by: Duration },
    Hibernate { name: String },
    Wake { name: String },
    Lock { name: String },
    Unlock { name: String },
    Delete { name: String },
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
    Help,
}

impl Verb {
    pub const ALL: [Verb; 10] = [
        Verb::Create,
        Verb::List,
        Verb::Status,
        Verb::Extend,
        Verb::Hibernate,
        Verb::Wake,
        Verb::Lock,
        Verb::Unlock,
        Verb::Delete,
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
        Verb::Status | Verb::Hibernate | Verb::Wake | Verb::Lock | Verb::Unlock | Verb::Delete => {
            let [name] = positionals::<1>(rest, &["NAME"]).map_err(fail)?;
            let name = valid_name(&name).map_err(fail)?;
            Ok(match verb {
                Verb::Status => Command::Status { name },
                Verb::Hibernate => Command::Hibernate { name },
                Verb::Wake => Command::Wake { name },
                Verb::Lock => Command::Lock { name },
                Verb::Unlock => Command::Unlock { name },
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
