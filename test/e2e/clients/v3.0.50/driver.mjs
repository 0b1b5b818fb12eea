// Drives codeexec with the real legacy-generation LibreChat client,
// @librechat/agents 3.0.50 (LibreChat v0.8.1–v0.8.4; pinned in
// package-lock.json next to this file).
//
//   node driver.mjs <scenario>
//
// Environment: E2E_BASE_URL, E2E_AUTH (key | none | wrong), E2E_API_KEY,
// E2E_USER_ID. See ../lib.mjs for the output protocol.
//
// How legacy LibreChat is reproduced, without an LLM:
// * LIBRECHAT_CODE_BASEURL is set before the package is imported: 3.0.50
//   builds `${LIBRECHAT_CODE_BASEURL}/exec` once, at import time.
// * execute_code is the package's own createCodeExecutionTool, built as
//   LibreChat's handleTools does: createCodeExecutionTool({ user_id, files,
//   ...authValues }) with authValues = { LIBRECHAT_CODE_API_KEY: <key> } (so
//   the key is also spread into every /exec body, as on the real wire).
// * Each call is tool.invoke(<ToolCall>) — what the 3.0.x graph's ToolNode does
//   with the model's tool call. Files are threaded the legacy way: the model
//   copies `session_id: <id>` from the previous output into the next call's
//   session_id argument; the tool then GETs /files/<id>?detail=full and sends
//   {id, session_id, name} refs.
// * Upload, batch upload, freshness probe (/files/<sid>?detail=summary) and
//   download are LibreChat's own axios + form-data calls (legacy keyed
//   crud.js / process.js, X-API-Key), reproduced with the same libraries.

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

let baseUrl = env.base;
if (scenario === 'root_base_url') baseUrl = env.base.replace(/\/v1\/?$/, '');
// agents <= 3.5 do no trailing-slash stripping: a configured ".../v1/" yields ".../v1//exec".
if (scenario === 'trailing_slash_base_url') baseUrl = env.base.replace(/\/?$/, '/');
process.env.LIBRECHAT_CODE_BASEURL = baseUrl;

const { createCodeExecutionTool, getCodeBaseURL } = await import('@librechat/agents');

const rep = new Reporter(scenario);
const USER_ID = env.userId;
const AGENT_ID = env.agentId;

/** The key LibreChat loads for the user (LIBRECHAT_CODE_API_KEY). Legacy requires one. */
function apiKey() {
  if (env.auth === 'wrong') return `wrong-${env.apiKey || 'key'}`;
  if (env.auth === 'none') return env.apiKey || 'unused-legacy-key';
  return env.apiKey;
}

const headers = () => ({ 'User-Agent': 'LibreChat/1.0', 'X-API-Key': apiKey() });

function newTool(files = []) {
  return createCodeExecutionTool({ user_id: USER_ID, files, LIBRECHAT_CODE_API_KEY: apiKey() });
}

let seq = 0;
/** The graph's ToolNode invoking the tool with the model's tool call. */
async function call(tool, args) {
  const id = `call_e2e_${++seq}_${Date.now().toString(36)}`;
  try {
    const tm = await tool.invoke({ id, name: 'execute_code', args, type: 'tool_call' });
    return { status: tm.status ?? 'success', content: contentText(tm.content), artifact: tm.artifact };
  } catch (err) {
    // 3.0.x ToolNode turns a thrown tool error into an error ToolMessage.
    return { status: 'error', content: `Error: ${err?.message ?? err}`, artifact: undefined };
  }
}

function summarize(r) {
  return { status: r.status, content: clip(r.content), artifact: r.artifact };
}

function okExec(r) {
  return r.status !== 'error' && typeof r.artifact?.session_id === 'string' && r.artifact.session_id !== '';
}

