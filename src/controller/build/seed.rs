//! The seed Job: the profile's command, run once the app is Ready, with the
//! app's environment, to load test data.

use k8s_openapi::{
    api::{
        batch::v1::{Job, JobSpec},
        core::v1::{Container, EnvFromSource, PodSpec, PodTemplateSpec, SecretEnvSource},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use super::{BuildInput, app, labels, meta, security};

pub const NAME: &str = "seed";
const COMPONENT: &str = "seed";

/// `None` when the installation asks for no test data.
pub fn job(input: &BuildInput) -> Option<Job> {
    let plan = input.plan;
    let seed = plan.seed.as_ref()?;
    Some(Job {
        metadata: meta(input, NAME, COMPONENT),
        spec: Some(JobSpec {
            backoff_limit: Some(seed.backoff_limit.unwrap_or(2)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(plan, COMPONENT)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    security_context: Some(security::pod(plan.run_as_non_root, None)),
                    automount_service_account_token: Some(false),
                    containers: vec![Container {
                        name: COMPONENT.into(),
                        image: Some(
                            seed.image
                                .clone()
                                .unwrap_or_else(|| plan.image_ref(input.app_version)),
                        ),
                        command: Some(seed.command.clone()),
                        env_from: Some(vec![EnvFromSource {
                            secret_ref: Some(SecretEnvSource {
                                name: app::ENV_SECRET.into(),
                                optional: Some(false),
                            }),
                            ..Default::default()
                        }]),
                        security_context: Some(security::container()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}
