//! `ApiError`: a [`ChatError`] as an HTTP response, `{"error":{"code","message"}}` with the
//! status that fits its code. Internal details never reach the body.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::error::ChatError;
use crate::protocol::ErrorCode;

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ApiError(#[from] pub ChatError);

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        Self(ChatError::new(code, message))
    }
}

/// Every error response: `{"error":{"code","message"}}`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ErrorDetail)]
pub struct Inner<'a> {
    /// One of the codes of docs/protocol.md §3.6 (`bad_request`, `forbidden`, `not_found`, ...).
    code: &'a str,
    message: &'a str,
}

/// The HTTP status of each wire code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadFrame | ErrorCode::BadRequest | ErrorCode::UnknownType => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden | ErrorCode::BadPassword => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RoomFull | ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The JSON error body.
pub fn error_response(status: StatusCode, code: ErrorCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(Body {
        error: Inner {
            code: code.as_str(),
            message,
        },
    })
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        status_of(self.0.code)
    }

    fn error_response(&self) -> HttpResponse {
        error_response(self.status_code(), self.0.code, &self.0.message)
    }
}
