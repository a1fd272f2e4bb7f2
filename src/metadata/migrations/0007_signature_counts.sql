-- Version summaries count atomic signatures too, beside tags, manifests
-- and blobs. Existing versions get the counts their content rows give, the
-- same rule the store applies when it closes a version.
ALTER TABLE repository_versions ADD COLUMN added_signatures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE repository_versions ADD COLUMN removed_signatures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE repository_versions ADD COLUMN present_signatures INTEGER NOT NULL DEFAULT 0;
UPDATE repository_versions SET
    added_signatures = (SELECT COUNT(*) FROM repository_content rc
        WHERE rc.repository_id = repository_versions.repository_id AND rc.content_type = 'signature'
        AND rc.version_added = repository_versions.number),
    removed_signatures = (SELECT COUNT(*) FROM repository_content rc
        WHERE rc.repository_id = repository_versions.repository_id AND rc.content_type = 'signature'
        AND rc.version_removed = repository_versions.number),
    present_signatures = (SELECT COUNT(*) FROM repository_content rc
        WHERE rc.repository_id = repository_versions.repository_id AND rc.content_type = 'signature'
        AND rc.version_added <= repository_versions.number
        AND (rc.version_removed IS NULL OR rc.version_removed > repository_versions.number));
