//! `--retry N` / `--retry-delay D` on pull, push and build (issue 14): a
//! registry request that fails in a way that may pass (503, 429 with
//! Retry-After, a refused connection) is tried again, with a warning naming
//! the attempt; a 404 is not. A small Python proxy in front of a real
//! docker-registry fails the requests the test chooses.

use crate::fault_util;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_integration::Sandbox;

/// Forwards every request to the registry, but answers the first `fail`
/// requests whose method and path match `pattern` with `status` (and a
/// `Retry-After`, when given). Waits `bind_delay` seconds before listening,
/// so that a client started first finds the port refusing. Logs one line
/// per request: `FAIL|PASS METHOD PATH`.
const PROXY: &str = r#"
import http.client, http.server, re, sys, threading, time
upstream, port, pattern, fail, status, retry_after, bind_delay = sys.argv[1], int(sys.argv[2]), re.compile(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], float(sys.argv[7])
lock = threading.Lock()
left = [fail]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def handle_one(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        with lock:
            failing = bool(pattern.search(self.command + " " + self.path)) and left[0] > 0
            if failing: left[0] -= 1
        print(("FAIL " if failing else "PASS ") + self.command + " " + self.path, flush=True)
        if failing:
            self.send_response(status)
            if retry_after: self.send_header("Retry-After", retry_after)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        c = http.client.HTTPConnection(upstream)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        c.request(self.command, self.path, body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD": self.wfile.write(data)
    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = handle_one
time.sleep(bind_delay)
s = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
print("LISTENING", flush=True)
s.serve_forever()
"#;

struct Proxy {
    port: u16,
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Proxy {
    fn start(
        sb: &Sandbox,
        upstream: &str,
        pattern: &str,
        fail: u32,
        status: u16,
        retry_after: &str,
        bind_delay: f64,
    ) -> Proxy {
        let script = sb.write("proxy.py", PROXY);
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new("python3")
            .arg(&script)
            .args([
                upstream,
                &port.to_string(),
                pattern,
                &fail.to_string(),
                &status.to_string(),
                retry_after,
                &bind_delay.to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let (tx, lines) = std::sync::mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Proxy { port, child, lines }
    }

    fn wait_listening(&self) {
        let line = self.lines.recv_timeout(Duration::from_secs(20)).expect("the proxy listens");
        assert_eq!(line, "LISTENING");
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The requests seen so far.
    fn log(&self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(100));
        self.lines.try_iter().collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn attempt_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("retrying in")).collect()
}

#[test]
fn transient_registry_failures_are_retried_and_4xx_are_not() {
    let sb = Sandbox::new();
    sb.write("ctx/f.txt", "retried\n");
    sb.dockerfile("FROM scratch\nCOPY f.txt /f.txt\n");
    let ctx = sb.ctx();
    sb.kiln(&["build", "-q", "-t", "app:1", ctx.to_str().unwrap()]).ok();
    let reg = fault_util::Registry::start();
    sb.kiln(&["push", "-q", "app:1", &format!("{}/app:1", reg.host())]).ok();

    // A pull whose manifest GETs answer 503 twice (Retry-After: 1): it waits
    // as asked, says which attempt comes, and gets the image.
    let proxy = Proxy::start(&sb, &reg.host(), r"^GET /v2/app/manifests/", 2, 503, "1", 0.0);
    proxy.wait_listening();
    let started = Instant::now();
    let out = sb.kiln(&["pull", &format!("{}/app:1", proxy.host())]);
    out.ok();
    let lines = attempt_lines(&out.stderr);
    assert_eq!(lines.len(), 2, "{}", out.transcript());
    assert!(lines[0].contains("503") && lines[0].contains("retrying in 1.0s (attempt 2 of 4)"), "{}", out.transcript());
    assert!(lines[1].contains("(attempt 3 of 4)"), "{}", out.transcript());
    assert!(started.elapsed() >= Duration::from_secs(2), "Retry-After: 1 was honoured twice");
    let log = proxy.log();
    assert_eq!(log.iter().filter(|l| l.starts_with("FAIL")).count(), 2, "{log:?}");
    let pulled = sb.kiln(&["inspect", "--format", "{{.Id}}", &format!("{}/app:1", proxy.host())]).ok().stdout.clone();
    assert_eq!(pulled, sb.kiln(&["inspect", "--format", "{{.Id}}", "app:1"]).ok().stdout);
    drop(proxy);

    // --retry 0: the first 503 is the answer.
    let proxy = Proxy::start(&sb, &reg.host(), r"^GET /v2/app/manifests/", 1, 503, "", 0.0);
    proxy.wait_listening();
    let out = sb.kiln(&["pull", "--retry", "0", &format!("{}/app:1", proxy.host())]);
    out.fails_with(1).stderr_has(&["503"]);
    assert!(attempt_lines(&out.stderr).is_empty(), "{}", out.transcript());
    drop(proxy);

    // A 404 (no such tag) is not retried: one manifest request.
    let proxy = Proxy::start(&sb, &reg.host(), "^$", 0, 503, "", 0.0);
    proxy.wait_listening();
    let out = sb.kiln(&["pull", &format!("{}/app:missing", proxy.host())]);
    assert!(!out.success(), "{}", out.transcript());
    assert!(attempt_lines(&out.stderr).is_empty(), "{}", out.transcript());
    let manifest_requests = proxy.log().iter().filter(|l| l.contains("/manifests/missing")).count();
    assert_eq!(manifest_requests, 1, "404 is final");
    drop(proxy);

    // A push whose manifest PUT answers 429 (with --retry-delay for the
    // wait the registry does not give) goes through on the second try.
    let proxy = Proxy::start(&sb, &reg.host(), r"^PUT /v2/pushed/manifests/", 1, 429, "", 0.0);
    proxy.wait_listening();
    let out = sb.kiln(&["push", "--retry-delay", "300ms", "app:1", &format!("{}/pushed:1", proxy.host())]);
    out.ok();
    let lines = attempt_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{}", out.transcript());
    assert!(lines[0].contains("429") && lines[0].contains("retrying in 0.3s (attempt 2 of 4)"), "{}", out.transcript());
    let pushed = sb.tool("skopeo", &["inspect", "--tls-verify=false", &format!("docker://{}/pushed:1", reg.host())]);
    pushed.ok();
    drop(proxy);

    // A registry that is not listening yet (refused), with a build's FROM:
    // retried until it is.
    let proxy = Proxy::start(&sb, &reg.host(), "^$", 0, 503, "", 1.0);
    sb.dockerfile(&format!("FROM {}/app:1\nCOPY f.txt /again.txt\n", proxy.host()));
    let out = sb.kiln(&["build", "--retry", "8", "--retry-delay", "400ms", "-t", "late", ctx.to_str().unwrap()]);
    out.ok();
    let lines = attempt_lines(&out.stderr);
    assert!(
        !lines.is_empty() && lines[0].contains("refused") && lines[0].contains("(attempt 2 of 9)"),
        "{}",
        out.transcript()
    );
    assert_eq!(sb.image("late").file_str("again.txt"), "retried\n");
}
