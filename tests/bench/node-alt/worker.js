'use strict';
// The Kafka-to-APNs pipeline a team would write in Node.js instead of
// callpush, built the way the KafkaJS and @parse/node-apn documentation
// shows: one consumer group reading the invite and cancel topics, one
// provider with token authentication, one alert push per device token,
// with the same payload and headers as callpush. tests/bench/compare.py
// runs it as the "alternative" side; it is not part of the product.
//
// What it deliberately does not do, because a first version would not:
// no tombstones (an invite whose cancel came first is still pushed), no
// deduplication of _j_msgid, no dead-letter or feedback topic. Event
// validation is limited to what JSON.parse and the field reads need.
//
// Configuration comes from the environment:
//   BROKERS, GROUP, INVITE_TOPIC, CANCEL_TOPIC
//   APNS_HOST, APNS_PORT, APNS_CA_FILE, APNS_TOPIC
//   APNS_KEY_FILE, APNS_KEY_ID, APNS_TEAM_ID
//   APNS_CONNECTIONS   HTTP/2 connections (default 2, as callpush)
//   MAX_INFLIGHT       pushes in flight at once (default 1000, as callpush)
//   PARTITIONS_CONCURRENTLY  partitions handled at once (default 32: the
//                      16 invite and 16 cancel partitions of the benchmark)
//
// Tuning, so that the comparison is fair rather than a strawman:
// - eachBatch instead of eachMessage, and every message of a batch sent at
//   once rather than awaited one by one: awaiting each push caps a
//   partition at one push per round trip;
// - partitionsConsumedConcurrently set to the partition count, so that
//   every partition's batch is in flight together (KafkaJS's default is 1);
// - one global limit of MAX_INFLIGHT pushes, the same bound callpush has,
//   so that a backlog does not queue tens of thousands of streams inside
//   Node's HTTP/2 session;
// - MultiProvider with clientCount = APNS_CONNECTIONS, the pool that
//   node-apn documents for more than one connection;
// - maxWaitTimeInMs from FETCH_WAIT_MS (the driver sets callpush's
//   fetch.wait.max.ms to the same), heartbeat/session times as callpush's
//   set them, so both sides fetch and join groups alike.
//
// Logs: one line on stdout when partitions are assigned (the driver waits
// for it), a summary line on SIGTERM, and failed pushes on stderr.

const { Kafka, logLevel } = require('kafkajs');
const apn = require('@parse/node-apn');

const env = process.env;
const INVITE_TOPIC = env.INVITE_TOPIC || 'call.invite';
const CANCEL_TOPIC = env.CANCEL_TOPIC || 'call.cancel';
const APNS_TOPIC = env.APNS_TOPIC;
const MAX_INFLIGHT = parseInt(env.MAX_INFLIGHT || '1000', 10);
const RING_TIMEOUT_S = 60;
const CANCEL_EXPIRATION_S = 300;

// The default texts and sound callpush uses.
const TITLES = {
  invite: { audio: '来电邀请', video: '视频来电邀请' },
  cancel: { audio: '语音通话取消', video: '视频通话取消' },
};
const SOUND = 'laidian.caf';

const provider = new apn.MultiProvider({
  clientCount: parseInt(env.APNS_CONNECTIONS || '2', 10),
  token: {
    key: env.APNS_KEY_FILE,
    keyId: env.APNS_KEY_ID,
    teamId: env.APNS_TEAM_ID,
  },
  address: env.APNS_HOST || '127.0.0.1',
  port: parseInt(env.APNS_PORT, 10),
  ca: env.APNS_CA_FILE,
});

const stats = { events: 0, pushed: 0, failed: 0, invalid: 0 };

// A counting semaphore: at most MAX_INFLIGHT pushes wait for APNs.
let active = 0;
const waiting = [];

function acquire() {
  if (active < MAX_INFLIGHT) {
    active++;
    return Promise.resolve();
  }
  return new Promise(resolve => waiting.push(resolve));
}

