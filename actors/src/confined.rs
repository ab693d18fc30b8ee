//! Confined access to the drop folder: every path the pipeline reads is resolved relative to the
//! drop folder's root without following a symbolic link in any component, so whoever writes to
//! the drop folder cannot make dropslot read a file outside it (a directory swapped for a link to
//! `/etc` after its event is refused, not followed). Owns path resolution and the kinds of refusal;
//! it does not decide what to do with a refused path (the stability checker logs and skips it).
//!
//! Linux's `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` does this in one call, atomically
//! with respect to concurrent renames. Where the kernel lacks it (before 5.6, or a seccomp filter
//! refuses it) the path is walked one component at a time with `O_NOFOLLOW`, each step checked
//! with `fstat` on the descriptor it got. Either way, what callers check after opening is the
//! descriptor, never the path again.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::fileinfo::{
    hash_stream, is_gone, not_regular, regular_only, ContentHash, FileKind, FileMeta,
};

/// The drop folder's root, and how far resolution below it may go.
#[derive(Clone, Debug)]
pub struct DropRoot {
    path: PathBuf,
    /// Refuse files on another mounted file system than the root's (`watch.one_file_system`).
    one_file_system: bool,
}

/// Set once `openat2` turned out to be missing, so the fallback does not retry it per file.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Why a path inside the drop folder is refused although it exists.
pub const THROUGH_LINK: &str =
    "a directory in its path is a symbolic link (links are not followed)";
pub const OTHER_FILE_SYSTEM: &str =
    "it is on another file system than the drop folder (watch.one_file_system = true)";

