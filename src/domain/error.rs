//! The domain's one error type. The API layer maps it to `tonic::Status` in exactly one place
//! (`api::error`), and Envoy maps that status to HTTP.

/// One request field that failed validation, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), description: description.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; each violation names a field.
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The thing does not exist, or exists outside the caller's business (existence must not leak).
    #[error("{0} not found")]
    NotFound(String),
    /// No credentials, or credentials that do not match a live key. Never says which.
    #[error("missing or invalid credentials")]
    Unauthenticated,
    /// Valid credentials without the right to do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The request is well-formed but the resource's current state does not allow it (e.g. a
    /// status transition).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The change conflicts with existing state (e.g. a unique value already taken).
    #[error("{0}")]
    Conflict(String),
    /// The caller has used up an allowance (a rate limit, a size limit); later or smaller may work.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A dependency (the database) cannot be reached right now; retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// Anything unexpected. Logged with its cause chain; the client sees an opaque INTERNAL.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

fn describe(violations: &[FieldViolation]) -> String {
    violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; ")
}

impl Error {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }
}

impl From<crate::store::StoreError> for Error {
    fn from(err: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match err {
            StoreError::Unavailable(_) | StoreError::Unreachable(_) | StoreError::FileGone(_) => {
                Error::Unavailable("the database is unavailable".into())
            }
            StoreError::UniqueViolation(_) => Error::Conflict("the value already exists".into()),
            other => Error::Internal(anyhow::Error::new(other)),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Collects every field violation of a request, so the caller learns all of them at once.
#[derive(Default)]
pub struct Violations {
    found: Vec<FieldViolation>,
    /// The first failure that is not the request's fault (the database is down while a check
    /// reads it): it wins over the violations, so that the caller retries instead of "fixing" a
    /// request that was fine.
    failure: Option<Error>,
}

impl Violations {
    /// Keeps the value, or records why it was rejected.
    pub fn check<T>(&mut self, result: Result<T>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(Error::InvalidArgument(mut found)) => {
                self.found.append(&mut found);
                None
            }
            Err(other) => {
                self.failure.get_or_insert(other);
                None
            }
        }
    }

    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.found.push(FieldViolation::new(field, description));
    }

    /// Fails with the first failure that is not a violation, or else every violation collected,
    /// if any.
    pub fn finish(self) -> Result<()> {
        match self.failure {
            Some(failure) => Err(failure),
            None if self.found.is_empty() => Ok(()),
            None => Err(Error::InvalidArgument(self.found)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_are_collected_together() {
        let mut v = Violations::default();
        assert_eq!(v.check(Ok::<_, Error>(7)), Some(7));
        assert_eq!(v.check(Err::<(), _>(Error::invalid("a", "is wrong"))), None);
        v.add("b", "is missing");
        match v.finish() {
            Err(Error::InvalidArgument(found)) => {
                assert_eq!(found, vec![FieldViolation::new("a", "is wrong"), FieldViolation::new("b", "is missing")])
            }
            other => panic!("{other:?}"),
        }
        assert!(Violations::default().finish().is_ok());
    }

    #[test]
    fn an_outage_during_validation_is_not_a_violation() {
        let mut v = Violations::default();
        v.add("a", "is wrong");
        let outage = crate::store::StoreError::Unreachable("connection refused".into());
        assert_eq!(v.check(Err::<(), _>(Error::from(outage))), None);
        assert!(matches!(v.finish(), Err(Error::Unavailable(_))));
    }
}
