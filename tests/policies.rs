//! The numbers the daemon reports come from its internal events (`actors/src/events.rs`): the
//! summary's `published` counts publishes only, and each counter equals the log lines of its
//! event. Real binary, real files, the local-directory remote.

use dropslot_testkit as common;

use common::*;

/// JSON log lines whose message is `message`.
fn lines_saying(log: &[u8], message: &str) -> usize {
    String::from_utf8_lossy(log)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == message)
        .count()
}

#[test]
fn the_summary_counts_publishes_and_deletes_apart_and_as_the_log_says() {
    let mut env = Env::new();
    env.set("remote.on_delete", "delete");
    for i in 0..4 {
        env.write(&format!("f{i}.txt"), format!("file {i}").as_bytes());
    }
    let first = env.run_once();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let total = summary_total(&first.stderr);
    assert_eq!(
        (total["published"].as_u64(), total["deleted"].as_u64()),
        (Some(4), Some(0)),
        "{total}"
    );

    // While stopped: two deleted, one new. The next run deletes two and publishes one.
    for i in 0..2 {
        std::fs::remove_file(env.drop.join(format!("f{i}.txt"))).unwrap();
    }
    env.write("new.txt", b"new");
    let second = env.run_once();
    let log = String::from_utf8_lossy(&second.stderr).into_owned();
    assert!(second.status.success(), "{log}");
    let total = summary_total(&second.stderr);
    let deleted_lines = lines_saying(&second.stderr, "deleted from the remote");
    eprintln!(
        "FIGURE summary: first run published={} ; second run (2 deleted, 1 new) published={} deleted={} retries={} errors={}, {deleted_lines} 'deleted from the remote' lines",
        4, total["published"], total["deleted"], total["retries"], total["errors"]
    );
    assert_eq!(
        total["published"].as_u64(),
        Some(1),
        "a delete is not a publish: {total}"
    );
    assert_eq!(total["deleted"].as_u64(), Some(2), "{total}");
    assert_eq!(deleted_lines, 2, "the counter equals the log lines");
    assert_eq!(total["retries"].as_u64(), Some(0), "{total}");
    assert!(!env.target.join("f0.txt").exists() && !env.target.join("f1.txt").exists());
    assert!(has_content(&env.target.join("new.txt"), b"new"));
}
