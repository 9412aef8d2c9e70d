-- Prosody 0.12: the App Server as an external component.
-- Add to prosody.cfg.lua (global section for the ports, the Component block
-- at the end), then `prosodyctl reload`.

component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }   -- where Nudge connects from

-- Users' servers publish to the App Server; this one hosts it too.
-- (mod_cloud_notify is what sends the publishes: enable it on every
-- VirtualHost whose users should get push.)
modules_enabled = {
    -- …your modules…
    "cloud_notify";   -- XEP-0357 (from prosody-modules)
    "smacks";         -- XEP-0198: pushes for hibernated sessions
}

Component "push.localhost"
    component_secret = "change-me"   -- = component.secret in nudge.toml