impl DropRoot {
    pub fn new(path: PathBuf, one_file_system: bool) -> Self {
        DropRoot {
            path,
            one_file_system,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the regular file `rel` for reading: never through a link, never blocking on a FIFO
    /// that replaced the file since it was looked at; anything but a regular file is refused.
    pub fn open_file(&self, rel: &Path) -> io::Result<(File, FileMeta)> {
        let fd = self.resolve(rel, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK)?;
        regular_only(File::from(fd))
    }

    /// Hashes the whole regular file `rel` and returns the metadata it had when opened.
    pub fn hash_file(&self, rel: &Path) -> io::Result<(ContentHash, FileMeta)> {
        let (file, meta) = self.open_file(rel)?;
        let (hash, _) = hash_stream(file, meta.size, |_| Ok(()))?;
        Ok((hash, meta))
    }

    /// What `rel` is, without following links: the last component is reported as a link if it is
    /// one, and a path through a link (or onto another file system, if refused) is `Refused`.
    pub fn probe(&self, rel: &Path) -> io::Result<FileKind> {
        match self.resolve(rel, OFlags::PATH | OFlags::NOFOLLOW) {
            Ok(fd) => Ok(FileKind::of(&File::from(fd).metadata()?)),
            Err(e) if is_gone(&e) => Ok(FileKind::Missing),
            Err(e) => match refusal(&e) {
                Some(why) => Ok(FileKind::Refused(why)),
                None => Err(e),
            },
        }
    }

    /// The metadata `rel` has now, if it is still a regular file reachable without links.
    pub fn regular_meta(&self, rel: &Path) -> io::Result<FileMeta> {
        match self.probe(rel)? {
            FileKind::Regular(meta) => Ok(meta),
            _ => Err(not_regular()),
        }
    }

    /// Lists the directory `rel` (empty: the drop folder itself) through a descriptor reached
    /// without links, so a directory swapped for a link is refused, never listed. Regular files
    /// come with their metadata (`fstatat` on that descriptor, not following links).
    pub fn list_dir(&self, rel: &Path) -> io::Result<Vec<Listed>> {
        use rustix::fs::{AtFlags, FileType};
        let dir_fd = self.resolve(rel, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW)?;
        let mut entries = rustix::fs::Dir::read_from(&dir_fd)?;
        let mut listed = Vec::new();
        while let Some(entry) = entries.read() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let kind = match entry.file_type() {
                FileType::Directory => FileKind::Directory,
                FileType::Symlink => FileKind::Symlink,
                FileType::Fifo => FileKind::Special("FIFO"),
                FileType::Socket => FileKind::Special("socket"),
                FileType::BlockDevice | FileType::CharacterDevice => {
                    FileKind::Special("device file")
                }
                // Regular files need their metadata; so does a file system without d_type.
                _ => match rustix::fs::statat(&dir_fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => kind_of_stat(&st),
                    Err(rustix::io::Errno::NOENT) => continue, // removed meanwhile
                    Err(e) => return Err(e.into()),
                },
            };
            listed.push(Listed {
                name: std::ffi::OsStr::from_bytes(name).to_owned(),
                kind,
            });
        }
        Ok(listed)
    }

    /// Removes the regular file `rel` (into `archive`, keeping its relative path, when given)
    /// only if it is still exactly `expected` (inode, size, mtime, ctime), checked on a
    /// descriptor of the file opened through its directory (reached without links) immediately
    /// before the rename or unlink. The check and the unlink are two system calls: a write that
    /// lands between them shows on the descriptor afterwards (size or mtime), and the file is
    /// then put back (renamed back, or written back from the descriptor) and reported changed.
    /// Across file systems the file is copied to a temporary name in the archive, synced,
    /// renamed into place, and only then unlinked, so a crash at any point leaves the file in the
    /// drop folder, in the archive, or both; never neither. Doing it again after a crash
    /// overwrites the same archive name: one copy, never two.
    pub fn take_away(
        &self,
        rel: &Path,
        expected: &FileMeta,
        archive: Option<&Path>,
    ) -> io::Result<TakeAway> {
        use rustix::fs::AtFlags;
        let (Some(name), parent) = (rel.file_name(), rel.parent().unwrap_or(Path::new(""))) else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no file name"));
        };
        let dir = match self.resolve(
            parent,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
        ) {
            Ok(dir) => dir,
            Err(e) if is_gone(&e) => return Ok(TakeAway::Gone),
            Err(e) => return Err(e),
        };
        let target_dir = match archive {
            Some(archive) => {
                let target = archive.join(parent);
                std::fs::create_dir_all(&target)?;
                Some(rustix::fs::open(
                    &target,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )?)
            }
            None => None,
        };
        // The descriptor is the file checked: what happens to it after the unlink or rename
        // is seen on it, whatever the name now points to.
        let source = match rustix::fs::openat(
            &dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => File::from(fd),
            Err(rustix::io::Errno::NOENT) => return Ok(TakeAway::Gone),
            // A link (ELOOP), a FIFO without writer (ENXIO) and the like: not the file.
            Err(_) => return Ok(TakeAway::Changed),
        };
        let unchanged = |file: &File| -> io::Result<bool> {
            let meta = file.metadata()?;
            Ok(meta.is_file() && FileMeta::from_metadata(&meta) == *expected)
        };
        // Unlinking or renaming changes the ctime: after it, size and mtime tell a write.
        let written_since = |file: &File| -> io::Result<bool> {
            let now = FileMeta::from_metadata(&file.metadata()?);
            Ok(now.size != expected.size || now.mtime_ns != expected.mtime_ns)
        };
        // A read lease makes a writer's open wait until it is released, and tells us it came.
        let lease = match Lease::take(&source) {
            Err(()) => return Ok(TakeAway::Changed), // open for writing right now
            Ok(lease) => lease,
        };
        if !unchanged(&source)? {
            return Ok(TakeAway::Changed);
        }
        // Unlinks the name, then puts the file back from its descriptor if a writer came anyway.
        let unlink_unless_written = |lease: Lease| -> io::Result<TakeAway> {
            rustix::fs::unlinkat(&dir, name, AtFlags::empty())?;
            let writer_came = lease.release();
            if writer_came || written_since(&source)? {
                if writer_came {
                    wait_for_writer(&source);
                }
                write_back(&dir, name, &source)?;
                return Ok(TakeAway::Changed);
            }
            rustix::fs::fsync(&dir)?;
            Ok(TakeAway::Done)
        };
        let Some(target_dir) = target_dir else {
            return unlink_unless_written(lease);
        };
        match rustix::fs::renameat(&dir, name, &target_dir, name) {
            Ok(()) => {
                // What was renamed is the file checked (not one renamed over its name since)?
                let moved = rustix::fs::statat(&target_dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
                #[allow(clippy::unnecessary_cast)]
                let same = moved.st_ino as u64 == expected.inode;
                if !same || lease.broken() || written_since(&source)? {
                    rustix::fs::renameat_with(
                        &target_dir,
                        name,
                        &dir,
                        name,
                        rustix::fs::RenameFlags::NOREPLACE,
                    )?;
                    return Ok(TakeAway::Changed);
                }
                rustix::fs::fsync(&target_dir)?;
                rustix::fs::fsync(&dir)?;
                return Ok(TakeAway::Done);
            }
            Err(rustix::io::Errno::XDEV) => {}
            Err(e) => return Err(e.into()),
        }
        // Another file system: copy what was checked (the descriptor, not the name again).
        let mut tmp_name = std::ffi::OsString::from(".dropslot-archiving.");
        tmp_name.push(name);
        let tmp = rustix::fs::openat(
            &target_dir,
            tmp_name.as_os_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let mut tmp = File::from(tmp);
        io::copy(&mut &source, &mut tmp)?;
        tmp.set_permissions(source.metadata()?.permissions())?;
        tmp.sync_all()?;
        drop(tmp);
        rustix::fs::renameat(&target_dir, tmp_name.as_os_str(), &target_dir, name)?;
        rustix::fs::fsync(&target_dir)?;
        // Still the same file under the name, unchanged by the copy's time?
        match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if kind_of_stat(&st) == FileKind::Regular(*expected) && !lease.broken() => {}
            // Written to while it was copied: the archive holds an older copy that the next
            // version's action overwrites; the file stays and is published again.
            _ => return Ok(TakeAway::Changed),
        }
        unlink_unless_written(lease)
    }

    fn resolve(&self, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        // The root itself, for listing it: "." resolves beneath trivially.
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let root = rustix::fs::open(
            &self.path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            let mut resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
            if self.one_file_system {
                resolve |= ResolveFlags::NO_XDEV;
            }
            // EAGAIN: a rename elsewhere raced with the lookup and the kernel could not prove
            // it stayed beneath; trying again is what the man page asks for.
            for _ in 0..8 {
                match rustix::fs::openat2(
                    &root,
                    rel,
                    flags | OFlags::CLOEXEC,
                    Mode::empty(),
                    resolve,
                ) {
                    Err(rustix::io::Errno::AGAIN) => continue,
                    Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {
                        NO_OPENAT2.store(true, Ordering::Relaxed);
                        break;
                    }
                    other => return other.map_err(io::Error::from),
                }
            }
            if !NO_OPENAT2.load(Ordering::Relaxed) {
                return Err(io::Error::from(rustix::io::Errno::AGAIN));
            }
        }
        walk_beneath(root, rel, flags, self.one_file_system)
    }
}

/// A read lease on a file dropslot is about to remove: while it is held, another process's open
/// for writing (or truncation) waits for its release, and [`Lease::broken`] says one came.
/// Without lease rights (not the owner, no `CAP_LEASE`) it is a no-op that never breaks, and the
/// size and mtime checks are all there is.
struct Lease<'a> {
    file: Option<&'a File>,
}

