//! Baseline (b) of the load bench: the obvious implementation, one `XADD` per request through
//! fred, awaited before answering 202.
//!
//! `naive_fred <addr> <redis url>`

use std::convert::Infallible;

use bytes::Bytes;
use fred::prelude::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

async fn handle(
    redis: Client,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let written: Result<String, _> = redis
        .xadd(
            "naive:{q0}:events",
            false,
            None::<()>,
            "*",
            vec![("body", Value::Bytes(body))],
        )
        .await;
    let (status, text): (StatusCode, &'static [u8]) = match written {
        Ok(_) => (
            StatusCode::ACCEPTED,
            br#"{"id":"evt_01JAAAAAAAAAAAAAAAAAAAAAAA","event_type":"bench","duplicate":false}"#,
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            br#"{"error":{"code":"unavailable","message":"redis"}}"#,
        ),
    };
    let mut res = Response::new(Full::new(Bytes::from_static(text)));
    *res.status_mut() = status;
    Ok(res)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18082".into());
    let url = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let redis = Builder::from_config(Config::from_url(&url)?).build()?;
    redis.init().await?;
    let listener = TcpListener::bind(&addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let redis = redis.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(redis.clone(), req));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
