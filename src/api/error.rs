//! The one mapping from domain errors to gRPC statuses (and, through Envoy's transcoder and
//! its Lua hook, to HTTP: INVALID_ARGUMENT → 422, NOT_FOUND → 404, UNAUTHENTICATED → 401,
//! FAILED_PRECONDITION and ALREADY_EXISTS → 409, …).

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::Error;

/// The most characters of a message or field description an answer carries. Descriptions may
/// quote what was sent ("unknown time zone \"…\""); a status travels in HTTP/2 headers, and one
/// over the proxy's header limit would reset the connection it shares with other calls.
const MAX_TEXT: usize = 300;

fn bounded(text: String) -> String {
    match text.char_indices().nth(MAX_TEXT) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let message = bounded(err.to_string());
        match err {
            Error::InvalidArgument(violations) => {
                let details = ErrorDetails::with_bad_request(
                    violations
                        .into_iter()
                        .map(|v| tonic_types::FieldViolation::new(bounded(v.field), bounded(v.description)))
                        .collect::<Vec<_>>(),
                );
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            Error::NotFound(_) => Status::not_found(message),
            Error::Unauthenticated => Status::unauthenticated(message),
            Error::PermissionDenied(_) => Status::permission_denied(message),
            Error::FailedPrecondition(_) => Status::failed_precondition(message),
            Error::Conflict(_) => Status::already_exists(message),
            Error::Unavailable(_) => Status::unavailable(message),
            Error::Internal(cause) => {
                // The cause chain is for operators; the client learns only that it failed.
                tracing::error!(error = format!("{cause:#}"), "internal error");
                Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_descriptions_are_cut() {
        let status = Status::from(Error::invalid("time_zone", format!("unknown time zone {:?}", "x".repeat(100_000))));
        assert!(status.message().chars().count() <= MAX_TEXT + 1, "{}", status.message().len());
        let bad_request = status.get_details_bad_request().expect("BadRequest details");
        let description = &bad_request.field_violations[0].description;
        assert!(description.starts_with("unknown time zone") && description.ends_with('…'), "{description}");
        assert_eq!(description.chars().count(), MAX_TEXT + 1);
    }

    #[test]
    fn field_errors_carry_bad_request_details() {
        let status = Status::from(Error::invalid("status", "must be one of OPEN, RESOLVED"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "invalid request: status: must be one of OPEN, RESOLVED");
        let bad_request = status.get_details_bad_request().expect("BadRequest details");
        assert_eq!(bad_request.field_violations.len(), 1);
        assert_eq!(bad_request.field_violations[0].field, "status");
    }

    #[test]
    fn internal_errors_are_opaque() {
        let status = Status::from(Error::Internal(anyhow::anyhow!("password=hunter2 leaked?")));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }
}
