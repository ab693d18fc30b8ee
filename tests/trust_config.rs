//! End-to-end tests of the configuration side of issue 10 ("Trust"), through the real binary:
//! overlapping directories refused, secrets never echoed by configuration errors, values out of
//! range named by key, and the default ignore rules (rsync's temporary names included) against
//! real producers.

use dropslot_testkit as common;

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

#[test]
fn a_syntax_error_on_a_secret_line_names_the_key_and_line_but_never_the_value() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = Env::new();
    let webdav = "[remote]\nkind = \"webdav\"\nurl = \"http://127.0.0.1:9/\"\nusername = \"u\"\n";
    let s3 = "[remote]\nkind = \"s3\"\nendpoint = \"http://127.0.0.1:9\"\nbucket = \"b\"\n";
    let cases: &[(&str, &str, &str)] = &[
        (webdav, "password = \"hunter2-secret\n", "password"),
        (
            s3,
            "secret_access_key = \"hunter2-secret\n",
            "secret_access_key",
        ),
        (
            s3,
            "access_key_id = \"hunter2-secret\nsecret_access_key = \"x1\"\n",
            "access_key_id",
        ),
        // Unterminated multi-line string: the error is reported past the last line.
        (webdav, "password = \"\"\"\nhunter2-secret\n", "password"),
    ];
    // Lines 1-4 are the [remote] header and three keys; the multi-line error is past the end.
    let expected_line = |secret_line: &str| {
        if secret_line.contains("\"\"\"") {
            "line 7"
        } else {
            "line 5"
        }
    };
    let mut refusals = 0;
    for (remote, secret_line, key) in cases {
        configure(&env, &format!("{remote}{secret_line}"));
        std::fs::set_permissions(&env.config, std::fs::Permissions::from_mode(0o600)).unwrap();
        for args in [&["check"][..], &["run", "--once"][..]] {
            let out = env.command(args).output().unwrap();
            let text = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
            assert_eq!(out.status.code(), Some(2), "{key}: {args:?}: {text}");
            assert!(
                text.contains(&format!("remote.{key}")),
                "{key} not named: {text}"
            );
            let line = expected_line(secret_line);
            assert!(text.contains(line), "{line} not named: {text}");
            assert!(!text.contains("hunter2"), "the secret was echoed: {text}");
            refusals += 1;
        }
    }
    // A secret given in the environment is scrubbed from errors too.
    configure(
        &env,
        &format!("{webdav}password = \"from-the-file\"\n[upload]\nslots = \"many\"\n"),
    );
    let out = env
        .command(&["check"])
        .env("DROPSLOT_REMOTE__PASSWORD", "hunter2-env")
        .env("DROPSLOT_REMOTE__URL", "http://hunter2-env@127.0.0.1:9/")
        .output()
        .unwrap();
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        !text.contains("hunter2") && !text.contains("from-the-file"),
        "{text}"
    );
    eprintln!(
        "FIGURE secrets: {refusals} syntax errors on secret lines (3 keys, one multi-line) refused with exit 2 naming key and line; secret bytes in the output: 0"
    );
}

