//! Baseline (a) of the load bench: a bare hyper server that reads the body and answers 202.
//! No auth, no Redis: the ceiling of what HTTP alone costs on this machine.
//!
//! `bare_hyper <addr>`

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let _body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut res = Response::new(Full::new(Bytes::from_static(
        br#"{"id":"evt_01JAAAAAAAAAAAAAAAAAAAAAAA","event_type":"bench","duplicate":false}"#,
    )));
    *res.status_mut() = StatusCode::ACCEPTED;
    Ok(res)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18081".into());
    let listener = TcpListener::bind(&addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(handle))
                .await;
        });
    }
}
