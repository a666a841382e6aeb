//! Image signatures: ed25519 keys, the image's `signature` file, and the check a node (or
//! `imgtool verify/restore --trust`) makes before it writes anything.
//!
//! A signature covers the image id. The id is the sha256 of the canonical manifest, and
//! the manifest records the sha256 of the `layout` file and of every chunk (raw bytes and
//! zstd frame), so one signature over the id vouches for the manifest, the layout and every
//! payload byte a restore writes. The signed message is domain-separated
//! ([`SIGNED_PREFIX`] then the 64 hex digits of the id), so a signature made here cannot be
//! replayed as anything else, nor anything else as one.
//!
//! File formats (all text, documented in `docs/TRUST.md`):
//! - secret key `KEY`: `netboot-ed25519-secret-key v1 <key id>` then the 32-byte seed in hex;
//! - public key `KEY.pub`: `netboot-ed25519-public-key v1 <key id>` then the key in hex;
//! - `<image>/signature`: `netboot-image-signature v1`, then one line per signer:
//!   `ed25519 <key id> <image id> <signature hex>`.
//!
//! Lines starting with `#` and blank lines are ignored everywhere. The key id is the first
//! 8 bytes of sha256(public key), in hex: short enough to read out, long enough that two
//! keys of one site do not collide by chance.
//!
//! This module does not fetch anything itself beyond the `signature` file through an
//! [`ImageSource`]; what an attacker can still do (serve another initrd, change the TFTP
//! boot entries) is in `docs/TRUST.md`.

use crate::manifest::Image;
use crate::source::ImageSource;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Name of the signature file in an image directory.
pub const SIGNATURE_FILE: &str = "signature";
/// First line of a signature file.
pub const SIGNATURE_HEADER: &str = "netboot-image-signature v1";
/// First word of a public key file's header line.
pub const PUBLIC_HEADER: &str = "netboot-ed25519-public-key";
/// First word of a secret key file's header line.
pub const SECRET_HEADER: &str = "netboot-ed25519-secret-key";
/// Format version of key files.
pub const KEY_VERSION: &str = "v1";
/// What a signature signs before the image id: names the purpose and version, so the
/// signature cannot be mistaken for one over anything else the key might sign.
pub const SIGNED_PREFIX: &[u8] = b"netboot-image-signature-v1\0image-id\0";
/// Largest signature file read: a line is ~230 bytes, so this holds every signer a site
/// could want ([`MAX_SIGNERS`]) with room for comments, and a hostile server cannot make a
/// node allocate more.
pub const MAX_SIGNATURE_BYTES: u64 = 64 << 10;
/// Most signature lines in one file (several keys may sign one image during a rotation).
pub const MAX_SIGNERS: usize = 64;
/// Largest key file read: a key file is ~100 bytes plus comments.
pub const MAX_KEY_BYTES: u64 = 16 << 10;
/// Most trusted public keys a node or a command takes (a directory of keys is read whole).
pub const MAX_TRUSTED_KEYS: usize = 64;

pub use crate::error::TrustError;

/// A key id: first 8 bytes of sha256(public key), hex.
pub fn key_id(public: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(public.as_bytes())[..8])
}

/// A public key, and where it was read from (for messages).
#[derive(Clone)]
pub struct PublicKey {
    pub id: String,
    pub key: VerifyingKey,
    pub origin: String,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({} from {})", self.id, self.origin)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key {} ({})", self.id, self.origin)
    }
}

/// A secret (signing) key.
pub struct SecretKey {
    pub id: String,
    key: SigningKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.id)
    }
}

