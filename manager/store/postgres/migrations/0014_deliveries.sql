-- Webhook deliveries (incoming hooks, outgoing notifications), the replay
-- keys of accepted hooks, and pipelines' hook secrets.
CREATE TABLE deliveries (
	id TEXT PRIMARY KEY,
	pipeline TEXT NOT NULL,
	kind TEXT NOT NULL,
	bucket TEXT NOT NULL,
	source TEXT NOT NULL,
	event TEXT NOT NULL,
	header_event TEXT NOT NULL,
	external_id TEXT NOT NULL,
	dedupe_key TEXT,
	target TEXT NOT NULL,
	secret_name TEXT NOT NULL,
	state TEXT NOT NULL,
	reason TEXT NOT NULL,
	run_id TEXT NOT NULL,
	attempts BIGINT NOT NULL,
	status_code BIGINT NOT NULL,
	body BYTEA,
	replay_of TEXT NOT NULL,
	redelivery_of TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	updated_at BIGINT NOT NULL,
	next_at BIGINT
);
CREATE INDEX deliveries_bucket ON deliveries (pipeline, bucket, id);
CREATE INDEX deliveries_pipeline ON deliveries (pipeline, id);
CREATE UNIQUE INDEX deliveries_dedupe ON deliveries (dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE state = 'pending' AND next_at IS NOT NULL;

CREATE TABLE hook_replay_keys (
	pipeline TEXT NOT NULL,
	replay_key TEXT NOT NULL,
	delivery_id TEXT NOT NULL,
	claimed_at BIGINT NOT NULL,
	PRIMARY KEY (pipeline, replay_key)
);
CREATE INDEX hook_replay_keys_delivery ON hook_replay_keys (delivery_id);

CREATE TABLE hook_secrets (
	pipeline TEXT PRIMARY KEY,
	current_secret TEXT NOT NULL,
	previous_secret TEXT NOT NULL,
	previous_until BIGINT,
	rotated_at BIGINT NOT NULL
);
