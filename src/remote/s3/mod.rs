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
//!
//! Nothing to reconcile at start-up: small files were only in memory, and parts of multipart
//! uploads cut off by a crash cannot be listed through object_store (a bucket lifecycle rule,
//! AbortIncompleteMultipartUpload, removes them; docs/configuration.md says so).

mod config;
pub use config::S3Config;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use dropslot_actors::fileinfo::ContentHash;
use dropslot_actors::remote::{
    confirm_sizes, ContentStream, FileAttributes, Listed, PublishItem, Remote, RemoteError, RemoteRef,
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

use super::http::classify_transport;
use super::{body_matches, PUBLISH_CONCURRENCY};

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
    region: String,
    addressing: Addressing,
    /// The endpoint is AWS's own (none configured, or an `amazonaws.com` host).
    aws_endpoint: bool,
    /// Whether `remote.path_style` chose the addressing (else the endpoint did).
    path_style_set: bool,
    prefix: String,
    endpoint: String,
    multipart_threshold: u64,
    part_size: usize,
    staged: Mutex<HashMap<String, StagedObject>>,
    next_token: AtomicU64,
    /// Credentials as configured, wherever they came from.
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
    let parsed = ::config::Config::builder()
        .add_source(::config::File::from(file).format(::config::FileFormat::Ini))
        .build()
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let get = |key: &str| {
        parsed
            .get_string(&format!("{profile}.{key}"))
            .map_err(|_| format!("{} has no {key} in profile [{profile}]", file.display()))
    };
    Ok((get("aws_access_key_id")?, get("aws_secret_access_key")?))
}

/// How a request names the bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    /// `endpoint/bucket/key`: works with any host name or IP address.
    Path,
    /// `bucket.endpoint/key`: AWS's own endpoints; needs DNS (or a host) for every bucket.
    VirtualHosted,
}

impl Addressing {
    /// The setting and value that select this addressing.
    pub fn setting(self) -> &'static str {
        match self {
            Addressing::Path => "remote.path_style = true",
            Addressing::VirtualHosted => "remote.path_style = false",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Addressing::Path => "path-style",
            Addressing::VirtualHosted => "virtual-hosted",
        }
    }
}

/// AWS's own S3 endpoints (`s3.eu-west-1.amazonaws.com`, `s3.cn-north-1.amazonaws.com.cn`).
fn is_aws_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "amazonaws.com"
        || host.ends_with(".amazonaws.com")
        || host.ends_with(".amazonaws.com.cn")
}

/// No endpoint (AWS by default) or one of AWS's own.
fn is_aws_endpoint(endpoint: Option<&str>) -> bool {
    endpoint.is_none_or(|e| {
        reqwest::Url::parse(e)
            .ok()
            .and_then(|u| u.host_str().map(is_aws_host))
            .unwrap_or(false)
    })
}

/// A bucket name that can be a DNS label (and so a virtual host): lowercase letters, digits and
/// `-`; AWS's SDKs fall back to path-style for the others (a `.` breaks the TLS wildcard).
fn dns_compatible(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !bucket.starts_with('-')
        && !bucket.ends_with('-')
}

/// The addressing for `endpoint` (`None`: AWS) as rclone and the AWS SDKs choose it: virtual-hosted
/// for AWS's own endpoints, path-style for every other (an IP address or `localhost` cannot serve
/// `bucket.host`, and most self-hosted stores have no wildcard DNS). `remote.path_style`, when
/// set, decides instead.
pub fn addressing(endpoint: Option<&str>, bucket: &str, path_style: Option<bool>) -> Addressing {
    match path_style {
        Some(true) => Addressing::Path,
        Some(false) => Addressing::VirtualHosted,
        None => {
            let aws = is_aws_endpoint(endpoint);
            if aws && dns_compatible(bucket) {
                Addressing::VirtualHosted
            } else {
                Addressing::Path
            }
        }
    }
}

