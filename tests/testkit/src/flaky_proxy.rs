//! A fault-injecting HTTP proxy on loopback, standing between dropslot and a real server. It is
//! the suite's own stand-in for a bad network (nothing packaged injects faults per request): a
//! chosen share of requests fail in one of the ways networks and servers fail, the rest are
//! forwarded unchanged. Some faults strike *after* the server has acted on the request, which is
//! the case that catches a client recording success it cannot know.
//! With a fixed delay and no faults it is also the "slow server" of the benchmarks.
//!
//! [`FlakyProxy::lying`] makes it a server that acknowledges writes and stores nothing (a broken
//! gateway, a full disk that a server does not report): PUT and MOVE, and S3's multipart
//! completion, are answered with success without being forwarded; everything else, reads
//! included, is forwarded, so a client that reads back sees the truth. Nothing packaged behaves
//! like this on purpose, hence our own.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response};

use crate::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 503 Service Unavailable, without forwarding.
    ServerError,
    /// Connection closed before forwarding.
    ResetBefore,
    /// Forwarded, then the connection is closed instead of answering.
    ResetAfter,
    /// No answer for `stall` (past the client's timeout), then closed; not forwarded.
    Stall,
    /// Forwarded; the answer's body is cut short and the connection closed.
    Truncated,
}

const FAULTS: [Fault; 5] = [
    Fault::ServerError,
    Fault::ResetBefore,
    Fault::ResetAfter,
    Fault::Stall,
    Fault::Truncated,
];

#[derive(Default, Debug)]
pub struct Counts {
    pub requests: AtomicU64,
    pub faults: [AtomicU64; 5],
    /// Writes answered with success and not forwarded ([`FlakyProxy::lying`]).
    pub lies: AtomicU64,
}

impl Counts {
    pub fn summary(&self) -> String {
        let faults: Vec<String> = FAULTS
            .iter()
            .zip(&self.faults)
            .map(|(f, n)| format!("{f:?} {}", n.load(Ordering::SeqCst)))
            .collect();
        format!(
            "{} requests, faults: {}",
            self.requests.load(Ordering::SeqCst),
            faults.join(", ")
        )
    }

    pub fn total_faults(&self) -> u64 {
        self.faults.iter().map(|n| n.load(Ordering::SeqCst)).sum()
    }
}

struct Settings {
    upstream: String,
    /// Share of requests that fail, in percent.
    fault_percent: u64,
    stall: Duration,
    /// Added before every forwarded request (a slow link).
    delay: Duration,
    /// Acknowledge writes without forwarding them.
    lie_to_writes: bool,
    rng: Mutex<Rng>,
    counts: Arc<Counts>,
    client: reqwest::Client,
}

pub struct FlakyProxy {
    pub port: u16,
    pub counts: Arc<Counts>,
    runtime: Option<tokio::runtime::Runtime>,
}

type Body = BoxBody<Bytes, std::io::Error>;

impl FlakyProxy {
    /// Forwards to `upstream` (`http://127.0.0.1:PORT`), failing `fault_percent`% of requests.
    pub fn start(upstream: &str, fault_percent: u64, stall: Duration, delay: Duration) -> Self {
        Self::launch(upstream, fault_percent, stall, delay, false)
    }

    /// Forwards to `upstream` everything but writes, which it acknowledges and drops.
    pub fn lying(upstream: &str) -> Self {
        Self::launch(upstream, 0, Duration::ZERO, Duration::ZERO, true)
    }

