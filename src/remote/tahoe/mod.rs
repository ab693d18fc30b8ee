//! The Tahoe-LAFS remote: publishes into a mutable directory of a grid through a gateway's web
//! API. The directory's write-cap is read from a file (`remote.dircap_file`, like Tahoe's own
//! `private/drop_upload_dircap`), optionally followed by `/sub/dir` to publish below the root.
//!
//! Upload slots upload contents as immutable files (`PUT /uri`, streamed) in parallel; the
//! directory linker, the only writer of each mutable directory, links a whole batch with one
//! `t=set_children` (a directory update rewrites the whole directory, so one update for many
//! files instead of one each). Subdirectories mirroring the local tree are created one at a time
//! (creating one writes its parent), so no directory is ever written by two requests at once:
//! concurrent writes to one mutable directory can fail or silently lose entries.
//!
//! Names: Tahoe stores child names in Unicode NFC, so a name in another form would be published
//! renamed, and two local names (`café` composed and decomposed) would become one child, the
//! second replacing the first. Every component of a path must therefore be NFC and free of
//! control characters, or the file is refused by name; the names that pass map to themselves.
//! A publish is confirmed by reading the child back from its directory (`t=json`): it must be the
//! file just uploaded (its read-cap) with the staged size. Modes and modification times are not
//! kept (Tahoe's metadata `mtime` is the time of linking).
//!
//! Caps are secrets: URLs containing them never reach an error message (reqwest errors are
//! stripped of their URL) and the write-cap is redacted from any text the gateway returns
//! ([`super::redacted`]).
//!
//! Nothing to reconcile at start-up: an interrupted upload left at most an unlinked immutable
//! file, which nothing reads and whose leases expire.

mod config;
pub use config::TahoeConfig;

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use dropslot_actors::fileinfo::ContentHash;
use dropslot_actors::remote::{
    ContentStream, FileAttributes, Listed, PublishItem, Remote, RemoteError, RemoteRef, Staged,
};
use reqwest::{StatusCode, Url};
use unicode_normalization::UnicodeNormalization;

use super::body_matches;
use super::http::{classify_transport, join_url};
use crate::config::Secret;

pub struct TahoeRemote {
    client: reqwest::Client,
    /// The gateway's base URL, ending with `/`.
    gateway: Url,
    dircap: Secret,
    /// Where below the dircap files go (may be empty).
    base: PathBuf,
    /// Directories known to exist, relative to the dircap.
    directories: Mutex<HashSet<PathBuf>>,
    /// Per directory (relative to the target), the names of its subdirectories: read once,
    /// then kept up to date by our own mkdirs, which is sound because we are its only writer.
    subdirectories: Mutex<HashMap<PathBuf, HashSet<String>>>,
    /// Creating a directory writes its parent: one creation at a time.
    mkdir: tokio::sync::Mutex<()>,
}

/// Splits `URI:DIR2:...[/sub/dir]` into the cap and the path below it.
fn parse_dircap(text: &str) -> Result<(Secret, PathBuf), String> {
    let text = text.trim();
    let (cap, below) = text.split_once('/').unwrap_or((text, ""));
    if !cap.starts_with("URI:DIR2:") && !cap.starts_with("URI:DIR2-MDMF:") {
        return Err("does not hold a Tahoe directory write-cap (URI:DIR2:...)".into());
    }
    let below = PathBuf::from(below.trim_matches('/'));
    if below
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err("the path after the cap must be plain names separated by '/'".into());
    }
    Ok((Secret::new(cap), below))
}

fn utf8_name<'a>(path: &'a Path, name: &'a std::ffi::OsStr) -> Result<&'a str, RemoteError> {
    name.to_str().ok_or_else(|| {
        RemoteError::permanent(format!(
            "{}: the name is not UTF-8, which Tahoe names must be",
            path.display()
        ))
    })
}

fn is_dirnode(listing: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(listing).is_ok_and(|node| node[0] == "dirnode")
}

