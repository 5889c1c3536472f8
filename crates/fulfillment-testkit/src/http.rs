//! A minimal HTTP/1.1 client for the tests (one connection per request).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> anyhow::Result<Reply> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("127.0.0.1:{port}"));
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let response = sender
        .send_request(builder.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

pub async fn get(port: u16, path: &str) -> anyhow::Result<Reply> {
    request(port, "GET", path, &[], Vec::new()).await
}

/// POSTs `body` to the webhook endpoint with the given `Stripe-Signature`.
pub async fn post_webhook(port: u16, body: &[u8], signature: Option<&str>) -> Reply {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(sig) = signature {
        headers.push(("stripe-signature", sig));
    }
    request(port, "POST", "/webhooks/stripe", &headers, body.to_vec())
        .await
        .expect("webhook request")
}

/// Signs `body` now with `secret` and POSTs it.
pub async fn post_signed(port: u16, body: &[u8], secret: &str) -> Reply {
    let header = stripe_webhook_signature::sign_header(secret, crate::unix_now(), body);
    post_webhook(port, body, Some(&header)).await
}

/// POSTs a custom-payment report to `/payments/custom`, signed now with
/// `secret` in `Fulfillment-Signature` (no header when `secret` is None).
pub async fn post_custom_payment(port: u16, body: &[u8], secret: Option<&str>) -> Reply {
    let mut headers = vec![("content-type", "application/json")];
    let header;
    if let Some(secret) = secret {
        header = stripe_webhook_signature::sign_header(secret, crate::unix_now(), body);
        headers.push(("fulfillment-signature", header.as_str()));
    }
    request(port, "POST", "/payments/custom", &headers, body.to_vec())
        .await
        .expect("custom payment request")
}
