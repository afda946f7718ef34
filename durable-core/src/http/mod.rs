//! The HTTP API (feature `http`): start, read and control instances, and
//! follow their streams as Server-Sent Events.
//!
//! [`HttpApi`] turns a [`Client`] into an [`axum::Router`], which can be
//! served with [`HttpApi::serve`] or merged into a larger application.
//!
//! | Route | Answer |
//! | --- | --- |
//! | `POST /api/orchestrations/{name}[?instanceId=ID]` | 202: starts an instance with the body as input; its id and links |
//! | `GET /api/instances/{id}` | 200: the instance's status |
//! | `GET /api/instances?runtimeStatus=&name=&createdFrom=&createdTo=&pageSize=&continuationToken=` | 200: a page of instances |
//! | `POST /api/instances/{id}/raiseEvent/{event}` | 202: raises an external event with the body as data |
//! | `POST /api/instances/{id}/terminate[?reason=]` | 202 |
//! | `POST /api/instances/{id}/suspend[?reason=]` | 202 |
//! | `POST /api/instances/{id}/resume[?reason=]` | 202 |
//! | `DELETE /api/instances/{id}` | 200: purges a terminal instance |
//! | `GET /api/instances/{id}/events?after=N&limit=M` | 200: a page of stream events after cursor `N` |
//! | `GET /api/instances/{id}/events/stream[?after=N]` | 200: Server-Sent Events (see below) |
//! | `GET /api/openapi.json` | 200: the OpenAPI 3 description |
//!
//! Field names follow the Durable Functions HTTP API where it has one
//! (`instanceId`, `runtimeStatus`, `customStatus`, `createdTime`, ...).
//!
//! # The live stream
//!
//! Each stream event is one SSE event: `id:` its sequence number, `event:`
//! its name, `data:` its payload as one line of JSON. The response starts
//! after the `Last-Event-ID` header (what a reconnecting `EventSource`
//! sends), else after `?after=N`, else at the start; it sends keep-alive
//! comments while idle, and ends after the last event of a terminal
//! instance. A request whose cursor is already at the end of a terminal
//! instance's stream gets 204, which tells an `EventSource` to stop
//! reconnecting.
//!
//! # Errors
//!
//! Every error has the body `{"error": {"code": "...", "message": "..."}}`
//! ([`ApiError`]): 400 for malformed JSON, an invalid instance id, a bad
//! cursor or query parameter (unknown parameters are rejected too); 401 for
//! a missing or wrong bearer token; 404 for an unknown instance, route or
//! (when [`ServeOptions::known_orchestrations`] is set) orchestration; 405
//! for a method a route does not serve; 409 when the instance exists and
//! is not terminal (start), is terminal (raise event, terminate, suspend,
//! resume) or is not terminal (purge); 413 for a body over the limit; 503
//! when the store fails.
//!
//! # Adding routes
//!
//! Other crates add their routes with [`HttpApi::routes`] (and describe
//! them with [`HttpApi::document`]): they are served behind the same token,
//! body limit and JSON 404/405 answers. Their handlers can read bodies with
//! [`JsonBody`] and answer errors with [`ApiError`], as the core routes do.
//!
//! ```
//! use std::sync::Arc;
//!
//! use axum::routing::get;
//! use axum::Router;
//! use durable_core::http::{HttpApi, ServeOptions};
//! use durable_core::prelude::*;
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await?);
//! let client = Client::new(store);
//! let options = ServeOptions::new()
//!     .token("s3cret")
//!     .known_orchestrations(["hello_cities"]);
//! let router = HttpApi::new(client, options)
//!     .routes(Router::new().route("/api/ping", get(|| async { "pong" })))
//!     .document("/api/ping", json!({ "get": { "responses": { "200": { "description": "pong" } } } }))
//!     .router();
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = tokio::spawn(async move { axum::serve(listener, router).await });
//! # server.abort();
//! # Ok(())
//! # }
//! ```

mod auth;
mod error;
mod extract;
mod model;
mod openapi;
mod routes;
mod sse;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::FutureExt;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use error::ApiError;
pub use extract::JsonBody;

use crate::Client;

/// The address [`HttpApi`] programs bind to unless told otherwise:
/// `127.0.0.1:8080`, reachable from this machine only.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

/// The default request body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The default interval of keep-alive comments on idle streams: 15 s.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Options of the HTTP API.
///
/// ```
/// use std::time::Duration;
/// use durable_core::http::ServeOptions;
///
/// let options = ServeOptions::new()
///     .token("s3cret")
///     .body_limit(64 * 1024)
///     .keep_alive(Duration::from_secs(5))
///     .known_orchestrations(["hello_cities", "countdown"])
///     .public_url("https://durable.example.com");
/// ```
#[derive(Debug, Clone)]
pub struct ServeOptions {
    token: Option<Arc<str>>,
    body_limit: usize,
    keep_alive: Duration,
    known_orchestrations: Option<Arc<BTreeSet<String>>>,
    public_url: Option<Arc<str>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            token: None,
            body_limit: DEFAULT_BODY_LIMIT,
            keep_alive: DEFAULT_KEEP_ALIVE,
            known_orchestrations: None,
            public_url: None,
        }
    }
}

