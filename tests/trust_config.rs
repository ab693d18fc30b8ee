//! End-to-end tests of the configuration side of issue 10 ("Trust"), through the real binary:
//! overlapping directories refused, secrets never echoed by configuration errors, values out of
//! range named by key, and the default ignore rules (rsync's temporary names included) against
//! real producers.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;

/// Replaces the environment's configuration file with `toml` (paths relative to `env.dir`).
fn configure(env: &Env, toml: &str) {
    std::fs::write(&env.config, toml).unwrap();
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `check` and `run --once` both exit 2 with a message naming every one of `keys`.
fn assert_refused(env: &Env, case: &str, keys: &[&str]) {
    for args in [&["check"][..], &["run", "--once"][..]] {
        let out = env.command(args).output().unwrap();
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{case}: {args:?}: {text}");
        for key in keys {
            assert!(
                text.contains(key),
                "{case}: {args:?} does not name {key}: {text}"
            );
        }
    }
}

#[test]
fn overlapping_drop_folder_remote_and_state_are_refused_naming_both_keys() {
    let env = Env::new();
    let dir = env.dir.path();
    std::fs::create_dir_all(dir.join("par/drop")).unwrap();
    std::fs::write(dir.join("par/drop/f.txt"), b"source").unwrap();
    std::fs::create_dir_all(dir.join("real/drop")).unwrap();
    std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "remote contains the drop folder",
            "[watch]\npath = \"par/drop\"\n[remote]\npath = \"par\"\n[state]\ndir = \"st\"\n",
            &["remote.path", "watch.path"],
        ),
        (
            "remote equal to the drop folder",
            "[watch]\npath = \"par/drop\"\n[remote]\npath = \"./par/drop/\"\n[state]\ndir = \"st\"\n",
            &["remote.path", "watch.path"],
        ),
        (
            "remote inside the drop folder",
            "[watch]\npath = \"par/drop\"\n[remote]\npath = \"par/drop/out\"\n[state]\ndir = \"st\"\n",
            &["remote.path", "watch.path"],
        ),
        (
            "state.dir equal to the drop folder",
            "[watch]\npath = \"par/drop\"\n[remote]\npath = \"out\"\n[state]\ndir = \"par/drop\"\n",
            &["state.dir", "watch.path"],
        ),
        (
            "state.dir inside the drop folder",
            "[watch]\npath = \"par/drop\"\n[remote]\npath = \"out\"\n[state]\ndir = \"par/drop/.state\"\n",
            &["state.dir", "watch.path"],
        ),
        (
            "remote contains the drop folder through a symlinked parent",
            "[watch]\npath = \"link/drop\"\n[remote]\npath = \"real\"\n[state]\ndir = \"st\"\n",
            &["remote.path", "watch.path"],
        ),
        (
            "drop folder inside the snapshot area",
            "[watch]\npath = \"st/snapshots\"\n[remote]\npath = \"out\"\n[state]\ndir = \"st\"\n",
            &["state.dir", "watch.path", "snapshot"],
        ),
        (
            "state.dir inside the local remote",
            "[watch]\npath = \"par/drop\"\n[remote]\npath = \"out\"\n[state]\ndir = \"out/.state\"\n",
            &["state.dir", "remote.path"],
        ),
    ];
    for (case, toml, keys) in cases {
        configure(&env, toml);
        assert_refused(&env, case, keys);
    }
    // Refused before anything was touched: the source is intact, nothing was published or
    // recorded inside the drop folder.
    assert_eq!(
        std::fs::read(dir.join("par/drop/f.txt")).unwrap(),
        b"source"
    );
    assert_eq!(
        files_under(&dir.join("par")),
        [Path::new("drop/f.txt")],
        "something was written beside the source"
    );
    assert!(!dir.join("st").exists() && !dir.join("out").exists());

    // Separate directories side by side are fine.
    configure(
        &env,
        "[watch]\npath = \"par/drop\"\n[remote]\npath = \"out\"\n[state]\ndir = \"st\"\n",
    );
    let out = env.run_once();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(has_content(&dir.join("out/f.txt"), b"source"));
    eprintln!(
        "FIGURE overlaps: {} overlapping layouts x 2 commands (check, run --once) refused with exit 2 naming both keys; 0 files written; the separate layout published 1 of 1",
        cases.len()
    );
}
