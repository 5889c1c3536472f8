//! The calls the service makes, typed: listing and retrieving events,
//! a Checkout Session's line items (every page), and Payment Records.
//! Types hold only the members we read; Stripe adds members freely.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::client::Client;
use crate::error::Error;
use crate::form::{Params, Value};
use crate::request::Request;

/// The operations, by their metric label.
pub mod endpoint {
    use crate::request::Endpoint;

    pub const LIST_EVENTS: Endpoint = Endpoint("GET /v1/events");
    pub const RETRIEVE_EVENT: Endpoint = Endpoint("GET /v1/events/:id");
    pub const LIST_LINE_ITEMS: Endpoint = Endpoint("GET /v1/checkout/sessions/:id/line_items");
    pub const REPORT_PAYMENT: Endpoint = Endpoint("POST /v1/payment_records/report_payment");
    pub const RETRIEVE_PAYMENT_RECORD: Endpoint = Endpoint("GET /v1/payment_records/:id");
    pub const LIST_PAYMENT_RECORDS: Endpoint = Endpoint("GET /v1/payment_records");
}

/// The largest page Stripe serves.
pub const MAX_PAGE: u32 = 100;

/// One page of a list: `{"object":"list","data":[…],"has_more":…,"url":…}`.
#[derive(Clone, Debug, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
    pub has_more: bool,
    #[serde(default)]
    pub url: String,
}

/// Objects of a list have ids: the cursor of the next page.
pub trait Listed {
    fn id(&self) -> &str;
}

/// Walks a list newest first, page by page, with `starting_after`. New
/// objects appearing meanwhile come before the cursor, so no page shifts
/// under the walk.
pub struct Pages<'c, T> {
    client: &'c Client,
    request: Request,
    after: Option<String>,
    done: bool,
    _item: std::marker::PhantomData<T>,
}

impl<'c, T: Listed + serde::de::DeserializeOwned> Pages<'c, T> {
    /// `request` with its filters; `limit` is set here.
    pub fn new(client: &'c Client, mut request: Request, limit: u32) -> Pages<'c, T> {
        request.params.push("limit", limit.clamp(1, MAX_PAGE));
        Pages {
            client,
            request,
            after: None,
            done: false,
            _item: std::marker::PhantomData,
        }
    }

    /// The next page, or `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Vec<T>>, Error> {
        if self.done {
            return Ok(None);
        }
        let mut request = self.request.clone();
        if let Some(after) = &self.after {
            request.params.push("starting_after", after.as_str());
        }
        let page: List<T> = self.client.send(&request).await?;
        let last = page.data.last().map(|item| item.id().to_owned());
        // `has_more` with no items, or a cursor that does not move, would
        // loop for ever: stop instead of trusting it.
        if last.is_none() || last == self.after {
            self.done = true;
            if page.has_more && last.is_some() {
                return Err(Error::Decode("a list page repeated its cursor".into()));
            }
        } else {
            self.done = !page.has_more;
        }
        self.after = last;
        Ok(Some(page.data))
    }

    /// Every remaining object, newest first.
    pub async fn collect(mut self) -> Result<Vec<T>, Error> {
        let mut all = Vec::new();
        while let Some(page) = self.next().await? {
            all.extend(page);
        }
        Ok(all)
    }
}

/// An event as the Events API lists it: the members we route on, and the
/// whole object as Stripe sent it (the same JSON a webhook delivers).
#[derive(Clone, Debug)]
pub struct Event {
    pub id: String,
    pub event_type: String,
    pub created: i64,
    /// The Connect account the event belongs to, if any.
    pub account: Option<String>,
    pub raw: Box<RawValue>,
}

impl Listed for Event {
    fn id(&self) -> &str {
        &self.id
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Event, D::Error> {
        #[derive(Deserialize)]
        struct Head {
            id: String,
            #[serde(rename = "type")]
            event_type: String,
            created: i64,
            #[serde(default)]
            account: Option<String>,
        }
        let raw = Box::<RawValue>::deserialize(d)?;
        let head: Head = serde_json::from_str(raw.get()).map_err(serde::de::Error::custom)?;
        Ok(Event {
            id: head.id,
            event_type: head.event_type,
            created: head.created,
            account: head.account,
            raw,
        })
    }
}

/// The filters of `GET /v1/events`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// `types[]`: at most 20 names (Stripe's limit); empty = every type.
    pub types: Vec<String>,
    /// `created[gte]`, Unix seconds.
    pub created_gte: Option<i64>,
    /// `created[lte]`, Unix seconds.
    pub created_lte: Option<i64>,
    /// `delivery_success`: `Some(false)` lists events not yet delivered to
    /// some endpoint (pending, or failed every attempt).
    pub delivery_success: Option<bool>,
}

impl EventFilter {
    pub fn params(&self) -> Params {
        let mut created = Vec::new();
        if let Some(gte) = self.created_gte {
            created.push(("gte", Value::from(gte)));
        }
        if let Some(lte) = self.created_lte {
            created.push(("lte", Value::from(lte)));
        }
        Params::new()
            .with("types", Value::list(self.types.iter()))
            .with("created", Value::map(created))
            .with_opt("delivery_success", self.delivery_success)
    }
}

/// A Checkout Session line item (`object: "item"`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct LineItem {
    pub id: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub quantity: Option<u64>,
    pub amount_subtotal: i64,
    pub amount_total: i64,
    pub currency: String,
    #[serde(default)]
    pub price: Option<Price>,
}

