//! The member and cluster ids in an etcd data dir, read from its write-ahead
//! log without starting etcd.
//!
//! etcd 3.4 (`wal/wal.go`, `wal/encoder.go`, `wal/decoder.go`) writes
//! `<data-dir>/member/wal/<seq>-<index>.wal` files, each opening with a
//! `crcType` record (the running CRC carried over from the previous file)
//! and a `metadataType` record whose data is
//! `etcdserverpb.Metadata{NodeID = 1, ClusterID = 2}` (set once, when the
//! member's data dir is created, and repeated at the head of every later
//! file). Each record is a frame: an 8-byte little-endian length word (the
//! low 56 bits the record's length; when the top bit is set, the low 3 bits
//! of the top byte the padding after it), then the `walpb.Record`
//! protobuf (`type = 1`, `crc = 2`, `data = 3`). A record's CRC is
//! CRC-32C (Castagnoli) of its data, chained from the previous record's.
//! See <https://github.com/etcd-io/etcd/tree/v3.4.23/wal>.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use deckhand_plan::identity::MemberIdentity;

/// `walpb` record types (`wal/wal.go`).
const METADATA_TYPE: u64 = 1;
const CRC_TYPE: u64 = 4;
/// How much of a WAL file is read: the two head records are a few dozen
/// bytes; the file itself is preallocated to 64 MiB of zeros.
const HEAD_BYTES: u64 = 64 * 1024;
/// etcd refuses records larger than this (`maxWALEntrySizeLimit`).
const MAX_RECORD: u64 = 10 * 1024 * 1024;

/// The WAL directory of the etcd data dir `data_dir`.
pub fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("wal")
}

/// The identity recorded in the data dir `data_dir`'s WAL: `Ok(None)`
/// when there is no WAL yet (no data dir, or etcd never created one in it).
///
/// # Errors
/// The WAL directory cannot be listed, or its newest file cannot be read or
/// does not open with a valid metadata record (the reason says which file
/// and what is wrong). Never panics on any file content.
pub fn read_identity(data_dir: &Path) -> Result<Option<MemberIdentity>> {
    let dir = wal_dir(data_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    // `%016x-%016x.wal`: the names sort by sequence number.
    files.sort();
    let Some(newest) = files.last() else {
        return Ok(None);
    };
    let head = read_head(newest)?;
    parse_head(&head)
        .map(Some)
        .with_context(|| format!("reading the WAL file {}", newest.display()))
}

fn read_head(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut head = Vec::new();
    file.take(HEAD_BYTES)
        .read_to_end(&mut head)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(head)
}

/// The identity in the head of one WAL file (its first bytes).
///
/// # Errors
/// Truncated or zeroed frames, a malformed record, a CRC that does not
/// match, or no metadata record among the first records.
pub fn parse_head(head: &[u8]) -> Result<MemberIdentity> {
    let mut rest = head;
    let mut crc: u32 = 0;
    for _ in 0..4 {
        let record = next_frame(&mut rest)?;
        let (kind, record_crc, data) = decode_record(record)?;
        match kind {
            CRC_TYPE => crc = record_crc,
            METADATA_TYPE => {
                let got = crc32c_update(crc, data);
                ensure!(
                    got == record_crc,
                    "the metadata record's CRC does not match (recorded {record_crc:08x}, computed {got:08x}): the file is corrupt"
                );
                return decode_metadata(data);
            }
            other => bail!(
                "record of type {other} before the metadata record (a WAL file opens with crc and metadata records)"
            ),
        }
    }
    bail!("no metadata record among the first records")
}

/// One frame's record bytes; advances `rest` past the frame and its padding.
fn next_frame<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8]> {
    ensure!(
        rest.len() >= 8,
        "truncated: {} bytes where a frame's length word should be",
        rest.len()
    );
    let (word, after) = rest.split_at(8);
    let word = u64::from_le_bytes(word.try_into().context("length word")?);
    ensure!(
        word != 0,
        "a zero length word where a record should be (an empty or zeroed file)"
    );
    let len = word & !(0xff << 56);
    let pad = if word >> 63 == 1 {
        (word >> 56) & 0x7
    } else {
        0
    };
    ensure!(len < MAX_RECORD, "a record of {len} bytes: not a WAL file");
    let total = usize::try_from(len + pad).context("record length")?;
    ensure!(
        after.len() >= total,
        "truncated: a record of {len} bytes with only {} left",
        after.len()
    );
    let record = &after[..usize::try_from(len).context("record length")?];
    *rest = &after[total..];
    Ok(record)
}

