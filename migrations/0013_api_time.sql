-- api_time(): a timestamptz as the API writes it (RFC 3339 in UTC with a Z, microseconds only
-- when there are any), so pages whose JSON PostgreSQL builds read exactly like the ones Python
-- encodes. STABLE (to_char is), and a plain SQL body, so the planner inlines it.
-- depends: 0012_idempotency_keys

CREATE FUNCTION api_time(moment timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN moment IS NULL THEN NULL
        WHEN extract(microseconds FROM moment)::bigint % 1000000 = 0
            THEN to_char(moment AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
        ELSE to_char(moment AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    END
$$;
