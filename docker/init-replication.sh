#!/bin/bash
# Lets the replica container stream from pg-s0 (compose network only).
echo "host replication postgres all scram-sha-256" >> "$PGDATA/pg_hba.conf"
