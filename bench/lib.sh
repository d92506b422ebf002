# Shared by bench/instructions.sh and bench/rounds.sh: a throwaway PostgreSQL cluster, and the
# shardgate and pgbouncer configurations both scripts put in front of it (pool of 10, user
# bench/bench). Source it after setting `tag` (the work directory's name); it sets `bindir`,
# `work`, `as_pg`, `pgport` and a cleanup trap, and starts the cluster.

bindir=${SHARDGATE_PG_BINDIR:-}
if [ -z "$bindir" ]; then
    if command -v initdb >/dev/null; then bindir=$(dirname "$(command -v initdb)")
    elif command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then bindir=$(pg_config --bindir)
    else bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1); fi
fi
[ -x "$bindir/initdb" ] || { echo "PostgreSQL server binaries not found: set SHARDGATE_PG_BINDIR" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/shardgate-$tag-XXXXXX")
chmod 755 "$work"
as_pg=()
if [ "$(id -u)" = 0 ]; then chown postgres "$work"; as_pg=(runuser -u postgres --); fi
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pgport=$(port)
cleanup() {
    pkill -f "$work/" 2>/dev/null || true
    "${as_pg[@]}" "$bindir/pg_ctl" -D "$work/data" stop -m immediate >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

"${as_pg[@]}" "$bindir/initdb" -D "$work/data" -A trust -U postgres >/dev/null
"${as_pg[@]}" "$bindir/pg_ctl" -D "$work/data" -l "$work/pg.log" -w \
    -o "-p $pgport -k $work -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
psql -q -h "$work" -p "$pgport" -U postgres \
    -c "CREATE ROLE bench LOGIN PASSWORD 'bench'" -c "CREATE DATABASE bench OWNER bench"
export PGPASSWORD=bench

# shardgate_config FILE PORT: one shard on the cluster, transaction pooling (pool of $POOL_SIZE,
# default 10), SCRAM login.
shardgate_config() {
    cat >"$1" <<EOT
listen: 127.0.0.1:$2
admin: { listen: "127.0.0.1:0" }
users:
  - { name: bench, password: bench }
pool: { mode: transaction, size: ${POOL_SIZE:-10} }
databases:
  bench:
    shards:
      s0: { primary: "postgres://bench:bench@127.0.0.1:$pgport/bench" }
EOT
}

# pgbouncer_config PORT: $work/pgbouncer.ini (transaction pooling), readable by its owner.
pgbouncer_config() {
    echo '"bench" "bench"' >"$work/users.txt"
    cat >"$work/pgbouncer.ini" <<EOT
[databases]
bench = host=127.0.0.1 port=$pgport dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $1
unix_socket_dir =
auth_type = plain
auth_file = $work/users.txt
pool_mode = transaction
default_pool_size = 10
max_client_conn = 500
logfile = $work/pgbouncer.log
EOT
    if [ "$(id -u)" = 0 ]; then chown postgres "$work"/users.txt "$work"/pgbouncer.ini; fi
}
