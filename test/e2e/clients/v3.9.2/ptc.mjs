// Drives codeexec's programmatic tool calling with the real client,
// @librechat/agents 3.9.2: createProgrammaticToolCallingTool (Python) and
// createBashProgrammaticToolCallingTool, invoked the way LibreChat's ToolNode
// invokes run_tools_with_code / run_tools_with_bash: a tool call object
// carrying toolMap (name -> LangChain tool) and toolDefs, plus the abort
// signal of the run. The tools the code calls are implemented here and count
// their invocations, so each scenario can check that every tool ran exactly
// once.
//
//   node ptc.mjs <scenario>        (environment as for driver.mjs)
//
// Round-trip latency: in the `loop` scenarios each tool records when it
// starts and ends; the gap between one call's end and the next call's start
// is a whole round trip (client -> server -> code -> server -> client)
// without the tool's own time. Reported as details.round_trip_ms.

import { randomBytes } from 'node:crypto';
import { Reporter, readEnv, sha256, clip, errorText } from '../lib.mjs';

const env = readEnv();
const scenario = process.argv[2] ?? '';
process.env.LIBRECHAT_CODE_BASEURL = env.base;

const agents = await import('@librechat/agents');
const { createProgrammaticToolCallingTool, createBashProgrammaticToolCallingTool, getCodeBaseURL } = agents;
const { tool } = await import('@langchain/core/tools');
const { z } = await import('zod');
import axios from 'axios';

const rep = new Reporter(scenario);

async function authHeaders() {
  return env.auth === 'none' ? {} : { Authorization: `Bearer ${env.apiKey}` };
}

/** The agent's own tools, counting their calls. */
function makeTools() {
  const calls = [];
  const spans = [];
  const record = (name, input) => { calls.push({ name, input }); };
  const timed = (fn) => async (input) => {
    const start = performance.now();
    try {
      return await fn(input);
    } finally {
      spans.push([start, performance.now()]);
    }
  };
  const weather = tool(timed(async ({ city }) => {
    record('get-weather', { city });
    return JSON.stringify({ city, temp: city.length * 3 });
  }), { name: 'get-weather', description: 'weather of a city', schema: z.object({ city: z.string() }) });
  const add = tool(timed(async ({ a, b }) => {
    record('math.add', { a, b });
    return String(a + b);
  }), { name: 'math.add', description: 'adds two numbers', schema: z.object({ a: z.number(), b: z.number() }) });
  const fail = tool(timed(async ({ why }) => {
    record('flaky', { why });
    throw new Error(`flaky failed: ${why}`);
  }), { name: 'flaky', description: 'always fails', schema: z.object({ why: z.string() }) });
  const slow = tool(async ({ ms }) => {
    record('slow', { ms });
    await new Promise((r) => setTimeout(r, ms));
    return 'slept';
  }, { name: 'slow', description: 'sleeps', schema: z.object({ ms: z.number() }) });
  const list = [weather, add, fail, slow];
  const toolMap = new Map(list.map((t) => [t.name, t]));
  const toolDefs = list.map((t) => ({ name: t.name, description: t.description, parameters: {} }));
  return { calls, spans, toolMap, toolDefs };
}

/** One model turn calling run_tools_with_code/_bash, as ToolNode does. */
async function runPTC(kind, args, { tools = makeTools(), signal } = {}) {
  const params = { authHeaders: () => authHeaders(), executionProfile: 'default' };
  const t = kind === 'bash' ? createBashProgrammaticToolCallingTool(params) : createProgrammaticToolCallingTool(params);
  const name = kind === 'bash' ? 'run_tools_with_bash' : 'run_tools_with_code';
  const id = `call_ptc_${randomBytes(6).toString('hex')}`;
  let msg;
  try {
    msg = await t.invoke({
      id, name, args, type: 'tool_call',
      toolMap: tools.toolMap, toolDefs: tools.toolDefs, programmaticToolName: name,
    }, signal ? { signal } : undefined);
  } catch (err) {
    // The tool throws what LibreChat's ToolNode turns into an error message.
    return { status: 'thrown', content: errorText(err), tools };
  }
  const content = typeof msg.content === 'string' ? msg.content : JSON.stringify(msg.content);
  return { status: msg.status ?? 'success', content, artifact: msg.artifact, tools };
}

function gaps(spans) {
  const out = [];
  for (let i = 1; i < spans.length; i++) out.push(spans[i][0] - spans[i - 1][1]);
  return out;
}