/// Lines of a small text file that matter: (1-based line number, trimmed text).
fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// Parses a key file: header `<kind> v1 <id>` then one line of 32 bytes in hex.
fn parse_key_file(text: &str, kind: &str, path: &str) -> Result<(String, [u8; 32]), TrustError> {
    let bad = |line: usize, msg: String| TrustError::Malformed {
        path: path.to_string(),
        line,
        msg,
    };
    let mut lines = content_lines(text);
    let (hl, header) = lines.next().ok_or_else(|| {
        bad(
            1,
            format!("empty: expected `{kind} {KEY_VERSION} <key id>`"),
        )
    })?;
    let words: Vec<&str> = header.split_whitespace().collect();
    match words.as_slice() {
        [k, v, id] if *k == kind && *v == KEY_VERSION => {
            let (kl, body) = lines
                .next()
                .ok_or_else(|| bad(hl, "the key line is missing".into()))?;
            let bytes = hex::decode(body)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| bad(kl, "expected 64 hex digits (a 32-byte ed25519 key)".into()))?;
            if let Some((l, _)) = lines.next() {
                return Err(bad(l, "unexpected text after the key".into()));
            }
            Ok((id.to_string(), bytes))
        }
        [k, v, ..] if *k == kind => Err(bad(
            hl,
            format!("format `{k} {v}` is not supported (this imgtool reads {kind} {KEY_VERSION})"),
        )),
        _ if header.starts_with(SECRET_HEADER) && kind == PUBLIC_HEADER => Err(bad(
            hl,
            "this is a SECRET key; give the .pub file (and keep the secret one off the nodes)"
                .into(),
        )),
        _ => Err(bad(
            hl,
            format!("not a {kind} file (expected `{kind} {KEY_VERSION} <key id>`)"),
        )),
    }
}

/// Reads at most `limit` bytes of `path` as text; refuses larger files.
fn read_small(path: &Path, limit: u64) -> Result<String, TrustError> {
    let err = |msg: String| TrustError::File {
        path: path.display().to_string(),
        msg,
    };
    let f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut buf = vec![];
    f.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| err(e.to_string()))?;
    if buf.len() as u64 > limit {
        return Err(err(format!("larger than {limit} bytes: not a key file")));
    }
    String::from_utf8(buf).map_err(|_| err("not UTF-8 text: not a key file".into()))
}

impl PublicKey {
    /// Parses a public key file's text; `origin` names it in messages.
    pub fn from_text(text: &str, origin: &str) -> Result<PublicKey, TrustError> {
        let (id, bytes) = parse_key_file(text, PUBLIC_HEADER, origin)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| TrustError::Malformed {
            path: origin.to_string(),
            line: 2,
            msg: "not a valid ed25519 public key".into(),
        })?;
        let real = key_id(&key);
        if real != id {
            return Err(TrustError::Malformed {
                path: origin.to_string(),
                line: 1,
                msg: format!(
                    "the header names key id {id} but the key's id is {real}: damaged or edited"
                ),
            });
        }
        Ok(PublicKey {
            id,
            key,
            origin: origin.to_string(),
        })
    }

    pub fn load(path: &Path) -> Result<PublicKey, TrustError> {
        Self::from_text(
            &read_small(path, MAX_KEY_BYTES)?,
            &path.display().to_string(),
        )
    }

    pub fn to_text(&self) -> String {
        format!(
            "{PUBLIC_HEADER} {KEY_VERSION} {}\n{}\n",
            self.id,
            hex::encode(self.key.as_bytes())
        )
    }
}

impl SecretKey {
    /// A new key from the operating system's random number generator.
    pub fn generate() -> Result<SecretKey, TrustError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| TrustError::File {
            path: "the OS random number generator".into(),
            msg: e.to_string(),
        })?;
        Ok(Self::from_seed(&seed))
    }

    fn from_seed(seed: &[u8; 32]) -> SecretKey {
        let key = SigningKey::from_bytes(seed);
        SecretKey {
            id: key_id(&key.verifying_key()),
            key,
        }
    }

    pub fn from_text(text: &str, origin: &str) -> Result<SecretKey, TrustError> {
        let (id, seed) = parse_key_file(text, SECRET_HEADER, origin)?;
        let k = Self::from_seed(&seed);
        if k.id != id {
            return Err(TrustError::Malformed {
                path: origin.to_string(),
                line: 1,
                msg: format!(
                    "the header names key id {id} but the key's id is {}: damaged or edited",
                    k.id
                ),
            });
        }
        Ok(k)
    }

    pub fn load(path: &Path) -> Result<SecretKey, TrustError> {
        Self::from_text(
            &read_small(path, MAX_KEY_BYTES)?,
            &path.display().to_string(),
        )
    }

    pub fn to_text(&self) -> String {
        format!(
            "{SECRET_HEADER} {KEY_VERSION} {}\n{}\n",
            self.id,
            hex::encode(self.key.to_bytes())
        )
    }

    pub fn public(&self, origin: &str) -> PublicKey {
        PublicKey {
            id: self.id.clone(),
            key: self.key.verifying_key(),
            origin: origin.to_string(),
        }
    }

    /// Signs `image_id` (64 hex digits).
    pub fn sign(&self, image_id: &str) -> SignatureLine {
        SignatureLine {
            key_id: self.id.clone(),
            image_id: image_id.to_string(),
            signature: self.key.sign(&signed_message(image_id)).to_bytes(),
        }
    }
}

