-- A suspect lease records how its holder's last session ended: 1 when the
-- connection dropped (the stream ended with no DELETE), 0 when the client
-- closed it (a DELETE, or a stdio proxy whose agent exited). The adaptive
-- detector gives a drop longer to come back. Existing suspicions count as
-- explicit closes, as they were judged before.
ALTER TABLE leases ADD COLUMN suspect_dropped integer NOT NULL DEFAULT 0
    CHECK (suspect_dropped IN (0, 1));
