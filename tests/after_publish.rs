//! The after-publish action (issue 13, item 1) against the real binary, real inotify and a local
//! remote: files leave the drop folder (deleted or archived) only once published, a `kill -9`
//! between publish and removal loses nothing and archives nothing twice, a file rewritten just
//! after its publish is kept and published again, an archive on another file system (a tmpfs)
//! works, 10,000 files with `on_delete = "delete"` leave the remote whole, and an archive inside
//! the drop folder is refused. Each test prints the `FIGURE` lines `docs/reliability.md` quotes.

use dropslot_testkit as common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use dropslot_actors::ledger::Ledger;

/// How many after-publish intents the ledger holds (recorded, not yet finished).
fn intents(env: &Env) -> usize {
    let mut n = 0;
    env.ledger()
        .for_each_after_publish(&mut |_| n += 1)
        .unwrap();
    n
}

/// Regular files under `dir`, including dropslot's temporary names (which must not be left).
fn all_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
}

fn count(dir: &Path) -> usize {
    files_under(dir).len()
}

/// Every written file is in the archive with its content, on the remote with its content, and
/// no longer in the drop folder.
fn assert_archived(env: &Env, archive: &Path, files: &[(String, Vec<u8>)]) {
    for (rel, content) in files {
        assert!(
            !env.drop.join(rel).exists(),
            "{rel} is still in the drop folder"
        );
        assert!(
            has_content(&archive.join(rel), content),
            "{rel}: the archive does not hold the published content"
        );
        assert!(
            has_content(&env.target.join(rel), content),
            "{rel}: the remote does not hold the content"
        );
    }
    let archived: BTreeSet<PathBuf> = all_files(archive).into_iter().collect();
    let want: BTreeSet<PathBuf> = files.iter().map(|(r, _)| PathBuf::from(r)).collect();
    assert_eq!(
        archived, want,
        "the archive holds exactly the files, once each"
    );
}

#[test]
fn kill_9_between_publish_and_removal_loses_nothing_and_archives_once() {
    let mut env = Env::new();
    let archive = env.dir.path().join("archive");
    env.set("folder.after_publish", "move")
        .set("folder.archive_dir", archive.to_str().unwrap())
        .set("remote.on_delete", "delete");
    const N: usize = 3000;
    let files = write_tree(&env, N, |i| format!("d{}/f{i:05}.txt", i % 10));
    let mut rng = Rng::from_env("AFTER_PUBLISH_SEED");
    let (mut kills, mut in_window, mut intents_at_kill) = (0, 0, 0);
    // Kill at random moments while files are being archived; each kill that leaves intents in
    // the ledger landed between a publish and its removal.
    for _ in 0..6 {
        let before = count(&archive);
        if before == N {
            break;
        }
        let daemon = env.spawn();
        wait_until("the archive grows", Some(&daemon), || {
            count(&archive) > before
        });
        std::thread::sleep(Duration::from_millis(rng.below(150)));
        drop(daemon); // SIGKILL
        kills += 1;
        let open = intents(&env);
        if open > 0 {
            in_window += 1;
            intents_at_kill += open;
        }
        // Nothing lost: every file is in the drop folder or in the archive, never in neither.
        for (rel, content) in &files {
            let here = has_content(&env.drop.join(rel), content);
            let there = has_content(&archive.join(rel), content);
            assert!(here || there, "{rel} lost after kill {kills}");
        }
    }
    let daemon = env.spawn();
    wait_until("every file archived", Some(&daemon), || {
        count(&env.drop) == 0 && count(&archive) == N
    });
    wait_until("no intent left", Some(&daemon), || intents(&env) == 0);
    daemon.stop_cleanly();
    assert_archived(&env, &archive, &files);
    assert_eq!(count(&env.target), N, "nothing deleted from the remote");
    println!(
        "FIGURE kill-9: {N} files, {kills} kill -9 at random moments, {in_window} of them between publish and removal ({intents_at_kill} intents open); after restart {N}/{N} archived once, {N}/{N} on the remote, 0 lost"
    );
}