/// Why Tahoe cannot hold `path` under exactly its name; `None` if it can.
fn name_problem(path: &Path) -> Option<RemoteError> {
    for part in path.components() {
        let name = match utf8_name(path, part.as_os_str()) {
            Ok(name) => name,
            Err(e) => return Some(e),
        };
        if name.chars().any(char::is_control) {
            return Some(RemoteError::permanent(format!(
                "{}: the name {name:?} holds control characters, which Tahoe names cannot keep",
                path.display()
            )));
        }
        if !unicode_normalization::is_nfc(name) {
            let nfc: String = name.nfc().collect();
            return Some(RemoteError::permanent(format!(
                "{}: the name {name:?} is not in Unicode NFC form; Tahoe would store it as {nfc:?}, \
                 where another file of that name would replace it (rename it to its NFC form)",
                path.display()
            )));
        }
    }
    None
}

impl TahoeRemote {
    pub fn new(config: &TahoeConfig) -> Result<Self, String> {
        let file = config
            .dircap_file
            .as_ref()
            .ok_or("remote.dircap_file is required for remote.kind = \"tahoe\"")?;
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("remote.dircap_file {}: {e}", file.display()))?;
        let (dircap, base) = parse_dircap(&text)
            .map_err(|e| format!("remote.dircap_file {}: {e}", file.display()))?;
        let gateway = super::http::base_url(&config.gateway, "remote.gateway")?;
        let client = super::http::client(config.timeout)?;
        Ok(TahoeRemote {
            client,
            gateway,
            dircap,
            base,
            directories: Mutex::new(HashSet::new()),
            subdirectories: Mutex::new(HashMap::new()),
            mkdir: tokio::sync::Mutex::new(()),
        })
    }

    /// `gateway/uri/<dircap>/<base>/<rel>`
    fn url(&self, rel: &Path) -> Result<Url, RemoteError> {
        self.cap_url(&self.base.join(rel))
    }

    /// `gateway/uri/<dircap>/<below>`
    fn cap_url(&self, below: &Path) -> Result<Url, RemoteError> {
        let mut cap = self.gateway.clone();
        cap.path_segments_mut()
            .expect("an http(s) URL has a path")
            .pop_if_empty()
            .push("uri")
            .push(self.dircap.expose());
        if below.as_os_str().is_empty() {
            return Ok(cap);
        }
        cap.path_segments_mut()
            .expect("an http(s) URL has a path")
            .push("");
        join_url(&cap, below, false, "Tahoe")
    }

    /// The child `path` as its directory lists it: its size and read-cap, or `None` if there is
    /// no file of that name.
    async fn child(&self, path: &Path) -> Result<Option<(u64, String)>, RemoteError> {
        let context = format!("cannot look up {}", path.display());
        let mut url = self.url(path)?;
        url.query_pairs_mut().append_pair("t", "json");
        let (status, body) = self.send(&context, self.client.get(url)).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(self.failure(&context, status, &body));
        }
        let node: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| RemoteError::transient(format!("{context}: unreadable answer: {e}")))?;
        if node[0] != "filenode" {
            return Ok(None);
        }
        let size = node[1]["size"].as_u64();
        let cap = node[1]["ro_uri"].as_str().unwrap_or_default().to_string();
        Ok(size.map(|size| (size, cap)))
    }

    /// The write-cap, for [`super::redacted`]: a gateway's traceback may quote it.
    pub fn dircap_secret(&self) -> String {
        self.dircap.expose().to_string()
    }

    async fn send(
        &self,
        context: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, String), RemoteError> {
        let response = request
            .header("Accept", "text/plain")
            .send()
            .await
            .map_err(|e| classify_transport(context, &e.without_url(), self.gateway.as_str()))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| classify_transport(context, &e.without_url(), self.gateway.as_str()))?;
        Ok((status, body))
    }

    /// Wording and retry decision for an answer that is not success. Storage servers not
    /// connected (yet) gives 500 NoServersError or 410: both are worth retrying.
    fn failure(&self, context: &str, status: StatusCode, body: &str) -> RemoteError {
        // A Python traceback says what went wrong on its last line.
        let mut lines = body.lines().map(str::trim).filter(|l| !l.is_empty());
        let telling = if body.contains("Traceback (most recent call last)") {
            lines.next_back()
        } else {
            lines.next()
        };
        let message = format!(
            "{context}: the gateway answered {status}: {}",
            telling.unwrap_or("")
        );
        // 410: the gateway found too few shares, which servers coming back can cure.
        if super::http::status_is_transient(status) || status == StatusCode::GONE {
            RemoteError::transient(message)
        } else {
            RemoteError::permanent(message)
        }
    }

    /// Creates `dir` (relative to the target) and its parents unless known to exist.
    async fn ensure_directory(&self, dir: &Path) -> Result<(), RemoteError> {
        let full = self.base.join(dir);
        if full.as_os_str().is_empty() || self.directories.lock().expect("lock").contains(&full) {
            return Ok(());
        }
        let _one_at_a_time = self.mkdir.lock().await;
        if self.directories.lock().expect("lock").contains(&full) {
            return Ok(());
        }
        let context = format!("cannot create directory {}", dir.display());
        let mut url = self.url(dir)?;
        url.query_pairs_mut().append_pair("t", "mkdir");
        let (status, body) = self.send(&context, self.client.post(url)).await?;
        if !status.is_success() {
            return Err(self.failure(&context, status, &body));
        }
        self.directories.lock().expect("lock").insert(full);
        let mut known = self.subdirectories.lock().expect("lock");
        let mut parent = PathBuf::new();
        for part in dir.components() {
            if let (Some(names), Some(name)) = (known.get_mut(&parent), part.as_os_str().to_str()) {
                names.insert(name.to_string());
            }
            parent.push(part);
        }
        Ok(())
    }

    /// The children of `dir` as the gateway lists them (`t=json`), read from the grid.
    async fn children(
        &self,
        dir: &Path,
    ) -> Result<serde_json::Map<String, serde_json::Value>, RemoteError> {
        let context = format!("cannot list directory {}", dir.display());
        let mut url = self.url(dir)?;
        url.query_pairs_mut().append_pair("t", "json");
        let (status, body) = self.send(&context, self.client.get(url)).await?;
        if !status.is_success() {
            return Err(self.failure(&context, status, &body));
        }
        let mut listing: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| RemoteError::transient(format!("{context}: unreadable listing: {e}")))?;
        match listing[1]["children"].take() {
            serde_json::Value::Object(children) => Ok(children),
            _ => Err(RemoteError::transient(format!(
                "{context}: the listing has no children"
            ))),
        }
    }

    /// Names in `dir` that are directories (a file must never replace one).
    async fn subdirectory_names(&self, dir: &Path) -> Result<HashSet<String>, RemoteError> {
        if let Some(names) = self.subdirectories.lock().expect("lock").get(dir) {
            return Ok(names.clone());
        }
        let names: HashSet<String> = self
            .children(dir)
            .await?
            .into_iter()
            .filter(|(_, child)| child[0] == "dirnode")
            .map(|(name, _)| name)
            .collect();
        self.subdirectories
            .lock()
            .expect("lock")
            .insert(dir.to_path_buf(), names.clone());
        Ok(names)
    }

    async fn link_batch(
        &self,
        dir: &Path,
        items: &[PublishItem],
    ) -> Vec<Result<RemoteRef, RemoteError>> {
        if let Err(e) = self.ensure_directory(dir).await {
            return items.iter().map(|_| Err(e.clone())).collect();
        }
        let subdirectories = match self.subdirectory_names(dir).await {
            Ok(names) => names,
            Err(e) => return items.iter().map(|_| Err(e.clone())).collect(),
        };
        let mut results: Vec<Result<RemoteRef, RemoteError>> = Vec::with_capacity(items.len());
        let mut children = serde_json::Map::new();
        for item in items {
            let name = item.path.file_name().unwrap_or_default();
            let checked = match name_problem(&item.path) {
                Some(refused) => Err(refused),
                None => utf8_name(&item.path, name),
            };
            let result = checked.and_then(|name| {
                if subdirectories.contains(name) {
                    return Err(RemoteError::permanent(format!(
                        "cannot publish {}: a directory of that name is in the way on the grid",
                        item.path.display()
                    )));
                }
                // The last of several versions of one name in a batch wins, as it would locally.
                children.insert(
                    name.to_string(),
                    serde_json::json!(["filenode", {"ro_uri": item.staged.0}]),
                );
                Ok(RemoteRef(item.staged.0.clone()))
            });
            results.push(result);
        }
        if children.is_empty() {
            return results;
        }
        let context = format!(
            "cannot link {} file(s) into {}",
            children.len(),
            dir.display()
        );
        let mut url = match self.url(dir) {
            Ok(url) => url,
            Err(e) => return items.iter().map(|_| Err(e.clone())).collect(),
        };
        url.query_pairs_mut().append_pair("t", "set_children");
        let body = serde_json::Value::Object(children).to_string();
        let linked = match self.send(&context, self.client.post(url).body(body)).await {
            Ok((status, _)) if status.is_success() => Ok(()),
            Ok((status, body)) => Err(self.failure(&context, status, &body)),
            Err(e) => Err(e),
        };
        match linked {
            Ok(()) => results,
            Err(e) => results.into_iter().map(|r| r.and(Err(e.clone()))).collect(),
        }
    }
}

