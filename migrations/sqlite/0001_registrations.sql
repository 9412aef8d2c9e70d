-- Devices registered with the App Server. One row per (account, app,
-- device, room): registering again updates the token and keeps the node.
CREATE TABLE registrations (
    -- The pubsub node the user's server publishes to: random, 128 bits,
    -- base64url. It is also the lookup key of the publish path.
    node       TEXT PRIMARY KEY NOT NULL,
    -- The publish-options secret handed out with the node (NULL for
    -- dialects that hand out none: the node is the credential then).
    secret     TEXT,
    -- Bare JID of the registering account, and its domain: publishes for
    -- this node are accepted only from that domain.
    owner      TEXT NOT NULL,
    domain     TEXT NOT NULL,
    -- The client's device id; '' when the dialect has none.
    device_id  TEXT NOT NULL,
    -- Bare JID of a room for per-room registrations; '' otherwise.
    muc        TEXT NOT NULL DEFAULT '',
    -- The configured app (provider credentials) and the device's token.
    app        TEXT NOT NULL,
    token      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX registrations_device ON registrations (owner, app, device_id, muc);
CREATE INDEX registrations_token ON registrations (app, token);
