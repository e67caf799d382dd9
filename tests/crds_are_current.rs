//! `crds/` holds the CRD YAML generated from the Rust types; this fails when
//! it is stale. `UPDATE_CRDS=1 cargo test --test crds_are_current` rewrites it.

use std::path::PathBuf;

#[test]
fn crd_yaml_in_repository_matches_the_rust_types() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds/ephemera.dev_crds.yaml");
    let generated = ephemera::api::crds_yaml();
    if std::env::var_os("UPDATE_CRDS").is_some() {
        std::fs::write(&path, &generated).expect("write crds/");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: run `make crds` (or UPDATE_CRDS=1 cargo test --test crds_are_current) and commit it",
        path.display()
    );
}
