-- Pushes accepted from a publish but not yet taken by the provider: the
-- provider failed for now, was slow to answer, a rate limit deferred the
-- push, or more publishes came while one was in flight (coalescing). One
-- row per registration (node): a publish for a node that already has a row
-- is merged into it, so a burst becomes one trailing push. A retry worker
-- delivers due rows until they are delivered or expire; a restart resumes
-- them (component/src/dispatch/retry.rs).
CREATE TABLE outbox (
    node         TEXT PRIMARY KEY NOT NULL,
    -- The summary to push (JSON): the newest one merged in (by
    -- `received_us`), except that a silent publish never replaces an
    -- important summary.
    notification TEXT NOT NULL,
    -- 1 when the summary is important (a message a person should see).
    important    INTEGER NOT NULL,
    -- When the summary's publish was read from the stream (epoch
    -- microseconds): publishes are handled concurrently, so their merges
    -- can reach the database out of order.
    received_us  BIGINT NOT NULL,
    -- Failed delivery attempts so far (drives the backoff).
    attempts     BIGINT NOT NULL DEFAULT 0,
    -- Bumped on every merge: a delivery removes the row only if no
    -- publish was merged into it meanwhile.
    seq          BIGINT NOT NULL DEFAULT 1,
    created_at   BIGINT NOT NULL,
    -- After this (epoch seconds) the push is dropped, counted and logged.
    expires_at   BIGINT NOT NULL,
    -- When the next attempt is due (epoch milliseconds).
    due_at_ms    BIGINT NOT NULL,
    last_error   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX outbox_due ON outbox (due_at_ms);

-- The brake on mass removal (component/src/dispatch/brake.rs): when too
-- many distinct tokens of one app are declared dead within a window, the
-- app's removals stop. `engaged_at` is when it last engaged, `released_at`
-- when an operator last released it (`nudge brake release`).
CREATE TABLE removal_brake (
    app         TEXT PRIMARY KEY NOT NULL,
    engaged_at  BIGINT NOT NULL,
    released_at BIGINT NOT NULL DEFAULT 0
);

-- Removals the brake held back, for the operator to apply or discard.
CREATE TABLE held_removals (
    node    TEXT PRIMARY KEY NOT NULL,
    app     TEXT NOT NULL,
    token   TEXT NOT NULL,
    reason  TEXT NOT NULL,
    held_at BIGINT NOT NULL
);
CREATE INDEX held_removals_app ON held_removals (app);
