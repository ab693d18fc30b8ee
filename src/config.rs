//! The configuration: typed settings for every section of `dropslot.toml`, loaded from the
//! embedded default (`config/dropslot.toml`), then the user's file, then `DROPSLOT_*`
//! environment variables. Owns parsing and validation and the mapping to each actor's settings;
//! it does not start anything.
//!
//! Every error names the key (`upload.slots`) and where the value came from, and maps to exit
//! code 2.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

/// The commented example in `config/` is the default: one file documents and defines it.
pub const DEFAULT_CONFIG: &str = include_str!("../config/dropslot.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub watch: WatchConfig,
    pub debounce: DebounceConfig,
    pub stability: StabilityConfig,
    pub snapshot: SnapshotConfig,
    pub upload: UploadConfig,
    pub linker: LinkerConfig,
    pub remote: RemoteConfig,
    pub state: StateConfig,
    pub metrics: MetricsConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    pub path: PathBuf,
    pub ignore: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub rescan_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebounceConfig {
    #[serde(with = "humantime_serde")]
    pub quiet: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StabilityConfig {
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    pub max_size: ByteSize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadConfig {
    pub slots: usize,
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub retry_failed_after: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkerConfig {
    pub batch_size: usize,
    #[serde(with = "humantime_serde")]
    pub batch_delay: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemoteKind {
    Local,
    S3,
    Webdav,
    Tahoe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDelete {
    Keep,
    Delete,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    pub kind: RemoteKind,
    pub on_delete: OnDelete,
    /// `local`: the target directory.
    pub path: PathBuf,
    /// `s3`: the endpoint URL; none means AWS (or `AWS_ENDPOINT`).
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub bucket: Option<String>,
    /// `s3`: key prefix, without leading or trailing `/`.
    #[serde(default)]
    pub prefix: String,
    /// `s3`: `https://endpoint/bucket/key` instead of `https://bucket.endpoint/key`.
    #[serde(default)]
    pub path_style: bool,
    #[serde(default)]
    pub access_key_id: Option<Secret>,
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// `s3`: an AWS shared credentials file (profile from `AWS_PROFILE`, else `default`).
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// `s3`: files above this go up as multipart uploads ...
    pub multipart_threshold: ByteSize,
    /// ... in parts of this size.
    pub part_size: ByteSize,
    /// `webdav`: the base URL (a collection).
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// `tahoe`: the gateway's web API.
    pub gateway: String,
    /// `tahoe`: a file holding the target directory's write-cap, optionally followed by
    /// `/sub/dir`.
    #[serde(default)]
    pub dircap_file: Option<PathBuf>,
    /// `s3` and `webdav`: a request that makes no progress for this long fails (and is retried).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

/// A credential: never printed, not even by `{:?}`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl RemoteConfig {
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            RemoteKind::Local => "local",
            RemoteKind::S3 => "s3",
            RemoteKind::Webdav => "webdav",
            RemoteKind::Tahoe => "tahoe",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(with = "humantime_serde")]
    pub log_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("cannot read the configuration ({source_name}): {message}")]
    Unreadable {
        source_name: String,
        message: String,
    },
    #[error("invalid setting `{key}` ({source_name}): {message}")]
    Invalid {
        source_name: String,
        key: String,
        message: String,
    },
}

/// Where the settings came from, for error messages and logs.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub settings: Settings,
    pub source_name: String,
}

/// Finds the configuration file: `--config`, else `./dropslot.toml`, else `config/dropslot.toml`,
/// else none (the embedded default alone).
pub fn locate(explicit: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(Some(path.to_path_buf()))
        } else {
            Err(ConfigError::Missing(path.to_path_buf()))
        };
    }
    Ok(["dropslot.toml", "config/dropslot.toml"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file()))
}

pub fn load(explicit: Option<&Path>) -> Result<Loaded, ConfigError> {
    let file = locate(explicit)?;
    let source_name = match &file {
        Some(f) => format!("{} and DROPSLOT_* environment", f.display()),
        None => "built-in default and DROPSLOT_* environment".to_string(),
    };
    let mut builder = config::Config::builder().add_source(config::File::from_str(
        DEFAULT_CONFIG,
        config::FileFormat::Toml,
    ));
    if let Some(f) = &file {
        builder =
            builder.add_source(config::File::from(f.as_path()).format(config::FileFormat::Toml));
    }
    // Only DROPSLOT_<SECTION>__<KEY> variables are settings; others, like DROPSLOT_LOG, are not.
    let settings_vars: config::Map<String, String> = std::env::vars()
        .filter(|(name, _)| name.starts_with("DROPSLOT_") && name.contains("__"))
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix("DROPSLOT")
            .source(Some(settings_vars))
            .prefix_separator("_")
            .separator("__")
            .list_separator(",")
            .with_list_parse_key("watch.ignore")
            .try_parsing(true),
    );
    let raw = builder.build().map_err(|e| ConfigError::Unreadable {
        source_name: source_name.clone(),
        message: e.to_string(),
    })?;
    let settings: Settings = serde_path_to_error::deserialize(raw).map_err(|e| {
        let key = e.path().to_string();
        let message = e.into_inner().to_string();
        ConfigError::Invalid {
            source_name: source_name.clone(),
            key,
            message,
        }
    })?;
    settings
        .validate()
        .map_err(|(key, message)| ConfigError::Invalid {
            source_name: source_name.clone(),
            key: key.to_string(),
            message,
        })?;
    Ok(Loaded {
        settings,
        source_name,
    })
}

