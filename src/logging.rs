//! Log output: human-readable text or one JSON object per line (`--log-format json`), on stderr,
//! filtered by `DROPSLOT_LOG` (tracing's `EnvFilter` syntax, default `info`; the `notify` crate's
//! own messages pass only at error level unless the filter names `notify`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(format: LogFormat) {
    let wanted = std::env::var("DROPSLOT_LOG").unwrap_or_default();
    let mut filter = Some(wanted.trim())
        .filter(|w| !w.is_empty())
        .and_then(|w| EnvFilter::try_new(w).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // notify warns about its own watch bookkeeping when a directory vanishes before the watch
    // of a removed directory is dropped (`WatchNotFound`): once per directory under churn, tens
    // of thousands a minute, and nothing is lost (the watcher logs what matters at debug). Only
    // its errors pass, unless the operator asks for notify's logs by name.
    if !wanted.contains("notify") {
        filter = filter.add_directive("notify=error".parse().expect("a valid directive"));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
