//! The ephemera API: group `ephemera.dev`, version `v1alpha1`.
//!
//! All three kinds are cluster-scoped. The OpenAPI schema and the CEL validation
//! rules come from these types, so the API server refuses bad specs with a
//! message a person understands before the controller ever sees them.

pub mod conditions;
pub mod crd_upgrade;
pub mod credentials;
pub mod deletion_lock;
pub mod duration;
pub mod installation;
pub mod labels;
pub mod profile;
pub mod run;
pub mod run_parameters;

pub use installation::{
    CredentialsSecretRef, DatabaseEngine, DatabaseSpec, DatabaseStorage, EnvVar, EnvVarSource,
    FilestoreSpec, FilestoreType, Phase, SecretKeyRef, SecretRef, TestInstallation,
    TestInstallationSpec, TestInstallationStatus,
};
pub use profile::{
    InstallationProfile, InstallationProfileSpec, ProfileDatabase, ProfileEnvVar, ProfileFilestore,
    ProfileIngress, ProfileTtl, SeedSpec, SizeClass,
};
pub use run::{
    Link, ParameterType, ProfileLink, ProfileRun, RunCredential, RunEnvVar, RunParameter, RunPhase,
    RunSummary, RunTarget, StartableBy, TerminationReport, TestRun, TestRunSpec, TestRunStatus,
};

/// The API group of every ephemera kind.
pub const GROUP: &str = "ephemera.dev";

/// The CRDs of this API, and the admission policy that enforces
/// `deletionLocked`, as one multi-document YAML stream, as `ephemera crd`
/// prints it and `crds/` stores it.
pub fn crds_yaml() -> String {
    crd_yaml() + &deletion_lock_yaml()
}

/// The two CustomResourceDefinitions (the chart's `crds/`).
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    yaml_stream([
        serde_yaml::to_string(&TestInstallation::crd()),
        serde_yaml::to_string(&InstallationProfile::crd()),
        serde_yaml::to_string(&TestRun::crd()),
    ])
}

/// The deletion-lock ValidatingAdmissionPolicy and its binding.
pub fn deletion_lock_yaml() -> String {
    use kube::Resource;
    fn with_type<K: Resource<DynamicType = ()> + serde::Serialize>(
        object: &K,
    ) -> serde_yaml::Result<String> {
        let mut value = serde_json::to_value(object).expect("objects serialize");
        value["apiVersion"] = K::api_version(&()).into();
        value["kind"] = K::kind(&()).into();
        serde_yaml::to_string(&value)
    }
    yaml_stream([
        with_type(&deletion_lock::policy()),
        with_type(&deletion_lock::binding()),
    ])
}

fn yaml_stream(docs: impl IntoIterator<Item = serde_yaml::Result<String>>) -> String {
    docs.into_iter()
        .map(|doc| doc.expect("API objects always serialize to YAML"))
        .map(|doc| format!("---\n{doc}"))
        .collect()
}
