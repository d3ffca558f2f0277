// VS Code's own DAP client library (@vscode/debugadapter-testsupport) drives `workbench dap` through real builds.
// Run by tests/test_dap_node.py, which gives: DAP_ADAPTER (the adapter's argv, JSON), DAP_ROOT (the state root),
// DAP_BASE (the base image reference), DAP_WORK (a folder for the build contexts).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { DebugClient } from '@vscode/debugadapter-testsupport';

const ADAPTER = JSON.parse(process.env.DAP_ADAPTER ?? '["workbench", "dap"]');
const ROOT = process.env.DAP_ROOT;
const BASE = process.env.DAP_BASE ?? 'localhost:5055/busybox';
const WORK = process.env.DAP_WORK;
const TIMEOUT = Number(process.env.DAP_TIMEOUT ?? 90_000); // a build of a tiny Dockerfile on a loaded 2-core machine

/** A DebugClient that spawns the adapter's whole argv (the library spawns `runtime executable` only) and keeps
 * every event and the adapter's stderr, to show when a test fails. */
class WorkbenchClient extends DebugClient {
  constructor() {
    super(ADAPTER[0], ADAPTER[1], 'dockerfile');
    this.defaultTimeout = TIMEOUT;
    this.events = [];
    this.stderr = '';
    this.waiting = new Map(); // seq → command of the requests not answered yet
  }