/// `walpb.Record`: (type, crc, data).
fn decode_record(mut buf: &[u8]) -> Result<(u64, u32, &[u8])> {
    let (mut kind, mut crc, mut data) = (0, 0, &[][..]);
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        match (key >> 3, key & 7) {
            (1, 0) => kind = varint(&mut buf)?,
            (2, 0) => {
                crc = u32::try_from(varint(&mut buf)?).context("record CRC over 32 bits")?;
            }
            (3, 2) => data = bytes(&mut buf)?,
            (_, wire) => skip(&mut buf, wire)?,
        }
    }
    Ok((kind, crc, data))
}

/// `etcdserverpb.Metadata`: NodeID = 1, ClusterID = 2.
fn decode_metadata(mut buf: &[u8]) -> Result<MemberIdentity> {
    let (mut member_id, mut cluster_id) = (None, None);
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        match (key >> 3, key & 7) {
            (1, 0) => member_id = Some(varint(&mut buf)?),
            (2, 0) => cluster_id = Some(varint(&mut buf)?),
            (_, wire) => skip(&mut buf, wire)?,
        }
    }
    match (member_id, cluster_id) {
        (Some(member_id), Some(cluster_id)) if member_id != 0 && cluster_id != 0 => {
            Ok(MemberIdentity {
                member_id,
                cluster_id,
            })
        }
        _ => bail!("the metadata record lacks the member id or the cluster id"),
    }
}

fn varint(buf: &mut &[u8]) -> Result<u64> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let (&b, rest) = buf.split_first().context("truncated varint")?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    bail!("varint longer than 10 bytes")
}

fn bytes<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8]> {
    let len = usize::try_from(varint(buf)?).context("field length")?;
    ensure!(buf.len() >= len, "truncated field of {len} bytes");
    let (field, rest) = buf.split_at(len);
    *buf = rest;
    Ok(field)
}

fn skip(buf: &mut &[u8], wire: u64) -> Result<()> {
    match wire {
        0 => varint(buf).map(|_| ()),
        1 | 5 => {
            let n = if wire == 1 { 8 } else { 4 };
            ensure!(buf.len() >= n, "truncated fixed-size field");
            *buf = &buf[n..];
            Ok(())
        }
        2 => bytes(buf).map(|_| ()),
        other => bail!("protobuf wire type {other} is not used by etcd's WAL"),
    }
}

