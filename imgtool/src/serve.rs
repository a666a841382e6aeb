//! `imgtool serve`: the primary image server. Serves files under one or more roots (the
//! image root, then optionally the boot tree for `etc/bootopts/*` and `clone-plan.json`)
//! with `Range` support, and keeps the status board ([`crate::board`]) that node agents
//! `POST` to and `imgtool status` reads. Any static HTTP server holding the same files
//! works as a pull-only primary; only the status board is specific to this one.
//!
//! Connections, limits and timeouts are [`crate::httpd`]'s. Files are served only from
//! inside the roots: a path is resolved with its symbolic links and refused when the real
//! file lies outside the (resolved) root it was found under, so a link to `/etc` serves
//! nothing; a link from one place in a root to another in the same root still works.
//! Failing to start or to keep serving is a [`ServeError`] naming the root or address,
//! with the `io::Error` as its source.
//!
//! With uploads enabled ([`bind_with_uploads`]), requests under `/upload/` go to
//! [`crate::upload::Uploads`], which stages into the image root's `.upload/` (never
//! served: dot-names are not) and publishes versions there.

pub use crate::board::{fetch_status, post_report, NodeStatus, Report};
use crate::board::{Board, PlanAddresses, MAX_REPORT_BYTES};
use crate::httpd::{Limits, Request, Response};
/// `Range: bytes=` is read as the relays read it (`netboot_proto::range`).
use netboot_proto::status::Phase;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// Largest `clone-plan.json` read to learn the nodes' addresses (a plan of 100 000 nodes
/// is about 30 MB).
pub const MAX_PLAN_BYTES: u64 = 64 << 20;

/// Why the server did not start, or stopped. The message names the root or the address;
/// the `io::Error` is the `#[source]` and follows when printed as a chain (`{:#}`):
/// `listening on 0.0.0.0:8080: Address in use (os error 98)`.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A root that cannot be resolved (missing, unreadable).
    #[error("{}", root.display())]
    Root {
        root: PathBuf,
        #[source]
        err: io::Error,
    },
    #[error("setting up uploads")]
    Uploads(#[from] crate::upload::server::UploadSetupError),
    #[error("listening on {listen}")]
    Listen {
        listen: String,
        #[source]
        err: io::Error,
    },
    /// The accept loop failed.
    #[error("serving")]
    Serve {
        addr: Option<std::net::SocketAddr>,
        #[source]
        err: io::Error,
    },
}

pub struct ServeOptions {
    pub roots: Vec<PathBuf>,
    pub listen: String,
    /// Open connections at most ([`crate::httpd::DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: usize,
}

/// Resolves a URL path to a file under one of `roots`; `None` for anything outside them.
/// The path is resolved with its symbolic links; a file whose real path is not inside
/// the root it was found under is skipped, as are dot-files, `..`, and anything that is
/// not a regular file. The roots must be real paths already ([`bind`] resolves them
/// once, not per request); a root that is not serves nothing.
pub fn resolve(roots: &[PathBuf], url_path: &str) -> Option<PathBuf> {
    let path = url_path.split('?').next().unwrap_or("");
    let mut rel = PathBuf::new();
    for part in path.split('/') {
        if part.is_empty() || part == "." {
            continue;
        }
        if part == ".." || part.starts_with('.') || part.contains('\\') || part.contains('\0') {
            return None;
        }
        rel.push(part);
    }
    if rel.as_os_str().is_empty() {
        return None;
    }
    roots.iter().find_map(|root| {
        let real = root.join(&rel).canonicalize().ok()?;
        (real.starts_with(root) && real.is_file()).then_some(real)
    })
}