/// The endpoint a virtual-hosted request goes to: the bucket in front of the host
/// (object_store takes a virtual-hosted endpoint as it is, bucket included).
fn bucket_host(endpoint: &str, bucket: &str) -> Result<String, String> {
    let mut url = reqwest::Url::parse(endpoint)
        .map_err(|e| format!("remote.endpoint {endpoint:?} is not a URL: {e}"))?;
    let host = url
        .host_str()
        .ok_or_else(|| format!("remote.endpoint {endpoint:?} has no host"))?
        .to_string();
    let ip = host.parse::<std::net::Ipv4Addr>().is_ok() || host.starts_with('[');
    let vhost = format!("{bucket}.{host}");
    if ip || url.set_host(Some(&vhost)).is_err() {
        return Err(format!(
            "remote.path_style = false (virtual-hosted addressing) puts the bucket in the host \
             name, and {vhost} cannot be one (remote.endpoint {endpoint} is an IP address or \
             bucket {bucket} is not a host name): remove remote.path_style, or set {}",
            Addressing::Path.setting()
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

impl S3Remote {
    pub fn new(config: &S3Config) -> Result<Self, String> {
        // Config file keys win over a credentials file, which wins over AWS_* variables.
        let bucket = config.bucket.clone();
        // The endpoint as object_store's `from_env` would take it, made explicit so that the
        // addressing can be chosen from it.
        let endpoint = config.endpoint.clone().or_else(|| {
            ["AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
                .iter()
                .find_map(|v| std::env::var(v).ok().filter(|e| !e.is_empty()))
        });
        let addressing = addressing(endpoint.as_deref(), &bucket, config.path_style);
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_virtual_hosted_style_request(addressing == Addressing::VirtualHosted)
            // The slots and the linker retry with our own policy and report each failure.
            .with_retry(RetryConfig {
                max_retries: 0,
                ..Default::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(config.timeout)
                    .with_connect_timeout(super::http::CONNECT_TIMEOUT),
            );
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        let plain_http = endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        if let Some(endpoint) = &endpoint {
            let url = match addressing {
                Addressing::Path => endpoint.clone(),
                Addressing::VirtualHosted => bucket_host(endpoint, &bucket)?,
            };
            builder = builder.with_endpoint(url).with_allow_http(plain_http);
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
        let store = builder
            .build()
            .map_err(|e| format!("cannot configure the S3 client: {e}"))?;
        Ok(S3Remote {
            store,
            region: config
                .region
                .clone()
                .or_else(|| std::env::var("AWS_REGION").ok())
                .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
                .unwrap_or_else(|| "us-east-1".into()),
            aws_endpoint: is_aws_endpoint(endpoint.as_deref()),
            bucket,
            addressing,
            path_style_set: config.path_style.is_some(),
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
        let context = if path.as_os_str().is_empty() {
            format!("{what} bucket {}", self.bucket)
        } else {
            format!("{what} {} (bucket {})", path.display(), self.bucket)
        };
        let text = e.to_string();
        let has = |code: &str| text.contains(code);
        let denied = matches!(
            e,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        );
        let error = if has("NoSuchBucket") {
            RemoteError::permanent(format!(
                "{context}: no such bucket {} at {}{}",
                self.bucket,
                self.endpoint,
                self.addressing_hint()
            ))
        } else if has("InvalidAccessKeyId") {
            RemoteError::permanent(format!(
                "{context}: access denied: the server does not know the access key id (check \
                 remote.access_key_id, else remote.credentials_file or AWS_ACCESS_KEY_ID)"
            ))
        } else if has("SignatureDoesNotMatch") {
            RemoteError::permanent(format!(
                "{context}: access denied: the request signature does not match, so the secret \
                 key is wrong (check remote.secret_access_key, else remote.credentials_file or \
                 AWS_SECRET_ACCESS_KEY)"
            ))
        } else if has("PermanentRedirect") || has("AuthorizationHeaderMalformed") {
            RemoteError::permanent(format!(
                "{context}: the bucket is in another region than remote.region ({}): set \
                 remote.region to the bucket's region",
                self.region
            ))
        } else if denied || has("AccessDenied") {
            RemoteError::permanent(format!(
                "{context}: access denied: the credentials are accepted but may not do this in \
                 bucket {} (permission denied; the S3 actions needed: ListBucket, PutObject, \
                 GetObject, DeleteObject, and the multipart ones): {text}",
                self.bucket
            ))
        } else {
            match &e {
                object_store::Error::NotFound { .. } => RemoteError::permanent(format!(
                    "{context}: not found (does bucket {} exist?){}",
                    self.bucket,
                    self.addressing_hint()
                )),
                object_store::Error::InvalidPath { .. }
                | object_store::Error::NotSupported { .. }
                | object_store::Error::NotImplemented { .. }
                | object_store::Error::UnknownConfigurationKey { .. } => {
                    RemoteError::permanent(format!("{context}: {text}"))
                }
                _ => {
                    let error = classify_transport(&context, &e, &self.endpoint);
                    if error.message.contains("unknown host")
                        && self.addressing == Addressing::VirtualHosted
                        && !self.aws_endpoint
                    {
                        // The endpoint's own name may resolve; the bucket's did not. Still
                        // transient: name service outages end.
                        RemoteError {
                            class: error.class,
                            message: format!(
                                "{context}: unknown host {}.<host of {}>{}",
                                self.bucket,
                                self.endpoint,
                                self.addressing_hint()
                            ),
                        }
                    } else {
                        error
                    }
                }
            }
        };
        error
    }

    /// For an error that wrong addressing causes: which addressing was used, and the setting
    /// that changes it. Empty where the addressing is AWS's own default.
    fn addressing_hint(&self) -> String {
        match (self.addressing, self.path_style_set) {
            (Addressing::VirtualHosted, _) if !self.aws_endpoint => format!(
                "; with virtual-hosted addressing the bucket goes in the host name, which most \
                 self-hosted servers do not serve: set {} (or remove remote.path_style)",
                Addressing::Path.setting()
            ),
            (Addressing::Path, true) => format!(
                "; with path-style addressing ({}) the bucket goes in the path: if this server \
                 serves buckets as host names, remove remote.path_style",
                Addressing::Path.setting()
            ),
            _ => String::new(),
        }
    }

    /// The credentials it was configured with, for [`super::redacted`] (servers echo the key
    /// id in their errors).
    pub fn secrets(&self) -> Vec<String> {
        self.secrets.clone()
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
                    // A retried completion fails (AWS: NoSuchUpload) when the answer to the first
                    // one was lost; the linker then reads the object back (`holds`).
                    Err(e) => Err((
                        self.describe_error("cannot complete the upload of", &item.path, e),
                        StagedObject::Multipart { id, parts },
                    )),
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
impl super::HealthCheck for S3Remote {
    async fn health_check(&self, report: super::Report<'_>) -> Result<(), super::CheckFailure> {
        let prefix = (!self.prefix.is_empty()).then(|| Key::from(self.prefix.as_str()));
        let listed = async {
            self.store
                .list_with_delimiter(prefix.as_ref())
                .await
                .map_err(|e| self.describe_error("cannot list", Path::new(&self.prefix), e))
        };
        super::step(report, super::Step::Reach, listed, |_| {
            format!(
                "listed bucket {} ({} addressing)",
                self.bucket,
                self.addressing.describe()
            )
        })
        .await?;
        super::probe(self, report).await
    }
}

#[async_trait]
impl Remote for S3Remote {
    fn reference_of(&self, item: &PublishItem) -> RemoteRef {
        match self.key(&item.path) {
            Ok(key) => RemoteRef(key.to_string()),
            Err(_) => RemoteRef(item.path.display().to_string()),
        }
    }

    fn describe(&self) -> String {
        let prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("/{}", self.prefix)
        };
        format!(
            "S3 bucket {}{prefix} at {}, {} addressing",
            self.bucket,
            self.endpoint,
            self.addressing.describe()
        )
    }

    async fn check(&self) -> Result<(), RemoteError> {
        super::silent_check(self).await
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

    async fn list(&self) -> Result<Vec<Listed>, RemoteError> {
        let prefix = (!self.prefix.is_empty()).then(|| Key::from(self.prefix.as_str()));
        let mut objects = self.store.list(prefix.as_ref());
        let mut found = Vec::new();
        while let Some(object) = objects.next().await {
            let object = object
                .map_err(|e| self.describe_error("cannot list", Path::new(&self.prefix), e))?;
            let key = object.location.as_ref();
            let rel = if self.prefix.is_empty() {
                key
            } else {
                match key
                    .strip_prefix(self.prefix.as_str())
                    .and_then(|k| k.strip_prefix('/'))
                {
                    Some(rel) => rel,
                    None => continue,
                }
            };
            found.push(Listed {
                path: PathBuf::from(rel),
                size: object.size,
            });
        }
        Ok(found)
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
        let config: S3Config = serde_json::from_value(serde_json::json!({
            "bucket": "b",
            "prefix": prefix,
            "endpoint": "http://127.0.0.1:1",
        }))
        .unwrap();
        S3Remote::new(&config).unwrap()
    }

    #[test]
    fn addressing_is_path_style_except_on_aws_and_the_setting_overrides_it() {
        use Addressing::*;
        for custom in [
            "http://127.0.0.1:9000",
            "http://localhost:9000",
            "https://minio.example.com",
            "http://[::1]:9000",
            "https://s3.example.org/amazonaws.com",
        ] {
            assert_eq!(addressing(Some(custom), "drops", None), Path, "{custom}");
            assert_eq!(
                addressing(Some(custom), "drops", Some(false)),
                VirtualHosted
            );
        }
        for aws in [
            None,
            Some("https://s3.eu-west-1.amazonaws.com"),
            Some("https://s3.cn-north-1.amazonaws.com.cn"),
        ] {
            assert_eq!(addressing(aws, "drops", None), VirtualHosted, "{aws:?}");
            assert_eq!(addressing(aws, "drops", Some(true)), Path);
            // Not a host name: AWS's SDKs fall back to path-style too.
            assert_eq!(addressing(aws, "my.drops", None), Path);
        }
        assert_eq!(
            bucket_host("https://s3.eu-west-1.amazonaws.com", "drops").unwrap(),
            "https://drops.s3.eu-west-1.amazonaws.com"
        );
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
