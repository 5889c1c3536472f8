//! `POST /payments/custom` (contract 8.2): the merchant's own backend reports
//! a payment it completed outside Stripe with a custom payment method.
//!
//! Everything but the last step is the webhook's: the same size limit,
//! in-flight body budget, timeouts and answers, a signature of the same
//! scheme in `Fulfillment-Signature` checked against `CUSTOM_PAYMENT_SECRET`.
//! Then the body must be a report `fulfillment_core::parse_custom_payment`
//! accepts (a 400 naming the member otherwise), and it is published, in its
//! envelope, to `stripe.events` with routing key `custom_payment.reported`
//! and `message_id` `custom_payment:{id}`; 200 only after the broker's confirm.

use http::StatusCode;
use hyper::Request;
use hyper::body::Incoming;

use fulfillment_core::{CUSTOM_PAYMENT_TYPE, custom, parse_custom_payment};

use super::Receiver;
use super::rejection::{Outcome, Rejection};
use crate::clock::unix_now;

pub const CUSTOM_PAYMENT_PATH: &str = "/payments/custom";
const FULFILLMENT_SIGNATURE: &str = "Fulfillment-Signature";

impl Receiver {
    /// Returns the accepted report's event id (`custom_payment:{id}`).
    pub(super) async fn accept_custom_payment(
        &self,
        req: Request<Incoming>,
    ) -> Result<String, Rejection> {
        let verifier = self
            .custom_verifier
            .as_ref()
            .expect("routed here only when CUSTOM_PAYMENT_SECRET is set");
        let body = self
            .verified_body(req, FULFILLMENT_SIGNATURE, verifier)
            .await?;
        let report = parse_custom_payment(&body).map_err(|e| {
            let mut rejection =
                Rejection::new(Outcome::BadRequest, StatusCode::BAD_REQUEST, e.to_string());
            rejection.field = e.field().map(|f| f.into_owned());
            rejection
        })?;
        let event_id = report.event_id();
        let envelope = custom::envelope(&body, &report.id, unix_now());
        self.publish(&event_id, CUSTOM_PAYMENT_TYPE, &envelope)
            .await
            .map_err(|mut r| {
                r.event_id = Some(event_id.clone());
                r
            })?;
        Ok(event_id)
    }
}