impl Listed for LineItem {
    fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct Price {
    pub id: String,
    /// The product's id, whether Stripe sent the id or the expanded object.
    #[serde(default, deserialize_with = "id_or_object")]
    pub product: Option<String>,
    #[serde(default)]
    pub unit_amount: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
}

/// A Payment Record (`pr_…`), as `report_payment` and retrieve answer.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct PaymentRecord {
    pub id: String,
    #[serde(default)]
    pub livemode: bool,
    #[serde(default)]
    pub created: Option<i64>,
    /// What the reporter set, e.g. the id of what it recorded: the only way
    /// to find a record again once its idempotency key is forgotten.
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
}

impl Listed for PaymentRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

/// An expandable reference: `"prod_1"` or `{"id": "prod_1", …}`.
fn id_or_object<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Reference {
        Id(String),
        Object { id: String },
    }
    Ok(Option::<Reference>::deserialize(d)?.map(|r| match r {
        Reference::Id(id) | Reference::Object { id } => id,
    }))
}

impl Client {
    /// Events matching `filter`, newest first, page by page (of 100).
    pub fn events(&self, filter: &EventFilter, account: Option<&str>) -> Pages<'_, Event> {
        let request = Request::new(endpoint::LIST_EVENTS, &[])
            .params(filter.params())
            .account(account);
        Pages::new(self, request, MAX_PAGE)
    }

    /// One event by id (Stripe keeps them 30 days).
    pub async fn retrieve_event(&self, id: &str, account: Option<&str>) -> Result<Event, Error> {
        let request = Request::new(endpoint::RETRIEVE_EVENT, &[id]).account(account);
        self.send(&request).await
    }

    /// Every line item of a Checkout Session, in Stripe's order, following
    /// every page.
    pub async fn list_line_items(
        &self,
        session_id: &str,
        account: Option<&str>,
    ) -> Result<Vec<LineItem>, Error> {
        let request = Request::new(endpoint::LIST_LINE_ITEMS, &[session_id]).account(account);
        Pages::new(self, request, MAX_PAGE).collect().await
    }

    /// `POST /v1/payment_records/report_payment` with the caller's
    /// parameters and idempotency key (derived from what is reported, so a
    /// retry, even by another process, cannot record the payment twice).
    pub async fn report_payment(
        &self,
        params: Params,
        idempotency_key: &str,
        account: Option<&str>,
    ) -> Result<PaymentRecord, Error> {
        let request = Request::new(endpoint::REPORT_PAYMENT, &[])
            .params(params)
            .idempotency_key(idempotency_key)
            .account(account);
        self.send(&request).await
    }

    /// Payment Records created after `created_after` (Unix seconds), newest
    /// first, page by page (`GET /v1/payment_records`, API version
    /// 2026-07-29.dahlia on). Stripe filters by time only: a caller looking
    /// for one of its records matches the metadata it set.
    pub fn payment_records(
        &self,
        created_after: i64,
        account: Option<&str>,
    ) -> Pages<'_, PaymentRecord> {
        let request = Request::new(endpoint::LIST_PAYMENT_RECORDS, &[])
            .params(Params::new().with("created_after", created_after))
            .account(account);
        Pages::new(self, request, MAX_PAGE)
    }

    pub async fn retrieve_payment_record(
        &self,
        id: &str,
        account: Option<&str>,
    ) -> Result<PaymentRecord, Error> {
        let request = Request::new(endpoint::RETRIEVE_PAYMENT_RECORD, &[id]).account(account);
        self.send(&request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_filters_in_stripe_notation() {
        let filter = EventFilter {
            types: vec!["a.b".into(), "c.d".into()],
            created_gte: Some(10),
            created_lte: Some(20),
            delivery_success: Some(false),
        };
        assert_eq!(
            filter.params().encode(),
            "types[]=a.b&types[]=c.d&created[gte]=10&created[lte]=20&delivery_success=false"
        );
        assert_eq!(EventFilter::default().params().encode(), "");
    }

    #[test]
    fn events_keep_their_raw_json() {
        let page: List<Event> = serde_json::from_str(
            r#"{"object":"list","url":"/v1/events","has_more":false,"data":[
                {"id":"evt_1","object":"event","type":"checkout.session.completed","created":5,
                 "account":"acct_1","data":{"object":{"id":"cs_1"}}}]}"#,
        )
        .unwrap();
        let event = &page.data[0];
        assert_eq!((event.id.as_str(), event.created), ("evt_1", 5));
        assert_eq!(event.account.as_deref(), Some("acct_1"));
        assert!(event.raw.get().starts_with(r#"{"id":"evt_1""#));
        assert!(
            event
                .raw
                .get()
                .ends_with(r#""data":{"object":{"id":"cs_1"}}}"#)
        );
    }

    #[test]
    fn line_items_read_expanded_or_plain_products() {
        let plain: LineItem = serde_json::from_str(
            r#"{"id":"li_1","object":"item","description":"T-shirt","quantity":2,
                "amount_subtotal":4000,"amount_total":4000,"currency":"eur",
                "price":{"id":"price_1","object":"price","product":"prod_1","unit_amount":2000,"currency":"eur"}}"#,
        )
        .unwrap();
        assert_eq!(plain.price.unwrap().product.as_deref(), Some("prod_1"));
        let expanded: Price = serde_json::from_str(
            r#"{"id":"price_1","product":{"id":"prod_2","object":"product"}}"#,
        )
        .unwrap();
        assert_eq!(expanded.product.as_deref(), Some("prod_2"));
    }
}
