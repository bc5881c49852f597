//! The mount table of a mount namespace (`/proc/<pid>/mountinfo`) as data: each mount's id,
//! its parent's id, where it is mounted, its type, source and options, with the kernel's
//! octal escapes decoded. Reading it is the caller's; this only parses.

/// One line of a mountinfo table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub id: u32,
    pub parent: u32,
    pub mount_point: String,
    pub fstype: String,
    pub source: String,
    /// The superblock's options (after the source), escapes decoded.
    pub super_options: String,
}

/// The entries of a mountinfo table, in its order (a parent before its children); lines that
/// do not parse are skipped.
pub fn parse(table: &str) -> Vec<MountEntry> {
    table
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mut b = before.split(' ');
            let id = b.next()?.parse().ok()?;
            let parent = b.next()?.parse().ok()?;
            let mount_point = unescape(b.nth(2)?);
            let mut a = after.splitn(3, ' ');
            Some(MountEntry {
                id,
                parent,
                mount_point,
                fstype: a.next()?.to_string(),
                source: unescape(a.next().unwrap_or("")),
                super_options: unescape(a.next().unwrap_or("")),
            })
        })
        .collect()
}

/// This process's mount table, as its mount namespace and root see it.
pub fn read_own() -> std::io::Result<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
}

/// The mount points of a table, in order.
pub fn mount_points(table: &str) -> Vec<String> {
    parse(table).into_iter().map(|e| e.mount_point).collect()
}

/// A field with the kernel's octal escapes (`\040` for a space) decoded.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_escapes() {
        let t = "22 1 0:21 / / rw - rootfs rootfs rw\n\
                 30 22 0:40 / /mnt/a\\040b rw,nosuid shared:5 - tmpfs my\\040src rw,size=1k\n\
                 garbage\n";
        let e = parse(t);
        assert_eq!(e.len(), 2);
        assert_eq!((e[1].id, e[1].parent), (30, 22));
        assert_eq!(e[1].mount_point, "/mnt/a b");
        assert_eq!(e[1].fstype, "tmpfs");
        assert_eq!(e[1].source, "my src");
        assert_eq!(e[1].super_options, "rw,size=1k");
        assert_eq!(mount_points(t), ["/", "/mnt/a b"]);
        assert_eq!(unescape("/x\\"), "/x\\");
        assert_eq!(unescape("/x\\08"), "/x\\08");
    }
}
