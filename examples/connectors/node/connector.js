#!/usr/bin/env node
/* connector.js - a flowd connector in Node.js with kafkajs: no SDK, just the wire contract
 * (docs/connectors.md), to show it works from any language.
 *
 *   request  ai.flowx.dev.connector.greeting.in.v1     {"name": "Ada"}
 *   reply    ai.flowx.dev.engine.receive.greeting.v1   {"greeting": "Hello, Ada!"}
 *
 * The rules, all below: copy EVERY request header onto the reply; key it like the request;
 * reply JSON, and on failure {"errorMessage": ...} so the process can route on it; drop
 * requests whose messageId was already answered; commit a request's offset only after its
 * reply is acknowledged (at least once).
 *
 *   npm install        (kafkajs)
 *   node connector.js --bootstrap-file DATA_DIR/kafka.bootstrap
 */
'use strict';
const fs = require('fs');
const { Kafka, logLevel } = require('kafkajs');

const args = process.argv.slice(2);
const opt = (name, def) => {
    const i = args.indexOf('--' + name);
    return i >= 0 && i + 1 < args.length ? args[i + 1] : def;
};
const IN = opt('in', 'ai.flowx.dev.connector.greeting.in.v1');
const OUT = opt('out', 'ai.flowx.dev.engine.receive.greeting.v1');
const GROUP = opt('group', 'node-greeting-connector');
const verbose = args.includes('-v');
const log = (...a) => console.error('connector.js:', ...a);

function bootstrap() {
    if (opt('bootstrap')) return opt('bootstrap');
    const file = opt('bootstrap-file');
    if (!file) throw new Error('--bootstrap HOST:PORT or --bootstrap-file PATH');
    for (let i = 0; i < 300; i++) { // flowd may still be starting
        try {
            const text = fs.readFileSync(file, 'utf8').trim();
            if (text) return text;
        } catch (e) { /* not yet */ }
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
    }
    throw new Error('no bootstrap address in ' + file);
}

/* The business logic: request body (object) -> reply body (object). */
function handle(req) {
    if (typeof req.name !== 'string' || !req.name)
        return { errorMessage: 'request has no name', errorCode: 'BAD_REQUEST' };
    return { greeting: 'Hello, ' + req.name + '!', language: 'node' };
}

const seen = new Set(); // messageIds answered (a real connector bounds it or uses a store)

async function main() {
    const kafka = new Kafka({ clientId: GROUP, brokers: bootstrap().split(','),
                              logLevel: verbose ? logLevel.INFO : logLevel.NOTHING });
    const producer = kafka.producer({ allowAutoTopicCreation: true });
    const consumer = kafka.consumer({ groupId: GROUP, sessionTimeout: 6000,
                                      heartbeatInterval: 1000, maxWaitTimeInMs: 5,
                                      allowAutoTopicCreation: true,
                                      metadataMaxAge: 1000 });
    await producer.connect();
    await consumer.connect();
    await consumer.subscribe({ topics: [IN], fromBeginning: true });

    let stopping = false;
    const stop = async () => {
        if (stopping) return;
        stopping = true;
        await consumer.disconnect(); // finishes the message in progress, leaves the group
        await producer.disconnect();
        process.exit(0);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);

    await consumer.run({
        autoCommit: false, // we commit ourselves, after the reply is acknowledged
        eachMessage: async ({ topic, partition, message }) => {
            const headers = message.headers || {};
            const mid = headers.messageId ? headers.messageId.toString() : null;
            if (!(mid && seen.has(mid))) {
                let reply;
                try {
                    reply = handle(JSON.parse(message.value.toString()));
                } catch (e) {
                    reply = { errorMessage: 'request is not JSON', errorCode: 'BAD_REQUEST' };
                }
                const out = { ...headers }; // every request header, as received
                if (reply.errorMessage) out.errorMessage = reply.errorMessage;
                await producer.send({ topic: OUT, acks: -1, messages: [{
                    key: message.key || headers.processInstanceId,
                    value: JSON.stringify(reply), headers: out }] });
                if (mid) seen.add(mid);
                if (verbose) log('instance', String(headers.processInstanceId), '->',
                                 JSON.stringify(reply));
            }
            // the reply is acknowledged: now the request may be committed
            await consumer.commitOffsets([{ topic, partition,
                                            offset: (BigInt(message.offset) + 1n).toString() }]);
        },
    });
    log(`${IN} -> ${OUT}, group ${GROUP}`);
}

main().catch((e) => { log('fatal:', e.message); process.exit(1); });
