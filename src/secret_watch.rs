//! The secret files, watched: a secret written to disk (by hand, by a rotation script, by a
//! Kubernetes Secret update swapping its symlink) is in use within a second, without SIGHUP.
//!
//! A look is one `stat` per file, never a read: what changed is told from the file's identity,
//! size and times, so the secret is read only by the reload the change sets off.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the secret files are looked at.
pub const WATCH_EVERY: Duration = Duration::from_millis(250);

/// What one look at a file found: enough to tell that it was rewritten, replaced, removed or
/// given another mode, and nothing of what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Missing or unreadable metadata.
    Absent,
    File {
        device: u64,
        inode: u64,
        len: u64,
        modified: (i64, i64),
        changed: (i64, i64),
    },
}

impl Seen {
    fn of(path: &Path) -> Self {
        match std::fs::metadata(path) {
            Ok(meta) => Seen::File {
                device: meta.dev(),
                inode: meta.ino(),
                len: meta.size(),
                modified: (meta.mtime(), meta.mtime_nsec()),
                changed: (meta.ctime(), meta.ctime_nsec()),
            },
            Err(_) => Seen::Absent,
        }
    }
}

/// The secret files of the config in force, and how each looked when last seen.
#[derive(Debug, Default)]
pub struct SecretFiles {
    files: Vec<(PathBuf, Seen)>,
}

impl SecretFiles {
    /// Watches `paths`, as they are now.
    pub fn watching(paths: &[PathBuf]) -> Self {
        Self {
            files: paths
                .iter()
                .map(|path| (path.clone(), Seen::of(path)))
                .collect(),
        }
    }

    /// Watches `paths` from now on (a reload may name other files), keeping what was seen of
    /// those already watched, so that a change made meanwhile is still noticed.
    pub fn rewatch(&mut self, paths: &[PathBuf]) {
        let files = paths
            .iter()
            .map(|path| {
                let seen = self
                    .files
                    .iter()
                    .find(|(watched, _)| watched == path)
                    .map_or_else(|| Seen::of(path), |(_, seen)| *seen);
                (path.clone(), seen)
            })
            .collect();
        self.files = files;
    }

    /// The files that changed since the last look; each change is reported once.
    pub fn changed(&mut self) -> Vec<PathBuf> {
        let mut changed = Vec::new();
        for (path, seen) in &mut self.files {
            let now = Seen::of(path);
            if now != *seen {
                *seen = now;
                changed.push(path.clone());
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewrite_a_replacement_and_a_removal_are_each_noticed_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("secret");
        std::fs::write(&path, "one").expect("write");
        let mut files = SecretFiles::watching(std::slice::from_ref(&path));
        assert!(files.changed().is_empty(), "nothing changed yet");

        // Rewritten in place with a value of another length.
        std::fs::write(&path, "second").expect("write");
        assert_eq!(files.changed(), std::slice::from_ref(&path));
        assert!(files.changed().is_empty(), "reported once");

        // Replaced by a rename, as editors and Kubernetes do: another inode.
        let next = dir.path().join("secret.new");
        std::fs::write(&next, "thirds").expect("write");
        std::fs::rename(&next, &path).expect("rename");
        assert_eq!(files.changed(), std::slice::from_ref(&path));

        std::fs::remove_file(&path).expect("remove");
        assert_eq!(files.changed(), std::slice::from_ref(&path));
        assert!(files.changed().is_empty());
    }

    #[test]
    fn a_kubernetes_style_symlink_swap_is_noticed() {
        // A Secret volume: `secret` -> `..data/secret`, `..data` -> a timestamped directory that
        // the kubelet replaces whole, then swaps `..data` to with a rename.
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let first = root.join("..2026_11_30_first");
        std::fs::create_dir(&first).expect("mkdir");
        std::fs::write(first.join("secret"), "one").expect("write");
        std::os::unix::fs::symlink("..2026_11_30_first", root.join("..data")).expect("symlink");
        std::os::unix::fs::symlink("..data/secret", root.join("secret")).expect("symlink");
        let path = root.join("secret");
        let mut files = SecretFiles::watching(std::slice::from_ref(&path));

        let second = root.join("..2026_12_01_second");
        std::fs::create_dir(&second).expect("mkdir");
        std::fs::write(second.join("secret"), "two").expect("write");
        std::os::unix::fs::symlink("..2026_12_01_second", root.join("..data_tmp"))
            .expect("symlink");
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap");
        assert_eq!(files.changed(), std::slice::from_ref(&path));
    }

    #[test]
    fn rewatching_keeps_what_was_seen_of_a_file_still_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "one").expect("write");
        std::fs::write(&b, "two").expect("write");
        let mut files = SecretFiles::watching(std::slice::from_ref(&a));
        std::fs::write(&a, "changed").expect("write");
        files.rewatch(&[a.clone(), b]);
        assert_eq!(files.changed(), [a], "the change made before the rewatch");
    }
}
