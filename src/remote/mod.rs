//! The remote kinds, each behind [`dropslot_actors::remote::Remote`], and the one function that
//! builds the configured one. Owns nothing else: retries and bookkeeping are the pipeline's.

pub mod local;

use std::sync::Arc;

use dropslot_actors::remote::Remote;

use crate::config::{RemoteConfig, RemoteKind};

pub fn build(config: &RemoteConfig) -> Arc<dyn Remote> {
    match config.kind {
        RemoteKind::Local => Arc::new(local::LocalRemote::new(config.path.clone())),
    }
}
