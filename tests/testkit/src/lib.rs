//! What the end-to-end tests and the benchmarks share: a temporary drop folder, target and state
//! directory, the real `dropslot` binary started on them, real servers on loopback
//! ([`servers`]), the fault-injecting proxy ([`flaky_proxy`]), and polling with generous deadlines
//! (never fixed sleeps: CI machines are small and busy). A crate of its own, so the benchmarks use
//! it as they use any crate. It owns no assertions about dropslot's behaviour: the tests do.

pub mod flaky_proxy;
pub mod servers;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub const DEADLINE: Duration = Duration::from_secs(120);

pub struct Env {
    pub dir: tempfile::TempDir,
    pub drop: PathBuf,
    pub target: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    /// DROPSLOT_* overrides for this environment.
    pub vars: HashMap<String, String>,
    /// Run dropslot as this user (and group) id instead of the test's.
    pub run_as: Option<u32>,
}

impl Env {
    /// Fast windows so tests finish quickly; tests override with [`Env::set`].
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let drop = dir.path().join("drop");
        let target = dir.path().join("uploaded");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&drop).unwrap();
        let config = dir.path().join("dropslot.toml");
        std::fs::write(
            &config,
            format!(
                "[watch]\npath = {:?}\nrescan_interval = \"0s\"\n[remote]\npath = {:?}\n[state]\ndir = {:?}\n\
                 [debounce]\nquiet = \"150ms\"\n[stability]\nwindow = \"100ms\"\nmax_wait = \"30s\"\n\
                 [upload]\nretry_initial = \"50ms\"\nretry_max = \"200ms\"\n[metrics]\nlog_interval = \"2s\"\n",
                drop, target, state
            ),
        )
        .unwrap();
        Env {
            dir,
            drop,
            target,
            state,
            config,
            vars: HashMap::new(),
            run_as: None,
        }
    }

    /// Sets the log filter (`DROPSLOT_LOG`) for every later run.
    pub fn log_level(&mut self, filter: &str) -> &mut Self {
        self.vars.insert("DROPSLOT_LOG".into(), filter.into());
        self
    }

    /// Sets `DROPSLOT_<SECTION>__<KEY>` for every later run. Choosing another remote kind than
    /// `local` also takes the local target (`remote.path`) out of the file: each kind accepts
    /// its own keys only.
    pub fn set(&mut self, section_key: &str, value: &str) -> &mut Self {
        if section_key == "remote.kind" && value != "local" {
            self.drop_local_target();
        }
        let var = format!("DROPSLOT_{}", section_key.to_uppercase().replace('.', "__"));
        self.vars.insert(var, value.to_string());
        self
    }

    /// Removes the `[remote]` `path` line [`Env::new`] wrote, if it is still there.
    pub fn drop_local_target(&self) {
        let line = format!("\npath = {:?}\n", self.target);
        if let Ok(text) = std::fs::read_to_string(&self.config) {
            if let Some(at) = text.find("[remote]") {
                let (head, tail) = text.split_at(at);
                std::fs::write(
                    &self.config,
                    format!("{head}{}", tail.replacen(&line, "\n", 1)),
                )
                .unwrap();
            }
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(dropslot_binary());
        cmd.args(args)
            .arg("--config")
            .arg(&self.config)
            .current_dir(self.dir.path())
            .env_remove("DROPSLOT_LOG")
            .envs(&self.vars)
            .stdin(Stdio::null());
        if let Some(id) = self.run_as {
            use std::os::unix::process::CommandExt;
            cmd.uid(id).gid(id);
        }
        cmd
    }

    /// `dropslot run --once` to completion (bounded by the deadline).
    pub fn run_once(&self) -> Output {
        self.run_once_within(DEADLINE)
    }

    /// `dropslot run --once`, allowed to take up to `deadline`.
    pub fn run_once_within(&self, deadline: Duration) -> Output {
        let log = self.dir.path().join(format!("once-{}.log", unique()));
        let child = self
            .command(&["--log-format", "json", "run", "--once"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn dropslot");
        let mut daemon = Daemon { child, log };
        let status = daemon.wait_exit(deadline);
        Output {
            status,
            stdout: Vec::new(),
            stderr: std::fs::read(&daemon.log).unwrap_or_default(),
        }
    }

    pub fn spawn(&self) -> Daemon {
        let log = self.dir.path().join(format!("daemon-{}.log", unique()));
        let child = self
            .command(&["--log-format", "json", "run"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn dropslot");
        Daemon { child, log }
    }

    pub fn write(&self, rel: &str, content: &[u8]) -> PathBuf {
        let path = self.drop.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    pub fn ledger(&self) -> dropslot::ledger::SqliteLedger {
        dropslot::ledger::SqliteLedger::open(&self.state.join("ledger.sqlite")).unwrap()
    }

    /// How many times the ledger says `rel` was published (0 if unknown).
    pub fn uploads(&self, rel: impl AsRef<Path>) -> u64 {
        use dropslot_actors::ledger::Ledger;
        self.ledger()
            .lookup(rel.as_ref())
            .unwrap()
            .map_or(0, |e| e.uploads)
    }
}

/// The `dropslot` binary cargo built beside the running test or benchmark (`target/<profile>/`,
/// one directory above the test's own `deps/`): cargo builds a package's binaries before its
/// integration tests and benchmarks, and `CARGO_BIN_EXE_*` exists only in their own crates.
pub fn dropslot_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let binary = profile_dir.join("dropslot");
    assert!(
        binary.is_file(),
        "{} is missing: run the tests through cargo",
        binary.display()
    );
    binary
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

impl Default for Env {
    fn default() -> Self {
        Env::new()
    }
}

/// A running `dropslot run`; killed if the test ends without stopping it.
pub struct Daemon {
    child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// SIGTERM, and panics with the log unless the daemon exits with success.
    pub fn stop_cleanly(self) {
        let log = self.log.clone();
        let status = self.stop();
        if !status.success() {
            let text =
                String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
            let tail: Vec<&str> = text
                .lines()
                .filter(|l| !l.contains(r#""kind":"metrics""#))
                .collect();
            panic!(
                "dropslot exited with {status}; log:\n{}",
                tail[tail.len().saturating_sub(40)..].join("\n")
            );
        }
    }

    /// SIGTERM, then wait for the exit status.
    pub fn stop(mut self) -> ExitStatus {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.wait_exit(DEADLINE)
    }

    fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > deadline {
                let _ = self.child.kill();
                panic!(
                    "dropslot did not exit within {deadline:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` until it holds; panics with `what` (and the daemon log, if any) at the deadline.
pub fn wait_until(what: &str, daemon: Option<&Daemon>, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > DEADLINE {
            let log = daemon.map(Daemon::log_text).unwrap_or_default();
            // Metrics lines repeat every few seconds and would crowd out what went wrong.
            let tail: String = log
                .lines()
                .filter(|l| !l.contains(r#""kind":"metrics""#))
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            panic!("timed out after {DEADLINE:?} waiting for: {what}\nlog tail:\n{tail}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Writes `count` files at `name(i)`, each with its own content; returns them for checking.
pub fn write_tree(
    env: &Env,
    count: usize,
    name: impl Fn(usize) -> String,
) -> Vec<(String, Vec<u8>)> {
    let files: Vec<(String, Vec<u8>)> = (0..count)
        .map(|i| {
            (
                name(i),
                format!("content of file {i}\n")
                    .repeat(i % 40 + 1)
                    .into_bytes(),
            )
        })
        .collect();
    for (rel, content) in &files {
        env.write(rel, content);
    }
    files
}

/// Rewrites `rel` `times` times, about 20 ms apart (a burst far shorter than any quiet window
/// the tests use); returns the final content.
pub fn rewrite_rapidly(env: &Env, rel: &str, times: usize) -> Vec<u8> {
    let mut last = Vec::new();
    for i in 0..times {
        last = format!("version {i}\n").repeat(500).into_bytes();
        env.write(rel, &last);
        std::thread::sleep(Duration::from_millis(20));
    }
    last
}

/// Writes a file of `mib` MiB whose 1 MiB blocks all differ (so a misplaced part shows).
pub fn write_large_file(path: &Path, mib: u32) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    for i in 0..mib {
        f.write_all(&i.to_le_bytes()).unwrap();
        f.write_all(&block[4..]).unwrap();
    }
}

/// Puts a `mib`-MiB file in the drop folder, runs the daemon until it is published, stops it
/// (which must succeed) and returns the file and the daemon's peak RSS in MiB, also printed.
pub fn publish_large_file(env: &Env, mib: u32, how: &str) -> (PathBuf, u64) {
    let path = env.drop.join("big.bin");
    write_large_file(&path, mib);
    let daemon = env.spawn();
    wait_until("large file published", Some(&daemon), || {
        env.uploads("big.bin") == 1
    });
    let peak_rss_mib = daemon.peak_rss_kib() / 1024;
    eprintln!("peak RSS while uploading a {mib} MiB file {how}: {peak_rss_mib} MiB");
    assert!(daemon.stop().success());
    (path, peak_rss_mib)
}

/// Parses the JSON log lines and returns the final `total` summary line.
pub fn summary_total(log: &[u8]) -> serde_json::Value {
    String::from_utf8_lossy(log)
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["kind"] == "summary" && v["actor"] == "total")
        .unwrap_or_else(|| panic!("no summary line in log:\n{}", String::from_utf8_lossy(log)))
}

/// True if the file at `path` exists with exactly `expected` as content.
pub fn has_content(path: &Path, expected: &[u8]) -> bool {
    std::fs::read(path).is_ok_and(|c| c == expected)
}

/// A small seeded generator (xorshift64*), so a fault test's random choices can be replayed
/// from the seed it prints.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `FAULTS_SEED` if set, else from the clock; the seed is printed.
    pub fn from_env(what: &str) -> Rng {
        let seed = std::env::var("FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| unique() as u64 | 1);
        eprintln!("{what}: FAULTS_SEED={seed}");
        Rng(seed)
    }

    pub fn from_seed(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    #[allow(clippy::should_implement_trait)] // an endless generator, not an iterator
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Long ("soak") variants of the fault tests run with `FAULTS_SOAK=1`; CI runs the quick ones.
pub fn soak() -> bool {
    std::env::var_os("FAULTS_SOAK").is_some_and(|v| v != "0")
}

/// Every regular file under `dir`, relative to it, skipping dropslot's own staging names.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}
