//! Deadlines for request bodies (docs/protocol.md §4.1): a client that declares a body and then
//! trickles it in is answered with 408 and the JSON error once its time is up, and the
//! connection is closed, so a slow body holds its connection and buffers for a bounded time.
//!
//! JSON bodies (every route but the media upload) must arrive whole within
//! `limits.http_body_secs`. Media uploads are streamed and may be large: they get that time
//! plus the time their size (the declared `Content-Length`, else the largest media limit) takes
//! at `limits.upload_min_rate`, and must never go `limits.upload_idle_secs` without a byte.
//! The request's head has its own deadline in the listener (src/server.rs).

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::HttpMessage as _;
use actix_web::dev::{Payload, ServiceRequest};
use actix_web::error::PayloadError;
use actix_web::http::{Method, StatusCode, header};
use bytes::Bytes;
use tokio::time::{Instant, Sleep, sleep_until};

use crate::config::Settings;

/// How long a request's body may take to arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyDeadline {
    pub total: Duration,
    /// The longest gap between two chunks, for uploads.
    pub idle: Option<Duration>,
}

/// Whether the request declares a body (a length above zero, or chunked).
fn has_body(req: &ServiceRequest) -> bool {
    let headers = req.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// `POST /v1/groups/{group}/rooms/{room}/media`, the one route with a streamed body.
fn is_upload(req: &ServiceRequest) -> bool {
    let segments: Vec<&str> = req.path().split('/').collect();
    req.method() == Method::POST
        && matches!(
            segments.as_slice(),
            ["", "v1", "groups", _, "rooms", _, "media"]
        )
}

/// The deadline for `req`'s body, `None` when it has none.
pub fn deadline_for(req: &ServiceRequest, settings: &Settings) -> Option<BodyDeadline> {
    if !has_body(req) {
        return None;
    }
    let limits = &settings.limits;
    let base = Duration::from_secs(limits.http_body_secs);
    if !is_upload(req) {
        return Some(BodyDeadline {
            total: base,
            idle: None,
        });
    }
    let media = &settings.media;
    let largest = media
        .image_max_bytes
        .max(media.video_max_bytes)
        .max(media.file_max_bytes);
    let size = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(largest)
        .min(largest);
    Some(BodyDeadline {
        total: base + Duration::from_secs(size / limits.upload_min_rate.max(1)),
        idle: Some(Duration::from_secs(limits.upload_idle_secs)),
    })
}

/// Replaces `req`'s payload with one that ends in an error when `deadline` passes; the flag
/// it returns says whether it did.
pub fn time_body(req: &mut ServiceRequest, deadline: BodyDeadline) -> Rc<Cell<bool>> {
    let expired = Rc::new(Cell::new(false));
    let now = Instant::now();
    let timed = TimedPayload {
        inner: req.take_payload(),
        total: Box::pin(sleep_until(now + deadline.total)),
        idle: deadline
            .idle
            .map(|idle| (idle, Box::pin(sleep_until(now + idle)))),
        expired: expired.clone(),
        done: false,
    };
    req.set_payload(Payload::from(
        Box::pin(timed) as Pin<Box<dyn futures_util::Stream<Item = _>>>
    ));
    expired
}

/// The answer to a body that did not arrive in time.
pub fn timed_out() -> actix_web::HttpResponse {
    let mut response = super::error::error_response(
        StatusCode::REQUEST_TIMEOUT,
        crate::protocol::ErrorCode::BadRequest,
        "the request body did not arrive in time",
    );
    // The rest of the body is never read: the connection cannot carry another request.
    response
        .head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
    response
}

struct TimedPayload {
    inner: Payload,
    total: Pin<Box<Sleep>>,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    expired: Rc<Cell<bool>>,
    done: bool,
}

impl futures_util::Stream for TimedPayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let idle_over = this
            .idle
            .as_mut()
            .is_some_and(|(_, sleep)| sleep.as_mut().poll(cx).is_ready());
        if this.total.as_mut().poll(cx).is_ready() || idle_over {
            this.done = true;
            this.expired.set(true);
            return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the request body did not arrive in time",
            )))));
        }
        let next = Pin::new(&mut this.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(_))) = &next
            && let Some((idle, sleep)) = this.idle.as_mut()
        {
            sleep.as_mut().reset(Instant::now() + *idle);
        }
        if let Poll::Ready(None | Some(Err(_))) = &next {
            this.done = true;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn json_bodies_get_the_total_and_uploads_their_size_at_the_minimum_rate() {
        let mut settings = Settings::default();
        settings.limits.http_body_secs = 10;
        settings.limits.upload_min_rate = 16 * 1024;
        settings.limits.upload_idle_secs = 7;
        let json = TestRequest::post()
            .uri("/v1/groups/g/rooms")
            .insert_header((header::CONTENT_LENGTH, "100"))
            .to_srv_request();
        assert_eq!(
            deadline_for(&json, &settings),
            Some(BodyDeadline {
                total: Duration::from_secs(10),
                idle: None
            })
        );
        let upload = TestRequest::post()
            .uri("/v1/groups/g/rooms/r/media?name=a.png")
            .insert_header((header::CONTENT_LENGTH, (160 * 1024).to_string()))
            .to_srv_request();
        assert_eq!(
            deadline_for(&upload, &settings),
            Some(BodyDeadline {
                total: Duration::from_secs(20),
                idle: Some(Duration::from_secs(7))
            })
        );
        // Without a length, the largest media limit is what it may take.
        let chunked = TestRequest::post()
            .uri("/v1/groups/g/rooms/r/media")
            .insert_header((header::TRANSFER_ENCODING, "chunked"))
            .to_srv_request();
        let largest = settings
            .media
            .video_max_bytes
            .max(settings.media.file_max_bytes);
        assert_eq!(
            deadline_for(&chunked, &settings).map(|d| d.total),
            Some(Duration::from_secs(10 + largest / (16 * 1024)))
        );
        let bodiless = TestRequest::get()
            .uri("/v1/groups/g/rooms")
            .to_srv_request();
        assert_eq!(deadline_for(&bodiless, &settings), None);
    }
}
