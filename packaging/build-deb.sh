#!/bin/sh
# Builds the Debian package: target/debian/lanshare_<version>-1_<arch>.deb.
#
#   cargo install cargo-deb --locked     # once
#   packaging/build-deb.sh
#   sudo apt install ./target/debian/lanshare_*.deb
#
# `cargo deb` packages what Cargo.toml's [package.metadata.deb] lists; the
# man page and shell completions are generated from the binary first (they
# come from the same clap definitions, so they always match it).
# Extra arguments go to `cargo deb` (e.g. --deb-version, --output).
# LANSHARE_DEB_PROFILE=dev packages the debug build instead (tests only:
# no release build needed).
set -eu
cd "$(dirname "$0")/.."

profile=${LANSHARE_DEB_PROFILE:-release}
case "$profile" in
release) bin=target/release/share ;;
dev) bin=target/debug/share ;;
*) bin=target/$profile/share ;;
esac

cargo build --profile "$profile" --locked
out=target/packaging
rm -rf "$out"
mkdir -p "$out/completions"
"$bin" man | gzip -9n > "$out/share.1.gz"
"$bin" completions bash > "$out/completions/share.bash"
"$bin" completions zsh > "$out/completions/_share"
"$bin" completions fish > "$out/completions/share.fish"
cargo deb --no-build --locked --profile "$profile" --strip "$@"
