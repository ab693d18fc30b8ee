//! The WebDAV remote (nginx, Apache, Nextcloud, rclone serve, ...), over reqwest with rustls.
//!
//! A file is uploaded (PUT, streamed) to a temporary name in its destination collection and made
//! visible by the directory linker with a MOVE, so a reader never sees a partial file. Parent
//! collections are created with MKCOL the first time a directory is used (remembered for the
//! life of the process), since many servers refuse a PUT into a missing collection.
//!
//! Names: every byte of a name other than RFC 3986's unreserved characters is percent-encoded
//! ([`super::http::join_url`]), control characters included, so each local name is one distinct URL;
//! a name that is not UTF-8 is refused. A publish is confirmed with a HEAD of the published URL
//! (its `Content-Length`). Modes and modification times are not kept (WebDAV has no portable way
//! to set them; the server's mtime is the time of the MOVE).

mod config;
pub use config::WebdavConfig;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use dropslot_actors::fileinfo::ContentHash;
use dropslot_actors::remote::{
    ContentStream, FileAttributes, Listed, PublishItem, Remote, RemoteError, RemoteRef, Staged,
};
use futures_util::StreamExt;
use reqwest::{Method, StatusCode, Url};

use super::http::{classify_transport, join_url, status_error};
use super::{body_matches, staging_name, PUBLISH_CONCURRENCY};
use crate::config::Secret;

pub struct WebDavRemote {
    client: reqwest::Client,
    /// Always ends with `/`.
    base: Url,
    credentials: Option<(String, Secret)>,
    /// Collections known to exist, relative to the base.
    collections: Mutex<HashSet<PathBuf>>,
}

fn method(name: &'static str) -> Method {
    Method::from_bytes(name.as_bytes()).expect("a valid method name")
}

impl WebDavRemote {
    pub fn new(config: &WebdavConfig) -> Result<Self, String> {
        let base = super::http::base_url(&config.url, "remote.url")?;
        let client = super::http::client(config.timeout)?;
        let credentials = match (&config.username, &config.password) {
            (Some(user), password) => Some((
                user.clone(),
                password.clone().unwrap_or_else(|| Secret::new("")),
            )),
            (None, _) => None,
        };
        Ok(WebDavRemote {
            client,
            base,
            credentials,
            collections: Mutex::new(HashSet::new()),
        })
    }

    /// The URL of `path` below the base; `collection` adds the trailing `/` MKCOL wants.
    fn url(&self, path: &Path, collection: bool) -> Result<Url, RemoteError> {
        join_url(&self.base, path, collection, "WebDAV")
    }

    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let request = self.client.request(method, url);
        match &self.credentials {
            Some((user, password)) => request.basic_auth(user, Some(password.expose())),
            None => request,
        }
    }

    async fn send(
        &self,
        context: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<StatusCode, RemoteError> {
        request
            .send()
            .await
            .map(|response| response.status())
            .map_err(|e| classify_transport(context, &e, self.base.as_str()))
    }

    /// Creates `dir` and its parents, starting with the base collection, unless known to exist.
    async fn ensure_collection(&self, dir: &Path) -> Result<(), RemoteError> {
        let mut so_far = PathBuf::new();
        let levels = std::iter::once(None).chain(dir.components().map(Some));
        for part in levels {
            if let Some(part) = part {
                so_far.push(part);
            }
            if self
                .collections
                .lock()
                .expect("collections lock")
                .contains(&so_far)
            {
                continue;
            }
            let context = format!(
                "cannot create collection {}",
                self.url(&so_far, true)?.path()
            );
            let status = self
                .send(
                    &context,
                    self.request(method("MKCOL"), self.url(&so_far, true)?),
                )
                .await?;
            // 405: it exists already (as a collection, or as a file, which the PUT then reports).
            if !(status.is_success() || status == StatusCode::METHOD_NOT_ALLOWED) {
                return Err(status_error(&context, status));
            }
            self.collections
                .lock()
                .expect("collections lock")
                .insert(so_far.clone());
        }
        Ok(())
    }

    fn temp_path(path: &Path) -> PathBuf {
        path.with_file_name(staging_name(path))
    }
}

#[async_trait]
impl super::HealthCheck for WebDavRemote {
    async fn health_check(&self, report: super::Report<'_>) -> Result<(), super::CheckFailure> {
        super::step(report, super::Step::Reach, self.reach(), Clone::clone).await?;
        super::probe(self, report).await
    }
}

