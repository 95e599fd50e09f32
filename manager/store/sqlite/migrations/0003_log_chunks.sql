-- Log lines are stored one row per append rather than one row per line:
-- a chunk holds the lines first_line .. first_line+lines-1, each written as
-- its length in bytes (decimal), a colon and its bytes. Chunks of a task
-- never overlap and leave no gap.

CREATE TABLE log_chunks (
	task_id    TEXT NOT NULL,
	first_line INTEGER NOT NULL,
	lines      INTEGER NOT NULL,
	body       BLOB NOT NULL,
	PRIMARY KEY (task_id, first_line)
) WITHOUT ROWID;

INSERT INTO log_chunks (task_id, first_line, lines, body)
	SELECT task_id, line, 1, CAST(CAST(length(CAST(text AS BLOB)) AS TEXT) || ':' || text AS BLOB)
	FROM log_lines;

DROP TABLE log_lines;
