//! The destination's file-system operations beneath the collection root:
//! directories, mtimes, hashing what is there, and writing a small file so
//! that it appears under its name only complete.
//!
//! It owns the raw system calls (`openat` with `O_TMPFILE`, `linkat`) and
//! their fallbacks. It must not decide what to write or keep transfer
//! state, and every function here blocks: call it on the blocking pool.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime};

use cap_std::fs::{Dir, OpenOptions};

use crate::collection::{Collection, CollectionPath};
use crate::error::{CollectionError, TransferError};

pub(super) fn set_mtime(file: &std::fs::File, mtime_ns: i64) -> std::io::Result<()> {
    let time = if mtime_ns >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(mtime_ns as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_nanos(mtime_ns.unsigned_abs())
    };
    file.set_modified(time)
}

pub(super) fn meta_mtime_ns(m: &cap_std::fs::Metadata) -> i64 {
    use cap_std::fs::MetadataExt;
    m.mtime() * 1_000_000_000 + m.mtime_nsec()
}

/// Creates the directory `target` and any missing parents; `true` if
/// `target` did not exist before.
pub(super) fn create_dir(dir: &Dir, target: &CollectionPath) -> std::io::Result<bool> {
    match dir.create_dir(target.as_relative()) {
        Ok(()) => Ok(true),
        // create_dir_all still fails if it exists as something else.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            dir.create_dir_all(target.as_relative()).map(|()| false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            dir.create_dir_all(target.as_relative()).map(|()| true)
        }
        Err(e) => Err(e),
    }
}

pub(super) fn hash_existing(dir: &Dir, target: &CollectionPath) -> Result<[u8; 32], TransferError> {
    let io = |e| {
        TransferError::from_collection(&CollectionError::from_io("read", target.to_string(), e))
    };
    let mut file = dir.open(target.as_relative()).map_err(io)?.into_std();
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(&mut file).map_err(io)?;
    Ok(*hasher.finalize().as_bytes())
}

pub(super) fn open_parent(
    collection: &Collection,
    parent: &CollectionPath,
) -> Result<Dir, TransferError> {
    let dir = collection.dir();
    match dir.open_dir(parent.as_relative()) {
        Ok(d) => Ok(d),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => dir
            .create_dir_all(parent.as_relative())
            .and_then(|()| dir.open_dir(parent.as_relative()))
            .map_err(|e| {
                TransferError::from_collection(&CollectionError::from_io(
                    "mkdir",
                    parent.to_string(),
                    e,
                ))
            }),
        Err(e) => Err(TransferError::from_collection(&CollectionError::from_io(
            "open",
            parent.to_string(),
            e,
        ))),
    }
}

/// Writes a small file so that it appears under its name only complete:
/// preferably as an unnamed `O_TMPFILE` inode linked in once written (one
/// directory update instead of three for create + rename); where that is not
/// available, or to replace an existing file, through the temp name and a rename.
pub(super) fn write_whole_file(
    parent: &Dir,
    name: &OsStr,
    temp: &OsStr,
    fill: &dyn Fn(&std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if let Some(out) = open_tmpfile(parent) {
        fill(&out)?;
        match link_into(&out, parent, name) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = parent.remove_file(temp);
                link_into(&out, parent, temp)?;
                return parent.rename(temp, parent, name);
            }
            // Neither CAP_DAC_READ_SEARCH nor /proc: the portable way.
            Err(_) => {}
        }
    }
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    let out = parent.open_with(temp, &options)?.into_std();
    fill(&out)?;
    drop(out);
    parent.rename(temp, parent, name)
}

/// An unnamed file in `parent` (None where the file system lacks O_TMPFILE).
pub(super) fn open_tmpfile(parent: &Dir) -> Option<std::fs::File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: openat on an open directory descriptor with a NUL-terminated
    // path; a non-negative result is a new descriptor we own.
    let fd = unsafe {
        libc::openat(
            parent.as_raw_fd(),
            c".".as_ptr(),
            libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC,
            0o666 as libc::c_uint,
        )
    };
    // SAFETY: `fd` was just opened and is owned by nothing else.
    (fd >= 0).then(|| unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Gives the `O_TMPFILE` inode `file` the name `name` in `parent` (a single
/// component: it cannot leave the directory; an existing name is EEXIST).
pub(super) fn link_into(file: &std::fs::File, parent: &Dir, name: &OsStr) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let name = std::ffi::CString::new(name.as_bytes())?;
    // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; /proc/self/fd works without it.
    // SAFETY: linkat with open descriptors and NUL-terminated paths.
    let linked = unsafe {
        libc::linkat(
            file.as_raw_fd(),
            c"".as_ptr(),
            parent.as_raw_fd(),
            name.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if linked == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    if error.kind() == std::io::ErrorKind::AlreadyExists {
        return Err(error);
    }
    let proc_path = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    // SAFETY: as above.
    let linked = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            parent.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if linked == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::os::unix::fs::FileExt;

    use super::*;
    use crate::destination::PARTIAL_PREFIX;

    #[test]
    fn whole_files_appear_complete_and_replace_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let parent = Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
        let temp = OsString::from(format!("{PARTIAL_PREFIX}x"));
        let fill =
            |data: &'static [u8]| move |out: &std::fs::File| out.write_all_at(data, 0).map(|_| ());
        write_whole_file(&parent, OsStr::new("a"), &temp, &fill(b"first")).unwrap();
        write_whole_file(&parent, OsStr::new("a"), &temp, &fill(b"second")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [OsString::from("a")]);
        // A directory in the way is an error, and leaves nothing behind.
        std::fs::create_dir(dir.path().join("d")).unwrap();
        assert!(write_whole_file(&parent, OsStr::new("d"), &temp, &fill(b"x")).is_err());
        let _ = parent.remove_file(&temp);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
