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
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// Keeps the value, or records why it was rejected.
    pub fn check<T>(&mut self, result: Result<T>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(Error::InvalidArgument(mut found)) => {
                self.0.append(&mut found);
                None
            }
            Err(other) => {
                self.0.push(FieldViolation::new("request", other.to_string()));
                None
            }
        }
    }

    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Fails with every violation collected, if any.
    pub fn finish(self) -> Result<()> {
        if self.0.is_empty() { Ok(()) } else { Err(Error::InvalidArgument(self.0)) }
    }
}
