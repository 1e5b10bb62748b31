//! A file written whole, then renamed into place: a reader (herald-ingest re-reading its key
//! file, Redis loading its users) sees the old file or the new one, never half of either.

use std::io::Write;
use std::path::Path;

/// Writes `parts` to a new `PATH.tmp` (never one found there: a stale one, or a link planted
/// in its place, is removed first) with permissions `mode`, syncs it, and renames it to
/// `path`.
pub fn replace_file(path: &Path, mode: u32, parts: &[&[u8]]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = options.open(&tmp)?;
    for part in parts {
        f.write_all(part)?;
    }
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
