# Sourced by scripts/test: starts a throwaway PostgreSQL 15 cluster on a free
# loopback port and exports ERRAND_TEST_POSTGRES. initdb refuses to run as
# root, so the cluster belongs to a non-root user (postgres, created if
# missing). The cluster is stopped and removed when scripts/test exits.

errand_pg_setup() {
	local bin=/usr/lib/postgresql/15/bin
	if [ -n "${ERRAND_TEST_POSTGRES:-}" ]; then
		echo "using ERRAND_TEST_POSTGRES from the environment"
		return 0
	fi
	if [ ! -x "$bin/initdb" ]; then
		echo "PostgreSQL 15 not found in $bin: apt-get install postgresql-15" >&2
		return 1
	fi
	local user=postgres run=()
	if [ "$(id -u)" = 0 ]; then
		id -u "$user" >/dev/null 2>&1 || useradd --system --no-create-home "$user"
		run=(runuser -u "$user" --)
	else
		user=$(id -un)
	fi
	local dir port
	dir=$(mktemp -d /tmp/errand-pg.XXXXXX)
	chmod 0755 "$dir"
	mkdir "$dir/data" "$dir/sock"
	[ "$(id -u)" = 0 ] && chown -R "$user" "$dir"
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
		echo $((20000 + RANDOM % 20000)))
	"${run[@]}" "$bin/initdb" -D "$dir/data" -U "$user" --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 || {
		cat "$dir/initdb.log" >&2
		return 1
	}
	# Throwaway: durability traded for speed, the way CI databases run.
	"${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
		-o "-c listen_addresses=127.0.0.1 -p $port -k $dir/sock -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400 -c shared_buffers=128MB" \
		start >/dev/null || {
		cat "$dir/server.log" >&2
		return 1
	}
	ERRAND_CLEANUP+=("runuser -u $user -- $bin/pg_ctl -D $dir/data -m immediate stop >/dev/null 2>&1 || $bin/pg_ctl -D $dir/data -m immediate stop >/dev/null 2>&1; rm -rf $dir")
	"${run[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U "$user" errand_test
	export ERRAND_TEST_POSTGRES="postgres://$user@127.0.0.1:$port/errand_test?sslmode=disable"
	echo "PostgreSQL 15 on 127.0.0.1:$port (data in $dir)"
}
errand_pg_setup
