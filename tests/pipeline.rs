//! End-to-end tests of the pipeline: the real binary, real files, real inotify, the local remote.

use dropslot_testkit as common;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;

#[test]
fn nested_tree_of_thousands_of_files_is_published_with_equal_content() {
    let mut env = Env::new();
    env.set("upload.slots", "8");
    let daemon = env.spawn();
    let mut expected = Vec::new();
    for i in 0..3000 {
        let rel = format!("d{}/sub{}/file-{i}.dat", i % 10, i % 4);
        let content = format!("content of file {i}\n")
            .repeat(1 + i % 50)
            .into_bytes();
        expected.push((rel, content));
    }
    // Some files are written in pieces, as a slow writer would, while the rest arrive at once.
    let slow: Vec<_> = expected.iter().take(20).cloned().collect();
    let drop = env.drop.clone();
    let writer = std::thread::spawn(move || {
        for (rel, content) in slow {
            let path = drop.join(&rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let mut f = std::fs::File::create(&path).unwrap();
            for piece in content.chunks(content.len().div_ceil(3)) {
                f.write_all(piece).unwrap();
                f.flush().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    });
    for (rel, content) in expected.iter().skip(20) {
        env.write(rel, content);
    }
    writer.join().unwrap();
    wait_until(
        "every file published with equal content",
        Some(&daemon),
        || {
            expected
                .iter()
                .all(|(rel, content)| has_content(&env.target.join(rel), content))
        },
    );
    let status = daemon.stop();
    assert!(
        status.success(),
        "SIGTERM must end the daemon with 0, got {status}"
    );
    let report = env.ledger().status().unwrap();
    assert_eq!(report.published, 3000);
    assert_eq!(report.failed, 0);
}

#[test]
fn file_rewritten_100_times_within_two_seconds_is_published_once_with_final_content() {
    let mut env = Env::new();
    env.set("debounce.quiet", "500ms");
    let daemon = env.spawn();
    let path = env.drop.join("report.csv");
    let mut last = Vec::new();
    for i in 0..100 {
        last = format!("version {i}\n").repeat(100).into_bytes();
        std::fs::write(&path, &last).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(15));
    }
    let target = env.target.join("report.csv");
    wait_until("final version published", Some(&daemon), || {
        has_content(&target, &last) && env.uploads("report.csv") >= 1
    });
    let status = daemon.stop();
    assert!(status.success());
    assert_eq!(env.uploads("report.csv"), 1, "published more than once");
}

#[test]
fn growing_file_is_published_from_a_snapshot_equal_to_a_complete_version() {
    let mut env = Env::new();
    env.set("debounce.quiet", "100ms")
        .set("stability.window", "100ms")
        .set("stability.max_wait", "1s");
    let daemon = env.spawn();
    let path = env.drop.join("growing.log");
    let target = env.target.join("growing.log");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o644)
                .open(&path)
                .unwrap();
            let mut n = 0u64;
            let start = std::time::Instant::now();
            // Never quiet for long: a line every 10 ms until the test has what it needs.
            while !stop.load(Ordering::SeqCst) && start.elapsed() < DEADLINE {
                f.write_all(format!("line {n}\n").as_bytes()).unwrap();
                n += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            n
        })
    };
    wait_until(
        "a version published while the file is still growing",
        Some(&daemon),
        || target.exists(),
    );
    let still_growing = !writer.is_finished();
    let published = std::fs::read(&target).unwrap();
    stop.store(true, Ordering::SeqCst);
    let lines = writer.join().unwrap();
    assert!(
        still_growing,
        "the writer stopped before anything was published"
    );
    assert!(
        !published.is_empty() && published.ends_with(b"\n"),
        "torn copy: {published:?}"
    );
    let text = String::from_utf8(published).unwrap();
    for (i, line) in text.lines().enumerate() {
        assert_eq!(
            line,
            format!("line {i}"),
            "published copy is not a prefix of complete lines"
        );
    }
    assert!(daemon.log_text().contains("taking a snapshot"));
    // Once the writer stops, the final complete version arrives.
    let final_content = std::fs::read(&path).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&final_content).lines().count() as u64,
        lines
    );
    wait_until("final version published", Some(&daemon), || {
        has_content(&target, &final_content)
    });
    assert!(daemon.stop().success());
}

