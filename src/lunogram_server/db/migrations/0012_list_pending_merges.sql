-- A merged user is re-evaluated for every rule list (history and memberships moved, not only data);
-- a profile change only for the lists with property or organization conditions.
ALTER TABLE list_pending_users ADD COLUMN everything boolean NOT NULL DEFAULT false;
