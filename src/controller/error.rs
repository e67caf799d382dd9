//! Errors of a reconcile pass. Problems with the installation itself (bad
//! spec, missing profile) are not errors: they become its status. Errors are
//! what the API server answered, classified:
//!
//! - permanent: a 4xx other than 409 Conflict and 429 Too Many Requests (an
//!   invalid object, an admission denial, a forbidden request), or an object
//!   the client could not encode or decode. Retrying the same request gives
//!   the same answer, so the installation goes `Stalled` with the object and
//!   the API server's own message, and a Warning Event says so.
//! - transient: 5xx, 409, 429, time-outs and connection errors. The
//!   installation stays `Reconciling` and the pass is retried with a
//!   per-installation exponential backoff.

/// What a request was about, for messages: `apply StatefulSet ti-x/database`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub verb: &'static str,
    pub object: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{} {}: {}", .request.verb, .request.object, describe(.source))]
    Api {
        request: Request,
        #[source]
        source: kube::Error,
    },
    #[error("Kubernetes API request failed: {}", describe(.0))]
    Kube(#[from] kube::Error),
}

/// How an error is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Permanent,
    Transient,
}

/// The API server's own words where there are some.
fn describe(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

/// Classifies a client error (see the module documentation).
pub fn classify(err: &kube::Error) -> Class {
    match err {
        kube::Error::Api(status) => match status.code {
            409 | 429 => Class::Transient,
            400..=499 => Class::Permanent,
            _ => Class::Transient,
        },
        kube::Error::SerdeError(_) | kube::Error::BuildRequest(_) => Class::Permanent,
        _ => Class::Transient,
    }
}

impl Error {
    /// Wraps a client error with what was asked.
    pub fn request(verb: &'static str, object: impl Into<String>, source: kube::Error) -> Self {
        Error::Api {
            request: Request {
                verb,
                object: object.into(),
            },
            source,
        }
    }

    fn source_error(&self) -> &kube::Error {
        match self {
            Error::Api { source, .. } | Error::Kube(source) => source,
        }
    }

    pub fn class(&self) -> Class {
        classify(self.source_error())
    }

    pub fn is_permanent(&self) -> bool {
        self.class() == Class::Permanent
    }

    /// The condition reason of a permanent error: `RequestRejected`, or
    /// `RequestForbidden` for a 403 (RBAC or an admission policy).
    pub fn reason(&self) -> &'static str {
        match self.source_error() {
            kube::Error::Api(status) if status.code == 403 => "RequestForbidden",
            kube::Error::Api(status) if status.code == 422 => "ObjectInvalid",
            kube::Error::Api(_) => "RequestRejected",
            _ => "RequestFailed",
        }
    }

    /// One sentence for the status: the object and the API server's message.
    pub fn message(&self) -> String {
        match self {
            Error::Api { request, source } => format!(
                "the API server refused to {} {}: {}",
                request.verb,
                request.object,
                describe(source)
            ),
            Error::Kube(source) => format!("a Kubernetes API request failed: {}", describe(source)),
        }
    }

    /// A short label for the `reconcile_errors` metric.
    pub fn metric_label(&self) -> String {
        match self.source_error() {
            kube::Error::Api(status) => format!("api_{}", status.code),
            _ => "kube_client".into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds what was asked to a client error.
pub trait Context<T> {
    fn request(self, verb: &'static str, object: impl Into<String>) -> Result<T>;
}

impl<T> Context<T> for kube::Result<T> {
    fn request(self, verb: &'static str, object: impl Into<String>) -> Result<T> {
        self.map_err(|source| Error::request(verb, object, source))
    }
}

/// Success, or 404: either way the object is gone, which is what a delete or
/// a finalizer removal wanted.
pub fn gone_is_fine<T>(result: kube::Result<T>) -> Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, "Invalid")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn client_errors_are_permanent_except_conflicts_and_throttling() {
        assert_eq!(classify(&api(422, "immutable")), Class::Permanent);
        assert_eq!(classify(&api(403, "denied")), Class::Permanent);
        assert_eq!(classify(&api(400, "bad")), Class::Permanent);
        assert_eq!(classify(&api(409, "conflict")), Class::Transient);
        assert_eq!(classify(&api(429, "slow down")), Class::Transient);
        assert_eq!(classify(&api(500, "etcd")), Class::Transient);
        assert_eq!(classify(&api(503, "unavailable")), Class::Transient);
    }

    #[test]
    fn messages_name_the_object_and_quote_the_server() {
        let err = Error::request(
            "apply",
            "StatefulSet ti-demo/database",
            api(
                422,
                "spec: Forbidden: updates to statefulset spec are forbidden",
            ),
        );
        assert!(err.is_permanent());
        assert_eq!(err.reason(), "ObjectInvalid");
        assert_eq!(
            err.message(),
            "the API server refused to apply StatefulSet ti-demo/database: spec: Forbidden: updates to statefulset spec are forbidden"
        );
    }
}
