//! A computed body whose first bytes are made before its status is chosen.
//!
//! A body the engine streams after the head can only fail by cutting the
//! connection, and a client then sees `200` and a short body. Most failures
//! come at once (a daemon that closes the stream because the path's files
//! are gone, a corrupt `.bz2` log, a NAR whose files changed since they
//! were planned): reading the first chunk before answering turns those into
//! a status that says so.

use std::io::{self, Read};

/// How much is read ahead: what the engine reads a chunk at a time anyway.
const FIRST: usize = 64 * 1024;

/// `reader` with its first chunk read already.
pub struct Primed<R> {
    first: Vec<u8>,
    at: usize,
    reader: R,
}

impl<R: Read> Primed<R> {
    /// Reads the first chunk of `reader` (up to 64 KiB, or its end): the
    /// error it fails with, if it does.
    pub fn new(reader: R) -> io::Result<Primed<R>> {
        Primed::read_ahead(reader, true)
    }

    /// Reads only until `reader` gives its first bytes (or ends): for bytes
    /// that arrive over a network, where a whole chunk may take long to come
    /// and the worker would wait for all of it.
    pub fn first(reader: R) -> io::Result<Primed<R>> {
        Primed::read_ahead(reader, false)
    }

    /// `fill`: read until the chunk is full, else until one read gave bytes.
    fn read_ahead(mut reader: R, fill: bool) -> io::Result<Primed<R>> {
        let mut first = vec![0; FIRST];
        let mut n = 0;
        while n < FIRST {
            match reader.read(&mut first[n..]) {
                Ok(0) => break,
                Ok(k) if fill => n += k,
                Ok(k) => {
                    n = k;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        first.truncate(n);
        Ok(Primed {
            first,
            at: 0,
            reader,
        })
    }
}

impl<R: Read> Read for Primed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at < self.first.len() {
            let k = buf.len().min(self.first.len() - self.at);
            buf[..k].copy_from_slice(&self.first[self.at..self.at + k]);
            self.at += k;
            if self.at == self.first.len() {
                self.first = Vec::new();
                self.at = 0;
            }
            return Ok(k);
        }
        self.reader.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("gone"))
        }
    }

    #[test]
    fn the_bytes_are_the_readers_and_a_first_failure_is_an_error() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut p = Primed::new(&data[..]).unwrap();
        let mut out = Vec::new();
        p.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        let mut p = Primed::new(&b"abc"[..]).unwrap();
        let mut out = Vec::new();
        p.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc");
        assert!(Primed::new(Failing).is_err());
        assert!(Primed::first(Failing).is_err());
        // One read's bytes first, then the rest from the reader.
        let mut p = Primed::first(io::Read::chain(&b"ab"[..], &b"cd"[..])).unwrap();
        assert_eq!(p.first, b"ab");
        let mut out = Vec::new();
        p.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abcd");
    }
}
