//! The API server's own count of the requests it served
//! (`apiserver_request_total` on its /metrics), read before and after a
//! phase of the benchmark.

use std::collections::BTreeMap;

use kube::Client;

/// Requests served, by (verb, resource, code).
#[derive(Clone, Debug, Default)]
pub struct Requests(pub BTreeMap<(String, String, String), f64>);

/// Resources that the cluster's own components (fake kubelet, scheduler,
/// controller manager, lease renewals) read and write on their own while
/// nothing else happens; left out of the idle figures. Discovery (/api,
/// /apis, /openapi: no resource, the path as the subresource, counted here
/// as "/<path>"), which the controller never asks for, is left out too.
const CLUSTER_HOUSEKEEPING: [&str; 5] = ["pods", "nodes", "leases", "endpoints", "endpointslices"];

const MUTATING: [&str; 6] = [
    "POST",
    "PUT",
    "PATCH",
    "APPLY",
    "DELETE",
    "DELETECOLLECTION",
];

pub async fn scrape(client: &Client) -> Requests {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client
        .request_text(request)
        .await
        .expect("the API server's /metrics (allowed on the local plane)");
    let mut requests = Requests::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |key: &str| {
            labels
                .split("\",")
                .find_map(|pair| pair.strip_prefix(&format!("{key}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let mut resource = label("resource");
        let subresource = label("subresource");
        if !subresource.is_empty() {
            resource = format!("{resource}/{subresource}");
        }
        let key = (label("verb"), resource, label("code"));
        *requests.0.entry(key).or_insert(0.0) += value.trim().parse::<f64>().unwrap_or(0.0);
    }
    requests
}

impl Requests {
    /// What was served between `self` and `later`.
    pub fn until(&self, later: &Requests) -> Requests {
        let mut diff = BTreeMap::new();
        for (key, value) in &later.0 {
            let delta = value - self.0.get(key).copied().unwrap_or(0.0);
            if delta > 0.0 {
                diff.insert(key.clone(), delta);
            }
        }
        Requests(diff)
    }

    /// Requests by verb (watches left out: they are long-lived streams).
    pub fn by_verb(&self) -> BTreeMap<String, f64> {
        let mut verbs = BTreeMap::new();
        for ((verb, _, _), n) in &self.0 {
            if verb != "WATCH" {
                *verbs.entry(verb.clone()).or_insert(0.0) += n;
            }
        }
        verbs
    }

    pub fn total(&self) -> f64 {
        self.by_verb().values().fold(0.0, |sum, n| sum + n)
    }

    /// "VERB resource code" → count, for the record.
    pub fn detailed(&self) -> BTreeMap<String, f64> {
        self.0
            .iter()
            .filter(|((verb, _, _), _)| verb != "WATCH")
            .map(|((verb, resource, code), n)| (format!("{verb} {resource} {code}"), *n))
            .collect()
    }

    /// GETs answered 404 (looking for something that is not there).
    pub fn not_found_gets(&self) -> f64 {
        self.0
            .iter()
            .filter(|((verb, _, code), _)| verb == "GET" && code == "404")
            .fold(0.0, |sum, (_, n)| sum + n)
    }

    /// Requests other than the cluster's own housekeeping: with nothing
    /// changing, these come from the controller.
    pub fn outside_housekeeping(&self) -> Requests {
        Requests(
            self.0
                .iter()
                .filter(|((verb, resource, _), _)| {
                    verb != "WATCH"
                        && !resource.is_empty()
                        && !resource.starts_with('/')
                        && !CLUSTER_HOUSEKEEPING
                            .iter()
                            .any(|h| resource == h || resource.starts_with(&format!("{h}/")))
                })
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        )
    }

    pub fn writes(&self) -> f64 {
        self.0
            .iter()
            .filter(|((verb, _, _), _)| MUTATING.contains(&verb.as_str()))
            .fold(0.0, |sum, (_, n)| sum + n)
    }
}
