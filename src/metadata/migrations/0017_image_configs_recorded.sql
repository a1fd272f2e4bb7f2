-- When each image config's facts were recorded (millis since the epoch):
-- the registry index's Last-Modified covers facts read after the version
-- that holds their image was made.
ALTER TABLE image_configs ADD COLUMN recorded_at INTEGER NOT NULL DEFAULT 0;
