#!/usr/bin/env bash
# Fetch genuinely signed Windows binaries from the npm registry (offline provenance: `npm pack` of an
# exact version, which never changes once published; no other network) into test/realworld/cache/
# (gitignored), and describe them in cache/npm-manifest.json.
#
#   tsgo.exe           @typescript/native-preview-win32-x64  Microsoft, under Code Signing PCA 2024 (2026)
#   conpty.dll         node-pty                              Microsoft, under Code Signing PCA 2011 (timestamped 2025)
#   deno-win32-x64.tgz @deno/win32-x64                       Deno Land Inc. through Azure Trusted Signing
#                                                            (kept as the tarball: deno.exe is 97 MB, tests
#                                                            stream it out of the tarball instead of storing it)
#
# Re-runnable: exits 0 at once when the cache holds every file. REALWORLD_REFRESH=1 fetches again.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="$here/cache"
manifest="$cache/npm-manifest.json"

# npm spec | path inside the tarball (empty: keep the tarball itself) | name in the cache
files=(
  "@typescript/native-preview-win32-x64@7.0.0-dev.20260707.2|package/lib/tsgo.exe|tsgo.exe"
  "node-pty@1.1.0|package/prebuilds/win32-x64/conpty/conpty.dll|conpty.dll"
  "@deno/win32-x64@2.9.5||deno-win32-x64.tgz"
)

complete() {
  [[ -f "$manifest" ]] || return 1
  local entry
  for entry in "${files[@]}"; do [[ -s "$cache/${entry##*|}" ]] || return 1; done
}
if [[ "${REALWORLD_REFRESH:-0}" != 1 ]] && complete; then
  echo "realworld-npm: cache complete ($cache)"
  exit 0
fi
for tool in npm tar sha256sum; do command -v "$tool" >/dev/null || { echo "realworld-npm: $tool not found" >&2; exit 1; }; done

tmp="$(mktemp -d "${TMPDIR:-/tmp}/patchgate-realworld-npm.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$cache"
rows=()
for entry in "${files[@]}"; do
  IFS='|' read -r spec inpath name <<<"$entry"
  dir="$tmp/$name"
  mkdir -p "$dir"
  tgz="$(cd "$dir" && npm pack --silent "$spec" | tail -n1)"
  if [[ -z "$inpath" ]]; then
    cp "$dir/$tgz" "$cache/$name.part"
  else
    tar -xzf "$dir/$tgz" -C "$dir" "$inpath"
    cp "$dir/$inpath" "$cache/$name.part"
  fi
  mv "$cache/$name.part" "$cache/$name"
  rows+=("$name|$spec|$tgz|$inpath")
  echo "realworld-npm: $name <- $spec ${inpath:-(tarball)}"
done
{
  echo '{ "source": "npm registry via npm pack (test/realworld/fetch-realworld-npm.sh)", "files": ['
  sep=''
  for row in "${rows[@]}"; do
    IFS='|' read -r file spec tgz inpath <<<"$row"
    printf '%s  {"file": "%s", "npm": "%s", "tarball": "%s", "pathInTarball": "%s", "size": %s, "sha256": "%s"}\n' \
      "$sep" "$file" "$spec" "$tgz" "$inpath" "$(stat -c %s "$cache/$file")" "$(sha256sum "$cache/$file" | cut -d' ' -f1)"
    sep=','
  done
  echo '] }'
} >"$manifest"
echo "realworld-npm: wrote $manifest"
