//! Extractors whose rejections are [`ApiError`]s: a JSON body that accepts
//! any content type, and strict query parameters.

use axum::body::Bytes;
use axum::extract::{FromRequest, Query, Request};
use axum::http::HeaderMap;
use serde::de::DeserializeOwned;

use super::ApiError;

/// A request body parsed as JSON into `T`, whatever its content type (so
/// `curl -d '...'` works without `-H 'Content-Type: application/json'`).
/// An empty body is read as JSON `null`.
///
/// Rejections are [`ApiError`]s: 413 `payload_too_large` over the body
/// limit, 400 `invalid_json` for text that is not JSON or does not fit `T`.
/// Routes added with [`HttpApi::routes`](super::HttpApi::routes) can use it
/// to read bodies the way the core routes do.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await?;
        let value = if bytes.iter().all(u8::is_ascii_whitespace) {
            serde_json::from_value(serde_json::Value::Null)
        } else {
            serde_json::from_slice(&bytes)
        };
        value.map(JsonBody).map_err(|e| {
            ApiError::bad_request("invalid_json", format!("the request body is not valid JSON: {e}"))
        })
    }
}

/// The query parameters of a request, checked against the names a route
/// accepts.
#[derive(Debug)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Parses the query; a parameter not in `accepted` is a 400.
    pub(crate) fn parse(
        query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
        accepted: &[&str],
    ) -> Result<Self, ApiError> {
        let Query(pairs) = query?;
        for (key, _) in &pairs {
            if !accepted.contains(&key.as_str()) {
                let message = if accepted.is_empty() {
                    format!("unknown query parameter {key:?}: this route takes none")
                } else {
                    format!(
                        "unknown query parameter {key:?}; accepted: {}",
                        accepted.join(", ")
                    )
                };
                return Err(ApiError::bad_request("unknown_parameter", message));
            }
        }
        Ok(Self(pairs))
    }

    /// Every value of `key`, in order.
    pub(crate) fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a parameter that may be given once.
    pub(crate) fn one<'a>(&'a self, key: &'a str) -> Result<Option<&'a str>, ApiError> {
        let mut values = self.all(key);
        let first = values.next();
        if values.next().is_some() {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("query parameter {key:?} is given more than once"),
            ));
        }
        Ok(first)
    }

    /// A parameter parsed with `parse`, which says what it expected.
    pub(crate) fn parsed<T>(
        &self,
        key: &str,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, ApiError> {
        match self.one(key)? {
            None => Ok(None),
            Some(text) => parse(text).map(Some).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_parameter",
                    format!("query parameter {key:?} must be {expected}, not {text:?}"),
                )
            }),
        }
    }
}

/// A decimal `u64` without sign or spaces.
pub(crate) fn parse_u64(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The value of a header as text, if present.
pub(crate) fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value.to_str().map(Some).map_err(|_| {
            ApiError::bad_request("invalid_header", format!("header {name} is not visible ASCII"))
        }),
    }
}
