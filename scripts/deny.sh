#!/usr/bin/env bash
# cargo deny for `make test`: licences, bans and sources always (they need
# nothing but Cargo.lock and the crate index), then advisories against the
# RustSec database.
#
# The database is a Git repository (db-urls in deny.toml). Where it cannot be
# fetched, advisories are checked against a copy already on disk (a previous
# fetch, or a checkout named by KVIP_ADVISORY_DB), and without one they are
# NOT checked: this script says so in a banner and, with
# KVIP_REQUIRE_ADVISORIES=1, fails.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deny >/dev/null 2>&1 || {
  echo "cargo-deny is missing: run scripts/install-deps.sh" >&2
  exit 1
}

cargo deny --locked check --hide-inclusion-graph licenses bans sources

# The directory cargo-deny 0.20 gives the database of deny.toml's db-urls
# under its db-path (named from the URL's hash).
db_name=advisory-db-3157b0e258782691
default_db="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/$db_name"

not_checked() {
  echo
  echo "=================================================================="
  echo "ADVISORIES NOT CHECKED: $1"
  echo "The RustSec advisory database could not be had; no crate in"
  echo "Cargo.lock was checked for vulnerabilities, unsoundness or being"
  echo "unmaintained. Check them where the database is reachable"
  echo "(cargo deny check advisories), or point KVIP_ADVISORY_DB at a"
  echo "checkout of it."
  echo "=================================================================="
  if [ "${KVIP_REQUIRE_ADVISORIES:-0}" = 1 ]; then
    exit 1
  fi
  exit 0
}

# A checkout handed over by path: cargo-deny reads it from a db-path of our own.
if [ -n "${KVIP_ADVISORY_DB:-}" ]; then
  [ -d "$KVIP_ADVISORY_DB/crates" ] || not_checked "KVIP_ADVISORY_DB=$KVIP_ADVISORY_DB holds no advisory database (no crates/ folder)"
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  ln -s "$(cd "$KVIP_ADVISORY_DB" && pwd)" "$scratch/$db_name"
  sed "s|^db-urls = .*|&\ndb-path = \"$scratch\"|" deny.toml >"$scratch/deny.toml"
  echo "advisories: checking against the database in $KVIP_ADVISORY_DB"
  cargo deny --frozen --config "$scratch/deny.toml" check advisories
  exit 0
fi

if fetch_log=$(cargo deny --locked fetch db 2>&1) && [ -d "$default_db/crates" ]; then
  cargo deny --frozen check advisories
  exit 0
fi
reason=$(printf '%s\n' "$fetch_log" | grep -E 'fatal:|error|ERROR' | tail -n 1)
if [ -d "$default_db/crates" ]; then
  echo "warning: the RustSec database could not be refreshed (${reason:-unknown error});"
  echo "checking advisories against the copy in $default_db,"
  echo "last changed $(git -C "$default_db" log -1 --format=%cs 2>/dev/null || echo '(unknown)')"
  cargo deny --frozen check advisories
  exit 0
fi
not_checked "${reason:-cargo deny fetch db failed}"
