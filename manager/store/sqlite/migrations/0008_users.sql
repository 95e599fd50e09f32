-- Users with roles, their API tokens (hashes only) and the audit trail.
CREATE TABLE users (
	name TEXT PRIMARY KEY,
	role TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	disabled_at INTEGER
);

CREATE TABLE user_tokens (
	id TEXT PRIMARY KEY,
	user_name TEXT NOT NULL REFERENCES users (name),
	name TEXT NOT NULL,
	hash TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	expires_at INTEGER,
	last_used_at INTEGER,
	revoked_at INTEGER
);
CREATE INDEX user_tokens_user ON user_tokens (user_name, created_at);

CREATE TABLE audit (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	at INTEGER NOT NULL,
	actor TEXT NOT NULL,
	action TEXT NOT NULL,
	target TEXT NOT NULL,
	detail TEXT NOT NULL
);