#[test]
fn a_file_rewritten_right_after_its_publish_is_kept_and_published_again() {
    rewritten_after_publish("move");
}

#[test]
fn a_file_rewritten_right_after_its_publish_is_not_deleted_and_published_again() {
    rewritten_after_publish("delete");
}

/// Each file is rewritten as soon as it is on the remote; with `action` ("move" or "delete") the
/// latest content of every file must end on the remote (and in the archive, for "move").
fn rewritten_after_publish(action: &str) {
    let mut env = Env::new();
    let archive = env.dir.path().join("archive");
    env.set("folder.after_publish", action)
        .log_level("info,dropslot_actors::events=debug");
    if action == "move" {
        env.set("folder.archive_dir", archive.to_str().unwrap());
    }
    let daemon = env.spawn();
    const N: usize = 300;
    let mut files: Vec<(String, Vec<u8>)> = (0..N)
        .map(|i| (format!("r{i:04}.txt"), format!("first {i}\n").into_bytes()))
        .collect();
    for (rel, content) in &files {
        env.write(rel, content);
    }
    // As soon as a file is on the remote, rewrite it (if it is still there): the version check
    // right before the rename must see the change and keep it.
    let mut rewritten = 0;
    let mut pending: BTreeSet<usize> = (0..N).collect();
    let start = Instant::now();
    while !pending.is_empty() && start.elapsed() < DEADLINE {
        pending.retain(|&i| {
            let (rel, _) = &files[i];
            if !env.target.join(rel).exists() {
                return true;
            }
            let path = env.drop.join(rel);
            if path.exists() {
                let second = format!("second version of {i}, longer\n").into_bytes();
                std::fs::write(&path, &second).unwrap();
                files[i].1 = second;
                rewritten += 1;
            }
            false
        });
        std::thread::sleep(Duration::from_micros(200));
    }
    wait_until("every file taken away", Some(&daemon), || {
        count(&env.drop) == 0
            && (action != "move"
                || files
                    .iter()
                    .all(|(rel, c)| has_content(&archive.join(rel), c)))
    });
    let stale = || -> Vec<String> {
        files
            .iter()
            .filter(|(rel, c)| !has_content(&env.target.join(rel), c))
            .map(|(rel, c)| {
                let remote = std::fs::read(env.target.join(rel)).unwrap_or_default();
                format!(
                    "{rel}: want {:?}, remote {:?}",
                    String::from_utf8_lossy(c),
                    String::from_utf8_lossy(&remote)
                )
            })
            .collect()
    };
    let start = Instant::now();
    while !stale().is_empty() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stale = stale();
    if !stale.is_empty() {
        let name = stale[0].split(':').next().unwrap().to_string();
        let lines: Vec<String> = daemon
            .log_text()
            .lines()
            .filter(|l| l.contains(&name))
            .map(str::to_string)
            .collect();
        panic!(
            "stale on the remote: {stale:#?}\nlog of {name}:\n{}",
            lines.join("\n")
        );
    }
    let log = daemon.log_text();
    daemon.stop_cleanly();
    let kept = log.matches("changed since it was published: kept").count();
    assert!(
        rewritten > 0,
        "no file was still in the drop folder when it appeared on the remote"
    );
    assert!(
        kept > 0,
        "no rewrite landed between publish and removal ({rewritten} rewritten)"
    );
    if action == "move" {
        assert_archived(&env, &archive, &files);
    }
    let publishes = log.matches(r#""message":"published""#).count();
    assert!(
        publishes >= N + kept,
        "{publishes} publishes: each kept file must be published again"
    );
    println!(
        "FIGURE rewrite ({action}): {N} files, {rewritten} rewritten as soon as they were on the remote, {kept} caught by the version check and kept; all {N} taken away, on the remote with their latest content ({publishes} publishes for {N} files)"
    );
}

#[test]
fn an_archive_on_another_file_system_is_copied_synced_then_unlinked() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("FIGURE tmpfs archive: skipped (mounting a tmpfs needs root)");
        return;
    }
    let mut env = Env::new();
    let archive = env.dir.path().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(&archive)
        .status()
        .unwrap();
    if !mounted.success() {
        println!("FIGURE tmpfs archive: skipped (mount -t tmpfs refused: {mounted})");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(archive.clone());
    {
        use std::os::unix::fs::MetadataExt;
        let dev = |p: &Path| std::fs::metadata(p).unwrap().dev();
        assert_ne!(
            dev(&archive),
            dev(&env.drop),
            "the tmpfs is not another file system"
        );
    }
    env.set("folder.after_publish", "move")
        .set("folder.archive_dir", archive.join("in").to_str().unwrap());
    const N: usize = 500;
    let daemon = env.spawn();
    let files = write_tree(&env, N, |i| format!("sub{}/t{i:04}.bin", i % 7));
    let start = Instant::now();
    wait_until("every file archived on the tmpfs", Some(&daemon), || {
        count(&env.drop) == 0 && count(&archive.join("in")) == N
    });
    let secs = start.elapsed().as_secs_f64();
    daemon.stop_cleanly();
    assert_archived(&env, &archive.join("in"), &files);
    let leftovers = all_files(&archive)
        .iter()
        .filter(|p| p.to_string_lossy().contains(".dropslot-archiving"))
        .count();
    assert_eq!(leftovers, 0, "temporary copies left in the archive");
    println!(
        "FIGURE tmpfs archive: {N} files archived across file systems (copy, fsync, rename, unlink) in {secs:.1} s; {N}/{N} with their content, 0 temporary copies left"
    );
}

