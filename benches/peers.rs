//! The benchmark suite: dropslot against the tools users would pick instead (rclone copy, lsyncd
//! with rsync, magic-folder), on the same data, the same servers, in the same run, printing
//! each figure and the ratio. Run it with `benches/run.sh` (installs the peers, then
//! `cargo bench --bench peers -- [--quick] [SCENARIO...]`); `docs/benchmarks.md` has the last
//! full run. Wall times run from the first file appearing in the drop folder to the last one
//! being published; the content is verified by hash afterwards (outside the timing).

use dropslot_testkit as common;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::flaky_proxy::FlakyProxy;
use common::servers::{free_port, Server, TahoeGrid};
use common::{files_under, sha256, Env};

/// Sizes of a run: the issue's full figures, or a short smoke run.
struct Scale {
    small_files: usize,
    large_files: usize,
    large_mib: u32,
    bursts: usize,
    latency_reps: usize,
    slot_files: usize,
    tahoe_files: usize,
    scale_files: usize,
    idle_secs: u64,
}

const FULL: Scale = Scale {
    small_files: 5000,
    large_files: 8,
    large_mib: 128,
    bursts: 5,
    latency_reps: 20,
    slot_files: 1000,
    tahoe_files: 200,
    scale_files: 1_000_000,
    idle_secs: 60,
};

const QUICK: Scale = Scale {
    small_files: 500,
    large_files: 2,
    large_mib: 32,
    bursts: 2,
    latency_reps: 5,
    slot_files: 100,
    tahoe_files: 20,
    scale_files: 10_000,
    idle_secs: 5,
};

/// Concurrency for both sides of every comparison (rclone --transfers, dropslot upload.slots).
const CONCURRENCY: usize = 16;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let scale = if args.iter().any(|a| a == "--quick") {
        &QUICK
    } else {
        &FULL
    };
    let wanted: Vec<u32> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let run = |n: u32| wanted.is_empty() || wanted.contains(&n);
    println!("# dropslot benchmarks ({} cores)\n", num_cores());
    println!("{}\n", versions());
    let scratch = tempfile::tempdir().expect("scratch dir");
    let scratch = scratch.path();
    if run(1) {
        burst_of_small_files(scale, scratch);
    }
    if run(2) {
        large_files(scale, scratch);
    }
    if run(3) {
        rapid_rewrites(scale, scratch);
    }
    if run(4) {
        latency(scale, scratch);
    }
    if run(5) {
        parallel_slots(scale, scratch);
    }
    if run(6) {
        tahoe(scale, scratch);
    }
    if run(7) {
        scale_scan(scale, scratch);
    }
}

// ---------------------------------------------------------------- helpers

/// `BENCH_TARGETS=s3,webdav,local` (default all) limits scenarios 1 and 2 to some targets.
fn target_wanted(kind: &str) -> bool {
    std::env::var("BENCH_TARGETS").map_or(true, |t| t.split(',').any(|k| k == kind))
}

fn num_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn output(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("unavailable ({e})"))
}

fn versions() -> String {
    let first_line = |s: String| s.lines().next().unwrap_or("").to_string();
    let mf = peers_dir().join("mf-venv/bin/magic-folder");
    format!(
        "Versions: dropslot {}, {}, lsyncd {}, {}, nginx {}, magic-folder {}",
        env!("CARGO_PKG_VERSION"),
        first_line(output(Command::new("rclone").arg("version"))),
        output(Command::new("lsyncd").arg("--version")).replace("Version: ", ""),
        first_line(output(Command::new("rsync").arg("--version"))),
        String::from_utf8_lossy(
            &Command::new("/usr/sbin/nginx")
                .arg("-v")
                .output()
                .map(|o| o.stderr)
                .unwrap_or_default()
        )
        .trim()
        .replace("nginx version: ", ""),
        output(Command::new(mf).arg("--version")).replace("Magic Folder version ", ""),
    )
}

fn peers_dir() -> PathBuf {
    std::env::var_os("PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/dropslot-peers")
        })
}

/// `count` files of `size` bytes, different content each, spread over `dirs` directories
/// (two levels) under `root`.
fn make_tree(root: &Path, count: usize, size: usize, dirs: usize) -> Vec<PathBuf> {
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let rel = PathBuf::from(format!("g{}/d{}/f{i}.bin", (i % dirs) / 10, i % dirs));
        let path = root.join(&rel);
        if i < dirs {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        }
        let mut content = vec![0u8; size];
        let seed = sha256(rel.to_string_lossy().as_bytes());
        for (j, b) in content.iter_mut().enumerate() {
            *b = seed[j % 32] ^ (j / 32) as u8;
        }
        std::fs::write(&path, content).unwrap();
        out.push(rel);
    }
    out
}