impl<'a> Lease<'a> {
    /// `Err` when the file is open for writing right now.
    fn take(file: &'a File) -> Result<Self, ()> {
        match crate::fileinfo::has_writers_keeping_lease(file) {
            Some(true) => Err(()),
            Some(false) => Ok(Lease { file: Some(file) }),
            None => Ok(Lease { file: None }),
        }
    }

    /// A writer tried to open the file since the lease was taken.
    fn broken(&self) -> bool {
        use std::os::fd::AsRawFd;
        self.file.is_some_and(|f| {
            // SAFETY: fcntl on a descriptor we own.
            unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLEASE) != libc::F_RDLCK }
        })
    }

    /// Releases the lease; returns whether a writer was waiting for it.
    fn release(mut self) -> bool {
        let broken = self.broken();
        self.unlock();
        broken
    }

    fn unlock(&mut self) {
        use std::os::fd::AsRawFd;
        if let Some(f) = self.file.take() {
            // SAFETY: fcntl on a descriptor we own.
            unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.unlock();
    }
}

/// After a writer was let through on a file just unlinked: waits (at most 30 s) until it has
/// opened and closed it again, so what is written back is what it wrote.
fn wait_for_writer(file: &File) {
    let start = std::time::Instant::now();
    let mut seen = false;
    while start.elapsed() < std::time::Duration::from_secs(30) {
        match crate::fileinfo::has_writers(file) {
            Some(true) => seen = true,
            Some(false) if seen || start.elapsed() > std::time::Duration::from_secs(1) => return,
            None => return,
            _ => {}
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Puts the content of `source` (a file unlinked a moment ago, written to meanwhile) back under
/// `name`, unless a new file took the name already (that one is the newer version).
fn write_back(dir: &OwnedFd, name: &std::ffi::OsStr, source: &File) -> io::Result<()> {
    use std::io::{Seek, SeekFrom};
    let fd = match rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::EXIST) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut restored = File::from(fd);
    let mut from = source;
    from.seek(SeekFrom::Start(0))?;
    io::copy(&mut from, &mut restored)?;
    restored.set_permissions(source.metadata()?.permissions())?;
    restored.sync_all()?;
    tracing::warn!(
        name = %Path::new(name).display(),
        "written to while it was being removed after its publish: put back, to be published again"
    );
    Ok(())
}

/// What [`DropRoot::take_away`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TakeAway {
    /// Deleted, or in the archive.
    Done,
    /// Not the version expected any more (rewritten, replaced, not a regular file): left alone.
    Changed,
    /// Not there.
    Gone,
}

/// One entry of [`DropRoot::list_dir`].
#[derive(Debug)]
pub struct Listed {
    pub name: std::ffi::OsString,
    pub kind: FileKind,
}

// The casts are no-ops on 64-bit Linux only: `st_mtime` and `st_ino` are narrower elsewhere.
#[allow(clippy::unnecessary_cast)]
fn kind_of_stat(st: &rustix::fs::Stat) -> FileKind {
    use rustix::fs::FileType;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => FileKind::Regular(FileMeta {
            size: st.st_size as u64,
            mtime_ns: st.st_mtime as i64 * 1_000_000_000 + st.st_mtime_nsec as i64,
            ctime_ns: st.st_ctime as i64 * 1_000_000_000 + st.st_ctime_nsec as i64,
            inode: st.st_ino as u64,
        }),
        FileType::Directory => FileKind::Directory,
        FileType::Symlink => FileKind::Symlink,
        FileType::Fifo => FileKind::Special("FIFO"),
        FileType::Socket => FileKind::Special("socket"),
        FileType::BlockDevice | FileType::CharacterDevice => FileKind::Special("device file"),
        FileType::Unknown => FileKind::Special("special file"),
    }
}

