-- Tasks, their dependency edges, their unsealed log lines and delegates.
-- Times are Unix nanoseconds (UTC), as in the SQLite store.

CREATE TABLE delegates (
	seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id              TEXT NOT NULL UNIQUE,
	name            TEXT NOT NULL,
	hostname        TEXT NOT NULL DEFAULT '',
	grp             TEXT NOT NULL DEFAULT '',
	labels          TEXT NOT NULL DEFAULT '',
	archs           TEXT NOT NULL DEFAULT '',
	capacity        INTEGER NOT NULL DEFAULT 0,
	task_types      TEXT NOT NULL DEFAULT '',
	dynamic         BOOLEAN NOT NULL DEFAULT false,
	version         TEXT NOT NULL DEFAULT '',
	state           TEXT NOT NULL,
	overloaded      BOOLEAN NOT NULL DEFAULT false,
	drain_requested BOOLEAN NOT NULL DEFAULT false,
	token_hash      TEXT NOT NULL,
	created_at      BIGINT NOT NULL,
	last_heartbeat  BIGINT NOT NULL
);

CREATE INDEX delegates_heartbeat ON delegates (last_heartbeat) WHERE state <> 'lost';

CREATE TABLE tasks (
	seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id               TEXT NOT NULL UNIQUE,
	type             TEXT NOT NULL,
	data             BYTEA,
	-- selector is matched against delegates inside the leasing statement.
	selector         JSONB NOT NULL DEFAULT '{}',
	depends_on       TEXT NOT NULL DEFAULT '',
	affinity         TEXT NOT NULL DEFAULT '',
	priority         INTEGER NOT NULL DEFAULT 0,
	timeout          BIGINT NOT NULL DEFAULT 0,
	max_attempts     INTEGER NOT NULL,
	run_id           TEXT NOT NULL DEFAULT '',
	state            TEXT NOT NULL,
	attempt          INTEGER NOT NULL DEFAULT 0,
	cancel_requested BOOLEAN NOT NULL DEFAULT false,
	delegate_id      TEXT NOT NULL DEFAULT '',
	delegate_group   TEXT NOT NULL DEFAULT '',
	lease_token      TEXT NOT NULL DEFAULT '',
	result           BYTEA,
	error_code       TEXT NOT NULL DEFAULT '',
	error_reason     TEXT NOT NULL DEFAULT '',
	log_lines        BIGINT NOT NULL DEFAULT 0,
	log_sealed       BOOLEAN NOT NULL DEFAULT false,
	log_objects      TEXT NOT NULL DEFAULT '',
	has_dependents   BOOLEAN NOT NULL DEFAULT false,
	created_at       BIGINT NOT NULL,
	queued_at        BIGINT,
	started_at       BIGINT,
	finished_at      BIGINT
);

-- The queue: what acquire reads, in the order it hands tasks out.
CREATE INDEX tasks_queue ON tasks (priority DESC, queued_at, seq) WHERE state = 'queued';
-- Active tasks by delegate: sweeps, cancel requests, deletes.
CREATE INDEX tasks_active ON tasks (delegate_id) WHERE state IN ('leased', 'running');
CREATE INDEX tasks_running ON tasks (started_at) WHERE state = 'running' AND timeout > 0;
CREATE INDEX tasks_unsealed ON tasks (finished_at, seq) WHERE NOT log_sealed AND finished_at IS NOT NULL;
CREATE INDEX tasks_run ON tasks (run_id, seq) WHERE run_id <> '';
CREATE INDEX tasks_affinity ON tasks (affinity) WHERE affinity <> '';

CREATE TABLE task_deps (
	task_id   TEXT NOT NULL,
	dep_id    TEXT NOT NULL,
	condition TEXT NOT NULL,
	position  INTEGER NOT NULL,
	PRIMARY KEY (task_id, position)
);

CREATE INDEX task_deps_dep ON task_deps (dep_id);

CREATE TABLE log_lines (
	task_id TEXT NOT NULL,
	line    BIGINT NOT NULL,
	text    BYTEA NOT NULL,
	PRIMARY KEY (task_id, line)
);