#[test]
fn restart_sends_exactly_what_changed_while_stopped() {
    let mut env = Env::new();
    env.set("remote.on_delete", "delete");
    for i in 0..20 {
        env.write(
            &format!("dir{}/f{i}.txt", i % 3),
            format!("original {i}").as_bytes(),
        );
    }
    let first = env.run_once();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(summary_total(&first.stderr)["uploaded_files"], 20);

    // While stopped: change 3, touch 2 (same content), delete 2, create 2.
    for i in 0..3 {
        env.write(
            &format!("dir{}/f{i}.txt", i % 3),
            format!("changed {i}").as_bytes(),
        );
    }
    for i in 3..5 {
        let p = env.drop.join(format!("dir{}/f{i}.txt", i % 3));
        let content = std::fs::read(&p).unwrap();
        std::fs::write(&p, content).unwrap(); // new mtime and ctime, same bytes
    }
    for i in 5..7 {
        std::fs::remove_file(env.drop.join(format!("dir{}/f{i}.txt", i % 3))).unwrap();
    }
    env.write("new/a.txt", b"new a");
    env.write("new/b.txt", b"new b");

    let second = env.run_once();
    let log = String::from_utf8_lossy(&second.stderr).into_owned();
    assert!(second.status.success(), "{log}");
    assert_eq!(summary_total(&second.stderr)["uploaded_files"], 5, "{log}");
    for i in 0..3 {
        let rel = format!("dir{}/f{i}.txt", i % 3);
        assert!(has_content(
            &env.target.join(&rel),
            format!("changed {i}").as_bytes()
        ));
        assert_eq!(env.uploads(&rel), 2);
    }
    for i in 3..5 {
        assert_eq!(
            env.uploads(format!("dir{}/f{i}.txt", i % 3)),
            1,
            "touched file was re-sent"
        );
    }
    for i in 5..7 {
        assert!(
            !env.target.join(format!("dir{}/f{i}.txt", i % 3)).exists(),
            "deletion not propagated"
        );
        assert_eq!(env.uploads(format!("dir{}/f{i}.txt", i % 3)), 0);
    }
    assert!(has_content(&env.target.join("new/a.txt"), b"new a"));

    let third = env.run_once();
    assert!(third.status.success());
    assert_eq!(
        summary_total(&third.stderr)["uploaded_files"],
        0,
        "unchanged files were re-sent"
    );
}

#[test]
fn ignored_files_and_directories_are_not_uploaded() {
    let mut env = Env::new();
    env.set("watch.ignore", "*.tmp,cache");
    env.write("keep.txt", b"keep");
    env.write("skip.tmp", b"skip");
    env.write("a/b/skip.tmp", b"skip");
    env.write("cache/deep/file.txt", b"skip");
    let out = env.run_once();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(has_content(&env.target.join("keep.txt"), b"keep"));
    assert!(!env.target.join("skip.tmp").exists());
    assert!(!env.target.join("a/b/skip.tmp").exists());
    assert!(!env.target.join("cache").exists());
}

#[test]
fn new_subdirectories_are_watched_including_files_created_before_their_watch() {
    let env = Env::new();
    let daemon = env.spawn();
    wait_until("daemon scanned", Some(&daemon), || {
        daemon.log_text().contains("scan finished")
    });
    // mkdir -p and immediate writes race the watch on each new directory.
    for i in 0..50 {
        env.write(
            &format!("x{i}/y/z/file.txt"),
            format!("deep {i}").as_bytes(),
        );
    }
    wait_until("all deep files published", Some(&daemon), || {
        (0..50).all(|i| {
            has_content(
                &env.target.join(format!("x{i}/y/z/file.txt")),
                format!("deep {i}").as_bytes(),
            )
        })
    });
    assert!(daemon.stop().success());
}