function release() {
  const next = waiting.shift();
  if (next) {
    next();
  } else {
    active--;
  }
}

// The payload and headers callpush builds (schemas/apns-payload.schema.json).
// Event ids in the benchmark stay below 2^53, where JSON.parse keeps
// _j_msgid exact; beyond it this worker would send a rounded id.
function notificationFor(ev) {
  const invite = ev.type === 'invite';
  const media = ev.media === 'video' ? 'video' : 'audio';
  const alert = {
    title: (ev.alert && ev.alert.title) || TITLES[ev.type][media],
  };
  const body = (ev.alert && ev.alert.body) || (ev.caller && ev.caller.name);
  if (body) {
    alert.body = body;
  }

  const note = new apn.Notification();
  note.alert = alert;
  note.badge = 0;
  note.mutableContent = 1;
  note.sound = ev.sound || SOUND;
  note.payload = {
    pushType: invite ? 1 : 2,
    _j_msgid: ev._j_msgid,
    _j_uid: ev._j_uid,
    call_id: ev.call_id,
    ...ev.extras,
  };
  note.topic = ev.apns_topic || APNS_TOPIC;
  note.pushType = 'alert';
  note.priority = 10;
  note.collapseId = ev.call_id;
  note.expiry =
    Math.floor(ev.created_at / 1000) +
    (invite ? ev.ring_timeout_s || RING_TIMEOUT_S : CANCEL_EXPIRATION_S);
  return note;
}

async function pushOne(note, token) {
  await acquire();
  try {
    const result = await provider.send(note, token);
    stats.pushed += result.sent.length;
    for (const f of result.failed) {
      stats.failed++;
      if (stats.failed <= 10) {
        console.error(
          'push failed', f.status, JSON.stringify(f.response || f.error)
        );
      }
    }
  } finally {
    release();
  }
}

function handle(message) {
  let ev;
  try {
    ev = JSON.parse(message.value.toString());
  } catch (e) {
    stats.invalid++;
    return Promise.resolve();
  }
  if (!ev || !TITLES[ev.type] || !Array.isArray(ev.device_tokens)) {
    stats.invalid++;
    return Promise.resolve();
  }
  stats.events++;
  const note = notificationFor(ev);
  const tokens = [...new Set(ev.device_tokens)];
  return Promise.all(tokens.map(token => pushOne(note, token)));
}

const kafka = new Kafka({
  clientId: 'node-alt',
  brokers: env.BROKERS.split(','),
  logLevel: logLevel.WARN,
});
const consumer = kafka.consumer({
  groupId: env.GROUP || 'node-alt',
  sessionTimeout: 6000,
  heartbeatInterval: 500,
  maxWaitTimeInMs: parseInt(env.FETCH_WAIT_MS || '10', 10),
});

async function main() {
  await consumer.connect();
  consumer.on(consumer.events.GROUP_JOIN, e => {
    const assignment = e.payload.memberAssignment;
    console.log(JSON.stringify({ msg: 'partitions assigned', assignment }));
  });
  await consumer.subscribe({
    topics: [INVITE_TOPIC, CANCEL_TOPIC],
    fromBeginning: true,
  });
  await consumer.run({
    partitionsConsumedConcurrently: parseInt(
      env.PARTITIONS_CONCURRENTLY || '32',
      10
    ),
    eachBatch: async ({ batch, resolveOffset, heartbeat }) => {
      // The offset is committed only once every push of the batch has its
      // answer: a crash redelivers rather than loses.
      await Promise.all(batch.messages.map(handle));
      resolveOffset(batch.lastOffset());
      await heartbeat();
    },
  });
}

async function stop() {
  console.log(JSON.stringify({ msg: 'stopping', ...stats }));
  try {
    await consumer.disconnect();
  } finally {
    await provider.shutdown();
    process.exit(0);
  }
}

process.on('SIGTERM', stop);
process.on('SIGINT', stop);
main().catch(e => {
  console.error(e);
  process.exit(1);
});
