-- Pipeline runs: what was submitted, and what users did to it (approvals,
-- cancel). Their state is derived from their tasks (tasks.run_id).

CREATE TABLE runs (
	seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id           TEXT NOT NULL UNIQUE,
	created_at   BIGINT NOT NULL,
	filename     TEXT NOT NULL DEFAULT '',
	config       BYTEA,
	branch       TEXT NOT NULL DEFAULT '',
	event        TEXT NOT NULL DEFAULT '',
	plan         BYTEA,
	setup_errors TEXT NOT NULL DEFAULT '',
	cancelled_at BIGINT
);

CREATE TABLE run_approvals (
	seq         BIGINT GENERATED ALWAYS AS IDENTITY,
	run_id      TEXT NOT NULL REFERENCES runs (id),
	stage       TEXT NOT NULL,
	approver    TEXT NOT NULL,
	approved_at BIGINT NOT NULL,
	PRIMARY KEY (run_id, stage, approver)
);