#[async_trait]
impl super::HealthCheck for TahoeRemote {
    /// The directory is reached, then the probe is uploaded and read back by its cap, but never
    /// linked: `check` may run beside the daemon, and a second writer of the target directory
    /// could make the grid lose entries the ledger records.
    async fn health_check(&self, report: super::Report<'_>) -> Result<(), super::CheckFailure> {
        use super::Step;
        super::step(report, Step::Reach, self.reach(), Clone::clone).await?;
        let (staged, size, sha256) = super::stage_probe(self, report).await?;
        let read = async {
            let mut url = self.gateway.clone();
            url.path_segments_mut()
                .expect("an http(s) URL has a path")
                .pop_if_empty()
                .push("uri")
                .push(&staged.0);
            let context = format!("cannot read back the probe {}", super::PROBE);
            let response = self.client.get(url).send().await.map_err(|e| {
                classify_transport(&context, &e.without_url(), self.gateway.as_str())
            })?;
            let kept = response.status().is_success()
                && response.content_length() == Some(size)
                && body_matches(response.bytes_stream(), &sha256, |e| {
                    classify_transport(&context, &e.without_url(), self.gateway.as_str())
                })
                .await?;
            if kept {
                Ok(())
            } else {
                Err(super::probe_not_kept("reading it back by its cap"))
            }
        };
        super::step(report, Step::ReadBack, read, |_| {
            format!("{size} bytes by its cap, SHA-256 matches (not linked: the daemon is the directory's only writer)")
        })
        .await
    }
}