/** Legacy crud.js uploadCodeEnvFile: [entity_id], file; returns "<sid>/<fid>[?entity_id=]". */
async function uploadCodeEnvFile({ stream, filename, entity_id = '' }) {
  const form = new FormData();
  if (entity_id.length > 0) form.append('entity_id', entity_id);
  form.append('file', stream, filename);
  const response = await axios.post(`${getCodeBaseURL()}/upload`, form, {
    headers: { ...form.getHeaders(), 'Content-Type': 'multipart/form-data', ...headers(), 'User-Id': USER_ID },
    timeout: 120000,
    maxContentLength: 150 * 1024 * 1024,
    maxBodyLength: 150 * 1024 * 1024,
  });
  const result = response.data;
  if (result.message !== 'success') throw new Error(`Error uploading file: ${result.message}`);
  const fileIdentifier = `${result.session_id}/${result.files[0].fileId}`;
  return { raw: result, fileIdentifier: entity_id.length === 0 ? fileIdentifier : `${fileIdentifier}?entity_id=${entity_id}` };
}

/** Legacy crud.js batchUploadCodeEnvFiles (reads session_id). */
async function batchUploadCodeEnvFiles({ files, entity_id = '' }) {
  const form = new FormData();
  if (entity_id.length > 0) form.append('entity_id', entity_id);
  for (const f of files) form.append('file', f.stream, f.filename);
  const response = await axios.post(`${getCodeBaseURL()}/upload/batch`, form, {
    headers: { ...form.getHeaders(), 'Content-Type': 'multipart/form-data', ...headers(), 'User-Id': USER_ID },
    timeout: 120000,
    maxContentLength: 150 * 1024 * 1024,
    maxBodyLength: 150 * 1024 * 1024,
  });
  const result = response.data;
  if (result.message === 'error') throw new Error('All files in batch upload failed');
  const successFiles = result.files
    .filter((f) => f.status === 'success' && f.fileId)
    .map((f) => ({ fileId: f.fileId, filename: f.filename }));
  return { raw: result, session_id: result.session_id, files: successFiles };
}

/** Legacy process.js getSessionInfo: /files/<sid>?detail=summary[&entity_id=] → lastModified. */
async function getSessionInfo(fileIdentifier) {
  const [p, queryString] = fileIdentifier.split('?');
  const sessionId = p.split('/')[0];
  const params = { detail: 'summary' };
  if (queryString) {
    const entityId = new URLSearchParams(queryString).get('entity_id');
    if (entityId) params.entity_id = entityId;
  }
  const response = await axios({
    method: 'get',
    url: `${getCodeBaseURL()}/files/${sessionId}`,
    params,
    headers: headers(),
    timeout: 5000,
  });
  return { list: response.data, lastModified: response.data?.find((f) => f.name?.startsWith(p))?.lastModified };
}

/** Legacy primeFiles ref from a stored fileIdentifier. */
function legacyRef(fileIdentifier, name) {
  const [p] = fileIdentifier.split('?');
  const [session_id, id] = p.split('/');
  return { id, session_id, name };
}

/** Legacy process.js processCodeOutput download. */
async function downloadCodeOutput(sessionId, fileId) {
  const response = await axios({
    method: 'get',
    url: `${getCodeBaseURL()}/download/${sessionId}/${fileId}`,
    responseType: 'arraybuffer',
    headers: headers(),
    timeout: 15000,
  });
  return Buffer.from(response.data);
}

function tmpFile(name, bytes) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'codeexec-e2e-'));
  const p = path.join(dir, name);
  fs.writeFileSync(p, bytes);
  return p;
}

/** The `session_id: <id>` line the legacy tool prints for the model. */
function sessionIdFromOutput(content) {
  return /\nsession_id: ([^\s]+)/.exec(content)?.[1];
}

