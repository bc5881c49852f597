//! Resolves a spec's or image's `user` string (`user[:group]`, names or numeric ids) to the ids
//! the container process runs with, from the text of the image's /etc/passwd and /etc/group.
//!
//! Owns: parsing passwd/group text and runc's `GetExecUser` rules. Pure: never calls NSS and
//! never reads a file; the caller reads both files through the container root (fd-relative,
//! see SECURITY.md) and passes their contents, or `None` when a file is missing.

/// Largest uid/gid accepted (runc's `maxID`).
const MAX_ID: i64 = i32::MAX as i64;

/// Errors from resolving a `user` string.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("unable to find user {0:?}: no matching entry in the image's /etc/passwd")]
    UnknownUser(String),
    #[error("unable to find group {0:?}: no matching entry in the image's /etc/group")]
    UnknownGroup(String),
    #[error("{kind} {value} is out of range (0..={MAX_ID})")]
    OutOfRange { kind: &'static str, value: String },
}

/// Who the container process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, in /etc/group order, without duplicates.
    pub additional_gids: Vec<u32>,
    /// The user's home directory (for `HOME`), "/" when unknown.
    pub home: String,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

/// Lines worth parsing: trimmed, not blank, not a comment, not a NIS `+`/`-` entry.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim).filter(|l| {
        !l.is_empty() && !l.starts_with('#') && !l.starts_with('+') && !l.starts_with('-')
    })
}

fn id(field: &str) -> Option<u32> {
    field
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|&n| i64::from(n) <= MAX_ID)
}

/// `name:password:uid:gid[:gecos[:home[:shell]]]`; lines with fewer than four fields or a
/// non-numeric uid/gid are skipped.
fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    lines(text).filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 || f[0].is_empty() {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: id(f[2])?,
            gid: id(f[3])?,
            home: f.get(5).copied().unwrap_or(""),
        })
    })
}

/// `name:password:gid[:member,member...]`; lines with fewer than three fields or a
/// non-numeric gid are skipped.
fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    lines(text).filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 3 || f[0].is_empty() {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: id(f[2])?,
            members: f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        })
    })
}

/// `Some(Ok(id))` for a numeric argument in range, `Some(Err)` for a number out of range,
/// `None` for a name.
fn numeric(arg: &str, kind: &'static str) -> Option<Result<u32, UserError>> {
    let n: i64 = arg.parse().ok()?;
    Some(if (0..=MAX_ID).contains(&n) {
        Ok(n as u32)
    } else {
        Err(UserError::OutOfRange {
            kind,
            value: arg.to_string(),
        })
    })
}

