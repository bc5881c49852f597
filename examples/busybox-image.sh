#!/bin/sh
# Builds a small OCI image layout from Debian's busybox-static:
#   examples/busybox-image.sh OUT_DIR [TAG]
# The layout gets one gzip layer (/bin/busybox, a link per applet, /etc/passwd and /etc/group
# with root, app (1000) and nobody) and is tagged TAG (default: latest). Use it in a spec as
#   image = "oci:OUT_DIR:TAG"
set -eu
out=${1:?usage: $0 OUT_DIR [TAG]}
tag=${2:-latest}
busybox=${BUSYBOX:-/bin/busybox}
[ -x "$busybox" ] || { echo "$0: $busybox not found (apt-get install busybox-static)" >&2; exit 1; }
case "$(uname -m)" in
  x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; armv7l) arch=arm ;; *) arch=$(uname -m) ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root/bin" "$root/etc" "$root/root" "$root/home/app" "$root/tmp" "$root/var"
chmod 1777 "$root/tmp"
chmod 700 "$root/root"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
cat > "$root/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat > "$root/etc/group" <<'G'
root:x:0:
wheel:x:10:app
app:x:1000:
nogroup:x:65534:
G
# Owners as in the image: root everywhere, app's home its own (needs root to build).
chown -R 0:0 "$root" && chown 1000:1000 "$root/home/app" || echo "$0: not root: every file will be owned by you" >&2

mkdir -p "$out/blobs/sha256"
tar --sort=name --numeric-owner --mtime=@0 -C "$root" -cf "$work/layer.tar" .
diff_id=$(sha256sum < "$work/layer.tar" | cut -d' ' -f1)
gzip -n -9 < "$work/layer.tar" > "$work/layer.tar.gz"
layer=$(sha256sum < "$work/layer.tar.gz" | cut -d' ' -f1)
layer_size=$(stat -c %s "$work/layer.tar.gz")
mv "$work/layer.tar.gz" "$out/blobs/sha256/$layer"

put() { # stores stdin as a blob, prints "digest size"
  cat > "$work/blob"
  d=$(sha256sum < "$work/blob" | cut -d' ' -f1)
  s=$(stat -c %s "$work/blob")
  mv "$work/blob" "$out/blobs/sha256/$d"
  echo "$d $s"
}
set -- $(printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"busybox-image.sh"}]}' "$arch" "$diff_id" | put)
config=$1 config_size=$2
set -- $(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' "$config" "$config_size" "$layer" "$layer_size" | put)
manifest=$1 manifest_size=$2
printf '{"imageLayoutVersion":"1.0.0"}' > "$out/oci-layout"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' "$manifest" "$manifest_size" "$tag" > "$out/index.json"
echo "oci:$(cd "$out" && pwd):$tag"
