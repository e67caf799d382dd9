//! Guard rails of the namespace: a ResourceQuota and LimitRange sized from the
//! size class, and a NetworkPolicy that admits only the ingress controller's
//! namespace and the installation itself.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        core::v1::{
            LimitRange, LimitRangeItem, LimitRangeSpec, ResourceQuota, ResourceQuotaSpec,
            ResourceRequirements,
        },
        networking::v1::{
            NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec,
        },
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::LabelSelector},
};

use super::{BuildInput, meta};
use crate::api::{DatabaseEngine, FilestoreType};

pub const QUOTA: &str = "quota";
pub const LIMITS: &str = "defaults";
pub const NETWORK_POLICY: &str = "isolate";

/// Room for a rolling update (one surge pod per workload) and short Jobs.
const HEADROOM_FACTOR: f64 = 2.0;

/// Parses the subset of Kubernetes quantities the size classes use
/// (`100m`, `1`, `256Mi`, `1Gi`, `512M`) into base units.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let units: [(&str, f64); 9] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024.0f64.powi(4)),
        ("m", 0.001),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    for (suffix, factor) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    q.parse().ok()
}

fn sum_resource(parts: &[(Option<&ResourceRequirements>, i32)], limits: bool, name: &str) -> f64 {
    parts
        .iter()
        .filter_map(|(r, count)| {
            let r = (*r)?;
            let map = if limits {
                r.limits.as_ref()
            } else {
                r.requests.as_ref()
            };
            Some(parse_quantity(&map?.get(name)?.0)? * f64::from(*count))
        })
        .sum()
}

fn format_cpu(cores: f64) -> Quantity {
    Quantity(format!("{}m", (cores * 1000.0).ceil() as u64))
}

fn format_memory(bytes: f64) -> Quantity {
    Quantity(format!("{}Mi", (bytes / (1024.0 * 1024.0)).ceil() as u64))
}

/// Quota from the size class: the parts' requests and limits, times
/// `HEADROOM_FACTOR`, plus a pod count.
pub fn resource_quota(input: &BuildInput) -> ResourceQuota {
    let plan = input.plan;
    let mut parts = vec![(plan.app_resources.as_ref(), plan.replicas.max(1))];
    if matches!(
        plan.database.engine,
        DatabaseEngine::Postgres | DatabaseEngine::Mysql
    ) {
        parts.push((plan.database_resources.as_ref(), 1));
    }
    if plan.filestore.kind == FilestoreType::Minio {
        parts.push((plan.filestore_resources.as_ref(), 1));
    }
    let pods: i32 = parts.iter().map(|(_, n)| n).sum::<i32>() * 2 + 4;
    let mut hard = BTreeMap::from([("pods".to_string(), Quantity(pods.to_string()))]);
    for (key, limits, resource) in [
        ("requests.cpu", false, "cpu"),
        ("limits.cpu", true, "cpu"),
        ("requests.memory", false, "memory"),
        ("limits.memory", true, "memory"),
    ] {
        let total = sum_resource(&parts, limits, resource) * HEADROOM_FACTOR;
        if total > 0.0 {
            let q = if resource == "cpu" {
                format_cpu(total)
            } else {
                format_memory(total)
            };
            hard.insert(key.to_string(), q);
        }
    }
    ResourceQuota {
        metadata: meta(input, QUOTA, "policy"),
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Defaults for containers that name no resources (Jobs), so the quota never
/// refuses them for lack of requests.
pub fn limit_range(input: &BuildInput) -> LimitRange {
    let map = |cpu: &str, mem: &str| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(mem.into())),
        ])
    };
    LimitRange {
        metadata: meta(input, LIMITS, "policy"),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".into(),
                default_request: Some(map("50m", "64Mi")),
                default: Some(map("500m", "256Mi")),
                ..Default::default()
            }],
        }),
    }
}

pub fn network_policy(input: &BuildInput) -> NetworkPolicy {
    let controller_ns = &input.plan.ingress_controller_namespace;
    let mut from = vec![NetworkPolicyPeer {
        pod_selector: Some(LabelSelector::default()),
        ..Default::default()
    }];
    if !controller_ns.is_empty() {
        from.push(NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_string(),
                    controller_ns.clone(),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    NetworkPolicy {
        metadata: meta(input, NETWORK_POLICY, "policy"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(from),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::{ExternalSecrets, test_support::*};
    use crate::controller::plan::tests::profile;

    #[test]
    fn quantities_parse() {
        assert_eq!(parse_quantity("100m"), Some(0.1));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("256Mi"), Some(256.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("nonsense"), None);
    }

    #[test]
    fn quota_covers_app_and_database_with_headroom() {
        let plan = plan_with(Default::default(), profile());
        let (generated, external) = (generated(), ExternalSecrets::default());
        let quota = resource_quota(&input(&plan, &generated, &external));
        let hard = quota.spec.unwrap().hard.unwrap();
        // miniSingleton: app 100m + database 100m requests, doubled.
        assert_eq!(hard["requests.cpu"].0, "400m");
        assert_eq!(hard["limits.memory"].0, "4096Mi");
        assert_eq!(hard["pods"].0, "8");
    }

    #[test]
    fn network_policy_admits_only_own_namespace_and_ingress_controller() {
        let mut config = crate::controller::config::ControllerConfig::default();
        config.ingress.controller_namespace = "ingress-nginx".into();
        let plan = crate::controller::plan::plan(
            &crate::controller::plan::tests::installation(Default::default()),
            &profile(),
            &config,
        )
        .unwrap();
        let (generated, external) = (generated(), ExternalSecrets::default());
        let np = network_policy(&input(&plan, &generated, &external))
            .spec
            .unwrap();
        let peers = np.ingress.unwrap()[0].from.clone().unwrap();
        assert_eq!(peers.len(), 2);
        assert_eq!(
            peers[1]
                .namespace_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["kubernetes.io/metadata.name"],
            "ingress-nginx"
        );
    }
}