/// What a signature signs: [`SIGNED_PREFIX`] and the image id's hex digits.
pub fn signed_message(image_id: &str) -> Vec<u8> {
    let mut m = SIGNED_PREFIX.to_vec();
    m.extend_from_slice(image_id.as_bytes());
    m
}

/// The file name of a secret key's public half: `KEY.pub`.
pub fn public_path(secret: &Path) -> PathBuf {
    let mut s = secret.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Writes a new key pair: `path` (secret, mode 0600) and `path.pub`. Refuses to overwrite
/// either file (a lost signing key cannot be recovered, and an overwritten one silently
/// invalidates every node's trust).
pub fn keygen(path: &Path) -> Result<SecretKey, TrustError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key = SecretKey::generate()?;
    let public = public_path(path);
    for p in [path, public.as_path()] {
        if p.symlink_metadata().is_ok() {
            return Err(TrustError::File {
                path: p.display().to_string(),
                msg: "already exists; keygen never overwrites a key (remove it first, or pick another name)".into(),
            });
        }
    }
    let write = |p: &Path, mode: u32, text: &str| -> Result<(), TrustError> {
        let err = |e: std::io::Error| TrustError::File {
            path: p.display().to_string(),
            msg: e.to_string(),
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(p)
            .map_err(err)?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(err)
    };
    write(path, 0o600, &key.to_text())?;
    if let Err(e) = write(&public, 0o644, &key.public("").to_text()) {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(key)
}

/// One line of a signature file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureLine {
    pub key_id: String,
    /// The image id the signer signed (kept so that a signature for another image is
    /// named as such, not just as "bad").
    pub image_id: String,
    pub signature: [u8; 64],
}

/// A parsed `signature` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signatures {
    pub lines: Vec<SignatureLine>,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl Signatures {
    /// Parses a signature file; `path` names it in errors.
    pub fn parse(bytes: &[u8], path: &str) -> Result<Signatures, TrustError> {
        let bad = |line: usize, msg: String| TrustError::Malformed {
            path: path.to_string(),
            line,
            msg,
        };
        if bytes.len() as u64 > MAX_SIGNATURE_BYTES {
            return Err(bad(
                1,
                format!("larger than {MAX_SIGNATURE_BYTES} bytes: not a signature file"),
            ));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| bad(1, "not UTF-8 text".into()))?;
        let mut lines = content_lines(text);
        match lines.next() {
            Some((_, SIGNATURE_HEADER)) => {}
            Some((l, h)) if h.starts_with("netboot-image-signature ") => {
                return Err(bad(
                    l,
                    format!(
                        "format `{h}` is not supported (this version reads `{SIGNATURE_HEADER}`)"
                    ),
                ))
            }
            Some((l, _)) => {
                return Err(bad(l, format!("expected the header `{SIGNATURE_HEADER}`")))
            }
            None => return Err(bad(1, "empty".into())),
        }
        let mut out = Signatures::default();
        for (l, line) in lines {
            if out.lines.len() >= MAX_SIGNERS {
                return Err(bad(l, format!("more than {MAX_SIGNERS} signatures")));
            }
            let w: Vec<&str> = line.split_whitespace().collect();
            let [alg, key_id, image_id, sig] = w.as_slice() else {
                return Err(bad(
                    l,
                    "expected `ed25519 <key id> <image id> <signature>`".into(),
                ));
            };
            if *alg != "ed25519" {
                return Err(bad(l, format!("unknown algorithm `{alg}` (only ed25519)")));
            }
            if !is_hex(key_id, 16) {
                return Err(bad(l, format!("key id `{key_id}` is not 16 hex digits")));
            }
            if !is_hex(image_id, 64) {
                return Err(bad(
                    l,
                    format!("image id `{image_id}` is not 64 hex digits"),
                ));
            }
            let signature = hex::decode(sig)
                .ok()
                .and_then(|b| <[u8; 64]>::try_from(b).ok())
                .ok_or_else(|| bad(l, "signature is not 128 hex digits".into()))?;
            out.lines.push(SignatureLine {
                key_id: key_id.to_string(),
                image_id: image_id.to_string(),
                signature,
            });
        }
        Ok(out)
    }

    pub fn to_text(&self) -> String {
        let mut s = format!("{SIGNATURE_HEADER}\n");
        for l in &self.lines {
            s.push_str(&format!(
                "ed25519 {} {} {}\n",
                l.key_id,
                l.image_id,
                hex::encode(l.signature)
            ));
        }
        s
    }

    /// Adds `line`, replacing any earlier line by the same key. Lines for another image id
    /// (left from before a re-capture) are dropped; returns how many of those.
    pub fn add(&mut self, line: SignatureLine) -> usize {
        let stale = self
            .lines
            .iter()
            .filter(|l| l.image_id != line.image_id)
            .count();
        self.lines
            .retain(|l| l.key_id != line.key_id && l.image_id == line.image_id);
        self.lines.push(line);
        stale
    }
}

/// Reads the image's `signature` file (at most [`MAX_SIGNATURE_BYTES`]) from `source`.
/// `Err` carries why it could not be read (missing, unreachable, too large).
pub fn read_signature_file(source: &dyn ImageSource) -> Result<Vec<u8>, String> {
    match source.read_optional(SIGNATURE_FILE, MAX_SIGNATURE_BYTES) {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => Err(format!(
            "no `{SIGNATURE_FILE}` file in {}",
            source.location()
        )),
        Err(e) => Err(format!("`{SIGNATURE_FILE}` could not be read: {e}")),
    }
}

/// `K1 (origin), K2 (origin)` for messages.
fn describe_keys(trusted: &[PublicKey]) -> String {
    if trusted.is_empty() {
        return "no key".into();
    }
    trusted
        .iter()
        .map(|k| k.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks the signature file `file` (as read by [`read_signature_file`]) of image `id` at
/// `location` against `trusted` keys. `Ok`: the key that vouches for it.
pub fn check_signatures<'k>(
    trusted: &'k [PublicKey],
    location: &str,
    id: &str,
    file: Result<&[u8], String>,
) -> Result<&'k PublicKey, TrustError> {
    let keys = describe_keys(trusted);
    let bytes = file.map_err(|why| TrustError::Unsigned {
        location: location.to_string(),
        image_id: id.to_string(),
        why,
        keys: keys.clone(),
    })?;
    let sigs = Signatures::parse(bytes, &format!("{location}/{SIGNATURE_FILE}"))?;
    if sigs.lines.is_empty() {
        return Err(TrustError::Unsigned {
            location: location.to_string(),
            image_id: id.to_string(),
            why: format!("`{SIGNATURE_FILE}` holds no signature"),
            keys,
        });
    }
    let message = signed_message(id);
    let mut found = vec![];
    for line in &sigs.lines {
        let Some(k) = trusted.iter().find(|k| k.id == line.key_id) else {
            found.push(format!("signed by unknown key {}", line.key_id));
            continue;
        };
        if line.image_id != id {
            found.push(format!(
                "{k} signed image {}, not this one (the manifest changed after signing)",
                line.image_id
            ));
            continue;
        }
        match k
            .key
            .verify_strict(&message, &Signature::from_bytes(&line.signature))
        {
            Ok(()) => return Ok(k),
            Err(_) => found.push(format!("bad signature by {k}")),
        }
    }
    Err(TrustError::Untrusted {
        location: location.to_string(),
        image_id: id.to_string(),
        found: found.join("; "),
        keys,
    })
}

/// Reads and checks `img`'s signature against `trusted` (which must not be empty: with no
/// trusted key nothing is checked, and callers skip the call). `Ok`: the vouching key.
pub fn verify_image<'k>(
    trusted: &'k [PublicKey],
    img: &Image,
) -> Result<&'k PublicKey, TrustError> {
    let file = read_signature_file(img.source.as_ref());
    check_signatures(
        trusted,
        &img.location(),
        img.id(),
        file.as_deref().map_err(Clone::clone),
    )
}

