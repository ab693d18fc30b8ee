//! The S3 remote end to end: the real binary against real S3 servers on loopback (moto from
//! PyPI, s3rver from npm; see `scripts/test-servers.sh`), content checked by downloading back.

use dropslot_testkit as common;

use common::servers::Server;
use common::*;
use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStore, ObjectStoreExt};

const BUCKET: &str = "drops";

/// Points `env` at an S3 server with the given credentials.
fn use_s3(env: &mut Env, server: &Server, key: &str, secret: &str) {
    env.set("remote.kind", "s3")
        .set("remote.endpoint", &server.url())
        .set("remote.bucket", BUCKET)
        .set("remote.region", "us-east-1")
        .set("remote.path_style", "true")
        .set("remote.prefix", "in")
        .set("remote.access_key_id", key)
        .set("remote.secret_access_key", secret);
}

fn client(server: &Server, key: &str, secret: &str) -> object_store::aws::AmazonS3 {
    AmazonS3Builder::new()
        .with_endpoint(server.url())
        .with_allow_http(true)
        .with_bucket_name(BUCKET)
        .with_region("us-east-1")
        .with_access_key_id(key)
        .with_secret_access_key(secret)
        .with_virtual_hosted_style_request(false)
        .build()
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn remote_has(
    rt: &tokio::runtime::Runtime,
    store: &impl ObjectStore,
    rel: &str,
    expected: &[u8],
) -> bool {
    let key = object_store::path::Path::from(format!("in/{rel}"));
    rt.block_on(async {
        match store.get(&key).await {
            Ok(result) => result
                .bytes()
                .await
                .is_ok_and(|b| sha256(&b) == sha256(expected)),
            Err(_) => false,
        }
    })
}

#[test]
fn tree_of_small_files_rewrites_and_deletions_reach_s3_intact() {
    let Some(server) = Server::moto() else { return };
    server.create_bucket(BUCKET);
    let mut env = Env::new();
    use_s3(&mut env, &server, "test", "test");
    env.set("remote.on_delete", "delete")
        .set("upload.slots", "8")
        .set("debounce.quiet", "400ms");
    let daemon = env.spawn();
    let files = write_tree(&env, 2000, |i| format!("d{}/s{}/f-{i}.txt", i % 10, i % 3));
    let last = rewrite_rapidly(&env, "rewritten.txt", 50);
    let store = client(&server, "test", "test");
    let rt = runtime();
    wait_until("all objects downloaded back equal", Some(&daemon), || {
        env.ledger().status().unwrap().published >= 2001
    });
    for (rel, content) in &files {
        assert!(remote_has(&rt, &store, rel, content), "{rel} differs on S3");
    }
    assert!(remote_has(&rt, &store, "rewritten.txt", &last));
    assert_eq!(
        env.uploads("rewritten.txt"),
        1,
        "rapid rewrites were published more than once"
    );

    std::fs::remove_file(env.drop.join("d1/s1/f-1.txt")).unwrap();
    wait_until("deletion reaches S3", Some(&daemon), || {
        rt.block_on(store.head(&object_store::path::Path::from("in/d1/s1/f-1.txt")))
            .is_err()
    });
    assert!(daemon.stop().success());
    assert_eq!(env.ledger().status().unwrap().failed, 0);
}

#[test]
fn large_file_goes_up_in_parts_with_bounded_memory() {
    let Some(server) = Server::moto() else { return };
    server.create_bucket(BUCKET);
    let mut env = Env::new();
    use_s3(&mut env, &server, "test", "test");
    env.set("remote.multipart_threshold", "16MiB")
        .set("remote.part_size", "8MiB")
        .set("upload.slots", "2");
    let (path, peak_rss_mib) = publish_large_file(&env, 300, "to S3 in 8 MiB parts");
    // Streaming: memory is a few parts, nowhere near the file's size.
    assert!(
        peak_rss_mib < 150,
        "peak RSS {peak_rss_mib} MiB suggests the file was buffered"
    );
    let rt = runtime();
    let store = client(&server, "test", "test");
    assert!(remote_has(
        &rt,
        &store,
        "big.bin",
        &std::fs::read(&path).unwrap()
    ));
}

#[test]
fn wrong_credentials_fail_clearly_mark_nothing_published_and_never_show_the_secret() {
    let Some(server) = Server::s3rver(BUCKET) else {
        return;
    };
    // s3rver checks the key id (it does not verify every signature).
    let (key, secret) = ("WRONGKEY7Q", "wrong-secret-4f1d9c");
    let mut env = Env::new();
    use_s3(&mut env, &server, key, secret);
    env.set("upload.max_attempts", "2");
    env.write("a.txt", b"a");
    env.write("b/c.txt", b"c");

    let check = env.command(&["check"]).output().unwrap();
    let check_out = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{check_out}");
    assert!(check_out.contains("access denied"), "{check_out}");

    // Retrying cannot help: `run` refuses at its start-up health check (issue 11).
    let out = env.run_once();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(log.contains("access denied"), "{log}");
    let status = env.command(&["status", "--json"]).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["published"], 0, "{report}");
    for text in [
        &log,
        &check_out,
        &String::from_utf8_lossy(&status.stdout).into_owned(),
    ] {
        assert!(
            !text.contains(secret) && !text.contains(key),
            "a credential leaked:\n{text}"
        );
    }
}

#[test]
fn every_file_arrives_when_the_server_is_stopped_mid_run_and_started_again() {
    let Some(mut server) = Server::s3rver(BUCKET) else {
        return;
    };
    let mut env = Env::new();
    use_s3(&mut env, &server, "S3RVER", "S3RVER");
    env.set("upload.max_attempts", "1000")
        .set("upload.retry_max", "500ms");
    let daemon = env.spawn();
    let content = |i: usize| format!("survives the outage {i}").into_bytes();
    for i in 0..100 {
        env.write(&format!("before/f{i}.txt"), &content(i));
    }
    wait_until("some files published", Some(&daemon), || {
        env.ledger().status().unwrap().published > 0
    });
    server.stop();
    for i in 100..200 {
        env.write(&format!("during/f{i}.txt"), &content(i));
    }
    wait_until(
        "uploads failing while the server is down",
        Some(&daemon),
        || daemon.log_text().contains("connection refused"),
    );
    server.start();
    wait_until("every file published", Some(&daemon), || {
        env.ledger().status().unwrap().published == 200
    });
    let rt = runtime();
    let store = client(&server, "S3RVER", "S3RVER");
    for i in 0..200 {
        let rel = if i < 100 {
            format!("before/f{i}.txt")
        } else {
            format!("during/f{i}.txt")
        };
        assert!(
            remote_has(&rt, &store, &rel, &content(i)),
            "{rel} missing after the outage"
        );
    }
    assert!(daemon.stop().success());
}

#[test]
fn check_names_the_problem_no_such_bucket_refused_or_unknown_host() {
    let Some(server) = Server::moto() else { return };
    let mut env = Env::new();
    use_s3(&mut env, &server, "test", "test");
    let out = env.command(&["check"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("no such bucket drops"), "{stdout}");

    let port = common::servers::free_port();
    env.set("remote.endpoint", &format!("http://127.0.0.1:{port}"));
    let out = env.command(&["check"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("connection refused"), "{stdout}");

    env.set("remote.endpoint", "http://no-such-host.invalid:9000");
    let out = env.command(&["check"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("unknown host"), "{stdout}");
}
