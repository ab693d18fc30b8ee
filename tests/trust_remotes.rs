//! Issue 10 ("Trust"), the remote side: the real binary against real servers on loopback (nginx
//! WebDAV, moto S3, a Tahoe grid, the local remote), each claim checked by an independent client
//! or on the server's own disk. Covers lying servers (finding 5), WebDAV control characters
//! (finding 2), Tahoe's NFC names and S3's byte-exact keys (finding 3), staging-name twins
//! (finding 4), modes and mtimes (finding D) and empty directories after deletes (finding 10).

use dropslot_testkit as common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::flaky_proxy::FlakyProxy;
use common::servers::{Server, TahoeGrid};
use common::*;
use dropslot_actors::ledger::{EntryStatus, Ledger};

fn use_webdav(env: &mut Env, url: &str) {
    env.set("remote.kind", "webdav")
        .set("remote.url", &format!("{url}/drops/"));
}

fn use_s3(env: &mut Env, endpoint: &str) {
    env.set("remote.kind", "s3")
        .set("remote.endpoint", endpoint)
        .set("remote.bucket", "drops")
        .set("remote.path_style", "true")
        .set("remote.region", "us-east-1")
        .set("remote.access_key_id", "test")
        .set("remote.secret_access_key", "test")
        .set("remote.multipart_threshold", "5MiB")
        .set("remote.part_size", "5MiB");
}

fn use_tahoe(env: &mut Env, grid: &TahoeGrid) {
    let dircap_file = env.dir.path().join("drop_upload_dircap");
    std::fs::write(&dircap_file, format!("{}\n", grid.dircap)).unwrap();
    env.set("remote.kind", "tahoe")
        .set("remote.gateway", &grid.gateway.url())
        .set("remote.dircap_file", &dircap_file.display().to_string());
}

/// `dropslot check`: exit code and what it printed.
fn check(env: &Env) -> (Option<i32>, String) {
    let out = env.command(&["check"]).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), said)
}

/// `dropslot status --json`.
fn status(env: &Env) -> serde_json::Value {
    let out = env.command(&["status", "--json"]).output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The error `status --json` reports for `rel`, if it failed.
fn failure_of(report: &serde_json::Value, rel: &str) -> Option<String> {
    report["failures"]
        .as_array()?
        .iter()
        .find(|f| f["path"] == rel)
        .map(|f| f["error"].as_str().unwrap_or_default().to_string())
}

fn published(env: &Env, rel: &str) -> bool {
    env.ledger()
        .lookup(Path::new(rel))
        .unwrap()
        .is_some_and(|e| e.status == EntryStatus::Published)
}

/// Drops `count` small files, runs `run --once` against a lying server and asserts the finding-5
/// contract: exit 1, every file named as failed, none recorded as published.
fn lying_run(env: &Env, files: &BTreeMap<String, Vec<u8>>) -> (usize, usize, f64) {
    for (rel, bytes) in files {
        env.write(rel, bytes);
    }
    let started = Instant::now();
    let out = env.run_once();
    let took = started.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{log}");
    let recorded = files.keys().filter(|rel| published(env, rel)).count();
    let report = status(env);
    let named = files
        .keys()
        .filter(|rel| {
            failure_of(&report, rel).is_some_and(|e| e.contains("does not hold it"))
                && log.contains(rel.as_str())
        })
        .count();
    assert_eq!(recorded, 0, "files recorded as published on a lying server");
    assert_eq!(
        named,
        files.len(),
        "not every file failed by name: {report}"
    );
    (recorded, named, took)
}

fn small_files(count: usize) -> BTreeMap<String, Vec<u8>> {
    (0..count)
        .map(|i| {
            (
                format!("d{}/f{i}.txt", i % 3),
                format!("file {i}\n").repeat(i + 1).into_bytes(),
            )
        })
        .collect()
}

#[test]
fn a_lying_webdav_server_fails_check_and_nothing_is_recorded_as_published() {
    let Some(server) = Server::nginx(None) else {
        return;
    };
    let proxy = FlakyProxy::lying(&server.url());
    // `check` wants the collection to exist (a run creates it).
    std::fs::create_dir_all(server.webdav_root().join("drops")).unwrap();
    let mut env = Env::new();
    use_webdav(&mut env, &server.url());
    let (honest, said) = check(&env);
    assert_eq!(honest, Some(0), "check against nginx itself: {said}");
    use_webdav(&mut env, &proxy.url());
    let (code, said) = check(&env);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("did not keep the probe"), "{said}");

    let files = small_files(30);
    let (recorded, named, took) = lying_run(&env, &files);
    let on_disk = files_under(&server.webdav_root()).len();
    assert_eq!(on_disk, 0, "the lying proxy forwarded a write");
    eprintln!(
        "FIGURE lying WebDAV: check exit {code:?} (\"did not keep the probe\"); run --once exit 1, \
         {recorded} of {} recorded, {named} failed by name, {} writes acknowledged and dropped, {took:.1} s",
        files.len(),
        proxy.counts.lies.load(std::sync::atomic::Ordering::SeqCst)
    );
}

