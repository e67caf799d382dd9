//! The Ingress that serves the app at `<name>.<baseDomain>`.

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};

use super::{BuildInput, app, meta};

pub const NAME: &str = "app";

pub fn ingress(input: &BuildInput) -> Ingress {
    let plan = input.plan;
    let mut metadata = meta(input, NAME, app::COMPONENT);
    if !plan.ingress_annotations.is_empty() {
        metadata.annotations = Some(plan.ingress_annotations.clone());
    }
    Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: plan.ingress_class.clone(),
            tls: plan.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![plan.host.clone()]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            rules: Some(vec![IngressRule {
                host: Some(plan.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: app::NAME.into(),
                                port: Some(ServiceBackendPort {
                                    number: Some(app::SERVICE_PORT),
                                    ..Default::default()
                                }),
                            }),
                            ..Default::default()
                        },
                    }],
                }),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::{ExternalSecrets, test_support::*};
    use crate::controller::plan::tests::profile;

    #[test]
    fn routes_the_host_to_the_app_service_with_profile_annotations() {
        let mut p = profile();
        p.spec.ingress.class_name = Some("nginx".into());
        p.spec.ingress.annotations.insert(
            "nginx.ingress.kubernetes.io/proxy-body-size".into(),
            "50m".into(),
        );
        let plan = plan_with(Default::default(), p);
        let (generated, external) = (generated(), ExternalSecrets::default());
        let ing = ingress(&input(&plan, &generated, &external));
        let spec = ing.spec.unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        let rule = &spec.rules.unwrap()[0];
        assert_eq!(rule.host.as_deref(), Some("demo.ephemera.localhost"));
        assert_eq!(
            ing.metadata.annotations.unwrap()["nginx.ingress.kubernetes.io/proxy-body-size"],
            "50m"
        );
        assert!(spec.tls.is_none());
    }
}
