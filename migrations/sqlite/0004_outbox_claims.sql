-- Several instances may share one database: a row taken for a send names
-- its claimer (an id per instance), so that an early try on another
-- instance does not take a row that is out right now. A claimed row's
-- `due_at_ms` is the end of the claim (past the push timeout); '' is no
-- claim, and a claim lapses when the row comes due again (its instance
-- died). See component/src/store/outbox.rs.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT NOT NULL DEFAULT '';
