//! What the pipeline knows about a file on disk: its identifying metadata, its kind, and its
//! SHA-256. Owns the blocking file-system helpers shared by the actors; it does not decide what
//! to do with a file (the actors do).

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Size of the reads used for hashing, copying and uploading.
pub const CHUNK_SIZE: usize = 256 * 1024;

/// A SHA-256 digest of a file's content.
pub type ContentHash = [u8; 32];

/// The metadata that changes whenever a file's content may have changed. Two equal values mean
/// "same file, untouched", which is what the stability check and the ledger comparison rely on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FileMeta {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
}

impl FileMeta {
    pub fn from_metadata(m: &Metadata) -> Self {
        FileMeta {
            size: m.len(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            inode: m.ino(),
        }
    }
}

/// What a path currently is, without following symbolic links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileKind {
    Regular(FileMeta),
    Directory,
    Symlink,
    /// FIFOs, sockets and devices: never opened, because reading a FIFO blocks forever.
    Special(&'static str),
    /// Exists, but reading it would leave the drop folder (see [`crate::confined`]): the reason.
    Refused(&'static str),
    Missing,
}

impl FileKind {
    /// The kind `metadata` (from `lstat` or `fstat`, never following a link) describes.
    pub fn of(m: &Metadata) -> FileKind {
        use std::os::unix::fs::FileTypeExt;
        let t = m.file_type();
        if t.is_file() {
            FileKind::Regular(FileMeta::from_metadata(m))
        } else if t.is_dir() {
            FileKind::Directory
        } else if t.is_symlink() {
            FileKind::Symlink
        } else if t.is_fifo() {
            FileKind::Special("FIFO")
        } else if t.is_socket() {
            FileKind::Special("socket")
        } else if t.is_block_device() || t.is_char_device() {
            FileKind::Special("device file")
        } else {
            FileKind::Special("special file")
        }
    }
}

/// "The path is not there any more", including a parent that became a file.
pub fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Opens a regular file of dropslot's own (a snapshot copy, a local remote's file) for reading
/// without following a symbolic link in its last component and without blocking on a FIFO;
/// anything but a regular file is refused. Files in the drop folder go through
/// [`crate::confined::DropRoot`] instead, which follows no link in any component.
pub fn open_regular(path: &Path) -> io::Result<(File, FileMeta)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    regular_only(file)
}

/// `file` with its metadata, if it is a regular file: what was opened may have been replaced by
/// a FIFO, a device or a directory since it was looked at.
pub fn regular_only(file: File) -> io::Result<(File, FileMeta)> {
    let m = file.metadata()?;
    if !m.file_type().is_file() {
        return Err(not_regular());
    }
    Ok((file, FileMeta::from_metadata(&m)))
}

/// The error for a path that is no longer a regular file.
pub fn not_regular() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "not a regular file any more")
}

/// Whether some process has `file` open for writing: `Some(true)` while a writer is (probably)
/// in the middle of a version, `None` where the kernel will not say.
///
/// Metadata alone cannot tell a finished version from a writer pausing between two `write`s
/// (after a truncate, say). Linux's lease API can: a read lease is refused with `EAGAIN`
/// exactly when the file is open for writing anywhere. The lease is dropped at once; it needs
/// ownership of the file or `CAP_LEASE` (otherwise `EACCES`, and the answer is `None`).
pub fn has_writers(file: &File) -> Option<bool> {
    let answer = has_writers_keeping_lease(file);
    if answer == Some(false) {
        use std::os::fd::AsRawFd;
        // SAFETY: fcntl on a file descriptor we own; F_SETLEASE takes an int argument.
        unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
    }
    answer
}

/// [`has_writers`], keeping the read lease when it answers `Some(false)`: the caller releases it
/// (`F_SETLEASE`, `F_UNLCK`, or closing the descriptor). A writer's open meanwhile waits for that
/// (at most `/proc/sys/fs/lease-break-time`), so the caller must be quick.
pub fn has_writers_keeping_lease(file: &File) -> Option<bool> {
    use std::os::fd::AsRawFd;
    // A writer opening the file while we hold the lease makes the kernel send SIGIO, whose
    // default action ends the process; the lease is released right away, so ignore it.
    static IGNORE_SIGIO: std::sync::Once = std::sync::Once::new();
    // SAFETY: setting a signal to SIG_IGN has no memory-safety preconditions.
    IGNORE_SIGIO.call_once(|| unsafe {
        libc::signal(libc::SIGIO, libc::SIG_IGN);
    });
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a file descriptor we own; F_SETLEASE takes an int argument.
    if unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) } == 0 {
        return Some(false);
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) => Some(true),
        _ => None,
    }
}

