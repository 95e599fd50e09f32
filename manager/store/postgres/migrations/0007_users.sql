-- Users with roles, their API tokens (hashes only) and the audit trail.
CREATE TABLE users (
	name TEXT PRIMARY KEY,
	role TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	disabled_at BIGINT
);

CREATE TABLE user_tokens (
	id TEXT PRIMARY KEY,
	user_name TEXT NOT NULL REFERENCES users (name),
	name TEXT NOT NULL,
	hash TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	expires_at BIGINT,
	last_used_at BIGINT,
	revoked_at BIGINT
);
CREATE INDEX user_tokens_user ON user_tokens (user_name, created_at);

CREATE TABLE audit (
	id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	at BIGINT NOT NULL,
	actor TEXT NOT NULL,
	action TEXT NOT NULL,
	target TEXT NOT NULL,
	detail TEXT NOT NULL
);
