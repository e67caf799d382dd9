//! The profile's env templates: `{{ key }}` placeholders replaced by the
//! installation's values. Pure; an unknown placeholder is an error naming it.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown placeholder {{{{ {placeholder} }}}}; known: {known}")]
    Unknown { placeholder: String, known: String },
    #[error("unclosed {{{{ in template")]
    Unclosed,
}

/// Replaces each `{{ key }}` in `template` with `values[key]`.
pub fn render(template: &str, values: &BTreeMap<String, String>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or(TemplateError::Unclosed)?;
        let key = after[..end].trim();
        match values.get(key) {
            Some(value) => out.push_str(value),
            None => {
                return Err(TemplateError::Unknown {
                    placeholder: key.to_string(),
                    known: values.keys().cloned().collect::<Vec<_>>().join(", "),
                });
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("url".to_string(), "https://demo.example".to_string()),
            (
                "database.url".to_string(),
                "postgres://u:p@db/app".to_string(),
            ),
        ])
    }

    #[test]
    fn replaces_placeholders_with_or_without_spaces() {
        assert_eq!(
            render("site={{ url }} db={{database.url}}!", &values()).unwrap(),
            "site=https://demo.example db=postgres://u:p@db/app!"
        );
        assert_eq!(render("plain", &values()).unwrap(), "plain");
    }

    #[test]
    fn unknown_or_unclosed_placeholders_are_errors() {
        let err = render("{{ nope }}", &values()).unwrap_err();
        assert!(err.to_string().contains("{{ nope }}"), "{err}");
        assert_eq!(render("{{ url", &values()), Err(TemplateError::Unclosed));
    }
}