const scenarios = {
  async print() {
    const tool = newTool();
    await rep.check('execute_code_py', async () => {
      const r = await call(tool, { lang: 'py', code: 'print("hello from codeexec", 6 * 7)' });
      return { ok: okExec(r) && cleanRun(r.content, 'hello from codeexec 42\n'), ...summarize(r) };
    });
  },

  async js() {
    const tool = newTool();
    await rep.check('execute_code_js', async () => {
      const r = await call(tool, { lang: 'js', code: 'console.log("js says", [1, 2, 3].map((x) => x * 2).join(","))' });
      return { ok: okExec(r) && cleanRun(r.content, 'js says 2,4,6\n'), ...summarize(r) };
    });
  },

  async root_base_url() {
    const tool = newTool();
    await rep.check('execute_code_at_root', async () => {
      const r = await call(tool, { lang: 'py', code: 'print("root ok")' });
      return { ok: okExec(r) && cleanRun(r.content, 'root ok\n'), baseUrl, ...summarize(r) };
    });
  },

  async trailing_slash_base_url() {
    const tool = newTool();
    let first;
    await rep.check('exec_double_slash', async () => {
      first = await call(tool, { lang: 'py', code: pyWriteFile('/mnt/data/report.txt', Buffer.from('slash\n')) });
      return { ok: okExec(first) && cleanRun(first.content, 'written 6\n'), baseUrl, ...summarize(first) };
    });
    await rep.check('files_double_slash', async () => {
      const sid = sessionIdFromOutput(first?.content ?? '');
      const r = await call(tool, { lang: 'py', code: pyHashFile('/mnt/data/report.txt'), session_id: sid });
      return { ok: okExec(r) && cleanRun(r.content, `${hashLine(Buffer.from('slash\n'))}\n`), ...summarize(r) };
    });
  },

  async files() {
    const tool = newTool();
    const bytes = reportBytes();
    let written;
    await rep.check('write_report', async () => {
      const r = await call(tool, { lang: 'py', code: pyWriteFile('/mnt/data/report.txt', bytes) });
      written = r;
      const f = (r.artifact?.files ?? []).find((x) => x.name === 'report.txt');
      return {
        ok: okExec(r) && cleanRun(r.content, `written ${bytes.length}\n`) && f != null && goodFileId(f.id) &&
          r.content.includes('- /mnt/data/report.txt') && sessionIdFromOutput(r.content) === r.artifact.session_id,
        ...summarize(r),
      };
    });
    await rep.check('read_next_call_via_session_id', async () => {
      const sid = sessionIdFromOutput(written?.content ?? '');
      if (sid == null) return { ok: false, error: 'no session_id line in the write call output' };
      const r = await call(tool, { lang: 'py', code: pyHashFile('/mnt/data/report.txt'), session_id: sid });
      return { ok: okExec(r) && cleanRun(r.content, `${hashLine(bytes)}\n`), want: hashLine(bytes), session_id_arg: sid, ...summarize(r) };
    });
    await rep.check('download_byte_exact', async () => {
      const f = (written?.artifact?.files ?? []).find((x) => x.name === 'report.txt');
      if (f == null) return { ok: false, error: 'no report.txt in the write call artifact' };
      const got = await downloadCodeOutput(written.artifact.session_id, f.id);
      return { ok: got.equals(bytes), got_sha256: sha256(got), got_len: got.length, want_sha256: sha256(bytes), want_len: bytes.length };
    });
    await rep.check('write_new_name_from_session', async () => {
      // Legacy files are READ-ONLY by contract text: derive a new file from the old.
      const sid = sessionIdFromOutput(written?.content ?? '');
      const r = await call(tool, {
        lang: 'py',
        code: 'data = open("/mnt/data/report.txt", "rb").read()\nopen("/mnt/data/report2.txt", "wb").write(data[::-1])\nprint("reversed", len(data))',
        session_id: sid,
      });
      const f = (r.artifact?.files ?? []).find((x) => x.name === 'report2.txt');
      if (!okExec(r) || f == null) return { ok: false, ...summarize(r) };
      const got = await downloadCodeOutput(r.artifact.session_id, f.id);
      const want = Buffer.from(bytes).reverse();
      return { ok: got.equals(want), got_len: got.length, want_len: want.length, ...summarize(r) };
    });
  },

  async user_error() {
    const tool = newTool();
    await rep.check('py_exception_is_stderr', async () => {
      const r = await call(tool, { lang: 'py', code: 'print("before")\ndef f():\n    raise ValueError("e2e-boom")\nf()' });
      return {
        ok: okExec(r) && failedRun(r.content, 'before', 'ValueError: e2e-boom\n') && r.content.includes('Traceback') && !r.content.includes('HTTP error'),
        ...summarize(r),
      };
    });
    await rep.check('py_nonzero_exit_is_200', async () => {
      const r = await call(tool, { lang: 'py', code: 'import sys\nprint("out-line")\nprint("err-line", file=sys.stderr)\nsys.exit(7)' });
      return {
        ok: okExec(r) && failedRun(r.content, 'out-line', 'err-line\n') && !r.content.includes('HTTP error'),
        ...summarize(r),
      };
    });
  },

  async upload() {
    const s = uploadSamples.csv;
    // An agent file (entity_id set) and a chat attachment (none), as legacy primeFiles uploads them.
    for (const entity of [AGENT_ID, '']) {
      const label = entity ? 'agent_file' : 'chat_file';
      let up;
      await rep.check(`upload_${label}`, async () => {
        up = await uploadCodeEnvFile({ stream: fs.createReadStream(tmpFile(s.filename, s.bytes)), filename: s.filename, entity_id: entity });
        const ref = legacyRef(up.fileIdentifier, s.filename);
        return { ok: typeof up.raw.session_id === 'string' && up.raw.session_id !== '' && goodFileId(ref.id), response: up.raw };
      });
      if (up == null) continue;
      await rep.check(`freshness_probe_${label}`, async () => {
        const info = await getSessionInfo(up.fileIdentifier);
        const age = Date.now() - Date.parse(info.lastModified);
        return { ok: Number.isFinite(age) && age > -60000 && age < 10 * 60000, info };
      });
      await rep.check(`exec_with_upload_${label}`, async () => {
        const tool = newTool([legacyRef(up.fileIdentifier, s.filename)]);
        const r = await call(tool, {
          lang: 'py',
          code: 'import csv\nrows = list(csv.DictReader(open("/mnt/data/sales.csv")))\nprint("total", sum(int(r["amount"]) for r in rows))\n' + pyHashFile('/mnt/data/sales.csv'),
        });
        return { ok: okExec(r) && cleanRun(r.content, `total 42\n${hashLine(s.bytes)}\n`), ...summarize(r) };
      });
    }
  },

  async batch() {
    const files = uploadSamples.batch;
    let up;
    await rep.check('upload_batch', async () => {
      up = await batchUploadCodeEnvFiles({
        files: files.map((f) => ({ stream: Readable.from([f.bytes]), filename: f.filename })),
        entity_id: AGENT_ID,
      });
      return {
        ok: up.raw.message === 'success' && typeof up.session_id === 'string' && up.session_id !== '' &&
          up.files.length === files.length && up.files.every((f) => goodFileId(f.fileId)),
        response: up.raw,
      };
    });
    if (up == null) return;
    await rep.check('exec_with_batch', async () => {
      const refs = up.files.map((f) => ({ id: f.fileId, session_id: up.session_id, name: f.filename }));
      const r = await call(newTool(refs), { lang: 'py', code: pyHashFiles(files.map((f) => f.filename)) });
      const want = expectedHashLines(files);
      return { ok: okExec(r) && cleanRun(r.content, `${want.join('\n')}\n`), want, ...summarize(r) };
    });
  },

  async long() {
    const secs = env.longSleepSeconds;
    await rep.check(`sleep_${secs}s`, async () => {
      const t0 = Date.now();
      const r = await call(newTool(), { lang: 'py', code: `import time\ntime.sleep(${secs})\nprint("slept ${secs}")` });
      const elapsed = Date.now() - t0;
      return { ok: okExec(r) && cleanRun(r.content, `slept ${secs}\n`) && elapsed >= secs * 1000, elapsed_ms: elapsed, ...summarize(r) };
    });
  },

  async auth_rejected() {
    await rep.check('exec_not_authorized', async () => {
      const r = await call(newTool(), { lang: 'py', code: 'print("must not run")' });
      return {
        ok: r.status === 'error' && /HTTP error! status: 40[13]/.test(r.content) && !r.content.includes('must not run'),
        ...summarize(r),
      };
    });
    await rep.check('upload_not_authorized', async () => {
      try {
        const s = uploadSamples.csv;
        const up = await uploadCodeEnvFile({ stream: Readable.from([s.bytes]), filename: s.filename });
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