#[test]
fn a_lying_s3_server_fails_check_and_nothing_is_recorded_as_published() {
    let Some(server) = Server::moto() else {
        return;
    };
    server.create_bucket("drops");
    let proxy = FlakyProxy::lying(&server.url());
    let mut env = Env::new();
    use_s3(&mut env, &server.url());
    let (honest, said) = check(&env);
    assert_eq!(honest, Some(0), "check against moto itself: {said}");
    use_s3(&mut env, &proxy.url());
    let (code, said) = check(&env);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("did not keep the probe"), "{said}");

    let mut files = small_files(30);
    // One multipart upload: its parts and its completion are "acknowledged" too.
    files.insert("big/b.bin".into(), vec![7u8; 6 << 20]);
    let (recorded, named, took) = lying_run(&env, &files);
    eprintln!(
        "FIGURE lying S3: check exit {code:?} (\"did not keep the probe\"); run --once exit 1, \
         {recorded} of {} recorded (1 multipart), {named} failed by name, {} writes acknowledged \
         and dropped, {took:.1} s",
        files.len(),
        proxy.counts.lies.load(std::sync::atomic::Ordering::SeqCst)
    );
}

#[test]
fn webdav_names_with_tab_lf_and_cr_arrive_under_their_own_names() {
    let Some(server) = Server::nginx(None) else {
        return;
    };
    let mut env = Env::new();
    use_webdav(&mut env, &server.url());
    let names = [
        "ab.txt",
        "a\tb.txt",
        "a\nb",
        "a\rb",
        "tabdir/x.txt",
        "tab\tdir/x.txt",
        "tab\tdir/y\t.txt",
        "50% ?#.txt",
    ];
    let files: BTreeMap<String, Vec<u8>> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                n.to_string(),
                format!("content {i} of {n:?}\n").into_bytes(),
            )
        })
        .collect();
    for (rel, bytes) in &files {
        env.write(rel, bytes);
    }
    let out = env.run_once();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = server.webdav_root().join("drops");
    let mut intact = 0;
    for (rel, bytes) in &files {
        assert!(
            has_content(&root.join(rel), bytes),
            "{rel:?} wrong on nginx's disk"
        );
        assert!(published(&env, rel), "{rel:?} not recorded");
        intact += 1;
    }
    let stored = files_under(&root).len();
    assert_eq!(
        stored,
        files.len(),
        "names merged or extra files on the server"
    );
    eprintln!(
        "FIGURE WebDAV names: {intact} of {} names with tab, LF, CR, % ? # read back intact from \
         nginx's disk, {stored} distinct files stored",
        files.len()
    );
}

#[test]
fn tahoe_takes_nfc_names_and_refuses_others_by_name() {
    let Some(grid) = TahoeGrid::start() else {
        return;
    };
    let mut env = Env::new();
    use_tahoe(&mut env, &grid);
    let (code, said) = check(&env);
    assert_eq!(code, Some(0), "{said}");
    let nfc = ["caf\u{e9}.txt", "r\u{e9}p/one.txt", "r\u{e9}p/two.txt"];
    let nfd = [
        "cafe\u{301}.txt",
        "re\u{301}p/one.txt",
        "re\u{301}p/three.txt",
        "tab\tname.txt",
    ];
    let content = |rel: &str| format!("this is {rel:?}\n").into_bytes();
    for rel in nfc.iter().chain(&nfd) {
        env.write(rel, &content(rel));
    }
    let out = env.run_once();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{log}");
    let report = status(&env);
    for rel in nfc {
        assert_eq!(grid.download(rel), Some(content(rel)), "{rel} on the grid");
        assert!(published(&env, rel), "{rel} not recorded");
    }
    let mut refused = 0;
    for rel in nfd {
        let error = failure_of(&report, rel).unwrap_or_else(|| panic!("{rel:?}: {report}"));
        assert!(
            error.contains("NFC") || error.contains("control"),
            "{error}"
        );
        assert!(!published(&env, rel), "{rel:?} recorded");
        refused += 1;
    }
    // Exactly one child per name on the grid, holding the NFC file's content.
    let top = grid.list("");
    let children = top[1]["children"].as_object().unwrap();
    let cafes = children.keys().filter(|k| k.starts_with("caf")).count();
    assert_eq!(cafes, 1, "{top}");
    let rep = grid.list("r%C3%A9p");
    let in_rep: Vec<&String> = rep[1]["children"].as_object().unwrap().keys().collect();
    assert_eq!(in_rep, ["one.txt", "two.txt"], "{rep}");
    eprintln!(
        "FIGURE Tahoe names: {} NFC names read back by the gateway's own client, {refused} \
         NFD/control names refused by name, 1 child per name on the grid, never both recorded",
        nfc.len()
    );
}