/// Polls `cond` every `every` until it holds (bounded by `limit`); returns the time it took.
fn time_until(limit: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "gave up after {limit:?}");
        std::thread::sleep(every);
    }
    start.elapsed()
}

/// The same bytes at `rel` under both roots, for every file.
fn verify_dirs(src: &Path, dst: &Path, files: &[PathBuf]) {
    for rel in files {
        let (a, b) = (
            std::fs::read(src.join(rel)).unwrap(),
            std::fs::read(dst.join(rel)),
        );
        assert!(
            b.is_ok_and(|b| sha256(&b) == sha256(&a)),
            "{} differs",
            rel.display()
        );
    }
}

/// Peak RSS (MiB) of a child process from /proc, read just before it is stopped.
fn peak_rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after.split(' ').filter_map(|f| f.parse().ok()).collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the state.
    fields.get(10).copied().unwrap_or(0) + fields.get(11).copied().unwrap_or(0)
}

/// A dropslot environment with the default windows (the tests' helper uses fast ones).
fn dropslot_env(slots: usize) -> Env {
    let mut env = Env::new();
    env.set("debounce.quiet", "300ms")
        .set("stability.window", "200ms")
        .set("stability.max_wait", "10s")
        .set("upload.slots", &slots.to_string())
        .set("metrics.log_interval", "30s");
    env
}

/// Runs a started daemon until the ledger counts `n` published files; returns (wall, peak RSS).
fn until_published(
    env: &Env,
    daemon: &common::Daemon,
    n: usize,
    start: Instant,
) -> (Duration, u64) {
    // One connection for all the polls: opening one runs an integrity check, which would
    // compete with the daemon for the two cores.
    let ledger = env.ledger();
    time_until(Duration::from_secs(3600), Duration::from_millis(20), || {
        ledger.status().is_ok_and(|s| s.published as usize >= n)
    });
    (start.elapsed(), daemon.peak_rss_kib() / 1024)
}

/// rclone with the remote defined by environment variables (`RCLONE_CONFIG_<NAME>_...`).
fn rclone(remote: &[(&str, String)]) -> Command {
    let mut cmd = Command::new("/usr/bin/time");
    cmd.args(["-f", "%e %M", "-o"]);
    cmd.env_remove("AWS_CA_BUNDLE"); // breaks rclone's S3 backend (../shared/crate-notes.md)
    for (k, v) in remote {
        cmd.env(format!("RCLONE_CONFIG_PEER_{}", k.to_uppercase()), v);
    }
    cmd
}

/// `rclone copy SRC DEST --transfers T`: (wall, peak RSS MiB) from GNU time.
fn rclone_copy(
    remote: &[(&str, String)],
    src: &Path,
    dest: &str,
    transfers: usize,
) -> (Duration, u64) {
    let timing = tempfile::NamedTempFile::new().unwrap();
    let status = rclone(remote)
        .arg(timing.path())
        .args([
            "rclone",
            "copy",
            "-q",
            "--transfers",
            &transfers.to_string(),
        ])
        .arg(src)
        .arg(dest)
        .status()
        .expect("rclone (benches/run.sh installs it)");
    assert!(status.success(), "rclone copy failed");
    let text = std::fs::read_to_string(timing.path()).unwrap();
    let mut parts = text.split_whitespace().rev().take(2);
    let rss_kib: u64 = parts.next().unwrap().parse().unwrap();
    let wall: f64 = parts.next().unwrap().parse().unwrap();
    (Duration::from_secs_f64(wall), rss_kib / 1024)
}

/// `rclone check --download`: every byte compared.
fn rclone_verify(remote: &[(&str, String)], src: &Path, dest: &str) {
    let timing = tempfile::NamedTempFile::new().unwrap();
    let status = rclone(remote)
        .arg(timing.path())
        .args(["rclone", "check", "-q", "--one-way", "--download"])
        .arg(src)
        .arg(dest)
        .status()
        .unwrap();
    assert!(status.success(), "rclone check found differences in {dest}");
}

fn s3_remote(server: &Server) -> Vec<(&'static str, String)> {
    vec![
        ("type", "s3".into()),
        ("provider", "Other".into()),
        ("endpoint", server.url()),
        ("access_key_id", "test".into()),
        ("secret_access_key", "test".into()),
        ("force_path_style", "true".into()),
    ]
}

