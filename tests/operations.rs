//! Running dropslot in production, end to end with the real binary: the upload bandwidth limit
//! against the local remote and nginx WebDAV on loopback, and the systemd notify protocol.

use dropslot_testkit as common;

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
