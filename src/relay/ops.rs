//! The relay's operations port: `/healthz`, `/readyz`, `/metrics`, nothing else. `/readyz`
//! answers 200 for a relay that can serve its role (`"role": "active"`, or `"standby"` when it
//! reaches PostgreSQL and Redis and would take over), 503 with the reason otherwise.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

use super::metrics::RelayMetrics;
use super::RelayStatus;

/// Serves the operations endpoints until `shutdown` completes.
pub async fn serve_ops(
    listener: TcpListener,
    metrics: Arc<RelayMetrics>,
    status: Arc<RelayStatus>,
    shutdown: impl Future<Output = ()>,
) {
    let handler = move |request: Request<hyper::body::Incoming>, _peer| {
        let (metrics, status) = (Arc::clone(&metrics), Arc::clone(&status));
        async move { Ok::<_, Infallible>(answer(&request, &metrics, &status)) }
    };
    crate::http::serve_with(listener, handler, shutdown).await
}

fn answer<B>(
    request: &Request<B>,
    metrics: &RelayMetrics,
    status: &RelayStatus,
) -> Response<Full<Bytes>> {
    let get = request.method() == Method::GET || request.method() == Method::HEAD;
    let (code, content_type, body) = match request.uri().path() {
        _ if !get => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".to_string(),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" => match status.readiness() {
            Ok((role, waiting)) => (
                StatusCode::OK,
                "application/json",
                match role {
                    super::Role::Standby => {
                        serde_json::json!({"ready": true, "role": role.as_str(), "reason": waiting})
                    }
                    _ => serde_json::json!({"ready": true, "role": role.as_str()}),
                }
                .to_string(),
            ),
            Err(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                serde_json::json!({"ready": false, "reason": reason}).to_string(),
            ),
        },
        "/metrics" => {
            let accept = request.headers().get(hyper::header::ACCEPT);
            if crate::metrics::wants_openmetrics(accept.map(|a| a.as_bytes())) {
                (
                    StatusCode::OK,
                    crate::metrics::OPENMETRICS,
                    metrics.encode(),
                )
            } else {
                let classic = crate::metrics::to_classic(&metrics.encode());
                (StatusCode::OK, crate::metrics::CLASSIC, classic)
            }
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
