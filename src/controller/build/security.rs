//! Security settings of every generated pod: non-root where the image allows,
//! no privilege escalation, all capabilities dropped, RuntimeDefault seccomp.
//! These meet the Pod Security "restricted" profile.

use k8s_openapi::api::core::v1::{
    Capabilities, PodSecurityContext, SeccompProfile, SecurityContext,
};

/// Pod-level settings. `user` is the uid for images that need a fixed one
/// (databases); `None` keeps the image's own user.
pub fn pod(non_root: bool, user: Option<i64>) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(non_root),
        run_as_user: user,
        run_as_group: user,
        fs_group: user,
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Container-level settings.
pub fn container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
