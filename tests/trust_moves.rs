//! Renames, moves out, outages and directory churn against the real binary, real inotify and
//! real servers (issue 10, findings C, 8 and the `WatchNotFound` log volume). Each test prints
//! the `FIGURE` lines `docs/reliability.md` quotes.

use dropslot_testkit as common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::servers::Server;
use common::*;

/// Every test here sets the rescan this far apart, so a rescan cannot be what fixes a stale
/// name or a failed file.
const NO_RESCAN: &str = "1h";

/// How long a stale name may survive: far below the rescan, and generous for a busy CI machine
/// (the debounce window here is 150 ms).
const STALE_LIMIT: Duration = Duration::from_secs(15);

/// The files a remote holds, relative to its root, without dropslot's own staging names.
fn remote_files(root: &Path) -> BTreeSet<PathBuf> {
    files_under(root)
        .into_iter()
        .filter(|p| {
            !p.components()
                .any(|c| c.as_os_str().to_string_lossy().starts_with(".dropslot"))
        })
        .collect()
}

/// `dropslot status --json`'s published count.
fn published_count(env: &Env) -> u64 {
    let out = env.command(&["status", "--json"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    report["published"].as_u64().unwrap()
}

/// Runs `mv from to` (the real program, as a user or script would).
fn mv(from: &Path, to: &Path) {
    let status = Command::new("mv").arg(from).arg(to).status().unwrap();
    assert!(
        status.success(),
        "mv {} {} failed",
        from.display(),
        to.display()
    );
}

/// Waits until the remote under `root` holds exactly the drop folder's files (names and
/// content); returns how long that took from `since`. Panics with both listings after
/// [`STALE_LIMIT`].
fn wait_remote_matches(env: &Env, daemon: &Daemon, root: &Path, since: Instant, step: &str) -> f64 {
    loop {
        let want: BTreeSet<PathBuf> = files_under(&env.drop).into_iter().collect();
        let have = remote_files(root);
        if have == want
            && want.iter().all(|rel| {
                std::fs::read(root.join(rel)).ok() == std::fs::read(env.drop.join(rel)).ok()
            })
        {
            return since.elapsed().as_secs_f64();
        }
        if since.elapsed() > STALE_LIMIT {
            let stale: Vec<_> = have.difference(&want).collect();
            let missing: Vec<_> = want.difference(&have).collect();
            panic!(
                "{step}: after {STALE_LIMIT:?} the remote still has {stale:?} and lacks {missing:?}\nlog tail:\n{}",
                daemon
                    .log_text()
                    .lines()
                    .filter(|l| !l.contains(r#""kind":"metrics""#))
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A named change to the drop folder.
type Step<'a> = (&'static str, Box<dyn Fn() + 'a>);

/// `mv a.txt b.txt`, `mv d e`, `e` moved out of the drop folder and a file moved out, with
/// `on_delete = "delete"`: after each, the remote at `root` must match the drop folder well
/// within [`STALE_LIMIT`] and `status` must count only what is really there.
fn renames_and_moves_out_reach_the_remote(env: &mut Env, root: &Path, remote: &str) {
    env.set("remote.on_delete", "delete")
        .set("watch.rescan_interval", NO_RESCAN);
    env.write("a.txt", b"the file called a\n");
    env.write("keep.txt", b"stays where it is\n");
    env.write("x.txt", b"will leave the drop folder\n");
    for i in 0..5 {
        env.write(
            &format!("d/f{i}.txt"),
            format!("file {i} of d\n").as_bytes(),
        );
    }
    env.write("d/sub/deep.txt", b"deeper in d\n");
    let outside = env.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();

    let daemon = env.spawn();
    let started = Instant::now();
    wait_remote_matches(env, &daemon, root, started, "initial publish");

    let mut figures = Vec::new();
    let steps: [Step; 6] = [
        (
            "mv a.txt b.txt",
            Box::new(|| mv(&env.drop.join("a.txt"), &env.drop.join("b.txt"))),
        ),
        (
            "mv d e",
            Box::new(|| mv(&env.drop.join("d"), &env.drop.join("e"))),
        ),
        // The renamed directory and its subdirectory are still watched.
        (
            "write e/new.txt and e/sub/new.txt",
            Box::new(|| {
                env.write("e/new.txt", b"written after the rename\n");
                env.write("e/sub/new.txt", b"written after the rename, deeper\n");
            }),
        ),
        (
            "mv e outside/",
            Box::new(|| mv(&env.drop.join("e"), &outside)),
        ),
        // Moved back in under another name: walked, every file published again.
        (
            "mv outside/e back",
            Box::new(|| mv(&outside.join("e"), &env.drop.join("back"))),
        ),
        // The same rename(2) as `mv`, from a program.
        (
            "rename x.txt outside/",
            Box::new(|| std::fs::rename(env.drop.join("x.txt"), outside.join("x.txt")).unwrap()),
        ),
    ];
    for (step, act) in &steps {
        let since = Instant::now();
        act();
        let took = wait_remote_matches(env, &daemon, root, since, step);
        // The ledger catches up with the remote in the same batch; allow it the same limit.
        let files = files_under(&env.drop).len() as u64;
        let ledger_since = Instant::now();
        while published_count(env) != files && ledger_since.elapsed() < STALE_LIMIT {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            published_count(env),
            files,
            "{step}: status must count only the files really there"
        );
        figures.push((*step, took));
    }
    daemon.stop_cleanly();
    for (step, took) in &figures {
        eprintln!(
            "FIGURE moves {remote}: after `{step}` the remote matched the drop folder (stale names gone, new ones there) in {took:.2} s (rescan 1 h, debounce 150 ms)"
        );
    }
}

#[test]
fn renames_and_moves_out_are_seen_at_once_on_the_local_remote() {
    let mut env = Env::new();
    let target = env.target.clone();
    renames_and_moves_out_reach_the_remote(&mut env, &target, "local");
}

#[test]
fn renames_and_moves_out_are_seen_at_once_on_webdav() {
    let Some(server) = Server::nginx(None) else {
        return;
    };
    let mut env = Env::new();
    env.set("remote.kind", "webdav")
        .set("remote.url", &format!("{}/drops/", server.url()));
    // nginx's directory on disk is the ground truth (its listings hide dot files).
    let root = server.webdav_root().join("drops");
    renames_and_moves_out_reach_the_remote(&mut env, &root, "webdav");
}

/// Content that differs per file (1 to 64 KiB).
fn burst_content(i: usize) -> Vec<u8> {
    let line = format!("burst file {i}\n");
    line.repeat((1 + i * 977 % (64 << 10)) / line.len() + 1)
        .into_bytes()
}

/// Distinct paths the log names in "upload failed" / "publishing failed" errors: files whose
/// retries ran out at some point.
fn paths_that_ran_out(log: &str) -> BTreeSet<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["level"] == "ERROR"
                && v["message"].as_str().is_some_and(|m| {
                    m.starts_with("upload failed") || m.starts_with("publishing failed")
                })
        })
        .filter_map(|v| v["path"].as_str().map(str::to_string))
        .collect()
}

/// A burst of 400 files with the server stopped for 20 s in its middle, with the default retry
/// settings (`upload.max_attempts = 5`, `retry_failed_after = 30s`) and no rescan: files whose
/// attempts ran out during the outage must arrive anyway, and none may stay failed. `read`
/// fetches a file back from the server.
fn outage_with_default_retries(
    env: &mut Env,
    server: &mut Server,
    remote: &str,
    read: &dyn Fn(&Server, &str) -> Option<Vec<u8>>,
) {
    // `Env::new` shortens the retry delays to keep other tests fast; this one needs the
    // defaults of config/dropslot.toml. `max_attempts` and `retry_failed_after` stay untouched.
    env.set("upload.retry_initial", "500ms")
        .set("upload.retry_max", "30s")
        .set("watch.rescan_interval", NO_RESCAN);
    let daemon = env.spawn();
    let mut files = BTreeMap::new();
    let mut drop_files = |range: std::ops::Range<usize>| {
        for i in range {
            let rel = format!("burst/f{i}.txt");
            env.write(&rel, &burst_content(i));
            files.insert(rel, burst_content(i));
        }
    };
    drop_files(0..200);
    wait_until("part of the burst published", Some(&daemon), || {
        env.ledger().status().unwrap().published >= 20
    });
    server.stop();
    let outage = Instant::now();
    // The burst goes on for the first half of the 20 s outage.
    let mut next = 200;
    let mut most_failed = 0;
    while outage.elapsed() < Duration::from_secs(20) {
        if next < 400 {
            drop_files(next..next + 20);
            next += 20;
        }
        most_failed = most_failed.max(env.ledger().status().unwrap().failed);
        std::thread::sleep(Duration::from_secs(1));
    }
    server.start();
    let back = Instant::now();
    wait_until(
        "every file published after the outage, none failed",
        Some(&daemon),
        || {
            let status = env.ledger().status().unwrap();
            most_failed = most_failed.max(status.failed);
            status.published as usize == files.len() && status.failed == 0
        },
    );
    let recovery = back.elapsed();
    let log = daemon.log_text();
    daemon.stop_cleanly();
    for (rel, bytes) in &files {
        assert!(
            read(server, rel).as_ref() == Some(bytes),
            "{rel} wrong on the server"
        );
    }
    let ran_out = paths_that_ran_out(&log);
    let rounds = log.matches("retrying files whose retries ran out").count();
    let at_once = log.matches("the remote answers again").count();
    eprintln!(
        "FIGURE outage default retries {remote}: {} files, server down 20 s, {} files ran out of their 5 attempts (at most {most_failed} failed at once), {rounds} retry rounds ({at_once} started at once when the remote answered again), all {} arrived {:.1} s after the server came back, 0 failed, no rescan, no restart",
        files.len(),
        ran_out.len(),
        files.len(),
        recovery.as_secs_f64()
    );
    assert!(
        at_once >= 1,
        "the remote's return did not start a retry round at once"
    );
    assert!(
        !ran_out.is_empty(),
        "no file ran out of retries: the outage did not test what it should"
    );
}

#[test]
fn files_whose_retries_ran_out_in_a_20_second_webdav_outage_arrive_with_default_settings() {
    let Some(mut server) = Server::nginx(None) else {
        return;
    };
    let mut env = Env::new();
    env.set("remote.kind", "webdav")
        .set("remote.url", &format!("{}/drops/", server.url()));
    outage_with_default_retries(&mut env, &mut server, "webdav", &|server, rel| {
        std::fs::read(server.webdav_root().join("drops").join(rel)).ok()
    });
}

#[test]
fn files_whose_retries_ran_out_in_a_20_second_s3_outage_arrive_with_default_settings() {
    // s3rver keeps objects on disk, so they survive its restart (moto's do not).
    let Some(mut server) = Server::s3rver("drops") else {
        return;
    };
    let mut env = Env::new();
    env.set("remote.kind", "s3")
        .set("remote.endpoint", &server.url())
        .set("remote.bucket", "drops")
        .set("remote.region", "us-east-1")
        .set("remote.path_style", "true")
        .set("remote.access_key_id", "S3RVER")
        .set("remote.secret_access_key", "S3RVER");
    outage_with_default_retries(&mut env, &mut server, "s3", &|server, rel| {
        server.s3_get("drops", rel)
    });
}

/// WARN lines of a JSON log that are about watches (ours or notify's own).
fn watch_warnings(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "WARN" && v.to_string().to_lowercase().contains("watch"))
        .map(|v| v.to_string())
        .collect()
}

/// Directories created and removed as fast as one thread can (each with a subdirectory and a
/// file, so some vanish before their watch is added and others lose it with their parent): the
/// log must stay readable. Returns the number of WARN lines about watches and how long it took.
fn churn_directories(env: &Env, count: usize) -> (Vec<String>, f64) {
    let daemon = env.spawn();
    wait_until("start-up scan finished", Some(&daemon), || {
        daemon.log_text().contains("scan finished")
    });
    let started = Instant::now();
    let churn = env.drop.join("churn");
    for i in 0..count {
        let dir = churn.join(format!("d{i}"));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/f.txt"), b"short-lived").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let took = started.elapsed().as_secs_f64();
    // A file written after the churn is published only once the daemon got through it.
    env.write("after-churn.txt", b"the daemon is still with us");
    wait_until("the file after the churn published", Some(&daemon), || {
        env.uploads("after-churn.txt") == 1
    });
    let log = daemon.log_text();
    daemon.stop_cleanly();
    (watch_warnings(&log), took)
}

#[test]
fn directory_churn_does_not_flood_the_log_with_watch_warnings() {
    const DIRS: usize = 2_000;
    let env = Env::new();
    let (warnings, took) = churn_directories(&env, DIRS);
    eprintln!(
        "FIGURE churn: {DIRS} directories (each with a subdirectory and a file) created and removed in {took:.1} s while the daemon ran: {} WARN lines about watches",
        warnings.len()
    );
    assert!(
        warnings.len() < 5,
        "{} WARN lines about watches, for example:\n{}",
        warnings.len(),
        warnings[..warnings.len().min(5)].join("\n")
    );

    // The same churn with notify's own log asked for by name shows where the flood came from
    // (and that asking still works).
    let mut env = Env::new();
    env.log_level("info,notify=warn");
    let (warnings, _) = churn_directories(&env, DIRS);
    eprintln!(
        "FIGURE churn: with DROPSLOT_LOG=info,notify=warn the same churn logs {} WARN lines about watches, first: {}",
        warnings.len(),
        warnings.first().map_or("-", String::as_str)
    );
}

#[test]
fn a_delete_that_ran_out_of_retries_in_an_outage_is_done_when_the_server_is_back() {
    let Some(mut server) = Server::nginx(None) else {
        return;
    };
    let mut env = Env::new();
    env.set("remote.kind", "webdav")
        .set("remote.url", &format!("{}/drops/", server.url()))
        .set("remote.on_delete", "delete")
        .set("watch.rescan_interval", NO_RESCAN)
        // The defaults of config/dropslot.toml (`Env::new` shortens them).
        .set("upload.retry_initial", "500ms")
        .set("upload.retry_max", "30s");
    let root = server.webdav_root().join("drops");
    env.write("a.txt", b"renamed during the outage\n");
    env.write("keep.txt", b"stays\n");
    let daemon = env.spawn();
    wait_remote_matches(&env, &daemon, &root, Instant::now(), "initial publish");

    server.stop();
    mv(&env.drop.join("a.txt"), &env.drop.join("b.txt"));
    let outage = Instant::now();
    wait_until(
        "the delete of a.txt and the upload of b.txt ran out of attempts",
        Some(&daemon),
        || {
            let status = env.ledger().status().unwrap();
            status
                .failures
                .iter()
                .any(|f| f.path == "a.txt" && f.error.starts_with("delete failed"))
                && status.failures.iter().any(|f| f.path == "b.txt")
        },
    );
    let failed_after = outage.elapsed();
    server.start();
    let back = Instant::now();
    // Nothing else happens: the daemon's probe must notice the server's return.
    let took = wait_remote_matches(&env, &daemon, &root, back, "after the outage");
    wait_until(
        "status counts what is there, none failed",
        Some(&daemon),
        || {
            let status = env.ledger().status().unwrap();
            status.published == 2 && status.failed == 0
        },
    );
    let log = daemon.log_text();
    daemon.stop_cleanly();
    assert!(
        log.contains("the remote answers again"),
        "no probe noticed the return"
    );
    eprintln!(
        "FIGURE failed delete: `mv a.txt b.txt` with the WebDAV server down; the delete of a.txt ran out of its 5 attempts after {:.1} s; a.txt was gone and b.txt there {took:.1} s after the server came back (rescan 1 h)",
        failed_after.as_secs_f64()
    );
}

#[test]
fn a_renamed_directory_of_2000_files_leaves_no_stale_name() {
    const FILES: usize = 2_000;
    let mut env = Env::new();
    env.set("remote.on_delete", "delete")
        .set("watch.rescan_interval", NO_RESCAN);
    write_tree(&env, FILES, |i| format!("big/d{}/f{i}.txt", i % 20));
    let daemon = env.spawn();
    wait_until("every file published", Some(&daemon), || {
        env.ledger().status().unwrap().published as usize == FILES
    });
    let target = env.target.clone();
    let since = Instant::now();
    mv(&env.drop.join("big"), &env.drop.join("renamed"));
    let stale_gone = Instant::now();
    let mut gone_after = None;
    wait_until("the remote holds only the new names", Some(&daemon), || {
        let have = remote_files(&target);
        if gone_after.is_none() && !have.iter().any(|p| p.starts_with("big")) {
            gone_after = Some(stale_gone.elapsed().as_secs_f64());
        }
        have == files_under(&env.drop).into_iter().collect()
    });
    let all = since.elapsed().as_secs_f64();
    assert_eq!(published_count(&env), FILES as u64);
    daemon.stop_cleanly();
    eprintln!(
        "FIGURE moves local: `mv big renamed` of a directory of {FILES} files in 20 subdirectories: every old name gone from the remote in {:.1} s, the remote matched the drop folder in {all:.1} s (rescan 1 h)",
        gone_after.unwrap_or(all)
    );
}
