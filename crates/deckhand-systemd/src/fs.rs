//! Atomic, idempotent file writes for env files and drop-ins.

use std::fs::{self, DirBuilder, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Writes `contents` to `path` atomically, so that readers (systemd, a crashed
/// and restarted agent) see either the old file or the new one, never a mix.
///
/// Steps: create the parent directory and its missing ancestors (mode 0755,
/// not subject to the umask) if missing; write a temporary file `.<name>.<random>.tmp` in the same directory;
/// set its mode to `mode` (e.g. `0o600` for secrets, `0o644` for drop-ins;
/// permission bits only, not subject to the umask); fsync it; rename it over
/// `path`; fsync the directory so the rename survives a power loss. The
/// temporary name starts with `.` and ends in `.tmp`, so systemd never picks it
/// up as a drop-in (it reads only `*.conf`) even if a crash leaves one behind.
///
/// Returns `Ok(false)` and writes nothing when `path` already holds exactly
/// `contents` with exactly `mode`; `Ok(true)` after a write. A file with the
/// right contents but another mode is rewritten (and `Ok(true)` returned), so
/// that a mode fix is also atomic. If `path` is a symlink it is replaced by a
/// regular file. The file keeps the owner of the calling process.
///
/// # Errors
///
/// Any I/O error from reading the old file, creating the directory, writing,
/// fsync or rename; the message names the path and the step. The temporary file
/// is removed on error.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<bool> {
    let mode = mode & 0o7777;
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot write {}: the path has no file name", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };

    match fs::read(path) {
        Ok(old) if old == contents => {
            let meta = fs::symlink_metadata(path).map_err(|e| context(e, "inspecting", path))?;
            if meta.file_type().is_file() && meta.permissions().mode() & 0o7777 == mode {
                return Ok(false);
            }
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(context(e, "reading", path)),
    }

    create_dirs(dir)?;

    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| context(e, "creating a temporary file in", dir))?;
    let tmp_path = tmp.path().to_owned();
    tmp.write_all(contents)
        .map_err(|e| context(e, "writing", &tmp_path))?;
    tmp.as_file()
        .set_permissions(Permissions::from_mode(mode))
        .map_err(|e| context(e, "setting the mode of", &tmp_path))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| context(e, "syncing", &tmp_path))?;
    // On failure the returned error still owns the temporary file and removes it on drop.
    tmp.persist(path)
        .map_err(|e| context(e.error, "renaming the temporary file onto", path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| context(e, "syncing directory", dir))?;
    Ok(true)
}

/// Creates `dir` and its missing ancestors with mode exactly 0755 (not subject
/// to the umask). Existing directories are left as they are.
fn create_dirs(dir: &Path) -> io::Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && fs::symlink_metadata(d).is_err())
        .collect();
    for d in missing.into_iter().rev() {
        match DirBuilder::new().mode(0o755).create(d) {
            Ok(()) => fs::set_permissions(d, Permissions::from_mode(0o755))
                .map_err(|e| context(e, "setting the mode of directory", d))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(context(e, "creating directory", d)),
        }
    }
    Ok(())
}

fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o7777
    }

    #[test]
    fn writes_then_skips_unchanged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("etcd.env");

        assert!(write_atomic(&path, b"A=1\n", 0o600).expect("first write"));
        assert_eq!(fs::read(&path).expect("read"), b"A=1\n");
        assert_eq!(mode_of(&path), 0o600);

        assert!(!write_atomic(&path, b"A=1\n", 0o600).expect("unchanged"));

        assert!(write_atomic(&path, b"A=2\n", 0o600).expect("changed"));
        assert_eq!(fs::read(&path).expect("read"), b"A=2\n");
        assert_eq!(entries(dir.path()), ["etcd.env"]);
    }

    #[test]
    fn applies_mode_even_when_contents_match() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.conf");
        assert!(write_atomic(&path, b"x", 0o644).expect("write"));
        assert_eq!(mode_of(&path), 0o644);
        assert!(write_atomic(&path, b"x", 0o600).expect("mode fix"));
        assert_eq!(mode_of(&path), 0o600);
        assert!(!write_atomic(&path, b"x", 0o600).expect("unchanged"));
        assert_eq!(entries(dir.path()), ["x.conf"]);
    }

    #[test]
    fn creates_missing_parent_dirs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let drop_in_dir = dir.path().join("etc/systemd/system/etcd-member.service.d");
        let path = drop_in_dir.join("10-deckhand.conf");
        assert!(write_atomic(&path, b"[Service]\n", 0o644).expect("write"));
        assert_eq!(fs::read(&path).expect("read"), b"[Service]\n");
        assert_eq!(mode_of(&drop_in_dir), 0o755);
        assert_eq!(mode_of(&dir.path().join("etc")), 0o755);
        assert_eq!(entries(&drop_in_dir), ["10-deckhand.conf"]);
    }

    #[test]
    fn empty_contents_and_replacing_a_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("target");
        fs::write(&target, b"keep").expect("write target");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");

        assert!(write_atomic(&link, b"", 0o644).expect("write"));
        assert!(fs::symlink_metadata(&link).expect("meta").is_file());
        assert_eq!(fs::read(&link).expect("read"), b"");
        assert_eq!(fs::read(&target).expect("read"), b"keep");
    }

    #[test]
    fn errors_name_the_path_and_leave_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory where the file should go: rename onto it fails.
        let path = dir.path().join("occupied");
        fs::create_dir(&path).expect("mkdir");
        let err = write_atomic(&path, b"x", 0o644).expect_err("cannot replace a directory");
        assert!(err.to_string().contains("occupied"), "{err}");
        assert_eq!(entries(dir.path()), ["occupied"]);

        let err = write_atomic(Path::new("/"), b"x", 0o644).expect_err("no file name");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
