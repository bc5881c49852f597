#!/bin/sh
# The quick start, as root on Debian 12, from any directory:
#   sh PATH/TO/berth/examples/quickstart.sh
# Installs what is missing (the Debian packages of packaging/debian-packages, which the tests
# need too, and the Rust toolchain through rustup), builds berth and installs it as
# /usr/local/bin/berth, builds a busybox image from Debian's busybox-static, runs one container
# in the foreground, then starts the supervisor on a demo spec dir and says where to look.
# Every step that fails stops the script with its error. Run again, it restarts the demo.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
demo=/var/lib/berth-demo
say() { printf '\n== %s\n' "$*"; }

[ "$(id -u)" = 0 ] || { echo "quickstart: run it as root" >&2; exit 1; }

say "Debian packages"
missing=""
for p in $(grep -v '^#' packaging/debian-packages); do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  # shellcheck disable=SC2086
  apt-get install -y --no-install-recommends $missing
else
  echo "all installed"
fi

say "Rust toolchain"
if ! command -v cargo >/dev/null 2>&1; then
  if [ ! -x "$HOME/.cargo/bin/cargo" ]; then
    rustup_init=$(mktemp)
    curl --proto '=https' --tlsv1.2 -fsS https://sh.rustup.rs -o "$rustup_init"
    sh "$rustup_init" -y --profile minimal
    rm -f "$rustup_init"
  fi
  # On PATH for this script and for the shell that runs the tests next.
  for tool in cargo rustc rustup; do ln -sf "$HOME/.cargo/bin/$tool" /usr/local/bin/$tool; done
fi
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
echo "$(rustc --version) (berth needs $msrv or later)"

say "Building berth"
cargo build --release --locked
install -m 0755 target/release/berth /usr/local/bin/berth

say "A demo dir: $demo"
if berth ps >/dev/null 2>&1; then
  echo "stopping the supervisor that runs now"
  berth poweroff
  i=0; while [ -S /run/berth/berth.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
fi
examples/busybox-image.sh "$demo/busybox"
rm -rf "$demo/specs" "$demo/app"
mkdir -p "$demo/specs" "$demo/www"
cp -r examples/app "$demo/app"
cp examples/specs/counter.toml examples/specs/web.toml examples/specs/site.toml \
   examples/specs/checked.toml examples/specs/front.toml examples/specs/app.toml "$demo/specs/"
echo "<h1>served by berth from $demo/www</h1>" > "$demo/www/index.html"
berth validate "$demo/specs"

say "One container in the foreground: berth run examples/specs/hello.toml"
berth run examples/specs/hello.toml

say "The supervisor on $demo/specs"
setsid berth supervise --specs "$demo/specs" > "$demo/daemon.log" 2>&1 < /dev/null &
i=0
until berth ps 2>/dev/null | grep -q 'counter.*running' || [ $i -ge 300 ]; do sleep 0.1; i=$((i + 1)); done
sleep 2
berth ps
echo
echo "web  (host network):   $(curl -fsS http://127.0.0.1:8080/ || echo 'not answering yet')"
echo "site (bridge, :8081):  $(curl -fsS http://127.0.0.1:8081/ || echo 'not answering yet')"
echo "app  (berth build):    $(curl -fsS http://127.0.0.1:8082/ || echo 'not answering yet')"

cat <<INFO

Where to look:
  berth ps                     what runs (state, health, pid, restarts, IP, ports)
  berth logs -f counter        a container's output (files under /var/lib/berth/logs/counter)
  berth events                 every change as JSON lines; status files in /run/berth/status
  $demo/daemon.log   the supervisor's own log
  $demo/specs        drop, edit or delete spec files here; the supervisor follows
  $demo/app          the context app.toml builds; edit index.html and it is rebuilt
Stop everything (containers, the supervisor, its bridge and cgroups):
  berth poweroff
Run the tests (as root, from $repo):
  cargo test --locked --no-fail-fast
INFO
