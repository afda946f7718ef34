//! Bearer-token authentication for every route.
//!
//! With a token configured, a request needs `Authorization: Bearer
//! <token>`; a missing, malformed or wrong header gets 401 with a JSON
//! error body and `WWW-Authenticate: Bearer`. The token is compared in
//! constant time (only its length can be learned from timing).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::ApiError;

/// Whether the `Authorization` header value carries `token`.
fn authorized(header: Option<&[u8]>, token: &[u8]) -> Result<(), &'static str> {
    let value = header.ok_or("missing bearer token: send the header 'Authorization: Bearer <token>'")?;
    let malformed = "malformed Authorization header: expected 'Bearer <token>'";
    // The scheme is case-insensitive (RFC 9110, section 11.1).
    let (scheme, rest) = value.split_at_checked(7).ok_or(malformed)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return Err(malformed);
    }
    let given = rest.trim_ascii();
    if given.is_empty() {
        return Err(malformed);
    }
    if bool::from(given.ct_eq(token)) {
        Ok(())
    } else {
        Err("wrong bearer token")
    }
}

/// The middleware: passes the request on, or answers 401.
pub(crate) async fn require_token(State(token): State<Arc<str>>, request: Request, next: Next) -> Response {
    let header = request.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes());
    match authorized(header, token.as_bytes()) {
        Ok(()) => next.run(request).await,
        Err(message) => ApiError::unauthorized(message).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::authorized;

    #[test]
    fn accepts_only_the_right_bearer_token() {
        let token = b"s3cret";
        assert!(authorized(Some(b"Bearer s3cret"), token).is_ok());
        assert!(authorized(Some(b"bearer s3cret"), token).is_ok());
        assert!(authorized(Some(b"Bearer  s3cret "), token).is_ok());
        assert!(authorized(None, token).is_err());
        assert!(authorized(Some(b"Bearer s3cre"), token).is_err());
        assert!(authorized(Some(b"Bearer s3cret2"), token).is_err());
        assert!(authorized(Some(b"Basic s3cret"), token).is_err());
        assert!(authorized(Some(b"s3cret"), token).is_err());
        assert!(authorized(Some(b"Bearer "), token).is_err());
    }
}
