# Sourced by scripts/test: builds MinIO once (cached in $(go env GOPATH)/bin),
# starts it on a free loopback port with a temp dir and random root
# credentials, and exports where the tests find it: ERRAND_TEST_S3_ENDPOINT,
# ERRAND_TEST_S3_BUCKET (created by the tests when missing),
# AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. Stopped when scripts/test
# exits.

errand_minio_setup() {
	local version=v0.0.0-20260212201848-7aac2a2c5b7c
	local bin
	bin="$(go env GOPATH)/bin/minio"
	if [ -n "${ERRAND_TEST_S3_ENDPOINT:-}" ]; then
		echo "using ERRAND_TEST_S3_ENDPOINT from the environment"
		return 0
	fi
	if [ ! -x "$bin" ]; then
		echo "building MinIO (about two minutes, once)"
		go install "github.com/minio/minio@$version"
	fi
	local dir port console pid i
	dir=$(mktemp -d /tmp/errand-minio.XXXXXX)
	free_port() {
		python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
			echo $((20000 + RANDOM % 20000))
	}
	port=$(free_port)
	console=$(free_port)
	export AWS_ACCESS_KEY_ID="errand$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
	export AWS_SECRET_ACCESS_KEY="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
	MINIO_ROOT_USER=$AWS_ACCESS_KEY_ID MINIO_ROOT_PASSWORD=$AWS_SECRET_ACCESS_KEY \
		MINIO_BROWSER=off MINIO_UPDATE=off \
		"$bin" server --quiet --address "127.0.0.1:$port" --console-address "127.0.0.1:$console" "$dir/data" \
		>"$dir/minio.log" 2>&1 &
	pid=$!
	ERRAND_CLEANUP+=("kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf $dir")
	for i in $(seq 1 100); do
		if curl -fsS "http://127.0.0.1:$port/minio/health/ready" >/dev/null 2>&1; then
			break
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			cat "$dir/minio.log" >&2
			return 1
		fi
		sleep 0.1
	done
	export ERRAND_TEST_S3_ENDPOINT="127.0.0.1:$port"
	export ERRAND_TEST_S3_BUCKET=errand-test
	echo "MinIO on 127.0.0.1:$port (data in $dir)"
}
errand_minio_setup