impl Settings {
    /// Checks what types alone cannot; returns the key and the reason.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let positive = |key: &'static str, d: Duration| {
            if d.is_zero() {
                Err((key, "must be greater than zero".to_string()))
            } else {
                Ok(())
            }
        };
        if self.upload.slots == 0 {
            return Err(("upload.slots", "must be at least 1".into()));
        }
        if self.upload.slots > 1024 {
            return Err(("upload.slots", "must be at most 1024".into()));
        }
        if self.upload.max_attempts == 0 {
            return Err(("upload.max_attempts", "must be at least 1".into()));
        }
        if self.linker.batch_size == 0 {
            return Err(("linker.batch_size", "must be at least 1".into()));
        }
        positive("upload.retry_initial", self.upload.retry_initial)?;
        positive("metrics.log_interval", self.metrics.log_interval)?;
        if self.upload.retry_max < self.upload.retry_initial {
            return Err((
                "upload.retry_max",
                "must not be less than upload.retry_initial".into(),
            ));
        }
        if self.snapshot.max_size.as_u64() == 0 {
            return Err(("snapshot.max_size", "must be greater than zero".into()));
        }
        if let Err(e) = self.ignore_rules() {
            return Err(("watch.ignore", e.to_string()));
        }
        self.validate_remote()
    }

    fn validate_remote(&self) -> Result<(), (&'static str, String)> {
        let r = &self.remote;
        let required = |key: &'static str, present: bool| {
            if present {
                Ok(())
            } else {
                Err((
                    key,
                    format!("is required for remote.kind = \"{}\"", r.kind_name()),
                ))
            }
        };
        match r.kind {
            RemoteKind::Local => Ok(()),
            RemoteKind::S3 => {
                required(
                    "remote.bucket",
                    r.bucket.as_deref().is_some_and(|b| !b.is_empty()),
                )?;
                if r.prefix.starts_with('/') || r.prefix.ends_with('/') {
                    return Err(("remote.prefix", "must not start or end with '/'".into()));
                }
                // S3 refuses parts below 5 MiB (except the last).
                if r.part_size.as_u64() < 5 * 1024 * 1024 {
                    return Err((
                        "remote.part_size",
                        "must be at least 5MiB (an S3 limit)".into(),
                    ));
                }
                if r.multipart_threshold.as_u64() < r.part_size.as_u64() {
                    return Err((
                        "remote.multipart_threshold",
                        "must be at least remote.part_size".into(),
                    ));
                }
                if let Some(endpoint) = &r.endpoint {
                    reqwest::Url::parse(endpoint)
                        .map_err(|e| ("remote.endpoint", format!("not a URL: {e}")))?;
                }
                Ok(())
            }
            RemoteKind::Tahoe => {
                required("remote.dircap_file", r.dircap_file.is_some())?;
                reqwest::Url::parse(&r.gateway)
                    .map_err(|e| ("remote.gateway", format!("not a URL: {e}")))?;
                Ok(())
            }
            RemoteKind::Webdav => {
                required("remote.url", r.url.is_some())?;
                let url = reqwest::Url::parse(r.url.as_deref().unwrap_or_default())
                    .map_err(|e| ("remote.url", format!("not a URL: {e}")))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(("remote.url", "must be an http:// or https:// URL".into()));
                }
                if !url.username().is_empty() || url.password().is_some() {
                    // URLs end up in error messages; credentials must not.
                    return Err((
                        "remote.url",
                        "must not contain credentials: use remote.username and remote.password"
                            .into(),
                    ));
                }
                if r.password.is_some() && r.username.is_none() {
                    return Err((
                        "remote.username",
                        "is required when remote.password is set".into(),
                    ));
                }
                Ok(())
            }
        }
    }

    /// Paths inside the drop folder that dropslot itself writes, relative to it.
    fn own_dirs_inside_drop_folder(&self) -> Vec<PathBuf> {
        let root = absolute(&self.watch.path);
        [&self.state.dir, &self.remote.path]
            .into_iter()
            .filter_map(|p| absolute(p).strip_prefix(&root).ok().map(Path::to_path_buf))
            .filter(|rel| !rel.as_os_str().is_empty())
            .collect()
    }

    pub fn ignore_rules(&self) -> Result<dropslot_actors::watcher::IgnoreRules, globset::Error> {
        dropslot_actors::watcher::IgnoreRules::new(
            &self.watch.ignore,
            self.own_dirs_inside_drop_folder(),
        )
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.state.dir.join("ledger.sqlite")
    }

    pub fn snapshot_dir(&self) -> PathBuf {
        self.state.dir.join("snapshots")
    }
}