/// Go's `crc32.Update(crc, crc32.MakeTable(crc32.Castagnoli), data)`.
fn crc32c_update(crc: u32, data: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Etcd;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The CRC-32C check value of "123456789".
        assert_eq!(crc32c_update(0, b"123456789"), 0xe306_9283);
    }

    #[tokio::test]
    async fn reads_the_ids_of_a_real_etcd_and_refuses_damaged_files() {
        let etcd = Etcd::start().await;
        let mut client = etcd.client().await;
        let header = client.status().await.unwrap();
        let header = header.header().unwrap();
        let got = read_identity(&etcd.data_dir()).unwrap().unwrap();
        assert_eq!(got.member_id, header.member_id());
        assert_eq!(got.cluster_id, header.cluster_id());
        // A copy, then damaged copies (etcd keeps the original open).
        let dir = tempfile::tempdir().unwrap();
        let wal = std::fs::read_dir(wal_dir(&etcd.data_dir()))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "wal"))
            .unwrap();
        let head = read_head(&wal).unwrap();
        assert_eq!(parse_head(&head).unwrap(), got);
        let copy = |bytes: &[u8]| {
            let d = dir.path().join(format!("d{}", bytes.len()));
            std::fs::create_dir_all(wal_dir(&d)).unwrap();
            std::fs::write(
                wal_dir(&d).join("0000000000000000-0000000000000000.wal"),
                bytes,
            )
            .unwrap();
            d
        };
        assert_eq!(read_identity(&copy(&head)).unwrap(), Some(got));
        // Truncated anywhere in the head records: an error, no panic.
        for cut in [0, 3, 8, 12, 20, 30, 40] {
            let err = read_identity(&copy(&head[..cut])).unwrap_err();
            assert!(
                format!("{err:#}").contains("reading the WAL file"),
                "{err:#}"
            );
        }
        // A flipped bit in the metadata's data (the record's last byte):
        // the CRC refuses it.
        let first = u64::from_le_bytes(head[..8].try_into().unwrap());
        let (len1, pad1) = (
            first & !(0xff << 56),
            if first >> 63 == 1 {
                (first >> 56) & 7
            } else {
                0
            },
        );
        let second_at = 8 + (len1 + pad1) as usize;
        let second = u64::from_le_bytes(head[second_at..second_at + 8].try_into().unwrap());
        let len2 = (second & !(0xff << 56)) as usize;
        let mut bad = head.clone();
        bad[second_at + 8 + len2 - 1] ^= 0x01;
        let err = format!("{:#}", parse_head(&bad).unwrap_err());
        assert!(err.contains("CRC does not match"), "{err}");
        // Zeros (a preallocated file never written) and garbage.
        assert!(parse_head(&[0u8; 4096]).is_err());
        assert!(parse_head(&[0xffu8; 4096]).is_err());
        // No WAL at all: nothing to say.
        assert_eq!(read_identity(&dir.path().join("none")).unwrap(), None);
        std::fs::create_dir_all(wal_dir(&dir.path().join("empty"))).unwrap();
        assert_eq!(read_identity(&dir.path().join("empty")).unwrap(), None);
    }

    #[test]
    fn every_prefix_and_bit_flip_of_a_valid_head_is_an_answer_or_an_error() {
        // A head built as etcd builds one: crc record (crc 0), metadata.
        let meta = [0x08, 0x2a, 0x10, 0x07]; // NodeID 42, ClusterID 7
        let mut rec_crc = vec![0x08, 0x04, 0x10, 0x00];
        let crc = crc32c_update(0, &meta);
        let mut rec_meta = vec![0x08, 0x01, 0x10];
        let mut c = crc;
        while c >= 0x80 {
            rec_meta.push((c as u8 & 0x7f) | 0x80);
            c >>= 7;
        }
        rec_meta.push(c as u8);
        rec_meta.extend([0x1a, 4]);
        rec_meta.extend(meta);
        let mut head = Vec::new();
        for r in [&mut rec_crc, &mut rec_meta] {
            let pad = (8 - r.len() % 8) % 8;
            let mut word = r.len() as u64;
            if pad > 0 {
                word |= (0x80 | pad as u64) << 56;
            }
            head.extend(word.to_le_bytes());
            head.extend(r.iter());
            head.extend(std::iter::repeat_n(0, pad));
        }
        let want = MemberIdentity {
            member_id: 42,
            cluster_id: 7,
        };
        assert_eq!(parse_head(&head).unwrap(), want);
        for cut in 0..head.len() {
            let _ = parse_head(&head[..cut]);
        }
        for i in 0..head.len() {
            for bit in 0..8 {
                let mut b = head.clone();
                b[i] ^= 1 << bit;
                if let Ok(id) = parse_head(&b) {
                    // Only padding bytes may change without notice.
                    assert_eq!(id, want, "byte {i} bit {bit}");
                }
            }
        }
    }
}