    fn launch(
        upstream: &str,
        fault_percent: u64,
        stall: Duration,
        delay: Duration,
        lie_to_writes: bool,
    ) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let counts = Arc::new(Counts::default());
        let settings = Arc::new(Settings {
            upstream: upstream.trim_end_matches('/').to_string(),
            fault_percent,
            stall,
            delay,
            lie_to_writes,
            rng: Mutex::new(Rng::from_env("flaky proxy")),
            counts: counts.clone(),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
        });
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let settings = settings.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let settings = settings.clone();
                        async move { handle(req, settings).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FlakyProxy {
            port,
            counts,
            runtime: Some(runtime),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn closed() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "injected fault")
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    settings: Arc<Settings>,
) -> Result<Response<Body>, std::io::Error> {
    settings.counts.requests.fetch_add(1, Ordering::SeqCst);
    if settings.lie_to_writes {
        if let Some(answer) = lie(&req) {
            settings.counts.lies.fetch_add(1, Ordering::SeqCst);
            // The body is read (and dropped) as a server would, so the client sees no reset.
            let _ = req.into_body().collect().await;
            return Ok(answer);
        }
    }
    let fault = {
        let mut rng = settings.rng.lock().unwrap();
        (rng.below(100) < settings.fault_percent).then(|| FAULTS[rng.below(5) as usize])
    };
    if let Some(f) = fault {
        let index = FAULTS.iter().position(|x| *x == f).unwrap();
        settings.counts.faults[index].fetch_add(1, Ordering::SeqCst);
    }
    match fault {
        Some(Fault::ServerError) => {
            let body = Full::new(Bytes::from_static(b"injected fault"))
                .map_err(|e: Infallible| match e {})
                .boxed();
            return Ok(Response::builder().status(503).body(body).unwrap());
        }
        Some(Fault::ResetBefore) => return Err(closed()),
        Some(Fault::Stall) => {
            tokio::time::sleep(settings.stall).await;
            return Err(closed());
        }
        _ => {}
    }
    tokio::time::sleep(settings.delay).await;
    let answer = forward(req, &settings).await?;
    match fault {
        Some(Fault::ResetAfter) => Err(closed()),
        Some(Fault::Truncated) => {
            let (parts, body) = answer.into_parts();
            let half = body.slice(..body.len() / 2);
            let frames = futures_util::stream::iter(vec![Ok(Frame::data(half)), Err(closed())]);
            let mut response = Response::from_parts(parts, StreamBody::new(frames).boxed());
            // Promise more than will come, so the cut is visible to the client.
            response.headers_mut().insert(
                hyper::header::CONTENT_LENGTH,
                (body.len() + 16).to_string().parse().unwrap(),
            );
            Ok(response)
        }
        _ => Ok(answer.map(|b| Full::new(b).map_err(|e: Infallible| match e {}).boxed())),
    }
}

/// The success a storing server would answer to a write, or `None` for a request to forward:
/// WebDAV's PUT and MOVE get 201; S3's PUT (objects and parts) gets 200 with an ETag; S3's
/// multipart completion (POST `?uploadId=`) gets its XML result. S3's multipart start (POST
/// `?uploads`) is forwarded: its answer carries the upload id the client needs.
fn lie(req: &Request<hyper::body::Incoming>) -> Option<Response<Body>> {
    let query = req.uri().query().unwrap_or("");
    let s3 = req.headers().contains_key("x-amz-date")
        || req.headers().contains_key(hyper::header::AUTHORIZATION)
            && req.headers()[hyper::header::AUTHORIZATION]
                .to_str()
                .is_ok_and(|a| a.starts_with("AWS4-"));
    let (status, body) = match req.method().as_str() {
        "PUT" if s3 => (200, String::new()),
        "PUT" | "MOVE" => (201, String::new()),
        "POST" if s3 && query.contains("uploadId=") => {
            let key = req.uri().path().trim_start_matches('/');
            (
                200,
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUploadResult>\
                     <Location>/{key}</Location><Key>{key}</Key>\
                     <ETag>\"00000000000000000000000000000000-1\"</ETag></CompleteMultipartUploadResult>"
                ),
            )
        }
        _ => return None,
    };
    let mut answer = Response::builder()
        .status(status)
        .header("ETag", "\"00000000000000000000000000000000\"");
    if !body.is_empty() {
        answer = answer.header(hyper::header::CONTENT_TYPE, "application/xml");
    }
    let body = Full::new(Bytes::from(body))
        .map_err(|e: Infallible| match e {})
        .boxed();
    Some(answer.body(body).unwrap())
}

/// Sends the request on and returns the server's complete answer.
async fn forward(
    req: Request<hyper::body::Incoming>,
    settings: &Settings,
) -> Result<Response<Bytes>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let head = parts.method == hyper::Method::HEAD;
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let url = format!(
        "{}{}",
        settings.upstream,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut out = settings.client.request(parts.method, url).body(body);
    for (name, value) in &parts.headers {
        // Host is kept: WebDAV servers compare it with MOVE's Destination, S3 signs it.
        if name != hyper::header::CONTENT_LENGTH && name != hyper::header::TRANSFER_ENCODING {
            out = out.header(name, value);
        }
    }
    let answer = out.send().await.map_err(std::io::Error::other)?;
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        // A HEAD answer's Content-Length is the object's size (what a client asks HEAD for),
        // not the length of the empty body passed on.
        if (head || name != hyper::header::CONTENT_LENGTH)
            && name != hyper::header::TRANSFER_ENCODING
            && name != hyper::header::CONNECTION
        {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.map_err(std::io::Error::other)?;
    Ok(response.body(bytes).unwrap())
}