impl WebDavRemote {
    /// `check`'s first step: the collection at `remote.url` answers PROPFIND as a collection, or
    /// is created as `run` would create it (its parent must exist).
    async fn reach(&self) -> Result<String, RemoteError> {
        let shown = self.describe();
        let context = format!("cannot reach {shown}");
        let response = self
            .request(method("PROPFIND"), self.base.clone())
            .header("Depth", "0")
            .send()
            .await
            .map_err(|e| classify_transport(&context, &e, self.base.as_str()))?;
        let status = response.status();
        let denied = |status: StatusCode| match (status, &self.credentials) {
            (StatusCode::UNAUTHORIZED, None) => Some(format!(
                "{context}: access denied: the server wants credentials (401): set \
                 remote.username and remote.password"
            )),
            (StatusCode::UNAUTHORIZED, Some(_)) => Some(format!(
                "{context}: access denied: the server refused remote.username and \
                 remote.password (401)"
            )),
            (StatusCode::FORBIDDEN, _) => Some(format!(
                "{context}: permission denied: the server refuses this user access to the \
                 collection (403)"
            )),
            _ => None,
        };
        if let Some(message) = denied(status) {
            return Err(RemoteError::permanent(message));
        }
        match status {
            s if s.is_success() => {
                let body = response.text().await.unwrap_or_default();
                if is_collection(&body) {
                    Ok(format!("{shown} exists"))
                } else {
                    Err(RemoteError::permanent(format!(
                        "{context}: remote.url names a file, not a collection (directory)"
                    )))
                }
            }
            StatusCode::NOT_FOUND => {
                let created = self
                    .send(&context, self.request(method("MKCOL"), self.base.clone()))
                    .await?;
                match created {
                    s if s.is_success() => Ok(format!("created {shown}")),
                    StatusCode::CONFLICT => Err(RemoteError::permanent(format!(
                        "{context}: no such collection, and its parent does not exist either \
                         (create it on the server, or fix remote.url)"
                    ))),
                    s => Err(denied(s).map(RemoteError::permanent).unwrap_or_else(|| {
                        status_error(&format!("{context}: no such collection; creating it"), s)
                    })),
                }
            }
            StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => {
                Err(RemoteError::permanent(format!(
                    "{context}: the server does not answer PROPFIND ({status}): remote.url is not \
                     a WebDAV collection (is WebDAV enabled there?)"
                )))
            }
            s => Err(status_error(&context, s)),
        }
    }
}

/// Whether a PROPFIND answer (Depth 0) describes a collection: its `resourcetype` holds a
/// `collection` element, whatever the namespace prefix.
fn is_collection(multistatus: &str) -> bool {
    let lower = multistatus.to_ascii_lowercase();
    let Some(start) = lower.find("resourcetype") else {
        // No properties at all: some servers answer a bare 200; trust the status.
        return true;
    };
    let rest = &lower[start..];
    if rest.starts_with("resourcetype/>") || rest.starts_with("resourcetype />") {
        return false;
    }
    let end = rest[1..].find("resourcetype").map_or(rest.len(), |i| i + 1);
    rest[..end].contains("collection")
}

/// One `response` of a PROPFIND answer.
#[derive(Debug, Default, PartialEq)]
struct DavEntry {
    href: String,
    collection: bool,
    size: Option<u64>,
}

/// The responses of a multistatus answer; elements are matched by local name, whatever the
/// namespace prefix.
fn parse_multistatus(body: &str) -> Result<Vec<DavEntry>, quick_xml::Error> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(body);
    let mut entries = Vec::new();
    let mut current: Option<DavEntry> = None;
    let mut element = Vec::new();
    loop {
        match reader.read_event()? {
            Event::Start(e) => {
                let name = e.local_name().as_ref().to_ascii_lowercase();
                match name.as_slice() {
                    b"response" => current = Some(DavEntry::default()),
                    b"collection" => {
                        if let Some(c) = current.as_mut() {
                            c.collection = true
                        }
                    }
                    _ => {}
                }
                element = name;
            }
            Event::Empty(e) if e.local_name().as_ref().eq_ignore_ascii_case(b"collection") => {
                if let Some(c) = current.as_mut() {
                    c.collection = true
                }
            }
            Event::Text(t) => {
                if let Some(c) = current.as_mut() {
                    let text = t.decode().map_err(quick_xml::Error::from)?;
                    match element.as_slice() {
                        b"href" => c.href.push_str(text.trim()),
                        b"getcontentlength" => c.size = text.trim().parse().ok(),
                        _ => {}
                    }
                }
            }
            // `&amp;` and friends in a name arrive between two pieces of text.
            Event::GeneralRef(r) => {
                if let (Some(c), b"href") = (current.as_mut(), element.as_slice()) {
                    if let Some(ch) = r.resolve_char_ref()? {
                        c.href.push(ch);
                    } else {
                        let name = r.decode().map_err(quick_xml::Error::from)?;
                        if let Some(s) = quick_xml::escape::resolve_predefined_entity(&name) {
                            c.href.push_str(s);
                        }
                    }
                }
            }
            Event::End(e) => {
                if e.local_name().as_ref().eq_ignore_ascii_case(b"response") {
                    entries.extend(current.take());
                }
                element.clear();
            }
            Event::Eof => return Ok(entries),
            _ => {}
        }
    }
}

