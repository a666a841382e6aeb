//! A newc ("070701") cpio writer for initramfs images: directories, files, symlinks and
//! device nodes, written in the order added with inode numbers counted from 1 and mtime 0,
//! so the same inputs always give the same bytes. The kernel unpacks it as the initramfs.

use std::io::{self, Write};

/// An archive being built in memory.
#[derive(Debug, Default)]
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
    names: std::collections::BTreeSet<String>,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl Cpio {
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> io::Result<()> {
        let name = name.trim_start_matches('/');
        if name.is_empty() || name.contains("..") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad archive path `{name}`"),
            ));
        }
        if !self.names.insert(name.to_string()) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("`{name}` added twice"),
            ));
        }
        self.ino += 1;
        self.header(name, self.ino, mode, rdev, data.len())?;
        self.buf.extend_from_slice(data);
        self.pad();
        Ok(())
    }

    fn header(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        rdev: (u32, u32),
        size: usize,
    ) -> io::Result<()> {
        let size = u32::try_from(size).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{name}` is larger than 4 GiB"),
            )
        })?;
        let fields = [
            ino,
            mode,
            0,
            0,
            1,
            0,
            size,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        write!(self.buf, "070701")?;
        for f in fields {
            write!(self.buf, "{f:08X}")?;
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        Ok(())
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    pub fn dir(&mut self, name: &str) -> io::Result<()> {
        self.entry(name, S_IFDIR | 0o755, (0, 0), &[])
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(name, S_IFREG | (perm & 0o7777), (0, 0), data)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.entry(name, S_IFLNK | 0o777, (0, 0), target.as_bytes())
    }

    pub fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(name, S_IFCHR | (perm & 0o7777), (major, minor), &[])
    }

    /// Finishes the archive with the trailer.
    pub fn finish(mut self) -> Vec<u8> {
        let _ = self.header("TRAILER!!!", 0, 0, (0, 0), 0);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_tool_reads_what_we_write() {
        let mut c = Cpio::new();
        c.dir("bin").unwrap();
        c.file("bin/hello", 0o755, b"#!/bin/sh\necho hi\n").unwrap();
        c.symlink("bin/sh", "busybox").unwrap();
        c.dir("dev").unwrap();
        c.char_device("dev/console", 0o600, 5, 1).unwrap();
        assert!(c.file("bin/hello", 0o644, b"again").is_err());
        let bytes = c.finish();
        assert_eq!(bytes.len() % 4, 0);
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .current_dir(dir.path())
            .spawn()
            .expect("cpio (Debian package cpio) is needed for this test");
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        let list = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success());
        for want in [
            "bin/hello",
            "bin/sh -> busybox",
            "dev/console",
            "crw-------",
        ] {
            assert!(list.contains(want), "{want} missing from:\n{list}");
        }
        // Deterministic.
        let mut again = Cpio::new();
        again.dir("bin").unwrap();
        again
            .file("bin/hello", 0o755, b"#!/bin/sh\necho hi\n")
            .unwrap();
        again.symlink("bin/sh", "busybox").unwrap();
        again.dir("dev").unwrap();
        again.char_device("dev/console", 0o600, 5, 1).unwrap();
        assert_eq!(again.finish(), bytes);
    }
}
