//! A small Python proxy in front of a real docker-registry: it logs every
//! request and fails the ones a test chooses (registry retries), or only
//! counts them (how often a build asks the registry for a manifest).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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

pub struct Proxy {
    port: u16,
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Proxy {
    pub fn start(
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

    pub fn wait_listening(&self) {
        let line = self.lines.recv_timeout(Duration::from_secs(20)).expect("the proxy listens");
        assert_eq!(line, "LISTENING");
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The requests seen so far.
    pub fn log(&self) -> Vec<String> {
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