/// The fallback: one `openat(O_NOFOLLOW)` per component, each directory checked on its
/// descriptor (a link is refused as `ELOOP`, another device as `EXDEV`).
fn walk_beneath(
    root: OwnedFd,
    rel: &Path,
    flags: OFlags,
    one_file_system: bool,
) -> io::Result<OwnedFd> {
    let root_dev = File::from(root.try_clone()?).metadata()?.dev();
    let names: Vec<&std::ffi::OsStr> = rel
        .components()
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            // Paths come from the walker and never hold `..` or `/`; refuse them if they do.
            _ => Err(io::Error::from(rustix::io::Errno::INVAL)),
        })
        .collect::<io::Result<_>>()?;
    let Some((last, dirs)) = names.split_last() else {
        return rustix::fs::openat(&root, ".", flags | OFlags::CLOEXEC, Mode::empty())
            .map_err(io::Error::from);
    };
    let mut dir = root;
    for name in dirs {
        let next = rustix::fs::openat(
            &dir,
            *name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let m = File::from(next.try_clone()?).metadata()?;
        if m.file_type().is_symlink() {
            return Err(io::Error::from(rustix::io::Errno::LOOP));
        }
        if !m.is_dir() {
            return Err(io::Error::from(rustix::io::Errno::NOTDIR));
        }
        if one_file_system && m.dev() != root_dev {
            return Err(io::Error::from(rustix::io::Errno::XDEV));
        }
        dir = next;
    }
    let fd = rustix::fs::openat(&dir, *last, flags | OFlags::CLOEXEC, Mode::empty())?;
    if one_file_system && File::from(fd.try_clone()?).metadata()?.dev() != root_dev {
        return Err(io::Error::from(rustix::io::Errno::XDEV));
    }
    Ok(fd)
}