impl ServeOptions {
    /// No token, a 1 MiB body limit, keep-alive comments every 15 s, any
    /// orchestration name accepted, links built from the `Host` header.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every route, the stream included, requires `Authorization: Bearer
    /// <token>`. An empty token lets no request in.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Arc::from(token.into()));
        self
    }

    /// Requires the token if it is `Some`.
    pub fn token_opt(mut self, token: Option<String>) -> Self {
        self.token = token.map(Arc::from);
        self
    }

    /// The largest request body accepted, in bytes (413 above it).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// How often an idle stream sends a keep-alive comment.
    pub fn keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = interval;
        self
    }

    /// The orchestrations the workers know. When set, starting any other
    /// name is a 404 instead of an instance that waits for a worker that
    /// never comes. The [`Client`] cannot see the workers' registries, so
    /// pass the names you registered, such as those of
    /// [`Registry::orchestration_names`](crate::Registry::orchestration_names).
    pub fn known_orchestrations<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.known_orchestrations = Some(Arc::new(names.into_iter().map(Into::into).collect()));
        self
    }

    /// The scheme and authority of the links in answers, such as
    /// `https://durable.example.com`, for a server behind a proxy. By
    /// default links start with `http://` and the request's `Host` header.
    pub fn public_url(mut self, url: impl Into<String>) -> Self {
        let url = url.into();
        self.public_url = Some(Arc::from(url.trim_end_matches('/')));
        self
    }
}

/// What every handler of the core routes sees.
#[derive(Clone)]
pub(crate) struct ApiState {
    pub(crate) client: Client,
    pub(crate) keep_alive: Duration,
    pub(crate) known_orchestrations: Option<Arc<BTreeSet<String>>>,
    pub(crate) public_url: Option<Arc<str>>,
    pub(crate) openapi: Arc<Value>,
    /// Set to `true` when a server started by [`HttpApi::serve`] shuts down.
    pub(crate) shutdown: Option<watch::Receiver<bool>>,
}

/// The HTTP API of a [`Client`]: builds an [`axum::Router`] or serves it.
#[derive(Debug)]
pub struct HttpApi {
    client: Client,
    options: ServeOptions,
    extra_routes: Router,
    extra_docs: Vec<(String, Value)>,
}

impl HttpApi {
    /// The API of `client` with `options`.
    pub fn new(client: Client, options: ServeOptions) -> Self {
        Self {
            client,
            options,
            extra_routes: Router::new(),
            extra_docs: Vec::new(),
        }
    }

    /// Serves `routes` next to the core routes, behind the same token,
    /// body limit and JSON 404/405 answers. This is how other crates (such
    /// as the workflow layer) add their routes; give their state to
    /// `routes` with [`Router::with_state`] first.
    ///
    /// # Panics
    ///
    /// [`router`](Self::router) panics (at start-up) if a route here has
    /// the path and method of a core route, as axum does for any overlap.
    pub fn routes(mut self, routes: Router) -> Self {
        self.extra_routes = self.extra_routes.merge(routes);
        self
    }

    /// Adds an OpenAPI path item (an object of operations by lower-case
    /// method) for `path` to `/api/openapi.json`, to describe routes added
    /// with [`routes`](Self::routes). Operations of a path that is already
    /// documented are added to it.
    pub fn document(mut self, path: impl Into<String>, item: Value) -> Self {
        self.extra_docs.push((path.into(), item));
        self
    }

    /// The method and path template (`{name}` for a parameter) of every
    /// core route, in the order of the table in the module documentation.
    pub fn core_routes() -> Vec<(Method, &'static str)> {
        routes::table()
            .into_iter()
            .map(|(method, path, _)| (method, path))
            .collect()
    }

    /// The OpenAPI 3 document this API serves at `/api/openapi.json`.
    pub fn openapi(&self) -> Value {
        openapi::document(
            self.options.known_orchestrations.as_deref(),
            self.options.token.is_some(),
            &self.extra_docs,
        )
    }

    /// The router: the core routes and the added ones, behind the token
    /// check and the body limit.
    pub fn router(self) -> Router {
        self.build(None)
    }

    fn build(self, shutdown: Option<watch::Receiver<bool>>) -> Router {
        let state = ApiState {
            openapi: Arc::new(self.openapi()),
            client: self.client,
            keep_alive: self.options.keep_alive,
            known_orchestrations: self.options.known_orchestrations,
            public_url: self.options.public_url,
            shutdown,
        };
        let mut core = Router::new();
        for (_, path, handler) in routes::table() {
            core = core.route(path, handler);
        }
        let router = core
            .with_state(state)
            .merge(self.extra_routes)
            .fallback(route_not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(axum::middleware::from_fn(catch_panic))
            .layer(DefaultBodyLimit::max(self.options.body_limit));
        match self.options.token {
            Some(token) => router.layer(axum::middleware::from_fn_with_state(token, auth::require_token)),
            None => router,
        }
    }

    /// Serves the API on `listener` until the process ends.
    ///
    /// # Errors
    ///
    /// An I/O error of the listener.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        self.serve_with_shutdown(listener, std::future::pending()).await
    }

    /// Serves the API on `listener` until `signal` completes, then shuts
    /// down gracefully: open streams end, requests in flight finish.
    ///
    /// # Errors
    ///
    /// An I/O error of the listener.
    pub async fn serve_with_shutdown<F>(self, listener: TcpListener, signal: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        let router = self.build(Some(stopped));
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                signal.await;
                stop.send_replace(true);
            })
            .await
    }
}

/// Turns a panic in a handler (a bug) into a JSON 500 instead of a reset
/// connection; the server goes on serving.
async fn catch_panic(request: Request, next: Next) -> Response {
    match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(_) => {
            tracing::error!("a handler of the HTTP API panicked");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the server failed while answering; the failure is logged",
            )
            .into_response()
        }
    }
}

async fn route_not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        format!("no route for {}; see /api/openapi.json", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not serve {method}; see /api/openapi.json", uri.path()),
    )
}
