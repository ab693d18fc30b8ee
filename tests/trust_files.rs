//! Trust, the file side (issue "Trust"): only complete files from inside the drop folder reach
//! the remote. Real producers (rsync --inplace, scp through sshd on loopback, curl from a local
//! HTTP server, mv and ln), the real binary, real inotify, the local remote.
//!
//! Each test prints `FIGURE` lines with what it measured.

use dropslot_testkit as common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{files_under, sha256, wait_until, Env};
use dropslot_actors::ledger::Ledger;

fn have(program: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found && std::env::var_os("DROPSLOT_REQUIRE_SERVERS").is_some() {
        panic!("{program} is required (scripts/test-servers.sh installs it)");
    }
    if !found {
        eprintln!("SKIPPED: {program} is not installed");
    }
    found
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Bytes of the given size where every 4 KiB block names the version, so a mix of two versions
/// is visible at a glance.
fn version_bytes(version: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| if i % 4096 == 0 { b'\n' } else { b'a' + version })
        .collect()
}

/// Reads the remote copy of `rel` every few milliseconds while `busy` holds, and returns every
/// distinct content hash seen.
fn watch_remote(
    path: PathBuf,
    busy: Arc<AtomicBool>,
) -> std::thread::JoinHandle<BTreeSet<[u8; 32]>> {
    std::thread::spawn(move || {
        let mut seen = BTreeSet::new();
        while busy.load(Ordering::SeqCst) {
            if let Ok(bytes) = std::fs::read(&path) {
                seen.insert(sha256(&bytes));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        seen
    })
}

fn published_hash(env: &Env, rel: &str) -> Option<[u8; 32]> {
    env.ledger()
        .lookup(Path::new(rel))
        .unwrap()
        .and_then(|e| e.sha256)
}

/// A published file rewritten in place by a slow writer (rsync --inplace, scp) is shown on the
/// remote as the old version until the new one is complete, never as a mix of both.
fn rewrite_in_place_is_never_torn(what: &str, rewrite: impl FnOnce(&Path, &Path)) {
    let env = Env::new();
    let rel = "f.bin";
    let (v1, v2) = (version_bytes(1, 2 << 20), version_bytes(2, 2 << 20));
    env.write(rel, &v1);
    // A short max_wait: before the fix, the copy taken once it ran out was published mid-write.
    let mut env = env;
    env.set("stability.max_wait", "1s");
    let daemon = env.spawn();
    wait_until("v1 published", Some(&daemon), || {
        published_hash(&env, rel) == Some(sha256(&v1))
    });
    let busy = Arc::new(AtomicBool::new(true));
    let watcher = watch_remote(env.target.join(rel), busy.clone());
    let source = env.dir.path().join("v2.bin");
    std::fs::write(&source, &v2).unwrap();
    let started = Instant::now();
    rewrite(&source, &env.drop.join(rel));
    let took = started.elapsed();
    wait_until("v2 published", Some(&daemon), || {
        published_hash(&env, rel) == Some(sha256(&v2))
    });
    busy.store(false, Ordering::SeqCst);
    let seen = watcher.join().unwrap();
    daemon.stop_cleanly();
    let torn = seen
        .iter()
        .filter(|h| **h != sha256(&v1) && **h != sha256(&v2))
        .count();
    println!(
        "FIGURE {what}: rewrite took {:.1} s, {} distinct remote contents seen, {torn} torn",
        took.as_secs_f64(),
        seen.len()
    );
    assert_eq!(torn, 0, "{what}: the remote showed a mix of two versions");
    assert_eq!(env.uploads(rel), 2, "{what}: published once per version");
}

#[test]
fn rsync_inplace_rewrite_never_shows_a_torn_file() {
    if !have("rsync") {
        return;
    }
    rewrite_in_place_is_never_torn("rsync --inplace --bwlimit=200", |src, dest| {
        run(Command::new("rsync")
            .args(["-I", "--inplace", "--bwlimit=200"])
            .arg(src)
            .arg(dest));
    });
}

/// An sshd on a loopback port with a throw-away host key, accepting the test's own key for the
/// user running the test.
struct Sshd {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Sshd {
    fn start() -> Option<Sshd> {
        if !have("/usr/sbin/sshd") || !have("ssh-keygen") || !have("scp") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for key in ["host", "client"] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join(key)));
        }
        std::fs::copy(d.join("client.pub"), d.join("authorized_keys")).unwrap();
        let port = common::servers::free_port();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {host}\nAuthorizedKeysFile {keys}\n\
                 PasswordAuthentication no\nPermitRootLogin prohibit-password\nStrictModes no\n\
                 UsePAM no\nPidFile none\nSubsystem sftp internal-sftp\n",
                host = d.join("host").display(),
                keys = d.join("authorized_keys").display(),
            ),
        )
        .unwrap();
        // sshd insists on its privilege-separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
            .spawn()
            .expect("spawn sshd");
        let sshd = Sshd { child, port, dir };
        wait_until("sshd listening", None, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Some(sshd)
    }

    fn scp(&self, limit_kbit: u32, src: &Path, dest: &Path) {
        let d = self.dir.path();
        run(Command::new("scp")
            .args([
                "-q",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .arg("-i")
            .arg(d.join("client"))
            .args(["-P", &self.port.to_string(), "-l", &limit_kbit.to_string()])
            .arg(src)
            .arg(format!("{}@127.0.0.1:{}", whoami(), dest.display())));
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn scp_over_a_published_file_never_shows_a_torn_file() {
    let Some(sshd) = Sshd::start() else { return };
    rewrite_in_place_is_never_torn("scp -l 1600 through sshd", |src, dest| {
        sshd.scp(1600, src, dest);
    });
}

/// A download in progress is held open by its writer: it is not published under its temporary
/// name even when the name is in no ignore list, and the finished file is published once.
#[test]
fn a_download_in_progress_is_never_published_under_its_temporary_name() {
    if !have("curl") {
        return;
    }
    let served = tempfile::tempdir().unwrap();
    let body = version_bytes(3, 4 << 20);
    std::fs::write(served.path().join("big.bin"), &body).unwrap();
    let port = common::servers::free_port();
    // A local server that sends the file slowly by itself (64 KiB every 50 ms, about 3 s), so the
    // download is in progress for a while however fast or busy the machine is.
    let server = format!(
        "import http.server, time\n\
         body = open('big.bin', 'rb').read()\n\
         class Slow(http.server.BaseHTTPRequestHandler):\n\
         \x20   def do_GET(self):\n\
         \x20       self.send_response(200)\n\
         \x20       self.send_header('Content-Length', str(len(body)))\n\
         \x20       self.end_headers()\n\
         \x20       for i in range(0, len(body), 65536):\n\
         \x20           self.wfile.write(body[i:i + 65536])\n\
         \x20           self.wfile.flush()\n\
         \x20           time.sleep(0.05)\n\
         http.server.HTTPServer(('127.0.0.1', {port}), Slow).serve_forever()\n"
    );
    let mut http = Command::new("python3")
        .args(["-c", &server])
        .current_dir(served.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    wait_until("http server listening", None, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let mut env = Env::new();
    env.set("stability.max_wait", "1s");
    let daemon = env.spawn();
    // Not a name any ignore list holds: only "held open by its writer" keeps it off the remote.
    let temp = env.drop.join("big.bin.in-progress");
    let started = Instant::now();
    run(Command::new("curl")
        .args(["-sf", "-o"])
        .arg(&temp)
        .arg(format!("http://127.0.0.1:{port}/big.bin")));
    let took = started.elapsed();
    std::fs::rename(&temp, env.drop.join("big.bin")).unwrap();
    wait_until("download published", Some(&daemon), || {
        published_hash(&env, "big.bin") == Some(sha256(&body))
    });
    let log = daemon.log_text();
    daemon.stop_cleanly();
    let _ = http.kill();
    let _ = http.wait();
    let temp_published = env.uploads("big.bin.in-progress");
    println!(
        "FIGURE curl from a slow local server: {:.1} s download, temporary name published {temp_published} times, final published {} time(s)",
        took.as_secs_f64(),
        env.uploads("big.bin")
    );
    assert_eq!(temp_published, 0);
    assert!(!env.target.join("big.bin.in-progress").exists());
    assert!(
        log.contains("waiting for it to close"),
        "the wait for the writer is logged"
    );
}

/// A file held open and rewritten waits for its writer; `status` says so meanwhile.
#[test]
fn status_shows_a_file_waiting_for_its_writer() {
    let mut env = Env::new();
    env.set("stability.max_wait", "500ms");
    let daemon = env.spawn();
    let path = env.drop.join("held.dat");
    let mut writer = std::fs::File::create(&path).unwrap();
    writer.write_all(b"first half ").unwrap();
    writer.flush().unwrap();
    wait_until("status lists the file as waiting", Some(&daemon), || {
        let out = env.command(&["status", "--json"]).output().unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        report["waiting_for_writer"]
            .as_array()
            .is_some_and(|w| w.iter().any(|p| p == "held.dat"))
    });
    let text = env.command(&["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains("waiting for a writer to close: 1") && text.contains("held.dat"),
        "{text}"
    );
    assert_eq!(
        env.uploads("held.dat"),
        0,
        "nothing published while held open"
    );
    writer.write_all(b"second half").unwrap();
    drop(writer);
    wait_until("published after the close", Some(&daemon), || {
        published_hash(&env, "held.dat") == Some(sha256(b"first half second half"))
    });
    let out = env.command(&["status", "--json"]).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    daemon.stop_cleanly();
    assert_eq!(report["waiting_for_writer"], serde_json::json!([]));
    assert_eq!(env.uploads("held.dat"), 1);
    println!(
        "FIGURE held open: 0 publishes while open, 1 after the close, status listed it meanwhile"
    );
}

/// A log held open and appended to every 20 ms is published about every max_wait as a prefix of
/// complete lines, and the snapshot area stays within its budget.
#[test]
fn a_log_growing_while_held_open_is_published_as_prefixes_of_whole_lines() {
    let mut env = Env::new();
    env.set("stability.max_wait", "1s")
        .set("snapshot.max_size", "64MiB");
    let daemon = env.spawn();
    let path = env.drop.join("app.log");
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (path, stop, written) = (path.clone(), stop.clone(), written.clone());
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(&path).unwrap();
            let mut content = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                // 64 KiB per 20 ms, written in two pieces so a snapshot can land mid-line.
                let line = format!("line {n} {}\n", "x".repeat(64 * 1024 - 20));
                let (a, b) = line.as_bytes().split_at(line.len() / 2);
                file.write_all(a).unwrap();
                std::thread::sleep(Duration::from_millis(10));
                file.write_all(b).unwrap();
                content.extend_from_slice(line.as_bytes());
                written.store(content.len() as u64, Ordering::SeqCst);
                n += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            content
        })
    };
    let snapshots = env.state.join("snapshots");
    let mut max_area = 0u64;
    let mut prefixes_seen = BTreeSet::new();
    let started = Instant::now();
    wait_until(
        "three versions published while the log grows",
        Some(&daemon),
        || {
            max_area = max_area.max(
                files_under(&snapshots)
                    .iter()
                    .map(|f| snapshots.join(f).metadata().map_or(0, |m| m.len()))
                    .sum(),
            );
            if let Ok(bytes) = std::fs::read(env.target.join("app.log")) {
                prefixes_seen.insert((bytes.len(), sha256(&bytes), bytes.last() == Some(&b'\n')));
            }
            env.uploads("app.log") >= 3
        },
    );
    let during = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let content = writer.join().unwrap();
    wait_until(
        "the final log published after the close",
        Some(&daemon),
        || published_hash(&env, "app.log") == Some(sha256(&content)),
    );
    daemon.stop_cleanly();
    for (len, hash, ends_with_newline) in &prefixes_seen {
        assert!(*ends_with_newline, "a published version ends mid-line");
        assert_eq!(
            *hash,
            sha256(&content[..*len]),
            "a published version is not a prefix"
        );
    }
    println!(
        "FIGURE log held open, 64 KiB per 20 ms: 3 versions published in {:.1} s of growth ({} distinct prefixes read back, all whole lines), final {} MiB, snapshot area peak {:.1} MiB",
        during.as_secs_f64(),
        prefixes_seen.len(),
        content.len() >> 20,
        max_area as f64 / (1 << 20) as f64
    );
    assert!(max_area <= 64 << 20);
}

/// A directory swapped for a link to outside the drop folder, again and again for a minute, while
/// rescans and uploads run: not one byte from outside is published.
#[test]
fn symlink_swaps_for_a_minute_publish_nothing_from_outside() {
    let mut env = Env::new();
    env.set("watch.rescan_interval", "1s");
    let outside = env.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    for i in 0..20 {
        std::fs::write(
            outside.join(format!("f{i}")),
            format!("OUTSIDE-SECRET {i}\n"),
        )
        .unwrap();
    }
    std::fs::write(outside.join("passwd"), "OUTSIDE-SECRET passwd\n").unwrap();
    // The report's first case: a directory swapped for a link while its file's event is still
    // being debounced (before the fix, the outside file was published in its place).
    env.write("e/first", b"inside first\n");
    let daemon = env.spawn();
    // Every published file is read back all along: an outside file published and later
    // overwritten still counts.
    let busy = Arc::new(AtomicBool::new(true));
    let seen_outside = {
        let (target, busy) = (env.target.clone(), busy.clone());
        std::thread::spawn(move || {
            let mut outside = BTreeSet::new();
            while busy.load(Ordering::SeqCst) {
                for f in files_under(&target) {
                    if std::fs::read(target.join(&f))
                        .is_ok_and(|b| b.windows(14).any(|w| w == b"OUTSIDE-SECRET"))
                    {
                        outside.insert(f);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            outside
        })
    };
    wait_until(
        "e watched and its first file published",
        Some(&daemon),
        || env.target.join("e/first").exists(),
    );
    env.write("e/passwd", b"inside passwd\n");
    let e = env.drop.join("e");
    let real = env.drop.join("e.real");
    std::fs::rename(&e, &real).unwrap();
    std::os::unix::fs::symlink(&outside, &e).unwrap();
    wait_until("e/passwd looked at through the link", Some(&daemon), || {
        daemon
            .log_text()
            .contains("a directory in its path is a symbolic link")
            || env.target.join("e/passwd").exists()
    });

    let duration = if common::soak() {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(60)
    };
    let started = Instant::now();
    let mut swaps = 0u64;
    let mut rng = common::Rng::from_env("symlink swaps");
    while started.elapsed() < duration {
        // The link in place, long enough at times for a whole debounce and stability round.
        std::thread::sleep(Duration::from_millis(rng.below(200)));
        std::fs::remove_file(&e).unwrap();
        std::fs::rename(&real, &e).unwrap();
        let i = rng.below(20);
        std::fs::write(e.join(format!("f{i}")), format!("inside {swaps}\n")).unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(50)));
        std::fs::rename(&e, &real).unwrap();
        std::os::unix::fs::symlink(&outside, &e).unwrap();
        swaps += 1;
    }
    std::fs::remove_file(&e).unwrap();
    std::fs::rename(&real, &e).unwrap();
    wait_until("the real directory published", Some(&daemon), || {
        common::has_content(&env.target.join("e/passwd"), b"inside passwd\n")
    });
    let log = daemon.log_text();
    daemon.stop_cleanly();
    busy.store(false, Ordering::SeqCst);
    let outside = seen_outside.join().unwrap();
    let published = files_under(&env.target);
    let skips = log
        .matches("a directory in its path is a symbolic link")
        .count();
    println!(
        "FIGURE symlink swaps: {swaps} swaps in {:.0} s, {} files published, {skips} paths refused as through a link, {} remote files ever held outside content",
        duration.as_secs_f64(),
        published.len(),
        outside.len()
    );
    assert!(
        outside.is_empty(),
        "content from outside the drop folder was published: {outside:?}"
    );
    assert_eq!(
        std::fs::read(env.target.join("e/passwd")).unwrap(),
        b"inside passwd\n"
    );
}
