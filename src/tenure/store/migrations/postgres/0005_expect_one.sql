-- Writes sent with COMMIT in one round trip (a monitor batch's, an agent
-- call's) stay conditional: each checks here that it changed exactly one row.
-- If not, the transaction aborts with the SQLSTATE the writer chose: TN001
-- for a lease that moved on (a lost race, tried again), TN002 for a row that
-- does not exist.
CREATE FUNCTION tenure_expect_one(changed bigint, what text, sqlstate text)
    RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF changed <> 1 THEN
        RAISE EXCEPTION '%', what USING ERRCODE = sqlstate;
    END IF;
END
$$;
