-- Registration dialects (component/src/register/): which dialect created a
-- registration (its unregister command removes only its own rows), a
-- second token for calls (Siskin's PushKit VoIP token, '' for none), and the
-- APNs environment of the tokens ('' = the app's configured endpoint,
-- 'sandbox', 'production').
ALTER TABLE registrations ADD COLUMN dialect TEXT NOT NULL DEFAULT 'conversations';
ALTER TABLE registrations ADD COLUMN second_token TEXT NOT NULL DEFAULT '';
ALTER TABLE registrations ADD COLUMN environment TEXT NOT NULL DEFAULT '';
-- A push of a stateless dialect (fpush, MongooseIM: nothing registered,
-- the publish names the device) keeps its device here (JSON), so that a
-- retry can send it; NULL for registered devices, which are looked up.
ALTER TABLE outbox ADD COLUMN device TEXT;
