#!/usr/bin/env bash
# Proxy CPU per query, and the proxy's syscalls and context switches per query, in interleaved
# rounds: a quicker and finer look than `cargo bench --bench proxy` (see bench/README.md, "rounds.sh").
#
#   bench/rounds.sh [NAME=BINARY[ ARGS…] ...]
#
# Starts one throwaway PostgreSQL cluster (pgbench -i -s 10), pgbouncer (transaction mode, pool
# of 10) if it is installed, and each shardgate binary (one shard, pool of 10, SCRAM login), then
# runs ROUNDS rounds; in each, every target gets `pgbench -S -c $CLIENTS -j 2 -M $MODE -T $SECS`,
# in an order that rotates per round. Per target and round it prints TPS, the proxy's user and
# system CPU µs per query (from /proc/<pid>/stat), and with PERF=1 its syscalls per query
# (`perf stat` tracepoints: epoll_wait, reads, writes) and context switches per query.
# Default target: shardgate=target/release/shardgate. Arguments after the binary are passed to
# it (e.g. "one=target/release/shardgate --threads 1").
set -euo pipefail

ROUNDS=${ROUNDS:-4}
SECS=${SECS:-8}
CLIENTS=${CLIENTS:-32}
MODE=${MODE:-simple}
PERF=${PERF:-0}
here=$(cd "$(dirname "$0")/.." && pwd)
specs=("$@")
[ ${#specs[@]} -gt 0 ] || specs=("shardgate=$here/target/release/shardgate")

tag=rounds
# shellcheck source=bench/lib.sh
. "$here/bench/lib.sh"
pgbench -q -i -s 10 -h 127.0.0.1 -p "$pgport" -U bench bench >/dev/null 2>&1

names=(direct)
ports=("$pgport")
pids=("")
k=0
for spec in "${specs[@]}"; do
    k=$((k + 1))
    name=${spec%%=*}
    read -r -a cmd <<<"${spec#*=}"
    p=$(port)
    shardgate_config "$work/sg$k.yaml" "$p"
    "${cmd[0]}" --config "$work/sg$k.yaml" --log-level warn "${cmd[@]:1}" >"$work/sg$k.log" 2>&1 &
    names+=("$name")
    ports+=("$p")
    pids+=("$!")
done
if command -v pgbouncer >/dev/null; then
    p=$(port)
    pgbouncer_config "$p"
    "${as_pg[@]}" pgbouncer "$work/pgbouncer.ini" >"$work/pgbouncer.out" 2>&1 &
    sleep 0.5
    names+=(pgbouncer)
    ports+=("$p")
    pids+=("$(pgrep -n -f "$work/pgbouncer.ini")")
fi
for i in "${!names[@]}"; do
    for _ in $(seq 60); do
        psql -h 127.0.0.1 -p "${ports[$i]}" -U bench -c "select 1" bench >/dev/null 2>&1 && break
        sleep 0.5
    done
    pgbench -S -n -c "$CLIENTS" -j 2 -T 2 -M "$MODE" -h 127.0.0.1 -p "${ports[$i]}" -U bench bench >/dev/null 2>&1 || true
done

ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
events=syscalls:sys_enter_epoll_wait,syscalls:sys_enter_read,syscalls:sys_enter_recvfrom,syscalls:sys_enter_write,syscalls:sys_enter_sendto,context-switches
echo "# $(date -u '+%F %T') UTC, $(git -C "$here" rev-parse --short HEAD 2>/dev/null), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# pgbench -S -M $MODE -c $CLIENTS -j 2 -T $SECS, pool 10, $ROUNDS rounds; CPU in µs per query"
if [ "$PERF" = 1 ]; then
    echo "| round | target | TPS | user | sys | total | epoll_wait | reads | writes | switches |"
    echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
else
    echo "| round | target | TPS | user | sys | total |"
    echo "|---:|---|---:|---:|---:|---:|"
fi
n=${#names[@]}
for r in $(seq "$ROUNDS"); do
    for j in $(seq 0 $((n - 1))); do
        i=$(((j + r) % n))
        pid=${pids[$i]}
        [ -n "$pid" ] && read -r u0 s0 < <(ticks "$pid")
        if [ "$PERF" = 1 ] && [ -n "$pid" ]; then
            perf stat -x, -e "$events" -p "$pid" -o "$work/perf.txt" &
            perf_pid=$!
        fi
        out=$(pgbench -S -n -c "$CLIENTS" -j 2 -T "$SECS" -M "$MODE" -h 127.0.0.1 -p "${ports[$i]}" -U bench bench 2>&1 || true)
        [ -n "${perf_pid:-}" ] && { kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true; }
        q=$(echo "$out" | awk '/actually processed/{split($NF, a, "/"); print a[1]}')
        tps=$(echo "$out" | awk '/^tps/{printf "%d", $3}')
        if [ -z "$q" ] || [ "$q" = 0 ]; then
            echo "| $r | ${names[$i]} | failed: $(echo "$out" | grep -m1 -i error) |"
            continue
        fi
        if [ -z "$pid" ]; then
            echo "| $r | ${names[$i]} | $tps | | | |$([ "$PERF" = 1 ] && echo ' | | | |')"
            continue
        fi
        read -r u1 s1 < <(ticks "$pid")
        cpu=$(awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v q="$q" -v hz="$hz" \
            'BEGIN { printf "%.2f | %.2f | %.2f", u * 1e6 / hz / q, s * 1e6 / hz / q, (u + s) * 1e6 / hz / q }')
        row="| $r | ${names[$i]} | $tps | $cpu |"
        if [ -n "${perf_pid:-}" ]; then
            per=$(awk -F, -v q="$q" '
                /epoll_wait/ {e += $1} /sys_enter_read|recvfrom/ {rd += $1}
                /sys_enter_write|sendto/ {wr += $1} /context-switches/ {cs += $1}
                END { printf " %.2f | %.2f | %.2f | %.2f |", e / q, rd / q, wr / q, cs / q }' "$work/perf.txt")
            row+=$per
            perf_pid=
        fi
        echo "$row"
    done
done
