-- What a task is doing now (a build's `STEP 3/7: COPY ...`) and what it
-- said so far, appended as it runs (bounded by the runner).
ALTER TABLE tasks ADD COLUMN step TEXT;
ALTER TABLE tasks ADD COLUMN log TEXT;
