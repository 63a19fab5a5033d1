// node-postgres workload through the proxy's rw port (crates/proxy/tests/drivers.rs).
// Named prepared statements ({name, text}), BEGIN READ ONLY transactions, a
// read-write transaction, a rolled-back one and reads of its own writes.
// Prints key=value lines. Usage: node pg_workload.js <host> <port> <user> <password>
const { Client } = require('pg');

const SELECT = {
  name: 'ro_select',
  text: 'SELECT count(*)::int AS count, coalesce(sum(v), 0)::int AS sum, current_setting(\'pgha_test.port\')::int AS port FROM node_items WHERE id > $1',
};

function out(key, value) {
  console.log(`${key}=${value}`);
}

async function readOnly(client, label) {
  for (let tx = 0; tx < 4; tx++) {
    await client.query('BEGIN READ ONLY');
    let row;
    for (let i = 0; i < 2; i++) {
      row = (await client.query({ ...SELECT, values: [0] })).rows[0];
    }
    await client.query('COMMIT');
    out(`${label}_port`, row.port);
    out(`${label}_count`, row.count);
    out(`${label}_sum`, row.sum);
  }
}

async function main() {
  const [host, port, user, password, database = 'postgres'] = process.argv.slice(2);
  const client = new Client({ host, port: Number(port), user, password, database });
  await client.connect();
  await readOnly(client, 'ro');
  await client.query('BEGIN');
  for (let i = 1; i <= 10; i++) {
    await client.query({ name: 'ins', text: 'INSERT INTO node_items (id, v) VALUES ($1, $2)', values: [i, i * 10] });
  }
  const up = await client.query('UPDATE node_items SET v = v + 1 WHERE id = 1 RETURNING current_setting(\'pgha_test.port\')::int AS port');
  out('rw_port', up.rows[0].port);
  await client.query('COMMIT');
  await readOnly(client, 'ryw');
  await client.query('BEGIN');
  await client.query('INSERT INTO node_items (id, v) VALUES (1000, 1)');
  await client.query('ROLLBACK');
  const rb = await client.query('SELECT count(*)::int AS n FROM node_items WHERE id = 1000');
  out('rolled_back_count', rb.rows[0].n);
  let total = 0;
  for (let i = 1; i <= 10; i++) {
    const r = await client.query({ name: 'get', text: 'SELECT v FROM node_items WHERE id = $1', values: [i] });
    total += r.rows[0].v;
  }
  out('autocommit_sum', total);
  await client.query('BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE');
  const ser = (await client.query({ ...SELECT, values: [0] })).rows[0];
  await client.query('COMMIT');
  out('ser_port', ser.port);
  out('ser_count', ser.count);
  out('ser_sum', ser.sum);
  await client.end();
  out('done', 'ok');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
