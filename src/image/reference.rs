//! Image references as written in a spec: `oci:/dir[:tag]`, `oci-archive:/f.tar`,
//! `docker-archive:/f.tar`, `rootfs:/dir`, or a registry reference such as
//! `registry:5000/team/app:1.4` or `app@sha256:...` (Docker's rules for the default registry).

use std::fmt;
use std::path::PathBuf;

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// An OCI image layout directory and the tag (`org.opencontainers.image.ref.name`) in it.
    OciLayout {
        dir: PathBuf,
        tag: Option<String>,
    },
    OciArchive {
        path: PathBuf,
        tag: Option<String>,
    },
    DockerArchive {
        path: PathBuf,
        tag: Option<String>,
    },
    /// A plain directory used as the only (read-only) layer.
    Rootfs {
        dir: PathBuf,
    },
    Registry(RegistryRef),
}

/// A registry reference in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    /// e.g. `docker.io`, `localhost:5000`.
    pub registry: String,
    /// e.g. `library/busybox`, `team/app`.
    pub repository: String,
    /// The tag; `latest` when neither tag nor digest is given.
    pub tag: Option<String>,
    /// `sha256:<hex>` when pinned.
    pub digest: Option<String>,
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl ImageRef {
    /// Parses a reference; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<ImageRef, String> {
        if s.is_empty() {
            return Err("image reference is empty".into());
        }
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, tag) = split_path_tag(rest)?;
            return Ok(ImageRef::OciLayout { dir, tag });
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (path, tag) = split_path_tag(rest)?;
            return Ok(ImageRef::OciArchive { path, tag });
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            let (path, tag) = split_path_tag(rest)?;
            return Ok(ImageRef::DockerArchive { path, tag });
        }
        if let Some(rest) = s.strip_prefix("rootfs:") {
            if !rest.starts_with('/') {
                return Err(format!("rootfs path must be absolute: {rest:?}"));
            }
            return Ok(ImageRef::Rootfs {
                dir: PathBuf::from(rest),
            });
        }
        parse_registry(s).map(ImageRef::Registry)
    }
}

/// `/dir:tag` -> (`/dir`, Some(`tag`)). The tag is what follows the last `:` after the last `/`.
fn split_path_tag(s: &str) -> Result<(PathBuf, Option<String>), String> {
    if !s.starts_with('/') {
        return Err(format!("path must be absolute: {s:?}"));
    }
    let last_slash = s.rfind('/').unwrap_or(0);
    match s[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            let tag = &s[at + 1..];
            if tag.is_empty() {
                return Err(format!("empty tag in {s:?}"));
            }
            Ok((PathBuf::from(&s[..at]), Some(tag.to_string())))
        }
        None => Ok((PathBuf::from(s), None)),
    }
}

fn parse_registry(s: &str) -> Result<RegistryRef, String> {
    let (name, digest) = match s.split_once('@') {
        Some((n, d)) => {
            let hex = d
                .strip_prefix("sha256:")
                .ok_or_else(|| format!("digest must be sha256:<hex>: {d:?}"))?;
            if hex.len() != 64
                || !hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                return Err(format!(
                    "digest must be sha256 followed by 64 lower-case hex digits: {d:?}"
                ));
            }
            (n, Some(d.to_string()))
        }
        None => (s, None),
    };
    let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (path, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (
            &name[..last_slash + i],
            Some(name[last_slash + i + 1..].to_string()),
        ),
        None => (name, None),
    };
    if let Some(t) = &tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            && !t.starts_with(['.', '-']);
        if !ok {
            return Err(format!("invalid tag {t:?}"));
        }
    }
    let (registry, repository) = match path.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (first.to_string(), rest.to_string())
        }
        _ => ("docker.io".to_string(), path.to_string()),
    };
    let repository = if registry == "docker.io" && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository
    };
    let valid_component = |c: &str| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && c.as_bytes()[0].is_ascii_alphanumeric()
    };
    if !repository.split('/').all(valid_component) {
        return Err(format!(
            "invalid repository name {repository:?} (lower-case letters, digits, '.', '_', '-')"
        ));
    }
    let tag = if tag.is_none() && digest.is_none() {
        Some("latest".to_string())
    } else {
        tag
    };
    Ok(RegistryRef {
        registry,
        repository,
        tag,
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind() {
        let cases: &[(&str, ImageRef)] = &[
            (
                "oci:/img:v1",
                ImageRef::OciLayout {
                    dir: "/img".into(),
                    tag: Some("v1".into()),
                },
            ),
            (
                "oci:/a/b",
                ImageRef::OciLayout {
                    dir: "/a/b".into(),
                    tag: None,
                },
            ),
            (
                "oci-archive:/f.tar:x",
                ImageRef::OciArchive {
                    path: "/f.tar".into(),
                    tag: Some("x".into()),
                },
            ),
            (
                "docker-archive:/f.tar",
                ImageRef::DockerArchive {
                    path: "/f.tar".into(),
                    tag: None,
                },
            ),
            (
                "rootfs:/srv/root",
                ImageRef::Rootfs {
                    dir: "/srv/root".into(),
                },
            ),
            (
                "busybox",
                ImageRef::Registry(RegistryRef {
                    registry: "docker.io".into(),
                    repository: "library/busybox".into(),
                    tag: Some("latest".into()),
                    digest: None,
                }),
            ),
            (
                "registry:5000/team/app:1.4",
                ImageRef::Registry(RegistryRef {
                    registry: "registry:5000".into(),
                    repository: "team/app".into(),
                    tag: Some("1.4".into()),
                    digest: None,
                }),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(&ImageRef::parse(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn digest_pinned() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("localhost/app@{d}")).unwrap();
        assert_eq!(
            r,
            ImageRef::Registry(RegistryRef {
                registry: "localhost".into(),
                repository: "app".into(),
                tag: None,
                digest: Some(d),
            })
        );
    }

    #[test]
    fn rejects_bad() {
        for bad in [
            "",
            "oci:relative",
            "rootfs:rel",
            "Upper/Case",
            "app@md5:12",
            "app:",
            "oci:/x:",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }
}