#[test]
fn a_config_file_other_users_can_read_draws_one_warning_when_it_holds_a_secret() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = Env::new();
    // A kind with a password; the local target is not one of its keys.
    env.drop_local_target();
    let base = std::fs::read_to_string(&env.config).unwrap();
    let webdav = "kind = \"webdav\"\nurl = \"http://127.0.0.1:9/\"\nusername = \"u\"\n";
    let warnings = |mode: u32, extra: &str| {
        configure(
            &env,
            &base.replacen("[remote]\n", &format!("[remote]\n{webdav}{extra}"), 1),
        );
        std::fs::set_permissions(&env.config, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = env.command(&["status"]).output().unwrap();
        let text = stderr(&out);
        assert!(out.status.success(), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        text.lines()
            .filter(|l| l.contains("chmod 600"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let secret = "password = \"hunter2-secret\"\n";
    let warned = warnings(0o644, secret);
    assert_eq!(warned.len(), 1, "{warned:?}");
    let config = env.config.display().to_string();
    assert!(
        warned[0].contains(&format!("chmod 600 {config}")) && warned[0].contains("remote.password"),
        "{warned:?}"
    );
    assert!(warnings(0o600, secret).is_empty());
    assert!(
        warnings(0o640, secret).is_empty(),
        "group-readable is the operator's choice"
    );
    assert!(warnings(0o644, "").is_empty(), "no secret, no warning");
    assert!(warnings(0o644, "# password = \"in a comment\"\n").is_empty());
    eprintln!(
        "FIGURE readable config: warnings for a 0644 file holding a secret: {}; for 0600, 0640 and a 0644 file without secret: 0",
        warned.len()
    );
}

#[test]
fn sizes_and_numbers_out_of_range_are_refused_naming_the_key() {
    let env = Env::new();
    let base = std::fs::read_to_string(&env.config).unwrap();
    let s3 = "[remote]\nkind = \"s3\"\nendpoint = \"http://127.0.0.1:9\"\nbucket = \"b\"\n";
    let cases: &[(&str, String, &str)] = &[
        (
            "4EiB threshold (overflowed the staging budget; run --once hung)",
            format!("{s3}multipart_threshold = \"4EiB\"\n"),
            "remote.multipart_threshold",
        ),
        (
            "part above S3's 5GiB",
            format!("{s3}part_size = \"6GiB\"\nmultipart_threshold = \"8GiB\"\n"),
            "remote.part_size",
        ),
        (
            "integer beyond 64 bits",
            base.replace("[upload]\n", "[upload]\nslots = 99999999999999999999\n"),
            "upload.slots",
        ),
        (
            "negative count",
            base.replace("[upload]\n", "[upload]\nmax_attempts = -1\n"),
            "upload.max_attempts",
        ),
    ];
    for (case, toml, key) in cases {
        configure(&env, toml);
        assert_refused(&env, case, &[key]);
    }
    // The same through the environment.
    configure(&env, &base);
    for (var, value, key) in [
        ("DROPSLOT_UPLOAD__MAX_ATTEMPTS", "-1", "upload.max_attempts"),
        (
            "DROPSLOT_UPLOAD__SLOTS",
            "99999999999999999999",
            "upload.slots",
        ),
    ] {
        let out = env.command(&["check"]).env(var, value).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}: {}", stderr(&out));
        assert!(stderr(&out).contains(key), "{var}: {}", stderr(&out));
    }
    eprintln!(
        "FIGURE ranges: {} out-of-range settings in the file and 2 in the environment refused with exit 2 naming the key",
        cases.len()
    );
}

#[test]
fn a_huge_value_is_echoed_once_and_cut_short() {
    let env = Env::new();
    let huge = "Z".repeat(10 << 20);
    let layout = |watch: &str, state: &str, extra: &str| {
        format!("[watch]\npath = \"{watch}\"\n[remote]\npath = \"out\"\n[state]\ndir = \"{state}\"\n{extra}")
    };
    let mut longest = 0;
    for (key, toml) in [
        ("watch.path", layout(&huge, "st", "")),
        ("state.dir", layout("drop", &format!("a/{huge}"), "")),
        (
            "debounce.quiet",
            layout("drop", "st", &format!("[debounce]\nquiet = \"{huge}\"\n")),
        ),
    ] {
        configure(&env, &toml);
        for args in [&["check"][..], &["run", "--once"][..]] {
            let out = env.command(args).output().unwrap();
            let text = stderr(&out);
            let head = &text[..text.len().min(2000)];
            assert_eq!(out.status.code(), Some(2), "{key}: {head}");
            assert!(text.contains(key), "{key}: {head}");
            assert!(text.len() < 2000, "{key}: {} bytes of error", text.len());
            // At most 200 of the value's bytes (a temporary directory's random name may hold a Z).
            assert!(!text.contains(&"Z".repeat(201)), "{key}: {head}");
            assert_eq!(
                text.matches(&format!("… ({} bytes)", 10 << 20)).count()
                    + text
                        .matches(&format!("… ({} bytes)", (10 << 20) + 2))
                        .count(),
                1,
                "{key}: not echoed exactly once: {text}"
            );
            longest = longest.max(text.len());
        }
    }
    eprintln!(
        "FIGURE huge value: a 10 MiB value in watch.path, state.dir and debounce.quiet refused with exit 2 by key, echoed once, longest error {longest} bytes"
    );
}

#[test]
fn check_on_a_drop_folder_that_is_a_file_fails_naming_watch_path() {
    let env = Env::new();
    std::fs::remove_dir(&env.drop).unwrap();
    std::fs::write(&env.drop, b"not a directory").unwrap();
    for args in [&["check"][..], &["run", "--once"][..]] {
        let out = env.command(args).output().unwrap();
        let text = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert!(
            text.contains("watch.path") && text.contains("is a file, not a directory"),
            "{args:?}: {text}"
        );
        assert!(!text.contains("does not exist"), "{text}");
    }
    // A drop folder that does not exist yet is still fine: the daemon waits for it.
    std::fs::remove_file(&env.drop).unwrap();
    let out = env.command(&["check"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("does not exist yet"), "{stdout}");
    eprintln!("FIGURE drop folder is a file: check and run --once exit 2 naming watch.path; missing folder: check exit 0");
}

/// The JSON log lines that report an ignore rule's first skip.
fn ignore_reports(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("said once per rule"))
        })
        .collect()
}

#[test]
fn each_ignore_rule_says_once_what_it_skipped_a_file_named_tilde_included() {
    let env = Env::new();
    for rel in [
        "~",
        "x~",
        "d/y~",
        "a.part",
        "d/b.part",
        "ok.txt",
        "d/ok2.txt",
    ] {
        env.write(rel, rel.as_bytes());
    }
    let out = env.run_once();
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(has_content(&env.target.join("ok.txt"), b"ok.txt"));
    assert!(has_content(&env.target.join("d/ok2.txt"), b"d/ok2.txt"));
    assert_eq!(
        files_under(&env.target),
        [Path::new("d/ok2.txt"), Path::new("ok.txt")]
    );
    let reports = ignore_reports(&log);
    let for_rule = |rule: &str| {
        reports
            .iter()
            .filter(|r| r["rule"].as_str().is_some_and(|s| s.contains(rule)))
            .collect::<Vec<_>>()
    };
    let tilde = for_rule("\"*~\"");
    assert_eq!(tilde.len(), 1, "{reports:?}");
    assert!(
        ["~", "x~", "d/y~"].contains(&tilde[0]["path"].as_str().unwrap()),
        "{tilde:?}"
    );
    assert_eq!(for_rule("\"*.part\"").len(), 1, "{reports:?}");
    assert_eq!(reports.len(), 2, "{reports:?}");
    let lines_for_five = reports.len();

    // A drop folder holding only `~`: that file is named.
    let env = Env::new();
    env.write("~", b"tilde");
    let out = env.run_once();
    let reports = ignore_reports(&stderr(&out));
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0]["path"], "~");
    assert_eq!(reports[0]["level"], "INFO");
    eprintln!(
        "FIGURE ignore reports: 5 ignored files under 2 patterns gave {lines_for_five} INFO lines (one per pattern); a lone `~` gave {} naming it",
        reports.len()
    );
}

