//! Errors of a reconcile pass. Problems with the installation itself (bad
//! spec, missing profile) are not errors: they become its status. Errors are
//! what should be retried.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    /// A short label for the `reconcile_errors` metric.
    pub fn metric_label(&self) -> String {
        match self {
            Error::Kube(kube::Error::Api(status)) => format!("api_{}", status.code),
            Error::Kube(_) => "kube_client".into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Success, or 404: either way the object is gone, which is what a delete or
/// a finalizer removal wanted.
pub fn gone_is_fine<T>(result: kube::Result<T>) -> Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(err.into()),
    }
}
