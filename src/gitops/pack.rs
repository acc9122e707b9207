//! A batch's new objects as one git pack file, instead of one deflated file per object: the
//! pack stream (format version 2) with each new version of a tree stored as a delta against
//! the previous version of the same directory, which differs from it by the few entries the
//! commit changed. Pure: the bytes are built here, libgit2 indexes and stores them.
//!
//! Objects go in uncompressed zlib blocks ("stored"): most of a batch's bytes are trees of
//! object ids, which do not compress, and the deltas are a few dozen bytes; deflating would
//! cost more than the bytes it saves, and the push compresses what it sends anyway.

use sha1::{Digest, Sha1};

/// Longest chain of deltas before a tree is stored whole again (git's default `pack.depth`):
/// reading the last version applies at most this many deltas.
pub const MAX_DEPTH: usize = 50;

/// The kind of a git object, as a pack entry names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Commit = 1,
    Tree = 2,
    Blob = 3,
}

const OFS_DELTA: u8 = 6;

/// A pack being written: entries are added in order; `finish` adds the count and checksum.
#[derive(Debug)]
pub struct PackWriter {
    bytes: Vec<u8>,
    count: u32,
}

/// Where an object went in the pack, for a later version to be a delta against it.
#[derive(Clone, Copy, Debug)]
pub struct Placed {
    offset: usize,
    /// Deltas between this entry and a whole object.
    depth: usize,
}

impl Default for PackWriter {
    fn default() -> Self {
        let mut bytes = Vec::with_capacity(1 << 16);
        bytes.extend_from_slice(b"PACK");
        bytes.extend_from_slice(&2u32.to_be_bytes());
        // The count, filled in by `finish`.
        bytes.extend_from_slice(&0u32.to_be_bytes());
        Self { bytes, count: 0 }
    }
}

impl PackWriter {
    /// Objects added so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds `data`, an object of `kind`, whole.
    pub fn add(&mut self, kind: Kind, data: &[u8]) -> Placed {
        let offset = self.bytes.len();
        entry_header(&mut self.bytes, kind as u8, data.len());
        stored_zlib(&mut self.bytes, data);
        self.count += 1;
        Placed { offset, depth: 0 }
    }

    /// Adds `data`, an object of `kind`, as a delta against `base` (bytes `base_data`, added
    /// earlier), or whole when the chain is long enough or the delta would not be smaller.
    pub fn add_version(&mut self, kind: Kind, data: &[u8], base: Placed, base_data: &[u8]) -> Placed {
        if base.depth >= MAX_DEPTH {
            return self.add(kind, data);
        }
        let delta = delta(base_data, data);
        if delta.len() >= data.len() {
            return self.add(kind, data);
        }
        let offset = self.bytes.len();
        entry_header(&mut self.bytes, OFS_DELTA, delta.len());
        ofs_header(&mut self.bytes, offset - base.offset);
        stored_zlib(&mut self.bytes, &delta);
        self.count += 1;
        Placed {
            offset,
            depth: base.depth + 1,
        }
    }

    /// The finished pack: the object count in its header and the SHA-1 of it all at its end.
    pub fn finish(mut self) -> Vec<u8> {
        self.bytes[8..12].copy_from_slice(&self.count.to_be_bytes());
        let sum = Sha1::digest(&self.bytes);
        self.bytes.extend_from_slice(&sum);
        self.bytes
    }
}

/// An entry's header: its type, and the size of its (inflated) data in a little-endian
/// variable-length number whose first byte holds four bits.
fn entry_header(out: &mut Vec<u8>, kind: u8, size: usize) {
    let mut size = size;
    let mut byte = (kind << 4) | (size & 0x0f) as u8;
    size >>= 4;
    while size > 0 {
        out.push(byte | 0x80);
        byte = (size & 0x7f) as u8;
        size >>= 7;
    }
    out.push(byte);
}

/// How far back the base of an offset delta is, in git's encoding (big-endian groups of 7
/// bits, each continuation adding one).
fn ofs_header(out: &mut Vec<u8>, distance: usize) {
    let mut distance = distance;
    let mut groups = vec![(distance & 0x7f) as u8];
    distance >>= 7;
    while distance > 0 {
        distance -= 1;
        groups.push(0x80 | (distance & 0x7f) as u8);
        distance >>= 7;
    }
    out.extend(groups.iter().rev());
}

/// `data` as a zlib stream of stored (uncompressed) blocks.
fn stored_zlib(out: &mut Vec<u8>, data: &[u8]) {
    // CMF 0x78 (deflate, 32K window), FLG 0x01 (no dictionary, fastest; 0x7801 % 31 == 0).
    out.extend_from_slice(&[0x78, 0x01]);
    let mut chunks = data.chunks(0xffff).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let len = chunk.len() as u16;
        out.push(u8::from(last));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
}

fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    let (mut a, mut b) = (1u32, 0u32);
    // 5552 bytes is the most that can be summed before b can overflow.
    for chunk in data.chunks(5552) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

