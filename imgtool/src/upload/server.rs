//! The upload side of `imgtool serve`: answers the requests under `/upload/`
//! (docs/PROTOCOL.md, "Upload"). It checks the token of every request, keeps the open
//! [`Session`]s, receives each frame into the session's staging directory after checking
//! its frame sha256 and queues its raw check on the [`Verifier`] (off the request path,
//! bounded), and at the manifest waits for every raw check of the session, checks the
//! whole image and publishes it as a new version
//! ([`crate::versions::publish`]), spends the token and prunes old versions.
//!
//! An upload that is cut, refused (a bad frame, over quota, a full disk) or left idle for
//! [`SESSION_IDLE`] ends its session: its directory is removed and nothing is published;
//! the current version stays served. Every refusal is logged with its reason.

use super::session::{
    check_frame_sum, check_raw, disk_status, write_frame, RawSums, Received, Refusal, Session,
};
use super::tokens::{token_key, TokenFile, TokensError, UsedTokens, USED_FILE};
use super::verify::{Job, Verification, Verifier};
use super::wire::{bearer, parse_begin_query, parse_route, FrameHeaders, RegionName, Route};
use crate::httpd::{Request, Response};
use crate::manifest::{LAYOUT_FILE, MANIFEST_FILE, MAX_MANIFEST_BYTES};
use crate::versions::{self, STAGING};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Open sessions at most (each may hold [`MAX_IN_FLIGHT`] frames in memory).
pub const MAX_SESSIONS: usize = 8;

/// Frames of one session received at once (the client sends on
/// [`super::client::SENDERS`] connections; older clients on fewer).
pub const MAX_IN_FLIGHT: usize = 8;

/// A session without a request for this long is ended (a client that vanished between
/// two requests); its next request is answered 404.
pub const SESSION_IDLE: Duration = Duration::from_secs(120);

/// Ended sessions whose reason is remembered.
const ENDED_KEPT: usize = 64;

/// Default of `--max-upload-bytes`: the bytes (frames, layout, manifest) one upload may send.
pub const DEFAULT_MAX_UPLOAD: u64 = 1 << 40;

/// How `imgtool serve` takes uploads.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// The tokens file (`<group> <token>` lines).
    pub tokens: PathBuf,
    /// Versions kept besides the current one after a publish.
    pub keep: usize,
    /// Bytes one upload may send.
    pub max_upload_bytes: u64,
}

/// Where log lines go (stderr in `imgtool serve`).
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// The uploads of one image root.
pub struct Uploads {
    root: PathBuf,
    staging: PathBuf,
    opts: UploadOptions,
    tokens: Mutex<TokenFile>,
    used: Mutex<UsedTokens>,
    sessions: Mutex<HashMap<String, Session>>,
    /// Why the last [`ENDED_KEPT`] sessions ended: a request still arriving for one (the
    /// other connection of its client) gets that reason and status, not a bare 404.
    ended: Mutex<std::collections::VecDeque<(String, Refusal)>>,
    /// One publish at a time (link swaps and pruning of one root).
    publishing: Mutex<()>,
    /// Decompresses and raw-checks received frames off the request path (bounded).
    verifier: Verifier,
    log: Log,
}

