#!/bin/sh
# Builds the Debian package: target/debian/lanshare_<version>_<arch>.deb.
#
#   cargo install cargo-deb --locked     # once
#   packaging/build-deb.sh
#   sudo apt install ./target/debian/lanshare_*.deb
#
# `cargo deb` packages what Cargo.toml's [package.metadata.deb] lists; the
# man page and shell completions are generated from the binary first (they
# come from the same clap definitions, so they always match it).
# Extra arguments go to `cargo deb` (e.g. --deb-version, --output).
set -eu
cd "$(dirname "$0")/.."

cargo build --release --locked
out=target/packaging
rm -rf "$out"
mkdir -p "$out/completions"
target/release/share man | gzip -9n > "$out/share.1.gz"
target/release/share completions bash > "$out/completions/share.bash"
target/release/share completions zsh > "$out/completions/_share"
target/release/share completions fish > "$out/completions/share.fish"
cargo deb --no-build --locked "$@"
