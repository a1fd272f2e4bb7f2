# Sourced by the CI scripts: a throwaway PostgreSQL cluster from Debian's
# postgresql packages, listening on a unix socket only (no TCP port to
# collide with), trusting local connections, data in a temporary directory.
#
# postgres_start DIR [durable]
#   initialises and starts it with its data, socket and log in DIR (with
#   `durable`, PostgreSQL's own defaults: fsync and synchronous commit on,
#   as a measurement wants; else both off, as tests want); sets
#   $postgres_url (a libpq key=value string for the "postgres" superuser
#   and database) and $postgres_data. PostgreSQL refuses to run as root:
#   as root the cluster runs as the "postgres" user. Dies (via the caller's
#   `die`) if it does not answer within 60 s.
# postgres_stop
#   stops it (fast shutdown).

postgres_bin() {
    local bin
    for bin in /usr/lib/postgresql/*/bin; do
        [ -x "$bin/pg_ctl" ] && { echo "$bin"; return 0; }
    done
    die "PostgreSQL's server binaries are missing (apt-get install postgresql)"
}

postgres_start() {
    local dir=$1 durability="-c fsync=off -c synchronous_commit=off" bin as=() i
    [ "${2:-}" = durable ] && durability=""
    bin=$(postgres_bin)
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir"
        as=(runuser -u postgres --)
    fi
    postgres_data=$dir/data
    "${as[@]}" "$bin/initdb" -D "$postgres_data" -U postgres --auth=trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 \
        || { tail -n 20 "$dir/initdb.log" >&2; die "initdb failed (log: $dir/initdb.log)"; }
    # Durability is not what the tests measure: fsync off keeps them quick.
    "${as[@]}" "$bin/pg_ctl" -D "$postgres_data" -l "$dir/postgres.log" -w -t 60 \
        -o "-c listen_addresses='' -c unix_socket_directories='$dir' $durability -c max_connections=300" \
        start >/dev/null || { tail -n 20 "$dir/postgres.log" >&2; die "PostgreSQL did not start (log: $dir/postgres.log)"; }
    postgres_url="host=$dir user=postgres dbname=postgres"
    for ((i = 0; i < 300; i++)); do
        "$bin/pg_isready" -q -h "$dir" && return 0
        sleep 0.2
    done
    die "PostgreSQL did not answer within 60 s (log: $dir/postgres.log)"
}

postgres_stop() {
    local bin as=()
    bin=$(postgres_bin)
    [ "$(id -u)" -eq 0 ] && as=(runuser -u postgres --)
    "${as[@]}" "$bin/pg_ctl" -D "$postgres_data" -m fast -w stop >/dev/null 2>&1 || true
}
