//! What more than one benchmark needs.

use std::path::Path;
use std::process::Command;

/// The busybox OCI layout at `image_dir` (one layer, from examples/busybox-image.sh) unpacked
/// into the plain dir `rootfs`, once: for the runtimes' bundles and `--rootfs` imports.
pub fn unpack_rootfs(image_dir: &Path, rootfs: &Path) {
    if rootfs.exists() {
        return;
    }
    std::fs::create_dir_all(rootfs).unwrap();
    let layer = std::fs::read_dir(image_dir.join("blobs/sha256"))
        .unwrap()
        .flatten()
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .path();
    assert!(Command::new("tar")
        .arg("xzf")
        .arg(&layer)
        .arg("-C")
        .arg(rootfs)
        .status()
        .unwrap()
        .success());
}