fn webdav_remote(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("type", "webdav".to_string()),
        ("url", url.to_string()),
        ("vendor", "other".into()),
    ]
}

/// `cp -r src dst`.
fn copy_tree(src: &Path, dst: &Path) {
    let status = Command::new("cp")
        .arg("-r")
        .arg(src)
        .arg(dst)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -r {} {}",
        src.display(),
        dst.display()
    );
}

fn use_s3(env: &mut Env, server: &Server, bucket: &str) {
    env.set("remote.kind", "s3")
        .set("remote.endpoint", &server.url())
        .set("remote.bucket", bucket)
        .set("remote.path_style", "true")
        .set("remote.access_key_id", "test")
        .set("remote.secret_access_key", "test");
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ratio(ours: f64, theirs: f64) -> String {
    format!("{:.2}x", ours / theirs)
}

/// Moves a prepared tree into the drop folder (one rename: how a finished batch usually arrives).
fn move_in(tree: &Path, env: &Env) -> Instant {
    let start = Instant::now();
    std::fs::rename(tree, env.drop.join("batch")).unwrap();
    start
}

// ---------------------------------------------------------------- 1. burst of small files

fn burst_of_small_files(scale: &Scale, scratch: &Path) {
    let n = scale.small_files;
    println!(
        "## 1. Burst of small files: {n} x 16 KiB in 50 directories, moved into the drop folder\n"
    );
    println!("| target | dropslot | rclone copy --transfers {CONCURRENCY} | ratio (time) | files/s dropslot / rclone |");
    println!("|---|---|---|---|---|");
    let src = scratch.join("small-src");
    let files = make_tree(&src, n, 16 << 10, 50);
    let files: Vec<PathBuf> = files.iter().map(|f| Path::new("batch").join(f)).collect();
    let rclone_src = scratch.join("small-rclone");
    std::fs::create_dir_all(&rclone_src).unwrap();
    copy_tree(&src, &rclone_src.join("batch"));
    let row = |target: &str, ours: Duration, theirs: Duration| {
        println!(
            "| {target} | {} | {} | {} | {:.0} / {:.0} |",
            secs(ours),
            secs(theirs),
            ratio(ours.as_secs_f64(), theirs.as_secs_f64()),
            n as f64 / ours.as_secs_f64(),
            n as f64 / theirs.as_secs_f64()
        );
    };

    // S3 (moto)
    if let Some(moto) = target_wanted("s3").then(Server::moto).flatten() {
        moto.create_bucket("ours");
        moto.create_bucket("theirs");
        let mut env = dropslot_env(CONCURRENCY);
        use_s3(&mut env, &moto, "ours");
        let daemon = env.spawn();
        let tree = scratch.join("small-s3");
        copy_tree(&src, &tree);
        let start = move_in(&tree, &env);
        let (ours, _) = until_published(&env, &daemon, n, start);
        daemon.stop_cleanly();
        let remote = s3_remote(&moto);
        let (theirs, _) = rclone_copy(&remote, &rclone_src, "peer:theirs", CONCURRENCY);
        rclone_verify(&remote, &env.drop, "peer:ours");
        rclone_verify(&remote, &rclone_src, "peer:theirs");
        row("S3 (moto)", ours, theirs);
    }
    // WebDAV (nginx)
    if let Some(nginx) = target_wanted("webdav")
        .then(|| Server::nginx(None))
        .flatten()
    {
        let mut env = dropslot_env(CONCURRENCY);
        env.set("remote.kind", "webdav")
            .set("remote.url", &format!("{}/ours/", nginx.url()));
        let daemon = env.spawn();
        let tree = scratch.join("small-dav");
        copy_tree(&src, &tree);
        let start = move_in(&tree, &env);
        let (ours, _) = until_published(&env, &daemon, n, start);
        daemon.stop_cleanly();
        let remote = webdav_remote(&nginx.url());
        let (theirs, _) = rclone_copy(&remote, &rclone_src, "peer:theirs", CONCURRENCY);
        let root = nginx.webdav_root();
        verify_dirs(&env.drop, &root.join("ours"), &files);
        verify_dirs(&rclone_src, &root.join("theirs"), &files);
        row("WebDAV (nginx)", ours, theirs);
    }
    // Local directory
    if target_wanted("local") {
        let env = dropslot_env(CONCURRENCY);
        let daemon = env.spawn();
        let tree = scratch.join("small-local");
        copy_tree(&src, &tree);
        let start = move_in(&tree, &env);
        let (ours, _) = until_published(&env, &daemon, n, start);
        daemon.stop_cleanly();
        let dest = scratch.join("small-rclone-dest");
        let (theirs, _) = rclone_copy(&[], &rclone_src, dest.to_str().unwrap(), CONCURRENCY);
        verify_dirs(&env.drop, &env.target, &files);
        verify_dirs(&rclone_src, &dest, &files);
        row("local directory", ours, theirs);
    }
    println!();
    for dir in ["small-src", "small-rclone", "small-rclone-dest"] {
        let _ = std::fs::remove_dir_all(scratch.join(dir));
    }
}

// ---------------------------------------------------------------- 2. large files

fn large_files(scale: &Scale, scratch: &Path) {
    let (n, mib) = (scale.large_files, scale.large_mib);
    println!("## 2. Large files: {n} x {mib} MiB (concurrency {CONCURRENCY} on both sides)\n");
    println!("| target | dropslot MiB/s | rclone MiB/s | ratio | dropslot peak RSS | rclone peak RSS | RSS ratio |");
    println!("|---|---|---|---|---|---|---|");
    let src = scratch.join("large-src/batch");
    std::fs::create_dir_all(&src).unwrap();
    let files: Vec<PathBuf> = (0..n)
        .map(|i| {
            common::write_large_file(&src.join(format!("big{i}.bin")), mib);
            Path::new("batch").join(format!("big{i}.bin"))
        })
        .collect();
    let total = f64::from(mib) * n as f64;
    let row = |target: &str, ours: (Duration, u64), theirs: (Duration, u64)| {
        let (a, b) = (total / ours.0.as_secs_f64(), total / theirs.0.as_secs_f64());
        println!(
            "| {target} | {a:.0} | {b:.0} | {} | {} MiB | {} MiB | {} |",
            ratio(a, b),
            ours.1,
            theirs.1,
            ratio(ours.1 as f64, theirs.1 as f64)
        );
    };
    let run_ours = |env: &Env| {
        let daemon = env.spawn();
        let tree = env.dir.path().join("batch-src");
        copy_tree(&src, &tree);
        let start = move_in(&tree, env);
        let result = until_published(env, &daemon, n, start);
        daemon.stop_cleanly();
        result
    };
    if let Some(moto) = target_wanted("s3").then(Server::moto).flatten() {
        moto.create_bucket("ours");
        moto.create_bucket("theirs");
        let mut env = dropslot_env(CONCURRENCY);
        use_s3(&mut env, &moto, "ours");
        let ours = run_ours(&env);
        let remote = s3_remote(&moto);
        let theirs = rclone_copy(&remote, src.parent().unwrap(), "peer:theirs", CONCURRENCY);
        rclone_verify(&remote, &env.drop, "peer:ours");
        row("S3 (moto)", ours, theirs);
    }
    if let Some(nginx) = target_wanted("webdav")
        .then(|| Server::nginx(None))
        .flatten()
    {
        let mut env = dropslot_env(CONCURRENCY);
        env.set("remote.kind", "webdav")
            .set("remote.url", &format!("{}/ours/", nginx.url()));
        let ours = run_ours(&env);
        let remote = webdav_remote(&nginx.url());
        let theirs = rclone_copy(&remote, src.parent().unwrap(), "peer:theirs", CONCURRENCY);
        verify_dirs(&env.drop, &nginx.webdav_root().join("ours"), &files);
        verify_dirs(
            src.parent().unwrap(),
            &nginx.webdav_root().join("theirs"),
            &files,
        );
        row("WebDAV (nginx)", ours, theirs);
    }
    println!();
    let _ = std::fs::remove_dir_all(scratch.join("large-src"));
}

// ---------------------------------------------------------------- 3. rapid rewrites

/// lsyncd with rsync from `source` to `target`, `delay` seconds.
fn start_lsyncd(dir: &Path, source: &Path, target: &Path, delay: u32) -> Child {
    let conf = dir.join("lsyncd.lua");
    std::fs::create_dir_all(target).unwrap();
    std::fs::write(
        &conf,
        format!(
            "settings {{ nodaemon = true, logfile = {:?}, insist = true }}\n\
             sync {{ default.rsync, source = {:?}, target = {:?}, delay = {delay} }}\n",
            dir.join("lsyncd.log"),
            source,
            target
        ),
    )
    .unwrap();
    let child = Command::new("lsyncd")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("lsyncd (benches/run.sh installs it)");
    // Ready once its start-up rsync has finished (it says so in its log).
    time_until(Duration::from_secs(3600), Duration::from_millis(10), || {
        std::fs::read_to_string(dir.join("lsyncd.log")).is_ok_and(|l| l.contains("Startup of"))
    });
    child
}

fn stop(mut child: Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

/// One burst: `rewrites` rewrites of `path` within about 2 s, each a truncate and 8 chunked
/// writes (a reader in between sees a torn file). Returns the hashes of the complete versions.
fn rewrite_burst(path: &Path, rewrites: usize, burst: usize) -> Vec<[u8; 32]> {
    let mut complete = Vec::new();
    for r in 0..rewrites {
        let content: Vec<u8> = (0..256 << 10)
            .map(|i| ((i / 1024 + r * 7 + burst * 131) % 251) as u8)
            .collect();
        let mut f = std::fs::File::create(path).unwrap();
        for chunk in content.chunks(32 << 10) {
            f.write_all(chunk).unwrap();
            std::thread::sleep(Duration::from_micros(500));
        }
        drop(f);
        complete.push(sha256(&content));
        std::thread::sleep(
            Duration::from_millis(2000 / rewrites as u64).saturating_sub(Duration::from_millis(4)),
        );
    }
    complete
}

/// Watches `target` and records every distinct content seen, until `stop` is set.
fn poll_versions(target: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<[u8; 32]>> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            if let Ok(bytes) = std::fs::read(&target) {
                let h = sha256(&bytes);
                if seen.last() != Some(&h) {
                    seen.push(h);
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        seen
    })
}

/// Runs the bursts against a tool publishing `source/hot.bin` to `target/hot.bin`:
/// (versions published per burst, torn versions seen in total, bursts whose final version
/// never arrived within 30 s).
fn run_bursts(scale: &Scale, source: &Path, target: &Path) -> (Vec<usize>, usize, usize) {
    let (mut per_burst, mut torn, mut stale) = (Vec::new(), 0, 0);
    for burst in 0..scale.bursts {
        let stop = Arc::new(AtomicBool::new(false));
        let poller = poll_versions(target.join("hot.bin"), stop.clone());
        let complete = rewrite_burst(&source.join("hot.bin"), 50, burst);
        let last = *complete.last().unwrap();
        let arrived = Instant::now();
        while !std::fs::read(target.join("hot.bin")).is_ok_and(|b| sha256(&b) == last) {
            if arrived.elapsed() > Duration::from_secs(30) {
                stale += 1; // rsync's quick check can skip a same-size file changed within a second
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Anything late (a second transfer) shows up within a few seconds.
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::SeqCst);
        let seen = poller.join().unwrap();
        let complete: HashSet<_> = complete.into_iter().collect();
        let from_this_burst: Vec<_> = seen.iter().filter(|h| complete.contains(*h)).collect();
        // The first one seen may be the previous burst's final version, which is complete.
        torn += seen
            .iter()
            .skip(1)
            .filter(|h| !complete.contains(*h))
            .count();
        per_burst.push(from_this_burst.len());
    }
    (per_burst, torn, stale)
}

fn rapid_rewrites(scale: &Scale, _scratch: &Path) {
    println!("## 3. Rapid rewrites: one 256 KiB file rewritten 50 times in 2 s (truncate + 8 writes each), {} bursts\n", scale.bursts);
    println!("| tool | versions published per burst | torn copies seen on the target | bursts whose final version arrived |");
    println!("|---|---|---|---|");
    let env = dropslot_env(4);
    let daemon = env.spawn();
    std::fs::write(env.drop.join("hot.bin"), b"start").unwrap();
    time_until(Duration::from_secs(60), Duration::from_millis(10), || {
        env.uploads("hot.bin") == 1
    });
    let (ours, torn, stale) = run_bursts(scale, &env.drop, &env.target);
    let uploads = env.uploads("hot.bin") - 1;
    daemon.stop_cleanly();
    println!(
        "| dropslot (ledger: {uploads} uploads in {} bursts) | {ours:?} | {torn} | {} of {} |",
        scale.bursts,
        scale.bursts - stale,
        scale.bursts
    );

    let dir = tempfile::tempdir().unwrap();
    let (source, target) = (dir.path().join("src"), dir.path().join("dst"));
    std::fs::create_dir_all(&source).unwrap();
    let lsyncd = start_lsyncd(dir.path(), &source, &target, 1);
    let (theirs, torn, stale) = run_bursts(scale, &source, &target);
    stop(lsyncd);
    println!(
        "| lsyncd + rsync (delay = 1) | {theirs:?} | {torn} | {} of {} |\n",
        scale.bursts - stale,
        scale.bursts
    );
}

// ---------------------------------------------------------------- 4. latency

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn latencies(reps: usize, source: &Path, target: &Path) -> Vec<Duration> {
    let mut out: Vec<Duration> = (0..reps)
        .map(|i| {
            let name = format!("lat{i}.txt");
            let start = Instant::now();
            std::fs::write(source.join(&name), format!("latency probe {i}")).unwrap();
            time_until(Duration::from_secs(60), Duration::from_millis(1), || {
                target.join(&name).exists()
            });
            start.elapsed()
        })
        .collect();
    out.sort();
    out
}

fn latency(scale: &Scale, _scratch: &Path) {
    println!(
        "## 4. Latency: one small file, {} times, until readable on the target (local directory)\n",
        scale.latency_reps
    );
    println!("| tool and windows | p50 | p95 | overhead beyond the windows (p50 / p95) |");
    println!("|---|---|---|---|");
    for (quiet, window) in [(300u64, 200u64), (100, 50), (20, 10)] {
        let mut env = dropslot_env(4);
        env.set("debounce.quiet", &format!("{quiet}ms"))
            .set("stability.window", &format!("{window}ms"));
        let daemon = env.spawn();
        time_until(Duration::from_secs(60), Duration::from_millis(10), || {
            daemon.log_text().contains("scan finished")
        });
        let lat = latencies(scale.latency_reps, &env.drop, &env.target);
        daemon.stop_cleanly();
        let windows = Duration::from_millis(quiet + window);
        let (p50, p95) = (percentile(&lat, 0.5), percentile(&lat, 0.95));
        println!(
            "| dropslot quiet {quiet} ms + window {window} ms | {:.0} ms | {:.0} ms | {:.1} ms / {:.1} ms |",
            p50.as_secs_f64() * 1e3,
            p95.as_secs_f64() * 1e3,
            (p50.saturating_sub(windows)).as_secs_f64() * 1e3,
            (p95.saturating_sub(windows)).as_secs_f64() * 1e3
        );
    }
    for delay in [1u32, 0] {
        let dir = tempfile::tempdir().unwrap();
        let (source, target) = (dir.path().join("src"), dir.path().join("dst"));
        std::fs::create_dir_all(&source).unwrap();
        let lsyncd = start_lsyncd(dir.path(), &source, &target, delay);
        let lat = latencies(scale.latency_reps, &source, &target);
        stop(lsyncd);
        println!(
            "| lsyncd + rsync, delay = {delay} s (no stability check) | {:.0} ms | {:.0} ms | {:.1} ms / {:.1} ms |",
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 0.95).as_secs_f64() * 1e3,
            percentile(&lat, 0.5).saturating_sub(Duration::from_secs(delay.into())).as_secs_f64() * 1e3,
            percentile(&lat, 0.95).saturating_sub(Duration::from_secs(delay.into())).as_secs_f64() * 1e3,
        );
    }
    println!();
}

// ---------------------------------------------------------------- 5. parallel slots

fn parallel_slots(scale: &Scale, scratch: &Path) {
    let n = scale.slot_files;
    println!("## 5. Parallel slots: {n} small files to WebDAV (nginx) behind a proxy adding 50 ms per request\n");
    println!("| configuration | time | files/s |");
    println!("|---|---|---|");
    let Some(nginx) = Server::nginx(None) else {
        return;
    };
    let proxy = FlakyProxy::start(&nginx.url(), 0, Duration::ZERO, Duration::from_millis(50));
    let src = scratch.join("slots-src");
    make_tree(&src, n, 4 << 10, 10);
    let mut times = Vec::new();
    for slots in [1usize, 16] {
        let mut env = dropslot_env(slots);
        env.set("remote.kind", "webdav")
            .set("remote.url", &format!("{}/slots{slots}/", proxy.url()));
        let daemon = env.spawn();
        let tree = scratch.join(format!("slots-tree-{slots}"));
        copy_tree(&src, &tree);
        let start = move_in(&tree, &env);
        let (took, _) = until_published(&env, &daemon, n, start);
        daemon.stop_cleanly();
        let files: Vec<PathBuf> = files_under(&env.drop);
        verify_dirs(
            &env.drop,
            &nginx.webdav_root().join(format!("slots{slots}")),
            &files,
        );
        println!(
            "| dropslot, upload.slots = {slots} | {} | {:.1} |",
            secs(took),
            n as f64 / took.as_secs_f64()
        );
        times.push(took);
    }
    let remote = webdav_remote(&proxy.url());
    let (theirs, _) = rclone_copy(&remote, &src, "peer:rclone", CONCURRENCY);
    println!(
        "| rclone copy --transfers 16 (same proxy) | {} | {:.1} |",
        secs(theirs),
        n as f64 / theirs.as_secs_f64()
    );
    println!(
        "\nslots = 16 is {} faster than slots = 1 (target: at least 12x); {} faster than rclone.\n",
        ratio(times[0].as_secs_f64(), times[1].as_secs_f64()),
        ratio(theirs.as_secs_f64(), times[1].as_secs_f64())
    );
}

// ---------------------------------------------------------------- 6. Tahoe

/// magic-folder on the grid's gateway, with `--scan-interval 1`; returns when `count` files
/// are linked in its personal directory and nothing is pending: the time from `drop_files`.
fn magic_folder(grid: &TahoeGrid, count: usize, drop_files: impl FnOnce(&Path)) -> Duration {
    let mf = peers_dir().join("mf-venv/bin/magic-folder");
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("mf-config");
    let folder = work.path().join("folder");
    std::fs::create_dir_all(&folder).unwrap();
    let port = free_port();
    let ok = Command::new(&mf)
        .arg("--config")
        .arg(&config)
        .args([
            "init",
            "--listen-endpoint",
            &format!("tcp:{port}:interface=127.0.0.1"),
            "--node-directory",
        ])
        .arg(grid.dir.path().join("client"))
        .args(["--mailbox", "ws://127.0.0.1:9/v1"])
        .output()
        .expect("magic-folder (benches/run.sh installs it)");
    assert!(
        ok.status.success(),
        "magic-folder init: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // `magic-folder run` exits when its stdin closes: give it a pipe we keep open.
    let mut daemon = Command::new(&mf)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let token = || std::fs::read_to_string(config.join("api_token")).unwrap_or_default();
    let api = |path: &str| {
        output(
            Command::new("curl")
                .args(["-fsS", "-H", &format!("Authorization: Bearer {}", token())])
                .arg(format!("http://127.0.0.1:{port}{path}")),
        )
    };
    time_until(Duration::from_secs(60), Duration::from_millis(200), || {
        api("/v1/magic-folder").starts_with('{')
    });
    let add = Command::new(&mf)
        .arg("--config")
        .arg(&config)
        .args([
            "add",
            "--name",
            "bench",
            "--author",
            "bench",
            "--scan-interval",
            "1",
            "--poll-interval",
            "60",
        ])
        .arg(&folder)
        .output()
        .unwrap();
    assert!(
        add.status.success(),
        "magic-folder add: {}",
        String::from_utf8_lossy(&add.stderr)
    );
    let info: serde_json::Value =
        serde_json::from_str(&api("/v1/magic-folder?include_secret_information=1")).unwrap();
    let upload_dircap = info["bench"]["upload_dircap"].as_str().unwrap().to_string();
    let start = Instant::now();
    drop_files(&folder);
    time_until(
        Duration::from_secs(1800),
        Duration::from_millis(500),
        || {
            let listing: serde_json::Value = serde_json::from_str(&grid.curl(&[&format!(
                "{}/uri/{}?t=json",
                grid.gateway.url(),
                upload_dircap
            )]))
            .unwrap_or_default();
            let linked = listing[1]["children"]
                .as_object()
                .map_or(0, |c| c.keys().filter(|k| *k != "@metadata").count());
            let pending: serde_json::Value =
                serde_json::from_str(&api("/v1/snapshot")).unwrap_or_default();
            linked >= count && pending["bench"].as_object().is_none_or(|p| p.is_empty())
        },
    );
    // Measured like dropslot's figure: from the first file written to the last one linked.
    let took = start.elapsed();
    let _ = daemon.kill();
    let _ = daemon.wait();
    took
}

fn tahoe(scale: &Scale, _scratch: &Path) {
    let n = scale.tahoe_files;
    println!("## 6. Tahoe-LAFS: {n} files of 16 KiB into a Tahoe directory (one local grid, 1-of-1 encoding)\n");
    println!("| tool | time | files/s |");
    println!("|---|---|---|");
    let Some(grid) = TahoeGrid::start() else {
        return;
    };
    let write = |dir: &Path| {
        for i in 0..n {
            let content: Vec<u8> = (0..16 << 10)
                .map(|j| ((i * 31 + j * 7) % 253) as u8)
                .collect();
            std::fs::write(dir.join(format!("drop{i:04}.bin")), content).unwrap();
        }
    };
    let mut env = dropslot_env(8);
    let dircap_file = env.dir.path().join("dircap");
    std::fs::write(&dircap_file, format!("{}/ours\n", grid.dircap)).unwrap();
    env.set("remote.kind", "tahoe")
        .set("remote.gateway", &grid.gateway.url())
        .set("remote.dircap_file", &dircap_file.display().to_string());
    let daemon = env.spawn();
    let start = Instant::now();
    write(&env.drop);
    let (ours, _) = until_published(&env, &daemon, n, start);
    daemon.stop_cleanly();
    for i in (0..n).step_by(17) {
        let name = format!("drop{i:04}.bin");
        let remote = grid.download(&format!("ours/{name}")).expect("on the grid");
        assert_eq!(
            sha256(&remote),
            sha256(&std::fs::read(env.drop.join(&name)).unwrap())
        );
    }
    println!(
        "| dropslot (8 slots, batch linking) | {} | {:.1} |",
        secs(ours),
        n as f64 / ours.as_secs_f64()
    );
    let theirs = magic_folder(&grid, n, write);
    println!(
        "| magic-folder 24.3.0, --scan-interval 1 | {} | {:.1} |",
        secs(theirs),
        n as f64 / theirs.as_secs_f64()
    );
    println!(
        "\ndropslot is {} faster (target: at least 20x).\n",
        ratio(theirs.as_secs_f64(), ours.as_secs_f64())
    );
}

// ---------------------------------------------------------------- 7. scale

fn scale_scan(scale: &Scale, _scratch: &Path) {
    let n = scale.scale_files;
    println!("## 7. Scale: {n} small files already published (in the ledger), daemon start-up and idle\n");
    let env = dropslot_env(8);
    let made = Instant::now();
    // 1,000 files per directory, 4 bytes each.
    for i in 0..n {
        let dir = env.drop.join(format!("d{:04}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        std::fs::write(dir.join(format!("{i}")), (i as u32).to_le_bytes()).unwrap();
    }
    // Published = copied to the target and recorded, the way `rebuild-ledger` records a tree
    // the remote already holds (hard links: same content, no copy).
    let linked = Command::new("cp")
        .args(["-al"])
        .arg(&env.drop)
        .arg(&env.target)
        .status()
        .unwrap();
    assert!(linked.success());
    let rebuilt = env.command(&["rebuild-ledger"]).output().unwrap();
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    assert_eq!(env.ledger().status().unwrap().published as usize, n);
    eprintln!(
        "tree of {n} files made and recorded in {:.0} s",
        made.elapsed().as_secs_f64()
    );

    let daemon = env.spawn();
    let scan = time_until(Duration::from_secs(3600), Duration::from_millis(20), || {
        daemon.log_text().contains("scan finished")
    });
    let log = daemon.log_text();
    let uploads = env.ledger().status().unwrap().published as usize;
    let pid = daemon.pid();
    let rss = daemon.peak_rss_kib() / 1024;
    // Idle: nothing changes; CPU time used over the period.
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(scale.idle_secs));
    let idle_ticks = cpu_ticks(pid) - before;
    daemon.stop_cleanly();
    assert_eq!(uploads, n);
    let scanned = log
        .lines()
        .find(|l| l.contains("scan finished"))
        .unwrap_or("")
        .to_string();
    println!("| figure | dropslot | target |");
    println!("|---|---|---|");
    println!(
        "| start-up scan (start to `scan finished`) | {} | at most 60 s |",
        secs(scan)
    );
    println!("| peak RSS after the scan | {rss} MiB | at most 300 MiB |");
    println!(
        "| CPU while idle for {} s | {idle_ticks} clock ticks ({:.2} s) | about 0 |",
        scale.idle_secs,
        idle_ticks as f64 / 100.0
    );
    println!("\n(`{}`)\n", scanned.chars().take(200).collect::<String>());

    // Peer: lsyncd starting on the same unchanged tree (its start-up is a full rsync).
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let lsyncd = start_lsyncd(dir.path(), &env.drop, &env.target, 1);
    let theirs = start.elapsed();
    let rss_theirs = peak_rss_mib(lsyncd.id());
    stop(lsyncd);
    println!(
        "lsyncd + rsync start-up on the same tree (watches + full rsync): {} ({} dropslot's), lsyncd's own peak RSS {rss_theirs} MiB (rsync's not counted)\n",
        secs(theirs),
        ratio(theirs.as_secs_f64(), scan.as_secs_f64())
    );
}
