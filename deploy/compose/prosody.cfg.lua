-- Prosody 0.12 for deploy/compose.yaml (the image: deploy/compose/prosody.Containerfile,
-- Debian bookworm's prosody + prosody-modules, the versions scripts/interop-test
-- runs). The Nudge part is deploy/prosody.cfg.lua's, explained there; what
-- differs here: the component listens on the compose network (not published
-- on the host), and the domains and the secret come from the environment
-- that compose.yaml passes (ENV_X is the variable X, Prosody 0.12).
--
-- Certificates for XMPP_DOMAIN: put them in deploy/compose/certs/ (mounted at
-- /etc/prosody/certs; e.g. example.org.crt + example.org.key, or a
-- Let's Encrypt live/ directory), see `prosodyctl cert import`.
-- scripts/check-deploy runs `prosodyctl check config` on this file.

pidfile = "/var/lib/prosody/prosody.pid"
plugin_paths = { "/usr/lib/prosody/modules" }   -- prosody-modules: cloud_notify
data_path = "/var/lib/prosody"
certificates = "certs"
log = { { levels = { min = "info" }, to = "console" } }

admins = { }
modules_enabled = {
    "roster"; "saslauth"; "tls"; "disco"; "ping"; "time"; "uptime"; "version";
    "carbons"; "pep"; "private"; "blocklist"; "bookmarks"; "vcard4"; "vcard_legacy";
    "csi_simple"; "mam"; "register";
    -- XEP-0198 (pushes for hibernated sessions) and XEP-0357 (push), as
    -- deploy/prosody.cfg.lua asks.
    "smacks"; "cloud_notify";
}
allow_registration = false          -- `prosodyctl adduser` (compose exec prosody …)
authentication = "internal_hashed"
c2s_require_encryption = true
s2s_secure_auth = true
archive_expires_after = "1w"

-- Nudge connects here over the compose network (this port is not published).
component_ports = { 5347 }
component_interfaces = { "*" }

-- As deploy/prosody.cfg.lua: no message body in pushes; `wait` errors are
-- never counted against a registration.
push_notification_with_body = false
push_notification_with_sender = false
push_max_errors = 16

VirtualHost (ENV_XMPP_DOMAIN or "localhost")

-- A subdomain of the VirtualHost, so that clients discover it.
Component (ENV_NUDGE_COMPONENT_DOMAIN or ("push." .. (ENV_XMPP_DOMAIN or "localhost")))
    component_secret = ENV_NUDGE_COMPONENT_SECRET
        or error("NUDGE_COMPONENT_SECRET is not set (deploy/.env, README)")
    -- The successor of `docker compose kill -s HUP nudge` (a handover inside
    -- the container) replaces the old connection at once.
    component_conflict_resolve = "kick_old"
