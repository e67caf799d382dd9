#!/usr/bin/env bash
# `make image`: the ephemera OCI image, built here without a container engine
# or a registry. buildah (Debian package) assembles it `FROM scratch` out of
# the locally built release binary and exactly the files it needs: the shared
# libraries `ldd` lists, the CA certificates, and /etc/passwd and /etc/group
# entries for its non-root user. The configuration (user, entrypoint, command,
# environment, OCI labels) is read from the final stage of the Containerfile,
# so both ways of building give the same image.
#
# Then it checks the image: `ephemera version` and `ephemera crd` run inside
# it (`buildah run`), as a non-root user, and writes the OCI archive to
# target/image/ephemera.oci.tar with its size.
#
# Settings (environment): EPHEMERA_IMAGE (name, default from the chart's
# values.yaml and Cargo.toml), EPHEMERA_IMAGE_PROFILE (cargo profile, default
# release), EPHEMERA_IMAGE_PUSH (a destination such as
# docker://ghcr.io/ephemera-dev/ephemera:0.1.0: push there after the checks;
# log in first with `buildah login`).
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HACK_DIR/.." && pwd)
# shellcheck source=lib.sh
source "$HACK_DIR/lib.sh"
cd "$ROOT"

command -v buildah >/dev/null ||
	die "buildah is not installed: apt-get install buildah (.ci/run installs it when missing)"

profile=${EPHEMERA_IMAGE_PROFILE:-release}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
repository=$(sed -n 's/^  repository: *\([^ #]*\).*/\1/p' charts/ephemera/values.yaml | head -n1)
image=${EPHEMERA_IMAGE:-$repository:$version}
# The release image goes to target/image/; others (make test's check of the
# debug binary) to target/image-<profile>/, so neither overwrites the other.
out_dir=$ROOT/target/image
[[ $profile == release ]] || out_dir=$ROOT/target/image-$profile
archive=$out_dir/ephemera.oci.tar
# buildah keeps its images in a storage of its own under target/, with the
# vfs driver (no overlay mounts, no fuse) and chroot isolation (no runc, no
# user namespaces): what works as root in a plain container or VM.
storage=$out_dir/storage
bah() {
	buildah --root "$storage/root" --runroot "$storage/run" --storage-driver vfs "$@"
}

target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
case $profile in
release) binary=$target_dir/release/ephemera ;;
dev) binary=$target_dir/debug/ephemera ;;
*) binary=$target_dir/$profile/ephemera ;;
esac
run_step "building ephemera ($profile profile)" "$out_dir/build.log" \
	cargo build --locked --profile "$profile" --bin ephemera

