-- created_by names who made a run: a user, admin for the bootstrap admin
-- token, or the local user of `errand run`. Runs made before are ''.
ALTER TABLE runs ADD COLUMN created_by TEXT NOT NULL DEFAULT '';
