#!/bin/sh
# Regenerates the bpf2go output into a scratch copy of this package and fails
# when it differs from the committed files, so stale objects cannot be
# committed. Needs clang, llvm-strip, libbpf-dev and linux-libc-dev (Debian).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

mkdir -p "$tmp/ebpf"
cp "$root/go.mod" "$root/go.sum" "$tmp/"
cp "$here"/*.c "$here/gen.go" "$tmp/ebpf/"

(cd "$tmp/ebpf" && go generate ./gen.go)

status=0
for f in "$tmp"/ebpf/redirect_bpf*; do
	name=$(basename "$f")
	if ! cmp -s "$f" "$here/$name"; then
		echo "ebpf: $name is stale; run 'go generate ./ebpf/...' and commit the result" >&2
		status=1
	fi
done
for f in "$here"/redirect_bpf*; do
	name=$(basename "$f")
	if [ ! -e "$tmp/ebpf/$name" ]; then
		echo "ebpf: $name is committed but no longer generated" >&2
		status=1
	fi
done
exit $status
