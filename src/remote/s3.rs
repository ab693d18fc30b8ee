//! The S3-compatible remote (AWS S3, MinIO, Ceph RGW, Garage, R2, ...), through `object_store`'s
//! S3 store (request signing, multipart, error mapping are that crate's, not ours).
//!
//! A PUT to S3 is atomic, so readers never see partial objects; what staging must prevent here is
//! publishing content that turns out to be torn (the slot checks the source after reading it).
//! So nothing becomes visible before the linker publishes:
//! - files up to `multipart_threshold` are held in memory when staged (bounded by the
//!   threshold per slot) and sent with one PUT when published: one request per file;
//! - larger files are streamed as a multipart upload of `part_size` parts when staged (one part
//!   in memory per slot) and completed when published, or aborted when discarded.
//!
//! The object key is the file's path relative to the drop folder, `/`-separated, under the
//! prefix; a name S3 cannot hold (not UTF-8, `.` or `..` segments, control characters) is an
//! error naming the file. Keys are byte-exact (no normalisation), so distinct names stay distinct.
//!
//! A publish is confirmed with a HEAD of the key (its size); what a retry needs (the bytes, the
//! multipart upload) is kept until then. Mode and modification time travel as object metadata
//! the way rclone writes them: `x-amz-meta-mtime` (seconds since the epoch with a fraction) and
//! `x-amz-meta-mode` (octal, with the regular-file type bits, e.g. `100644`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use dropslot_actors::fileinfo::ContentHash;
use dropslot_actors::remote::{
    confirm_sizes, ContentStream, FileAttributes, PublishItem, Remote, RemoteError, RemoteRef,
    Staged,
};
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as Key;
use object_store::{
    Attribute, Attributes, ClientOptions, MultipartId, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, RetryConfig,
};

use super::{body_matches, classify_transport, PUBLISH_CONCURRENCY};
use crate::config::RemoteConfig;

/// Staged small files wait in memory for the linker; together they may hold at most this many
/// times `multipart_threshold`, so staging waits when publishing falls behind.
const STAGED_BUDGET_FACTOR: u64 = 4;
/// The unit of that budget, in bytes.
const BUDGET_UNIT: u64 = 64 * 1024;

enum StagedObject {
    Small(Bytes, Attributes, tokio::sync::OwnedSemaphorePermit),
    /// A multipart upload with all its parts on the server. The part list is ours: object_store's
    /// upload handle empties its own at the first completion attempt, so a completion that
    /// failed before reaching the server could never be retried ("Missing part" for ever).
    Multipart {
        id: MultipartId,
        parts: Vec<PartId>,
    },
}

/// The object metadata rclone keeps a file's mode and mtime in (so rclone and tools that read
/// its convention see them).
fn metadata(attributes: FileAttributes) -> Attributes {
    let mut kept = Attributes::new();
    if let Some(ns) = attributes.mtime_ns {
        let (secs, frac) = (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000));
        kept.insert(
            Attribute::Metadata("mtime".into()),
            format!("{secs}.{frac:09}").into(),
        );
    }
    if let Some(mode) = attributes.mode {
        kept.insert(
            Attribute::Metadata("mode".into()),
            format!("{:o}", 0o100000 | (mode & 0o777)).into(),
        );
    }
    kept
}

pub struct S3Remote {
    store: AmazonS3,
    bucket: String,
    prefix: String,
    endpoint: String,
    multipart_threshold: u64,
    part_size: usize,
    staged: Mutex<HashMap<String, StagedObject>>,
    next_token: AtomicU64,
    /// Credentials as configured, to scrub from error texts (servers echo the key id).
    secrets: Vec<String>,
    /// Requests the linker's batches (publishes and their confirmations) may have in flight at
    /// once, across all directories.
    publishing: tokio::sync::Semaphore,
    /// Memory for staged small files, in [`BUDGET_UNIT`]s.
    staged_budget: Arc<tokio::sync::Semaphore>,
}

/// Credentials from an AWS shared credentials file (`AWS_PROFILE`, else `default`).
fn read_credentials_file(file: &Path) -> Result<(String, String), String> {
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let parsed = config::Config::builder()
        .add_source(config::File::from(file).format(config::FileFormat::Ini))
        .build()
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let get = |key: &str| {
        parsed
            .get_string(&format!("{profile}.{key}"))
            .map_err(|_| format!("{} has no {key} in profile [{profile}]", file.display()))
    };
    Ok((get("aws_access_key_id")?, get("aws_secret_access_key")?))
}

