// bpmn_bench.js - the peer: npm's bpmn-engine running the equivalent of bench/processes/echo.json
// (start -> receiveTask waiting for an asynchronous callback -> end), in memory, no store.
// Closed loop, K instances in flight, COUNT in all; prints one JSON line.
//   node bpmn_bench.js MODULE_DIR COUNT K
'use strict';
const path = require('path');
const {EventEmitter} = require('events');
const {Engine} = require(path.resolve(process.argv[2], 'node_modules', 'bpmn-engine'));
const COUNT = parseInt(process.argv[3] || '5000', 10);
const K = parseInt(process.argv[4] || '64', 10);

const source = `<?xml version="1.0" encoding="UTF-8"?>
<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL" id="d" targetNamespace="bench">
  <process id="echo" isExecutable="true">
    <startEvent id="start" />
    <sequenceFlow id="f1" sourceRef="start" targetRef="wait_echo" />
    <receiveTask id="wait_echo" />
    <sequenceFlow id="f2" sourceRef="wait_echo" targetRef="done" />
    <endEvent id="done" />
  </process>
</definitions>`;

const lat = [];
let started = 0, finished = 0;
let t0 = process.hrtime.bigint();

function runOne() {
  const seq = started++;
  const begin = process.hrtime.bigint();
  const listener = new EventEmitter();
  // the "connector": answers asynchronously, on the next turn of the event loop
  listener.on('wait', (api) => {
    setImmediate(() => api.signal({echo: {seq, text: 'hello'}}));
  });
  // the XML is parsed once (moddleContext), as a server would cache a deployed definition
  const engine = new Engine({name: 'echo-' + seq, moddleContext});
  engine.once('end', () => {
    lat.push(Number(process.hrtime.bigint() - begin) / 1e6);
    finished++;
    if (started < COUNT) runOne();
    else if (finished === COUNT) done();
  });
  engine.execute({listener, variables: {request: {seq, text: 'hello'}}}).catch((e) => {
    console.error(e);
    process.exit(1);
  });
}

function done() {
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  lat.sort((a, b) => a - b);
  const p = (q) => lat[Math.min(lat.length - 1, Math.max(0, Math.ceil(q / 100 * lat.length) - 1))];
  const r = (x) => Math.round(x * 100) / 100;
  console.log(JSON.stringify({
    engine: 'bpmn-engine', k: K, completed: finished, wall_s: r(secs),
    completed_per_s: r(finished / secs),
    latency_ms: {p50: r(p(50)), p95: r(p(95)), p99: r(p(99)), max: r(lat[lat.length - 1])},
    peak_rss_mib: r(process.resourceUsage().maxRSS / 1024), cpu_s: r((process.cpuUsage().user + process.cpuUsage().system) / 1e6),
  }));
}

let moddleContext;
new Engine({})._getModdleContext(source).then((ctx) => {
  moddleContext = ctx;
  t0 = process.hrtime.bigint();
  for (let i = 0; i < Math.min(K, COUNT); i++) runOne();
});