/// Refuses `img` unless its id is `expected` (a pin from the boot options).
pub fn check_pin(img: &Image, expected: &str) -> Result<(), TrustError> {
    if img.id() == expected {
        Ok(())
    } else {
        Err(TrustError::Pinned {
            location: img.location(),
            expected: expected.to_string(),
            found: img.id().to_string(),
        })
    }
}

/// Loads trusted public keys: each path is a key file or a directory whose `*.pub` files
/// are read in name order. At most [`MAX_TRUSTED_KEYS`]; a malformed key is an error (a
/// node that silently dropped its key would stop checking).
pub fn load_trusted(paths: &[PathBuf]) -> Result<Vec<PublicKey>, TrustError> {
    let mut keys: Vec<PublicKey> = vec![];
    for p in paths {
        let files = if p.is_dir() {
            let rd = std::fs::read_dir(p).map_err(|e| TrustError::File {
                path: p.display().to_string(),
                msg: e.to_string(),
            })?;
            let mut v: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|f| f.extension().is_some_and(|x| x == "pub"))
                .take(MAX_TRUSTED_KEYS + 1)
                .collect();
            v.sort();
            v
        } else {
            vec![p.clone()]
        };
        for f in files {
            let k = PublicKey::load(&f)?;
            if !keys.iter().any(|o| o.id == k.id) {
                keys.push(k);
            }
            if keys.len() > MAX_TRUSTED_KEYS {
                return Err(TrustError::File {
                    path: p.display().to_string(),
                    msg: format!("more than {MAX_TRUSTED_KEYS} trusted keys"),
                });
            }
        }
    }
    Ok(keys)
}

