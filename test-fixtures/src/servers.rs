//! Image servers for tests on 127.0.0.1 (or inside a test's network namespace): our own
//! `imgtool serve` in a background thread, and a stock nginx as a pull-only primary,
//! stopped by its PID in `Drop`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An `imgtool serve` on 127.0.0.1 in a background thread of this test process; returns
/// its port. It serves `roots` until the process ends.
pub fn serve_in_background(roots: Vec<PathBuf>) -> u16 {
    let bound = imgtool::serve::bind(imgtool::serve::ServeOptions {
        roots,
        listen: "127.0.0.1:0".into(),
        max_connections: imgtool::httpd::DEFAULT_MAX_CONNECTIONS,
    })
    .expect("binding imgtool serve");
    let port = bound.addr().expect("server address").port();
    std::thread::spawn(move || bound.run());
    port
}

/// A stock nginx serving `root` on 127.0.0.1 (a pull-only primary: no status board).
/// Runs in the foreground as one process, stopped by its PID in `Drop`.
pub struct Nginx {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// Debian's nginx: in /usr/sbin, which an ordinary user's PATH (the rootless pass) lacks.
const NGINX: &str = "/usr/sbin/nginx";

impl Nginx {
    pub fn start(root: &Path) -> Nginx {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        Self::start_in(None, "127.0.0.1", port, root)
    }

    /// nginx inside network namespace `ns` (when given), listening on `addr:port`.
    pub fn start_in(ns: Option<&str>, addr: &str, port: u16, root: &Path) -> Nginx {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  server {{\n    listen {addr}:{port};\n    root {};\n  }}\n}}\n",
            root.display()
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("nginx.conf");
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, NGINX]);
                c
            }
            None => Command::new(NGINX),
        };
        let child = cmd
            // Its own error log from the start: an ordinary user cannot open the default.
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx: install the Debian package nginx (scripts/setup.sh does)");
        // Built first, so that `Drop` stops nginx even if it never comes up.
        let nginx = Nginx {
            child,
            port,
            _dir: dir,
        };
        let error_log = nginx._dir.path().join("error.log");
        let start = Instant::now();
        loop {
            let up = match ns {
                None => std::net::TcpStream::connect((addr, port)).is_ok(),
                Some(ns) => Command::new("ip")
                    .args(["netns", "exec", ns, "bash", "-c"])
                    .arg(format!("exec 3<>/dev/tcp/{addr}/{port}"))
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false),
            };
            if up {
                return nginx;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nginx did not start on {addr}:{port}: {}",
                std::fs::read_to_string(&error_log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
