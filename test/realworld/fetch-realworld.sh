#!/usr/bin/env bash
# Fetch genuinely third-party-signed PE files from Debian's archive (offline provenance: apt + dpkg-deb,
# no other network) into test/realworld/cache/ (gitignored) and describe them in cache/manifest.json.
#
#   shimx64.efi.signed  from shim-signed            signed by Microsoft (UEFI CA 2011 and UEFI CA 2023:
#                                                   two WIN_CERTIFICATE entries, each RFC 3161-timestamped)
#   grubx64.efi.signed  from grub-efi-amd64-signed  signed by Debian (Debian Secure Boot CA; no timestamp)
#
# Re-runnable: exits 0 at once when the cache already holds every file that its manifest names.
# Set REALWORLD_REFRESH=1 to fetch again.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="$here/cache"
manifest="$cache/manifest.json"

# package | path inside the package | name in the cache
files=(
  "shim-signed|/usr/lib/shim/shimx64.efi.signed|shimx64.efi.signed"
  "grub-efi-amd64-signed|/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed|grubx64.efi.signed"
)

cache_complete() {
  [[ -f "$manifest" ]] || return 1
  local entry name
  for entry in "${files[@]}"; do
    name="${entry##*|}"
    [[ -s "$cache/$name" ]] || return 1
  done
  return 0
}

if [[ "${REALWORLD_REFRESH:-0}" != 1 ]] && cache_complete; then
  echo "realworld: cache complete ($cache)"
  exit 0
fi

for tool in apt-get dpkg-deb node; do
  command -v "$tool" >/dev/null || { echo "realworld: $tool not found" >&2; exit 1; }
done

tmp="$(mktemp -d "${TMPDIR:-/tmp}/patchgate-realworld.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# apt-get download drops privileges to _apt when it can: let that user write here
chmod 0777 "$tmp"

download() {
  local pkg="$1"
  if (cd "$tmp" && apt-get download "$pkg" >/dev/null 2>"$tmp/apt.err"); then
    return 0
  fi
  if [[ "$(id -u)" == 0 ]]; then
    echo "realworld: apt-get download $pkg failed; running apt-get update and retrying" >&2
    apt-get update >/dev/null
    (cd "$tmp" && apt-get download "$pkg" >/dev/null)
  else
    cat "$tmp/apt.err" >&2
    echo "realworld: apt-get download $pkg failed and we are not root (cannot run apt-get update)" >&2
    return 1
  fi
}

mkdir -p "$cache"
rows=()
declare -A fetched=()
for entry in "${files[@]}"; do
  IFS='|' read -r pkg inpath name <<<"$entry"
  if [[ -z "${fetched[$pkg]:-}" ]]; then
    download "$pkg"
    deb="$(ls "$tmp"/"${pkg}"_*.deb)"
    mkdir -p "$tmp/x/$pkg"
    dpkg-deb -x "$deb" "$tmp/x/$pkg"
    fetched[$pkg]="$(dpkg-deb -f "$deb" Version)|$(basename "$deb")"
  fi
  src="$tmp/x/$pkg$inpath"
  [[ -f "$src" ]] || { echo "realworld: $inpath not in $pkg" >&2; exit 1; }
  cp "$src" "$cache/$name.part" && mv "$cache/$name.part" "$cache/$name"
  rows+=("$name|$pkg|${fetched[$pkg]%%|*}|${fetched[$pkg]##*|}|$inpath")
  echo "realworld: $name <- $pkg ${fetched[$pkg]%%|*} $inpath"
done

# manifest: provenance of each file (what its signatures hold is for patchgate verify to say)
{
  echo '{ "source": "Debian archive via apt-get download + dpkg-deb -x (test/realworld/fetch-realworld.sh)", "files": ['
  sep=''
  for row in "${rows[@]}"; do
    IFS='|' read -r file pkg version deb inpath <<<"$row"
    size=$(stat -c %s "$cache/$file")
    sum=$(sha256sum "$cache/$file" | cut -d' ' -f1)
    printf '%s  {"file": "%s", "package": "%s", "version": "%s", "deb": "%s", "pathInPackage": "%s", "size": %s, "sha256": "%s"}\n' \
      "$sep" "$file" "$pkg" "$version" "$deb" "$inpath" "$size" "$sum"
    sep=','
  done
  echo '] }'
} >"$manifest"

echo "realworld: wrote $manifest"
