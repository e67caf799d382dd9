//! `test`, `cancel`, `run` and `actions`: TestRuns started from chat.

use super::handler::{Answer, Ctx, Outcome};

impl Ctx<'_> {
    pub(super) async fn test(&self, _name: &str, _suite: Option<&str>) -> Answer {
        not_yet()
    }
    pub(super) async fn cancel(&self, _name: &str, _suite: Option<&str>) -> Answer {
        not_yet()
    }
    pub(super) async fn run(
        &self,
        _name: &str,
        _action: &str,
        _parameters: Vec<(String, String)>,
    ) -> Answer {
        not_yet()
    }
    pub(super) async fn actions(&self, _name: &str) -> Answer {
        not_yet()
    }
}

fn not_yet() -> Answer {
    (
        Outcome::Refused,
        "Runs are not available in this version yet.".into(),
    )
}
