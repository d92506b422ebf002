#!/usr/bin/env bash
# Instructions per query of a proxy, counted by callgrind: a figure that does not move with the
# load on a shared machine, unlike CPU time (see bench/README.md, "Instructions per query").
#
#   bench/instructions.sh [SHARDGATE_BINARY ...]
#
# Each binary (default: target/release/shardgate) runs under callgrind in front of a throwaway
# PostgreSQL cluster, one shard, pool of 10, SCRAM login; then pgbouncer (transaction mode,
# pool of 10) if it is installed. For each pgbench mode the counters are zeroed after a warm-up,
# `pgbench -S -c $CLIENTS -t $TX` runs, and the instructions the proxy executed are divided by
# the queries. Needs valgrind (apt-get install valgrind), pgbench and PostgreSQL's server
# binaries (PATH, pg_config --bindir, /usr/lib/postgresql/*/bin or SHARDGATE_PG_BINDIR).
# PROFILES=DIR keeps each profile as DIR/<proxy>-<mode>.out (proxy: 1, 2, … in argument order, or
# pgbouncer), to read with `callgrind_annotate --inclusive=yes`.
set -euo pipefail

CLIENTS=${CLIENTS:-32}
TX=${TX:-1000}
MODES=${MODES:-simple extended prepared}
here=$(cd "$(dirname "$0")/.." && pwd)
binaries=("$@")
[ ${#binaries[@]} -gt 0 ] || binaries=("$here/target/release/shardgate")

command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 2; }
command -v callgrind_control >/dev/null || { echo "callgrind_control is missing (valgrind's package)" >&2; exit 2; }
for b in "${binaries[@]}"; do [ -x "$b" ] || { echo "$b: not an executable (cargo build --release first)" >&2; exit 2; }; done

tag=instructions
# shellcheck source=bench/lib.sh
. "$here/bench/lib.sh"
pgbench -q -i -s 1 -h 127.0.0.1 -p "$pgport" -U bench bench >/dev/null 2>&1

# measure NAME PORT PID_PATTERN TAG [USER]: one line per mode; callgrind is controlled as USER (the
# proxy's owner) when given.
measure() {
    local name=$1 p=$2 pattern=$3 tag=$4 mode out n before pid ctl=()
    [ -n "${5:-}" ] && ctl=(runuser -u "$5" --)
    for i in $(seq 120); do psql -h 127.0.0.1 -p "$p" -U bench -c "select 1" bench >/dev/null 2>&1 && break; sleep 0.5; done
    for mode in $MODES; do
        pgbench -S -n -c "$CLIENTS" -j 2 -t 20 -M "$mode" -h 127.0.0.1 -p "$p" -U bench bench >/dev/null 2>&1
        pid=$(pgrep -n -f "$pattern")
        "${ctl[@]}" callgrind_control -z "$pid" >/dev/null 2>&1
        out=$(pgbench -S -n -c "$CLIENTS" -j 2 -t "$TX" -M "$mode" -h 127.0.0.1 -p "$p" -U bench bench 2>&1 || true)
        n=$(echo "$out" | awk '/actually processed/{split($NF, a, "/"); print a[1]}')
        before=$(ls "$work"/cg.* 2>/dev/null | wc -l)
        "${ctl[@]}" callgrind_control -d "$pid" >/dev/null 2>&1
        while [ "$(ls "$work"/cg.* 2>/dev/null | wc -l)" = "$before" ]; do sleep 0.2; done
        sleep 0.5
        local ir
        ir=$(callgrind_annotate "$(ls -t "$work"/cg.* | head -1)" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",", "", $1); print $1}')
        [ -n "${PROFILES:-}" ] && mkdir -p "$PROFILES" && cp "$(ls -t "$work"/cg.* | head -1)" "$PROFILES/$tag-$mode.out"
        if [ -z "$n" ] || [ "$n" = 0 ]; then
            printf '| %s | %s | failed: %s |\n' "$name" "$mode" "$(echo "$out" | grep -m1 -i error)"
        else
            printf '| %s | %s | %d |\n' "$name" "$mode" $((ir / n))
        fi
    done
}

echo "# Instructions per query (callgrind), pgbench -S -c $CLIENTS -t $TX, pool 10"
echo
echo "| proxy | mode | instructions per query |"
echo "|---|---|---:|"
k=0
for bin in "${binaries[@]}"; do
    k=$((k + 1))
    sgport=$(port)
    shardgate_config "$work/sg$k.yaml" "$sgport"
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p" "$bin" --config "$work/sg$k.yaml" \
        --log-level warn >"$work/sg$k.log" 2>&1 &
    measure "shardgate ($bin)" "$sgport" "$work/sg$k.yaml" "$k"
    pkill -f "$work/sg$k.yaml" || true
    wait 2>/dev/null || true
done

if command -v pgbouncer >/dev/null; then
    pbport=$(port)
    pgbouncer_config "$pbport"
    "${as_pg[@]}" valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p" pgbouncer "$work/pgbouncer.ini" \
        >"$work/pgbouncer.out" 2>&1 &
    owner=""
    [ "$(id -u)" = 0 ] && owner=postgres
    # pgbouncer cannot run -M prepared in transaction mode (named statements stay on one server).
    MODES=${MODES/prepared/} measure "pgbouncer" "$pbport" "$work/pgbouncer.ini" pgbouncer $owner
else
    echo "(pgbouncer not installed: apt-get install pgbouncer)"
fi