/// Every name in the ledger and on the remote is one of `expected`: no temporary name.
fn assert_only(env: &Env, expected: &[String]) {
    use dropslot_actors::ledger::Ledger as _;
    let mut recorded = Vec::new();
    env.ledger()
        .for_each_path(&mut |p| recorded.push(p.display().to_string()))
        .unwrap();
    recorded.sort();
    let mut on_remote: Vec<String> = files_under(&env.target)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    on_remote.sort();
    assert_eq!(recorded, expected, "ledger");
    assert_eq!(on_remote, expected, "remote");
}

#[test]
fn rsync_temporary_files_never_reach_the_ledger_or_the_remote() {
    use dropslot_actors::watcher::is_rsync_temp_name;
    let mut env = Env::new();
    // A temporary file still growing after max_wait was snapshotted and published under its
    // temporary name (finding B): rsync at 100 kB/s pauses between writes for longer than the
    // quiet window, and a 1 MiB file takes ten times max_wait. With the rule off
    // (watch.ignore_rsync_temp = false) this test records `big/.file-0.bin.XXXXXX`.
    env.set("stability.max_wait", "1s");
    let src = env.dir.path().join("src");
    let big = "big/file-0.bin";
    std::fs::create_dir_all(src.join("big")).unwrap();
    write_large_file(&src.join(big), 1);
    let mut expected = vec![big.to_string()];
    for i in 0..20 {
        let rel = format!("small/{}/f{i}.txt", i % 4);
        std::fs::create_dir_all(src.join(&rel).parent().unwrap()).unwrap();
        std::fs::write(src.join(&rel), format!("small file {i}\n").repeat(100)).unwrap();
        expected.push(rel);
    }
    expected.sort();

    let daemon = env.spawn();
    wait_until("start-up scan", Some(&daemon), || {
        daemon.log_text().contains("scan finished")
    });
    // Runs rsync, watching the drop folder for its temporary names meanwhile.
    let rsync = |extra: &[&str]| {
        let mut child = std::process::Command::new("rsync")
            .args(["-a", "--bwlimit=100"])
            .args(extra)
            .arg(format!("{}/", src.display()))
            .arg(format!("{}/", env.drop.display()))
            .spawn()
            .expect("rsync is installed (scripts/test-servers.sh)");
        let mut seen = std::collections::BTreeSet::new();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            for rel in files_under(&env.drop) {
                if rel.file_name().is_some_and(is_rsync_temp_name) {
                    seen.insert(rel);
                }
            }
            // Sampling interval of the observation, not a wait for an outcome.
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(status.success(), "rsync failed");
        seen
    };
    let all_published = || {
        expected.iter().all(|rel| {
            let want = std::fs::read(src.join(rel)).unwrap();
            env.ledger()
                .lookup(Path::new(rel))
                .ok()
                .flatten()
                .is_some_and(|e| e.sha256 == Some(sha256(&want)))
                && has_content(&env.target.join(rel), &want)
        })
    };
    use dropslot_actors::ledger::Ledger as _;
    let seen = rsync(&[]);
    assert!(!seen.is_empty(), "rsync's temporary files were never seen");
    wait_until("the tree published", Some(&daemon), all_published);
    assert_only(&env, &expected);

    // Rewritten in place, slowly: rsync writes no temporary file, the final names get the new
    // content.
    let mut bytes = std::fs::read(src.join(big)).unwrap();
    bytes.iter_mut().for_each(|b| *b = b.wrapping_add(1));
    std::fs::write(src.join(big), bytes).unwrap();
    let seen_inplace = rsync(&["--inplace", "-I"]);
    assert!(seen_inplace.is_empty(), "{seen_inplace:?}");
    wait_until("the rewritten file published", Some(&daemon), all_published);
    assert_only(&env, &expected);

    let log = daemon.log_text();
    let reports = ignore_reports(&log);
    let rsync_reports: Vec<_> = reports
        .iter()
        .filter(|r| r["rule"].as_str().is_some_and(|s| s.contains("rsync")))
        .collect();
    assert_eq!(rsync_reports.len(), 1, "{reports:?}");
    daemon.stop_cleanly();
    eprintln!(
        "FIGURE rsync: {} temporary names seen in the drop folder during rsync -a (--bwlimit=100, max_wait 1s), 0 of them in the ledger or on the remote; {} files published by their own names; --inplace rewrite of 1 MiB: 0 temporary names, final content published",
        seen.len(),
        expected.len()
    );
}

