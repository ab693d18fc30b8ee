//! `kind = "webdav"`: the collection URL and the credentials, with their checks.

use std::time::Duration;

use serde::Deserialize;

use crate::config::Secret;
use crate::remote::config::{required, KindConfig};
use crate::remote::{http, BuildError, Built};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebdavConfig {
    /// The base URL (a collection).
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// A request that makes no progress for this long fails (and is retried).
    #[serde(default = "http::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl KindConfig for WebdavConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.url.is_empty() {
            return Err(required("remote.url", "webdav"));
        }
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| ("remote.url", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(("remote.url", "must be an http:// or https:// URL".into()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            // URLs end up in error messages; credentials must not.
            return Err((
                "remote.url",
                "must not contain credentials: use remote.username and remote.password".into(),
            ));
        }
        if self.password.is_some() && self.username.is_none() {
            return Err((
                "remote.username",
                "is required when remote.password is set".into(),
            ));
        }
        Ok(())
    }

    fn build(&self) -> Result<Built, BuildError> {
        let remote = super::WebDavRemote::new(self).map_err(BuildError)?;
        let secrets = self.password.iter().map(|p| p.expose().to_string());
        Ok(Built::of(remote).redacting(secrets))
    }
}
