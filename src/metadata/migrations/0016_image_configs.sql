-- What the Flatpak registry index shows of an image that only its config
-- holds: its platform and labels (a JSON object's text, NULL for none),
-- read once per config blob after the content is recorded, so that
-- answering the index reads no blob. A config that is not an image's
-- (an artifact's, unreadable) has a row of NULLs: it is not read again.
CREATE TABLE image_configs (
    digest       TEXT PRIMARY KEY,
    os           TEXT,
    architecture TEXT,
    variant      TEXT,
    labels       TEXT
) WITHOUT ROWID;
