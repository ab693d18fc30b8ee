//! End-to-end tests of bad input: special files, links, odd names, conflicts on the remote, and
//! the exit codes and reports that tell the operator about them.

use dropslot_testkit as common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use common::*;

#[test]
fn special_files_and_links_are_skipped_by_name_and_everything_else_is_published() {
    let env = Env::new();
    let fifo = env.drop.join("a-fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let _socket = std::os::unix::net::UnixListener::bind(env.drop.join("a-socket")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", env.drop.join("link-to-etc")).unwrap();
    std::os::unix::fs::symlink("loop-b", env.drop.join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", env.drop.join("loop-b")).unwrap();
    std::os::unix::fs::symlink("/etc", env.drop.join("dir-link")).unwrap();
    env.write("empty.txt", b"");
    let odd = PathBuf::from(OsStr::from_bytes(b"caf\xe9 not utf8.txt"));
    std::fs::write(env.drop.join(&odd), b"latin-1 name").unwrap();
    env.write("-leading-dash.txt", b"dash");
    env.write("ok/normal.txt", b"normal");

    let out = env.run_once();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    for name in ["a-fifo", "a-socket", "link-to-etc", "loop-a", "dir-link"] {
        assert!(log.contains(name), "{name} not named in the log:\n{log}");
        assert!(!env.target.join(name).exists(), "{name} was uploaded");
    }
    assert!(has_content(&env.target.join("empty.txt"), b""));
    assert!(has_content(&env.target.join(&odd), b"latin-1 name"));
    assert!(has_content(&env.target.join("-leading-dash.txt"), b"dash"));
    assert!(has_content(&env.target.join("ok/normal.txt"), b"normal"));
    assert!(!env.target.join("passwd").exists());
}

#[test]
fn a_failed_file_is_reported_by_name_with_exit_1_and_in_status_json() {
    let env = Env::new();
    env.write("dir-then-file/inner.txt", b"inner");
    env.write("fine.txt", b"fine");
    assert!(env.run_once().status.success());

    // The directory becomes a file of the same name: the remote still has the directory, so
    // publishing the file must fail, by name, without stopping the other files.
    std::fs::remove_dir_all(env.drop.join("dir-then-file")).unwrap();
    env.write("dir-then-file", b"now a file");
    env.write("another.txt", b"another");
    let out = env.run_once();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("dir-then-file"), "{log}");
    assert!(has_content(&env.target.join("another.txt"), b"another"));

    let status = env.command(&["status", "--json"]).output().unwrap();
    assert!(status.status.success());
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["failed"], 1, "{report}");
    assert_eq!(report["published"], 3, "{report}");
    assert_eq!(report["failures"][0]["path"], "dir-then-file");
    assert!(report["failures"][0]["error"]
        .as_str()
        .unwrap()
        .contains("directory"));

    // Once the failing file is gone, it is no longer reported.
    std::fs::remove_file(env.drop.join("dir-then-file")).unwrap();
    let out = env.run_once();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = env.command(&["status", "--json"]).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["failed"], 0, "{report}");
}

#[test]
fn config_errors_exit_2_and_name_the_key() {
    let env = Env::new();
    let cases: &[(&str, &str, &str)] = &[
        ("DROPSLOT_UPLOAD__SLOTS", "0", "upload.slots"),
        ("DROPSLOT_DEBOUNCE__QUIET", "soonish", "debounce.quiet"),
        ("DROPSLOT_REMOTE__ON_DELETE", "shred", "remote.on_delete"),
        ("DROPSLOT_SNAPSHOT__MAX_SIZE", "huge", "snapshot.max_size"),
    ];
    for (var, value, key) in cases {
        let out = env
            .command(&["run", "--once"])
            .env(var, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(
            stderr.contains(key),
            "{var}={value} does not name {key}: {stderr}"
        );
    }
    let bad_file = env.dir.path().join("bad.toml");
    std::fs::write(&bad_file, "[upload]\nslotz = 4\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dropslot"))
        .args(["check", "--config"])
        .arg(&bad_file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("slotz") && stderr.contains("bad.toml"),
        "{stderr}"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dropslot"))
        .args(["run", "--config", "/nonexistent/dropslot.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/dropslot.toml"));
}

#[test]
fn check_reports_the_remote_and_the_ledger() {
    let env = Env::new();
    let out = env.command(&["check"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("remote: ok"), "{stdout}");
    assert!(
        stdout.contains(&env.target.display().to_string()),
        "{stdout}"
    );
}
