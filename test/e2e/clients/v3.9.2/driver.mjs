// Drives codeexec with the real current-generation LibreChat client,
// @librechat/agents 3.9.2 (pinned in package-lock.json next to this file).
//
//   node driver.mjs <scenario>
//
// Environment: E2E_BASE_URL (e.g. http://127.0.0.1:PORT/v1), E2E_AUTH
// (key | none | wrong), E2E_API_KEY, E2E_USER_ID. See ../lib.mjs for the
// output protocol.
//
// How LibreChat (>= v0.8.6) is reproduced, without an LLM:
// * execute_code / bash_tool are the package's own createCodeExecutionTool /
//   createBashExecutionTool, built with the params LibreChat's handleTools
//   passes: { user_id, files, authHeaders, ...codeExecutionContext } where
//   codeExecutionContext carries codeSessionKey and executionProfile:'default'.
//   authHeaders is a callback returning { Authorization: 'Bearer <key>' }
//   (LibreChat's getCodeApiAuthHeaders with JWT minting on) or {} (off).
// * Calls go through the package's own ToolNode (the graph's tool node),
//   invoked with an AIMessage carrying tool_calls, exactly as the agent graph
//   does after a model turn. The ToolNode keeps the per-run code session
//   (sessions Map) and injects session_id + _injected_files into the next
//   execute_code/bash_tool call (toInjectedFileRef / updateCodeSession).
// * Upload, batch upload, freshness probe and download are LibreChat's own
//   axios + form-data requests (LibreChat api/server/services/Files/Code/
//   crud.js and process.js; not part of @librechat/agents), reproduced here
//   with the same libraries, fields, headers and timeouts.
// * The base URL comes from LIBRECHAT_CODE_BASEURL, as in LibreChat.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import axios from 'axios';
import FormData from 'form-data';
import {
  Reporter, readEnv, sha256, reportBytes, pyWriteFile, pyHashFile, hashLine,
  goodFileId, contentText, clip, uploadSamples, pyHashFiles, expectedHashLines,
  errorText, cleanRun, failedRun,
} from '../lib.mjs';

const env = readEnv();
const scenario = process.argv[2] ?? '';

// LibreChat sets LIBRECHAT_CODE_BASEURL; 3.9.2 reads it when a tool is built.
let baseUrl = env.base;
if (scenario === 'root_base_url') baseUrl = env.base.replace(/\/v1\/?$/, '');
process.env.LIBRECHAT_CODE_BASEURL = baseUrl;

const agents = await import('@librechat/agents');
const { ToolNode, AIMessage, createCodeExecutionTool, createBashExecutionTool, getCodeBaseURL } = agents;

const rep = new Reporter(scenario);
const USER_ID = env.userId;

function bearerKey() {
  if (env.auth === 'none') return null;
  if (env.auth === 'wrong') return `wrong-${env.apiKey || 'key'}`;
  return env.apiKey;
}

/** LibreChat's getCodeApiAuthHeaders: {} or { Authorization: 'Bearer …' }. */
async function authHeaders() {
  const key = bearerKey();
  return key == null ? {} : { Authorization: `Bearer ${key}` };
}

/** createCodeExecutionTool/createBashExecutionTool params as LibreChat builds them. */
function toolParams(files) {
  return {
    user_id: USER_ID,
    files,
    authHeaders: () => authHeaders(),
    codeSessionKey: 'execute_code',
    executionProfile: 'default',
  };
}

/** One agent run: a ToolNode with a fresh code-session store. */
function newRun(files = []) {
  const sessions = new Map();
  const node = new ToolNode({
    tools: [createCodeExecutionTool(toolParams(files)), createBashExecutionTool(toolParams(files))],
    sessions,
    codeSessionKey: 'execute_code',
  });
  let seq = 0;
  const history = [];
  const artifacts = [];
  /** A model turn calling one tool; returns the ToolMessage. */
  async function call(name, args) {
    const id = `call_e2e_${++seq}_${Date.now().toString(36)}`;
    const ai = new AIMessage({ content: '', tool_calls: [{ id, name, args, type: 'tool_call' }] });
    const out = await node.invoke({ messages: [...history, ai] });
    const msgs = Array.isArray(out) ? out : out?.messages ?? [];
    const tm = msgs.find((m) => m?.tool_call_id === id);
    if (tm == null) throw new Error(`ToolNode returned no ToolMessage for ${id}: ${clip(JSON.stringify(out), 300)}`);
    history.push(ai, tm);
    if (tm.status !== 'error' && tm.artifact != null) artifacts.push(tm.artifact);
    return {
      status: tm.status ?? 'success',
      content: contentText(tm.content),
      artifact: tm.artifact,
    };
  }
  return { call, sessions, artifacts };
}