/// The refusals that mean "exists, but not for us", as opposed to a failure worth reporting.
pub fn refusal(e: &io::Error) -> Option<&'static str> {
    match e.raw_os_error() {
        Some(libc::ELOOP) => Some(THROUGH_LINK),
        Some(libc::EXDEV) => Some(OTHER_FILE_SYSTEM),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, DropRoot) {
        let top = tempfile::tempdir().unwrap();
        let drop = top.path().join("drop");
        std::fs::create_dir_all(drop.join("real")).unwrap();
        std::fs::write(drop.join("real/f"), b"inside").unwrap();
        std::fs::create_dir(top.path().join("outside")).unwrap();
        std::fs::write(top.path().join("outside/secret"), b"outside").unwrap();
        std::os::unix::fs::symlink(top.path().join("outside"), drop.join("link")).unwrap();
        std::os::unix::fs::symlink(top.path().join("outside/secret"), drop.join("filelink"))
            .unwrap();
        (top, DropRoot::new(drop, false))
    }

    #[test]
    fn take_away_removes_only_the_expected_version_and_never_through_a_link() {
        let (top, root) = tree();
        let archive = top.path().join("archive");
        let meta = root.regular_meta(Path::new("real/f")).unwrap();
        // Another version (same size, new mtime): kept.
        let mut other = meta;
        other.mtime_ns += 1;
        let f = Path::new("real/f");
        assert_eq!(
            root.take_away(f, &other, Some(&archive)).unwrap(),
            TakeAway::Changed
        );
        assert!(root.path().join("real/f").exists());
        // A file reached through a link is not the file (refused or not found), never removed.
        let secret = root.take_away(Path::new("link/secret"), &meta, None);
        assert!(!matches!(secret, Ok(TakeAway::Done)), "{secret:?}");
        assert!(top.path().join("outside/secret").exists());
        // The version published: archived with its relative path, then gone (twice is harmless).
        assert_eq!(
            root.take_away(f, &meta, Some(&archive)).unwrap(),
            TakeAway::Done
        );
        assert_eq!(std::fs::read(archive.join("real/f")).unwrap(), b"inside");
        assert_eq!(root.take_away(f, &meta, None).unwrap(), TakeAway::Gone);
        // A link in the file's own place is not the file: kept.
        assert_eq!(
            root.take_away(Path::new("filelink"), &meta, None).unwrap(),
            TakeAway::Changed
        );
        assert!(root.path().join("filelink").symlink_metadata().is_ok());
    }

    fn check_confinement(root: &DropRoot) {
        let (mut f, meta) = root.open_file(Path::new("real/f")).unwrap();
        let mut s = String::new();
        io::Read::read_to_string(&mut f, &mut s).unwrap();
        assert_eq!((s.as_str(), meta.size), ("inside", 6));
        let through = root.open_file(Path::new("link/secret")).unwrap_err();
        assert_eq!(refusal(&through), Some(THROUGH_LINK), "{through}");
        assert_eq!(
            root.probe(Path::new("link/secret")).unwrap(),
            FileKind::Refused(THROUGH_LINK)
        );
        assert_eq!(
            root.probe(Path::new("filelink")).unwrap(),
            FileKind::Symlink
        );
        assert!(root.open_file(Path::new("filelink")).is_err());
        assert_eq!(
            root.probe(Path::new("real/none")).unwrap(),
            FileKind::Missing
        );
        assert_eq!(root.probe(Path::new("real")).unwrap(), FileKind::Directory);
        assert!(root.open_file(Path::new("../outside/secret")).is_err());
    }

    #[test]
    fn nothing_outside_the_root_is_reachable_through_links() {
        let (_top, root) = tree();
        check_confinement(&root);
    }

    #[test]
    fn listing_never_goes_through_a_link_and_matches_what_probe_says() {
        let (_top, root) = tree();
        let mut names: Vec<_> = root
            .list_dir(Path::new(""))
            .unwrap()
            .into_iter()
            .map(|l| (l.name.into_string().unwrap(), l.kind))
            .collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(names[0], ("filelink".to_string(), FileKind::Symlink));
        assert_eq!(names[1], ("link".to_string(), FileKind::Symlink));
        assert_eq!(names[2], ("real".to_string(), FileKind::Directory));
        let inside = root.list_dir(Path::new("real")).unwrap();
        assert_eq!(inside.len(), 1);
        assert_eq!(inside[0].kind, root.probe(Path::new("real/f")).unwrap());
        // The link itself is not a directory; a directory behind it is refused as through a link.
        assert!(root.list_dir(Path::new("link")).is_err());
        std::fs::create_dir(root.path().join("link/sub")).unwrap();
        let through = root.list_dir(Path::new("link/sub")).unwrap_err();
        assert_eq!(refusal(&through), Some(THROUGH_LINK), "{through}");
    }

    #[test]
    fn the_component_walk_fallback_refuses_the_same_paths() {
        let (_top, root) = tree();
        let open = |rel: &str| {
            let base =
                rustix::fs::open(root.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
                    .unwrap();
            walk_beneath(
                base,
                Path::new(rel),
                OFlags::RDONLY | OFlags::NOFOLLOW,
                false,
            )
        };
        assert!(open("real/f").is_ok());
        assert_eq!(
            refusal(&open("link/secret").unwrap_err()),
            Some(THROUGH_LINK)
        );
        assert!(open("filelink").is_err());
        assert!(open("../outside/secret").is_err());
        assert!(is_gone(&open("real/none").unwrap_err()));
    }
}
