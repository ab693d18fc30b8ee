//! The `[remote]` table: `on_delete`, which every kind shares, and `kind`, which picks the one
//! per-kind settings struct the rest of the table must fit (each kind's own `config.rs` owns its
//! keys, defaults and checks). Owns parsing the table and the list of kinds; it does not build
//! remotes (each kind's [`KindConfig::build`] does).
//!
//! The table is `#[serde(tag = "kind")]` in meaning, but dispatched here by hand: serde's
//! internally tagged enums buffer the content and lose the path of an error inside it, and every
//! error must name its key (`remote.part_size`).

use std::path::Path;

use serde::Deserialize;

use super::{BuildError, Built, KindSettings};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDelete {
    Keep,
    Delete,
}

/// The `[remote]` section.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    pub on_delete: OnDelete,
    pub kind: KindSettings,
}

/// What a kind's settings provide beyond their keys. Defaults cover a kind with nothing to do.
pub trait KindConfig {
    /// Checks what types alone cannot: the key (`remote.bucket`) and the reason.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        Ok(())
    }

    /// Files named by the settings, by key: their paths must be ones the kernel can take.
    fn files(&self) -> Vec<(&'static str, &Path)> {
        self.secret_files()
    }

    /// Files named by the settings that hold credentials, by key.
    fn secret_files(&self) -> Vec<(&'static str, &Path)> {
        Vec::new()
    }

    /// The remote, and its health check. Errors name the setting or file, never a secret.
    fn build(&self) -> Result<Built, BuildError>;
}

/// Declares the remote kinds (in `remote/mod.rs`): a kind is its folder and one line there,
/// which declares the folder's module and the kind's arm of [`KindSettings`].
macro_rules! kinds {
    ($($name:literal => $variant:ident($module:ident::$config:ident)),+ $(,)?) => {
        $(pub mod $module;)+

        use config::KindConfig;
        /// The kind-specific part of `[remote]`, chosen by `kind`.
        #[derive(Debug, Clone)]
        pub enum KindSettings {
            $($variant($module::$config)),+
        }

        impl KindSettings {
            /// The values `kind` takes.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            pub fn name(&self) -> &'static str {
                match self {
                    $(KindSettings::$variant(_) => $name),+
                }
            }

            pub fn config(&self) -> &dyn KindConfig {
                match self {
                    $(KindSettings::$variant(c) => c),+
                }
            }

            /// The settings of kind `name` from the rest of the table; errors give the key
            /// inside the table (empty for the table itself) and the reason.
            fn from_value(name: &str, rest: ::config::Value) -> Result<Self, (String, String)> {
                fn typed<T: serde::de::DeserializeOwned>(
                    rest: ::config::Value,
                ) -> Result<T, (String, String)> {
                    serde_path_to_error::deserialize(rest).map_err(|e| {
                        let key = e.path().to_string();
                        (key, e.into_inner().to_string())
                    })
                }
                match name {
                    $($name => typed(rest).map(KindSettings::$variant),)+
                    other => Err((
                        "kind".to_string(),
                        format!(
                            "unknown kind {:?}, expected one of {}",
                            crate::config::shown(other),
                            Self::NAMES.join(", ")
                        ),
                    )),
                }
            }
        }
    };
}

impl RemoteConfig {
    /// From the merged `[remote]` table (defaults, file, environment). Errors give the full key
    /// (`remote.part_size`) and the reason.
    pub fn from_table(
        mut table: ::config::Map<String, ::config::Value>,
    ) -> Result<Self, (String, String)> {
        let field = |key: &str, e: ::config::ConfigError| (format!("remote.{key}"), e.to_string());
        let on_delete = match table.remove("on_delete") {
            Some(value) => value.try_deserialize().map_err(|e| field("on_delete", e))?,
            None => OnDelete::Keep,
        };
        let kind = match table.remove("kind") {
            Some(value) => value.into_string().map_err(|e| field("kind", e))?,
            None => "local".to_string(),
        };
        let rest = ::config::Value::new(None, table);
        let kind = KindSettings::from_value(&kind, rest).map_err(|(key, message)| {
            let key = match key.as_str() {
                "" | "." => "remote".to_string(),
                key => format!("remote.{key}"),
            };
            (key, message)
        })?;
        Ok(RemoteConfig { on_delete, kind })
    }

    pub fn kind_name(&self) -> &'static str {
        self.kind.name()
    }
}

/// The error for a setting a kind requires.
pub fn required(key: &'static str, kind: &str) -> (&'static str, String) {
    (key, format!("is required for remote.kind = \"{kind}\""))
}
