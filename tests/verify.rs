//! Issue 13 item 5, `dropslot verify`: the real binary against the local remote, nginx WebDAV,
//! moto S3 and a Tahoe grid. Objects are deleted, corrupted (same size, other bytes: only
//! `--deep` sees it) and added behind dropslot's back, on the server's disk or through an
//! independent client; `--repair` then `run --once` brings the remote back to what the ledger
//! says.

use dropslot_testkit as common;

use std::path::PathBuf;
use std::time::Instant;

use common::servers::{Server, TahoeGrid};
use common::*;

type Put = Box<dyn Fn(&str, &[u8])>;
type Get = Box<dyn Fn(&str) -> Option<Vec<u8>>>;

/// Changes made to the remote behind dropslot's back, and an independent read of it.
struct Behind {
    delete: Box<dyn Fn(&str)>,
    put: Put,
    get: Get,
}

/// A remote that is a directory on this machine (the local remote, nginx's document root).
fn on_disk(root: PathBuf) -> Behind {
    let (r1, r2, r3) = (root.clone(), root.clone(), root);
    Behind {
        delete: Box::new(move |rel| std::fs::remove_file(r1.join(rel)).unwrap()),
        put: Box::new(move |rel, bytes| {
            let path = r2.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }),
        get: Box::new(move |rel| std::fs::read(r3.join(rel)).ok()),
    }
}

/// `dropslot verify <args> --json`: exit code and report.
fn verify(env: &Env, args: &[&str]) -> (Option<i32>, serde_json::Value, f64) {
    let started = Instant::now();
    let out = env
        .command(&[&["verify", "--json"], args].concat())
        .output()
        .unwrap();
    let took = started.elapsed().as_secs_f64();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report, took)
}

