//! HTTP plumbing the network kinds share: the client with its timeouts, base URLs and path
//! segments, and how a failed request or status is worded and classified (retry or fail fast).
//! It knows no protocol: WebDAV's and Tahoe's requests, and S3's (through `object_store`), are
//! their kinds'.

use std::error::Error as StdError;
use std::path::Path;
use std::time::Duration;

use dropslot_actors::remote::RemoteError;

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

/// Bytes left as they are in a URL path segment: RFC 3986's unreserved characters. Everything
/// else (control characters, `%`, `?`, `#`, non-ASCII) is percent-encoded, so a name reaches
/// the server byte for byte. The `url` crate's segment setter cannot be used for names: like
/// every WHATWG URL parser it silently drops tab, LF and CR.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `base` (whose path ends with `/`) with the components of `rel` appended as encoded segments;
/// with `collection`, a trailing `/`. A name that is not UTF-8 is an error naming `rel`.
pub fn join_url(
    base: &reqwest::Url,
    rel: &Path,
    collection: bool,
    kind: &str,
) -> Result<reqwest::Url, RemoteError> {
    use std::os::unix::ffi::OsStrExt;
    let mut path = base.path().to_string();
    if !path.ends_with('/') {
        path.push('/');
    }
    let mut first = true;
    for part in rel.components() {
        let name = part.as_os_str();
        if std::str::from_utf8(name.as_bytes()).is_err() {
            return Err(RemoteError::permanent(format!(
                "{}: the name is not UTF-8, which {kind} names must be",
                rel.display()
            )));
        }
        if !first {
            path.push('/');
        }
        first = false;
        path.extend(percent_encoding::percent_encode(name.as_bytes(), SEGMENT));
    }
    if collection && !first {
        path.push('/');
    }
    let mut url = base.clone();
    url.set_path(&path);
    Ok(url)
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
        return RemoteError::transient(format!(
            "{context}: unknown host in {endpoint} (the name does not resolve: check the spelling)"
        ));
    }
    if timed_out || chain.contains("timed out") || chain.contains("timeout") {
        return RemoteError::transient(format!("{context}: no answer from {endpoint} in time"));
    }
    if let Some(why) = tls_problem(&chain) {
        // The innermost cause says which check failed, for what the summary does not cover.
        let cause = chain.lines().last().unwrap_or_default();
        return RemoteError::transient(format!(
            "{context}: TLS with {endpoint} failed: {why} ({cause})"
        ));
    }
    match status_in(&chain) {
        Some(status) if (400..500).contains(&status) && status != 408 && status != 429 => {
            RemoteError::permanent(format!("{context}: {error}"))
        }
        _ => RemoteError::transient(format!("{context}: {error}")),
    }
}

/// What went wrong in a TLS handshake, for an operator, if `chain` (an error chain, lowercase)
/// is one.
fn tls_problem(chain: &str) -> Option<&'static str> {
    // rustls's wordings; not "tls" or "ssl" alone, which a host name in a URL may contain.
    let tls = [
        "certificate",
        "handshake",
        "corrupt message",
        "fatal alert",
        "peer is incompatible",
        "peer misbehaved",
    ]
    .iter()
    .any(|w| chain.contains(w));
    if !tls {
        return None;
    }
    Some(
        if chain.contains("unknownissuer")
            || chain.contains("unknown issuer")
            || chain.contains("causedasendentity")
        {
            "the server's certificate is not signed by an authority this machine trusts (self-signed?)"
        } else if chain.contains("notvalidforname") || chain.contains("not valid for name") {
            "the server's certificate is not valid for this host name"
        } else if chain.contains("expired") {
            "the server's certificate has expired"
        } else if chain.contains("invalid peer certificate") {
            "the server's certificate is not accepted by this machine (self-signed, or signed by an authority it does not trust?)"
        } else if chain.contains("corrupt message") || chain.contains("invalidcontenttype") {
            "the server does not speak TLS there (an http:// server given as https://?)"
        } else {
            "the handshake failed (certificate or protocol)"
        },
    )
}

/// An HTTP status that is not success, worded and classified like [`classify_transport`].
pub fn status_error(context: &str, status: reqwest::StatusCode) -> RemoteError {
    let message = format!("{context}: the server answered {status}");
    if status_is_transient(status) {
        RemoteError::transient(message)
    } else {
        RemoteError::permanent(message)
    }
}

/// Whether a request that got `status` may succeed when retried: server errors, 408 and 429.
pub fn status_is_transient(status: reqwest::StatusCode) -> bool {
    status.is_server_error()
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
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

    #[test]
    fn tls_failures_are_told_apart() {
        let said = |chain: &str| tls_problem(chain).unwrap_or("not TLS");
        assert!(said("invalid peer certificate: unknownissuer").contains("not signed"));
        assert!(said("invalid peer certificate: notvalidforname").contains("host name"));
        assert!(said("invalid peer certificate: expired").contains("expired"));
        assert!(said("invalid peer certificate: badsignature").contains("not accepted"));
        assert!(said("received corrupt message of type invalidcontenttype").contains("http://"));
        assert_eq!(said("connection reset by peer"), "not TLS");
    }

    #[test]
    fn names_reach_the_url_byte_for_byte() {
        let base = reqwest::Url::parse("http://h:1/dav/drops/").unwrap();
        let url = |rel: &str, collection| {
            join_url(&base, Path::new(rel), collection, "WebDAV")
                .unwrap()
                .to_string()
        };
        assert_eq!(url("a\tb.txt", false), "http://h:1/dav/drops/a%09b.txt");
        assert_eq!(
            url("tab\tdir/x\ny\r", false),
            "http://h:1/dav/drops/tab%09dir/x%0Ay%0D"
        );
        assert_eq!(
            url("50% ?#.txt", false),
            "http://h:1/dav/drops/50%25%20%3F%23.txt"
        );
        assert_eq!(url("café/d", true), "http://h:1/dav/drops/caf%C3%A9/d/");
        assert_eq!(url("", true), "http://h:1/dav/drops/");
        // Distinct names, distinct URLs.
        assert_ne!(url("ab.txt", false), url("a\tb.txt", false));
    }
}
