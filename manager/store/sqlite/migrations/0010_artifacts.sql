-- Artifacts: the files steps and stages left in their workspaces, kept in
-- object storage under artifacts/<run>/<task>/<upload>/<path>. A row is
-- written once its object is whole.
CREATE TABLE artifacts (
	id TEXT PRIMARY KEY,
	run_id TEXT NOT NULL,
	task_id TEXT NOT NULL,
	stage TEXT NOT NULL,
	step TEXT NOT NULL,
	path TEXT NOT NULL,
	size INTEGER NOT NULL,
	sha256 TEXT NOT NULL,
	content_type TEXT NOT NULL,
	mode INTEGER NOT NULL,
	link_target TEXT NOT NULL,
	object TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX artifacts_task_path ON artifacts (task_id, path);
CREATE INDEX artifacts_run ON artifacts (run_id, id);
CREATE INDEX artifacts_expiry ON artifacts (expires_at, id);