impl TahoeRemote {
    /// `check`'s first step: the target (the cap, and the path below it) is a directory the
    /// gateway can read, or the part of that path that exists is, and the first publish creates
    /// the rest (as `run` does; `check` itself writes no directory, see `health_check`).
    async fn reach(&self) -> Result<String, RemoteError> {
        let context = format!("cannot reach the target directory through {}", self.gateway);
        let named = |below: &Path| {
            if below.as_os_str().is_empty() {
                "the cap in remote.dircap_file".to_string()
            } else {
                format!("{} below the cap in remote.dircap_file", below.display())
            }
        };
        let mut below = self.base.clone();
        loop {
            let mut url = self.cap_url(&below)?;
            url.query_pairs_mut().append_pair("t", "json");
            let (status, body) = self.send(&context, self.client.get(url)).await?;
            match status {
                // The gateway pretty-prints its JSON: parsed, never matched as text.
                s if s.is_success() && is_dirnode(&body) => {
                    return Ok(if below == self.base {
                        format!("{} is a directory", named(&below))
                    } else {
                        format!(
                            "{} is a directory; {} does not exist yet and the first publish \
                             creates it",
                            named(&below),
                            self.base.display()
                        )
                    })
                }
                s if s.is_success() => {
                    let node: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    return Err(RemoteError::permanent(match node[0].as_str() {
                        Some("filenode") => {
                            format!("{context}: {} is a file, not a directory", named(&below))
                        }
                        Some("unknown") => format!(
                            "{context}: the gateway does not recognise the cap in \
                             remote.dircap_file (\"unknown\" node): it is damaged or cut short"
                        ),
                        other => format!(
                            "{context}: {} is not a directory (the gateway calls it {:?})",
                            named(&below),
                            other.unwrap_or("nothing")
                        ),
                    }));
                }
                StatusCode::NOT_FOUND if below.pop() => {}
                StatusCode::GONE => {
                    return Err(RemoteError::transient(format!(
                        "{context}: the grid cannot find {}: the gateway is not connected to \
                         enough storage servers yet, or the cap is not of this grid",
                        named(&below)
                    )))
                }
                StatusCode::NOT_FOUND => {
                    return Err(RemoteError::permanent(format!(
                        "{context}: no such directory: {} does not exist",
                        named(&below)
                    )))
                }
                s => return Err(self.failure(&context, s, &body)),
            }
        }
    }
}