/// The name of a listed `href` (a path or a full URL, percent-encoded) directly inside the
/// collection at `collection` (a URL path ending in `/`); `None` for the collection itself.
fn child_name(collection: &str, href: &str) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let href_path = match Url::parse(href) {
        Ok(url) => url.path().to_string(),
        Err(_) => href.to_string(),
    };
    let decode = |s: &str| percent_encoding::percent_decode_str(s).collect::<Vec<u8>>();
    let (collection, href_path) = (decode(collection), decode(&href_path));
    let rest = href_path.strip_prefix(collection.as_slice())?;
    let rest = rest.strip_suffix(b"/").unwrap_or(rest);
    if rest.is_empty() || rest.contains(&b'/') {
        return None;
    }
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(rest)))
}

#[async_trait]
impl Remote for WebDavRemote {
    fn describe(&self) -> String {
        // The URL as configured, minus any user:password@ in it.
        let mut shown = self.base.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        format!("WebDAV collection {shown}")
    }

    async fn check(&self) -> Result<(), RemoteError> {
        super::silent_check(self).await
    }

    async fn reconcile(&self, interrupted: Vec<PathBuf>) -> Result<(), RemoteError> {
        for path in interrupted {
            let context = format!("cannot clean up after {}", path.display());
            let status = self
                .send(
                    &context,
                    self.request(Method::DELETE, self.url(&Self::temp_path(&path), false)?),
                )
                .await?;
            if !(status.is_success()
                || status == StatusCode::NOT_FOUND
                || status == StatusCode::CONFLICT)
            {
                return Err(status_error(&context, status));
            }
        }
        Ok(())
    }

    async fn stage(
        &self,
        path: &Path,
        size: u64,
        _attributes: FileAttributes,
        content: ContentStream,
    ) -> Result<Staged, RemoteError> {
        let url = self.url(&Self::temp_path(path), false)?;
        self.ensure_collection(path.parent().unwrap_or(Path::new("")))
            .await?;
        let context = format!("cannot upload {}", path.display());
        let request = self
            .request(Method::PUT, url)
            .header(reqwest::header::CONTENT_LENGTH, size)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(content));
        match self.send(&context, request).await? {
            s if s.is_success() => Ok(Staged(String::new())),
            s => Err(status_error(&context, s)),
        }
    }

    async fn publish(&self, items: Vec<PublishItem>) -> Vec<Result<RemoteRef, RemoteError>> {
        // Each MOVE is atomic on its own; the batch goes in parallel, results in order.
        let moves: Vec<_> = items
            .iter()
            .map(|item| self.move_into_place(item))
            .collect();
        futures_util::stream::iter(moves)
            .buffered(PUBLISH_CONCURRENCY)
            .collect()
            .await
    }

    async fn stored_size(&self, path: &Path) -> Result<Option<u64>, RemoteError> {
        let context = format!("cannot look up {}", path.display());
        let response = self
            .request(Method::HEAD, self.url(path, false)?)
            .send()
            .await
            .map_err(|e| classify_transport(&context, &e, self.base.as_str()))?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if !s.is_success() => Err(status_error(&context, s)),
            // The header itself: for a HEAD, reqwest's content_length() is the empty body's.
            _ => response
                .headers()
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .map(Some)
                .ok_or_else(|| {
                    RemoteError::transient(format!("{context}: the answer has no Content-Length"))
                }),
        }
    }

    async fn discard(&self, path: &Path, _staged: Staged) {
        if let Ok(url) = self.url(&Self::temp_path(path), false) {
            let _ = self.request(Method::DELETE, url).send().await;
        }
    }

    /// A failure to find out is an error of its own, so a flaky link is retried rather than
    /// taken for "no".
    async fn holds(
        &self,
        path: &Path,
        size: u64,
        sha256: &ContentHash,
    ) -> Result<bool, RemoteError> {
        let context = format!("cannot read back {}", path.display());
        let transport = |e: reqwest::Error| classify_transport(&context, &e, self.base.as_str());
        let response = self
            .request(Method::GET, self.url(path, false)?)
            .send()
            .await
            .map_err(transport)?;
        match response.status() {
            StatusCode::NOT_FOUND => return Ok(false),
            s if !s.is_success() => return Err(status_error(&context, s)),
            _ => {}
        }
        if response.content_length() != Some(size) {
            return Ok(false);
        }
        body_matches(response.bytes_stream(), sha256, transport).await
    }

    /// PROPFIND with `Depth: 1` on each collection, from the base down (`Depth: infinity` is
    /// often refused). Servers may hide some names from listings (nginx hides dot files).
    async fn list(&self) -> Result<Vec<Listed>, RemoteError> {
        let mut found = Vec::new();
        let mut collections = vec![PathBuf::new()];
        while let Some(dir) = collections.pop() {
            let url = self.url(&dir, true)?;
            let context = format!("cannot list {}", url.path());
            let response = self
                .request(method("PROPFIND"), url.clone())
                .header("Depth", "1")
                .send()
                .await
                .map_err(|e| classify_transport(&context, &e, self.base.as_str()))?;
            let status = response.status();
            if status == StatusCode::NOT_FOUND && dir.as_os_str().is_empty() {
                return Ok(found);
            }
            if !status.is_success() {
                return Err(status_error(&context, status));
            }
            let body = response
                .text()
                .await
                .map_err(|e| classify_transport(&context, &e, self.base.as_str()))?;
            let entries = parse_multistatus(&body)
                .map_err(|e| RemoteError::transient(format!("{context}: unreadable answer: {e}")))?;
            for entry in entries {
                // The collection itself is in its own listing.
                let Some(name) = child_name(url.path(), &entry.href) else {
                    continue;
                };
                let path = dir.join(name);
                if entry.collection {
                    collections.push(path);
                } else {
                    found.push(Listed {
                        path,
                        size: entry.size.unwrap_or(0),
                    });
                }
            }
        }
        Ok(found)
    }

    async fn delete(&self, path: &Path) -> Result<(), RemoteError> {
        let context = format!("cannot delete {}", path.display());
        match self
            .send(
                &context,
                self.request(Method::DELETE, self.url(path, false)?),
            )
            .await?
        {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            s => Err(status_error(&context, s)),
        }
    }
}

