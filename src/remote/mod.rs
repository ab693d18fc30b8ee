//! The remote kinds, each behind [`dropslot_actors::remote::Remote`], the one function that
//! builds the configured one, and the error wording the network kinds share. Retries and
//! bookkeeping are the pipeline's, not the remotes'.

pub mod local;
pub mod s3;
pub mod tahoe;
pub mod webdav;

use std::error::Error as StdError;
use std::sync::Arc;

use dropslot_actors::fileinfo::ContentHash;
use dropslot_actors::remote::{Remote, RemoteError};

use crate::config::{RemoteConfig, RemoteKind};

/// Builds the configured remote. Errors name the setting or file at fault, never a secret.
pub fn build(config: &RemoteConfig) -> anyhow::Result<Arc<dyn Remote>> {
    Ok(match config.kind {
        RemoteKind::Local => Arc::new(local::LocalRemote::new(config.path.clone())),
        RemoteKind::S3 => Arc::new(s3::S3Remote::new(config).map_err(anyhow::Error::msg)?),
        RemoteKind::Webdav => {
            Arc::new(webdav::WebDavRemote::new(config).map_err(anyhow::Error::msg)?)
        }
        RemoteKind::Tahoe => Arc::new(tahoe::TahoeRemote::new(config).map_err(anyhow::Error::msg)?),
    })
}

/// Publish requests in flight at once (per directory batch for WebDAV, in all for S3): each is
/// an independent atomic step, and with network latency they dominate a burst of small files.
pub const PUBLISH_CONCURRENCY: usize = 16;

/// Whether a downloaded body hashes to `sha256`; a failed read is the caller's kind of error.
pub async fn body_matches<E>(
    body: impl futures_util::Stream<Item = Result<bytes::Bytes, E>>,
    sha256: &ContentHash,
    error: impl Fn(E) -> RemoteError,
) -> Result<bool, RemoteError> {
    use futures_util::StreamExt;
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        hasher.update(&chunk.map_err(&error)?);
    }
    Ok(<ContentHash>::from(hasher.finalize()) == *sha256)
}

/// Words a network failure for an operator: refused, unknown host, timeout, or the HTTP status,
/// and decides whether it is worth retrying (everything but a 4xx other than 408 and 429).
pub fn classify_transport(
    context: &str,
    error: &(dyn StdError + 'static),
    endpoint: &str,
) -> RemoteError {
    let mut chain = String::new();
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    let mut refused = false;
    let mut timed_out = false;
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
            timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
        }
        if let Some(r) = e.downcast_ref::<reqwest::Error>() {
            timed_out |= r.is_timeout();
        }
        chain.push_str(&e.to_string().to_lowercase());
        chain.push('\n');
        source = e.source();
    }
    if refused || chain.contains("connection refused") {
        return RemoteError::transient(format!(
            "{context}: connection refused by {endpoint} (is the server running?)"
        ));
    }
    if chain.contains("dns error")
        || chain.contains("failed to lookup address")
        || chain.contains("name or service not known")
    {
        return RemoteError::transient(format!("{context}: unknown host in {endpoint}"));
    }
    if timed_out || chain.contains("timed out") || chain.contains("timeout") {
        return RemoteError::transient(format!("{context}: no answer from {endpoint} in time"));
    }
    match status_in(&chain) {
        Some(status) if (400..500).contains(&status) && status != 408 && status != 429 => {
            RemoteError::permanent(format!("{context}: {error}"))
        }
        _ => RemoteError::transient(format!("{context}: {error}")),
    }
}

/// The temporary name under which `path` is staged beside its destination: derived from the
/// name, so an interrupted upload's leftover can be found again, and of fixed length, so it fits
/// wherever the real name fits.
pub fn staging_name(path: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let name = path.file_name().map(|n| n.as_bytes()).unwrap_or_default();
    let (hash, _) = dropslot_actors::fileinfo::hash_stream(name, name.len() as u64, |_| Ok(()))
        .expect("hashing a slice cannot fail");
    format!(
        ".dropslot-{}.partial",
        &dropslot_actors::fileinfo::to_hex(&hash)[..16]
    )
}

/// An HTTP status that is not success, worded and classified like [`classify_transport`].
pub fn status_error(context: &str, status: reqwest::StatusCode) -> RemoteError {
    let message = format!("{context}: the server answered {status}");
    if status.is_server_error()
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
    {
        RemoteError::transient(message)
    } else {
        RemoteError::permanent(message)
    }
}

/// The HTTP status a client error message mentions ("... status code: 503 ...").
fn status_in(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    text.get(at..at + 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_decide_between_retry_and_fail_fast() {
        let e = |msg: &str| std::io::Error::other(msg.to_string());
        assert!(
            classify_transport("x", &e("non-2xx status code: 503 Service Unavailable"), "h")
                .is_transient()
        );
        assert!(
            classify_transport("x", &e("non-2xx status code: 429 SlowDown"), "h").is_transient()
        );
        assert!(
            !classify_transport("x", &e("non-2xx status code: 400 Bad Request"), "h")
                .is_transient()
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let err = classify_transport("cannot upload a", &refused, "http://127.0.0.1:9");
        assert!(
            err.is_transient()
                && err
                    .message
                    .contains("connection refused by http://127.0.0.1:9")
        );
    }
}