#[test]
fn missing_drop_folder_is_waited_for_then_watched() {
    let env = Env::new();
    std::fs::remove_dir(&env.drop).unwrap();
    let once = env.run_once();
    assert_eq!(once.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&once.stderr).contains("does not exist"));

    let daemon = env.spawn();
    wait_until("warning about the missing folder", Some(&daemon), || {
        daemon.log_text().contains("does not exist")
    });
    env.write("late/arrival.txt", b"here now");
    wait_until("file in the late folder published", Some(&daemon), || {
        has_content(&env.target.join("late/arrival.txt"), b"here now")
    });
    assert!(daemon.stop().success());
}

#[test]
fn files_deleted_or_renamed_before_upload_are_handled_without_failures() {
    let mut env = Env::new();
    env.set("remote.on_delete", "delete");
    let daemon = env.spawn();
    wait_until("daemon scanned", Some(&daemon), || {
        daemon.log_text().contains("scan finished")
    });
    for i in 0..300 {
        let path = env.write(&format!("churn/f{i}.txt"), format!("churn {i}").as_bytes());
        match i % 3 {
            0 => std::fs::remove_file(&path).unwrap(),
            1 => std::fs::rename(&path, env.drop.join(format!("churn/renamed-{i}.txt"))).unwrap(),
            _ => {}
        }
    }
    let expected: Vec<(String, String)> = (0..300)
        .filter_map(|i| match i % 3 {
            0 => None,
            1 => Some((format!("churn/renamed-{i}.txt"), format!("churn {i}"))),
            _ => Some((format!("churn/f{i}.txt"), format!("churn {i}"))),
        })
        .collect();
    wait_until("survivors published", Some(&daemon), || {
        expected
            .iter()
            .all(|(rel, content)| has_content(&env.target.join(rel), content.as_bytes()))
    });
    // Then a published file is deleted while the daemon runs: its remote copy goes too.
    std::fs::remove_file(env.drop.join("churn/f2.txt")).unwrap();
    wait_until("deletion propagated", Some(&daemon), || {
        !env.target.join("churn/f2.txt").exists()
    });
    assert!(daemon.stop().success());
    for i in (0..300).step_by(3) {
        assert!(!env.target.join(format!("churn/f{i}.txt")).exists());
    }
    let report = env.ledger().status().unwrap();
    assert_eq!(report.failed, 0, "{:?}", report.failures);
}

#[test]
fn drop_folder_deleted_while_running_is_watched_again_when_it_returns() {
    let env = Env::new();
    let daemon = env.spawn();
    env.write("before.txt", b"before");
    wait_until("first file published", Some(&daemon), || {
        has_content(&env.target.join("before.txt"), b"before")
    });
    std::fs::remove_dir_all(&env.drop).unwrap();
    wait_until("the daemon noticed", Some(&daemon), || {
        daemon.log_text().contains("disappeared")
    });
    env.write("after/again.txt", b"after");
    wait_until(
        "file in the recreated folder published",
        Some(&daemon),
        || has_content(&env.target.join("after/again.txt"), b"after"),
    );
    assert!(daemon.stop().success());
}

#[test]
fn killed_mid_upload_leaves_no_partial_file_and_the_restart_completes_it() {
    let env = Env::new();
    // Large enough that the upload is still running when the daemon is killed.
    let path = env.drop.join("big.bin");
    write_large_file(&path, 300);
    let daemon = env.spawn();
    let partials = || {
        std::fs::read_dir(&env.target)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
                    .count()
            })
            .unwrap_or(0)
    };
    wait_until("upload under way", Some(&daemon), || partials() > 0);
    drop(daemon); // SIGKILL: no chance to clean up
    assert!(
        !env.target.join("big.bin").exists(),
        "upload finished before the kill"
    );
    assert_eq!(partials(), 1);

    let out = env.run_once();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(partials(), 0, "leftover of the interrupted upload remains");
    let original = std::fs::read(&path).unwrap();
    let published = std::fs::read(env.target.join("big.bin")).unwrap();
    assert_eq!(sha256(&original), sha256(&published));
}
