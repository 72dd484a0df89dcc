#!/usr/bin/env bash
# The Kafka ACLs eventgate needs, on a cluster with an authorizer (KRaft: StandardAuthorizer) and
# authenticated clients (SASL or mutual TLS): only the ingest-api's principal produces to the event topics,
# only the writers' principal consumes them (in the writers' group). Anything that can produce to these
# topics can write events as anyone, so keep `allow.everyone.if.no.acl.found=false` (the default) and give
# no other principal Write on them.
#
#   BOOTSTRAP=kafka-0.kafka:9093 COMMAND_CONFIG=admin.properties deploy/kafka/acls.sh          # apply
#   DRY_RUN=1 deploy/kafka/acls.sh                                                            # print only
#
# Settings (environment), with their defaults:
#   KAFKA_ACLS        kafka-acls.sh   the Kafka distribution's tool (bin/kafka-acls.sh)
#   BOOTSTRAP         localhost:9092  a listener the admin can reach
#   COMMAND_CONFIG    (none)          the admin client's properties (security.protocol, sasl.*, ssl.*)
#   INGEST_PRINCIPAL  User:eventgate-ingest   the ingest-api's identity (its SASL user, or the TLS
#   WRITER_PRINCIPAL  User:eventgate-writer   certificate's distinguished name as the broker maps it)
#   TOPIC_PREFIX      eventgate.      = EVENTGATE_KAFKA__TOPIC_PREFIX: every event topic starts with it
#   GROUP             eventgate-db-writer     = EVENTGATE_WRITER__GROUP_ID (the configuration's default)
#   CREATE_TOPICS     true            = EVENTGATE_KAFKA__CREATE_TOPICS: both services create missing topics
#                                     at start-up, so both may Create under the prefix (nothing else). With
#                                     false, no Create is granted: create the topics yourself.
#
# What each principal may do:
#   ingest-api: Write, Describe (and Create) on topics prefixed TOPIC_PREFIX. Brokers before Kafka 2.8
#               also need IdempotentWrite on the cluster (the producer is idempotent):
#               --allow-principal "$INGEST_PRINCIPAL" --operation IdempotentWrite --cluster
#   db-writer:  Read, Describe (and Create) on topics prefixed TOPIC_PREFIX; Read on the group GROUP
#               (joining, fetching and committing offsets).
#   stats-api:  nothing (it never talks to Kafka).
set -euo pipefail

KAFKA_ACLS=${KAFKA_ACLS:-kafka-acls.sh}
BOOTSTRAP=${BOOTSTRAP:-localhost:9092}
COMMAND_CONFIG=${COMMAND_CONFIG:-}
INGEST_PRINCIPAL=${INGEST_PRINCIPAL:-User:eventgate-ingest}
WRITER_PRINCIPAL=${WRITER_PRINCIPAL:-User:eventgate-writer}
TOPIC_PREFIX=${TOPIC_PREFIX:-eventgate.}
GROUP=${GROUP:-eventgate-db-writer}
CREATE_TOPICS=${CREATE_TOPICS:-true}

acl() {
    local command=("$KAFKA_ACLS" --bootstrap-server "$BOOTSTRAP")
    if [[ -n $COMMAND_CONFIG ]]; then command+=(--command-config "$COMMAND_CONFIG"); fi
    command+=(--add "$@")
    if [[ ${DRY_RUN:-} == 1 ]]; then
        printf '%q ' "${command[@]}"
        printf '\n'
    else
        "${command[@]}"
    fi
}

create=()
if [[ $CREATE_TOPICS == true ]]; then create=(--operation Create); fi

# The ingest-api produces.
acl --allow-principal "$INGEST_PRINCIPAL" --operation Write --operation Describe "${create[@]}" \
    --topic "$TOPIC_PREFIX" --resource-pattern-type prefixed
# The writers consume, as one group.
acl --allow-principal "$WRITER_PRINCIPAL" --operation Read --operation Describe "${create[@]}" \
    --topic "$TOPIC_PREFIX" --resource-pattern-type prefixed
acl --allow-principal "$WRITER_PRINCIPAL" --operation Read --group "$GROUP"
