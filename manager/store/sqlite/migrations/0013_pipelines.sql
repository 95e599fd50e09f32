-- Named pipelines, and where runs came from: the pipeline and number of
-- a run of a stored pipeline (numbered in the transaction that creates
-- the run), its trigger, its variables and the run it restarts.
CREATE TABLE pipelines (
	name        TEXT PRIMARY KEY,
	spec        BLOB NOT NULL,
	created_at  INTEGER NOT NULL,
	updated_at  INTEGER NOT NULL,
	created_by  TEXT NOT NULL DEFAULT '',
	last_number INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE run_origins (
	run_id       TEXT PRIMARY KEY,
	pipeline     TEXT NOT NULL DEFAULT '',
	number       INTEGER,
	trigger_kind TEXT NOT NULL,
	trigger_ref  TEXT NOT NULL DEFAULT '',
	trigger_commit TEXT NOT NULL DEFAULT '',
	trigger      TEXT NOT NULL,
	variables    TEXT NOT NULL DEFAULT '',
	ext_str      TEXT NOT NULL DEFAULT '',
	restart_of   TEXT NOT NULL DEFAULT '',
	restart_from TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX run_origins_number ON run_origins (pipeline, number) WHERE number IS NOT NULL;

-- run_uses: run_id shows tasks of uses_run_id as its own (a restart kept
-- its succeeded stages); deleting uses_run_id would take them away.
CREATE TABLE run_uses (
	run_id      TEXT NOT NULL,
	uses_run_id TEXT NOT NULL,
	PRIMARY KEY (run_id, uses_run_id)
);
CREATE INDEX run_uses_used ON run_uses (uses_run_id);
