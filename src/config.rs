//! The configuration: typed settings for every section of `dropslot.toml`, loaded from the
//! embedded default (`config/dropslot.toml`), then the user's file, then `DROPSLOT_*`
//! environment variables. Owns parsing and validation and the mapping to each actor's settings;
//! it does not start anything.
//!
//! Every error names the key (`upload.slots`) and where the value came from, and maps to exit
//! code 2. No error text holds a secret's value or more than a few hundred bytes of any value
//! (`source`); overlapping directories are refused (`paths`).

mod paths;
mod source;

pub use crate::remote::{KindSettings, OnDelete, RemoteConfig};
pub(crate) use source::shown;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

/// The keys of `[remote]` that hold credentials (typed [`Secret`]): their values are never
/// echoed, and a file setting one must not be readable by other users.
pub const SECRET_KEYS: [&str; 3] = ["access_key_id", "secret_access_key", "password"];

/// The commented example in `config/` is the default: one file documents and defines it.
pub const DEFAULT_CONFIG: &str = include_str!("../config/dropslot.toml");

/// `R` is the `[remote]` section: typed by its kind once `kind` has been read
/// ([`RemoteConfig::from_table`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings<R = RemoteConfig> {
    pub watch: WatchConfig,
    pub debounce: DebounceConfig,
    pub stability: StabilityConfig,
    pub snapshot: SnapshotConfig,
    pub upload: UploadConfig,
    pub linker: LinkerConfig,
    pub folder: FolderConfig,
    pub remote: R,
    pub state: StateConfig,
    pub metrics: MetricsConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    pub path: PathBuf,
    pub ignore: Vec<String>,
    /// Also ignore names shaped like rsync's temporary files (no glob can express them).
    pub ignore_rsync_temp: bool,
    #[serde(with = "humantime_serde")]
    pub rescan_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Refuse files on another mounted file system than the drop folder's.
    pub one_file_system: bool,
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
    /// Globs of files that only grow by appends, published while held open.
    pub logs: Vec<String>,
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
    /// Bytes per second for all slots together; 0 (or absent) is unlimited.
    #[serde(default)]
    pub bandwidth_limit: ByteSize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkerConfig {
    pub batch_size: usize,
    #[serde(with = "humantime_serde")]
    pub batch_delay: Duration,
}

