//! The Tahoe-LAFS remote end to end: the real binary against a real grid on loopback
//! (tahoe-lafs 1.20 from PyPI: introducer, storage node and gateway; see
//! `scripts/test-servers.sh`), checked by listing the grid's directories and downloading back.

use dropslot_testkit as common;

use std::time::{Duration, Instant};

use common::servers::TahoeGrid;
use common::*;

/// Points `env` at the grid, publishing below `sub` in the grid's directory.
fn use_tahoe(env: &mut Env, grid: &TahoeGrid, sub: &str) {
    let dircap_file = env.dir.path().join("drop_upload_dircap");
    std::fs::write(&dircap_file, format!("{}/{sub}\n", grid.dircap)).unwrap();
    env.set("remote.kind", "tahoe")
        .set("remote.gateway", &grid.gateway.url())
        .set("remote.dircap_file", &dircap_file.display().to_string());
}

fn child_kind(listing: &serde_json::Value, name: &str) -> Option<String> {
    listing[1]["children"][name][0].as_str().map(String::from)
}

#[test]
fn nested_tree_rewrites_replacement_and_deletion_reach_the_grid() {
    let Some(grid) = TahoeGrid::start() else {
        return;
    };
    let mut env = Env::new();
    use_tahoe(&mut env, &grid, "drops/in");
    env.set("upload.slots", "8")
        .set("remote.on_delete", "delete")
        .set("debounce.quiet", "400ms");
    // A directory on the grid where a file of the same name will appear locally.
    let made = grid.curl(&[
        "-X",
        "POST",
        &format!(
            "{}/uri/{}/drops/in/taken?t=mkdir",
            grid.gateway.url(),
            grid.dircap
        ),
    ]);
    assert!(made.starts_with("URI:DIR2"), "{made}");
    let daemon = env.spawn();
    let files = write_tree(&env, 300, |i| format!("p{}/q{}/f{i}.txt", i % 6, i % 2));
    env.write("taken", b"must not replace the directory");
    let last = rewrite_rapidly(&env, "rewritten.txt", 50);
    wait_until("all files published", Some(&daemon), || {
        env.ledger().status().unwrap().published >= 301
    });
    for (rel, content) in &files {
        assert_eq!(
            grid.download(&format!("drops/in/{rel}")).as_deref(),
            Some(&content[..]),
            "{rel} differs on the grid"
        );
    }
    assert_eq!(
        child_kind(&grid.list("drops/in/p1"), "q1").as_deref(),
        Some("dirnode"),
        "subdirectories mirror the tree"
    );
    assert_eq!(grid.download("drops/in/rewritten.txt"), Some(last));
    assert_eq!(env.uploads("rewritten.txt"), 1);
    // The directory of that name is still a directory, and the file is reported by name.
    assert_eq!(
        child_kind(&grid.list("drops/in"), "taken").as_deref(),
        Some("dirnode")
    );
    let status = env.command(&["status", "--json"]).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["failures"][0]["path"], "taken", "{report}");

    // Replacing a file links the new content under the same name.
    env.write("p0/q0/f0.txt", b"replaced content");
    wait_until("replacement published", Some(&daemon), || {
        grid.download("drops/in/p0/q0/f0.txt").as_deref() == Some(&b"replaced content"[..])
    });
    std::fs::remove_file(env.drop.join("p1/q1/f1.txt")).unwrap();
    wait_until("deletion unlinks the child", Some(&daemon), || {
        child_kind(&grid.list("drops/in/p1/q1"), "f1.txt").is_none()
    });
    let log_file = daemon.log.clone();
    assert!(daemon.stop().success());
    let log = std::fs::read_to_string(log_file).unwrap_or_default();
    let cap_secret = grid.dircap.split(':').nth(2).unwrap();
    assert!(
        !log.contains(cap_secret),
        "the write-cap leaked into the log"
    );
}

#[test]
fn every_file_arrives_when_the_gateway_is_stopped_mid_run_and_restarted() {
    let Some(mut grid) = TahoeGrid::start() else {
        return;
    };
    let mut env = Env::new();
    use_tahoe(&mut env, &grid, "outage");
    env.set("upload.max_attempts", "1000")
        .set("upload.retry_max", "500ms");
    let daemon = env.spawn();
    for i in 0..60 {
        env.write(
            &format!("before/f{i}.txt"),
            format!("file {i} with enough bytes to need storage, not a LIT cap").as_bytes(),
        );
    }
    wait_until("some files published", Some(&daemon), || {
        env.ledger().status().unwrap().published > 0
    });
    grid.gateway.stop();
    for i in 60..120 {
        env.write(
            &format!("during/f{i}.txt"),
            format!("file {i} with enough bytes to need storage, not a LIT cap").as_bytes(),
        );
    }
    wait_until(
        "uploads failing while the gateway is down",
        Some(&daemon),
        || daemon.log_text().contains("connection refused"),
    );
    // An upload cut off by the gateway's stop stays "in progress" on the storage server, which
    // then refuses the same content (convergent encryption: same storage index) from the new
    // gateway with UploadUnhappinessError until it drops the abandoned upload; restarting the
    // storage node does that. dropslot meanwhile keeps retrying those files (see the docs).
    grid.storage.stop();
    grid.storage.start();
    grid.gateway.start();
    grid.wait_connected();
    wait_until("every file published", Some(&daemon), || {
        env.ledger().status().unwrap().published == 120
    });
    for i in 0..120 {
        let rel = if i < 60 {
            format!("outage/before/f{i}.txt")
        } else {
            format!("outage/during/f{i}.txt")
        };
        let expected = format!("file {i} with enough bytes to need storage, not a LIT cap");
        assert_eq!(
            grid.download(&rel).as_deref(),
            Some(expected.as_bytes()),
            "{rel}"
        );
    }
    assert!(daemon.stop().success());
}

/// Figures for the closing note, not a test of speed: `cargo test --test remote_tahoe -- --ignored --nocapture`.
#[test]
#[ignore]
fn figures_publish_1000_small_files_by_slots_and_batching() {
    let Some(grid) = TahoeGrid::start() else {
        return;
    };
    for (slots, batch) in [(1, 100), (8, 100), (1, 1), (8, 1)] {
        let mut env = Env::new();
        use_tahoe(&mut env, &grid, &format!("figures-{slots}-{batch}"));
        env.set("upload.slots", &slots.to_string())
            .set("linker.batch_size", &batch.to_string());
        for i in 0..1000 {
            env.write(
                &format!("d{}/f{i}.bin", i % 10),
                &vec![(i % 251) as u8; 1024],
            );
        }
        let start = Instant::now();
        let out = env.run_once_within(Duration::from_secs(1800));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "tahoe: 1000 files of 1 KiB, slots = {slots}, linker.batch_size = {batch}: {:.1} s",
            start.elapsed().as_secs_f64()
        );
    }
}
