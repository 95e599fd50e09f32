-- store_probe holds the one row a readiness check writes while the disk
-- is full, to learn when writes get through again.
CREATE TABLE store_probe (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    pad BLOB NOT NULL
);
