//! Real servers for the remote tests, each started by the test that needs it on a free loopback
//! port, stoppable and restartable (for outage tests), and killed when dropped. The programs are
//! installed by `scripts/test-servers.sh` (by package name); without them a test says it is
//! skipped, unless `DROPSLOT_REQUIRE_SERVERS` is set (CI), where it fails.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn servers_dir() -> PathBuf {
    std::env::var_os("TEST_SERVERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/dropslot-test-servers")
        })
}

/// The program at `env` or `default`, or `None` (after saying the test is skipped).
fn program(env: &str, default: PathBuf, what: &str) -> Option<PathBuf> {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or(default);
    if path.exists() {
        return Some(path);
    }
    let message = format!(
        "{what} not found at {} (run scripts/test-servers.sh)",
        path.display()
    );
    if std::env::var_os("DROPSLOT_REQUIRE_SERVERS").is_some() {
        panic!("{message}");
    }
    eprintln!("SKIPPED: {message}");
    None
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Server {
    command: Vec<String>,
    child: Option<Child>,
    pub port: u16,
    /// Scratch space for the server (its data and logs); removed with the test's tempdir.
    pub dir: tempfile::TempDir,
}

impl Server {
    pub fn launch(command: Vec<String>, port: u16, dir: tempfile::TempDir) -> Server {
        let mut server = Server {
            command,
            child: None,
            port,
            dir,
        };
        server.start();
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and waits until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .env_remove("AWS_CA_BUNDLE")
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.command[0]));
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let log =
                    std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
                panic!("{} exited with {status}:\n{log}", self.command[0]);
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{} did not listen within 60 s",
                self.command[0]
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (SIGTERM, so nginx's master takes its workers along; SIGKILL after
    /// 10 s) and waits until the port refuses connections. [`Server::start`] reuses the port.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "port {} still answers",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// moto's S3 server: accepts any credentials, keeps objects in memory.
    pub fn moto() -> Option<Server> {
        let bin = program(
            "MOTO_SERVER",
            servers_dir().join("moto/bin/moto_server"),
            "moto_server",
        )?;
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let command = vec![
            bin.display().to_string(),
            "-H".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ];
        Some(Server::launch(command, port, dir))
    }

    /// s3rver: checks credentials (`S3RVER` / `S3RVER`), keeps objects on disk (so they survive
    /// a restart), and creates `bucket` at start.
    pub fn s3rver(bucket: &str) -> Option<Server> {
        let script = program(
            "S3RVER",
            servers_dir().join("s3rver/node_modules/s3rver/bin/s3rver.js"),
            "s3rver",
        )?;
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let command = vec![
            "node".into(),
            script.display().to_string(),
            "-d".into(),
            data.display().to_string(),
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-s".into(),
            "--no-vhost-buckets".into(),
            "--configure-bucket".into(),
            bucket.into(),
        ];
        Some(Server::launch(command, port, dir))
    }

    /// nginx with its WebDAV modules serving `<dir>/root`; with `htpasswd`, basic auth is on.
    pub fn nginx(htpasswd: Option<&str>) -> Option<Server> {
        Server::nginx_with(htpasswd, false)
    }

    /// [`Server::nginx`] over HTTPS with a self-signed certificate for `localhost` (made with
    /// openssl), which no client trusts: for the TLS errors.
    pub fn nginx_self_signed() -> Option<Server> {
        Server::nginx_with(None, true)
    }

    fn nginx_with(htpasswd: Option<&str>, tls: bool) -> Option<Server> {
        let bin = program("NGINX", PathBuf::from("/usr/sbin/nginx"), "nginx")?;
        let module = Path::new("/usr/lib/nginx/modules/ngx_http_dav_ext_module.so");
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        let auth = match htpasswd {
            Some(line) => {
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, format!("{line}\n")).unwrap();
                format!(
                    "auth_basic \"dropslot\"; auth_basic_user_file {};",
                    file.display()
                )
            }
            None => String::new(),
        };
        let load = if module.exists() {
            format!("load_module {};", module.display())
        } else {
            String::new()
        };
        let d = dir.path().display();
        let ssl = if tls {
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            let made = Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                ])
                .args([
                    "-subj",
                    "/CN=localhost",
                    "-addext",
                    "subjectAltName=DNS:localhost",
                ])
                .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .output()
                .expect("openssl");
            assert!(made.status.success(), "openssl: {made:?}");
            format!(
                " ssl; ssl_certificate {}; ssl_certificate_key {}",
                cert.display(),
                key.display()
            )
        } else {
            String::new()
        };
        let conf = format!(
            "{load}\nuser root;\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{ access_log off; client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n\
               uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
               server {{ listen 127.0.0.1:{port}{ssl}; root {root}; client_max_body_size 0; {auth}\n\
                 dav_methods PUT DELETE MKCOL COPY MOVE; dav_ext_methods PROPFIND OPTIONS;\n\
                 dav_access user:rw group:r all:r; autoindex on; }} }}\n",
            root = root.display()
        );
        let conf_file = dir.path().join("nginx.conf");
        std::fs::write(&conf_file, conf).unwrap();
        let command = vec![
            bin.display().to_string(),
            "-c".into(),
            conf_file.display().to_string(),
            "-p".into(),
            d.to_string(),
        ];
        Some(Server::launch(command, port, dir))
    }

    /// nginx's document root: what the WebDAV server stores.
    /// moto has no buckets at start: create one with a signed request (any credentials).
    pub fn create_bucket(&self, bucket: &str) {
        let status = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
            .args(["--aws-sigv4", "aws:amz:us-east-1:s3", "--user", "test:test"])
            .args(["-H", "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"])
            .arg(format!("{}/{bucket}", self.url()))
            .output()
            .expect("curl");
        assert_eq!(
            String::from_utf8_lossy(&status.stdout),
            "200",
            "bucket creation failed"
        );
    }

    /// The object `key` of `bucket`, read with a signed GET (s3rver's credentials, which moto
    /// accepts like any), or `None` if the server does not give it.
    pub fn s3_get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let out = Command::new("curl")
            .args(["-s", "-f", "--globoff"])
            .args(["--aws-sigv4", "aws:amz:us-east-1:s3", "--user", "S3RVER:S3RVER"])
            .args(["-H", "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"])
            .arg(format!("{}/{bucket}/{key}", self.url()))
            .output()
            .expect("curl");
        out.status.success().then_some(out.stdout)
    }

    /// A signed request to an S3 server that changes `bucket/key` behind dropslot's back: `PUT`
    /// with `body`, or `DELETE`. Returns the HTTP status.
    pub fn s3_change(&self, method: &str, bucket: &str, key: &str, body: Option<&[u8]>) -> String {
        use sha2::Digest;
        let payload = body.unwrap_or_default();
        let digest = sha2::Sha256::digest(payload);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--globoff",
            "-X",
            method,
        ])
        .args(["--aws-sigv4", "aws:amz:us-east-1:s3", "--user", "test:test"])
        .arg("-H")
        .arg(format!("x-amz-content-sha256: {hex}"));
        let file = tempfile::NamedTempFile::new().unwrap();
        if let Some(body) = body {
            std::fs::write(file.path(), body).unwrap();
            // `--upload-file`, not `--data-binary`: a form content type made moto store nothing.
            cmd.arg("--upload-file").arg(file.path());
        }
        let out = cmd
            .arg(format!("{}/{bucket}/{key}", self.url()))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// GET `drops/<rel>` from a WebDAV server over HTTP, optionally with basic auth.
    pub fn webdav_get(&self, rel: &str, auth: Option<(&str, &str)>) -> Option<Vec<u8>> {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-f", "--globoff"]);
        if let Some((user, password)) = auth {
            cmd.arg("--user").arg(format!("{user}:{password}"));
        }
        let out = cmd
            .arg(format!("{}/drops/{}", self.url(), rel.replace(' ', "%20")))
            .output()
            .expect("curl");
        out.status.success().then_some(out.stdout)
    }

    pub fn webdav_root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
}

