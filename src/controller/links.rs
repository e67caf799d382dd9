//! The profile's links (logs, dashboards) rendered for one installation,
//! for its `status.links` (pure).

use std::collections::BTreeMap;

use super::{build::template, plan::Plan};
use crate::api::Link;

/// Each link of the plan's profile with `{{ name }}`, `{{ namespace }}`,
/// `{{ host }}` and `{{ url }}` filled in. A link whose template names
/// anything else is left out (and logged): a status never shows a broken
/// URL.
pub fn render(plan: &Plan) -> Vec<Link> {
    let values = BTreeMap::from([
        ("name".to_string(), plan.name.clone()),
        ("namespace".to_string(), plan.namespace.clone()),
        ("host".to_string(), plan.host.clone()),
        ("url".to_string(), plan.url.clone()),
    ]);
    plan.links
        .iter()
        .filter_map(|link| match template::render(&link.url, &values) {
            Ok(url) => Some(Link {
                name: link.name.clone(),
                url,
            }),
            Err(err) => {
                tracing::warn!(profile = %plan.profile, link = %link.name, %err, "profile link left out");
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ProfileLink;
    use crate::controller::build::test_support::plan_with;
    use crate::controller::plan::tests::profile;

    #[test]
    fn links_fill_in_the_installation_and_skip_unknown_placeholders() {
        let mut p = profile();
        p.spec.links = vec![
            ProfileLink {
                name: "logs".into(),
                url: "https://grafana.example/explore?ns={{ namespace }}&q={{name}}".into(),
            },
            ProfileLink {
                name: "site".into(),
                url: "https://{{ host }}/admin_console?back={{ url }}".into(),
            },
            ProfileLink {
                name: "bad".into(),
                url: "https://x.example/{{ credentials.adminPassword }}".into(),
            },
        ];
        let plan = plan_with(Default::default(), p);
        assert_eq!(
            render(&plan),
            vec![
                Link {
                    name: "logs".into(),
                    url: "https://grafana.example/explore?ns=ti-demo&q=demo".into()
                },
                Link {
                    name: "site".into(),
                    url:
                        "https://demo.ephemera.localhost/admin_console?back=https://demo.ephemera.localhost"
                            .into()
                },
            ]
        );
    }
}
