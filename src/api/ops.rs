//! Operations (docs/protocol.md §8): liveness, readiness (the store answers and takes writes) and Prometheus
//! metrics from the `metrics` recorder. None of them needs a token.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use super::error::error_response;
use crate::protocol::ErrorCode;
use crate::state::AppState;
use crate::store::StoreError;

/// `GET /healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", summary = "Liveness", responses((status = 200, description = "The process is up", body = String)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// `GET /readyz`: the store answers, takes writes, and the node is not draining. Not ready is
/// 503 `unavailable` with the reason in the message.
#[utoipa::path(get, path = "/readyz", tag = "operations", summary = "Readiness", responses((status = 200, description = "The store answers and takes writes", body = String), (status = 503, description = "The store does not answer or refuses writes (the reason is the message), or the node is draining", body = crate::api::error::Body)))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.shutdown.is_cancelled() {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "the node is shutting down",
        );
    }
    let ping =
        tokio::time::timeout(std::time::Duration::from_secs(2), state.deps.store.ping()).await;
    match ping {
        Ok(Ok(())) => HttpResponse::Ok()
            .content_type("text/plain")
            .body("ready\n"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            // The reason (a full disk, refused writes, an unreachable cluster) is what an
            // operator needs; a corrupt record's details stay in the log.
            let message = match &e {
                StoreError::Corrupt(_) => "the store is unavailable".to_owned(),
                other => other.to_string(),
            };
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                &message,
            )
        }
        Err(_) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "the store did not answer in time",
        ),
    }
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", summary = "Prometheus metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    match &state.metrics {
        Some(handle) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(handle.render()),
        None => error_response(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "metrics are not enabled in this process",
        ),
    }
}