  start() {
    this.proc = spawn(ADAPTER[0], ADAPTER.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    this._adapterProcess = this.proc;
    this.proc.stderr.on('data', (d) => { this.stderr += d; });
    // 'close': after its last frame was read; what still waits on it fails, saying so, rather than hang
    this.exit = new Promise((resolve) => this.proc.on('close', (code, signal) => {
      this.gone = `the adapter exited (code ${code}, signal ${signal})`;
      for (const clb of this.pendingRequests.values()) clb({ success: false, message: this.gone });
      this.pendingRequests.clear();
      this.emit('adapter-gone');
      resolve({ code, signal });
    }));
    this.connect(this.proc.stdout, this.proc.stdin);
    return Promise.resolve();
  }

  waitForEvent(eventType, timeout) {
    const event = super.waitForEvent(eventType, timeout);
    const gone = new Promise((_, reject) => {
      const fail = () => reject(new Error(`${this.gone} before the event '${eventType}'`));
      if (this.gone) fail();
      else this.once('adapter-gone', fail);
    });
    const either = Promise.race([event, gone]);
    either.catch(() => {}); // a waiter the test never reached (it failed before) is no unhandled rejection
    return either;
  }

  /** Over TCP: `workbench dap --listen 127.0.0.1:0`, the port read from its stderr line. */
  async startListening() {
    this.server = spawn(ADAPTER[0], [...ADAPTER.slice(1), '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const port = await new Promise((resolve, reject) => {
      this.server.stderr.on('data', (d) => {
        this.stderr += d;
        const m = /workbench dap: listening on 127\.0\.0\.1:(\d+)/.exec(this.stderr);
        if (m) resolve(Number(m[1]));
      });
      this.server.on('exit', (code) => reject(new Error(`the adapter exited (${code}) before listening`)));
    });
    await super.start(port);
  }

  doSend(command, args, clb) {
    const seq = this.sequence;
    this.waiting.set(seq, command);
    super.doSend(command, args, (response) => { this.waiting.delete(seq); clb(response); });
  }

  dispatch(body) {
    const message = JSON.parse(body);
    if (message.type === 'event') this.events.push(message);
    super.dispatch(body);
  }

  output(category) {
    return this.events.filter((e) => e.event === 'output' && (!category || e.body.category === category))
      .map((e) => e.body.output).join('');
  }
}

const clients = [];
after(() => {
  for (const dc of clients) {
    dc.stopAdapter();
    dc.server?.kill();
  }
});

/** Runs `body` with a started client; a failure carries the adapter's stderr and the build's output. */
async function session(body, { listen = false } = {}) {
  const dc = new WorkbenchClient();
  clients.push(dc);
  if (listen) await dc.startListening();
  else await dc.start();
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no progress for a while; unanswered: ${[...dc.waiting.values()]}; `
      + `last events: ${dc.events.slice(-5).map((e) => e.event)}`)), TIMEOUT - 5000);
  });
  try {
    await Promise.race([body(dc), late]);
  } catch (err) {
    err.message += `\n--- adapter stderr ---\n${dc.stderr.slice(-3000)}\n--- output events ---\n${dc.output().slice(-3000)}`;
    throw err;
  } finally {
    clearTimeout(timer);
    dc.stopAdapter();
    dc.server?.kill();
  }
}

let contexts = 0;
/** A build context holding `dockerfile` (lines joined); returns the Dockerfile's absolute path. */
function project(lines) {
  const dir = path.join(WORK, `ctx${++contexts}`);
  fs.mkdirSync(dir, { recursive: true });
  const dockerfile = path.join(dir, 'Dockerfile');
  fs.writeFileSync(dockerfile, lines.join('\n') + '\n');
  return dockerfile;
}

function launchArgs(dockerfile, extra = {}, flags = []) {
  return { dockerfile, contextPath: path.dirname(dockerfile), args: ['--root', ROOT, ...flags], ...extra };
}

/** initialize, launch, breakpoints on `lines`, configurationDone: the order an editor sends them. */
async function configure(dc, dockerfile, lines, extra = {}, flags = []) {
  const initialized = dc.waitForEvent('initialized');
  await dc.launch(launchArgs(dockerfile, extra, flags));
  await initialized;
  const bps = await dc.setBreakpointsRequest({ source: { path: dockerfile }, breakpoints: lines.map((line) => ({ line })) });
  await dc.configurationDoneRequest();
  return bps.body.breakpoints;
}

/** Sends `request` and checks the stop it causes (listening first: the event may come with the response). */
async function stepTo(dc, request, reason, dockerfile, line) {
  const stopped = dc.assertStoppedLocation(reason, { path: dockerfile, line });
  await request();
  return stopped;
}

/** The variables of a reference (a scope or an expandable directory). */
async function variables(dc, reference) {
  const res = await dc.variablesRequest({ variablesReference: reference });
  return res.body.variables;
}

async function scopes(dc, frameId) {
  const res = await dc.scopesRequest({ frameId });
  return Object.fromEntries(res.body.scopes.map((s) => [s.name, s]));
}

function byName(vars) {
  return Object.fromEntries(vars.map((v) => [v.name, v]));
}

/** The final continue: `exited` with the build's exit code, then `terminated`. */
async function continueToEnd(dc, exitCode) {
  const exited = dc.waitForEvent('exited');
  const terminated = dc.waitForEvent('terminated');
  await dc.continueRequest({ threadId: 1 });
  assert.equal((await exited).body.exitCode, exitCode);
  await terminated;
  const order = dc.events.map((e) => e.event).filter((e) => e === 'exited' || e === 'terminated');
  assert.deepEqual(order, ['exited', 'terminated']);
}

/** What is left under the root: mounts in this process's mount table, runc containers in any build's state. */
function leftovers() {
  const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(ROOT));
  const containers = [];
  const tmp = path.join(ROOT, 'tmp');
  for (const entry of fs.existsSync(tmp) ? fs.readdirSync(tmp) : []) {
    const state = path.join(tmp, entry, 'runc');
    if (!fs.existsSync(state)) continue;
    const out = execFileSync('runc', ['--root', state, 'list', '--format', 'json'], { encoding: 'utf8' });
    for (const c of JSON.parse(out || 'null') ?? []) containers.push(`${c.id} (${c.status})`);
  }
  return { mounts, containers };
}

test('initialize, launch and breakpoint verification, without building', { timeout: TIMEOUT }, () => session(async (dc) => {
  const dockerfile = project([`FROM ${BASE}`, '# a comment', '', 'RUN echo verify > /v', 'ENV A=1',
    'RUN echo multi \\', '    && echo line']);
  const initialized = dc.waitForEvent('initialized'); // it may come with the initialize response
  const init = await dc.initializeRequest();
  const caps = init.body;
  assert.equal(caps.supportsConfigurationDoneRequest, true);
  assert.equal(caps.supportsTerminateRequest, true);
  assert.ok(!caps.supportsStepBack && !caps.supportsSetVariable && !caps.supportsRestartRequest);
  assert.deepEqual(caps.exceptionBreakpointFilters.map((f) => [f.filter, f.default]), [['error', true]]);
  await dc.launchRequest(launchArgs(dockerfile));
  await initialized;
  const lines = [2, 4, 3, 7, 5];
  const res = await dc.setBreakpointsRequest({ source: { path: dockerfile }, breakpoints: lines.map((line) => ({ line })) });
  const [comment, run, blank, continued, env] = res.body.breakpoints;
  assert.equal(run.verified, true);
  assert.equal(run.line, 4);
  assert.equal(comment.verified, false);
  assert.equal(comment.message, 'no build step at line 2');
  assert.equal(blank.verified, false);
  assert.equal(blank.message, 'no build step at line 3');
  assert.deepEqual([continued.verified, continued.line], [true, 6]); // the instruction's first line
  assert.deepEqual([env.verified, env.message], [false, 'no build step at line 5']);
  const threads = await dc.threadsRequest();
  assert.deepEqual(threads.body.threads.map((t) => [t.id, t.name]), [[1, 'build']]);
  await assert.rejects(dc.evaluateRequest({ expression: 'true', context: 'repl' }), /the build is not stopped at a step/);
  await dc.disconnectRequest({ terminateDebuggee: true });
  assert.deepEqual(await dc.exit, { code: 0, signal: null });
}));

test('a bad build flag fails the launch request, naming the flag', { timeout: TIMEOUT }, () => session(async (dc) => {
  const dockerfile = project([`FROM ${BASE}`, 'RUN true']);
  await dc.initializeRequest();
  await assert.rejects(dc.launchRequest(launchArgs(dockerfile, {}, ['--no-such-flag'])), /--no-such-flag/);
}));

test('a breakpoint stops at its line with the step, environment and build args', { timeout: TIMEOUT }, () => session(async (dc) => {
  const dockerfile = project([
    `FROM ${BASE}`, // 1
    'ARG COLOR', // 2
    'ENV GREETING=hello', // 3
    'WORKDIR /app', // 4
    'RUN echo one > /one', // 5
    'RUN --mount=type=secret,id=tok cat /one && echo $COLOR', // 6
  ]);
  const secret = path.join(WORK, 'token.txt');
  fs.writeFileSync(secret, 'tok-s3cr3t-value');
  const launch = launchArgs(dockerfile, {}, ['--build-arg', 'COLOR=blue', '--secret', `id=tok,src=${secret}`]);
  const stoppedEvent = dc.waitForEvent('stopped');
  await dc.hitBreakpoint(launch, { path: dockerfile, line: 6 });
  const { body } = await stoppedEvent;
  assert.deepEqual([body.threadId, body.allThreadsStopped], [1, true]);
  const trace = await dc.stackTraceRequest({ threadId: 1 });
  const [top, below] = trace.body.stackFrames;
  assert.match(top.name, /RUN (--mount=\S+ )?cat \/one && echo /);
  assert.equal(top.source.path, dockerfile);
  assert.equal(below.line, 5);
  assert.match(below.name, /RUN echo one > \/one/);
  const all = await scopes(dc, top.id);
  assert.deepEqual(Object.keys(all), ['Step', 'Environment', 'Build args', 'Mounts', 'Filesystem']);
  assert.equal(all.Filesystem.expensive, true);
  const step = byName(await variables(dc, all.Step.variablesReference));
  assert.match(step.step.value, /RUN (--mount=\S+ )?cat \/one && echo /);
  assert.equal(step.line.value, '6');
  assert.match(step.command.value, /cat \/one && echo /);
  assert.equal(step.workdir.value, '/app');
  assert.ok(!('error' in step), 'no error before a failure');
  const env = byName(await variables(dc, all.Environment.variablesReference));
  assert.equal(env.GREETING.value, 'hello');
  assert.match(step.platform.value, /^linux\/[a-z0-9]+/);
  assert.ok('user' in step && 'reason' in step, Object.keys(step));
  const args = byName(await variables(dc, all['Build args'].variablesReference));
  assert.equal(args.COLOR.value, 'blue');
  const mounts = byName(await variables(dc, all.Mounts.variablesReference));
  assert.equal(mounts['/run/secrets/tok'].value, 'type=secret'); // never its content nor its source
  // the filesystem before the step: the one the previous step left, the paused one not run yet
  const root = byName(await variables(dc, all.Filesystem.variablesReference));
  assert.ok(root['one'], `/one in ${Object.keys(root)}`);
  assert.ok(root['app/'].variablesReference > 0);
  await continueToEnd(dc, 0);
  assert.match(dc.output(), /build finished/);
  const everything = JSON.stringify(dc.events);
  assert.ok(!everything.includes('tok-s3cr3t-value') && !everything.includes(secret), 'the secret reached an event');
}));

test('noDebug builds without stopping; then a breakpoint on the cached step stops and says it runs again', { timeout: TIMEOUT }, async () => {
  const dockerfile = project([`FROM ${BASE}`, 'RUN echo cached-once > /c', 'RUN echo after > /a']);
  await session(async (dc) => {
    const stops = [];
    dc.on('stopped', (e) => stops.push(e.body.reason));
    await configure(dc, dockerfile, [2], { noDebug: true });
    const exited = await dc.waitForEvent('exited');
    assert.equal(exited.body.exitCode, 0);
    assert.deepEqual(stops, []);
  });
  await session(async (dc) => {
    const stopped = dc.assertStoppedLocation('breakpoint', { path: dockerfile, line: 2 });
    const [bp] = await configure(dc, dockerfile, [2]);
    assert.equal(bp.verified, true); // cached, still a place to stop
    await stopped;
    assert.match(dc.output('important'), /RUN echo cached-once.*runs again.*cached/);
    await continueToEnd(dc, 0);
  });
});

test('next goes step by step through a multi-stage build', { timeout: TIMEOUT }, () => session(async (dc) => {
  const dockerfile = project([
    `FROM ${BASE} AS first`, // 1
    'RUN echo a > /a', // 2
    'RUN echo b > /b', // 3
    `FROM ${BASE}`, // 4
    'COPY --from=first /a /a', // 5
    'RUN cat /a > /copied', // 6
  ]);
  const stopped = dc.assertStoppedLocation('breakpoint', { path: dockerfile, line: 2 });
  const [bp] = await configure(dc, dockerfile, [2]);
  assert.equal(bp.verified, true);
  await stopped;
  const next = () => dc.nextRequest({ threadId: 1 });
  await stepTo(dc, next, 'step', dockerfile, 3);
  await stepTo(dc, next, 'step', dockerfile, 5); // into the second stage
  const trace = await stepTo(dc, next, 'step', dockerfile, 6);
  const lines = trace.body.stackFrames.map((f) => f.line);
  assert.equal(lines[1], 5, `frames ${lines}`);
  assert.ok(lines.includes(3) && lines.slice(1).every((l) => l < 6), `frames ${lines}`); // stage first's too
  await continueToEnd(dc, 0);
}));

/** Expands the Filesystem scope down `parts` (directories named with their trailing slash). */
async function findFile(dc, reference, parts) {
  let vars = byName(await variables(dc, reference));
  for (const dir of parts.slice(0, -1)) {
    assert.ok(vars[dir], `${dir} not in ${Object.keys(vars)}`);
    assert.ok(vars[dir].variablesReference > 0, `${dir} cannot be expanded`);
    vars = byName(await variables(dc, vars[dir].variablesReference));
  }
  const last = parts[parts.length - 1];
  assert.ok(vars[last], `${last} not in ${Object.keys(vars)}`);
  return vars[last];
}

test('a failed step stops with its error and the filesystem it left', { timeout: TIMEOUT }, () => session(async (dc) => {
  const dockerfile = project([
    `FROM ${BASE}`, // 1
    'RUN mkdir -p /out/deep && echo partial > /out/deep/half.txt && ln -s half.txt /out/deep/link && exit 3', // 2
  ]);
  const stoppedEvent = dc.waitForEvent('stopped');
  await configure(dc, dockerfile, []); // break on error is on by default
  const stopped = await stoppedEvent;
  assert.equal(stopped.body.reason, 'exception');
  assert.equal(stopped.body.threadId, 1);
  assert.match(`${stopped.body.text} ${stopped.body.description}`, /exit code:? 3/);
  const [top] = (await dc.stackTraceRequest({ threadId: 1 })).body.stackFrames;
  assert.equal(top.line, 2);
  const info = await dc.exceptionInfoRequest({ threadId: 1 });
  assert.match(`${info.body.exceptionId} ${info.body.description}`, /exit code:? 3/);
  const all = await scopes(dc, top.id);
  const step = byName(await variables(dc, all.Step.variablesReference));
  assert.match(step.error.value, /exit code:? 3/);
  const half = await findFile(dc, all.Filesystem.variablesReference, ['out/', 'deep/', 'half.txt']);
  assert.match(half.value, /^-/); // a regular file, ls -l style
  assert.match(half.value, /\b8\b/); // "partial\n"
  assert.equal(half.variablesReference, 0);
  const link = await findFile(dc, all.Filesystem.variablesReference, ['out/', 'deep/', 'link']);
  assert.match(link.value, /-> half\.txt$/);
  const out = await dc.evaluateRequest({ expression: 'cat /out/deep/half.txt', context: 'repl', frameId: top.id });
  assert.match(out.body.result, /partial/);
  await continueToEnd(dc, 1);
  assert.match(dc.output(), /build failed: /);
}));

test('with the error filter off a failed step does not stop', { timeout: TIMEOUT }, () => session(async (dc) => {
  const dockerfile = project([`FROM ${BASE}`, 'RUN echo nofilter && exit 5']);
  const stops = [];
  dc.on('stopped', (e) => stops.push(e.body.reason));
  const exited = dc.waitForEvent('exited');
  const terminated = dc.waitForEvent('terminated');
  const initialized = dc.waitForEvent('initialized');
  await dc.launch(launchArgs(dockerfile));
  await initialized;
  await dc.setExceptionBreakpointsRequest({ filters: [] });
  await dc.configurationDoneRequest();
  assert.equal((await exited).body.exitCode, 1);
  await terminated;
  assert.deepEqual(stops, []);
  assert.match(dc.output('stdout'), /^nofilter$/m); // the step's own log line
  assert.match(dc.output('console'), /RUN echo nofilter && exit 5/); // the progress lines
}));

test('evaluate runs a command in the paused step', { timeout: TIMEOUT }, () => session(async (dc) => {
  const dockerfile = project([
    `FROM ${BASE}`, // 1
    'ENV FOO=bar', // 2
    'WORKDIR /w', // 3
    'RUN echo x > /x', // 4
  ]);
  // stopOnEntry: before the first step that runs (which one depends on the cache), then the breakpoint
  const entry = dc.waitForEvent('stopped');
  await configure(dc, dockerfile, [4], { stopOnEntry: true });
  assert.equal((await entry).body.reason, 'entry');
  await stepTo(dc, () => dc.continueRequest({ threadId: 1 }), 'breakpoint', dockerfile, 4);
  const [top] = (await dc.stackTraceRequest({ threadId: 1 })).body.stackFrames;
  const evaluate = (expression) => dc.evaluateRequest({ expression, context: 'repl', frameId: top.id });
  const res = await evaluate('echo "$FOO"; pwd; test -e /x || echo no-x-yet; cat /etc/hosts');
  const lines = res.body.result.split('\n');
  assert.equal(lines[0], 'bar', res.body.result);
  assert.equal(lines[1], '/w', res.body.result);
  assert.equal(lines[2], 'no-x-yet', res.body.result); // paused before the step: it has not run
  assert.match(lines.slice(3).join('\n'), /127\.0\.0\.1\s+localhost/, res.body.result); // the step's /etc/hosts
  assert.match((await evaluate('echo oops >&2; exit 4')).body.result, /oops[\s\S]*exit code 4/);
  // this client did not say supportsRunInTerminalRequest
  await assert.rejects(evaluate('exec'), /terminal/);
  await continueToEnd(dc, 0);
  await assert.rejects(evaluate('true'), /the build is not stopped at a step/);
}));

test('disconnect at a pause aborts the build and leaves nothing mounted or running', { timeout: TIMEOUT }, () => session(async (dc) => {
  const dockerfile = project([`FROM ${BASE}`, 'RUN echo p > /p', 'RUN echo q > /q', 'RUN echo r > /r']);
  const stopped = dc.assertStoppedLocation('breakpoint', { path: dockerfile, line: 3 });
  await configure(dc, dockerfile, [3]);
  await stopped;
  const res = await dc.evaluateRequest({ expression: 'cat /p', context: 'repl' });
  assert.match(res.body.result, /^p/);
  const terminated = dc.waitForEvent('terminated');
  await dc.disconnectRequest({ terminateDebuggee: true });
  await terminated;
  assert.deepEqual(await dc.exit, { code: 0, signal: null }); // the adapter exits after disconnect (stdio)
  assert.deepEqual(leftovers(), { mounts: [], containers: [] });
  const stops = dc.events.filter((e) => e.event === 'stopped').length;
  assert.equal(stops, 1, 'no stop after the disconnect');
}));

test('disconnect while a step runs kills its container', { timeout: TIMEOUT }, () => session(async (dc) => {
  // the output says started-2, which the step's name (in the progress lines) does not
  const dockerfile = project([`FROM ${BASE}`, 'RUN echo started-$((1+1)) && sleep 600']);
  const stdout = new Promise((resolve) => dc.on('output', (e) => { if (/started-2/.test(e.body.output)) resolve(); }));
  await configure(dc, dockerfile, []);
  await stdout; // the step's own output: its container runs
  assert.ok(leftovers().containers.length > 0, 'the step is running');
  await dc.disconnectRequest({ terminateDebuggee: true });
  assert.deepEqual(await dc.exit, { code: 0, signal: null });
  assert.deepEqual(leftovers(), { mounts: [], containers: [] });
}));

test('pause stops before the next step; terminate ends the build and leaves nothing', { timeout: TIMEOUT }, () => session(async (dc) => {
  const dockerfile = project([`FROM ${BASE}`, 'RUN echo paused-$((1+1)) && sleep 3', 'RUN echo never > /n']);
  const running = new Promise((resolve) => dc.on('output', (e) => { if (/paused-2/.test(e.body.output)) resolve(); }));
  await configure(dc, dockerfile, []);
  await running;
  await stepTo(dc, () => dc.pauseRequest({ threadId: 1 }), 'pause', dockerfile, 3);
  const exited = dc.waitForEvent('exited');
  const terminated = dc.waitForEvent('terminated');
  await dc.terminateRequest({});
  assert.equal((await exited).body.exitCode, 1);
  await terminated;
  assert.deepEqual(leftovers(), { mounts: [], containers: [] });
  await dc.disconnectRequest({});
  assert.deepEqual(await dc.exit, { code: 0, signal: null });
}));

test('over TCP: --listen serves a session', { timeout: TIMEOUT }, () => session(async (dc) => {
  const dockerfile = project([`FROM ${BASE}`, 'RUN echo tcp > /t']);
  const stopped = dc.assertStoppedLocation('breakpoint', { path: dockerfile, line: 2 });
  await configure(dc, dockerfile, [2]);
  await stopped;
  await continueToEnd(dc, 0);
  await dc.disconnectRequest({});
}, { listen: true }));
