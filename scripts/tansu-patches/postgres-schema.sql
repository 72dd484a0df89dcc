-- The tables tansu 0.6.0's postgres storage engine (`--storage-engine postgres://…`, cargo feature
-- `postgres`) reads and writes. The engine does not create them itself, and the crate ships only the
-- SQLite form of its schema (tansu-storage's src/ddl/, for the sqlite engine): this is that schema with
-- the PostgreSQL types the engine binds (int = i32, bigint = i64, smallint = i16, uuid, json, bytea,
-- xid8), written for eventgate's local broker. scripts/stack.sh (`tansu-database`) applies it, as the
-- database's owner, before the broker starts; every statement is idempotent.
--
-- Columns the engine never reads are kept (timestamps of the rows), views and extras are not.

create table if not exists cluster (
    id int generated always as identity primary key,
    name text not null unique,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp
);

create table if not exists topic (
    id int generated always as identity primary key,
    cluster int not null references cluster (id) on delete cascade,
    name text not null,
    uuid uuid default gen_random_uuid(),
    partitions int not null,
    replication_factor int not null,
    is_internal bool not null default false,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    unique (cluster, name)
);

create table if not exists topition (
    id int generated always as identity primary key,
    topic int references topic (id) on delete cascade,
    partition int,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    unique (topic, partition)
);

-- One row a partition: produce locks it (select … for update), so the offsets of a partition are
-- handed out one batch at a time.
create table if not exists watermark (
    id int generated always as identity primary key,
    topition int unique references topition (id) on delete cascade,
    low bigint,
    high bigint,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp
);

create table if not exists topic_configuration (
    id int generated always as identity primary key,
    topic int references topic (id) on delete cascade,
    name text not null,
    value text,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    unique (topic, name)
);

-- One row a Kafka record (a produced batch is written with COPY). transaction_id: the PostgreSQL
-- transaction that wrote the row, which the engine's fetch compares with the oldest running one.
create table if not exists record (
    topition int references topition (id) on delete cascade,
    offset_id bigint not null,
    transaction_id xid8 not null default pg_current_xact_id(),
    attributes smallint,
    producer_id bigint,
    producer_epoch smallint,
    timestamp timestamp,
    k bytea,
    v bytea,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    primary key (topition, offset_id)
);

-- A record may carry the same header key more than once (Kafka allows it): no unique key here.
create table if not exists header (
    topition int,
    offset_id bigint,
    k bytea,
    v bytea,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    foreign key (topition, offset_id) references record (topition, offset_id) on delete cascade
);

create index if not exists header_record on header (topition, offset_id);

create table if not exists consumer_group (
    id int generated always as identity primary key,
    cluster int not null references cluster (id) on delete cascade,
    name text not null,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    unique (cluster, name)
);

-- The group coordinator's state of a group (members, generation), replaced by compare-and-set on e_tag.
create table if not exists consumer_group_detail (
    id int generated always as identity primary key,
    consumer_group int unique references consumer_group (id) on delete cascade,
    e_tag uuid not null,
    detail json not null,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp
);

create table if not exists consumer_offset (
    id int generated always as identity primary key,
    consumer_group int references consumer_group (id) on delete cascade,
    topition int references topition (id) on delete cascade,
    committed_offset bigint,
    leader_epoch int,
    timestamp timestamp,
    metadata text,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    unique (consumer_group, topition)
);

create table if not exists producer (
    id bigint generated by default as identity primary key,
    cluster int not null references cluster (id) on delete cascade,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp
);

create table if not exists producer_epoch (
    id int generated by default as identity primary key,
    producer bigint references producer (id) on delete cascade,
    epoch smallint not null default 0,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    unique (producer, epoch)
);

create table if not exists producer_detail (
    id bigint generated by default as identity primary key,
    producer_epoch int references producer_epoch (id) on delete cascade,
    topition int references topition (id) on delete cascade,
    sequence int not null default 0,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    unique (producer_epoch, topition)
);

create table if not exists txn (
    id bigint generated always as identity primary key,
    cluster int references cluster (id) on delete cascade,
    name text,
    producer bigint references producer (id) on delete cascade,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    unique (cluster, name)
);

create table if not exists txn_detail (
    id bigint generated always as identity primary key,
    "transaction" bigint references txn (id) on delete cascade,
    producer_epoch int references producer_epoch (id) on delete cascade,
    transaction_timeout_ms int not null,
    started_at timestamp,
    -- BEGIN, PREPARE_COMMIT, PREPARE_ABORT, COMMITTED or ABORTED
    status text,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    unique ("transaction", producer_epoch)
);

create table if not exists txn_topition (
    id int generated always as identity primary key,
    txn_detail int references txn_detail (id) on delete cascade,
    topition int references topition (id) on delete cascade,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    unique (txn_detail, topition)
);

create table if not exists txn_produce_offset (
    id int generated always as identity primary key,
    txn_topition int unique references txn_topition (id) on delete cascade,
    offset_start bigint,
    offset_end bigint,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp
);

create table if not exists txn_offset_commit (
    id int generated always as identity primary key,
    txn_detail int references txn_detail (id) on delete cascade,
    consumer_group int references consumer_group (id) on delete cascade,
    generation_id int,
    member_id text,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    unique (txn_detail, consumer_group)
);

create table if not exists txn_offset_commit_tp (
    id int generated always as identity primary key,
    offset_commit int references txn_offset_commit (id) on delete cascade,
    topition int references topition (id) on delete cascade,
    committed_offset bigint,
    leader_epoch int,
    metadata text,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    unique (offset_commit, topition)
);

-- SCRAM credentials (AlterUserScramCredentials, and TANSU_SCRAM_USERS with our broker patch).
create table if not exists scram_credential (
    id bigint generated by default as identity primary key,
    cluster int not null references cluster (id) on delete cascade,
    username text,
    mechanism int,
    salt bytea not null,
    iterations int not null,
    stored_key bytea not null,
    server_key bytea not null,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    unique (cluster, username, mechanism)
);
