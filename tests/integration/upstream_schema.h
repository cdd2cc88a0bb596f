/* tests/integration/upstream_schema.h — upstream hbbs's `peer` table, the
 * exact DDL hbbs runs on db_v2.sqlite3 (rendezvous.md §13.2).
 *
 * The tests' own copy, deliberately independent of storage-sqlite's DDL
 * (modules/storage-sqlite/sqlite_db.c): databases built with it stand for
 * ones upstream made, so they prove compatibility rather than agreement
 * with ourselves. Included by the integration suites and the
 * storage-sqlite unit suite. */
#ifndef RDV_TEST_UPSTREAM_SCHEMA_H
#define RDV_TEST_UPSTREAM_SCHEMA_H

static const char upstream_ddl[] =
    "create table if not exists peer (\n"
    "    guid blob primary key not null,\n"
    "    id varchar(100) not null,\n"
    "    uuid blob not null,\n"
    "    pk blob not null,\n"
    "    created_at datetime not null default(current_timestamp),\n"
    "    user blob,\n"
    "    status tinyint,\n"
    "    note varchar(300),\n"
    "    info text not null\n"
    ") without rowid;\n"
    "create unique index if not exists index_peer_id on peer (id);\n"
    "create index if not exists index_peer_user on peer (user);\n"
    "create index if not exists index_peer_created_at on peer (created_at);\n"
    "create index if not exists index_peer_status on peer (status);\n";

#endif