/**
 * LibreChat's processCodeOutput after every tool call: download each
 * non-inherited artifacts.files[i] from /download/{artifact.session_id}/{id}.
 */
async function processCodeOutputs(artifacts) {
  const out = [];
  for (const a of artifacts) {
    for (const f of a.files ?? []) {
      if (f.inherited === true) continue;
      try {
        const got = await downloadCodeOutput(a.session_id, f.id);
        out.push({ name: f.name, session_id: a.session_id, id: f.id, ok: true, len: got.length, size: f.size });
      } catch (err) {
        out.push({ name: f.name, session_id: a.session_id, id: f.id, ok: false, error: errorText(err) });
      }
    }
  }
  return out;
}

function summarize(r) {
  return { status: r.status, content: clip(r.content), artifact: r.artifact };
}

const ua = { 'User-Agent': 'LibreChat/1.0' };

/** LibreChat crud.js uploadCodeEnvFile (Phase-C): kind, id, [version], file. */
async function uploadCodeEnvFile({ stream, filename, filepath, kind, id }) {
  const form = new FormData();
  form.append('kind', kind);
  form.append('id', id);
  form.append('file', stream, filepath ? { filename, filepath } : filename);
  const response = await axios.post(`${getCodeBaseURL()}/upload`, form, {
    headers: {
      ...form.getHeaders(),
      'Content-Type': 'multipart/form-data',
      ...ua,
      'User-Id': USER_ID,
      ...(await authHeaders()),
    },
    timeout: 120000,
    maxContentLength: 150 * 1024 * 1024,
    maxBodyLength: 150 * 1024 * 1024,
  });
  const result = response.data;
  if (result.message !== 'success') throw new Error(`Error uploading file: ${result.message}`);
  return { raw: result, storage_session_id: result.storage_session_id, file_id: result.files[0].fileId };
}

/** LibreChat crud.js batchUploadCodeEnvFiles. */
async function batchUploadCodeEnvFiles({ files, kind, id, read_only = false }) {
  const form = new FormData();
  form.append('kind', kind);
  form.append('id', id);
  if (read_only) form.append('read_only', 'true');
  for (const f of files) form.append('file', f.stream, f.filename);
  const response = await axios.post(`${getCodeBaseURL()}/upload/batch`, form, {
    headers: {
      ...form.getHeaders(),
      'Content-Type': 'multipart/form-data',
      ...ua,
      'User-Id': USER_ID,
      ...(await authHeaders()),
    },
    timeout: 120000,
    maxContentLength: 150 * 1024 * 1024,
    maxBodyLength: 150 * 1024 * 1024,
  });
  const result = response.data;
  if (!result || typeof result !== 'object' || !result.storage_session_id || !Array.isArray(result.files)) {
    throw new Error(`Unexpected batch upload response: ${JSON.stringify(result).slice(0, 200)}`);
  }
  if (result.message === 'error') throw new Error('All files in batch upload failed');
  const successFiles = result.files
    .filter((f) => f.status === 'success' && f.fileId)
    .map((f) => ({ fileId: f.fileId, filename: f.filename }));
  return { raw: result, storage_session_id: result.storage_session_id, files: successFiles };
}

/** LibreChat process.js processCodeOutput download (arraybuffer, 15 s, ?kind=user&id=). */
async function downloadCodeOutput(sessionId, fileId) {
  const query = `?kind=user&id=${encodeURIComponent(USER_ID)}`;
  const response = await axios({
    method: 'get',
    url: `${getCodeBaseURL()}/download/${sessionId}/${fileId}${query}`,
    responseType: 'arraybuffer',
    headers: { ...ua, ...(await authHeaders()) },
    timeout: 15000,
  });
  return Buffer.from(response.data);
}

/** LibreChat process.js getSessionInfo (freshness probe before reusing an upload). */
async function getSessionInfo(storageSessionId, fileId) {
  const response = await axios({
    method: 'get',
    url: `${getCodeBaseURL()}/sessions/${storageSessionId}/objects/${fileId}?kind=user&id=${encodeURIComponent(USER_ID)}`,
    headers: { ...ua, ...(await authHeaders()) },
    timeout: 5000,
  });
  return response.data;
}

