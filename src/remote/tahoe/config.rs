//! `kind = "tahoe"`: the gateway and the file holding the target directory's write-cap.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::remote::config::{required, KindConfig};
use crate::remote::{http, BuildError, Built};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TahoeConfig {
    /// The gateway's web API.
    #[serde(default = "default_gateway")]
    pub gateway: String,
    /// A file holding the target directory's write-cap, optionally followed by `/sub/dir`.
    #[serde(default)]
    pub dircap_file: Option<PathBuf>,
    /// A request that makes no progress for this long fails (and is retried).
    #[serde(default = "http::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_gateway() -> String {
    "http://127.0.0.1:3456".into()
}

impl KindConfig for TahoeConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.dircap_file.is_none() {
            return Err(required("remote.dircap_file", "tahoe"));
        }
        reqwest::Url::parse(&self.gateway)
            .map_err(|e| ("remote.gateway", format!("not a URL: {e}")))?;
        Ok(())
    }

    fn secret_files(&self) -> Vec<(&'static str, &Path)> {
        self.dircap_file
            .iter()
            .map(|f| ("remote.dircap_file", f.as_path()))
            .collect()
    }

    fn build(&self) -> Result<Built, BuildError> {
        let remote = super::TahoeRemote::new(self).map_err(BuildError)?;
        let dircap = remote.dircap_secret();
        Ok(Built::of(remote).redacting([dircap]))
    }
}