#[async_trait]
impl Remote for TahoeRemote {
    fn reference_of(&self, item: &PublishItem) -> RemoteRef {
        RemoteRef(item.staged.0.clone()) // the immutable file's cap, as `publish` links it
    }

    fn describe(&self) -> String {
        let below = if self.base.as_os_str().is_empty() {
            String::new()
        } else {
            format!(" (below {})", self.base.display())
        };
        format!("Tahoe-LAFS directory via gateway {}{below}", self.gateway)
    }

    async fn check(&self) -> Result<(), RemoteError> {
        super::silent_check(self).await
    }


    async fn stage(
        &self,
        path: &Path,
        size: u64,
        _attributes: FileAttributes,
        content: ContentStream,
    ) -> Result<Staged, RemoteError> {
        // Refused before any byte is sent.
        if let Some(refused) = name_problem(path) {
            return Err(refused);
        }
        let context = format!("cannot upload {}", path.display());
        let mut url = self.gateway.clone();
        url.path_segments_mut()
            .expect("an http(s) URL has a path")
            .pop_if_empty()
            .push("uri");
        let request = self
            .client
            .put(url)
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(content));
        let (status, body) = self.send(&context, request).await?;
        let cap = body.trim();
        if status.is_success() && cap.starts_with("URI:") {
            Ok(Staged(cap.to_string()))
        } else {
            Err(self.failure(&context, status, &body))
        }
    }

    async fn publish(&self, items: Vec<PublishItem>) -> Vec<Result<RemoteRef, RemoteError>> {
        let dir = items
            .first()
            .and_then(|i| i.path.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default();
        self.link_batch(&dir, &items).await
    }

    /// One listing of the batch's directory confirms the whole batch: each name must be the
    /// file just uploaded (its read-cap) with the staged size.
    async fn confirm(&self, items: &[PublishItem]) -> Vec<Result<(), RemoteError>> {
        let dir = items
            .first()
            .and_then(|i| i.path.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let children = self.children(&dir).await;
        items
            .iter()
            .map(|item| {
                let path = item.path.display();
                let children = children.as_ref().map_err(|e| {
                    RemoteError::transient(format!("cannot confirm that {path} was published: {e}"))
                })?;
                let name = item.path.file_name().and_then(|n| n.to_str());
                match name.and_then(|name| children.get(name)) {
                    Some(child)
                        if child[0] == "filenode"
                            && child[1]["size"].as_u64() == Some(item.size)
                            && child[1]["ro_uri"] == item.staged.0.as_str() =>
                    {
                        Ok(())
                    }
                    Some(_) => Err(RemoteError::transient(format!(
                        "{path}: the gateway answered that it was linked, but the directory holds \
                         another file under that name"
                    ))),
                    None => Err(RemoteError::transient(format!(
                        "{path}: the gateway answered that it was linked, but the directory does \
                         not hold it"
                    ))),
                }
            })
            .collect()
    }

    async fn stored_size(&self, path: &Path) -> Result<Option<u64>, RemoteError> {
        Ok(self.child(path).await?.map(|(size, _)| size))
    }

    async fn holds(
        &self,
        path: &Path,
        size: u64,
        sha256: &ContentHash,
    ) -> Result<bool, RemoteError> {
        if self.stored_size(path).await? != Some(size) {
            return Ok(false);
        }
        let context = format!("cannot read back {}", path.display());
        let response =
            self.client.get(self.url(path)?).send().await.map_err(|e| {
                classify_transport(&context, &e.without_url(), self.gateway.as_str())
            })?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(false),
            s if !s.is_success() => Err(self.failure(&context, s, "")),
            _ => {
                body_matches(response.bytes_stream(), sha256, |e| {
                    classify_transport(&context, &e.without_url(), self.gateway.as_str())
                })
                .await
            }
        }
    }

    async fn discard(&self, _path: &Path, _staged: Staged) {
        // Immutable files cannot be deleted; an unlinked one is unreachable and its leases expire.
    }

    /// Walks the target's directories with `t=json` listings, one request per directory.
    async fn list(&self) -> Result<Vec<Listed>, RemoteError> {
        let mut found = Vec::new();
        let mut dirs = vec![PathBuf::new()];
        while let Some(dir) = dirs.pop() {
            for (name, child) in self.children(&dir).await? {
                let path = dir.join(&name);
                if child[0] == "dirnode" {
                    dirs.push(path);
                } else if child[0] == "filenode" {
                    let size = child[1]["size"].as_u64().unwrap_or(0);
                    found.push(Listed { path, size });
                }
            }
        }
        Ok(found)
    }

    async fn delete(&self, path: &Path) -> Result<(), RemoteError> {
        let context = format!("cannot unlink {}", path.display());
        let (status, body) = self
            .send(&context, self.client.delete(self.url(path)?))
            .await?;
        match status {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            s => Err(self.failure(&context, s, &body)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dircap_files_may_name_a_path_below_the_cap() {
        let (cap, below) = parse_dircap("URI:DIR2:abc:def/photos/2026\n").unwrap();
        assert_eq!(cap.expose(), "URI:DIR2:abc:def");
        assert_eq!(below, PathBuf::from("photos/2026"));
        let (_, below) = parse_dircap("URI:DIR2:abc:def").unwrap();
        assert!(below.as_os_str().is_empty());
        assert!(parse_dircap("URI:CHK:abc").is_err());
        assert!(parse_dircap("URI:DIR2:abc/../x").is_err());
    }

    #[test]
    fn only_names_tahoe_keeps_unchanged_pass() {
        assert!(name_problem(Path::new("r\u{e9}p/caf\u{e9}.txt")).is_none());
        let nfd = name_problem(Path::new("cafe\u{301}.txt")).unwrap();
        assert!(!nfd.is_transient() && nfd.message.contains("NFC"));
        let dir = name_problem(Path::new("re\u{301}p/x.txt")).unwrap();
        assert!(dir.message.starts_with("re\u{301}p/x.txt: "));
        assert!(name_problem(Path::new("tab\tdir/x"))
            .unwrap()
            .message
            .contains("control"));
    }
}
