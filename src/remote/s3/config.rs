//! `kind = "s3"`: endpoint, bucket, prefix, addressing, credentials and upload sizes, with S3's
//! own limits checked before anything is sent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use crate::config::Secret;
use crate::remote::config::{required, KindConfig};
use crate::remote::{http, BuildError, Built};

/// S3's largest single PUT, and largest part of a multipart upload.
const S3_MAX_OBJECT_PART: u64 = 5 * 1024 * 1024 * 1024;
/// S3 refuses parts below 5 MiB (except the last).
const S3_MIN_PART: u64 = 5 * 1024 * 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The endpoint URL; none means AWS (or `AWS_ENDPOINT`).
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub bucket: String,
    /// Key prefix, without leading or trailing `/`.
    #[serde(default)]
    pub prefix: String,
    /// `true` for `endpoint/bucket/key` URLs, `false` for `bucket.endpoint/key`; unset,
    /// path-style for any endpoint but AWS's own (what rclone and the AWS SDKs do).
    #[serde(default)]
    pub path_style: Option<bool>,
    #[serde(default)]
    pub access_key_id: Option<Secret>,
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// An AWS shared credentials file (profile from `AWS_PROFILE`, else `default`).
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// Files above this go up as multipart uploads ...
    #[serde(default = "default_multipart_threshold")]
    pub multipart_threshold: ByteSize,
    /// ... in parts of this size.
    #[serde(default = "default_part_size")]
    pub part_size: ByteSize,
    /// A request that makes no progress for this long fails (and is retried).
    #[serde(default = "http::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_multipart_threshold() -> ByteSize {
    ByteSize::mib(64)
}

fn default_part_size() -> ByteSize {
    ByteSize::mib(16)
}

impl KindConfig for S3Config {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.bucket.is_empty() {
            return Err(required("remote.bucket", "s3"));
        }
        if self.prefix.starts_with('/') || self.prefix.ends_with('/') {
            return Err(("remote.prefix", "must not start or end with '/'".into()));
        }
        if self.part_size.as_u64() < S3_MIN_PART {
            return Err((
                "remote.part_size",
                "must be at least 5MiB (an S3 limit)".into(),
            ));
        }
        if self.part_size.as_u64() > S3_MAX_OBJECT_PART {
            return Err((
                "remote.part_size",
                "must be at most 5GiB (an S3 limit: the largest part)".into(),
            ));
        }
        // Also keeps the staging budget (4 x the threshold) from overflowing.
        if self.multipart_threshold.as_u64() > S3_MAX_OBJECT_PART {
            return Err((
                "remote.multipart_threshold",
                "must be at most 5GiB (an S3 limit: the largest single PUT)".into(),
            ));
        }
        if self.multipart_threshold.as_u64() < self.part_size.as_u64() {
            return Err((
                "remote.multipart_threshold",
                "must be at least remote.part_size".into(),
            ));
        }
        if let Some(endpoint) = &self.endpoint {
            let url = reqwest::Url::parse(endpoint)
                .map_err(|e| ("remote.endpoint", format!("not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err((
                    "remote.endpoint",
                    "must be an http:// or https:// URL with a host".into(),
                ));
            }
        }
        Ok(())
    }

    fn secret_files(&self) -> Vec<(&'static str, &Path)> {
        self.credentials_file
            .iter()
            .map(|f| ("remote.credentials_file", f.as_path()))
            .collect()
    }

    fn build(&self) -> Result<Built, BuildError> {
        let remote = super::S3Remote::new(self).map_err(BuildError)?;
        let secrets = remote.secrets();
        Ok(Built::of(remote).redacting(secrets))
    }
}
