#!/usr/bin/env bash
# build-test-image.sh OUT.tar [REF]
#
# Builds a small, runnable OCI image layout tarball from Debian's
# busybox-static, without Docker: one gzip layer holding bin/busybox, its
# applets as symlinks, /etc/passwd, /etc/group, /root and /tmp; Cmd ["sh"].
# REF (default busybox:latest) is written to index.json as both
# io.containerd.image.name and org.opencontainers.image.ref.name.
# Load it with `skiff image import OUT.tar`. Needs bash, tar, gzip, sha256sum.
set -euo pipefail

out=${1:?usage: build-test-image.sh OUT.tar [REF]}
ref=${2:-busybox:latest}
bb=/bin/busybox

if [[ ! -x $bb ]]; then
	if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
		apt-get install -y -qq busybox-static >/dev/null
	else
		echo "build-test-image.sh: $bb missing; apt-get install -y busybox-static" >&2
		exit 1
	fi
fi
case $(uname -m) in
x86_64) arch=amd64 ;;
aarch64) arch=arm64 ;;
*) arch=$(uname -m) ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
lay=$work/layout
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp} "$lay/blobs/sha256"
chmod 1777 "$root/tmp"
chmod 700 "$root/root"
cp "$bb" "$root/bin/busybox"
chmod 755 "$root/bin/busybox"
for a in $("$bb" --list-full); do
	[[ $a == */* && $a != bin/busybox ]] || continue
	ln -sf /bin/busybox "$root/$a"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"

# blob FILE: moves FILE into the layout as a blob; prints "DIGEST SIZE".
blob() {
	local sum size
	sum=$(sha256sum "$1" | cut -d' ' -f1)
	size=$(stat -c %s "$1")
	mv "$1" "$lay/blobs/sha256/$sum"
	echo "sha256:$sum $size"
}

# Reproducible layer: sorted names, fixed owner and mtime, no gzip timestamp.
tar -C "$root" --sort=name --owner=0 --group=0 --numeric-owner \
	--mtime='2024-01-01 00:00:00Z' --format=pax --pax-option=delete=atime,delete=ctime \
	-cf "$work/layer.tar" .
diffid=sha256:$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -9 "$work/layer.tar"
read -r ldig lsize < <(blob "$work/layer.tar.gz")

printf '{"created":"2024-01-01T00:00:00Z","architecture":"%s","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["%s"]},"history":[{"created":"2024-01-01T00:00:00Z","created_by":"scripts/build-test-image.sh"}]}' \
	"$arch" "$diffid" >"$work/config.json"
read -r cdig csize < <(blob "$work/config.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%d}]}' \
	"$cdig" "$csize" "$ldig" "$lsize" >"$work/manifest.json"
read -r mdig msize < <(blob "$work/manifest.json")

# JSON-escape the ref (refs have no quotes or backslashes, but be safe).
jref=${ref//\\/\\\\}
jref=${jref//\"/\\\"}
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%d,"platform":{"os":"linux","architecture":"%s"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
	"$mdig" "$msize" "$arch" "$jref" "$jref" >"$lay/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$lay/oci-layout"

tar -C "$lay" --sort=name --owner=0 --group=0 --numeric-owner --mtime='2024-01-01 00:00:00Z' \
	-cf "$work/out.tar" oci-layout index.json blobs
mv "$work/out.tar" "$out"
echo "$out: $ref $mdig"
