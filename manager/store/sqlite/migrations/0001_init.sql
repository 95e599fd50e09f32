-- Tasks, their dependency edges, their unsealed log lines and delegates.
-- Times are Unix nanoseconds (UTC).

CREATE TABLE delegates (
	seq            INTEGER PRIMARY KEY,
	id             TEXT NOT NULL UNIQUE,
	name           TEXT NOT NULL,
	hostname       TEXT NOT NULL DEFAULT '',
	grp            TEXT NOT NULL DEFAULT '',
	labels         TEXT NOT NULL DEFAULT '',
	archs          TEXT NOT NULL DEFAULT '',
	capacity       INTEGER NOT NULL DEFAULT 0,
	task_types     TEXT NOT NULL DEFAULT '',
	dynamic        INTEGER NOT NULL DEFAULT 0,
	version        TEXT NOT NULL DEFAULT '',
	state          TEXT NOT NULL,
	overloaded     INTEGER NOT NULL DEFAULT 0,
	drain_requested INTEGER NOT NULL DEFAULT 0,
	token_hash     TEXT NOT NULL,
	created_at     INTEGER NOT NULL,
	last_heartbeat INTEGER NOT NULL
);

CREATE INDEX delegates_heartbeat ON delegates (last_heartbeat) WHERE state <> 'lost';

CREATE TABLE tasks (
	seq              INTEGER PRIMARY KEY,
	id               TEXT NOT NULL UNIQUE,
	type             TEXT NOT NULL,
	data             BLOB,
	selector         TEXT NOT NULL DEFAULT '',
	depends_on       TEXT NOT NULL DEFAULT '',
	affinity         TEXT NOT NULL DEFAULT '',
	priority         INTEGER NOT NULL DEFAULT 0,
	timeout          INTEGER NOT NULL DEFAULT 0,
	max_attempts     INTEGER NOT NULL,
	run_id           TEXT NOT NULL DEFAULT '',
	state            TEXT NOT NULL,
	attempt          INTEGER NOT NULL DEFAULT 0,
	cancel_requested INTEGER NOT NULL DEFAULT 0,
	delegate_id      TEXT NOT NULL DEFAULT '',
	delegate_group   TEXT NOT NULL DEFAULT '',
	lease_token      TEXT NOT NULL DEFAULT '',
	result           BLOB,
	error_code       TEXT NOT NULL DEFAULT '',
	error_reason     TEXT NOT NULL DEFAULT '',
	log_lines        INTEGER NOT NULL DEFAULT 0,
	log_sealed       INTEGER NOT NULL DEFAULT 0,
	log_objects      TEXT NOT NULL DEFAULT '',
	has_dependents   INTEGER NOT NULL DEFAULT 0,
	-- version changes with every write of the row and is never reused,
	-- so a row read earlier is current exactly when its version is.
	version          INTEGER NOT NULL DEFAULT 0,
	created_at       INTEGER NOT NULL,
	queued_at        INTEGER,
	started_at       INTEGER,
	finished_at      INTEGER
);

-- The queue: what acquire reads, in the order it hands tasks out.
CREATE INDEX tasks_queue ON tasks (priority DESC, queued_at, seq) WHERE state = 'queued';
-- Active tasks by delegate: sweeps, cancel requests, deletes. A task is
-- leased or running exactly when it holds a lease token and has not
-- finished; saying so through those columns rather than the state keeps
-- the index out of the leased-to-running write. (Partial index conditions
-- also avoid IN lists, which SQLite evaluates through a temporary table
-- on every write of the row.)
CREATE INDEX tasks_active ON tasks (delegate_id) WHERE lease_token <> '' AND finished_at IS NULL;
-- Ended tasks whose logs wait to be sealed: only an ended task has
-- finished_at.
CREATE INDEX tasks_unsealed ON tasks (finished_at, seq) WHERE log_sealed = 0 AND finished_at IS NOT NULL;
CREATE INDEX tasks_run ON tasks (run_id, seq) WHERE run_id <> '';

CREATE TABLE task_deps (
	task_id   TEXT NOT NULL REFERENCES tasks (id) DEFERRABLE INITIALLY DEFERRED,
	dep_id    TEXT NOT NULL REFERENCES tasks (id) DEFERRABLE INITIALLY DEFERRED,
	condition TEXT NOT NULL,
	position  INTEGER NOT NULL,
	PRIMARY KEY (task_id, position)
) WITHOUT ROWID;

CREATE INDEX task_deps_dep ON task_deps (dep_id);

CREATE TABLE log_lines (
	task_id TEXT NOT NULL,
	line    INTEGER NOT NULL,
	text    TEXT NOT NULL,
	PRIMARY KEY (task_id, line)
) WITHOUT ROWID;
