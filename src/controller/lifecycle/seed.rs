//! Test data: the seed Job runs once the app is ready, and only until it
//! succeeded once; the `DataSeeded` condition remembers that, so a later
//! version change does not seed again.

use crate::api::{TestInstallation, conditions};

/// Whether the seed Job belongs to the installation in this pass.
pub fn job_wanted(installation: &TestInstallation, test_data: bool) -> bool {
    test_data && app_was_ready(installation) && !already_seeded(installation)
}

pub fn already_seeded(installation: &TestInstallation) -> bool {
    installation
        .condition(conditions::DATA_SEEDED)
        .is_some_and(|c| c.status == "True")
}

fn app_was_ready(installation: &TestInstallation) -> bool {
    installation
        .condition(conditions::APP_READY)
        .is_some_and(|c| c.status == "True")
}
