-- Prosody 0.12 (Debian bookworm: prosody + prosody-modules) with Nudge as
-- its push App Server (XEP-0357), connected as an external component
-- (XEP-0114).
--
-- Install: copy this file to /etc/prosody/conf.d/nudge.cfg.lua (Debian's
-- prosody.cfg.lua ends with `Include "conf.d/*.cfg.lua"`; an included file
-- is read in the global scope wherever the Include stands), then:
--
--   1. add "cloud_notify" (XEP-0357, from prosody-modules) and "smacks"
--      (XEP-0198, pushes for hibernated sessions) to modules_enabled in
--      prosody.cfg.lua. They are not set here because a second
--      `modules_enabled` would replace yours rather than add to it;
--   2. pick a secret (e.g. `openssl rand -hex 24`) and set it below and as
--      component.secret in Nudge's config;
--   3. `prosodyctl reload` (or restart), then start Nudge.
--
-- The matching Nudge configuration (nudge.toml, see nudge.example.toml):
--
--   [component]
--   domain = "push.localhost"     # = the Component name below
--   secret = "change-me"          # = component_secret below
--   host = "127.0.0.1"            # where Prosody listens for components
--   port = 5347                   # = component_ports
--
-- scripts/interop-test and scripts/demo run Prosody with this very file
-- (only the port and the secret substituted), so it is tested as written.

-- Where components (Nudge) connect. Keep it on loopback or a private
-- network: the secret is the only authentication and the stream is not
-- encrypted.
component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }

-- mod_cloud_notify. Nudge treats a push as important (an alert that wakes
-- the phone at high priority) when `last-message-body` has a non-empty
-- value; Prosody always sends the field, empty for chat states and other
-- unimportant stanzas.
--
-- Keep the body out of the push (the default): Prosody then sends the dummy
-- body "New Message!" for every important message, OMEMO- and
-- PGP-encrypted ones and Jingle call proposals included. With `true` the
-- real body travels through Nudge and Google/Apple, and encrypted messages
-- and calls arrive with an empty body, i.e. as unimportant.
push_notification_with_body = false
push_notification_with_sender = false
-- Errors of type other than `wait` Prosody counts per registration before
-- disabling it (the default). Nudge answers `wait` for anything transient
-- and `cancel` only when the registration is gone or the provider declared
-- the device token dead, so 16 costs nothing but a few useless publishes.
push_max_errors = 16

-- The App Server. Prosody routes a component domain to one connection only.
Component "push.localhost"
    component_secret = "change-me"
    -- Restarts without a gap (`nudge run --replace <PID>`, or `systemctl
    -- reload nudge`, i.e. SIGHUP): with "kick_old" a new connection replaces
    -- the old one at once; the old one gets stream error `conflict`
    -- ("Replaced by a new connection"), finishes what it read and exits
    -- without reconnecting, so not a publish is bounced. With the default,
    -- "kick_new", the new connection would be refused ("Component already
    -- connected") and the new Nudge would stand by until the old one is gone,
    -- and Prosody bounces every publish in between. Leave the default only
    -- to run a standby Nudge beside the active one (it takes over within
    -- component.standby_retry_ms when the active one dies): with "kick_old"
    -- two instances started side by side replace each other and one stops.
    component_conflict_resolve = "kick_old"
