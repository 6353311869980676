//! A static file server for tests that need an HTTP source (chart repositories,
//! release artifact URLs): the real `python3 -m http.server`, on 127.0.0.1 only.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `python3 -m http.server` serving `dir` on 127.0.0.1; killed on drop.
pub struct StaticServer {
    child: Child,
    pub port: u16,
}

impl StaticServer {
    /// Starts on a free port.
    pub fn start(dir: &Path) -> StaticServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        StaticServer::start_at(dir, port)
    }

    /// Starts on a given port: a test that stopped the server can bring it back where
    /// a lock file or a spec already points.
    pub fn start_at(dir: &Path, port: u16) -> StaticServer {
        let child = Command::new("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "http.server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        StaticServer { child, port }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
