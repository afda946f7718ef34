//! The JSON error body and the mapping of every failure to a status code.
//!
//! Every error the API returns has the body
//! `{"error": {"code": "...", "message": "..."}}`: `code` is a stable,
//! machine-readable word (such as `instance_not_found`), `message` a
//! sentence for people. Rejections of axum's extractors (a malformed path
//! or query, a body over the limit) are turned into the same shape, so a
//! client never sees a plain-text error or an empty 500.

use std::borrow::Cow;
use std::fmt;

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::Error;

/// An error answer of the HTTP API: a status code and the JSON body
/// `{"error": {"code": "...", "message": "..."}}`.
///
/// Handlers of routes added with [`HttpApi::routes`](super::HttpApi::routes)
/// return it to answer in the same format as the core routes. A
/// [`durable_core::Error`](crate::Error) converts into it with the status
/// code the core routes use.
///
/// ```
/// use axum::http::StatusCode;
/// use durable_core::http::ApiError;
///
/// let error = ApiError::new(StatusCode::CONFLICT, "request_not_pending", "request 'r1' is not pending");
/// assert_eq!(error.status(), StatusCode::CONFLICT);
/// assert_eq!(error.code(), "request_not_pending");
/// ```
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: Cow<'static, str>,
    message: String,
}

impl ApiError {
    /// An error with this status, machine-readable code and message.
    pub fn new(status: StatusCode, code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    /// A 400 Bad Request.
    pub fn bad_request(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A 404 Not Found.
    pub fn not_found(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code, such as `instance_not_found`.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The message for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({ "error": { "code": self.code, "message": self.message } })
    }

    pub(crate) fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut response = (self.status, Json(self.body())).into_response();
        if unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<Error> for ApiError {
    /// The status codes of the core routes: 400 for bad input, 404 for an
    /// unknown instance, 409 for an operation the instance's status does
    /// not allow, 503 when the store fails.
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::InvalidInstanceId(_) => Self::bad_request("invalid_instance_id", message),
            Error::InstanceNotFound(_) => Self::not_found("instance_not_found", message),
            Error::InstanceAlreadyExists(_) => {
                Self::new(StatusCode::CONFLICT, "instance_already_exists", message)
            }
            Error::InvalidState { status, .. } => {
                let code = if status.is_terminal() {
                    "instance_terminal"
                } else {
                    "instance_not_terminal"
                };
                Self::new(StatusCode::CONFLICT, code, message)
            }
            Error::EventAlreadyRaised { .. } => {
                Self::new(StatusCode::CONFLICT, "event_already_raised", message)
            }
            Error::InstanceReplaced(_) => Self::new(StatusCode::GONE, "instance_replaced", message),
            Error::Json(_) => Self::bad_request("invalid_json", message),
            Error::InvalidArgument(_) => Self::bad_request("invalid_argument", message),
            Error::Timeout(_) => Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message),
            Error::Store(_) => {
                tracing::warn!(error = %message, "store error answered with 503");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", message)
            }
            _ => {
                tracing::error!(error = %message, "unexpected error in the HTTP API");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
            }
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request("invalid_path", rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request("invalid_query", rejection.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than the configured limit",
            )
        } else {
            Self::bad_request("invalid_body", rejection.body_text())
        }
    }
}