/// Reads `reader` to the end, hashing every chunk and handing it to `sink`. `size_hint` (the
/// expected size) keeps the buffer small for small files: zeroing a full chunk per small file
/// showed up in profiles of bursts.
pub fn hash_stream(
    reader: impl Read,
    size_hint: u64,
    sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<(ContentHash, u64)> {
    hash_stream_with_mark(reader, size_hint, None, sink).map(|(hash, total, _)| (hash, total))
}

/// [`hash_stream`] that also returns the hash of the first `mark` bytes, if the stream is that
/// long: whether a log still begins with the version already published, in the same read.
pub fn hash_stream_with_mark(
    mut reader: impl Read,
    size_hint: u64,
    mark: Option<u64>,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<(ContentHash, u64, Option<ContentHash>)> {
    let mut hasher = Sha256::new();
    let mut marked = None;
    // One byte more than expected, so the end of a file of the expected size takes one read;
    // never tiny, in case the file grew.
    let mut buf = vec![0u8; size_hint.saturating_add(1).clamp(8192, CHUNK_SIZE as u64) as usize];
    let mut total = 0u64;
    loop {
        if mark == Some(total) {
            marked = Some(hasher.clone().finalize().into());
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..n];
        match mark {
            Some(at) if at > total && at < total + n as u64 => {
                let (head, tail) = chunk.split_at((at - total) as usize);
                hasher.update(head);
                marked = Some(hasher.clone().finalize().into());
                hasher.update(tail);
            }
            _ => hasher.update(chunk),
        }
        sink(chunk)?;
        total += n as u64;
    }
    Ok((hasher.finalize().into(), total, marked))
}

/// Whether a writer is known to hold `file` open. Where the kernel will not say (no lease
/// rights: not the owner and no `CAP_LEASE`), metadata alone decides, and that is said once.
pub fn writers_known_open(file: &File) -> bool {
    static UNKNOWN_REPORTED: std::sync::Once = std::sync::Once::new();
    match has_writers(file) {
        Some(open) => open,
        None => {
            UNKNOWN_REPORTED.call_once(|| {
                tracing::warn!("cannot tell whether files are open for writing (file leases need the files' owner or CAP_LEASE): a file rewritten in place may be published mid-write; run dropslot as the drop folder's owner or grant CAP_LEASE");
            });
            false
        }
    }
}

/// Hashes a whole file of dropslot's own (opened as [`open_regular`] does) and returns the metadata it had.
pub fn hash_file(path: &Path) -> io::Result<(ContentHash, FileMeta)> {
    let (file, meta) = open_regular(path)?;
    let (hash, _) = hash_stream(file, meta.size, |_| Ok(()))?;
    Ok((hash, meta))
}

/// Lower-case hex, as stored in the ledger and printed in logs.
pub fn to_hex(hash: &ContentHash) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in hash {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_hashes_exactly_the_prefix() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for mark in [0u64, 1, 8192, 8193, 99_999, 100_000] {
            let (whole, n, prefix) =
                hash_stream_with_mark(&data[..], 10, Some(mark), |_| Ok(())).unwrap();
            assert_eq!(n, 100_000);
            assert_eq!(whole, hash_stream(&data[..], 0, |_| Ok(())).unwrap().0);
            let expected = hash_stream(&data[..mark as usize], 0, |_| Ok(()))
                .unwrap()
                .0;
            assert_eq!(prefix, Some(expected), "mark {mark}");
        }
        let (_, _, beyond) =
            hash_stream_with_mark(&data[..], 0, Some(200_000), |_| Ok(())).unwrap();
        assert_eq!(beyond, None);
    }

    #[test]
    fn hash_matches_known_vector() {
        let (hash, n) = hash_stream(&b"abc"[..], 0, |_| Ok(())).unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            to_hex(&hash),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn kinds_are_read_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        std::os::unix::fs::symlink(&file, dir.path().join("l")).unwrap();
        let kind = |p: &Path| FileKind::of(&std::fs::symlink_metadata(p).unwrap());
        assert!(matches!(kind(&file), FileKind::Regular(m) if m.size == 1));
        assert_eq!(kind(&dir.path().join("l")), FileKind::Symlink);
        assert_eq!(kind(dir.path()), FileKind::Directory);
        assert!(open_regular(&dir.path().join("l")).is_err());
    }

    #[test]
    fn a_file_open_for_writing_has_writers_and_a_closed_one_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let writer = File::create(&path).unwrap();
        let (reader, _) = open_regular(&path).unwrap();
        assert_eq!(has_writers(&reader), Some(true));
        drop(writer);
        assert_eq!(has_writers(&reader), Some(false));
    }
}
