//! `kind = "local"`: the target directory. Its overlap checks against the drop folder and the
//! state directory are the configuration's (`config.rs`), which sees all three.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::remote::config::KindConfig;
use crate::remote::{BuildError, Built};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// The target directory.
    #[serde(default = "default_path")]
    pub path: PathBuf,
}

fn default_path() -> PathBuf {
    PathBuf::from("./uploaded")
}

impl KindConfig for LocalConfig {
    fn files(&self) -> Vec<(&'static str, &Path)> {
        vec![("remote.path", &self.path)]
    }

    fn build(&self) -> Result<Built, BuildError> {
        Ok(Built::of(super::LocalRemote::new(self.path.clone())))
    }
}