/// Why uploads could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UploadSetupError {
    #[error("reading the tokens file")]
    Tokens(#[from] TokensError),
    #[error("{}: the tokens file would be served over HTTP (it is under a served root); put it outside the roots or give it a name starting with `.`", .0.display())]
    Served(PathBuf),
    #[error("starting the upload verifier threads")]
    Verifier(#[source] std::io::Error),
    #[error("{}", path.display())]
    Staging {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
}

impl Uploads {
    /// Sets up uploads into `root` (the image root, resolved): reads the tokens file,
    /// refuses one that `roots` would serve, creates `ROOT/.upload/`, removes sessions
    /// a previous server left there, and loads the spent tokens.
    pub fn open(
        root: &Path,
        roots: &[PathBuf],
        opts: UploadOptions,
        log: Log,
    ) -> Result<Uploads, UploadSetupError> {
        let tokens = TokenFile::open(&opts.tokens)?;
        if let Ok(real) = opts.tokens.canonicalize() {
            let served = roots.iter().any(|r| {
                real.strip_prefix(r).is_ok_and(|rel| {
                    crate::serve::resolve(roots, &format!("/{}", rel.display())).is_some()
                })
            });
            if served {
                return Err(UploadSetupError::Served(opts.tokens.clone()));
            }
        }
        let staging = root.join(STAGING);
        let setup = |err| UploadSetupError::Staging {
            path: staging.clone(),
            err,
        };
        std::fs::create_dir_all(&staging).map_err(setup)?;
        clean_staging(&staging, &log).map_err(setup)?;
        let used = UsedTokens::open(&staging.join(USED_FILE)).map_err(setup)?;
        let verifier = Verifier::start().map_err(UploadSetupError::Verifier)?;
        Ok(Uploads {
            root: root.to_path_buf(),
            staging,
            opts,
            tokens: Mutex::new(tokens),
            used: Mutex::new(used),
            sessions: Mutex::new(HashMap::new()),
            ended: Mutex::new(Default::default()),
            publishing: Mutex::new(()),
            verifier,
            log,
        })
    }

    /// Answers a request under `/upload/`.
    pub fn handle(&self, req: &mut Request) -> Response {
        let path = req.path().to_string();
        let route = match parse_route(req.method(), &path) {
            Ok(r) => r,
            Err(super::wire::WireError::NoRoute(m)) => return text(404, &m),
            Err(super::wire::WireError::Bad(m)) => {
                self.say(&format!("upload refused from {}: {m}", req.peer().ip()));
                return text(400, &m);
            }
        };
        let answer = match route {
            Route::Begin { group } => self.begin(req, group),
            Route::Frame {
                group,
                session,
                region,
                index,
            } => self.frame(req, group, session, region, index),
            Route::Layout { group, session } => self.layout(req, group, session),
            Route::Manifest { group, session } => self.commit(req, group, session),
            Route::Abort { group, session } => self.abort_request(req, group, session),
        };
        answer.unwrap_or_else(|Refusal(code, msg)| text(code, &msg))
    }

    fn say(&self, line: &str) {
        (self.log)(line)
    }

    /// The token of `req` may upload to `group`: 401 without a token or with one the
    /// tokens file does not list, 403 for a token of another group or address, or a
    /// spent one.
    fn authorize(&self, req: &Request, group: &str) -> Result<String, Refusal> {
        let peer = req.peer().ip();
        let refuse = |code: u16, why: String| {
            self.say(&format!(
                "upload to {group} refused ({code}) from {peer}: {why}"
            ));
            Refusal::new(code, why)
        };
        let Some(token) = bearer(req.header("Authorization")) else {
            return Err(refuse(
                401,
                "no upload token (Authorization: Bearer <token>)".into(),
            ));
        };
        let key = token_key(token);
        self.granted(&key, group, peer)
            .map_err(|r| refuse(r.0, r.1))?;
        Ok(key)
    }

    /// The token `key` is listed for `group` (re-reading the tokens file), from `peer`
    /// when the line names an address, and not spent. Checked when a session begins and
    /// again at its publish: a token revoked (`pxe-builder backup --clear`) or spent by
    /// another session meanwhile publishes nothing.
    fn granted(&self, key: &str, group: &str, peer: std::net::IpAddr) -> Result<(), Refusal> {
        let grant = {
            let mut tokens = self
                .tokens
                .lock()
                .map_err(|_| Refusal::new(500, "tokens unavailable"))?;
            if let Err(e) = tokens.refresh() {
                self.say(&format!(
                    "upload: {} (no token is valid until it reads well)",
                    crate::error::chain(&e)
                ));
            }
            tokens.grant(key).cloned()
        };
        let Some(grant) = grant else {
            return Err(Refusal::new(401, "unknown upload token"));
        };
        if grant.group != group {
            return Err(Refusal::new(
                403,
                format!("this token is for group {}, not {group}", grant.group),
            ));
        }
        if let Some(ip) = grant.ip {
            if ip.to_canonical() != peer.to_canonical() {
                return Err(Refusal::new(
                    403,
                    format!("this token is for uploads from {ip}, not from {peer}"),
                ));
            }
        }
        let spent = self
            .used
            .lock()
            .map_err(|_| Refusal::new(500, "tokens unavailable"))?
            .is_spent(key);
        if spent {
            return Err(Refusal::new(
                403,
                "this token was used already (an upload with it was published)",
            ));
        }
        Ok(())
    }

    fn sessions(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, Session>>, Refusal> {
        self.sessions
            .lock()
            .map_err(|_| Refusal::new(500, "sessions unavailable"))
    }

    /// `POST /upload/<group>?chunk_size=N`: a new session. An open session of the same
    /// token (the node restarted its backup) is ended first.
    fn begin(&self, req: &Request, group: &str) -> Result<Response, Refusal> {
        let key = self.authorize(req, group)?;
        let query = req.url().split_once('?').map_or("", |(_, q)| q);
        let chunk_size = parse_begin_query(query).map_err(|e| Refusal::new(400, e.to_string()))?;
        let mut sessions = self.sessions()?;
        self.reap(&mut sessions);
        let older: Vec<String> = sessions
            .values()
            .filter(|s| s.token_key == key)
            .map(|s| s.id.clone())
            .collect();
        for id in older {
            self.end(
                &mut sessions,
                &id,
                409,
                "a new upload with the same token started",
            );
        }
        if sessions.len() >= MAX_SESSIONS {
            return Err(Refusal::new(
                503,
                format!("{MAX_SESSIONS} uploads are in progress; try again later"),
            ));
        }
        let mut r = [0u8; 16];
        getrandom::fill(&mut r).map_err(|e| Refusal::new(500, format!("no random id: {e}")))?;
        let id = hex::encode(r);
        let dir = self.staging.join(&id);
        let s = Session::create(id.clone(), group, key, dir, chunk_size).map_err(|e| {
            Refusal::new(
                disk_status(&e),
                format!("creating the staging directory: {e}"),
            )
        })?;
        sessions.insert(id.clone(), s);
        self.say(&format!(
            "upload {id} to {group} started from {} (chunk size {chunk_size})",
            req.peer().ip()
        ));
        Ok(Response::bytes(
            201,
            serde_json::json!({ "session": id })
                .to_string()
                .into_bytes(),
        )
        .with_header("Content-Type", "application/json"))
    }

    /// Ends sessions idle for [`SESSION_IDLE`].
    fn reap(&self, sessions: &mut HashMap<String, Session>) {
        let idle: Vec<String> = sessions
            .values()
            .filter(|s| s.in_flight == 0 && s.last.elapsed() > SESSION_IDLE)
            .map(|s| s.id.clone())
            .collect();
        for id in idle {
            self.end(sessions, &id, 408, "no request for 2 minutes");
        }
    }

    /// Removes a session and its staging directory; logs why and remembers it (`code`
    /// is the status later requests of the session get). Nothing is published.
    fn end(&self, sessions: &mut HashMap<String, Session>, id: &str, code: u16, why: &str) {
        if let Some(s) = sessions.remove(id) {
            s.verify.cancel();
            let _ = std::fs::remove_dir_all(&s.dir);
            self.say(&format!(
                "upload {id} to {} ended, nothing published: {why}",
                s.group
            ));
            if let Ok(mut ended) = self.ended.lock() {
                if ended.len() >= ENDED_KEPT {
                    ended.pop_front();
                }
                ended.push_back((id.to_string(), Refusal::new(code, why)));
            }
        }
    }

    /// Ends session `id` for `r` (logged) and returns `r`.
    fn fail(&self, id: &str, r: Refusal) -> Refusal {
        if let Ok(mut sessions) = self.sessions.lock() {
            self.end(&mut sessions, id, r.0, &r.1);
        }
        r
    }

    /// The answer to a request of session `id`, which is not open: why it ended, when
    /// that is remembered.
    fn gone(&self, id: &str, group: &str) -> Refusal {
        let reason = self.ended.lock().ok().and_then(|e| {
            e.iter()
                .rev()
                .find(|(i, _)| i == id)
                .map(|(_, r)| r.clone())
        });
        match reason {
            Some(Refusal(code, why)) => Refusal::new(code, format!("upload {id} ended: {why}")),
            None => Refusal::new(
                404,
                format!("no upload {id} to {group} in progress (ended or never started)"),
            ),
        }
    }

    /// The session `id` of `group`, for a request carrying the session's token.
    fn session<'s>(
        &self,
        sessions: &'s mut HashMap<String, Session>,
        req: &Request,
        group: &str,
        id: &str,
    ) -> Result<&'s mut Session, Refusal> {
        let Some(s) = sessions.get_mut(id).filter(|s| s.group == group) else {
            return Err(self.gone(id, group));
        };
        let key = bearer(req.header("Authorization")).map(token_key);
        match key {
            None => Err(Refusal::new(401, "no upload token")),
            Some(k) if k != s.token_key => {
                self.say(&format!(
                    "upload {id} to {group}: a request from {} with another token refused",
                    req.peer().ip()
                ));
                Err(Refusal::new(403, "not this upload's token"))
            }
            Some(_) => {
                s.last = Instant::now();
                Ok(s)
            }
        }
    }

    /// `PUT .../<region>/<index>`: one frame, its frame sha256 checked, written at its
    /// offset and queued for its raw check ([`super::verify`]; the queue's bound may
    /// hold the answer back); then answered.
    fn frame(
        &self,
        req: &mut Request,
        group: &str,
        id: &str,
        region: RegionName,
        index: usize,
    ) -> Result<Response, Refusal> {
        let what = format!("upload to {group}: region {} chunk {index}", region.name());
        let len = req.body_len();
        let Admitted {
            headers,
            file,
            verify,
            sums,
        } = {
            let mut sessions = self.sessions()?;
            self.reap(&mut sessions);
            let s = self.session(&mut sessions, req, group, id)?;
            let admitted = admit_frame(
                s,
                req,
                region,
                index,
                len,
                self.opts.max_upload_bytes,
                &what,
            );
            match admitted {
                Ok(ok) => ok,
                Err(r) if r.0 == 503 || r.0 == 409 => return Err(r),
                Err(r) => {
                    drop(sessions);
                    return Err(self.fail(id, r));
                }
            }
        };
        let received = receive_frame(req, &headers, &file, &what).map(|frame| {
            let check = RawCheck {
                verify: &verify,
                sums: &sums,
                key: (region, index),
            };
            self.defer_check(frame, &headers, &what, check)
        });
        let mut sessions = self.sessions()?;
        let Some(s) = sessions.get_mut(id) else {
            let Refusal(code, why) = self.gone(id, group);
            return Err(Refusal::new(code, format!("{what}: {why}")));
        };
        s.in_flight = s.in_flight.saturating_sub(1);
        match received {
            Ok(()) => {
                s.record(
                    region,
                    index,
                    Received {
                        payload_offset: headers.payload_offset,
                        compressed_length: len,
                        length: headers.raw_length,
                        // The raw check's own sum replaces it at the commit.
                        sha256: headers.raw_sha256.unwrap_or_default(),
                        frame_sha256: headers.frame_sha256,
                    },
                );
                Ok(Response::bytes(204, vec![]))
            }
            Err(r) => {
                self.end(&mut sessions, id, r.0, &r.1);
                Err(r)
            }
        }
    }

    /// Queues `frame`'s raw check (decompress, raw sha256, kept in the session's
    /// [`RawSums`]) on the verifier, waiting while the verifier holds its bound.
    fn defer_check(&self, frame: Vec<u8>, headers: &FrameHeaders, what: &str, to: RawCheck) {
        let (h, what) = (headers.clone(), what.to_string());
        let (sums, key) = (to.sums.clone(), to.key);
        let job = Job {
            bytes: frame.len() as u64,
            check: Box::new(move || {
                let sum = check_raw(&frame, &h, &what)?;
                sums.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, sum);
                Ok(())
            }),
        };
        self.verifier.submit(job, to.verify);
    }

    /// `PUT .../layout`: the layout file's bytes (checked with the manifest).
    fn layout(&self, req: &mut Request, group: &str, id: &str) -> Result<Response, Refusal> {
        let dir = {
            let mut sessions = self.sessions()?;
            let s = self.session(&mut sessions, req, group, id)?;
            if s.committing {
                return Err(Refusal::new(409, "the manifest came already"));
            }
            let len = req.body_len();
            if len > MAX_MANIFEST_BYTES {
                let r = Refusal::new(
                    413,
                    format!("layout larger than {MAX_MANIFEST_BYTES} bytes"),
                );
                drop(sessions);
                return Err(self.fail(id, r));
            }
            s.bytes = s.bytes.saturating_add(len);
            s.dir.clone()
        };
        let body = req
            .body_whole()
            .map_err(|e| self.fail(id, Refusal::new(400, format!("layout cut: {e}"))))?;
        let path = dir.join(LAYOUT_FILE);
        std::fs::write(&path, &body).map_err(|e| {
            self.fail(
                id,
                Refusal::new(disk_status(&e), format!("writing the layout: {e}")),
            )
        })?;
        if let Some(s) = self.sessions()?.get_mut(id) {
            s.layout = true;
        }
        Ok(Response::bytes(204, vec![]))
    }

    /// `PUT .../manifest`: the last request. The session is taken out (no frame can
    /// come any more), checked as a whole, published and the token spent.
    fn commit(&self, req: &mut Request, group: &str, id: &str) -> Result<Response, Refusal> {
        {
            let mut sessions = self.sessions()?;
            let s = self.session(&mut sessions, req, group, id)?;
            if req.body_len() > MAX_MANIFEST_BYTES {
                let r = Refusal::new(
                    413,
                    format!("manifest larger than {MAX_MANIFEST_BYTES} bytes"),
                );
                drop(sessions);
                return Err(self.fail(id, r));
            }
            if s.in_flight > 0 || !s.layout || s.committing {
                return Err(Refusal::new(
                    409,
                    "the manifest comes last: after the layout and every frame's answer",
                ));
            }
            // In the same critical section as the in_flight check: no frame or layout
            // is admitted from here on, so the checked payload is the published one.
            s.committing = true;
        }
        let manifest = req
            .body_whole()
            .map_err(|e| self.fail(id, Refusal::new(400, format!("manifest cut: {e}"))))?;
        let Some(mut session) = self.sessions()?.remove(id) else {
            return Err(self.gone(id, group));
        };
        let published = self.publish(&mut session, &manifest, req.peer().ip());
        match &published {
            Ok(_) => {}
            Err(r) => {
                let _ = std::fs::remove_dir_all(&session.dir);
                self.say(&format!(
                    "upload {id} to {group} ended, nothing published: {}",
                    r.1
                ));
            }
        }
        let (image_id, version) = published?;
        let held = self.verifier.held();
        self.say(&format!(
            "upload {id}: published {version} (image {image_id}, {} chunks, {} raw-checked, {} raw sha256s taken here; verifier held at most {} frames, {} bytes) from {}",
            session.count(),
            session.verify.checked(),
            session.filled,
            held.peak_frames,
            held.peak_bytes,
            req.peer().ip()
        ));
        let body = serde_json::json!({
            "image_id": image_id,
            "version": version,
            "url": format!("/{version}/"),
        });
        Ok(Response::bytes(201, body.to_string().into_bytes())
            .with_header("Content-Type", "application/json"))
    }

    /// Checks the staged image, publishes it, spends the token, prunes. The token is
    /// checked again under the publishing lock (still listed for the group, not spent).
    fn publish(
        &self,
        s: &mut Session,
        manifest: &[u8],
        peer: std::net::IpAddr,
    ) -> Result<(String, String), Refusal> {
        // Every frame's raw check, before anything of the image is looked at.
        s.verify.wait()?;
        let manifest = &s.settle_manifest(manifest)?;
        let mpath = s.dir.join(MANIFEST_FILE);
        std::fs::write(&mpath, manifest)
            .map_err(|e| Refusal::new(disk_status(&e), format!("writing the manifest: {e}")))?;
        let layout = std::fs::read(s.dir.join(LAYOUT_FILE))
            .map_err(|e| Refusal::new(500, format!("reading the staged layout: {e}")))?;
        let image_id = s.check_commit(manifest, &layout)?;
        let _one = self
            .publishing
            .lock()
            .map_err(|_| Refusal::new(500, "publishing unavailable"))?;
        self.granted(&s.token_key, &s.group, peer)
            .map_err(|Refusal(code, why)| Refusal::new(code, format!("at publish: {why}")))?;
        let version = versions::publish(&self.root, &s.group, &s.dir, &image_id)
            .map_err(|e| Refusal::new(500, format!("publishing: {}", e.chain())))?;
        if let Ok(mut used) = self.used.lock() {
            if let Err(e) = used.spend(&s.token_key, &s.group, &image_id) {
                self.say(&format!(
                    "upload {}: the spent token could not be recorded in {}: {e} (refused until this server restarts)",
                    s.id,
                    self.staging.join(USED_FILE).display()
                ));
            }
        }
        match versions::prune(&self.root, Some(&s.group), self.opts.keep) {
            Ok(gone) if !gone.is_empty() => self.say(&format!(
                "pruned {} (keeping {})",
                gone.join(", "),
                self.opts.keep
            )),
            Ok(_) => {}
            Err(e) => self.say(&format!("pruning {}: {}", s.group, e.chain())),
        }
        Ok((image_id, version))
    }

    /// `DELETE /upload/<group>/<session>`.
    fn abort_request(&self, req: &Request, group: &str, id: &str) -> Result<Response, Refusal> {
        let mut sessions = self.sessions()?;
        self.session(&mut sessions, req, group, id)?;
        self.end(&mut sessions, id, 410, "the client gave up");
        Ok(Response::bytes(204, vec![]))
    }
}

