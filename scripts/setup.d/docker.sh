# Docker for tests/docker and the docker end-to-end tests: Debian's
# docker.io when dockerd is missing, a daemon started in the background when
# none answers, and a local test image (no registry is reachable) built
# from Debian's static busybox. Sourced by scripts/test; exports
# ERRAND_TEST_DOCKER_IMAGE.

ERRAND_TEST_DOCKER_IMAGE=${ERRAND_TEST_DOCKER_IMAGE:-errand-test/busybox:latest}
export ERRAND_TEST_DOCKER_IMAGE

errand_docker_install() {
	if command -v dockerd >/dev/null 2>&1 && [ -x /bin/busybox ]; then
		return 0
	fi
	echo "installing docker.io and busybox-static"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q docker.io busybox-static >/dev/null ||
		{ apt-get update -q >/dev/null && apt-get install -y -q docker.io busybox-static >/dev/null; }
}

errand_docker_start() {
	if docker version >/dev/null 2>&1; then
		return 0
	fi
	local log=/tmp/errand-dockerd.log
	echo "starting dockerd (log: $log)"
	dockerd --storage-driver overlay2 >"$log" 2>&1 &
	local pid=$!
	local i
	for i in $(seq 1 120); do
		if docker version >/dev/null 2>&1; then
			echo "dockerd answers (pid $pid)"
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "dockerd exited; last lines of $log:" >&2
			tail -n 20 "$log" >&2
			return 1
		fi
		sleep 0.5
	done
	echo "dockerd did not answer within 60s; see $log" >&2
	return 1
}

errand_docker_image() {
	if docker image inspect "$ERRAND_TEST_DOCKER_IMAGE" >/dev/null 2>&1; then
		return 0
	fi
	echo "building $ERRAND_TEST_DOCKER_IMAGE from /bin/busybox"
	local root
	root=$(mktemp -d)
	mkdir -p "$root/bin" "$root/tmp" "$root/etc"
	cp /bin/busybox "$root/bin/busybox"
	local applet
	for applet in sh ash sleep cat echo true false nc wget ls env printf test \
		mkdir rm cp mv touch grep sed head tail wc tr cut sort uniq id date \
		hostname kill ps pwd seq yes expr basename dirname find chmod stat \
		timeout nslookup ping; do
		ln -s busybox "$root/bin/$applet"
	done
	echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
	echo 'root:x:0:' >"$root/etc/group"
	tar -C "$root" -c . | docker import \
		--change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' - "$ERRAND_TEST_DOCKER_IMAGE" >/dev/null
	rm -rf "$root"
}

errand_docker_install && errand_docker_start && errand_docker_image ||
	{ echo "docker setup failed: the docker tests will fail" >&2; }