#[test]
fn files_holding_secrets_are_never_inside_the_drop_folder_and_warned_about_when_readable() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = Env::new();
    let dir = env.dir.path();
    // Kinds with secrets; the local target is not one of their keys.
    env.drop_local_target();
    let base = std::fs::read_to_string(&env.config).unwrap();

    // The configuration file itself, holding a password, inside the drop folder.
    let inside = env.drop.join("dropslot.toml");
    std::fs::write(
        &inside,
        base.replacen(
            "[remote]\n",
            "[remote]\nkind = \"webdav\"\nurl = \"http://127.0.0.1:9/\"\nusername = \"u\"\npassword = \"hunter2-secret\"\n",
            1,
        ),
    )
    .unwrap();
    std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o600)).unwrap();
    for args in [&["check"][..], &["run", "--once"][..]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dropslot"))
            .args(args)
            .arg("--config")
            .arg(&inside)
            .current_dir(dir)
            .output()
            .unwrap();
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert!(
            text.contains("watch.path") && text.contains("remote.password"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
    }
    assert!(!env.target.exists(), "something was published");

    // A Tahoe write-cap file inside the drop folder, then outside it but readable by all.
    let tahoe = |dircap: &Path| {
        base.replacen(
            "[remote]\n",
            &format!(
                "[remote]\nkind = \"tahoe\"\ngateway = \"http://127.0.0.1:9\"\ndircap_file = {dircap:?}\n"
            ),
            1,
        )
    };
    let cap_inside = env.drop.join("cap");
    std::fs::write(&cap_inside, "URI:DIR2:hunter2secret:x").unwrap();
    configure(&env, &tahoe(&cap_inside));
    assert_refused(
        &env,
        "dircap inside the drop folder",
        &["remote.dircap_file", "watch.path"],
    );

    let cap = dir.join("cap");
    std::fs::write(&cap, "URI:DIR2:hunter2secret:x").unwrap();
    std::fs::set_permissions(&cap, std::fs::Permissions::from_mode(0o644)).unwrap();
    configure(&env, &tahoe(&cap));
    let out = env.command(&["status"]).output().unwrap();
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    let warned: Vec<&str> = text.lines().filter(|l| l.contains("chmod 600")).collect();
    assert_eq!(warned.len(), 1, "{text}");
    assert!(
        warned[0].contains(&format!("chmod 600 {}", cap.display())),
        "{text}"
    );
    std::fs::set_permissions(&cap, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = env.command(&["status"]).output().unwrap();
    assert!(!stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    eprintln!(
        "FIGURE secret files: a config file with a password and a dircap file inside the drop folder refused with exit 2 (0 files published); a 0644 dircap file: 1 warning, at 0600: 0"
    );
}