impl S3Remote {
    pub fn new(config: &RemoteConfig) -> Result<Self, String> {
        // Config file keys win over a credentials file, which wins over AWS_* variables.
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(config.bucket.clone().unwrap_or_default())
            .with_virtual_hosted_style_request(!config.path_style)
            // The slots and the linker retry with our own policy and report each failure.
            .with_retry(RetryConfig {
                max_retries: 0,
                ..Default::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(config.timeout)
                    .with_connect_timeout(std::time::Duration::from_secs(10)),
            );
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        let endpoint = config.endpoint.clone();
        let plain_http = endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        if let Some(endpoint) = &endpoint {
            builder = builder.with_endpoint(endpoint).with_allow_http(plain_http);
        }
        // Signing the payload means a second SHA-256 of every byte (a third of the CPU time of
        // a large upload in profiles). Over TLS the body is protected anyway, which is why the
        // AWS SDKs send UNSIGNED-PAYLOAD there too; over plain HTTP the signature covers it.
        builder = builder.with_unsigned_payload(!plain_http);
        let mut secrets = Vec::new();
        if let Some(file) = &config.credentials_file {
            let (key, secret) = read_credentials_file(file)?;
            builder = builder
                .with_access_key_id(&key)
                .with_secret_access_key(&secret);
            secrets.extend([key, secret]);
        }
        if let Some(key) = &config.access_key_id {
            builder = builder.with_access_key_id(key.expose());
            secrets.push(key.expose().to_string());
        }
        if let Some(secret) = &config.secret_access_key {
            builder = builder.with_secret_access_key(secret.expose());
            secrets.push(secret.expose().to_string());
        }
        for var in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ] {
            secrets.extend(std::env::var(var).ok());
        }
        secrets.retain(|s| s.len() >= 3);
        let store = builder
            .build()
            .map_err(|e| format!("cannot configure the S3 client: {e}"))?;
        Ok(S3Remote {
            store,
            bucket: config.bucket.clone().unwrap_or_default(),
            prefix: config.prefix.clone(),
            endpoint: endpoint.unwrap_or_else(|| "AWS".into()),
            multipart_threshold: config.multipart_threshold.as_u64(),
            part_size: config.part_size.as_u64() as usize,
            staged: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(0),
            secrets,
            publishing: tokio::sync::Semaphore::new(PUBLISH_CONCURRENCY),
            staged_budget: Arc::new(tokio::sync::Semaphore::new(
                (STAGED_BUDGET_FACTOR * config.multipart_threshold.as_u64()).div_ceil(BUDGET_UNIT)
                    as usize,
            )),
        })
    }