impl WebDavRemote {
    async fn move_into_place(&self, item: &PublishItem) -> Result<RemoteRef, RemoteError> {
        let path = &item.path;
        let context = format!("cannot publish {}", path.display());
        let destination = self.url(path, false)?;
        let request = self
            .request(method("MOVE"), self.url(&Self::temp_path(path), false)?)
            .header("Destination", destination.as_str())
            .header("Overwrite", "T");
        match self.send(&context, request).await? {
            s if s.is_success() => Ok(RemoteRef(path.display().to_string())),
            // A 404 on a retried MOVE: the answer to the first may have been lost, and the
            // linker reads the destination back (`holds`).
            s => Err(status_error(&context, s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_from_nginx_and_apache_give_names_sizes_and_collections() {
        // nginx-dav-ext: relative hrefs, `D:` prefix, empty resourcetype for files.
        let nginx = r#"<?xml version="1.0" encoding="utf-8" ?>
<D:multistatus xmlns:D="DAV:">
<D:response><D:href>/drops/</D:href><D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype></D:prop></D:propstat></D:response>
<D:response><D:href>/drops/a%20b.txt</D:href><D:propstat><D:prop><D:getcontentlength>12</D:getcontentlength><D:resourcetype></D:resourcetype></D:prop></D:propstat></D:response>
<D:response><D:href>/drops/d/</D:href><D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype></D:prop></D:propstat></D:response>
</D:multistatus>"#;
        let entries = parse_multistatus(nginx).unwrap();
        assert_eq!(entries.len(), 3);
        let names: Vec<_> = entries
            .iter()
            .map(|e| (child_name("/drops/", &e.href), e.collection, e.size))
            .collect();
        assert_eq!(
            names,
            [
                (None, true, None),
                (Some(PathBuf::from("a b.txt")), false, Some(12)),
                (Some(PathBuf::from("d")), true, None),
            ]
        );
        // Apache mod_dav: full URLs, `lp1:` prefixes, entities in names.
        let apache = r#"<?xml version="1.0" encoding="utf-8"?>
<D:multistatus xmlns:D="DAV:" xmlns:ns0="DAV:">
<D:response xmlns:lp1="DAV:"><D:href>http://h/x/R&amp;D.txt</D:href><D:propstat><D:prop><lp1:resourcetype/><lp1:getcontentlength>7</lp1:getcontentlength></D:prop></D:propstat></D:response>
</D:multistatus>"#;
        let entries = parse_multistatus(apache).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            child_name("/x/", &entries[0].href),
            Some(PathBuf::from("R&D.txt"))
        );
        assert_eq!((entries[0].collection, entries[0].size), (false, Some(7)));
    }
}
