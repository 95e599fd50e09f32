-- Pipeline runs: what was submitted, and what users did to it (approvals,
-- cancel). Their state is derived from their tasks (tasks.run_id).

CREATE TABLE runs (
	seq          INTEGER PRIMARY KEY,
	id           TEXT NOT NULL UNIQUE,
	created_at   INTEGER NOT NULL,
	filename     TEXT NOT NULL DEFAULT '',
	config       BLOB,
	branch       TEXT NOT NULL DEFAULT '',
	event        TEXT NOT NULL DEFAULT '',
	plan         BLOB,
	setup_errors TEXT NOT NULL DEFAULT '',
	cancelled_at INTEGER
);

CREATE TABLE run_approvals (
	run_id      TEXT NOT NULL REFERENCES runs (id),
	stage       TEXT NOT NULL,
	approver    TEXT NOT NULL,
	approved_at INTEGER NOT NULL,
	seq         INTEGER NOT NULL,
	PRIMARY KEY (run_id, stage, approver)
);