/** primeFiles' code-env ref for a user attachment (Phase C). */
function userFileRef(fileId, storageSessionId, name) {
  return { id: fileId, resource_id: USER_ID, storage_session_id: storageSessionId, name, kind: 'user' };
}

function okExec(r) {
  return r.status !== 'error' && typeof r.artifact?.session_id === 'string' && r.artifact.session_id !== '';
}

function tmpFile(name, bytes) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'codeexec-e2e-'));
  const p = path.join(dir, name);
  fs.writeFileSync(p, bytes);
  return p;
}

const scenarios = {
  async print() {
    const run = newRun();
    await rep.check('execute_code_py', async () => {
      const r = await run.call('execute_code', { lang: 'py', code: 'print("hello from codeexec", 6 * 7)' });
      return { ok: okExec(r) && cleanRun(r.content, 'hello from codeexec 42\n'), ...summarize(r) };
    });
  },

  async js() {
    const run = newRun();
    await rep.check('execute_code_js', async () => {
      const r = await run.call('execute_code', { lang: 'js', code: 'console.log("js says", [1, 2, 3].map((x) => x * 2).join(","))' });
      return { ok: okExec(r) && cleanRun(r.content, 'js says 2,4,6\n'), ...summarize(r) };
    });
  },

  async root_base_url() {
    const run = newRun();
    await rep.check('execute_code_at_root', async () => {
      const r = await run.call('execute_code', { lang: 'py', code: 'print("root ok")' });
      return { ok: okExec(r) && cleanRun(r.content, 'root ok\n'), baseUrl, ...summarize(r) };
    });
  },

  async files() {
    const run = newRun();
    const bytes = reportBytes();
    let written;
    await rep.check('write_report', async () => {
      const r = await run.call('execute_code', { lang: 'py', code: pyWriteFile('/mnt/data/report.txt', bytes) });
      written = r;
      const f = (r.artifact?.files ?? []).find((x) => x.name === 'report.txt');
      return {
        ok: okExec(r) && cleanRun(r.content, `written ${bytes.length}\n`) && f != null && goodFileId(f.id) && f.inherited !== true,
        ...summarize(r),
      };
    });
    const session = run.sessions.get('execute_code');
    await rep.check('session_tracked', async () => ({
      ok: session != null && (session.files ?? []).some((f) => f.name === 'report.txt'),
      session,
    }));
    await rep.check('read_next_call', async () => {
      const r = await run.call('execute_code', { lang: 'py', code: pyHashFile('/mnt/data/report.txt') });
      return { ok: okExec(r) && cleanRun(r.content, `${hashLine(bytes)}\n`), want: hashLine(bytes), ...summarize(r) };
    });
    await rep.check('read_via_bash_tool', async () => {
      const r = await run.call('bash_tool', { command: 'sha256sum /mnt/data/report.txt && wc -c < /mnt/data/report.txt' });
      return { ok: okExec(r) && cleanRun(r.content, `${sha256(bytes)}  /mnt/data/report.txt\n${bytes.length}\n`), ...summarize(r) };
    });
    await rep.check('download_byte_exact', async () => {
      const f = (written?.artifact?.files ?? []).find((x) => x.name === 'report.txt');
      if (f == null) return { ok: false, error: 'no report.txt in the write call artifact' };
      const got = await downloadCodeOutput(written.artifact.session_id, f.id);
      return { ok: got.equals(bytes), got_sha256: sha256(got), got_len: got.length, want_sha256: sha256(bytes), want_len: bytes.length };
    });
    await rep.check('modify_in_place', async () => {
      // Prior /mnt/data files can be modified in place (3.9.2 tool description).
      const r = await run.call('execute_code', {
        lang: 'py',
        code: 'open("/mnt/data/report.txt", "ab").write(b"appended\\n")\nprint("appended")',
      });
      const f = (r.artifact?.files ?? []).find((x) => x.name === 'report.txt' && x.inherited !== true);
      if (!okExec(r) || f == null) return { ok: false, ...summarize(r) };
      const got = await downloadCodeOutput(r.artifact.session_id, f.id);
      const want = Buffer.concat([bytes, Buffer.from('appended\n')]);
      const r2 = await run.call('execute_code', { lang: 'py', code: pyHashFile('/mnt/data/report.txt') });
      return {
        ok: got.equals(want) && okExec(r2) && cleanRun(r2.content, `${hashLine(want)}\n`),
        got_len: got.length, want_len: want.length, next: summarize(r2),
      };
    });
    await rep.check('process_code_output_all_calls', async () => {
      const downloads = await processCodeOutputs(run.artifacts);
      return { ok: downloads.length > 0 && downloads.every((d) => d.ok && (d.size == null || d.size === d.len)), downloads };
    });
  },

  async user_error() {
    const run = newRun();
    await rep.check('py_exception_is_stderr', async () => {
      const r = await run.call('execute_code', {
        lang: 'py',
        code: 'print("before")\ndef f():\n    raise ValueError("e2e-boom")\nf()',
      });
      return {
        ok: okExec(r) && failedRun(r.content, 'before', 'ValueError: e2e-boom\n') && r.content.includes('Traceback') &&
          !r.content.includes('Execution error'),
        ...summarize(r),
      };
    });
    await rep.check('bash_nonzero_exit_is_200', async () => {
      const r = await run.call('bash_tool', { command: 'echo out-line; echo err-line >&2; exit 7' });
      return {
        ok: okExec(r) && failedRun(r.content, 'out-line', 'err-line\n') &&
          !r.content.includes('Execution error'),
        ...summarize(r),
      };
    });
  },

  async bash() {
    const run = newRun();
    // LibreChat's own sandbox helpers run python3 heredocs through lang:'bash'.
    const heredoc = [
      'echo "bash-ok $((6*7))"',
      "python3 - <<'PY'",
      'import sys, json',
      'print("py-in-bash", sys.version_info[0], json.dumps({"a": 1}))',
      'PY',
    ].join('\n');
    await rep.check('bash_tool_heredoc', async () => {
      const r = await run.call('bash_tool', { command: heredoc });
      return { ok: okExec(r) && cleanRun(r.content, 'bash-ok 42\npy-in-bash 3 {"a": 1}\n'), ...summarize(r) };
    });
    await rep.check('execute_code_lang_bash', async () => {
      const r = await run.call('execute_code', { lang: 'bash', code: heredoc });
      return { ok: okExec(r) && cleanRun(r.content, 'bash-ok 42\npy-in-bash 3 {"a": 1}\n'), ...summarize(r) };
    });
    await rep.check('bash_writes_file_for_next_call', async () => {
      const r = await run.call('bash_tool', { command: 'mkdir -p /mnt/data/out && printf "x,y\\n1,2\\n" > /mnt/data/out/table.csv && echo done' });
      const f = (r.artifact?.files ?? []).find((x) => x.name === 'out/table.csv');
      if (!okExec(r) || f == null) return { ok: false, ...summarize(r) };
      const r2 = await run.call('execute_code', { lang: 'py', code: 'print(open("/mnt/data/out/table.csv").read().strip().replace("\\n", "|"))' });
      const downloads = await processCodeOutputs([r.artifact, r2.artifact]);
      return {
        ok: okExec(r2) && cleanRun(r2.content, 'x,y|1,2\n') && downloads.length > 0 && downloads.every((d) => d.ok),
        first: summarize(r), second: summarize(r2), downloads,
      };
    });
    await rep.check('args', async () => {
      const r = await run.call('execute_code', { lang: 'py', code: 'import sys\nprint("argv", sys.argv[1:])', args: ['a b', 'c'] });
      return { ok: okExec(r) && cleanRun(r.content, "argv ['a b', 'c']\n"), ...summarize(r) };
    });
  },

  async upload() {
    const s = uploadSamples.csv;
    let up;
    await rep.check('upload', async () => {
      up = await uploadCodeEnvFile({ stream: fs.createReadStream(tmpFile(s.filename, s.bytes)), filename: s.filename, kind: 'user', id: USER_ID });
      return { ok: typeof up.storage_session_id === 'string' && up.storage_session_id !== '' && goodFileId(up.file_id), response: up.raw };
    });
    if (up == null) return;
    await rep.check('freshness_probe', async () => {
      const info = await getSessionInfo(up.storage_session_id, up.file_id);
      const age = Date.now() - Date.parse(info?.lastModified);
      return { ok: Number.isFinite(age) && age > -60000 && age < 10 * 60000, info };
    });
    await rep.check('exec_with_upload', async () => {
      const run = newRun([userFileRef(up.file_id, up.storage_session_id, s.filename)]);
      const r = await run.call('execute_code', {
        lang: 'py',
        code: 'import csv\nrows = list(csv.DictReader(open("/mnt/data/sales.csv")))\nprint("total", sum(int(r["amount"]) for r in rows))\n' + pyHashFile('/mnt/data/sales.csv'),
      });
      // Unchanged inputs must come back inherited (or not at all): LibreChat downloads every other entry.
      const downloads = await processCodeOutputs([r.artifact ?? {}]);
      return {
        ok: okExec(r) && cleanRun(r.content, `total 42\n${hashLine(s.bytes)}\n`) && downloads.every((d) => d.ok),
        downloads, ...summarize(r),
      };
    });
  },

  async upload_nested() {
    // Nested names are sent with the full relative path as the filename.
    const bytes = Buffer.from('# nested\n', 'utf8');
    let up;
    await rep.check('upload_nested', async () => {
      up = await uploadCodeEnvFile({ stream: fs.createReadStream(tmpFile('a.md', bytes)), filename: 'a.md', filepath: 'docs/a.md', kind: 'user', id: USER_ID });
      return { ok: goodFileId(up.file_id), response: up.raw };
    });
    if (up == null) return;
    await rep.check('exec_with_nested', async () => {
      const run = newRun([userFileRef(up.file_id, up.storage_session_id, 'docs/a.md')]);
      const r = await run.call('execute_code', { lang: 'py', code: pyHashFile('/mnt/data/docs/a.md') });
      return { ok: okExec(r) && cleanRun(r.content, `${hashLine(bytes)}\n`), ...summarize(r) };
    });
  },

  async batch() {
    const files = uploadSamples.batch;
    let up;
    await rep.check('upload_batch', async () => {
      // Stream bodies of unknown length (as from S3): chunked multipart.
      up = await batchUploadCodeEnvFiles({
        files: files.map((f) => ({ stream: Readable.from([f.bytes]), filename: f.filename })),
        kind: 'user',
        id: USER_ID,
      });
      return {
        ok: up.raw.message === 'success' && up.files.length === files.length && up.files.every((f) => goodFileId(f.fileId)) &&
          files.every((f) => up.files.some((u) => u.filename === f.filename)),
        response: up.raw,
      };
    });
    if (up == null) return;
    await rep.check('exec_with_batch', async () => {
      const refs = up.files.map((f) => userFileRef(f.fileId, up.storage_session_id, f.filename));
      const run = newRun(refs);
      const r = await run.call('execute_code', { lang: 'py', code: pyHashFiles(files.map((f) => f.filename)) });
      const want = expectedHashLines(files);
      return { ok: okExec(r) && cleanRun(r.content, `${want.join('\n')}\n`), want, ...summarize(r) };
    });
  },

  async long() {
    const run = newRun();
    const secs = env.longSleepSeconds;
    await rep.check(`sleep_${secs}s`, async () => {
      const t0 = Date.now();
      const r = await run.call('execute_code', { lang: 'py', code: `import time\ntime.sleep(${secs})\nprint("slept ${secs}")` });
      const elapsed = Date.now() - t0;
      return { ok: okExec(r) && cleanRun(r.content, `slept ${secs}\n`) && elapsed >= secs * 1000, elapsed_ms: elapsed, ...summarize(r) };
    });
    await rep.check(`bash_sleep_${secs}s`, async () => {
      const r = await run.call('bash_tool', { command: `sleep ${secs}; echo bash slept` });
      return { ok: okExec(r) && cleanRun(r.content, 'bash slept\n'), ...summarize(r) };
    });
  },

  async auth_rejected() {
    // E2E_AUTH=wrong: a bad Bearer token must be a 401/403, which the client
    // turns into its "not authorized" message.
    const run = newRun();
    await rep.check('exec_not_authorized', async () => {
      const r = await run.call('execute_code', { lang: 'py', code: 'print("must not run")' });
      return {
        ok: r.status === 'error' && r.content.includes('Code execution is not authorized') && !r.content.includes('must not run'),
        ...summarize(r),
      };
    });
    await rep.check('upload_not_authorized', async () => {
      try {
        const s = uploadSamples.csv;
        const up = await uploadCodeEnvFile({ stream: Readable.from([s.bytes]), filename: s.filename, kind: 'user', id: USER_ID });
        return { ok: false, unexpected: up.raw };
      } catch (err) {
        const m = /http_status=(\d+)/.exec(errorText(err));
        return { ok: m != null && (m[1] === '401' || m[1] === '403'), error: errorText(err) };
      }
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
