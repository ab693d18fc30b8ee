//! Issue 11, first contact: every example configuration (each file in `config/`, each ```toml
//! block of README.md and docs/) passes `dropslot check` and publishes a file against a real
//! server, with only endpoint, bucket, paths and credentials substituted (through
//! `DROPSLOT_*` variables, so the file itself is loaded as written); S3 works by IP address and by
//! `localhost` with no addressing setting; and `check` names each common mistake, which `run`
//! refuses with exit 2 when retrying cannot help and rides out when it can.

use dropslot_testkit as common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::servers::{Server, TahoeGrid};
use common::*;

const BUCKET: &str = "drops";
/// s3rver's credentials; moto accepts any.
const KEY: &str = "S3RVER";

/// `dropslot <args>`: exit code and everything it printed.
fn said(env: &Env, args: &[&str]) -> (Option<i32>, String) {
    let out = env.command(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn check(env: &Env) -> (Option<i32>, String) {
    said(env, &["check"])
}

/// `run --once`: exit code and log.
fn run_once(env: &Env) -> (Option<i32>, String) {
    let out = env.run_once();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Points `env` at an S3 server by `host` (an IP address or a name), with no addressing setting.
fn use_s3(env: &mut Env, server: &Server, host: &str) {
    env.set("remote.kind", "s3")
        .set("remote.endpoint", &format!("http://{host}:{}", server.port))
        .set("remote.bucket", BUCKET)
        .set("remote.region", "us-east-1")
        .set("remote.access_key_id", KEY)
        .set("remote.secret_access_key", KEY);
}

fn moto_with_bucket() -> Option<Server> {
    let server = Server::moto()?;
    server.create_bucket(BUCKET);
    Some(server)
}

#[test]
fn s3_by_ip_and_by_localhost_works_without_an_addressing_setting() {
    let (Some(moto), Some(s3rver)) = (moto_with_bucket(), Server::s3rver(BUCKET)) else {
        return;
    };
    let mut published = 0;
    for (name, server) in [("moto", &moto), ("s3rver", &s3rver)] {
        for host in ["127.0.0.1", "localhost"] {
            let mut env = Env::new();
            use_s3(&mut env, server, host);
            let (code, text) = check(&env);
            assert_eq!(code, Some(0), "{name} at {host}: {text}");
            for step in [
                "reach the target: ok",
                "upload a probe: ok",
                "publish it: ok",
                "confirm it: ok",
                "read it back: ok",
                "delete it: ok",
                "path-style addressing",
                "remote: ok",
            ] {
                assert!(
                    text.contains(step),
                    "{name} at {host}: no {step:?} in\n{text}"
                );
            }
            let rel = format!("by-{host}.txt");
            let content = format!("published to {name} at {host}\n").into_bytes();
            env.write(&rel, &content);
            let (code, log) = run_once(&env);
            assert_eq!(code, Some(0), "{name} at {host}: {log}");
            assert!(log.contains("remote health check passed"), "{log}");
            assert_eq!(
                server.s3_get(BUCKET, &rel).as_deref(),
                Some(&content[..]),
                "{name} at {host}: {rel} not on the server"
            );
            assert!(
                server.s3_get(BUCKET, ".dropslot-check").is_none(),
                "the probe was left behind"
            );
            published += 1;
        }
    }
    eprintln!(
        "FIGURE S3 addressing: {published} of 4 (moto, s3rver) x (127.0.0.1, localhost) endpoints \
         without path_style: check ok in 6 steps and a file published and read back"
    );
}

/// One example configuration: where it came from and its text.
struct Example {
    name: String,
    toml: String,
}

fn examples() -> Vec<Example> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    let mut configs: Vec<PathBuf> = std::fs::read_dir(root.join("config"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    configs.sort();
    for path in configs {
        found.push(Example {
            name: path.strip_prefix(root).unwrap().display().to_string(),
            toml: std::fs::read_to_string(&path).unwrap(),
        });
    }
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    docs.insert(0, root.join("README.md"));
    for path in docs {
        let text = std::fs::read_to_string(&path).unwrap();
        let mut block: Option<(usize, String)> = None;
        for (n, line) in text.lines().enumerate() {
            match &mut block {
                None if line.trim_start().starts_with("```toml") => {
                    block = Some((n + 1, String::new()))
                }
                Some((start, body)) if line.trim_start().starts_with("```") => {
                    found.push(Example {
                        name: format!("{}:{start}", path.strip_prefix(root).unwrap().display()),
                        toml: std::mem::take(body),
                    });
                    block = None;
                }
                Some((_, body)) => {
                    body.push_str(line);
                    body.push('\n');
                }
                None => {}
            }
        }
    }
    found
}

/// A string setting of the example's `[remote]`, if it sets it.
fn remote_key(example: &Example, key: &str) -> Option<String> {
    use toml::de::{DeTable, DeValue};
    let table =
        DeTable::parse(&example.toml).unwrap_or_else(|e| panic!("{}: not TOML: {e}", example.name));
    let remote = table
        .get_ref()
        .iter()
        .find(|(k, _)| k.get_ref() == "remote")
        .map(|(_, v)| v.get_ref())?;
    let DeValue::Table(remote) = remote else {
        return None;
    };
    remote
        .iter()
        .find(|(k, _)| k.get_ref() == key)
        .and_then(|(_, v)| match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => None,
        })
}

/// The servers the examples run against, started once.
struct Servers {
    moto: Server,
    s3rver: Server,
    nginx: Server,
    grid: TahoeGrid,
}

/// The WebDAV examples' user; the password is substituted.
const DAV_USER: &str = "dropper";
const DAV_PASSWORD: &str = "example-pass-71b2";

/// Runs `check` and a one-file `run --once` with `example`, adjusted by `setup` (which
/// substitutes the server), and returns what the remote holds under `rel` afterwards, read by
/// `fetch`.
fn try_example(
    example: &Example,
    target: &str,
    rel: &str,
    setup: impl FnOnce(&mut Env),
    fetch: impl FnOnce(&Env) -> Option<Vec<u8>>,
) {
    let mut env = Env::new();
    std::fs::write(&env.config, &example.toml).unwrap();
    let (drop, state) = (
        env.drop.display().to_string(),
        env.state.display().to_string(),
    );
    env.set("watch.path", &drop).set("state.dir", &state);
    setup(&mut env);
    let (code, text) = check(&env);
    assert_eq!(code, Some(0), "{} against {target}: {text}", example.name);
    assert!(text.contains("remote: ok"), "{}: {text}", example.name);
    let content = format!("{} published to {target}\n", example.name).into_bytes();
    env.write(rel, &content);
    let (code, log) = run_once(&env);
    assert_eq!(code, Some(0), "{} against {target}: {log}", example.name);
    assert_eq!(
        fetch(&env).as_deref(),
        Some(&content[..]),
        "{} against {target}: {rel} is not on the remote",
        example.name
    );
    eprintln!(
        "{} against {target}: check ok, {rel} published",
        example.name
    );
}

#[test]
fn every_example_configuration_checks_and_publishes_against_a_real_server() {
    let (Some(moto), Some(s3rver), Some(nginx), Some(grid)) = (
        moto_with_bucket(),
        Server::s3rver(BUCKET),
        Server::nginx(Some(&format!("{DAV_USER}:{{PLAIN}}{DAV_PASSWORD}"))),
        TahoeGrid::start(),
    ) else {
        return;
    };
    let servers = Servers {
        moto,
        s3rver,
        nginx,
        grid,
    };
    let examples = examples();
    let mut runs = Vec::new();
    let started = Instant::now();
    for (n, example) in examples.iter().enumerate() {
        let kind = remote_key(example, "kind").unwrap_or_else(|| "local".into());
        let rel = format!("example-{n}.txt");
        match kind.as_str() {
            "local" => {
                try_example(
                    example,
                    "a local directory",
                    &rel,
                    |env| {
                        let target = env.target.display().to_string();
                        env.set("remote.path", &target);
                    },
                    |env| std::fs::read(env.target.join(&rel)).ok(),
                );
                runs.push("local");
            }
            "s3" => {
                let prefix = remote_key(example, "prefix").unwrap_or_default();
                let key = if prefix.is_empty() {
                    rel.clone()
                } else {
                    format!("{prefix}/{rel}")
                };
                for (name, server) in [("moto", &servers.moto), ("s3rver", &servers.s3rver)] {
                    try_example(
                        example,
                        name,
                        &rel,
                        |env| {
                            env.set("remote.endpoint", &server.url())
                                .set("remote.bucket", BUCKET)
                                .set("remote.access_key_id", KEY)
                                .set("remote.secret_access_key", KEY);
                        },
                        |_| server.s3_get(BUCKET, &key),
                    );
                    runs.push(name);
                }
            }
            "webdav" => {
                // The example's collection path on this server; its parents exist, as they do
                // on the server the example was written for.
                let url = reqwest_path(&remote_key(example, "url").expect("webdav url"));
                let collection = servers.nginx.webdav_root().join(url.trim_matches('/'));
                std::fs::create_dir_all(collection.parent().unwrap()).unwrap();
                try_example(
                    example,
                    "nginx",
                    &rel,
                    |env| {
                        env.set("remote.url", &format!("{}{url}", servers.nginx.url()))
                            .set("remote.username", DAV_USER)
                            .set("remote.password", DAV_PASSWORD);
                    },
                    |_| std::fs::read(collection.join(&rel)).ok(),
                );
                runs.push("nginx");
            }
            "tahoe" => {
                let grid = &servers.grid;
                try_example(
                    example,
                    "a Tahoe grid",
                    &rel,
                    |env| {
                        let dircap_file = env.dir.path().join("drop_upload_dircap");
                        std::fs::write(&dircap_file, format!("{}\n", grid.dircap)).unwrap();
                        env.set("remote.gateway", &grid.gateway.url())
                            .set("remote.dircap_file", &dircap_file.display().to_string());
                    },
                    |_| grid.download(&rel),
                );
                runs.push("tahoe");
            }
            other => panic!(
                "{}: no test server for remote.kind = {other:?}",
                example.name
            ),
        }
    }
    assert!(
        examples
            .iter()
            .any(|e| e.name.starts_with("config/remote-tahoe")),
        "config/remote-tahoe.toml was not found"
    );
    eprintln!(
        "FIGURE examples: {} example configurations ({} from config/, {} from README.md and docs/), \
         {} check + publish runs ({} S3 on moto and s3rver, {} WebDAV, {} Tahoe, {} local), all ok, in {:.0?}",
        examples.len(),
        examples.iter().filter(|e| e.name.starts_with("config/")).count(),
        examples.iter().filter(|e| !e.name.starts_with("config/")).count(),
        runs.len(),
        runs.iter().filter(|r| **r == "moto" || **r == "s3rver").count(),
        runs.iter().filter(|r| **r == "nginx").count(),
        runs.iter().filter(|r| **r == "tahoe").count(),
        runs.iter().filter(|r| **r == "local").count(),
        started.elapsed(),
    );
}

/// The path of an http(s) URL, ending with `/`.
fn reqwest_path(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme
        .find('/')
        .map_or("/".to_string(), |i| after_scheme[i..].to_string());
    if path.ends_with('/') {
        path
    } else {
        format!("{path}/")
    }
}

/// A mistake: `check` exits 1 saying `names`; with `fatal`, `run --once` exits 2 saying it too
/// (retrying cannot help), else `run` starts anyway.
fn assert_mistake(env: &Env, case: &str, names: &str, fatal: bool, counted: &mut Vec<String>) {
    let (code, text) = check(env);
    assert_eq!(code, Some(1), "{case}: check: {text}");
    assert!(
        text.contains(names),
        "{case}: check does not say {names:?}:\n{text}"
    );
    assert!(
        text.contains(": FAILED: "),
        "{case}: no failed step in\n{text}"
    );
    let failed_line = text
        .lines()
        .find(|l| l.starts_with("remote: FAILED"))
        .unwrap_or_default()
        .to_string();
    if fatal {
        let (code, log) = run_once(env);
        assert_eq!(code, Some(2), "{case}: run --once: {log}");
        assert!(
            log.contains(names),
            "{case}: run does not say {names:?}:\n{log}"
        );
    }
    eprintln!("{case}: {failed_line}");
    counted.push(case.to_string());
}

#[test]
fn check_names_each_common_s3_mistake_and_run_refuses_the_fatal_ones() {
    let (Some(moto), Some(s3rver)) = (Server::moto(), Server::s3rver(BUCKET)) else {
        return;
    };
    let mut cases = Vec::new();
    let mut env = Env::new();
    use_s3(&mut env, &moto, "127.0.0.1");
    assert_mistake(
        &env,
        "S3 no such bucket",
        "no such bucket drops",
        true,
        &mut cases,
    );

    let mut env = Env::new();
    use_s3(&mut env, &s3rver, "127.0.0.1");
    env.set("remote.access_key_id", "WRONGKEY7Q");
    assert_mistake(
        &env,
        "S3 unknown access key id",
        "does not know the access key id",
        true,
        &mut cases,
    );
    let (_, text) = check(&env);
    assert!(!text.contains("WRONGKEY7Q"), "the key id leaked:\n{text}");

    // A wrong secret key (SignatureDoesNotMatch) is not tested here: neither moto nor s3rver
    // verifies signatures.
    // Virtual-hosted addressing forced where the server serves buckets as paths: by IP address
    // a configuration error at once, by name an answer that names the setting.
    let mut env = Env::new();
    use_s3(&mut env, &s3rver, "127.0.0.1");
    env.set("remote.path_style", "false");
    for args in [&["check"][..], &["run", "--once"][..]] {
        let (code, text) = said(&env, args);
        assert_eq!(code, Some(2), "{args:?}: {text}");
        assert!(
            text.contains("set remote.path_style = true"),
            "{args:?}: {text}"
        );
    }
    cases.push("S3 virtual-hosted addressing on an IP endpoint".into());
    let mut env = Env::new();
    use_s3(&mut env, &s3rver, "localhost");
    env.set("remote.path_style", "false");
    assert_mistake(
        &env,
        "S3 virtual-hosted addressing on a named endpoint",
        "set remote.path_style = true",
        false,
        &mut cases,
    );

    let mut env = Env::new();
    use_s3(&mut env, &s3rver, "127.0.0.1");
    env.set(
        "remote.endpoint",
        &format!("http://127.0.0.1:{}", common::servers::free_port()),
    );
    assert_mistake(
        &env,
        "S3 connection refused",
        "connection refused",
        false,
        &mut cases,
    );

    env.set("remote.endpoint", "http://no-such-host.invalid:9000");
    assert_mistake(&env, "S3 unknown host", "unknown host", false, &mut cases);

    env.set(
        "remote.endpoint",
        &format!("https://127.0.0.1:{}", s3rver.port),
    );
    assert_mistake(
        &env,
        "S3 https to a plain HTTP server",
        "TLS",
        false,
        &mut cases,
    );

    eprintln!(
        "FIGURE S3 mistakes: {} named by check; no such bucket and the unknown key id \
         refused by run --once with exit 2",
        cases.len()
    );
}

#[test]
fn run_rides_out_an_unreachable_remote_and_publishes_once_it_answers() {
    let Some(mut server) = Server::s3rver(BUCKET) else {
        return;
    };
    server.stop();
    let mut env = Env::new();
    use_s3(&mut env, &server, "localhost");
    env.set("upload.max_attempts", "1000")
        .set("upload.retry_max", "300ms");
    env.write("waits.txt", b"published after the outage");
    let started = Instant::now();
    let daemon = env.spawn();
    wait_until("the failed health check logged", Some(&daemon), || {
        daemon.log_text().contains("running anyway")
    });
    let log = daemon.log_text();
    assert!(log.contains("connection refused"), "{log}");
    server.start();
    wait_until(
        "the file published after the server came",
        Some(&daemon),
        || env.uploads("waits.txt") == 1,
    );
    let waited = started.elapsed();
    daemon.stop_cleanly();
    assert_eq!(
        server.s3_get(BUCKET, "waits.txt").as_deref(),
        Some(&b"published after the outage"[..])
    );
    eprintln!(
        "FIGURE unreachable at start-up: run logged the failed health check, kept running, and \
         published the file {waited:.1?} after start once the server answered"
    );
}

/// `cap` with the letter at `at` changed to another base-32 letter.
fn flip_letter(cap: &str, at: usize) -> String {
    let mut bytes = cap.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'a' { b'b' } else { b'a' };
    String::from_utf8(bytes).unwrap()
}

fn use_webdav(env: &mut Env, server: &Server, path: &str) {
    env.set("remote.kind", "webdav")
        .set("remote.url", &format!("{}{path}", server.url()));
}

#[test]
fn check_names_each_common_webdav_mistake() {
    let Some(nginx) = Server::nginx(Some("dropper:{PLAIN}right-pass-93c1")) else {
        return;
    };
    let mut cases = Vec::new();
    let mut env = Env::new();
    use_webdav(&mut env, &nginx, "/drops/");
    env.set("remote.username", "dropper")
        .set("remote.password", "right-pass-93c1");
    let (code, text) = check(&env);
    assert_eq!(code, Some(0), "a correct configuration: {text}");
    assert!(text.contains("created WebDAV collection"), "{text}");

    env.set("remote.password", "wrong-pass-5e2a");
    assert_mistake(
        &env,
        "WebDAV wrong password",
        "refused remote.username and remote.password",
        true,
        &mut cases,
    );
    let (_, text) = check(&env);
    assert!(!text.contains("wrong-pass-5e2a") && !text.contains("right-pass-93c1"));

    let mut env = Env::new();
    use_webdav(&mut env, &nginx, "/drops/");
    assert_mistake(
        &env,
        "WebDAV no credentials",
        "the server wants credentials",
        true,
        &mut cases,
    );

    let mut env = Env::new();
    use_webdav(&mut env, &nginx, "/no/such/parent/drops/");
    env.set("remote.username", "dropper")
        .set("remote.password", "right-pass-93c1");
    assert_mistake(
        &env,
        "WebDAV no such collection",
        "its parent does not exist either",
        true,
        &mut cases,
    );

    std::fs::write(nginx.webdav_root().join("a-file"), b"not a collection").unwrap();
    env.set("remote.url", &format!("{}/a-file/", nginx.url()));
    assert_mistake(
        &env,
        "WebDAV url names a file",
        "not a collection",
        true,
        &mut cases,
    );

    env.set(
        "remote.url",
        &format!("https://127.0.0.1:{}/drops/", nginx.port),
    );
    assert_mistake(
        &env,
        "WebDAV https to a plain HTTP server",
        "TLS",
        false,
        &mut cases,
    );

    if let Some(tls) = Server::nginx_self_signed() {
        for host in ["localhost", "127.0.0.1"] {
            env.set("remote.url", &format!("https://{host}:{}/drops/", tls.port));
            assert_mistake(
                &env,
                &format!("WebDAV self-signed certificate at {host}"),
                "TLS with",
                false,
                &mut cases,
            );
        }
        let (_, text) = check(&env);
        assert!(text.contains("certificate is not"), "{text}");
    }
    eprintln!(
        "FIGURE WebDAV mistakes: {} named by check (exit 1); all but TLS refused by run --once with exit 2",
        cases.len()
    );
}

#[test]
fn check_names_each_common_tahoe_and_local_mistake() {
    let Some(grid) = TahoeGrid::start() else {
        return;
    };
    let mut cases = Vec::new();
    let mut env = Env::new();
    let dircap_file = env.dir.path().join("drop_upload_dircap");
    std::fs::write(&dircap_file, format!("{}\n", grid.dircap)).unwrap();
    env.set("remote.kind", "tahoe")
        .set("remote.gateway", &grid.gateway.url())
        .set("remote.dircap_file", &dircap_file.display().to_string());
    let (code, text) = check(&env);
    assert_eq!(code, Some(0), "a correct configuration: {text}");
    assert!(text.contains("is a directory"), "{text}");
    env.write("a-file.txt", b"a file, not a directory");
    let (code, log) = run_once(&env);
    assert_eq!(code, Some(0), "{log}");

    std::fs::write(&dircap_file, format!("{}/a-file.txt\n", grid.dircap)).unwrap();
    assert_mistake(
        &env,
        "Tahoe path is a file",
        "is a file, not a directory",
        true,
        &mut cases,
    );
    std::fs::remove_file(env.drop.join("a-file.txt")).unwrap();

    // A path below the cap that does not exist yet is created by the first publish.
    std::fs::write(&dircap_file, format!("{}/missing/sub\n", grid.dircap)).unwrap();
    let (code, text) = check(&env);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("the first publish creates it"), "{text}");

    // A cap of the right shape that the grid does not hold: not fatal (a gateway that is not
    // connected yet answers the same), but named.
    let unknown = flip_letter(&grid.dircap, "URI:DIR2:".len());
    std::fs::write(&dircap_file, format!("{unknown}\n")).unwrap();
    assert_mistake(
        &env,
        "Tahoe unknown cap",
        "the grid cannot find",
        false,
        &mut cases,
    );
    let (_, text) = check(&env);
    assert!(
        !text.contains(&unknown) && !text.contains(&grid.dircap),
        "{text}"
    );

    // A cap cut short (a bad copy and paste): the gateway cannot even parse it.
    let damaged = &grid.dircap[..grid.dircap.len() - 10];
    std::fs::write(&dircap_file, format!("{damaged}\n")).unwrap();
    assert_mistake(
        &env,
        "Tahoe damaged cap",
        "does not recognise the cap",
        true,
        &mut cases,
    );

    std::fs::write(&dircap_file, format!("{}\n", grid.dircap)).unwrap();
    env.set(
        "remote.gateway",
        &format!("http://127.0.0.1:{}", common::servers::free_port()),
    );
    assert_mistake(
        &env,
        "Tahoe gateway refused",
        "connection refused",
        false,
        &mut cases,
    );

    std::fs::write(&dircap_file, "URI:CHK:not-a-directory\n").unwrap();
    let (code, text) = check(&env);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("remote.dircap_file"), "{text}");
    assert!(!text.contains(&grid.dircap), "{text}");
    cases.push("Tahoe cap file without a directory cap".into());

    // Local: a file where the target should be, and a target this user may not write.
    let env = Env::new();
    std::fs::write(&env.target, b"a file").unwrap();
    assert_mistake(
        &env,
        "local path is a file",
        "is not a directory",
        true,
        &mut cases,
    );

    let mut env = Env::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let owned = std::process::Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(env.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        let readonly = env.dir.path().join("readonly");
        std::fs::create_dir_all(&readonly).unwrap();
        if owned {
            env.run_as = Some(65534);
            env.set("remote.path", &readonly.join("out").display().to_string());
            assert_mistake(
                &env,
                "local permission denied",
                "permission denied",
                true,
                &mut cases,
            );
        }
    }
    eprintln!(
        "FIGURE Tahoe and local mistakes: {} named ({})",
        cases.len(),
        cases.join("; ")
    );
}
