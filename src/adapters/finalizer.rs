//! Releasing an adapter's finalizer from a TestInstallation: the one way both
//! adapters do it.
//!
//! A JSON patch that first tests that the finalizer is still at the index
//! where it was seen and then removes it: it never removes someone else's
//! finalizer and needs no resourceVersion, so a concurrent status update (the
//! controller writes often while an installation is torn down) does not make
//! it fail. When the list did change, the installation is read again and the
//! removal retried.

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};

use crate::api::TestInstallation;

/// Removes `finalizer` from the installation `name` (nothing to do when it is
/// gone or has no such finalizer).
pub async fn release(
    api: &Api<TestInstallation>,
    name: &str,
    finalizer: &str,
    params: &PatchParams,
) -> kube::Result<()> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let Some(ti) = api.get_opt(name).await? else {
            return Ok(());
        };
        let Some(index) = ti.finalizers().iter().position(|f| f == finalizer) else {
            return Ok(());
        };
        let path = format!("/metadata/finalizers/{index}");
        let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
            { "op": "test", "path": path, "value": finalizer },
            { "op": "remove", "path": path },
        ]))
        .expect("a well-formed JSON patch");
        match api.patch(name, params, &Patch::<()>::Json(patch)).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            // The list changed between the read and the patch: read again.
            Err(kube::Error::Api(status))
                if (status.code == 422 || status.code == 409) && attempts < 5 => {}
            Err(err) => return Err(err),
        }
    }
}