/// A git delta that makes `target` from `base`: the common beginning and end are copied
/// from the base, the middle inserted. A new version of a tree differs from the previous one
/// in a few neighbouring entries, so this is as small as a delta of it gets.
pub fn delta(base: &[u8], target: &[u8]) -> Vec<u8> {
    let prefix = base.iter().zip(target).take_while(|(a, b)| a == b).count();
    let room = base.len().min(target.len()) - prefix;
    let suffix = base
        .iter()
        .rev()
        .zip(target.iter().rev())
        .take(room)
        .take_while(|(a, b)| a == b)
        .count();
    let mut out = Vec::with_capacity(32 + target.len() - prefix - suffix);
    varint(&mut out, base.len());
    varint(&mut out, target.len());
    copy_ops(&mut out, 0, prefix);
    for chunk in target[prefix..target.len() - suffix].chunks(0x7f) {
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
    copy_ops(&mut out, base.len() - suffix, suffix);
    out
}

fn varint(out: &mut Vec<u8>, mut value: usize) {
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Copy instructions for `size` bytes of the base from `offset` (at most 64 KiB each, the
/// size every reader takes).
fn copy_ops(out: &mut Vec<u8>, offset: usize, size: usize) {
    let (mut offset, mut left) = (offset, size);
    while left > 0 {
        let take = left.min(0x10000);
        let mut op = 0x80u8;
        let mut args = Vec::with_capacity(7);
        for i in 0..4 {
            let byte = ((offset >> (8 * i)) & 0xff) as u8;
            if byte != 0 {
                op |= 1 << i;
                args.push(byte);
            }
        }
        // A size of 0x10000 is written as no size bytes at all.
        if take != 0x10000 {
            for i in 0..3 {
                let byte = ((take >> (8 * i)) & 0xff) as u8;
                if byte != 0 {
                    op |= 0x10 << i;
                    args.push(byte);
                }
            }
        }
        out.push(op);
        out.extend_from_slice(&args);
        offset += take;
        left -= take;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies a delta the way git reads one (the reference for `delta`).
    fn apply(base: &[u8], delta: &[u8]) -> Vec<u8> {
        let mut at = 0;
        let read_varint = |at: &mut usize| {
            let (mut value, mut shift) = (0usize, 0);
            loop {
                let byte = delta[*at];
                *at += 1;
                value |= usize::from(byte & 0x7f) << shift;
                shift += 7;
                if byte & 0x80 == 0 {
                    return value;
                }
            }
        };
        assert_eq!(read_varint(&mut at), base.len());
        let size = read_varint(&mut at);
        let mut out = Vec::new();
        while at < delta.len() {
            let op = delta[at];
            at += 1;
            if op & 0x80 != 0 {
                let (mut offset, mut len) = (0usize, 0usize);
                for i in 0..4 {
                    if op & (1 << i) != 0 {
                        offset |= usize::from(delta[at]) << (8 * i);
                        at += 1;
                    }
                }
                for i in 0..3 {
                    if op & (0x10 << i) != 0 {
                        len |= usize::from(delta[at]) << (8 * i);
                        at += 1;
                    }
                }
                if len == 0 {
                    len = 0x10000;
                }
                out.extend_from_slice(&base[offset..offset + len]);
            } else {
                assert!(op > 0, "0 is reserved");
                out.extend_from_slice(&delta[at..at + usize::from(op)]);
                at += usize::from(op);
            }
        }
        assert_eq!(out.len(), size);
        out
    }

    #[test]
    fn deltas_rebuild_the_target() {
        let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut changed = big.clone();
        changed[100_000..100_020].copy_from_slice(&[9; 20]);
        let mut longer = big.clone();
        longer.splice(70_000..70_000, [1u8; 300]);
        let cases: Vec<(&[u8], &[u8])> = vec![
            (b"", b""),
            (b"", b"new"),
            (b"old", b""),
            (b"same", b"same"),
            (b"abcdef", b"abXYef"),
            (b"aaaa", b"aaaaaa"),
            (b"aaaaaa", b"aaaa"),
            (&big, &changed),
            (&big, &longer),
            (&longer, &big),
        ];
        for (base, target) in cases {
            let made = delta(base, target);
            assert_eq!(
                apply(base, &made),
                target,
                "{} -> {} bytes",
                base.len(),
                target.len()
            );
        }
        assert!(
            delta(&big, &changed).len() < 64,
            "a small change makes a small delta"
        );
    }

    #[test]
    fn adler32_matches_known_values() {
        assert_eq!(adler32(b""), 1);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
        let long = vec![0xffu8; 100_000];
        // Computed without the chunked modulo, in u64.
        let (mut a, mut b) = (1u64, 0u64);
        for &x in &long {
            a = (a + u64::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!(u64::from(adler32(&long)), (b << 16) | a);
    }

    #[test]
    fn offsets_use_gits_encoding() {
        let encode = |d: usize| {
            let mut out = Vec::new();
            ofs_header(&mut out, d);
            out
        };
        // Decoded as git's get_delta_base does.
        let decode = |bytes: &[u8]| {
            let mut value = usize::from(bytes[0] & 0x7f);
            for &b in &bytes[1..] {
                value = ((value + 1) << 7) | usize::from(b & 0x7f);
            }
            value
        };
        for d in [1, 127, 128, 129, 16_383, 16_384, 16_511, 1 << 20, 123_456_789] {
            let bytes = encode(d);
            assert_eq!(decode(&bytes), d);
            assert!(bytes[..bytes.len() - 1].iter().all(|b| b & 0x80 != 0));
            assert_eq!(bytes[bytes.len() - 1] & 0x80, 0);
        }
    }
}
