//! The `dropslot` command line. Parses arguments, sets up logging, runs a command and maps the
//! outcome to an exit code: 0 success, 1 failure, 2 configuration error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dropslot::commands::{self, EXIT_CONFIG, EXIT_FAILED};
use dropslot::logging::{self, LogFormat};

#[derive(Parser)]
#[command(
    version,
    about = "Watches drop folders and uploads every new or changed file through N parallel slots"
)]
struct Cli {
    /// Log lines as text or as JSON objects (one per line), on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// Configuration file (default: ./dropslot.toml, then config/dropslot.toml, then built-in).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Scan, upload everything pending, wait until idle and exit (1 if any file failed).
        #[arg(long)]
        once: bool,
    },
    /// Show published, pending and failed files from the ledger.
    Status {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Validate the configuration and check that the remote is reachable.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Compare the remote with the ledger and the drop folder (the configured folder): missing,
    /// extra and different objects. Exit 0 when equal, 1 otherwise.
    Verify {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also read every published file back and compare its SHA-256 (not only its size).
        #[arg(long)]
        deep: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Mark missing and different files in the ledger so the next `run` uploads them again.
        #[arg(long)]
        repair: bool,
    },
    /// Replace a damaged or lost ledger: keep the old file aside, record every file the remote
    /// already holds with the same content, leave the rest for the next run.
    RebuildLedger {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let (config, command): (Option<PathBuf>, Box<dyn FnOnce(_) -> _>) = match cli.command {
        Command::Run { config, once } => (config, Box::new(move |l| commands::run(l, once))),
        Command::Status { config, json } => (config, Box::new(move |l| commands::status(l, json))),
        Command::Check { config } => (config, Box::new(commands::check)),
        Command::Verify {
            config,
            deep,
            json,
            repair,
        } => (
            config,
            Box::new(move |l| commands::verify(l, deep, json, repair)),
        ),
        Command::RebuildLedger { config } => (config, Box::new(commands::rebuild_ledger)),
    };
    let loaded = match commands::load_config(config) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("dropslot: configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match command(loaded) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("dropslot: error: {e:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}