    /// The object key for `path`, or an error naming the file if S3 cannot hold the name.
    pub fn key(&self, path: &Path) -> Result<Key, RemoteError> {
        let rel = path.to_str().ok_or_else(|| {
            RemoteError::permanent(format!(
                "{}: the name is not UTF-8, which S3 keys must be",
                path.display()
            ))
        })?;
        let full = if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        };
        let key = Key::parse(&full).map_err(|e| {
            RemoteError::permanent(format!("{}: cannot be an S3 key: {e}", path.display()))
        })?;
        // `parse` accepts some names that the store would percent-encode; refuse a silent rename.
        if key.as_ref() != full {
            return Err(RemoteError::permanent(format!(
                "{}: cannot be an S3 key unchanged",
                path.display()
            )));
        }
        Ok(key)
    }

    fn describe_error(&self, what: &str, path: &Path, e: object_store::Error) -> RemoteError {
        let context = format!("{what} {} (bucket {})", path.display(), self.bucket);
        let text = e.to_string();
        let error = match &e {
            _ if text.contains("NoSuchBucket") => RemoteError::permanent(format!(
                "{context}: no such bucket {} at {}",
                self.bucket, self.endpoint
            )),
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => RemoteError::permanent(format!(
                "{context}: access denied (check the credentials): {text}"
            )),
            _ if [
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "AccessDenied",
            ]
            .iter()
            .any(|c| text.contains(c)) =>
            {
                RemoteError::permanent(format!(
                    "{context}: access denied (check the credentials): {text}"
                ))
            }
            object_store::Error::NotFound { .. } => RemoteError::permanent(format!(
                "{context}: not found (does bucket {} exist?)",
                self.bucket
            )),
            object_store::Error::InvalidPath { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. }
            | object_store::Error::UnknownConfigurationKey { .. } => {
                RemoteError::permanent(format!("{context}: {text}"))
            }
            _ => classify_transport(&context, &e, &self.endpoint),
        };
        self.redact(error)
    }

    /// Servers echo parts of a request in their errors; none of it may reach a log.
    fn redact(&self, mut error: RemoteError) -> RemoteError {
        for secret in &self.secrets {
            error.message = error.message.replace(secret.as_str(), "<redacted>");
        }
        error
    }

    fn stash(&self, object: StagedObject) -> Staged {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed).to_string();
        self.staged
            .lock()
            .expect("staged lock")
            .insert(token.clone(), object);
        Staged(token)
    }

    fn take(&self, staged: &Staged) -> Option<StagedObject> {
        self.staged.lock().expect("staged lock").remove(&staged.0)
    }

    async fn stage_multipart(
        &self,
        path: &Path,
        key: &Key,
        attributes: Attributes,
        mut content: ContentStream,
    ) -> Result<Staged, RemoteError> {
        let options = PutMultipartOptions {
            attributes,
            ..Default::default()
        };
        let id = self
            .store
            .create_multipart_opts(key, options)
            .await
            .map_err(|e| self.describe_error("cannot start uploading", path, e))?;
        let mut parts = Vec::new();
        let mut part = BytesMut::with_capacity(self.part_size);
        let streamed = async {
            while let Some(chunk) = content.next().await {
                let chunk = chunk.map_err(|e| {
                    RemoteError::transient(format!("reading {}: {e}", path.display()))
                })?;
                part.extend_from_slice(&chunk);
                while part.len() >= self.part_size {
                    let full = part.split_to(self.part_size).freeze();
                    parts.push(self.put_part(path, key, &id, parts.len(), full).await?);
                }
            }
            if !part.is_empty() {
                let last = part.split().freeze();
                parts.push(self.put_part(path, key, &id, parts.len(), last).await?);
            }
            Ok::<(), RemoteError>(())
        }
        .await;
        if let Err(e) = streamed {
            // An aborted multipart upload leaves no parts behind to pay for.
            let _ = self.store.abort_multipart(key, &id).await;
            return Err(e);
        }
        Ok(self.stash(StagedObject::Multipart { id, parts }))
    }

    async fn put_part(
        &self,
        path: &Path,
        key: &Key,
        id: &MultipartId,
        index: usize,
        bytes: Bytes,
    ) -> Result<PartId, RemoteError> {
        self.store
            .put_part(key, id, index, PutPayload::from(bytes))
            .await
            .map_err(|e| self.describe_error("cannot upload a part of", path, e))
    }

    async fn publish_one(&self, item: &PublishItem) -> Result<RemoteRef, RemoteError> {
        let _permit = self
            .publishing
            .acquire()
            .await
            .expect("semaphore never closed");
        let key = self.key(&item.path)?;
        let object = self.take(&item.staged).ok_or_else(|| {
            RemoteError::permanent(format!(
                "{}: staged upload is gone (internal error)",
                item.path.display()
            ))
        })?;
        let result = match object {
            StagedObject::Small(bytes, attributes, permit) => {
                let options = PutOptions {
                    attributes: attributes.clone(),
                    ..Default::default()
                };
                let put = self
                    .store
                    .put_opts(&key, PutPayload::from(bytes.clone()), options)
                    .await;
                let object = StagedObject::Small(bytes, attributes, permit);
                match put {
                    Ok(_) => Ok(object),
                    Err(e) => Err((self.describe_error("cannot upload", &item.path, e), object)),
                }
            }
            StagedObject::Multipart { id, parts } => {
                match self
                    .store
                    .complete_multipart(&key, &id, parts.clone())
                    .await
                {
                    Ok(_) => Ok(StagedObject::Multipart { id, parts }),
                    Err(e) => {
                        let error =
                            self.describe_error("cannot complete the upload of", &item.path, e);
                        // A retried completion fails (AWS: NoSuchUpload) when the answer to the
                        // first one was lost: the object is then in place, which only its
                        // content tells. Reading it back costs little next to a failure.
                        let done_before = Remote::holds(self, &item.path, item.size, &item.sha256)
                            .await
                            .unwrap_or(false);
                        let object = StagedObject::Multipart { id, parts };
                        if done_before {
                            Ok(object)
                        } else {
                            Err((error, object))
                        }
                    }
                }
            }
        };
        match result {
            Ok(object) => {
                // Kept until the linker confirms the object is there: a retry needs it.
                self.staged
                    .lock()
                    .expect("staged lock")
                    .insert(item.staged.0.clone(), object);
                Ok(RemoteRef(key.to_string()))
            }
            Err((error, object)) => {
                if error.is_transient() {
                    // Kept for the linker's retry.
                    self.staged
                        .lock()
                        .expect("staged lock")
                        .insert(item.staged.0.clone(), object);
                } else if let StagedObject::Multipart { id, .. } = object {
                    let _ = self.store.abort_multipart(&key, &id).await;
                }
                Err(error)
            }
        }
    }
}