/// Signs the image directory `dir` with `key`: adds (or replaces) this key's line in
/// `dir/signature`, written to a temporary file and renamed. Returns the image id and how
/// many stale lines (another image id) were dropped.
pub fn sign_dir(dir: &Path, key: &SecretKey) -> crate::Result<(String, usize)> {
    let img = Image::open(dir)?;
    let id = img.id().to_string();
    let path = dir.join(SIGNATURE_FILE);
    // The same bounded reader nodes use; `parse` reports size and encoding problems as
    // a signature file's (not a key file's).
    let mut sigs = match img
        .source
        .read_optional(SIGNATURE_FILE, MAX_SIGNATURE_BYTES)
    {
        Ok(Some(bytes)) => {
            Signatures::parse(&bytes, &path.display().to_string()).map_err(crate::Error::Trust)?
        }
        Ok(None) => Signatures::default(),
        Err(e) => return Err(crate::Error::Source(e)),
    };
    let dropped = sigs.add(key.sign(&id));
    let tmp = dir.join(format!(".{SIGNATURE_FILE}.tmp"));
    std::fs::write(&tmp, sigs.to_text())
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| crate::Error::io("writing", &path, e))?;
    Ok((id, dropped))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const OTHER: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed(&[n; 32])
    }

    fn file(lines: &[SignatureLine]) -> Vec<u8> {
        Signatures {
            lines: lines.to_vec(),
        }
        .to_text()
        .into_bytes()
    }

    #[test]
    fn roundtrip_and_the_vouching_key_is_named() {
        let k = key(1);
        let trusted = vec![k.public("site.pub")];
        let f = file(&[k.sign(ID)]);
        let got = check_signatures(&trusted, "img", ID, Ok(&f)).unwrap();
        assert_eq!(got.id, k.id);
        // Key files survive their text form.
        let p = PublicKey::from_text(&trusted[0].to_text(), "x").unwrap();
        assert_eq!(p.key, trusted[0].key);
        let s = SecretKey::from_text(&k.to_text(), "x").unwrap();
        assert_eq!(s.id, k.id);
        assert_eq!(Signatures::parse(&f, "x").unwrap().lines, vec![k.sign(ID)]);
    }

    #[test]
    fn unsigned_is_refused_naming_image_and_keys() {
        let trusted = vec![key(1).public("/etc/netboot/trusted/site.pub")];
        let e = check_signatures(&trusted, "http://s/compute", ID, Err("HTTP 404".into()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unsigned") && e.contains("http://s/compute"),
            "{e}"
        );
        assert!(e.contains(ID) && e.contains(&trusted[0].id), "{e}");
        assert!(e.contains("/etc/netboot/trusted/site.pub"), "{e}");
    }

    #[test]
    fn a_signature_by_another_key_is_refused_and_named() {
        let (good, evil) = (key(1), key(2));
        let trusted = vec![good.public("site.pub")];
        let f = file(&[evil.sign(ID)]);
        let e = check_signatures(&trusted, "img", ID, Ok(&f))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("signed by unknown key {}", evil.id)),
            "{e}"
        );
        assert!(e.contains(&good.id), "{e}");
    }

    #[test]
    fn tampered_manifest_is_refused_even_with_the_trusted_line_kept() {
        // The manifest changed (new id); the old trusted line is still there and an
        // attacker's key re-signed the new id.
        let (good, evil) = (key(1), key(2));
        let trusted = vec![good.public("site.pub")];
        let f = file(&[good.sign(OTHER), evil.sign(ID)]);
        let e = check_signatures(&trusted, "img", ID, Ok(&f))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("signed image {OTHER}, not this one")),
            "{e}"
        );
        assert!(e.contains(&format!("unknown key {}", evil.id)), "{e}");
        // The old line relabelled with the new id: the signature itself fails.
        let mut forged = good.sign(OTHER);
        forged.image_id = ID.into();
        let f = file(&[forged]);
        let e = check_signatures(&trusted, "img", ID, Ok(&f))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("bad signature by key {}", good.id)),
            "{e}"
        );
    }

    #[test]
    fn one_good_signature_among_several_is_enough() {
        let (a, b) = (key(1), key(2));
        let trusted = vec![b.public("new.pub")];
        let f = file(&[a.sign(ID), b.sign(ID)]);
        assert_eq!(
            check_signatures(&trusted, "img", ID, Ok(&f)).unwrap().id,
            b.id
        );
    }

    #[test]
    fn malformed_signature_files_name_file_and_line() {
        let k = key(1);
        let trusted = vec![k.public("site.pub")];
        let good = String::from_utf8(file(&[k.sign(ID)])).unwrap();
        let sig_line = good.lines().nth(1).unwrap().to_string();
        let cases: Vec<(Vec<u8>, &str, usize)> = vec![
            (b"".to_vec(), "empty", 1),
            (b"hello\n".to_vec(), "expected the header", 1),
            (b"netboot-image-signature v9\n".to_vec(), "not supported", 1),
            (
                format!("{SIGNATURE_HEADER}\n# c\ned25519 zz\n").into_bytes(),
                "expected `ed25519",
                3,
            ),
            (
                format!(
                    "{SIGNATURE_HEADER}\n{}\n",
                    sig_line.replacen("ed25519", "rsa", 1)
                )
                .into_bytes(),
                "unknown algorithm",
                2,
            ),
            (
                format!("{SIGNATURE_HEADER}\n{}00\n", sig_line).into_bytes(),
                "128 hex digits",
                2,
            ),
            (vec![0xff, 0xfe], "UTF-8", 1),
            (
                vec![b'#'; MAX_SIGNATURE_BYTES as usize + 1],
                "larger than",
                1,
            ),
        ];
        for (bytes, want, line) in cases {
            let e = check_signatures(&trusted, "img", ID, Ok(&bytes)).unwrap_err();
            let s = e.to_string();
            assert!(
                matches!(&e, TrustError::Malformed { line: l, .. } if *l == line),
                "{s}"
            );
            assert!(s.contains(want) && s.starts_with("img/signature:"), "{s}");
        }
        let many = format!(
            "{SIGNATURE_HEADER}\n{}",
            format!("{sig_line}\n").repeat(MAX_SIGNERS + 1)
        );
        let e = Signatures::parse(many.as_bytes(), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than 64 signatures"), "{e}");
        let e = check_signatures(
            &trusted,
            "img",
            ID,
            Ok(format!("{SIGNATURE_HEADER}\n").as_bytes()),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("unsigned") && e.contains("holds no signature"),
            "{e}"
        );
    }

    #[test]
    fn malformed_key_files_are_refused() {
        let k = key(1);
        let public = k.public("").to_text();
        let e = PublicKey::from_text(&k.to_text(), "site")
            .unwrap_err()
            .to_string();
        assert!(e.contains("SECRET key"), "{e}");
        let e = PublicKey::from_text(&public.replace(&k.id, "0000000000000000"), "site")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("site:1:") && e.contains("damaged or edited"),
            "{e}"
        );
        let e = PublicKey::from_text(&format!("{public}junk\n"), "site")
            .unwrap_err()
            .to_string();
        assert!(e.contains("site:3:"), "{e}");
        let short = public.lines().next().unwrap().to_string() + "\nabcd\n";
        let e = PublicKey::from_text(&short, "site")
            .unwrap_err()
            .to_string();
        assert!(e.contains("site:2:") && e.contains("64 hex digits"), "{e}");
        let e = PublicKey::from_text("", "site").unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let e = PublicKey::from_text(&public.replace(" v1 ", " v2 "), "site")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not supported"), "{e}");
    }

    #[test]
    fn keygen_writes_a_private_key_and_never_overwrites() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("site");
        let k = keygen(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(SecretKey::load(&p).unwrap().id, k.id);
        assert_eq!(PublicKey::load(&public_path(&p)).unwrap().id, k.id);
        let before = std::fs::read(&p).unwrap();
        let e = keygen(&p).unwrap_err().to_string();
        assert!(e.contains("already exists"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), before);
        // A second key differs (the RNG is used).
        assert_ne!(keygen(&d.path().join("other")).unwrap().id, k.id);
    }

    #[test]
    fn load_trusted_reads_a_directory_and_refuses_a_bad_key() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (key(1), key(2));
        std::fs::write(d.path().join("a.pub"), a.public("").to_text()).unwrap();
        std::fs::write(d.path().join("b.pub"), b.public("").to_text()).unwrap();
        std::fs::write(d.path().join("README"), "not a key").unwrap();
        let keys = load_trusted(&[d.path().to_path_buf()]).unwrap();
        assert_eq!(
            keys.iter().map(|k| k.id.clone()).collect::<Vec<_>>(),
            vec![a.id.clone(), b.id.clone()]
        );
        std::fs::write(d.path().join("c.pub"), "garbage").unwrap();
        let e = load_trusted(&[d.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.pub:1:"), "{e}");
    }

    #[test]
    fn adding_a_signature_replaces_the_same_key_and_drops_stale_ones() {
        let (a, b) = (key(1), key(2));
        let mut s = Signatures::default();
        assert_eq!(s.add(a.sign(OTHER)), 0);
        assert_eq!(
            s.add(b.sign(ID)),
            1,
            "a's line for the old image is dropped"
        );
        assert_eq!(s.add(a.sign(ID)), 0);
        assert_eq!(s.add(a.sign(ID)), 0, "a's own line is replaced");
        assert_eq!(s.lines, vec![b.sign(ID), a.sign(ID)]);
    }
}
