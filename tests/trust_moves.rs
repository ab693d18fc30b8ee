//! Renames, moves out, outages and directory churn against the real binary, real inotify and
//! real servers (issue 10, findings C, 8 and the `WatchNotFound` log volume). Each test prints
//! the `FIGURE` lines `docs/reliability.md` quotes.

mod common;

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

    let mut figures = BTreeMap::new();
    let steps: [(&str, Box<dyn Fn()>); 4] = [
        (
            "mv a.txt b.txt",
            Box::new(|| mv(&env.drop.join("a.txt"), &env.drop.join("b.txt"))),
        ),
        (
            "mv d e",
            Box::new(|| mv(&env.drop.join("d"), &env.drop.join("e"))),
        ),
        (
            "mv e outside/",
            Box::new(|| mv(&env.drop.join("e"), &outside)),
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
        figures.insert(*step, took);
    }
    daemon.stop_cleanly();
    for (step, took) in &figures {
        eprintln!(
            "FIGURE moves {remote}: after `{step}` the stale names were gone from the remote in {took:.2} s (rescan 1 h, debounce 150 ms)"
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
