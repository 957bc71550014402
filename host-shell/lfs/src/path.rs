//! Path walks: a path inside the file system resolved as a caller may resolve it (the offload
//! engine resolves the kernel paths of `user.csd.*` values with it).

use super::error::Result;
use super::inode::{access, check_access, Attr, Credentials, InodeNo};
use super::Lfs;

impl Lfs {
    /// The attributes of `path`, relative to the root (`/a/b` or `a/b`; empty parts and `.`
    /// are skipped, symbolic links are not followed). With `who`, search permission is checked
    /// on every directory the walk passes through, before looking into it, as the kernel
    /// checks a caller's own lookups (read permission on what is found is the caller's to
    /// check). A missing part is [`super::LfsError::NotFound`], a part under a file
    /// [`super::LfsError::NotDir`], a directory `who` may not search
    /// [`super::LfsError::PermissionDenied`].
    pub fn walk(&self, path: &str, who: Option<&Credentials>) -> Result<Attr> {
        let mut attr = self.getattr(InodeNo::ROOT)?;
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            if let Some(who) = who {
                check_access(&attr, who, access::X_OK)?;
            }
            attr = self.lookup(attr.ino, part.as_bytes())?;
        }
        Ok(attr)
    }
}