fn serve_file(req: &Request, path: &Path) -> Response {
    let Ok(mut f) = File::open(path) else {
        return Response::text(404, "not found\n");
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    crate::httpd::serve_range(req.header("Range"), len, |span| {
        if f.seek(SeekFrom::Start(span.start)).is_err() {
            return Err(Response::text(500, "seek failed\n"));
        }
        Ok(Box::new(f.take(span.len)))
    })
}

/// Runs the server until the process ends. Prints one line when ready.
pub fn serve(opts: ServeOptions) -> Result<(), ServeError> {
    bind(opts)?.run()
}

/// A bound server, not yet answering.
pub struct Bound {
    server: crate::httpd::Server,
    roots: Vec<PathBuf>,
    uploads: Option<crate::upload::Uploads>,
}

impl Bound {
    /// The address it listens on (useful with port 0).
    pub fn addr(&self) -> Option<std::net::SocketAddr> {
        self.server.local_addr().ok()
    }

    /// Answers requests until the process ends.
    pub fn run(self) -> Result<(), ServeError> {
        let addr = self.addr();
        let uploads_on = self.uploads.is_some();
        let ctx = Arc::new(Ctx {
            uploads: self.uploads,
            roots: self.roots,
            board: Mutex::new(Board::default()),
            plan: Mutex::new(PlanCache::default()),
            started: Instant::now(),
            seen: Mutex::default(),
        });
        eprintln!(
            "imgtool serve: {} on http://{} (status board at /status; at most {} connections{})",
            ctx.roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            addr.map(|a| a.to_string()).unwrap_or_default(),
            self.server.limits().max_connections,
            if uploads_on {
                "; uploads at /upload/"
            } else {
                ""
            },
        );
        self.server
            .run(Arc::new(move |req: &mut Request| handle(&ctx, req)))
            .map_err(|err| ServeError::Serve { addr, err })
    }
}

/// Binds the listening socket. The roots are resolved (symbolic links) here, once.
pub fn bind(opts: ServeOptions) -> Result<Bound, ServeError> {
    bind_with_uploads(opts, None)
}

/// [`bind`], and with `upload` takes uploads into the first root (the image root);
/// the tokens file is read and checked here.
pub fn bind_with_uploads(
    opts: ServeOptions,
    upload: Option<crate::upload::UploadOptions>,
) -> Result<Bound, ServeError> {
    let roots = opts
        .roots
        .iter()
        .map(|r| {
            r.canonicalize().map_err(|err| ServeError::Root {
                root: r.clone(),
                err,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let uploads = match (upload, roots.first()) {
        (Some(u), Some(root)) => {
            let log: crate::upload::server::Log =
                Arc::new(|line: &str| eprintln!("imgtool serve: {line}"));
            Some(crate::upload::Uploads::open(root, &roots, u, log)?)
        }
        _ => None,
    };
    let limits = Limits {
        max_connections: opts.max_connections,
        max_body: MAX_REPORT_BYTES,
        max_put_body: if uploads.is_some() {
            crate::chunk::MAX_FRAME
        } else {
            0
        },
        ..Limits::default()
    };
    let server =
        crate::httpd::Server::bind(&opts.listen, limits).map_err(|err| ServeError::Listen {
            listen: opts.listen.clone(),
            err,
        })?;
    Ok(Bound {
        server,
        roots,
        uploads,
    })
}

struct Ctx {
    uploads: Option<crate::upload::Uploads>,
    roots: Vec<PathBuf>,
    board: Mutex<Board>,
    plan: Mutex<PlanCache>,
    started: Instant,
    /// Who fetched an image's files from here ("have you seen U?", [`answer_seen`]).
    seen: Mutex<netboot_proto::seen::SeenSet>,
}

/// The served `clone-plan.json`'s node addresses, re-read when the file changes.
#[derive(Default)]
struct PlanCache {
    stamp: Option<(PathBuf, SystemTime, u64)>,
    addresses: Option<Result<PlanAddresses, String>>,
}

impl PlanCache {
    fn refresh(&mut self, roots: &[PathBuf]) {
        let Some(path) = resolve(roots, &format!("/{}", netboot_proto::plan::FILE)) else {
            self.stamp = None;
            self.addresses = None;
            return;
        };
        let meta = std::fs::metadata(&path);
        let stamp = meta.as_ref().ok().map(|m| {
            (
                path.clone(),
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                m.len(),
            )
        });
        if stamp.is_some() && stamp == self.stamp {
            return;
        }
        self.stamp = stamp;
        let mut bytes = vec![];
        let read = File::open(&path)
            .and_then(|f| f.take(MAX_PLAN_BYTES + 1).read_to_end(&mut bytes))
            .map_err(|e| format!("{}: {e}", path.display()));
        self.addresses = Some(match read {
            Err(e) => Err(e),
            Ok(_) if bytes.len() as u64 > MAX_PLAN_BYTES => Err(format!(
                "{}: larger than {} MiB",
                path.display(),
                MAX_PLAN_BYTES >> 20
            )),
            Ok(_) => crate::board::plan_addresses(&bytes)
                .map_err(|e| format!("{}: {}", path.display(), crate::error::chain(&e))),
        });
        if let Some(Err(e)) = &self.addresses {
            eprintln!("imgtool serve: {e}; status reports are taken from this host only");
        }
    }
}

fn handle(ctx: &Ctx, req: &mut Request) -> Response {
    let path = req.path().to_string();
    if path.starts_with(crate::upload::wire::PREFIX)
        && req.method() != "GET"
        && req.method() != "HEAD"
    {
        return match &ctx.uploads {
            Some(u) => u.handle(req),
            None => Response::text(
                404,
                "this server takes no uploads (imgtool serve --tokens FILE)\n",
            ),
        };
    }
    match req.method() {
        "POST" => match path.strip_prefix("/status/") {
            Some(node) => post_status(ctx, req, node),
            None => Response::text(405, "method not allowed\n"),
        },
        "GET" | "HEAD" if path == "/status" => {
            // One serialised board shared by all its readers (see Board::snapshot): a
            // slow reader holds a reference, not its own copy of up to MAX_BOARD_BYTES.
            let body = match ctx.board.lock() {
                Ok(mut b) => b.snapshot(),
                Err(_) => return Response::text(500, "board unavailable\n"),
            };
            Response::shared(200, body).with_header("Content-Type", "application/json")
        }
        "GET" | "HEAD" => {
            if let Some(r) = answer_seen(ctx, req.url()) {
                return r;
            }
            match resolve(&ctx.roots, &path) {
                Some(p) => {
                    note_seen(ctx, req, &p);
                    serve_file(req, &p)
                }
                None => Response::text(404, "not found\n"),
            }
        }
        _ => Response::text(405, "method not allowed\n"),
    }
}

/// How long a request for an image's files counts for "have you seen U?": the server
/// outlives clone runs, and an address heard of in an earlier run says nothing about this
/// one (its node may not have booted yet). A node asks for files at least at the start of
/// each region's stream, so 30 minutes covers a 4 GiB region streamed at 20 Mbit/s and
/// more; an earlier run within that time can make a late node's downstream move up to the
/// primary early (one reroute, nothing fetched differently).
pub const SEEN_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// `GET /<image>/.seen/<address>[?within=<s>]` ([`netboot_proto::seen`]): whether that
/// address fetched an image's files from this server within [`SEEN_TTL`], or within the
/// asker's `within` (its own run: its age plus its boot grace) when that is shorter — so
/// a fetch from an earlier clone run does not count. One set for all images (a node
/// fetches one image); the query is not recorded. The image's URL may have a path prefix
/// (`http://server/images/compute`). `None`: not a query.
fn answer_seen(ctx: &Ctx, url: &str) -> Option<Response> {
    let path = url.split('?').next().unwrap_or("");
    let name = &path[path.rfind("/.seen/")? + 1..];
    let ttl = netboot_proto::seen::parse_within(url).map_or(SEEN_TTL, |w| w.min(SEEN_TTL));
    let r = match netboot_proto::seen::parse_query(name)? {
        Ok(addr) => {
            let a = ctx
                .seen
                .lock()
                .map(|s| s.answer_within(addr, Some(ttl)))
                .unwrap_or_default();
            Response::text(200, &a.to_json()).with_header("Content-Type", "application/json")
        }
        Err(()) => Response::text(400, "expected /<image>/.seen/<address>\n"),
    };
    Some(r)
}

/// Records the peer of a request for a file of an image (a directory holding a
/// `manifest`): a node's agent asks for those only after its relay listens. Boot files,
/// node plans and bootopts, which a node fetches before, are not recorded.
fn note_seen(ctx: &Ctx, req: &Request, file: &Path) {
    let in_image = file
        .parent()
        .is_some_and(|d| d.join(crate::manifest::MANIFEST_FILE).is_file());
    if in_image {
        if let Ok(mut s) = ctx.seen.lock() {
            s.fetched(req.peer().ip());
        }
    }
}

fn post_status(ctx: &Ctx, req: &mut Request, node: &str) -> Response {
    let bad = || Response::text(400, "expected POST /status/<node> with a JSON report\n");
    let Ok(body) = req.body() else {
        return bad();
    };
    let Ok(report) = serde_json::from_slice::<Report>(&body) else {
        return bad();
    };
    let peer = req.peer().ip();
    let at = ctx.started.elapsed().as_secs_f64();
    let unavailable = || crate::board::Refused(500, "board unavailable".into());
    // Lock order: plan, then board (GET /status takes the board only).
    let posted = ctx
        .plan
        .lock()
        .map_err(|_| unavailable())
        .and_then(|mut plan| {
            plan.refresh(&ctx.roots);
            let mut board = ctx.board.lock().map_err(|_| unavailable())?;
            board.post(node, peer, &report, at, plan.addresses.as_ref())
        });
    match posted {
        Ok(()) => {
            if report.phase == Phase::Failed {
                eprintln!(
                    "imgtool serve: node {node} failed: {}",
                    crate::board::sanitize(&report.message, crate::board::MAX_MESSAGE)
                );
            }
            Response::bytes(204, vec![])
        }
        Err(crate::board::Refused(code, msg)) => {
            if code == 403 {
                eprintln!("imgtool serve: report refused: {msg}");
            }
            Response::text(code, &format!("{msg}\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_roots() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("g")).unwrap();
        std::fs::write(d.path().join("g/manifest"), "x").unwrap();
        let roots = vec![d.path().canonicalize().unwrap()];
        assert!(resolve(&roots, "/g/manifest").is_some());
        assert!(resolve(&roots, "/g/../g/manifest").is_none());
        assert!(resolve(&roots, "/../etc/passwd").is_none());
        assert!(resolve(&roots, "/g/.hidden").is_none());
        assert!(resolve(&roots, "/").is_none());
    }

    fn opts(roots: Vec<PathBuf>, listen: &str) -> ServeOptions {
        ServeOptions {
            roots,
            listen: listen.into(),
            max_connections: 4,
        }
    }

    #[test]
    fn the_primary_says_who_fetched_an_images_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("g")).unwrap();
        std::fs::create_dir_all(d.path().join("etc/plan")).unwrap();
        std::fs::write(d.path().join("g/manifest"), "m").unwrap();
        std::fs::write(d.path().join("etc/plan/n1.json"), "{}").unwrap();
        let bound = bind(opts(vec![d.path().into()], "127.0.0.1:0")).unwrap();
        let base = format!("http://{}", bound.addr().unwrap());
        std::thread::spawn(move || bound.run());
        let get = |p: &str| {
            ureq::get(&format!("{base}{p}"))
                .call()
                .unwrap()
                .into_string()
                .unwrap()
        };
        let ask = || get("/g/.seen/127.0.0.1");
        assert_eq!(ask(), "{\"seen\":false,\"done\":false}\n");
        // A node plan (fetched before a node's relay listens) is not an image's file.
        get("/etc/plan/n1.json");
        assert_eq!(ask(), "{\"seen\":false,\"done\":false}\n");
        assert_eq!(get("/g/manifest"), "m");
        assert_eq!(ask(), "{\"seen\":true,\"done\":false}\n");
        // Behind a path prefix (an image URL like http://server/images/g) too.
        assert_eq!(
            get("/images/g/.seen/127.0.0.1"),
            "{\"seen\":true,\"done\":false}\n"
        );
        // The asker bounds it to its own run: a fetch longer ago than `within` (here
        // 0 s: any earlier fetch) is from an earlier run and does not count.
        assert_eq!(
            get("/g/.seen/127.0.0.1?within=0"),
            "{\"seen\":false,\"done\":false}\n"
        );
        assert_eq!(
            get("/g/.seen/127.0.0.1?within=60"),
            "{\"seen\":true,\"done\":false}\n"
        );
        assert!(matches!(
            ureq::get(&format!("{base}/g/.seen/x")).call(),
            Err(ureq::Error::Status(400, _))
        ));
    }

    #[test]
    fn a_taken_port_names_the_address_and_keeps_the_io_error() {
        let d = tempfile::tempdir().unwrap();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listen = taken.local_addr().unwrap().to_string();
        let Err(e) = bind(opts(vec![d.path().into()], &listen)) else {
            panic!("bound {listen} twice");
        };
        assert!(
            matches!(&e, ServeError::Listen { listen: l, .. } if *l == listen),
            "{e:?}"
        );
        let kind = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<io::Error>())
            .map(io::Error::kind);
        assert_eq!(kind, Some(io::ErrorKind::AddrInUse), "{e:?}");
        // Printed as the CLI prints it: the address, then the cause, once.
        let shown = crate::error::chain(&e);
        assert!(
            shown.starts_with(&format!("listening on {listen}: ")),
            "{shown}"
        );
        assert_eq!(shown.matches("in use").count(), 1, "{shown}");
    }

    #[test]
    fn a_missing_root_is_named_with_the_io_error() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("no-such-root");
        let Err(e) = bind(opts(vec![root.clone()], "127.0.0.1:0")) else {
            panic!("served a missing root");
        };
        assert!(
            matches!(&e, ServeError::Root { root: r, .. } if *r == root),
            "{e:?}"
        );
        let kind = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<io::Error>())
            .map(io::Error::kind);
        assert_eq!(kind, Some(io::ErrorKind::NotFound));
        assert!(
            crate::error::chain(&e).starts_with(&format!("{}: ", root.display())),
            "{e}"
        );
    }
}
