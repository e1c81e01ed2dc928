"""The SQL text of each statement, written once for every session that runs them on PostgreSQL
(psycopg's `%s` placeholders: every value is a bound parameter, never part of the text)."""

LOAD_METADATA = ("SELECT nodeid, groupid, nodename, nodeport, noderole::text "
                 "FROM pg_catalog.pg_dist_node ORDER BY nodeid")
ADD_NODE = ("SELECT pg_catalog.citus_add_node(%s::text, %s::int, %s::int, %s::text::noderole, "
            "'default')")
UPDATE_NODE = ("SELECT pg_catalog.citus_update_node(%s::int, %s::text, %s::int, %s::bool, "
               "%s::int)")
REMOVE_NODE = "SELECT pg_catalog.citus_remove_node(%s::text, %s::int)"
