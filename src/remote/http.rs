//! HTTP plumbing the network kinds share: the client with its timeouts, base URLs and path
//! segments, and how a failed request or status is worded and classified (retry or fail fast).
//! It knows no protocol: WebDAV's and Tahoe's requests, and S3's (through `object_store`), are
//! their kinds'.

use std::time::Duration;

/// How long a request may make no progress, unless a kind's `timeout` says otherwise.
pub fn default_timeout() -> Duration {
    Duration::from_secs(60)
}

/// How long connecting may take: a server that does not accept in this long is down.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The client every HTTP kind uses: `timeout` without progress fails a request.
pub fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(timeout)
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))
}

/// The URL in setting `key`, as a base to join names to: its path ends with `/`.
pub fn base_url(url: &str, key: &str) -> Result<reqwest::Url, String> {
    let mut base = reqwest::Url::parse(url).map_err(|e| format!("{key}: {e}"))?;
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    Ok(base)
}
