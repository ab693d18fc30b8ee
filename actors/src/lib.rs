//! dropslot's upload pipeline as actix actors.
//!
//! This crate owns the pipeline: the messages between the actors ([`messages`]), one module per
//! actor, the per-path table that merges events ([`path_table`]), and the two small traits the
//! pipeline needs from outside: where files go ([`remote::Remote`]) and what was already sent
//! ([`ledger::Ledger`]). It knows nothing of S3, Tahoe, SQLite, configuration files or the CLI:
//! the `dropslot` crate implements the traits and wires the actors together.
//!
//! The flow, one actor per arrow's source:
//! watcher → debouncer → stability checker → (snapshot copier) → upload slots → directory linker.
//! Files whose retries ran out re-enter at the debouncer ([`requeue`]).

pub mod after_publish;
pub mod bandwidth;
pub mod confined;
pub mod debouncer;
pub mod events;
pub mod fileinfo;
pub mod globs;
pub mod ledger;
pub mod linker;
pub mod messages;
pub mod path_table;
pub mod remote;
pub mod requeue;
pub mod retry;
pub mod snapshot;
pub mod stability;
pub mod stats;
pub mod uploader;
pub mod wakeup;
pub mod watcher;
