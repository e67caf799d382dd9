//! `crds/` and the chart hold YAML generated from the Rust types; this fails
//! when any of it is stale. `make crds` (UPDATE_CRDS=1) rewrites them.

use std::path::PathBuf;

fn check(relative: &str, generated: String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative);
    if std::env::var_os("UPDATE_CRDS").is_some() {
        std::fs::write(&path, &generated).expect("write generated YAML");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: run `make crds` and commit it",
        path.display()
    );
}

#[test]
fn crd_yaml_in_repository_matches_the_rust_types() {
    check("crds/ephemera.dev_crds.yaml", ephemera::api::crds_yaml());
}

#[test]
fn chart_crds_and_policy_match_the_rust_types() {
    check(
        "charts/ephemera/crds/ephemera.dev_crds.yaml",
        ephemera::api::crd_yaml(),
    );
    let policy = format!(
        "{{{{- if .Values.deletionLock.install }}}}\n{}{{{{- end }}}}\n",
        ephemera::api::deletion_lock_yaml()
    );
    check("charts/ephemera/templates/deletion-lock.yaml", policy);
}