/// A minimal Tahoe-LAFS grid on loopback: an introducer, one storage node and a gateway, all
/// with 1-of-1 encoding, and a fresh mutable directory whose write-cap is `dircap`.
pub struct TahoeGrid {
    pub introducer: Server,
    pub storage: Server,
    pub gateway: Server,
    pub dircap: String,
    pub dir: tempfile::TempDir,
}

impl TahoeGrid {
    pub fn start() -> Option<TahoeGrid> {
        let python = program(
            "TAHOE_PYTHON",
            servers_dir().join("tahoe/bin/python3"),
            "tahoe-lafs",
        )?;
        let launcher =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/tahoe_loopback.py");
        let dir = tempfile::tempdir().unwrap();
        let tahoe = |args: &[String]| {
            let out = Command::new(&python)
                .arg(&launcher)
                .args(args)
                .output()
                .expect("tahoe");
            assert!(
                out.status.success(),
                "tahoe {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let node = |name: &str| dir.path().join(name).display().to_string();
        let run = |name: &str, port: u16| {
            let command = vec![
                python.display().to_string(),
                launcher.display().to_string(),
                "run".into(),
                "--allow-stdin-close".into(),
                node(name),
            ];
            Server::launch(command, port, tempfile::tempdir().unwrap())
        };
        let (intro_port, storage_port, web_port) = (free_port(), free_port(), free_port());
        let listen = |port: u16| {
            vec![
                "--listen=tcp".to_string(),
                format!("--port=tcp:{port}:interface=127.0.0.1"),
                format!("--location=tcp:127.0.0.1:{port}"),
            ]
        };
        let one_of_one =
            ["--shares-needed=1", "--shares-happy=1", "--shares-total=1"].map(String::from);
        tahoe(
            &[
                vec!["create-introducer".to_string()],
                listen(intro_port),
                vec![node("introducer")],
            ]
            .concat(),
        );
        let introducer = run("introducer", intro_port);
        let furl_file = dir.path().join("introducer/private/introducer.furl");
        let start = Instant::now();
        while std::fs::metadata(&furl_file).map(|m| m.len()).unwrap_or(0) == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no introducer furl"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let furl = std::fs::read_to_string(&furl_file)
            .unwrap()
            .trim()
            .to_string();
        tahoe(
            &[
                vec![
                    "create-node".into(),
                    "--nickname=storage0".into(),
                    format!("--introducer={furl}"),
                    "--webport=none".into(),
                ],
                listen(storage_port),
                one_of_one.to_vec(),
                vec![node("storage")],
            ]
            .concat(),
        );
        let storage = run("storage", storage_port);
        tahoe(
            &[
                vec![
                    "create-client".into(),
                    "--nickname=gateway".into(),
                    format!("--introducer={furl}"),
                    format!("--webport=tcp:{web_port}:interface=127.0.0.1"),
                ],
                one_of_one.to_vec(),
                vec![node("client")],
            ]
            .concat(),
        );
        let gateway = run("client", web_port);
        let mut grid = TahoeGrid {
            introducer,
            storage,
            gateway,
            dircap: String::new(),
            dir,
        };
        grid.wait_connected();
        let out = grid.curl(&["-X", "POST", &format!("{}/uri?t=mkdir", grid.gateway.url())]);
        assert!(out.starts_with("URI:DIR2:"), "mkdir answered {out}");
        grid.dircap = out;
        Some(grid)
    }

    /// Waits until the gateway sees the storage server (after a start or restart).
    pub fn wait_connected(&self) {
        let start = Instant::now();
        loop {
            let status = self.curl(&[&format!("{}/?t=json", self.gateway.url())]);
            if status.contains("\"connection_status\": \"connected")
                || status.contains("\"connection_status\":\"connected")
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "gateway never connected: {status}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn curl(&self, args: &[&str]) -> String {
        let out = Command::new("curl")
            .args(["-s", "-H", "Accept: text/plain"])
            .args(args)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The JSON listing of `rel` below the dircap.
    pub fn list(&self, rel: &str) -> serde_json::Value {
        let url = format!("{}/uri/{}/{}?t=json", self.gateway.url(), self.dircap, rel);
        serde_json::from_str(&self.curl(&[&url])).unwrap_or(serde_json::Value::Null)
    }

    /// Downloads a file by its path below the dircap.
    pub fn download(&self, rel: &str) -> Option<Vec<u8>> {
        let url = format!(
            "{}/uri/{}/{}",
            self.gateway.url(),
            self.dircap,
            rel.replace(' ', "%20")
        );
        let out = Command::new("curl")
            .args(["-s", "-f", &url])
            .output()
            .expect("curl");
        out.status.success().then_some(out.stdout)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
