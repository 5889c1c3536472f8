//! Reading a webhook body within its limits: `MAX_BODY_BYTES` per request
//! (declared or counted), the shared `MAX_INFLIGHT_BODY_BYTES` budget (no
//! room is a 503 at once, never a wait) and `BODY_READ_TIMEOUT_SECS`.

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http::header::CONTENT_LENGTH;
use http_body_util::BodyExt;
use hyper::Request;
use hyper::body::Incoming;

use super::Receiver;
use super::rejection::{Outcome, Rejection};
use crate::budget::Reservation;

impl Receiver {
    /// The declared `Content-Length` (hyper has already refused a malformed
    /// one), refused with 413 when over `MAX_BODY_BYTES`.
    pub(super) fn check_declared_length(
        &self,
        req: &Request<Incoming>,
    ) -> Result<Option<usize>, Rejection> {
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match declared {
            Some(len) if len > self.max_body_bytes as u64 => Err(too_large(self.max_body_bytes)),
            Some(len) => Ok(Some(len as usize)),
            None => Ok(None),
        }
    }

    /// Holds the declared length up front (chunked bodies grow their
    /// reservation as frames arrive). Never waits: no room is a 503 now.
    pub(super) fn reserve(&self, declared: Option<usize>) -> Result<Reservation, Rejection> {
        let mut reservation = self.body_budget.reservation();
        reservation
            .grow(declared.unwrap_or(0))
            .map_err(|_| shed())?;
        Ok(reservation)
    }

    pub(super) async fn read_body(
        &self,
        req: Request<Incoming>,
        declared: Option<usize>,
        reservation: &mut Reservation,
    ) -> Result<Bytes, Rejection> {
        let read = self.read_frames(req.into_body(), declared, reservation);
        match tokio::time::timeout(self.body_read_timeout, read).await {
            Err(_) => Err(Rejection::new(
                Outcome::BadRequest,
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
            )
            .closing()),
            Ok(result) => result,
        }
    }

    /// Copies frames into one buffer sized by the declared length, so the
    /// memory held is what the reservation says (no second copy at the end).
    async fn read_frames(
        &self,
        mut body: Incoming,
        declared: Option<usize>,
        reservation: &mut Reservation,
    ) -> Result<Bytes, Rejection> {
        let mut buf = BytesMut::with_capacity(declared.unwrap_or(0));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                Rejection::new(
                    Outcome::BadRequest,
                    StatusCode::BAD_REQUEST,
                    format!("could not read the request body: {e}"),
                )
                .closing()
            })?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers carry nothing we use
            };
            let total = buf.len() + data.len();
            if total > self.max_body_bytes {
                return Err(too_large(self.max_body_bytes));
            }
            if total > reservation.held() {
                reservation
                    .grow(total - reservation.held())
                    .map_err(|_| shed())?;
            }
            buf.extend_from_slice(&data);
        }
        Ok(buf.freeze())
    }
}

/// No room in the body budget: the same answer as a broker outage (503,
/// `Retry-After`), so Stripe retries; the body is never read.
pub(super) fn shed() -> Rejection {
    let mut r = Rejection::new(
        Outcome::Unavailable,
        StatusCode::SERVICE_UNAVAILABLE,
        "too many request bodies in flight, retry later",
    )
    .closing();
    r.shed = true;
    r
}

pub(super) fn too_large(limit: usize) -> Rejection {
    // The rest of an oversized body is never read.
    Rejection::new(
        Outcome::TooLarge,
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("body larger than {limit} bytes"),
    )
    .closing()
}
