//! The `dropslot` daemon around the pipeline in `dropslot_actors`: configuration, the SQLite
//! ledger, the remote kinds, the wiring of the actors, and the commands. The binary
//! (`src/main.rs`) only parses arguments and maps results to exit codes.

pub mod commands;
pub mod config;
pub mod ledger;
pub mod logging;
pub mod pipeline;
pub mod remote;
pub mod systemd;
pub mod verify;
