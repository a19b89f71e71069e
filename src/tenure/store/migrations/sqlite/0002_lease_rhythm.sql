-- The adaptive detector learns each holder's rhythm: when it last called
-- (a progress report or any other call) and the recent gaps between its calls,
-- in seconds, as a JSON array. Existing leases start with no rhythm learned.
ALTER TABLE leases ADD COLUMN last_call_at TEXT;
ALTER TABLE leases ADD COLUMN signal_gaps TEXT NOT NULL DEFAULT '[]';