# --- the root file system -------------------------------------------------
rootfs=$out_dir/rootfs
rm -rf "$rootfs"
mkdir -p "$rootfs"/{usr/local/bin,etc/ssl/certs,tmp}
chmod 1777 "$rootfs/tmp"
install -m 0755 "$binary" "$rootfs/usr/local/bin/ephemera"
# Every shared library the binary loads, at the path the loader looks for it
# (linux-vdso is the kernel's and has no file).
libraries=$(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
for lib in $libraries; do
	mkdir -p "$rootfs$(dirname "$lib")"
	cp -L "$lib" "$rootfs$lib"
done
cert_bundle=/etc/ssl/certs/ca-certificates.crt
[[ -f $cert_bundle ]] || die "no CA bundle at $cert_bundle: apt-get install ca-certificates"
cp -L "$cert_bundle" "$rootfs$cert_bundle"

# The final stage of the Containerfile: user, environment, entrypoint,
# command and labels.
final_stage=$(awk '/^FROM /{stage=""} {stage = stage $0 "\n"} END {printf "%s", stage}' Containerfile)
user=$(sed -n 's/^USER //p' <<<"$final_stage")
uid=${user%%:*}
gid=${user##*:}
[[ $uid =~ ^[0-9]+$ && $uid != 0 ]] || die "the Containerfile's USER must be a numeric non-root uid, not '$user'"
printf 'ephemera:x:%s:%s:ephemera:/nonexistent:/sbin/nologin\n' "$uid" "$gid" >"$rootfs/etc/passwd"
printf 'ephemera:x:%s:\n' "$gid" >"$rootfs/etc/group"
entrypoint=$(sed -n 's/^ENTRYPOINT //p' <<<"$final_stage")
cmd=$(sed -n 's/^CMD //p' <<<"$final_stage")
config_args=(--user "$user" --entrypoint "$entrypoint" --cmd "$cmd" --workingdir /)
while IFS= read -r env; do
	config_args+=(--env "$env")
done < <(sed -n 's/^ENV //p' <<<"$final_stage")
while IFS= read -r label; do
	# LABEL key="value" -> key=value
	key=${label%%=*}
	value=${label#*=}
	value=${value#\"}
	value=${value%\"}
	config_args+=(--label "$key=$value")
done < <(sed -n 's/^LABEL //p' <<<"$final_stage")
label_version=$(sed -n 's/^LABEL org.opencontainers.image.version="\(.*\)"/\1/p' <<<"$final_stage")
[[ $label_version == "$version" ]] ||
	die "the Containerfile's version label ($label_version) is not Cargo.toml's version ($version)"

# --- the image ------------------------------------------------------------
start=$(date +%s)
log "assembling $image from scratch with buildah (vfs storage under $storage)"
bah rm --all >/dev/null 2>&1 || true
container=$(bah from --name ephemera-image-build scratch)
bah copy --quiet "$container" "$rootfs/" / >/dev/null
bah config "${config_args[@]}" "$container"
bah commit --quiet --rm "$container" "$image" >/dev/null
log "  done: image $image in $(($(date +%s) - start))s"

# --- the checks, inside the image ----------------------------------------
check=$(bah from --name ephemera-image-check "$image")
trap 'bah rm "$check" >/dev/null 2>&1 || true' EXIT
in_image() { bah run --isolation chroot "$@"; }

log "checking the image: the entrypoint, \`ephemera version\` and \`ephemera crd\` inside it"
printed=$(in_image "$check" -- /usr/local/bin/ephemera version)
[[ $printed == "ephemera $version" ]] || die "\`ephemera version\` in the image printed '$printed'"
crds=$(in_image "$check" -- /usr/local/bin/ephemera crd)
for kind in CustomResourceDefinition ValidatingAdmissionPolicy; do
	grep -q "^kind: $kind\$" <<<"$crds" || die "\`ephemera crd\` in the image printed no $kind"
done
entrypoint_set=$(bah inspect --type image --format '{{.OCIv1.Config.Entrypoint}}' "$image")
[[ $entrypoint_set == '[/usr/local/bin/ephemera]' ]] ||
	die "the image's entrypoint is $entrypoint_set, not /usr/local/bin/ephemera"

# Which user the image's processes run as: `id` from this machine, with the
# libraries it needs, mounted read-only for the check only (the image has no
# shell and no tools).
probe=$(mktemp -d)
chmod 0755 "$probe" # readable by the image's user
trap 'rm -rf "$probe"; bah rm "$check" >/dev/null 2>&1 || true' EXIT
cp -L "$(command -v id)" "$probe/id"
for lib in $(ldd "$probe/id" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }'); do cp -L "$lib" "$probe/"; done
running_as=$(in_image --volume "$probe:/probe:ro" --env LD_LIBRARY_PATH=/probe "$check" -- /probe/id -u)
running_name=$(in_image --volume "$probe:/probe:ro" --env LD_LIBRARY_PATH=/probe "$check" -- /probe/id -un)
[[ $running_as == "$uid" && $running_as != 0 ]] ||
	die "processes in the image run as uid $running_as, expected the non-root uid $uid"
log "  processes in the image run as uid $running_as ($running_name), entrypoint works, CRDs print"

# --- the archive ------------------------------------------------------------
rm -f "$archive"
bah push --quiet "$image" "oci-archive:$archive:$image" >/dev/null
binary_size=$(du -k "$rootfs/usr/local/bin/ephemera" | cut -f1)
rootfs_size=$(du -sk "$rootfs" | cut -f1)
archive_size=$(du -k "$archive" | cut -f1)
log "image $image: $((rootfs_size / 1024)) MiB unpacked (binary $((binary_size / 1024)) MiB), archive $((archive_size / 1024)) MiB at ${archive#"$ROOT"/}"
log "inside: $(cd "$rootfs" && find . -type f | sed 's|^\.||' | sort | tr '\n' ' ')"

if [[ -n ${EPHEMERA_IMAGE_PUSH:-} ]]; then
	log "pushing $image to $EPHEMERA_IMAGE_PUSH"
	bah push "$image" "$EPHEMERA_IMAGE_PUSH"
fi
