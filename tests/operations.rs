//! Running dropslot in production, end to end with the real binary: the upload bandwidth limit
//! against the local remote and nginx WebDAV on loopback, and the systemd notify protocol (a
//! test socket stands in for systemd, which tests cannot run under) and unit file.

use dropslot_testkit as common;

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::servers::Server;
use common::*;

const MIB: u64 = 1 << 20;
const LIMIT_MIB: u64 = 4;
const FILE_MIB: u32 = 24;

/// Drops a `FILE_MIB` file, starts the daemon and returns the seconds from the slot's first
/// chunk ("upload started", logged as the stream is handed to the remote) to the ledger's
/// publish, polled every 50 ms (under 1% of the times measured under the limit).
fn timed_upload(env: &mut Env, how: &str) -> f64 {
    env.log_level("info,dropslot_actors::uploader=debug");
    write_large_file(&env.drop.join("big.bin"), FILE_MIB);
    let daemon = env.spawn();
    wait_until("the upload starts", Some(&daemon), || {
        daemon.log_text().contains("upload started")
    });
    let started = Instant::now();
    wait_until("the large file is published", Some(&daemon), || {
        env.uploads("big.bin") == 1
    });
    let secs = started.elapsed().as_secs_f64();
    daemon.stop_cleanly();
    let rate = FILE_MIB as f64 / secs;
    println!("FIGURE bandwidth {how}: {FILE_MIB} MiB in {secs:.2} s = {rate:.2} MiB/s");
    secs
}

/// Asserts the limited run's average is within 15% of the limit and the unlimited one is at
/// least twice as fast.
fn assert_limited(limited_secs: f64, unlimited_secs: f64) {
    let rate = FILE_MIB as f64 / limited_secs;
    let off = (rate / LIMIT_MIB as f64 - 1.0).abs();
    assert!(
        off <= 0.15,
        "average {rate:.2} MiB/s is {:.0}% off the {LIMIT_MIB} MiB/s limit",
        off * 100.0
    );
    assert!(
        unlimited_secs * 2.0 < limited_secs,
        "unlimited ({unlimited_secs:.2} s) is not much faster than limited ({limited_secs:.2} s)"
    );
}

#[test]
fn bandwidth_limit_holds_the_average_rate_to_the_local_remote() {
    let mut env = Env::new();
    env.set("upload.bandwidth_limit", &format!("{LIMIT_MIB}MiB"));
    let limited = timed_upload(&mut env, "local, limit 4 MiB/s");
    let published = std::fs::read(env.target.join("big.bin")).unwrap();
    assert_eq!(published.len() as u64, FILE_MIB as u64 * MIB);
    assert_eq!(
        sha256(&published),
        sha256(&std::fs::read(env.drop.join("big.bin")).unwrap())
    );

    let mut env = Env::new();
    let unlimited = timed_upload(&mut env, "local, unlimited");
    assert_limited(limited, unlimited);
}

#[test]
fn bandwidth_limit_is_shared_by_the_slots() {
    let mut env = Env::new();
    env.set("upload.bandwidth_limit", &format!("{LIMIT_MIB}MiB"))
        .set("upload.slots", "4")
        .log_level("info,dropslot_actors::uploader=debug");
    let names = ["a.bin", "b.bin", "c.bin"];
    for name in names {
        write_large_file(&env.drop.join(name), FILE_MIB / 3);
    }
    let daemon = env.spawn();
    wait_until("the first upload starts", Some(&daemon), || {
        daemon.log_text().contains("upload started")
    });
    let started = Instant::now();
    // Uploads started when the first file was published: all three ran side by side.
    let mut concurrent = None;
    wait_until("all three files are published", Some(&daemon), || {
        let done = names.iter().filter(|n| env.uploads(n) == 1).count();
        if done > 0 && concurrent.is_none() {
            concurrent = Some(daemon.log_text().matches("upload started").count());
        }
        done == names.len()
    });
    let secs = started.elapsed().as_secs_f64();
    let concurrent = concurrent.unwrap();
    daemon.stop_cleanly();
    let rate = FILE_MIB as f64 / secs;
    println!(
        "FIGURE bandwidth shared: 3 files of {} MiB side by side ({concurrent} started before the first was published) in {secs:.2} s = {rate:.2} MiB/s in all (limit {LIMIT_MIB} MiB/s)",
        FILE_MIB / 3
    );
    assert_eq!(concurrent, 3);
    let off = (rate / LIMIT_MIB as f64 - 1.0).abs();
    assert!(
        off <= 0.15,
        "{rate:.2} MiB/s in all, {:.0}% off the limit",
        off * 100.0
    );
}

#[test]
fn bandwidth_limit_holds_the_average_rate_to_webdav() {
    let Some(server) = Server::nginx(None) else {
        return;
    };
    let use_webdav = |env: &mut Env| {
        env.set("remote.kind", "webdav")
            .set("remote.url", &format!("{}/drops/", server.url()));
    };
    let mut env = Env::new();
    use_webdav(&mut env);
    // Several slots share the one bucket: a second file alongside would halve each one's rate,
    // but the total still holds; one file keeps the measurement simple.
    env.set("upload.bandwidth_limit", &format!("{LIMIT_MIB}MiB"))
        .set("upload.slots", "4");
    let limited = timed_upload(&mut env, "webdav, limit 4 MiB/s");
    assert_eq!(
        server.webdav_get("big.bin", None).map(|b| b.len() as u64),
        Some(FILE_MIB as u64 * MIB)
    );

    let mut env = Env::new();
    use_webdav(&mut env);
    let unlimited = timed_upload(&mut env, "webdav, unlimited");
    assert_limited(limited, unlimited);
}

