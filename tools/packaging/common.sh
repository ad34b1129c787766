# Shared by tools/install and tools/package (sourced, from the repository
# root): the version and the system dependencies, each read from its one
# place.

# The release, from lib/version.h (kVersion), e.g. "0.1.0".
onlyone_version() {
  local version
  version=$(sed -n 's/^inline constexpr char kVersion\[\] = "\([^"]*\)";$/\1/p' \
    lib/version.h)
  if [[ ! "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    echo "no MAJOR.MINOR.PATCH kVersion in lib/version.h (found '${version}')" >&2
    return 1
  fi
  echo "$version"
}

# Field N (1 RUNTIME, 2 DEV, 3 PKG, 4 CMAKE) of each line of
# tools/packaging/system_deps, one line each.
system_deps_field() {
  awk -v field="$1" '!/^#/ && NF { if (NF != 4) { print FILENAME ":" NR ": want 4 fields" > "/dev/stderr"; exit 1 } print $field }' \
    tools/packaging/system_deps
}