#[test]
fn ten_thousand_files_deleted_after_publish_and_none_deleted_from_the_remote() {
    let mut env = Env::new();
    env.set("folder.after_publish", "delete")
        .set("remote.on_delete", "delete");
    const N: usize = 10_000;
    let daemon = env.spawn();
    let start = Instant::now();
    let files = write_tree(&env, N, |i| format!("b{:02}/n{i:05}.txt", i % 50));
    wait_until("the drop folder is empty", Some(&daemon), || {
        count(&env.drop) == 0
    });
    let secs = start.elapsed().as_secs_f64();
    wait_until("no intent left", Some(&daemon), || intents(&env) == 0);
    let log = daemon.log_text();
    daemon.stop_cleanly();
    // A restart with the empty drop folder must not take anything away either.
    let again = env.spawn();
    wait_until("the restart's scan finished", Some(&again), || {
        again.log_text().contains("scan finished")
    });
    let log_again = again.log_text();
    again.stop_cleanly();
    for (rel, content) in &files {
        assert!(
            has_content(&env.target.join(rel), content),
            "{rel} is not on the remote"
        );
    }
    assert_eq!(count(&env.target), N);
    let deletes = log.matches("deleted from the remote").count()
        + log_again.matches("deleted from the remote").count();
    assert_eq!(deletes, 0, "after-publish removals became remote deletes");
    println!(
        "FIGURE 10k delete: {N} files published and deleted locally in {secs:.1} s with on_delete = \"delete\"; drop folder empty, {N}/{N} on the remote, {deletes} remote deletes (also after a restart)"
    );
}

#[test]
fn an_archive_inside_the_drop_folder_is_refused_naming_both_keys() {
    let mut env = Env::new();
    let inside = env.drop.join("archive");
    env.set("folder.after_publish", "move")
        .set("folder.archive_dir", inside.to_str().unwrap());
    let mut refused = 0;
    for args in [&["check"][..], &["run", "--once"][..]] {
        let out = env.command(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        for key in ["folder.archive_dir", "watch.path"] {
            assert!(text.contains(key), "{args:?} does not name {key}: {text}");
        }
        refused += 1;
    }
    // "move" without an archive is refused too.
    env.vars.remove("DROPSLOT_FOLDER__ARCHIVE_DIR");
    let out = env.command(&["check"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("folder.archive_dir"), "{text}");
    println!(
        "FIGURE archive inside: refused with exit 2 naming folder.archive_dir and watch.path by {refused} commands (check, run --once); move without archive_dir refused"
    );
}