/// The paths of one list of a report.
fn paths(report: &serde_json::Value, list: &str) -> Vec<String> {
    report[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {report}"))
        .iter()
        .map(|d| d["path"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn content(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect()
}

/// The files published first. A dot file, because nginx leaves dot files out of its listings:
/// verify must ask for it by name rather than call it missing.
fn files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("a.txt", content(1, 1000)),
        ("d/b.txt", content(2, 2000)),
        ("d/e/c.txt", content(3, 300)),
        (".hidden.txt", content(4, 100)),
        ("keep.txt", content(5, 4096)),
    ]
}

/// The whole story on one remote: equal after a run; a deleted object is missing, a corrupted
/// one is different only with `--deep`, an added one is extra; `--repair` and `run --once`
/// restore the first two; the extra one stays until the operator removes it.
fn scenario(kind: &str, env: &Env, behind: &Behind) {
    let files = files();
    for (rel, bytes) in &files {
        env.write(rel, bytes);
    }
    let out = env.run_once();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (code, report, equal_took) = verify(env, &[]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["equal"], true);
    assert_eq!(report["checked"], files.len());
    let (code, report, deep_equal_took) = verify(env, &["--deep"]);
    assert_eq!(code, Some(0), "{report}");

    (behind.delete)("a.txt");
    let corrupted = content(9, 2000);
    (behind.put)("d/b.txt", &corrupted);
    (behind.put)("extra/x.txt", b"not dropslot's\n");

    let (code, report, _) = verify(env, &[]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["equal"], false);
    assert_eq!(paths(&report, "missing"), ["a.txt"]);
    assert!(
        paths(&report, "different").is_empty(),
        "same size: only --deep can tell: {report}"
    );
    assert_eq!(paths(&report, "extra"), ["extra/x.txt"]);
    assert!(paths(&report, "unpublished").is_empty(), "{report}");

    let (code, report, deep_took) = verify(env, &["--deep"]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(paths(&report, "missing"), ["a.txt"]);
    assert_eq!(paths(&report, "different"), ["d/b.txt"]);

    let (code, report, _) = verify(env, &["--deep", "--repair"]);
    assert_eq!(code, Some(1), "{report}");
    let mut requeued = paths_of(&report["requeued"]);
    requeued.sort();
    assert_eq!(requeued, ["a.txt", "d/b.txt"]);
    assert_eq!(paths(&report, "not_repaired"), ["extra/x.txt"]);
    let uploads_before = env.uploads("a.txt");

    let out = env.run_once();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (rel, bytes) in &files {
        assert_eq!(
            (behind.get)(rel).as_deref(),
            Some(bytes.as_slice()),
            "{rel} after repair"
        );
    }
    assert_eq!(env.uploads("a.txt"), uploads_before + 1);
    assert_eq!(
        env.uploads("keep.txt"),
        1,
        "an equal file was uploaded again"
    );

    let (code, report, _) = verify(env, &["--deep"]);
    assert_eq!(code, Some(1), "the extra object is still there: {report}");
    assert!(paths(&report, "missing").is_empty(), "{report}");
    assert!(paths(&report, "different").is_empty(), "{report}");
    assert_eq!(paths(&report, "extra"), ["extra/x.txt"]);
    (behind.delete)("extra/x.txt");
    let (code, report, _) = verify(env, &["--deep"]);
    assert_eq!(code, Some(0), "{report}");

    eprintln!(
        "FIGURE verify {kind}: {} files; equal: exit 0 in {equal_took:.2} s (--deep {deep_equal_took:.2} s); \
         after 1 delete, 1 same-size corruption, 1 added object: size check found 1 missing, 0 different, \
         1 extra (exit 1), --deep found 1 missing, 1 different in {deep_took:.2} s; --repair re-queued 2, \
         run --once re-uploaded them, verify --deep exit 0 once the extra object was removed",
        files.len()
    );
}

fn paths_of(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn local_remote_deleted_corrupted_and_added_objects_are_found_and_repaired() {
    let env = Env::new();
    let behind = on_disk(env.target.clone());
    scenario("local", &env, &behind);
}

#[test]
fn text_report_names_each_difference_and_a_vanished_source_is_not_repaired() {
    let env = Env::new();
    env.write("gone.txt", b"published, then removed from both sides\n");
    assert_eq!(env.run_once().status.code(), Some(0));
    // Stopped daemon: the source and the remote copy both go away; then a new file arrives.
    std::fs::remove_file(env.drop.join("gone.txt")).unwrap();
    std::fs::remove_file(env.target.join("gone.txt")).unwrap();
    env.write("fresh.txt", b"not uploaded yet\n");
    // Leftovers of interrupted uploads are dropslot's own names, not extra objects.
    std::fs::write(env.target.join(".dropslot-0123456789abcdef.partial"), b"x").unwrap();
    let out = env.command(&["verify", "--repair"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("missing: 1\n  gone.txt: not on the remote"),
        "{text}"
    );
    assert!(
        text.contains("unpublished: 1\n  fresh.txt: in the drop folder, not in the ledger"),
        "{text}"
    );
    assert!(text.contains("no longer in the drop folder"), "{text}");
    assert!(text.contains("extra: 0\n"), "{text}");
    assert!(text.trim_end().ends_with("NOT equal"), "{text}");
    eprintln!("FIGURE verify text: exit 1, 1 missing (source gone: not repaired), 1 unpublished");
}

#[test]
fn a_remote_that_cannot_be_listed_is_an_error_naming_it() {
    let env = Env::new();
    env.write("f.txt", b"x");
    assert_eq!(env.run_once().status.code(), Some(0));
    // The target replaced by a file: listing it fails, and verify says so (exit 1, not "equal").
    std::fs::remove_dir_all(&env.target).unwrap();
    std::fs::write(&env.target, b"not a directory").unwrap();
    let out = env.command(&["verify"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("cannot list"), "{said}");
    assert!(said.contains(&env.target.display().to_string()), "{said}");
}

#[test]
fn webdav_deleted_corrupted_and_added_objects_are_found_and_repaired() {
    let Some(server) = Server::nginx(None) else {
        return;
    };
    let mut env = Env::new();
    env.set("remote.kind", "webdav")
        .set("remote.url", &format!("{}/drops/", server.url()));
    // nginx's own disk: the changes no WebDAV client made.
    let behind = on_disk(server.webdav_root().join("drops"));
    scenario("webdav (nginx)", &env, &behind);
}

#[test]
fn s3_deleted_corrupted_and_added_objects_are_found_and_repaired() {
    let Some(server) = Server::moto() else {
        return;
    };
    server.create_bucket("drops");
    let mut env = Env::new();
    env.set("remote.kind", "s3")
        .set("remote.endpoint", &server.url())
        .set("remote.bucket", "drops")
        .set("remote.prefix", "pre/fix")
        .set("remote.path_style", "true")
        .set("remote.region", "us-east-1")
        .set("remote.access_key_id", "test")
        .set("remote.secret_access_key", "test");
    // Outside the prefix: not this folder's, never reported.
    assert_eq!(
        server.s3_change("PUT", "drops", "elsewhere/y.txt", Some(b"other")),
        "200"
    );
    let server = std::rc::Rc::new(server);
    let (s1, s2, s3) = (server.clone(), server.clone(), server.clone());
    let behind = Behind {
        delete: Box::new(move |rel| {
            let status = s1.s3_change("DELETE", "drops", &format!("pre/fix/{rel}"), None);
            assert_eq!(status, "204", "DELETE {rel}");
        }),
        put: Box::new(move |rel, bytes| {
            let status = s2.s3_change("PUT", "drops", &format!("pre/fix/{rel}"), Some(bytes));
            assert_eq!(status, "200", "PUT {rel}");
        }),
        get: Box::new(move |rel| s3.s3_get("drops", &format!("pre/fix/{rel}"))),
    };
    scenario("s3 (moto)", &env, &behind);
}

#[test]
fn tahoe_deleted_corrupted_and_added_objects_are_found_and_repaired() {
    let Some(grid) = TahoeGrid::start() else {
        return;
    };
    grid.wait_connected();
    let mut env = Env::new();
    let dircap_file = env.dir.path().join("drop_upload_dircap");
    std::fs::write(&dircap_file, format!("{}\n", grid.dircap)).unwrap();
    env.set("remote.kind", "tahoe")
        .set("remote.gateway", &grid.gateway.url())
        .set("remote.dircap_file", &dircap_file.display().to_string());
    let grid = std::rc::Rc::new(grid);
    let (g1, g2, g3) = (grid.clone(), grid.clone(), grid.clone());
    let url =
        |grid: &TahoeGrid, rel: &str| format!("{}/uri/{}/{rel}", grid.gateway.url(), grid.dircap);
    let body_dir = tempfile::tempdir().unwrap();
    let body = body_dir.path().join("body");
    let behind = Behind {
        delete: Box::new(move |rel| {
            g1.curl(&["-f", "-X", "DELETE", &url(&g1, rel)]);
        }),
        put: Box::new(move |rel, bytes| {
            std::fs::write(&body, bytes).unwrap();
            let cap = g2.curl(&[
                "-f",
                "-X",
                "PUT",
                "--data-binary",
                &format!("@{}", body.display()),
                &url(&g2, rel),
            ]);
            assert!(cap.starts_with("URI:"), "PUT {rel}: {cap}");
        }),
        get: Box::new(move |rel| g3.download(rel)),
    };
    scenario("tahoe", &env, &behind);
}

/// What a plain and a deep verify cost on a tree of 2,000 files in 20 directories (WebDAV: one
/// PROPFIND per collection, then one GET per file with `--deep`), and that one deleted file among
/// them is found.
#[test]
fn webdav_two_thousand_files_are_verified_by_listing() {
    let Some(server) = Server::nginx(None) else {
        return;
    };
    let mut env = Env::new();
    env.set("remote.kind", "webdav")
        .set("remote.url", &format!("{}/drops/", server.url()));
    let files = write_tree(&env, 2000, |i| format!("dir{}/f{i}.txt", i % 20));
    let out = env.run_once();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, report, plain) = verify(&env, &[]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["checked"], files.len());
    let (code, report, deep) = verify(&env, &["--deep"]);
    assert_eq!(code, Some(0), "{report}");
    std::fs::remove_file(server.webdav_root().join("drops/dir7/f1007.txt")).unwrap();
    let (code, report, after) = verify(&env, &[]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(paths(&report, "missing"), ["dir7/f1007.txt"]);
    eprintln!(
        "FIGURE verify webdav 2000 files in 20 collections: plain {plain:.2} s, --deep {deep:.2} s; \
         1 deleted file found in {after:.2} s"
    );
}