/// What a `NOTIFY_SOCKET` received, with when.
type Received = Arc<Mutex<Vec<(Instant, String)>>>;

/// Binds a datagram socket where systemd's would be and collects every message in a thread.
fn notify_socket(dir: &std::path::Path) -> (std::path::PathBuf, Received) {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let received: Received = Arc::default();
    let sink = received.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            for line in text.lines() {
                sink.lock().unwrap().push((Instant::now(), line.to_owned()));
            }
        }
    });
    (path, received)
}

fn count(received: &Received, prefix: &str) -> usize {
    let lines = received.lock().unwrap();
    lines.iter().filter(|(_, l)| l.starts_with(prefix)).count()
}

#[test]
fn daemon_speaks_the_systemd_notify_protocol() {
    let mut env = Env::new();
    let (socket, received) = notify_socket(env.dir.path());
    // A 1 s watchdog: pings every half of it.
    env.vars
        .insert("NOTIFY_SOCKET".into(), socket.display().to_string());
    env.vars.insert("WATCHDOG_USEC".into(), "1000000".into());
    let spawned = Instant::now();
    let daemon = env.spawn();
    wait_until("READY=1", Some(&daemon), || {
        count(&received, "READY=1") == 1
    });
    let ready_after = spawned.elapsed();
    assert!(
        daemon.log_text().contains("remote health check passed"),
        "READY=1 before the start-up health check"
    );
    env.write("hello.txt", b"hello");
    wait_until("a STATUS= with the publish", Some(&daemon), || {
        received
            .lock()
            .unwrap()
            .iter()
            .any(|(_, l)| l.starts_with("STATUS=published 1,"))
    });
    wait_until("five watchdog pings", Some(&daemon), || {
        count(&received, "WATCHDOG=1") >= 5
    });
    let pings: Vec<Instant> = received
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, l)| l == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .collect();
    let gaps: Vec<f64> = pings
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    let max_gap = gaps.iter().cloned().fold(0.0, f64::max);
    assert!(
        max_gap < 1.0,
        "a watchdog ping came {max_gap:.2} s after the previous one (timeout 1 s)"
    );
    assert_eq!(count(&received, "STOPPING=1"), 0);
    daemon.stop_cleanly();
    // The receiver thread may take a moment to see the last datagram.
    wait_until("STOPPING=1", None, || count(&received, "STOPPING=1") == 1);
    let statuses = count(&received, "STATUS=");
    let last_status = received
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(_, l)| l.starts_with("STATUS="))
        .map(|(_, l)| l.clone())
        .unwrap();
    println!(
        "FIGURE systemd notify: READY=1 {:.2} s after spawn, {statuses} STATUS= lines (last {last_status:?}), {} WATCHDOG=1 with gaps {:.2}-{max_gap:.2} s for a 1 s watchdog, STOPPING=1 on SIGTERM",
        ready_after.as_secs_f64(),
        pings.len(),
        gaps.iter().cloned().fold(f64::MAX, f64::min),
    );

    // Without WATCHDOG_USEC (or with another process's WATCHDOG_PID) nothing pings.
    let mut env = Env::new();
    let (socket, received) = notify_socket(env.dir.path());
    env.vars
        .insert("NOTIFY_SOCKET".into(), socket.display().to_string());
    env.vars.insert("WATCHDOG_USEC".into(), "1000000".into());
    env.vars.insert("WATCHDOG_PID".into(), "1".into());
    let daemon = env.spawn();
    wait_until("READY=1", Some(&daemon), || {
        count(&received, "READY=1") == 1
    });
    wait_until("two STATUS= refreshes", Some(&daemon), || {
        count(&received, "STATUS=") >= 3
    });
    assert_eq!(count(&received, "WATCHDOG=1"), 0, "pinged for another pid");
    daemon.stop_cleanly();
}

#[test]
fn the_service_unit_passes_systemd_analyze_verify() {
    let unit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dropslot.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "Type=notify",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from the unit"
        );
    }
    assert!(text.lines().any(|l| l.starts_with("WatchdogSec=")));
    assert!(text
        .lines()
        .any(|l| l.starts_with("ReadWritePaths=") && l.contains("/var/lib/dropslot")));
    if std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        println!(
            "SKIPPED systemd-analyze verify: systemd-analyze is not installed (package systemd)"
        );
        return;
    }
    // verify checks that ExecStart's program exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("dropslot.service");
    let binary = dropslot_binary();
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/dropslot", &binary.display().to_string()),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {stderr}"
    );
    assert!(
        !stderr.contains("dropslot.service"),
        "systemd-analyze verify warns about the unit: {stderr}"
    );
    println!("FIGURE systemd-analyze verify config/dropslot.service: ok, no warnings");
}
