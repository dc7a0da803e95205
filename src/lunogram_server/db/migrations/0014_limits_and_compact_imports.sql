-- CSV imports store their data column names once (here) and each row's cells as an array aligned with
-- them, instead of a data object per row that repeated every column name (a file of many long column
-- names grew past what jsonb holds). NULL for imports stored before: their rows carry their own objects.
ALTER TABLE list_imports ADD COLUMN columns text[];

-- Keyed upserts now say whether a public key sent them (identity/sql/profile.sql): the five-argument
-- version is replaced by one with a sixth.
DROP FUNCTION IF EXISTS lunogram_keyed_upsert_user(uuid, text, text, jsonb, jsonb);
DROP FUNCTION IF EXISTS lunogram_keyed_upsert_organization(uuid, text, text, jsonb, jsonb);
