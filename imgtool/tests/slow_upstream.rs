//! An upstream that sends a byte now and then (a broken link, a compromised relay) must
//! not hold a node forever: every single read is within the socket's stall timeout, so
//! only a pace per frame catches it (issue 10: PID 1 must never hang on network input).

mod common;
use common::*;
use imgtool::manifest::Image;
use imgtool::source::{ImageSource, LocalDir, SourceError, Stream};
use imgtool::verify::{read_frame, FrameStream};
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

/// A directory whose payload streams arrive 64 bytes every 5 ms (~12 KiB/s).
struct Dribble(LocalDir);

struct Slow(Box<dyn Read + Send>);

impl Read for Slow {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::thread::sleep(Duration::from_millis(5));
        let n = buf.len().min(64);
        self.0.read(&mut buf[..n])
    }
}

impl ImageSource for Dribble {
    fn location(&self) -> String {
        format!("dribble:{}", self.0.location())
    }
    fn read_file(&self, name: &str) -> Result<Vec<u8>, SourceError> {
        self.0.read_file(name)
    }
    fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, SourceError> {
        self.0.read_range(name, offset, len)
    }
    fn open_range(&self, name: &str, offset: u64, len: u64) -> Result<Stream, SourceError> {
        let mut s = self.0.open_range(name, offset, len)?;
        s.reader = Box::new(Slow(s.reader));
        Ok(s)
    }
    fn len(&self, name: &str) -> Option<u64> {
        self.0.len(name)
    }
    fn is_local(&self) -> bool {
        false
    }
}

#[test]
fn a_dribbling_upstream_counts_as_broken_instead_of_holding_the_node() {
    let c = captured_files();
    let fast = Image::open(&c.image).unwrap();
    let slow = Image::load(Arc::new(Dribble(LocalDir(c.image.clone())))).unwrap();
    // The smallest frame of more than 8 KiB, so the test is quick at a strict pace
    // (1 MiB/s + 50 ms: ~60 ms allowed; the dribble needs > 600 ms).
    let (name, i) = fast
        .manifest
        .regions
        .iter()
        .flat_map(|r| r.chunks.iter().enumerate().map(move |(i, c)| (r, i, c)))
        .filter(|(_, _, c)| c.compressed_length > 8192)
        .min_by_key(|(_, _, c)| c.compressed_length)
        .map(|(r, i, _)| (r.name.clone(), i))
        .unwrap();
    let region = fast.manifest.region(&name).unwrap();
    let pace = (1 << 20, Duration::from_millis(50));

    let e = FrameStream::new(&slow, slow.manifest.region(&name).unwrap())
        .with_pace(pace.0, pace.1)
        .frame(i)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("slower than 1024 KiB/s") && e.contains("8 attempts"),
        "{e}"
    );
    assert!(e.contains(&format!("partition {name}, chunk {i}")), "{e}");

    // The same pace is no obstacle at the speed of a real link.
    let got = FrameStream::new(&fast, region)
        .with_pace(pace.0, pace.1)
        .frame(i)
        .unwrap();
    assert_eq!(got, read_frame(&fast, region, i).unwrap());
}