/// Removes what an earlier run left in the staging directory: sessions, pruned
/// versions, new links of an unfinished publish.
fn clean_staging(staging: &Path, log: &Log) -> std::io::Result<()> {
    for e in std::fs::read_dir(staging)?.flatten() {
        let n = e.file_name();
        let n = n.to_string_lossy();
        // `link-<group>-*`: the new link versions::publish was about to swap in (a
        // symlink: removed), or after a crash inside adopt_plain the group's former
        // plain directory it was exchanged with (an image: kept, for the admin).
        if n.starts_with("link-") {
            let p = e.path();
            if p.is_symlink() {
                log(&format!(
                    "upload: removing {n} left by an earlier run from {}",
                    staging.display()
                ));
                let _ = std::fs::remove_file(&p);
            } else {
                log(&format!(
                    "upload: {} was left by an interrupted publish and may hold a group's former image: move it to ROOT/<group>@<id12> or remove it",
                    p.display()
                ));
            }
            continue;
        }
        if super::wire::check_session(&n).is_ok() || n.starts_with("pruned-") {
            log(&format!(
                "upload: removing {n} left by an earlier run from {}",
                staging.display()
            ));
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    Ok(())
}

/// Checks a frame request before its body is read (headers, quota, a chunk not sent
/// twice, room among the frames in flight) and reserves it. Returns its headers and the
/// payload file.
fn admit_frame(
    s: &mut Session,
    req: &Request,
    region: RegionName,
    index: usize,
    len: u64,
    max_bytes: u64,
    what: &str,
) -> Result<Admitted, Refusal> {
    if let Some(Refusal(code, why)) = s.verify.failed() {
        return Err(Refusal::new(
            code,
            format!("{what}: an earlier frame failed: {why}"),
        ));
    }
    let headers = FrameHeaders::parse(|k| req.header(k), s.chunk_size)
        .map_err(|e| Refusal::new(400, format!("{what}: {e}")))?;
    let bound = crate::chunk::frame_bound(s.chunk_size);
    if len == 0 || len > bound {
        return Err(Refusal::new(
            413,
            format!("{what}: a frame of {len} bytes; frames of this session are 1..={bound}"),
        ));
    }
    if s.committing {
        return Err(Refusal::new(
            409,
            format!("{what}: the manifest came already"),
        ));
    }
    if s.has(region, index) {
        return Err(Refusal::new(409, format!("{what}: sent twice")));
    }
    if s.count() >= super::wire::MAX_CHUNKS {
        return Err(Refusal::new(
            413,
            format!("{what}: more than {} chunks", super::wire::MAX_CHUNKS),
        ));
    }
    let end = headers.payload_offset.checked_add(len);
    let total = s.bytes.checked_add(len);
    if end.is_none_or(|e| e > max_bytes) || total.is_none_or(|t| t > max_bytes) {
        return Err(Refusal::new(
            413,
            format!("{what}: over the upload quota of {max_bytes} bytes (--max-upload-bytes)"),
        ));
    }
    if s.in_flight >= MAX_IN_FLIGHT {
        return Err(Refusal::new(
            503,
            format!("{what}: {MAX_IN_FLIGHT} frames of this upload are arriving already"),
        ));
    }
    let start = headers.payload_offset;
    let end = end.unwrap_or(u64::MAX);
    if let Some((at, other)) = s.overlap(region, start, end) {
        return Err(Refusal::new(
            400,
            format!("{what}: payload bytes {start}..{end} overlap chunk {other}'s at {at}"),
        ));
    }
    let file = s.payload(region).map_err(|e| {
        Refusal::new(
            disk_status(&e),
            format!("{what}: creating its payload: {e}"),
        )
    })?;
    s.reserve(region, index, start, end);
    s.bytes = total.unwrap_or(u64::MAX);
    s.in_flight += 1;
    Ok(Admitted {
        headers,
        file,
        verify: s.verify.clone(),
        sums: s.raw_sums.clone(),
    })
}

/// A frame request let in: its headers, its payload file, and where its raw check
/// counts and puts the raw sha256 it computes.
struct Admitted {
    headers: FrameHeaders,
    file: Arc<std::fs::File>,
    verify: Arc<Verification>,
    sums: Arc<RawSums>,
}

/// Where a frame's raw check is counted and its raw sha256 kept.
struct RawCheck<'a> {
    verify: &'a Arc<Verification>,
    sums: &'a Arc<RawSums>,
    key: (RegionName, usize),
}

/// Reads a frame's body (its length was bounded by [`admit_frame`]), checks its frame
/// sha256 and writes it; returns it for its raw check.
fn receive_frame(
    req: &mut Request,
    headers: &FrameHeaders,
    file: &std::fs::File,
    what: &str,
) -> Result<Vec<u8>, Refusal> {
    let frame = req.body_whole().map_err(|e| {
        Refusal::new(
            400,
            format!("{what}: the connection broke while it arrived ({e})"),
        )
    })?;
    check_frame_sum(&frame, headers, what)?;
    write_frame(file, &frame, headers.payload_offset, what)?;
    Ok(frame)
}

fn text(code: u16, msg: &str) -> Response {
    Response::text(code, &format!("{}\n", msg.trim_end()))
}
