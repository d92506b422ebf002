// node-postgres (`pg`) through shardgate (run by tests/integration/drivers.rs).
//
// Usage: node pg_test.js URL
//
// A Pool of 8 clients over the proxy's pool of 2: named prepared statements ({name, text, values})
// that node-postgres prepares once per client and then only Binds, transactions on one client,
// errors with their SQLSTATE. Every check compares exact values; any mismatch exits non-zero.
// The lines printed are exact and asserted by the Rust test.
'use strict';

const assert = require('node:assert/strict');
const { Pool } = require('pg');

const URL = process.argv[2];
const CLIENTS = 8;
const RUNS = 50;

async function main() {
  console.log(`pg ${require('pg/package.json').version} node ${process.version}`);
  const pool = new Pool({ connectionString: URL, max: CLIENTS, connectionTimeoutMillis: 30000 });
  pool.on('error', (e) => {
    console.error('idle client error', e);
    process.exit(2);
  });
  const pids = new Map(); // client -> Set of backend pids

  // Hold all 8 clients at once so each of them really is its own connection.
  const clients = await Promise.all(Array.from({ length: CLIENTS }, () => pool.connect()));
  const first = clients[0];
  await first.query('drop table if exists node_items');
  await first.query('create table node_items (id int primary key, client int not null, name text not null)');

  // Named prepared statements, 50 runs per client, all clients at once.
  await Promise.all(
    clients.map(async (c, i) => {
      const seen = new Set();
      pids.set(i, seen);
      for (let n = 0; n < RUNS; n++) {
        const r = await c.query({
          name: 'get',
          text: 'select $1::int * 100 + $2::int as v, $3::text as t, pg_backend_pid() as pid',
          values: [n, i, `c${i}-${n}`],
        });
        assert.deepEqual([r.rows[0].v, r.rows[0].t], [n * 100 + i, `c${i}-${n}`]);
        seen.add(r.rows[0].pid);
        const ins = await c.query({
          name: 'put',
          text: 'insert into node_items values ($1, $2, $3)',
          values: [i * 1000 + n, i, `n${n}`],
        });
        assert.equal(ins.rowCount, 1);
      }
      // Another name for the same text, and an unnamed extended query with parameters.
      const r = await c.query({ name: 'get2', text: 'select $1::int * 100 + $2::int as v, $3::text as t, pg_backend_pid() as pid', values: [1, 2, 'x'] });
      assert.equal(r.rows[0].v, 102);
      const count = await c.query('select count(*)::int as n from node_items where client = $1', [i]);
      assert.equal(count.rows[0].n, RUNS);
      // Rows mode and types.
      const arr = await c.query({ text: 'select $1::int[] as a, $2::jsonb as j, $3::bytea as b', values: [[1, 2, i], { k: i }, Buffer.from([i, 0, 255])], rowMode: 'array' });
      assert.deepEqual(arr.rows[0], [[1, 2, i], { k: i }, Buffer.from([i, 0, 255])]);
    }),
  );
  console.log(`named statements: ${CLIENTS} clients x ${RUNS} runs ok`);

  // Transactions on one client: BEGIN/COMMIT and BEGIN/ROLLBACK, with named statements inside.
  await Promise.all(
    clients.map(async (c, i) => {
      for (let n = 0; n < 5; n++) {
        await c.query('BEGIN');
        const a = await c.query({ name: 'pid', text: 'select pg_backend_pid() as pid' });
        await c.query({ name: 'upd', text: 'update node_items set name = $1 where id = $2', values: [`tx${n}`, i * 1000 + n] });
        const b = await c.query({ name: 'pid', text: 'select pg_backend_pid() as pid' });
        assert.equal(a.rows[0].pid, b.rows[0].pid, 'one backend for the whole transaction');
        await c.query('COMMIT');
        pids.get(i).add(a.rows[0].pid);
      }
      await c.query('BEGIN');
      await c.query({ name: 'put', text: 'insert into node_items values ($1, $2, $3)', values: [i * 1000 + 999, i, 'gone'] });
      await c.query('ROLLBACK');
      const r = await c.query({ name: 'cnt', text: "select count(*)::int as n, count(*) filter (where name like 'tx%')::int as t from node_items where client = $1", values: [i] });
      assert.deepEqual(r.rows[0], { n: RUNS, t: 5 });
    }),
  );
  console.log(`transactions: ${CLIENTS} clients commit and rollback ok`);

  // Errors carry their SQLSTATE; a failed transaction refuses statements until ROLLBACK.
  await Promise.all(
    clients.map(async (c, i) => {
      const codes = [];
      try {
        await c.query({ name: 'put', text: 'insert into node_items values ($1, $2, $3)', values: [i * 1000, i, 'dup'] });
      } catch (e) {
        codes.push(e.code, e.constraint);
      }
      await c.query('BEGIN');
      try {
        await c.query({ name: 'div', text: 'select 1 / $1::int', values: [0] });
      } catch (e) {
        codes.push(e.code);
      }
      try {
        await c.query({ name: 'get', text: 'select $1::int * 100 + $2::int as v, $3::text as t, pg_backend_pid() as pid', values: [1, 1, 'x'] });
      } catch (e) {
        codes.push(e.code);
      }
      await c.query('ROLLBACK');
      try {
        await c.query('select * from no_such_table');
      } catch (e) {
        codes.push(e.code);
      }
      assert.deepEqual(codes, ['23505', 'node_items_pkey', '22012', '25P02', '42P01']);
      // The named statements still work afterwards.
      const r = await c.query({ name: 'get', text: 'select $1::int * 100 + $2::int as v, $3::text as t, pg_backend_pid() as pid', values: [3, i, 'y'] });
      assert.equal(r.rows[0].v, 300 + i);
    }),
  );
  console.log('errors: 23505 node_items_pkey, 22012, 25P02, 42P01');

  for (const c of clients) c.release();

  // pool.query on whatever client is free, many at once.
  const results = await Promise.all(
    Array.from({ length: 200 }, (_, n) => pool.query({ name: 'get', text: 'select $1::int * 100 + $2::int as v, $3::text as t, pg_backend_pid() as pid', values: [n, 0, 'p'] })),
  );
  results.forEach((r, n) => assert.equal(r.rows[0].v, n * 100));
  const total = await pool.query('select count(*)::int as n from node_items');
  assert.equal(total.rows[0].n, CLIENTS * RUNS);
  console.log(`pool.query: 200 concurrent ok, ${CLIENTS * RUNS} rows`);

  const moved = Math.max(...[...pids.values()].map((s) => s.size)) > 1;
  console.log(`moved: ${moved}`);
  await pool.end();
  console.log('OK');
}

const timer = setTimeout(() => {
  console.error('timed out');
  process.exit(3);
}, 150000);
main().then(
  () => clearTimeout(timer),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