/// A user file named like another file's staging name is refused by name, and the other file's
/// own content is what gets published.
fn staging_twin(env: &Env, remote_copy: impl Fn(&str) -> Option<Vec<u8>>) -> usize {
    let pairs = ["b.txt", "sub/dir/c.bin"];
    for rel in pairs {
        let twin = Path::new(rel).with_file_name(dropslot::remote::staging_name(Path::new(rel)));
        env.write(rel, format!("the real {rel}\n").as_bytes());
        env.write(
            twin.to_str().unwrap(),
            b"twin bytes that must not be published\n",
        );
    }
    let out = env.run_once();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{log}");
    let report = status(env);
    let mut refused = 0;
    for rel in pairs {
        let twin = Path::new(rel).with_file_name(dropslot::remote::staging_name(Path::new(rel)));
        let twin = twin.to_str().unwrap();
        let error = failure_of(&report, twin).unwrap_or_else(|| panic!("{twin}: {report}"));
        assert!(
            error.contains("name prefix .dropslot- is reserved for dropslot's staging files"),
            "{error}"
        );
        assert!(!published(env, twin));
        assert_eq!(
            remote_copy(rel),
            Some(format!("the real {rel}\n").into_bytes()),
            "{rel} on the remote"
        );
        assert_eq!(remote_copy(twin), None, "{twin} on the remote");
        refused += 1;
    }
    refused
}

#[test]
fn a_user_file_named_like_a_staging_file_is_refused_on_local_and_webdav() {
    // The default ignore list holds `*.partial`, which would hide the twins before the remote
    // sees them: the refusal itself is what is tested, so no pattern here matches them.
    let mut env = Env::new();
    env.set("watch.ignore", "*.nothing-matches");
    let target = env.target.clone();
    let local = staging_twin(&env, |rel| std::fs::read(target.join(rel)).ok());

    let Some(server) = Server::nginx(None) else {
        return;
    };
    let mut env = Env::new();
    env.set("watch.ignore", "*.nothing-matches");
    use_webdav(&mut env, &server.url());
    let root = server.webdav_root().join("drops");
    let webdav = staging_twin(&env, |rel| std::fs::read(root.join(rel)).ok());
    eprintln!(
        "FIGURE staging twins: refused by name {local} of 2 (local), {webdav} of 2 (WebDAV); the \
         real files published with their own content"
    );
}

#[test]
fn modes_and_mtimes_are_kept_on_the_local_remote_and_as_s3_metadata() {
    let env = Env::new();
    let tool = env.write("bin/tool.sh", b"#!/bin/sh\necho hi\n");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let setuid = env.write("bin/setuid", b"not special on the remote\n");
    std::fs::set_permissions(&setuid, std::fs::Permissions::from_mode(0o4750)).unwrap();
    let old = env.write("old.txt", b"from another century\n");
    let touched = Command::new("touch")
        .args(["-d", "1999-12-31 23:59:58.123456789 UTC"])
        .arg(&old)
        .status()
        .unwrap();
    assert!(touched.success());
    let out = env.run_once();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta = |p: &Path| std::fs::metadata(p).unwrap();
    let remote_tool = meta(&env.target.join("bin/tool.sh"));
    assert_eq!(remote_tool.mode() & 0o7777, 0o755);
    assert_eq!(meta(&env.target.join("bin/setuid")).mode() & 0o7777, 0o750);
    let (src, dst) = (meta(&old), meta(&env.target.join("old.txt")));
    assert_eq!(
        (dst.mtime(), dst.mtime_nsec()),
        (src.mtime(), src.mtime_nsec()),
        "mtime not kept"
    );
    assert_eq!(src.mtime(), 946_684_798);

    let Some(server) = Server::moto() else {
        return;
    };
    server.create_bucket("drops");
    let mut s3env = Env::new();
    use_s3(&mut s3env, &server.url());
    let tool = s3env.write("tool.sh", b"#!/bin/sh\n");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let old = s3env.write("old.txt", b"old\n");
    assert!(Command::new("touch")
        .args(["-d", "1999-12-31 23:59:58.5 UTC"])
        .arg(&old)
        .status()
        .unwrap()
        .success());
    let out = s3env.run_once();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // HEAD with curl, signed, straight to moto: an independent client.
    let head = |rel: &str| {
        let out = Command::new("curl")
            .args([
                "-s",
                "-I",
                "--aws-sigv4",
                "aws:amz:us-east-1:s3",
                "--user",
                "test:test",
            ])
            .arg(format!("{}/drops/{rel}", server.url()))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_lowercase()
    };
    let tool_head = head("tool.sh");
    assert!(tool_head.contains("x-amz-meta-mode: 100755"), "{tool_head}");
    let old_head = head("old.txt");
    assert!(
        old_head.contains("x-amz-meta-mtime: 946684798.500000000"),
        "{old_head}"
    );
    assert!(old_head.contains("x-amz-meta-mode: 100644"), "{old_head}");
    eprintln!(
        "FIGURE modes and mtimes: local tool.sh mode {:o}, setuid 4750 -> {:o}, old.txt mtime \
         {}.{:09} kept to the nanosecond; moto HEAD x-amz-meta-mode 100755, x-amz-meta-mtime \
         946684798.500000000",
        remote_tool.mode() & 0o7777,
        meta(&env.target.join("bin/setuid")).mode() & 0o7777,
        dst.mtime(),
        dst.mtime_nsec()
    );
}

