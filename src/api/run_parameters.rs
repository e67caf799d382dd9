//! Checking a run's parameters against what its action declares.
//!
//! Pure, so that the adapters can refuse bad input at once and the
//! controller checks the same rules again before anything runs (a TestRun
//! may also come from kubectl or Git). A value that passes is still only
//! text: it fills one argument or one environment variable of the Job and
//! never reaches a shell.

use std::collections::BTreeMap;

use super::run::{ParameterType, RunParameter};

/// The longest value a parameter may have.
pub const MAX_VALUE_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParameterError {
    #[error("unknown parameter --{name}; {}", known_list(known))]
    Unknown { name: String, known: Vec<String> },
    #[error("parameter --{name} is required")]
    Missing { name: String },
    #[error("parameter --{name} must be a whole number, not {value:?}")]
    NotInteger { name: String, value: String },
    #[error("parameter --{name} must be {}, not {value}", bounds(*minimum, *maximum))]
    OutOfRange {
        name: String,
        value: i64,
        minimum: Option<i64>,
        maximum: Option<i64>,
    },
    #[error("parameter --{name} must be one of {}, not {value:?}", values.join(", "))]
    NotOneOf {
        name: String,
        value: String,
        values: Vec<String>,
    },
    #[error("parameter --{name} must match {pattern}, and {value:?} does not")]
    NoMatch {
        name: String,
        value: String,
        pattern: String,
    },
    #[error("parameter --{name} may not contain control characters such as newlines")]
    ControlCharacter { name: String },
    #[error("parameter --{name} is longer than {MAX_VALUE_LEN} characters")]
    TooLong { name: String },
    #[error("the profile's pattern for --{name} is not a valid regular expression: {error}")]
    BadPattern { name: String, error: String },
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        "this action takes no parameters".into()
    } else {
        format!(
            "this action takes {}",
            known
                .iter()
                .map(|k| format!("--{k}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

fn bounds(minimum: Option<i64>, maximum: Option<i64>) -> String {
    match (minimum, maximum) {
        (Some(min), Some(max)) => format!("between {min} and {max}"),
        (Some(min), None) => format!("at least {min}"),
        (None, Some(max)) => format!("at most {max}"),
        (None, None) => "a whole number".into(),
    }
}

/// Every declared parameter with its value: the given one, else the
/// default. Refuses unknown names, missing required values and values that
/// do not fit their declared type. The first problem found is returned, in
/// the order the parameters are declared (unknown names first).
pub fn resolve_parameters(
    declared: &[RunParameter],
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ParameterError> {
    if let Some(unknown) = given
        .keys()
        .find(|name| !declared.iter().any(|p| &p.name == *name))
    {
        return Err(ParameterError::Unknown {
            name: unknown.clone(),
            known: declared.iter().map(|p| p.name.clone()).collect(),
        });
    }
    declared
        .iter()
        .map(|parameter| {
            let value = given
                .get(&parameter.name)
                .or(parameter.default.as_ref())
                .ok_or_else(|| ParameterError::Missing {
                    name: parameter.name.clone(),
                })?;
            check_value(parameter, value)?;
            Ok((parameter.name.clone(), value.clone()))
        })
        .collect()
}

/// Whether one value fits its parameter's declaration.
pub fn check_value(parameter: &RunParameter, value: &str) -> Result<(), ParameterError> {
    let name = || parameter.name.clone();
    if value.chars().any(char::is_control) {
        return Err(ParameterError::ControlCharacter { name: name() });
    }
    if value.chars().count() > MAX_VALUE_LEN {
        return Err(ParameterError::TooLong { name: name() });
    }
    match parameter.kind {
        ParameterType::Integer => {
            let number: i64 = value
                .strip_prefix('+')
                .unwrap_or(value)
                .parse()
                .map_err(|_| ParameterError::NotInteger {
                    name: name(),
                    value: value.into(),
                })?;
            let too_small = parameter.minimum.is_some_and(|min| number < min);
            let too_large = parameter.maximum.is_some_and(|max| number > max);
            if too_small || too_large {
                return Err(ParameterError::OutOfRange {
                    name: name(),
                    value: number,
                    minimum: parameter.minimum,
                    maximum: parameter.maximum,
                });
            }
        }
        ParameterType::Enum => {
            if !parameter.values.iter().any(|allowed| allowed == value) {
                return Err(ParameterError::NotOneOf {
                    name: name(),
                    value: value.into(),
                    values: parameter.values.clone(),
                });
            }
        }
        ParameterType::String => {
            let pattern = parameter.pattern.as_deref().unwrap_or("");
            let whole = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|error| {
                ParameterError::BadPattern {
                    name: name(),
                    error: error.to_string(),
                }
            })?;
            if !whole.is_match(value) {
                return Err(ParameterError::NoMatch {
                    name: name(),
                    value: value.into(),
                    pattern: pattern.into(),
                });
            }
        }
    }
    Ok(())
}

/// One line describing a parameter, for `/testenv actions` and errors:
/// `--page <integer 1..100, default 1>: the page to show`.
pub fn describe(parameter: &RunParameter) -> String {
    let kind = match parameter.kind {
        ParameterType::Integer => match (parameter.minimum, parameter.maximum) {
            (Some(min), Some(max)) => format!("integer {min}..{max}"),
            (Some(min), None) => format!("integer ≥ {min}"),
            (None, Some(max)) => format!("integer ≤ {max}"),
            (None, None) => "integer".into(),
        },
        ParameterType::Enum => parameter.values.join("|"),
        ParameterType::String => format!(
            "text matching {}",
            parameter.pattern.as_deref().unwrap_or("")
        ),
    };
    let default = match &parameter.default {
        Some(default) => format!(", default {default}"),
        None => ", required".into(),
    };
    let description = match &parameter.description {
        Some(text) => format!(": {text}"),
        None => String::new(),
    };
    format!("--{} <{kind}{default}>{description}", parameter.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn integer(name: &str, min: Option<i64>, max: Option<i64>) -> RunParameter {
        RunParameter {
            name: name.into(),
            kind: ParameterType::Integer,
            minimum: min,
            maximum: max,
            ..Default::default()
        }
    }

    fn one_of(name: &str, values: &[&str]) -> RunParameter {
        RunParameter {
            name: name.into(),
            kind: ParameterType::Enum,
            values: values.iter().map(|v| v.to_string()).collect(),
            ..Default::default()
        }
    }

    fn text(name: &str, pattern: &str) -> RunParameter {
        RunParameter {
            name: name.into(),
            kind: ParameterType::String,
            pattern: Some(pattern.into()),
            ..Default::default()
        }
    }

    fn given(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn values_of_every_type_are_checked_and_defaults_fill_in() {
        let declared = [
            RunParameter {
                default: Some("1".into()),
                ..integer("page", Some(1), Some(100))
            },
            one_of("format", &["json", "text"]),
            text("team", "[a-z0-9-]{1,64}"),
        ];
        let resolved = resolve_parameters(
            &declared,
            &given(&[("format", "json"), ("team", "qa-team")]),
        )
        .unwrap();
        assert_eq!(
            resolved,
            given(&[("page", "1"), ("format", "json"), ("team", "qa-team")])
        );

        let err = |pairs: &[(&str, &str)]| resolve_parameters(&declared, &given(pairs));
        let base = [("format", "json"), ("team", "qa")];
        let with = |extra: (&'static str, &'static str)| {
            let mut pairs = base.to_vec();
            pairs.retain(|(k, _)| *k != extra.0);
            pairs.push(extra);
            pairs
        };
        assert!(matches!(
            err(&with(("page", "0"))),
            Err(ParameterError::OutOfRange { value: 0, .. })
        ));
        assert!(matches!(
            err(&with(("page", "101"))),
            Err(ParameterError::OutOfRange { .. })
        ));
        assert!(matches!(
            err(&with(("page", "1.5"))),
            Err(ParameterError::NotInteger { .. })
        ));
        assert!(matches!(
            err(&with(("page", "99999999999999999999999"))),
            Err(ParameterError::NotInteger { .. })
        ));
        assert!(matches!(
            err(&with(("format", "xml"))),
            Err(ParameterError::NotOneOf { .. })
        ));
        assert!(matches!(
            err(&[("format", "json")]),
            Err(ParameterError::Missing { name }) if name == "team"
        ));
        assert!(matches!(
            err(&with(("colour", "red"))),
            Err(ParameterError::Unknown { name, .. }) if name == "colour"
        ));
    }

    #[test]
    fn injection_attempts_are_refused_by_the_declared_types() {
        let declared = [
            text("team", "[a-z0-9-]{1,64}"),
            one_of("format", &["json"]),
            integer("page", None, None),
        ];
        for attempt in [
            "qa; rm -rf /",
            "$(id)",
            "`id`",
            "qa\nrm -rf /",
            "qa && curl x",
            "../../etc/passwd",
            "qa|sh",
        ] {
            for name in ["team", "format", "page"] {
                let mut pairs = given(&[("team", "qa"), ("format", "json"), ("page", "1")]);
                pairs.insert(name.into(), attempt.into());
                assert!(
                    resolve_parameters(&declared, &pairs).is_err(),
                    "{name}={attempt:?} was accepted"
                );
            }
        }
    }

    #[test]
    fn control_characters_are_refused_even_when_the_pattern_allows_anything() {
        let declared = [text("query", ".*")];
        let refused = resolve_parameters(&declared, &given(&[("query", "a\nb")]));
        assert_eq!(
            refused,
            Err(ParameterError::ControlCharacter {
                name: "query".into()
            })
        );
        let long = "x".repeat(MAX_VALUE_LEN + 1);
        assert!(matches!(
            resolve_parameters(&declared, &given(&[("query", long.as_str())])),
            Err(ParameterError::TooLong { .. })
        ));
        // Accepted text stays exactly what was typed.
        let kept = resolve_parameters(&declared, &given(&[("query", "; rm -rf / $(id)")]));
        assert_eq!(kept.unwrap()["query"], "; rm -rf / $(id)");
    }

    #[test]
    fn patterns_match_the_whole_value() {
        let declared = [text("id", "[0-9]+")];
        assert!(resolve_parameters(&declared, &given(&[("id", "42")])).is_ok());
        assert!(resolve_parameters(&declared, &given(&[("id", "42x")])).is_err());
        assert!(resolve_parameters(&declared, &given(&[("id", "x42")])).is_err());
        // An alternation cannot escape the anchors.
        let declared = [text("id", "a|b")];
        assert!(resolve_parameters(&declared, &given(&[("id", "ab")])).is_err());
    }

    #[test]
    fn errors_read_as_sentences() {
        let unknown = ParameterError::Unknown {
            name: "x".into(),
            known: vec!["page".into(), "team".into()],
        };
        assert_eq!(
            unknown.to_string(),
            "unknown parameter --x; this action takes --page, --team"
        );
        let range = ParameterError::OutOfRange {
            name: "page".into(),
            value: 0,
            minimum: Some(1),
            maximum: Some(100),
        };
        assert_eq!(
            range.to_string(),
            "parameter --page must be between 1 and 100, not 0"
        );
        let described = describe(&RunParameter {
            description: Some("the page to show".into()),
            default: Some("1".into()),
            ..integer("page", Some(1), Some(100))
        });
        assert_eq!(
            described,
            "--page <integer 1..100, default 1>: the page to show"
        );
    }
}
