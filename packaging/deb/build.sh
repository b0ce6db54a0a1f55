#!/usr/bin/env bash
# Builds the Debian package of pbxgate with dpkg-deb (nothing else to install):
#
#   packaging/deb/build.sh [--binary PATH] [--out DIR] [--fast]
#
# Without --binary it builds the release binary first (`cargo build --release --locked
# --no-default-features`: no demo, no simulators in the package). --out defaults to
# target/deb; --fast compresses with gzip -1 instead of xz (CI, debug binaries).
# Prints the path of the .deb on the last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

usage() { sed -n '2,9s/^# \{0,1\}//p' "$0"; }
binary='' out="$root/target/deb" compress=(-Zxz -z6)
while [ $# -gt 0 ]; do
  case $1 in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --fast) compress=(-Zgzip -z1); shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

# The commit the binary reports (`pbxgate --version`, pbxgate_build_info); build.rs reads it.
if [ -z "${PBXGATE_BUILD_COMMIT:-}" ]; then
  PBXGATE_BUILD_COMMIT=$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
  if [ -n "$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    PBXGATE_BUILD_COMMIT="$PBXGATE_BUILD_COMMIT-dirty"
  fi
fi
export PBXGATE_BUILD_COMMIT

if [ -z "$binary" ]; then
  (cd "$root" && cargo build --release --locked --no-default-features --bin pbxgate)
  binary="${CARGO_TARGET_DIR:-$root/target}/release/pbxgate"
fi
[ -x "$binary" ] || { echo "build.sh: $binary is not an executable" >&2; exit 1; }

# The package version is the crate's ([package] version in Cargo.toml).
version=$(awk -F'"' '/^\[/ { pkg = ($0 == "[package]") } pkg && /^version *=/ { print $2; exit }' \
  "$root/Cargo.toml")
[ -n "$version" ] || { echo "build.sh: no [package] version in Cargo.toml" >&2; exit 1; }
arch=$(dpkg --print-architecture)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
umask 022
chmod 0755 "$stage" # the archive's ./ entry

install -d -m 0755 "$stage/usr/bin" "$stage/lib/systemd/system" \
  "$stage/usr/share/doc/pbxgate/examples" "$stage/DEBIAN"
# DWARF out (the release profile keeps line tables; a debug build is mostly DWARF), symbols
# kept so that a panic's backtrace still names functions.
if command -v objcopy >/dev/null; then
  objcopy --strip-debug "$binary" "$stage/usr/bin/pbxgate"
else
  cp "$binary" "$stage/usr/bin/pbxgate"
fi
chmod 0755 "$stage/usr/bin/pbxgate"
install -m 0644 "$root/packaging/systemd/pbxgate.service" "$stage/lib/systemd/system/"
# The config holds secrets: 0640 here, group pbxgate from postinst (the group exists then).
install -d -m 0750 "$stage/etc/pbxgate"
install -m 0640 "$here/pbxgate.toml" "$stage/etc/pbxgate/pbxgate.toml"

doc="$stage/usr/share/doc/pbxgate"
install -m 0644 "$here/copyright" "$doc/copyright"
for f in README.md CHANGELOG.md; do
  if [ -f "$root/$f" ]; then gzip -9n <"$root/$f" >"$doc/$f.gz"; chmod 0644 "$doc/$f.gz"; fi
done
install -m 0644 "$root/config/pbxgate.example.toml" "$doc/examples/pbxgate.example.toml"

# Debian's libc6/libgcc-s1 versions from what the binary links against.
glibc=$(objdump -T "$binary" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1 || true)
depends="libc6${glibc:+ (>= $glibc)}, adduser"
if objdump -p "$binary" 2>/dev/null | grep -q 'NEEDED *libgcc_s'; then
  depends="libc6${glibc:+ (>= $glibc)}, libgcc-s1, adduser"
fi

installed_size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" \
  -e "s/@MAINTAINER@/${DEB_MAINTAINER:-pbxgate developers <pbxgate@localhost>}/" \
  -e "s/@INSTALLED_SIZE@/$installed_size/" -e "s/@DEPENDS@/$depends/" \
  "$here/control.in" >"$stage/DEBIAN/control"
echo /etc/pbxgate/pbxgate.toml >"$stage/DEBIAN/conffiles"
for s in postinst prerm postrm; do install -m 0755 "$here/$s" "$stage/DEBIAN/$s"; done
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
  xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/conffiles" "$stage/DEBIAN/md5sums"

mkdir -p "$out"
deb="$out/pbxgate_${version}_${arch}.deb"
dpkg-deb --root-owner-group "${compress[@]}" --build "$stage" "$deb" >/dev/null
echo "built $deb (commit $PBXGATE_BUILD_COMMIT)" >&2
echo "$deb"