#[test]
fn deletes_leave_no_empty_directories_on_the_local_remote() {
    let mut env = Env::new();
    env.set("remote.on_delete", "delete")
        .set("upload.slots", "8");
    let daemon = env.spawn();
    let files = write_tree(&env, 400, |i| {
        format!("top/a{}/b{}/c{}/f{i}.txt", i % 4, i % 7, i % 3)
    });
    env.write("keep/k.txt", b"stays");
    wait_until("everything published", Some(&daemon), || {
        env.ledger().status().unwrap().published == files.len() as u64 + 1
    });
    let dirs_before = count_dirs(&env.target.join("top"));
    let started = Instant::now();
    std::fs::remove_dir_all(env.drop.join("top")).unwrap();
    wait_until("the deleted tree leaves the remote", Some(&daemon), || {
        !env.target.join("top").exists()
    });
    let took = started.elapsed().as_secs_f64();
    assert!(has_content(&env.target.join("keep/k.txt"), b"stays"));
    daemon.stop_cleanly();
    eprintln!(
        "FIGURE empty directories: {} files in {dirs_before} directories deleted locally; 0 \
         directories left on the local remote after {took:.1} s; the target root and keep/ stay",
        files.len()
    );
}

fn count_dirs(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| 1 + count_dirs(&e.path()))
        .sum()
}

/// S3 keys are byte-exact: names that differ only in Unicode normalisation stay two objects;
/// names S3 cannot hold unchanged (control characters) are refused by name.
#[test]
fn s3_keeps_nfc_and_nfd_names_apart_and_refuses_control_characters() {
    let Some(server) = Server::moto() else {
        return;
    };
    server.create_bucket("drops");
    let mut env = Env::new();
    use_s3(&mut env, &server.url());
    let kept = [
        "caf\u{e9}.txt",
        "cafe\u{301}.txt",
        "r\u{e9}p/a.txt",
        "re\u{301}p/a.txt",
    ];
    let refused = ["a\tb.txt", "a\nb"];
    let content = |rel: &str| format!("this is {rel:?}\n").into_bytes();
    for rel in kept.iter().chain(&refused) {
        env.write(rel, &content(rel));
    }
    let out = env.run_once();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{log}");
    // GET with curl, signed, straight to moto, the key percent-encoded byte for byte.
    let get = |rel: &str| {
        let encoded: String = rel
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'/' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let out = Command::new("curl")
            .args([
                "-s",
                "-f",
                "--aws-sigv4",
                "aws:amz:us-east-1:s3",
                "--user",
                "test:test",
            ])
            .arg(format!("{}/drops/{encoded}", server.url()))
            .output()
            .unwrap();
        out.status.success().then_some(out.stdout)
    };
    for rel in kept {
        assert_eq!(get(rel), Some(content(rel)), "{rel:?} on moto");
        assert!(published(&env, rel), "{rel:?} not recorded");
    }
    let report = status(&env);
    for rel in refused {
        let error = failure_of(&report, rel).unwrap_or_else(|| panic!("{rel:?}: {report}"));
        assert!(error.contains("S3 key"), "{error}");
        assert!(!published(&env, rel));
    }
    eprintln!(
        "FIGURE S3 names: {} names differing only in NFC/NFD read back as distinct objects by \
         curl; {} names with tab or LF refused by name",
        kept.len(),
        refused.len()
    );
}