/// Resolves `user` against the image's passwd and group file contents, following runc's
/// `user.GetExecUser` (which moby uses):
/// - `None` or empty: uid 0, gid 0 (the passwd entry of uid 0 gives the home, if any).
/// - The user part is a numeric uid or a name. A number is always a uid, whether or not
///   passwd lists it; a name must be in passwd (else [`UserError::UnknownUser`]). With a
///   passwd entry, the gid and home come from it; without one, gid 0 and home "/".
/// - `:group` is a numeric gid (listed or not) or a group name that must be in the group file
///   (else [`UserError::UnknownGroup`]); it replaces the gid.
/// - Supplementary groups (the groups listing the matched user name as a member, and the group
///   of its primary gid) are added
///   only when no explicit group is given, as runc does; a uid without a passwd entry has
///   none.
/// - When several entries match, the first wins.
pub fn resolve(
    user: Option<&str>,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, UserError> {
    let spec = user.map(str::trim).unwrap_or("");
    let mut parts = spec.split(':');
    let user_arg = parts.next().unwrap_or("").trim();
    let group_arg = parts.next().unwrap_or("").trim();

    let uid_num = numeric(user_arg, "uid").transpose()?;
    let gid_num = numeric(group_arg, "gid").transpose()?;

    let mut resolved = ResolvedUser {
        uid: 0,
        gid: 0,
        additional_gids: Vec::new(),
        home: "/".to_string(),
    };

    let entry = passwd.and_then(|text| {
        passwd_entries(text).find(|e| match (user_arg, uid_num) {
            ("", _) => e.uid == 0,
            (_, Some(uid)) => e.uid == uid,
            (name, None) => e.name == name,
        })
    });
    let matched_name = match entry {
        Some(e) => {
            resolved.uid = e.uid;
            resolved.gid = e.gid;
            if !e.home.is_empty() {
                resolved.home = e.home.to_string();
            }
            Some(e.name)
        }
        None => {
            match (user_arg, uid_num) {
                ("", _) => {}
                (_, Some(uid)) => resolved.uid = uid,
                (name, None) => return Err(UserError::UnknownUser(name.to_string())),
            }
            None
        }
    };

    let groups = group.map(group_entries);
    if !group_arg.is_empty() {
        let found = groups.and_then(|mut g| {
            g.find(|e| match gid_num {
                Some(gid) => e.gid == gid,
                None => e.name == group_arg,
            })
        });
        resolved.gid = match (found, gid_num) {
            (Some(e), _) => e.gid,
            (None, Some(gid)) => gid,
            (None, None) => return Err(UserError::UnknownGroup(group_arg.to_string())),
        };
    } else if let (Some(name), Some(groups)) = (matched_name, groups) {
        for e in groups {
            // As runc: the user's own primary group counts too.
            let member = e.gid == resolved.gid || e.members.contains(&name);
            if member && !resolved.additional_gids.contains(&e.gid) {
                resolved.additional_gids.push(e.gid);
            }
        }
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
# comment line
root:x:0:0:root:/root:/bin/sh

bin:x:1:1:bin:/bin:/sbin/nologin
short:x:5
badid:x:abc:1:bad:/nowhere:/bin/sh
  web:x:1000:1001:Web User:/home/web:/bin/sh  
nohome:x:1002:1002
dup:x:1003:1003::/first:/bin/sh
dup:x:1004:1004::/second:/bin/sh
+nisuser::::::
";

    const GROUP: &str = "\
# groups
root:x:0:root
bin:x:1:root,bin,daemon
web:x:1001:
staff:x:50: web , other
audio:x:63:web
broken
again:x:50:web
";

    fn ok(uid: u32, gid: u32, sgids: &[u32], home: &str) -> Result<ResolvedUser, UserError> {
        Ok(ResolvedUser {
            uid,
            gid,
            additional_gids: sgids.to_vec(),
            home: home.to_string(),
        })
    }

    /// user, passwd, group, expected.
    type Case<'a> = (
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        Result<ResolvedUser, UserError>,
    );

    #[test]
    fn resolve_table() {
        let p = Some(PASSWD);
        let g = Some(GROUP);
        let cases: Vec<Case> = vec![
            // Default: root, with root's home and its supplementary groups.
            (None, p, g, ok(0, 0, &[0, 1], "/root")),
            (Some(""), p, g, ok(0, 0, &[0, 1], "/root")),
            (Some("  "), p, g, ok(0, 0, &[0, 1], "/root")),
            (None, None, None, ok(0, 0, &[], "/")),
            (Some("root"), p, g, ok(0, 0, &[0, 1], "/root")),
            // By name and by uid.
            (
                Some("web"),
                p,
                g,
                ok(1000, 1001, &[1001, 50, 63], "/home/web"),
            ),
            (
                Some("1000"),
                p,
                g,
                ok(1000, 1001, &[1001, 50, 63], "/home/web"),
            ),
            // Numeric uid not in passwd: gid 0, home "/", no groups.
            (Some("4242"), p, g, ok(4242, 0, &[], "/")),
            (Some("4242"), None, None, ok(4242, 0, &[], "/")),
            // Explicit group: replaces the gid, no supplementary groups.
            (Some("web:staff"), p, g, ok(1000, 50, &[], "/home/web")),
            (Some("web:63"), p, g, ok(1000, 63, &[], "/home/web")),
            (Some("web:777"), p, g, ok(1000, 777, &[], "/home/web")),
            (Some("1000:1000"), p, g, ok(1000, 1000, &[], "/home/web")),
            (Some("1000:1000"), None, None, ok(1000, 1000, &[], "/")),
            (Some(":staff"), p, g, ok(0, 50, &[], "/root")),
            (Some(":50"), None, None, ok(0, 50, &[], "/")),
            // Entry without a home field.
            (Some("nohome"), p, g, ok(1002, 1002, &[], "/")),
            // First match wins.
            (Some("dup"), p, g, ok(1003, 1003, &[], "/first")),
            // Errors name what was missing.
            (
                Some("ghost"),
                p,
                g,
                Err(UserError::UnknownUser("ghost".into())),
            ),
            (
                Some("ghost"),
                None,
                g,
                Err(UserError::UnknownUser("ghost".into())),
            ),
            (
                Some("short"),
                p,
                g,
                Err(UserError::UnknownUser("short".into())),
            ),
            (
                Some("badid"),
                p,
                g,
                Err(UserError::UnknownUser("badid".into())),
            ),
            (
                Some("web:nogroup"),
                p,
                g,
                Err(UserError::UnknownGroup("nogroup".into())),
            ),
            (
                Some("web:staff"),
                p,
                None,
                Err(UserError::UnknownGroup("staff".into())),
            ),
            (
                Some("-1"),
                p,
                g,
                Err(UserError::OutOfRange {
                    kind: "uid",
                    value: "-1".into(),
                }),
            ),
            (
                Some("web:4294967296"),
                p,
                g,
                Err(UserError::OutOfRange {
                    kind: "gid",
                    value: "4294967296".into(),
                }),
            ),
        ];
        for (user, passwd, group, want) in cases {
            assert_eq!(resolve(user, passwd, group), want, "user {user:?}");
        }
    }

    #[test]
    fn error_messages_name_the_missing_entry() {
        let err = resolve(Some("ghost"), Some(PASSWD), Some(GROUP)).unwrap_err();
        assert!(err.to_string().contains("\"ghost\""), "{err}");
        let err = resolve(Some("web:wheel"), Some(PASSWD), Some(GROUP)).unwrap_err();
        assert!(err.to_string().contains("\"wheel\""), "{err}");
    }
}