/// The drop folder's own policies (one folder today; per folder once there are several).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderConfig {
    pub after_publish: AfterPublishKind,
    /// Where `after_publish = "move"` puts published files; outside the drop folder.
    pub archive_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfterPublishKind {
    Keep,
    Delete,
    Move,
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
    #[error("config file {} does not exist", source::shown(&.0.display().to_string()))]
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

/// Reads the user's file once: its secrets go to the scrubber, a readable file holding one is
/// warned about, and a syntax error or out-of-range number is the error, by line and key.
fn read_user_file(
    f: &Path,
    source_name: &str,
    scrubber: &mut source::Scrubber,
) -> Result<source::ConfigText, ConfigError> {
    let text = source::ConfigText::read(f).map_err(|e| ConfigError::Unreadable {
        source_name: source_name.to_string(),
        message: format!(
            "cannot read {}: {e}",
            source::shown(&f.display().to_string())
        ),
    })?;
    scrubber.add(&text.secret_values);
    if text.readable_by_others && !text.secret_keys.is_empty() {
        tracing::warn!(
            file = %f.display(),
            "the configuration file {} holds a secret ({}) and every user of this machine can read it; fix: chmod 600 {}",
            f.display(),
            text.secret_keys.join(", "),
            f.display()
        );
    }
    match &text.problem {
        None => Ok(text),
        Some(problem) => Err(match &problem.key {
            Some(key) => ConfigError::Invalid {
                source_name: source_name.to_string(),
                key: scrubber.clean(key),
                message: scrubber.clean(&problem.message),
            },
            None => ConfigError::Unreadable {
                source_name: source_name.to_string(),
                message: scrubber.clean(&problem.message),
            },
        }),
    }
}

/// Finds the configuration file: `--config`, else `./dropslot.toml`, else `config/dropslot.toml`,
/// else none (the embedded default alone).
pub fn locate(explicit: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
    if let Some(path) = explicit {
        return match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => Ok(Some(path.to_path_buf())),
            Ok(_) => Err(ConfigError::Unreadable {
                source_name: source::shown(&path.display().to_string()),
                message: "--config names a directory or special file, not a file".into(),
            }),
            Err(_) => Err(ConfigError::Missing(path.to_path_buf())),
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
    let mut scrubber = source::Scrubber::from_env();
    let mut file_secrets = Vec::new();
    let mut builder = config::Config::builder().add_source(config::File::from_str(
        DEFAULT_CONFIG,
        config::FileFormat::Toml,
    ));
    if let Some(f) = &file {
        let text = read_user_file(f, &source_name, &mut scrubber)?;
        file_secrets = text.secret_keys;
        builder = builder.add_source(config::File::from_str(&text.text, config::FileFormat::Toml));
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
        message: scrubber.clean(&e.to_string()),
    })?;
    let invalid = |key: &str, message: &str| ConfigError::Invalid {
        source_name: source_name.clone(),
        key: scrubber.clean(key),
        message: scrubber.clean(message),
    };
    let mut untyped: Settings<config::Map<String, config::Value>> =
        serde_path_to_error::deserialize(raw)
            .map_err(|e| invalid(&e.path().to_string(), &e.into_inner().to_string()))?;
    let remote = RemoteConfig::from_table(std::mem::take(&mut untyped.remote))
        .map_err(|(key, message)| invalid(&key, &message))?;
    let settings = untyped.with_remote(remote);
    settings
        .validate()
        .map_err(|(key, message)| ConfigError::Invalid {
            source_name: source_name.clone(),
            key: key.to_string(),
            message: scrubber.clean(&message),
        })?;
    if let Some(f) = file.as_ref().filter(|_| !file_secrets.is_empty()) {
        if settings.is_in_drop_folder(f) {
            return Err(ConfigError::Invalid {
                source_name,
                key: "watch.path".into(),
                message: scrubber.clean(&format!(
                    "the configuration file {} holds a secret ({}) and is inside watch.path ({}): it would be published; move it out of the drop folder",
                    f.display(),
                    file_secrets.join(", "),
                    settings.watch.path.display()
                )),
            });
        }
    }
    for (key, f) in settings.secret_files() {
        if source::readable_by_others(f) {
            tracing::warn!(
                file = %f.display(),
                "{key} {} holds a secret and every user of this machine can read it; fix: chmod 600 {}",
                f.display(),
                f.display()
            );
        }
    }
    Ok(Loaded {
        settings,
        source_name,
    })
}

impl<R> Settings<R> {
    /// The same settings with `remote` as the `[remote]` section.
    fn with_remote<T>(self, remote: T) -> Settings<T> {
        Settings {
            watch: self.watch,
            debounce: self.debounce,
            stability: self.stability,
            snapshot: self.snapshot,
            upload: self.upload,
            linker: self.linker,
            folder: self.folder,
            remote,
            state: self.state,
            metrics: self.metrics,
        }
    }
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
        if let Err(e) = self.log_globs() {
            return Err(("stability.logs", e.to_string()));
        }
        self.validate_paths()?;
        self.remote.kind.config().validate()
    }

    /// Paths the kernel can take, a drop folder that is not a file, and no two of dropslot's
    /// directories overlapping: a target containing the drop folder overwrote source files, and
    /// a state directory inside it published the ledger and never went idle.
    fn validate_paths(&self) -> Result<(), (&'static str, String)> {
        let mut keyed = vec![
            ("watch.path", self.watch.path.as_path()),
            ("state.dir", self.state.dir.as_path()),
        ];
        keyed.extend(self.remote.kind.config().files());
        for (key, path) in keyed {
            paths::check_length(path).map_err(|e| (key, e))?;
        }
        if let Ok(meta) = std::fs::metadata(&self.watch.path) {
            if !meta.is_dir() {
                let what = if meta.is_file() {
                    "a file"
                } else {
                    "not a directory"
                };
                return Err((
                    "watch.path",
                    format!(
                        "{} is {what}, not a directory: the drop folder must be a directory",
                        source::shown(&self.watch.path.display().to_string())
                    ),
                ));
            }
        }

        use paths::{Forms, Relation};
        let within = |a: &Forms, b: &Forms| a.is_within(b);
        let watch = Forms::of(&self.watch.path);
        let state = Forms::of(&self.state.dir);
        let snapshots = Forms::of(&self.snapshot_dir());
        let w = watch.describe(&self.watch.path);
        let s = state.describe(&self.state.dir);
        if let Some(archive) = &self.folder.archive_dir {
            paths::check_length(archive).map_err(|e| ("folder.archive_dir", e))?;
            let a = Forms::of(archive);
            let relation = match a.relation_to(&watch) {
                Some(Relation::Same) => Some("is the same directory as"),
                Some(Relation::Inside) => Some("is inside"),
                Some(Relation::Contains) => Some("contains"),
                None => None,
            };
            if let Some(relation) = relation {
                return Err((
                    "folder.archive_dir",
                    format!(
                        "{} {relation} the drop folder (watch.path = {w}): archived files would be published again; put the archive outside the drop folder",
                        a.describe(archive)
                    ),
                ));
            }
        }
        if self.folder.after_publish == AfterPublishKind::Move && self.folder.archive_dir.is_none()
        {
            return Err((
                "folder.archive_dir",
                "folder.after_publish = \"move\" needs an archive directory".to_string(),
            ));
        }
        if let KindSettings::Local(local) = &self.remote.kind {
            let remote = Forms::of(&local.path);
            let r = remote.describe(&local.path);
            let (relation, consequence) = match remote.relation_to(&watch) {
                Some(Relation::Same) => (
                    "is the same directory as",
                    "published files would be published again, endlessly; use two separate directories",
                ),
                Some(Relation::Inside) => (
                    "is inside",
                    "published files would be published again, endlessly; put the target outside the drop folder",
                ),
                Some(Relation::Contains) => (
                    "contains",
                    "publishing would overwrite the drop folder's own files; put the drop folder outside the target",
                ),
                None => ("", ""),
            };
            if !relation.is_empty() {
                let message =
                    format!("remote.path ({r}) {relation} watch.path ({w}): {consequence}");
                return Err(("remote.path", message));
            }
            if within(&state, &remote) {
                return Err(("state.dir", format!(
                    "state.dir ({s}) is inside remote.path ({r}): readers of the remote would see the ledger and unfinished snapshot copies; put the state directory outside the target"
                )));
            }
            if within(&remote, &snapshots) {
                return Err(("remote.path", format!(
                    "remote.path ({r}) is inside the snapshot area of state.dir ({s}/snapshots), which dropslot empties at every start; use another directory"
                )));
            }
        }
        if within(&state, &watch) {
            return Err(("state.dir", format!(
                "state.dir ({s}) is inside watch.path ({w}): the ledger and snapshot copies would be published as they change, and the drop folder would never be idle; put the state directory outside the drop folder"
            )));
        }
        for (key, file) in self.secret_files() {
            if within(&Forms::of(file), &watch) {
                return Err((key, format!(
                    "{key} ({}) is inside watch.path ({w}): the secret in it would be published; keep it outside the drop folder",
                    source::shown(&file.display().to_string())
                )));
            }
        }
        if within(&watch, &snapshots) {
            return Err(("state.dir", format!(
                "watch.path ({w}) is inside the snapshot area of state.dir ({s}/snapshots), which dropslot empties at every start; use another directory"
            )));
        }
        Ok(())
    }

    /// Files named by the configuration that hold credentials.
    fn secret_files(&self) -> Vec<(&'static str, &Path)> {
        self.remote.kind.config().secret_files()
    }

    /// `file` is the drop folder or below it, as the overlap checks see paths.
    fn is_in_drop_folder(&self, file: &Path) -> bool {
        paths::Forms::of(file).is_within(&paths::Forms::of(&self.watch.path))
    }

    pub fn ignore_rules(&self) -> Result<dropslot_actors::watcher::IgnoreRules, globset::Error> {
        // Nothing of dropslot's own needs excluding: validation keeps the state directory and a
        // local target out of the drop folder.
        Ok(
            dropslot_actors::watcher::IgnoreRules::new(&self.watch.ignore)?
                .with_rsync_temp(self.watch.ignore_rsync_temp),
        )
    }

    /// The drop folder as the pipeline reads it: confined, never through a link.
    /// `folder.after_publish` with its archive directory made absolute.
    pub fn after_publish(&self) -> dropslot_actors::after_publish::AfterPublish {
        use dropslot_actors::after_publish::AfterPublish;
        match (self.folder.after_publish, &self.folder.archive_dir) {
            (AfterPublishKind::Delete, _) => AfterPublish::Delete,
            (AfterPublishKind::Move, Some(dir)) => AfterPublish::Move(absolute(dir)),
            _ => AfterPublish::Keep,
        }
    }

    pub fn drop_root(&self) -> dropslot_actors::confined::DropRoot {
        dropslot_actors::confined::DropRoot::new(
            self.watch.path.clone(),
            self.watch.one_file_system,
        )
    }

    pub fn log_globs(&self) -> Result<dropslot_actors::globs::PathGlobs, globset::Error> {
        dropslot_actors::globs::PathGlobs::new(&self.stability.logs)
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
            "remote-tahoe.toml",
        ] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("config")
                .join(example);
            let loaded = load(Some(&path)).unwrap_or_else(|e| panic!("{example}: {e}"));
            assert_ne!(loaded.settings.remote.kind_name(), "local", "{example}");
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
    fn an_unknown_remote_key_lists_that_kinds_keys_only() {
        let err = load_str("[remote]\nkind = \"webdav\"\nurl = \"http://h/\"\nbucket = \"b\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("remote") && err.contains("`bucket`"), "{err}");
        assert!(err.contains("`url`") && err.contains("`password`"), "{err}");
        assert!(
            !err.contains("`part_size`") && !err.contains("`path`"),
            "{err}"
        );
        // Values still name their key, and the environment still sets any kind's key.
        let err = load_str("[remote]\nkind = \"s3\"\nbucket = \"b\"\npart_size = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`remote.part_size`"), "{err}");
        let err = load_str("[remote]\nkind = \"tahoe\"\ntimeout = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`remote.timeout`"), "{err}");
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
    fn default_ignore_list_covers_producers_temporary_names_only() {
        let rules = load_str("").unwrap().settings.ignore_rules().unwrap();
        for temp in [
            "dl/film.mkv.part",
            "x.partial",
            "up/report.pdf.filepart",
            "a.zip.crdownload",
            "a.zip.download",
            "d/.~tmp~",
            "~WRL0001.tmp",
            "~$budget.xlsx",
            ".~lock.budget.ods#",
            ".goutputstream-X1Y2Z3",
            "notes.txt.kate-swp",
            ".notes.txt.swp",
            ".notes.txt.swx",
            ".#notes.txt",
            "notes.txt~",
            "~",
            "d/.notes.txt.Qw3rTy",
        ] {
            assert!(rules.is_ignored(Path::new(temp)), "{temp} is published");
        }
        for kept in [
            "report.pdf",
            ".bashrc",
            ".bashrc.backup",
            "partial.txt",
            "download.html",
            "tmp/file.txt",
            "a~b.txt",
            "lock.ods",
            ".gitignore",
            "$money.txt",
        ] {
            assert!(!rules.is_ignored(Path::new(kept)), "{kept} is ignored");
        }
        let off = load_str("[watch]\nignore_rsync_temp = false\n").unwrap();
        let rules = off.settings.ignore_rules().unwrap();
        assert!(!rules.is_ignored(Path::new("d/.notes.txt.Qw3rTy")));
    }

    #[test]
    fn state_dir_inside_drop_folder_is_refused() {
        let err = load_str("[watch]\npath = \"/x/drop\"\n[state]\ndir = \"/x/drop/.state\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("state.dir") && err.contains("watch.path"),
            "{err}"
        );
    }

    #[test]
    fn overlapping_remote_and_drop_folder_are_refused_naming_both_keys() {
        for (watch, remote) in [
            ("/x/par/drop", "/x/par"),
            ("/x/drop", "/x/drop/"),
            ("/x/drop", "/x/drop/out"),
            ("/x/a/../drop", "/x/drop/./out"),
        ] {
            let err = load_str(&format!(
                "[watch]\npath = {watch:?}\n[remote]\npath = {remote:?}\n[state]\ndir = \"/y/s\"\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("remote.path") && err.contains("watch.path"),
                "{err}"
            );
        }
        // Only the local remote has remote.path: another kind's is not silently ignored.
        let err = load_str("[watch]\npath = \"/x/drop\"\n[remote]\nkind = \"s3\"\nbucket = \"b\"\npath = \"/x/drop\"\n[state]\ndir = \"/y/s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("remote") && err.contains("`path`"), "{err}");
    }

    #[test]
    fn state_and_snapshot_area_overlaps_are_refused() {
        let err = load_str("[watch]\npath = \"/x/s/snapshots/drop\"\n[state]\ndir = \"/x/s\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("state.dir") && err.contains("snapshot"),
            "{err}"
        );
        let err = load_str("[remote]\npath = \"/x/out\"\n[state]\ndir = \"/x/out/.state\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("state.dir") && err.contains("remote.path"),
            "{err}"
        );
        let err = load_str("[remote]\npath = \"/x/s/snapshots\"\n[state]\ndir = \"/x/s\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("remote.path") && err.contains("state.dir"),
            "{err}"
        );
        // A state directory beside the drop folder, or holding the target, is fine.
        load_str(
            "[watch]\npath = \"/x/drop\"\n[remote]\npath = \"/x/s/out\"\n[state]\ndir = \"/x/s\"\n",
        )
        .unwrap();
    }

    #[test]
    fn s3_sizes_above_the_single_put_limit_are_refused() {
        let s3 = "[remote]\nkind = \"s3\"\nbucket = \"b\"\n";
        let err = load_str(&format!("{s3}multipart_threshold = \"4EiB\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("remote.multipart_threshold"), "{err}");
        let err = load_str(&format!(
            "{s3}part_size = \"6GiB\"\nmultipart_threshold = \"6GiB\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("remote.part_size"), "{err}");
        load_str(&format!("{s3}multipart_threshold = \"5GiB\"\n")).unwrap();
    }
}