function median(xs) {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function download(sessionId, fileId) {
  const r = await axios.get(`${getCodeBaseURL()}/download/${sessionId}/${fileId}`, {
    responseType: 'arraybuffer', headers: { 'User-Agent': 'LibreChat/1.0', ...(await authHeaders()) }, timeout: 15000,
  });
  return { bytes: Buffer.from(r.data), length: r.headers['content-length'] };
}

const sameCalls = (got, want) => JSON.stringify(got) === JSON.stringify(want);

const scenarios = {
  async py_two_tools() {
    await rep.check('two_tools', async () => {
      const r = await runPTC('py', { code: 'w = await get_weather(city="Paris")\ns = await mathadd(a=w["temp"], b=2)\nprint("paris", w["temp"], "sum", s)' });
      const want = [{ name: 'get-weather', input: { city: 'Paris' } }, { name: 'math.add', input: { a: 15, b: 2 } }];
      return { ok: r.status === 'success' && r.content.startsWith('stdout:\nparis 15 sum 17') && sameCalls(r.tools.calls, want), content: clip(r.content), calls: r.tools.calls };
    });
  },

  async py_loop() {
    await rep.check('loop_round_trips', async () => {
      const r = await runPTC('py', { code: 'total = 0\nfor i in range(12):\n    total += int(await mathadd(a=i, b=1))\nprint("total", total)' });
      const g = gaps(r.tools.spans);
      return {
        ok: r.status === 'success' && r.content.startsWith('stdout:\ntotal 78') && r.tools.calls.length === 12,
        content: clip(r.content), round_trip_ms: g.map((x) => Math.round(x * 10) / 10), round_trip_median_ms: median(g),
      };
    });
  },

  async py_parallel() {
    await rep.check('gather_in_one_round', async () => {
      const r = await runPTC('py', { code: 'a, b, c = await asyncio.gather(get_weather(city="SF"), get_weather(city="NYC"), get_weather(city="Rome"))\nprint(a["temp"], b["temp"], c["temp"])' });
      // One round trip: all three tools start before any of them ends.
      const starts = r.tools.spans.map((s) => s[0]);
      const ends = r.tools.spans.map((s) => s[1]);
      const oneRound = r.tools.spans.length === 3 && Math.max(...starts) <= Math.min(...ends);
      return { ok: r.status === 'success' && r.content.startsWith('stdout:\n6 9 12') && oneRound, content: clip(r.content), spans: r.tools.spans };
    });
  },

  async py_tool_error() {
    await rep.check('tool_throws', async () => {
      const r = await runPTC('py', { code: 'try:\n    await flaky(why="disk on fire")\nexcept Exception as e:\n    print("caught:", e)\nprint(await get_weather(city="Oslo"))' });
      return { ok: r.status === 'success' && r.content.startsWith("stdout:\ncaught: flaky failed: disk on fire\n{'city': 'Oslo', 'temp': 12}") && r.tools.calls.length === 2, content: clip(r.content) };
    });
  },

  async py_files() {
    await rep.check('files_written_and_downloaded', async () => {
      const r = await runPTC('py', { code: 'w = await get_weather(city="Lima")\nimport json\nwith open("/mnt/data/lima.json", "w") as f:\n    json.dump(w, f)\nprint("saved")' });
      const f = (r.artifact?.files ?? []).find((x) => x.name === 'lima.json');
      if (f == null) return { ok: false, content: clip(r.content), artifact: r.artifact };
      const got = await download(r.artifact.session_id, f.id);
      const want = '{"city": "Lima", "temp": 12}';
      return { ok: r.status === 'success' && got.bytes.toString() === want && Number(got.length) === want.length && f.size === want.length, content: clip(r.content), file: f, got: got.bytes.toString() };
    });
  },

  async py_user_exception() {
    await rep.check('exception_after_tool_call', async () => {
      const r = await runPTC('py', { code: 'w = await get_weather(city="Kyiv")\nprint("before", w["temp"])\nraise ValueError("bad value " + w["city"])' });
      return {
        ok: r.status === 'success' && r.content.startsWith('stdout:\nbefore 12') && r.content.includes('ValueError: bad value Kyiv') && r.content.includes('Traceback (most recent call last)') && !r.content.includes('runner.py') && r.tools.calls.length === 1,
        content: clip(r.content, 1500),
      };
    });
  },

  async bash_sequential() {
    await rep.check('bash_sequential', async () => {
      const r = await runPTC('bash', { code: 'w=$(get_weather \'{"city": "Bern"}\')\necho "weather: $w"\ns=$(math_add \'{"a": 2, "b": 40}\')\necho "sum: $s"\nif ! flaky \'{"why": "no"}\' 2>/tmp/err; then echo "failed with: $(cat /tmp/err)"; fi' });
      return {
        ok: r.status === 'success' && r.content.startsWith('stdout:\nweather: {"city":"Bern","temp":12}\nsum: 42\nfailed with: flaky failed: no') && r.tools.calls.length === 3,
        content: clip(r.content),
      };
    });
  },

  async bash_background() {
    await rep.check('bash_background_jobs', async () => {
      const r = await runPTC('bash', { code: '{ a=$(get_weather \'{"city": "SF"}\'); printf \'%s\\n\' "$a" > /mnt/data/sf.json; } &\n{ b=$(get_weather \'{"city": "NYC"}\'); printf \'%s\\n\' "$b" > /mnt/data/ny.json; } &\nwait\necho "SF: $(cat /mnt/data/sf.json)"\necho "NY: $(cat /mnt/data/ny.json)"' });
      const names = (r.artifact?.files ?? []).map((f) => f.name).sort();
      return {
        ok: r.status === 'success' && r.content.startsWith('stdout:\nSF: {"city":"SF","temp":6}\nNY: {"city":"NYC","temp":9}') && r.tools.calls.length === 2 && sameCalls(names, ['ny.json', 'sf.json']),
        content: clip(r.content), files: names,
      };
    });
  },

  async bash_loop() {
    await rep.check('bash_loop_round_trips', async () => {
      const r = await runPTC('bash', { code: 't=0\nfor i in 1 2 3 4 5 6 7 8; do t=$(math_add "{\\"a\\": $t, \\"b\\": $i}"); done\necho "total $t"' });
      const g = gaps(r.tools.spans);
      return { ok: r.status === 'success' && r.content.startsWith('stdout:\ntotal 36') && r.tools.calls.length === 8, content: clip(r.content), round_trip_ms: g.map((x) => Math.round(x * 10) / 10), round_trip_median_ms: median(g) };
    });
  },

  async py_timeout() {
    // The sandbox time limit (timeout) counts sandbox time only: a long
    // tool does not use it up, code that spins does.
    await rep.check('pause_not_charged', async () => {
      const r = await runPTC('py', { code: 'print(await slow(ms=3000))', timeout: 2000 });
      return { ok: r.status === 'success' && r.content.startsWith('stdout:\nslept'), content: clip(r.content) };
    });
    await rep.check('spinning_code_times_out', async () => {
      const r = await runPTC('py', { code: 'await get_weather(city="X")\nwhile True:\n    pass', timeout: 2000 });
      return { ok: r.status === 'thrown' && r.content.includes('Programmatic execution failed: Code execution failed. Execution exceeded the time limit.') && r.content.includes('[codeexec] execution stopped: time limit exceeded') && r.tools.calls.length === 1, content: clip(r.content) };
    });
  },

  async pause_expires() {
    // The tool takes longer than the server's pause limit (set by the Go test).
    await rep.check('continuation_after_pause_limit', async () => {
      const ms = Number(process.env.E2E_PTC_PAUSE_MS ?? '4000') + 2000;
      const r = await runPTC('py', { code: `print(await slow(ms=${ms}))` });
      return { ok: r.status === 'thrown' && r.content.includes('Programmatic execution failed: Code execution is temporarily unavailable') && r.tools.calls.length === 1, content: clip(r.content) };
    });
  },

  async cancel() {
    await rep.check('abort_cancels_run', async () => {
      const ac = new AbortController();
      const t0 = Date.now();
      setTimeout(() => ac.abort(), 1500);
      const r = await runPTC('py', { code: 'import time\nfor i in range(60):\n    time.sleep(0.5)\nprint(await get_weather(city="never"))', timeout: 60000 }, { signal: ac.signal });
      // Give the client's fire-and-forget cancel request time to land.
      await new Promise((res) => setTimeout(res, 1000));
      return { ok: r.status === 'thrown' && r.tools.calls.length === 0 && Date.now() - t0 < 20000, elapsed_ms: Date.now() - t0, content: clip(r.content) };
    });
  },

  async two_instances() {
    await rep.check('loop_across_instances', async () => {
      const r = await runPTC('py', { code: 'import os\nn = 0\nfor c in ["A", "BB", "CCC", "DDDD"]:\n    n += (await get_weather(city=c))["temp"]\n    with open("/mnt/data/log.txt", "a") as f:\n        f.write(c + "\\n")\nprint("sum", n)' });
      const f = (r.artifact?.files ?? []).find((x) => x.name === 'log.txt');
      const got = f ? (await download(r.artifact.session_id, f.id)).bytes.toString() : null;
      const want = ['A', 'BB', 'CCC', 'DDDD'].map((c) => ({ name: 'get-weather', input: { city: c } }));
      return { ok: r.status === 'success' && r.content.startsWith('stdout:\nsum 30') && sameCalls(r.tools.calls, want) && got === 'A\nBB\nCCC\nDDDD\n', content: clip(r.content), calls: r.tools.calls, log: got };
    });
    await rep.check('bash_across_instances', async () => {
      const r = await runPTC('bash', { code: 'a=$(math_add \'{"a": 1, "b": 2}\')\nb=$(math_add "{\\"a\\": $a, \\"b\\": 3}")\necho "got $b"' });
      return { ok: r.status === 'success' && r.content.startsWith('stdout:\ngot 6') && r.tools.calls.length === 2, content: clip(r.content), calls: r.tools.calls };
    });
  },
};

const fn = scenarios[scenario];
if (fn == null) {
  process.stderr.write(`unknown scenario ${JSON.stringify(scenario)}; known: ${Object.keys(scenarios).join(' ')}\n`);
  process.exit(2);
}
try {
  await fn();
} catch (err) {
  rep.emit('driver', false, { error: errorText(err), stack: clip(err?.stack, 1500) });
}
if (rep.count === 0) rep.emit('driver', false, { error: 'scenario produced no checks' });
process.exit(rep.failed > 0 ? 1 : 0);
