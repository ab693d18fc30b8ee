//! Fault cases that need the kernel's inotify limits lowered: an overflowing event queue and
//! running out of watches. The limits are machine-wide (`/proc/sys/fs/inotify/*`), so these
//! tests run one at a time (cargo runs test binaries one after another, and a lock serialises
//! the two here), restore the old value even when they fail, and are skipped with a message
//! where the limits cannot be written (not root, or a read-only /proc/sys).

use dropslot_testkit as common;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use common::*;

static KERNEL_LIMITS: Mutex<()> = Mutex::new(());

/// Sets `/proc/sys/fs/inotify/<name>` and puts the old value back when dropped.
struct Limit {
    file: PathBuf,
    old: String,
}

impl Limit {
    fn set(name: &str, value: u64) -> Option<Limit> {
        let file = PathBuf::from("/proc/sys/fs/inotify").join(name);
        let old = std::fs::read_to_string(&file).ok()?;
        if let Err(e) = std::fs::write(&file, value.to_string()) {
            eprintln!("SKIPPED: cannot set {}: {e}", file.display());
            return None;
        }
        Some(Limit { file, old })
    }

    fn restore(&self) {
        std::fs::write(&self.file, self.old.trim()).expect("restore the inotify limit");
    }
}

impl Drop for Limit {
    fn drop(&mut self) {
        self.restore();
    }
}

/// inotify watches in use on this machine right now (they count against one per-user limit).
fn watches_in_use() -> u64 {
    let mut count = 0;
    for proc_dir in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        for fd in std::fs::read_dir(proc_dir.path().join("fdinfo"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(info) = std::fs::read_to_string(fd.path()) {
                count += info
                    .lines()
                    .filter(|l| l.starts_with("inotify wd:"))
                    .count() as u64;
            }
        }
    }
    count
}

#[test]
fn overflowing_event_queue_loses_nothing() {
    let _serial = KERNEL_LIMITS.lock().unwrap_or_else(|p| p.into_inner());
    let count = if soak() { 100_000 } else { 20_000 };
    let mut env = Env::new();
    env.set("upload.slots", "8");
    // The queue size is fixed when the daemon creates its inotify instance, so the limit is
    // only low while it starts.
    let Some(limit) = Limit::set("max_queued_events", 64) else {
        return;
    };
    let daemon = env.spawn();
    wait_until("start-up scan finished", Some(&daemon), || {
        daemon.log_text().contains("scan finished")
    });
    limit.restore();
    let started = Instant::now();
    for i in 0..count {
        let path = env.drop.join(format!("d{}/f{i}", i % 100));
        if i < 100 {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        }
        std::fs::write(&path, i.to_string()).unwrap();
    }
    wait_until("every file published", Some(&daemon), || {
        env.ledger().status().unwrap().published as usize == count
    });
    let elapsed = started.elapsed();
    let log = daemon.log_text();
    let rescans = log.matches("queue overflow").count();
    assert!(daemon.stop().success());
    assert!(
        rescans > 0,
        "the queue never overflowed; the test proves nothing"
    );
    for i in (0..count).step_by(97) {
        let rel = format!("d{}/f{i}", i % 100);
        assert!(
            has_content(&env.target.join(&rel), i.to_string().as_bytes()),
            "{rel}"
        );
    }
    assert_eq!(files_under(&env.target).len(), count);
    eprintln!(
        "FIGURE overflow: {count} files created at once with max_queued_events = 64: {rescans} overflow(s) answered by rescans, 0 lost, all published in {:.1} s",
        elapsed.as_secs_f64()
    );
}

#[test]
fn out_of_watches_names_the_kernel_setting_and_polling_still_uploads_everything() {
    let _serial = KERNEL_LIMITS.lock().unwrap_or_else(|p| p.into_inner());
    let mut env = Env::new();
    env.set("watch.poll_interval", "1s");
    for d in 0..60 {
        std::fs::create_dir_all(env.drop.join(format!("dir{d}"))).unwrap();
    }
    // Room for the drop folder and 19 of its 60 subdirectories.
    let Some(_limit) = Limit::set("max_user_watches", watches_in_use() + 20) else {
        return;
    };
    let daemon = env.spawn();
    wait_until("the watch limit reported", Some(&daemon), || {
        daemon.log_text().contains("fs.inotify.max_user_watches")
    });
    let started = Instant::now();
    for d in 0..60 {
        env.write(
            &format!("dir{d}/file.txt"),
            format!("in dir {d}").as_bytes(),
        );
    }
    wait_until(
        "files in unwatched directories published",
        Some(&daemon),
        || {
            (0..60).all(|d| {
                has_content(
                    &env.target.join(format!("dir{d}/file.txt")),
                    format!("in dir {d}").as_bytes(),
                )
            })
        },
    );
    let elapsed = started.elapsed();
    let log = daemon.log_text();
    assert_eq!(
        log.matches("out of inotify watches").count(),
        1,
        "reported once"
    );
    assert!(log.contains("watch.poll_interval"));
    assert!(daemon.stop().success());
    eprintln!(
        "FIGURE watches: 60 directories, room for about 20 watches: error names fs.inotify.max_user_watches, polling every 1 s published all 60 files in {:.1} s",
        elapsed.as_secs_f64()
    );
}