#[async_trait]
impl Remote for S3Remote {
    fn describe(&self) -> String {
        let prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("/{}", self.prefix)
        };
        format!("S3 bucket {}{prefix} at {}", self.bucket, self.endpoint)
    }

    async fn check(&self) -> Result<(), RemoteError> {
        let prefix = (!self.prefix.is_empty()).then(|| Key::from(self.prefix.as_str()));
        self.store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map_err(|e| self.describe_error("cannot list", Path::new(&self.prefix), e))?;
        super::probe(self).await
    }

    async fn reconcile(&self, _interrupted: Vec<PathBuf>) -> Result<(), RemoteError> {
        // Small files were only in memory. Parts of multipart uploads cut off by a crash cannot
        // be listed through object_store; a bucket lifecycle rule (AbortIncompleteMultipartUpload)
        // removes them. docs/configuration.md says so.
        Ok(())
    }

    async fn stage(
        &self,
        path: &Path,
        size: u64,
        attributes: FileAttributes,
        mut content: ContentStream,
    ) -> Result<Staged, RemoteError> {
        let key = self.key(path)?;
        let attributes = metadata(attributes);
        if size > self.multipart_threshold {
            return self.stage_multipart(path, &key, attributes, content).await;
        }
        let units = (size.div_ceil(BUDGET_UNIT) as u32).max(1);
        let permit = self
            .staged_budget
            .clone()
            .acquire_many_owned(units)
            .await
            .expect("semaphore never closed");
        let mut bytes = BytesMut::with_capacity(size as usize);
        while let Some(chunk) = content.next().await {
            let chunk = chunk
                .map_err(|e| RemoteError::transient(format!("reading {}: {e}", path.display())))?;
            bytes.extend_from_slice(&chunk);
        }
        Ok(self.stash(StagedObject::Small(bytes.freeze(), attributes, permit)))
    }

    async fn publish(&self, items: Vec<PublishItem>) -> Vec<Result<RemoteRef, RemoteError>> {
        // Objects are independent: the whole batch goes up in parallel, as many at a time as
        // the `publishing` semaphore allows across all directories.
        futures_util::future::join_all(items.iter().map(|item| self.publish_one(item))).await
    }

    async fn confirm(&self, items: &[PublishItem]) -> Vec<Result<(), RemoteError>> {
        let confirmed = confirm_sizes(self, items).await;
        // Confirmed: nothing will retry these publishes; the memory or the finished upload goes.
        for (item, _) in items.iter().zip(&confirmed).filter(|(_, c)| c.is_ok()) {
            self.take(&item.staged);
        }
        confirmed
    }

    async fn stored_size(&self, path: &Path) -> Result<Option<u64>, RemoteError> {
        // Confirmations count against the same bound as publishes, across all directories.
        let _permit = self
            .publishing
            .acquire()
            .await
            .expect("semaphore never closed");
        match self.store.head(&self.key(path)?).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.describe_error("cannot look up", path, e)),
        }
    }

    async fn discard(&self, path: &Path, staged: Staged) {
        // Aborting a completed upload is refused by the server; nothing is lost then.
        if let (Some(StagedObject::Multipart { id, .. }), Ok(key)) =
            (self.take(&staged), self.key(path))
        {
            let _ = self.store.abort_multipart(&key, &id).await;
        }
    }

    async fn holds(
        &self,
        path: &Path,
        size: u64,
        sha256: &ContentHash,
    ) -> Result<bool, RemoteError> {
        let key = self.key(path)?;
        let found = match self.store.get(&key).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(self.describe_error("cannot read back", path, e)),
        };
        if found.meta.size != size {
            return Ok(false);
        }
        body_matches(found.into_stream(), sha256, |e| {
            self.describe_error("cannot read back", path, e)
        })
        .await
    }

    async fn delete(&self, path: &Path) -> Result<(), RemoteError> {
        let key = self.key(path)?;
        match self.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.describe_error("cannot delete", path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(prefix: &str) -> S3Remote {
        let mut config = crate::config::load(None).unwrap().settings.remote;
        config.bucket = Some("b".into());
        config.prefix = prefix.into();
        config.endpoint = Some("http://127.0.0.1:1".into());
        S3Remote::new(&config).unwrap()
    }

    #[test]
    fn keys_are_relative_paths_under_the_prefix_and_odd_names_are_refused() {
        use std::os::unix::ffi::OsStrExt;
        let r = remote("drops/in");
        assert_eq!(
            r.key(Path::new("a/b c.txt")).unwrap().as_ref(),
            "drops/in/a/b c.txt"
        );
        assert_eq!(remote("").key(Path::new("x")).unwrap().as_ref(), "x");
        let not_utf8 = Path::new(std::ffi::OsStr::from_bytes(b"caf\xe9"));
        assert!(r.key(not_utf8).unwrap_err().message.contains("UTF-8"));
        assert!(r.key(Path::new("new\nline")).is_err());
    }
}
