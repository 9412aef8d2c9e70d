-- Every change to a registration, by any writer (an instance, the CLI, an
-- operator's SQL), is announced on channel `nudge_registrations` with the
-- node as payload, so that every instance sharing this database drops the
-- row from its cache (component/src/store/listen.rs). A notification is
-- sent when the writing transaction commits; identical ones of one
-- transaction are sent once. Nodes are short: far below NOTIFY's 8000-byte
-- payload limit.
CREATE FUNCTION nudge_registration_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.node IS DISTINCT FROM NEW.node) THEN
        PERFORM pg_notify('nudge_registrations', OLD.node);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('nudge_registrations', NEW.node);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER registrations_changed
    AFTER INSERT OR UPDATE OR DELETE ON registrations
    FOR EACH ROW EXECUTE FUNCTION nudge_registration_changed();

-- TRUNCATE fires no row trigger: '*' (never a node, which is base64url)
-- stands for every node.
CREATE FUNCTION nudge_registrations_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('nudge_registrations', '*');
    RETURN NULL;
END;
$$;

CREATE TRIGGER registrations_truncated
    AFTER TRUNCATE ON registrations
    FOR EACH STATEMENT EXECUTE FUNCTION nudge_registrations_truncated();