/// Makes a path absolute without touching the disk (the drop folder may not exist yet).
pub fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(toml: &str) -> Result<Loaded, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, toml).unwrap();
        load(Some(&file))
    }

    #[test]
    fn embedded_default_is_valid() {
        let loaded = load_str("").unwrap();
        assert_eq!(loaded.settings.upload.slots, 4);
        assert_eq!(loaded.settings.snapshot.max_size.as_u64(), 1 << 30);
        assert_eq!(loaded.settings.debounce.quiet, Duration::from_millis(300));
    }

    #[test]
    fn errors_name_the_key() {
        let err = load_str("[upload]\nslots = 0\n").unwrap_err().to_string();
        assert!(err.contains("upload.slots"), "{err}");
        let err = load_str("[upload]\nslotz = 3\n").unwrap_err().to_string();
        assert!(err.contains("slotz"), "{err}");
        let err = load_str("[debounce]\nquiet = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("debounce.quiet"), "{err}");
        let err = load_str("[snapshot]\nmax_size = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("snapshot.max_size"), "{err}");
        let err = load_str("[watch]\nignore = [\"a[\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("watch.ignore"), "{err}");
    }

    #[test]
    fn example_remote_configs_are_valid() {
        for example in [
            "remote-aws-s3.toml",
            "remote-minio.toml",
            "remote-webdav.toml",
        ] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("config")
                .join(example);
            let loaded = load(Some(&path)).unwrap_or_else(|e| panic!("{example}: {e}"));
            assert_ne!(loaded.settings.remote.kind, RemoteKind::Local, "{example}");
        }
    }

    #[test]
    fn remote_settings_are_checked_per_kind() {
        let err = load_str("[remote]\nkind = \"s3\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("remote.bucket"), "{err}");
        let err = load_str("[remote]\nkind = \"s3\"\nbucket = \"b\"\npart_size = \"1MiB\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("remote.part_size"), "{err}");
        let err = load_str("[remote]\nkind = \"webdav\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("remote.url"), "{err}");
        let err = load_str("[remote]\nkind = \"webdav\"\nurl = \"http://u:p@h/\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("remote.url") && !err.contains("u:p"), "{err}");
        let err = load_str("[remote]\nkind = \"ftp\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("remote.kind"), "{err}");
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let loaded = load_str(
            "[remote]\nkind = \"s3\"\nbucket = \"b\"\nsecret_access_key = \"s3cr3t-value\"\n",
        )
        .unwrap();
        assert!(!format!("{:?}", loaded.settings).contains("s3cr3t-value"));
    }

    #[test]
    fn state_dir_inside_drop_folder_is_ignored() {
        let loaded =
            load_str("[watch]\npath = \"/x/drop\"\n[state]\ndir = \"/x/drop/.state\"\n").unwrap();
        let rules = loaded.settings.ignore_rules().unwrap();
        assert!(rules.is_ignored(Path::new(".state/ledger.sqlite")));
        assert!(!rules.is_ignored(Path::new("a.txt")));
    }
}
